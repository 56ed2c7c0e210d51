use super::*;
use crate::config::RangeConf;

fn r(subnet: &str, start: Option<&str>, end: Option<&str>, gw: Option<&str>) -> Range {
    let conf = RangeConf {
        subnet: subnet.parse().unwrap(),
        range_start: start.map(|s| s.parse().unwrap()),
        range_end: end.map(|s| s.parse().unwrap()),
        gateway: gw.map(|s| s.parse().unwrap()),
    };
    Range::try_new(&conf, "t").unwrap()
}

fn walk(set: &RangeSet, last: Option<&str>) -> Vec<String> {
    set.iter_from(last.map(|s| s.parse().unwrap())).map(|(_, ip)| ip.to_string()).collect()
}

#[test]
fn first_pass_starts_at_range_start_and_skips_gateway() {
    let set = RangeSet(vec![r("10.0.0.0/29", None, None, None)]);
    // .1 is the gateway, .7 the broadcast.
    assert_eq!(walk(&set, None), ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
}

#[test]
fn continues_after_last_reserved_and_wraps() {
    let set = RangeSet(vec![r("10.0.0.0/29", None, None, None)]);
    assert_eq!(walk(&set, Some("10.0.0.4")), ["10.0.0.5", "10.0.0.6", "10.0.0.2", "10.0.0.3", "10.0.0.4"]);
    // A last-reserved address outside the set restarts at the beginning.
    assert_eq!(walk(&set, Some("192.168.0.1"))[0], "10.0.0.2");
}

#[test]
fn walks_several_ranges_in_order() {
    let set = RangeSet(vec![
        r("10.0.0.0/24", Some("10.0.0.10"), Some("10.0.0.11"), None),
        r("10.0.1.0/24", Some("10.0.1.1"), Some("10.0.1.2"), None),
    ]);
    // 10.0.1.1 is the second range's gateway.
    assert_eq!(walk(&set, None), ["10.0.0.10", "10.0.0.11", "10.0.1.2"]);
    assert_eq!(walk(&set, Some("10.0.0.11")), ["10.0.1.2", "10.0.0.10", "10.0.0.11"]);
}

#[test]
fn range_of_only_the_gateway_yields_nothing() {
    let set = RangeSet(vec![r("10.0.0.0/24", Some("10.0.0.1"), Some("10.0.0.1"), None)]);
    assert!(walk(&set, None).is_empty());
    assert_eq!(set.size(), 0);
}

#[test]
fn ipv6_iteration() {
    let set = RangeSet(vec![r("fd00::/126", None, None, None)]);
    assert_eq!(walk(&set, None), ["fd00::2", "fd00::3"]);
}

/// Property: for every small subnet, start/end/last-reserved combination the walk visits each candidate
/// exactly once, never yields a gateway, and begins right after the last reserved address.
#[test]
fn iteration_visits_every_candidate_once() {
    for prefix in [28u8, 29, 30] {
        let subnet = format!("10.1.2.0/{prefix}");
        let hosts = 1u32 << (32 - prefix);
        for s in 1..hosts - 1 {
            for e in s..hosts - 1 {
                for gw in [1u32, s, e] {
                    let ip = |n: u32| format!("10.1.2.{n}");
                    let rg = r(&subnet, Some(&ip(s)), Some(&ip(e)), Some(&ip(gw)));
                    let set = RangeSet(vec![rg.clone()]);
                    let mut expected: Vec<String> = (s..=e).filter(|n| *n != gw).map(ip).collect();
                    assert_eq!(set.size(), expected.len() as u128);
                    for last in [None, Some(s), Some(e), Some((s + e) / 2)] {
                        let got = walk(&set, last.map(ip).as_deref());
                        let mut sorted = got.clone();
                        sorted.sort_by_key(|x| x.rsplit('.').next().unwrap().parse::<u32>().unwrap());
                        expected.sort_by_key(|x| x.rsplit('.').next().unwrap().parse::<u32>().unwrap());
                        assert_eq!(sorted, expected, "{subnet} {s}-{e} gw {gw} last {last:?}");
                        if let (Some(l), Some(first)) = (last, got.first()) {
                            let want = (l..=e).skip(1).chain(s..=e).find(|n| *n != gw).map(ip);
                            assert_eq!(Some(first.clone()), want, "{subnet} {s}-{e} gw {gw} last {l}");
                        }
                    }
                }
            }
        }
    }
}
