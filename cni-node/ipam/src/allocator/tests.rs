use super::*;
use crate::config::IpamConf;
use crate::fake::FakeStore;
use serde_json::json;

fn ipam(v: serde_json::Value) -> Ipam {
    IpamConf::from_json(&v, "ipam").unwrap().validate("ipam").unwrap()
}

fn addrs(v: &[IpConfig]) -> Vec<String> {
    v.iter().map(|c| c.address.to_string()).collect()
}

#[test]
fn allocates_sequentially_and_continues_after_last_reserved() {
    let cfg = ipam(json!({"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]]}));
    let mut s = FakeStore::new();
    let a = allocate(&mut s, &cfg, "c1", "eth0").unwrap();
    assert_eq!(addrs(&a), ["10.244.1.2/24"]);
    assert_eq!(a[0].gateway.to_string(), "10.244.1.1");
    let b = allocate(&mut s, &cfg, "c2", "eth0").unwrap();
    assert_eq!(addrs(&b), ["10.244.1.3/24"]);
    release(&mut s, "c1", "eth0").unwrap();
    // host-local does not reuse .2 right away: it continues after the last reserved address.
    let c = allocate(&mut s, &cfg, "c3", "eth0").unwrap();
    assert_eq!(addrs(&c), ["10.244.1.4/24"]);
}

#[test]
fn duplicate_attachment_is_refused() {
    let cfg = ipam(json!({"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]]}));
    let mut s = FakeStore::new();
    allocate(&mut s, &cfg, "c1", "eth0").unwrap();
    let err = allocate(&mut s, &cfg, "c1", "eth0").unwrap_err();
    assert!(matches!(err, AllocError::Duplicate { .. }), "{err}");
    // Another interface of the same container is a different attachment.
    assert_eq!(addrs(&allocate(&mut s, &cfg, "c1", "net1").unwrap()), ["10.244.1.3/24"]);
}

#[test]
fn exhaustion_is_reported_and_rolls_back_earlier_sets() {
    let cfg = ipam(json!({"type": "host-local", "ranges": [
        [{"subnet": "10.0.0.0/24"}],
        [{"subnet": "fd00::/120", "rangeStart": "fd00::5", "rangeEnd": "fd00::5"}]]}));
    let mut s = FakeStore::new();
    let a = allocate(&mut s, &cfg, "c1", "eth0").unwrap();
    assert_eq!(addrs(&a), ["10.0.0.2/24", "fd00::5/120"]);
    let err = allocate(&mut s, &cfg, "c2", "eth0").unwrap_err();
    match err {
        AllocError::Exhausted { field, set } => {
            assert_eq!(field, "ipam.ranges[1]");
            assert_eq!(set, "fd00::5-fd00::5");
        }
        other => panic!("{other}"),
    }
    assert_eq!(s.ips.len(), 2, "the v4 address of the failed call must be released");
}

#[test]
fn fills_a_small_range_exactly() {
    let cfg = ipam(json!({"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/28"}]]}));
    let mut s = FakeStore::new();
    let mut seen = std::collections::HashSet::new();
    for i in 0..13 {
        let a = allocate(&mut s, &cfg, &format!("c{i}"), "eth0").unwrap();
        assert!(seen.insert(a[0].address.addr()), "address handed out twice");
    }
    assert_eq!(free_counts(&s, &cfg).unwrap(), vec![0]);
    assert!(matches!(allocate(&mut s, &cfg, "last", "eth0"), Err(AllocError::Exhausted { .. })));
}

#[test]
fn gc_keeps_only_valid_attachments() {
    let cfg = ipam(json!({"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24"}]]}));
    let mut s = FakeStore::new();
    for id in ["a", "b", "c"] {
        allocate(&mut s, &cfg, id, "eth0").unwrap();
    }
    s.ips.insert("10.0.0.100".parse().unwrap(), crate::store::Owner { id: "b".into(), ifname: None });
    s.ips.insert("10.0.0.101".parse().unwrap(), crate::store::Owner { id: "z".into(), ifname: None });
    let released = gc(&mut s, &[("b".to_string(), "eth0".to_string())]).unwrap();
    let mut got: Vec<String> = released.iter().map(|i| i.to_string()).collect();
    got.sort();
    assert_eq!(got, ["10.0.0.101", "10.0.0.2", "10.0.0.4"]);
    assert_eq!(held(&s, &cfg, "b", "eth0").unwrap().len(), 1);
}

#[test]
fn hinted_release_matches_full_release() {
    let cfg = ipam(json!({"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/64"}]]}));
    let mut s = FakeStore::new();
    let a = allocate(&mut s, &cfg, "a", "eth0").unwrap();
    allocate(&mut s, &cfg, "b", "eth0").unwrap();
    let ips: Vec<IpAddr> = a.iter().map(|c| c.address.addr()).collect();
    // Exact hint: only those addresses go.
    let mut s1 = s.clone();
    assert_eq!(release_hinted(&mut s1, &cfg, "a", "eth0", &ips).unwrap(), ips);
    assert_eq!(s1.ips.len(), 2);
    // Stale, partial or foreign hints fall back to the full release, with the same outcome.
    for hint in [vec![], vec![ips[0]], vec!["10.0.0.3".parse().unwrap(), ips[1]], vec!["10.9.9.9".parse().unwrap()]] {
        let mut s2 = s.clone();
        let mut got = release_hinted(&mut s2, &cfg, "a", "eth0", &hint).unwrap();
        got.sort();
        let mut want = ips.clone();
        want.sort();
        assert_eq!(got, want, "hint {hint:?}");
        assert_eq!(s2.ips.len(), 2, "b keeps its addresses (hint {hint:?})");
    }
}
