use super::*;
use crate::addr::Family;
use crate::pool::validate_pools;
use crate::test_util::{ip, mk_pool, mk_svc};
use std::sync::Arc;

fn pools(specs: &[(&str, &[&str])]) -> Vec<Pool> {
    let objs: Vec<Arc<causeway_translate::IpPool>> =
        specs.iter().enumerate().map(|(i, (name, blocks))| mk_pool(name, i as i64, blocks)).collect();
    let (pools, diags) = validate_pools(objs.iter());
    assert!(diags.is_empty(), "{diags:?}");
    pools
}

fn render(a: &Allocation) -> String {
    let mut out = String::new();
    for (k, v) in &a.assignments {
        let ips: Vec<String> = v.addresses.iter().map(ToString::to_string).collect();
        out.push_str(&format!("{} {} ({})\n", k.name, ips.join(","), v.pool));
    }
    for k in &a.pending {
        out.push_str(&format!("pending {}\n", k.name));
    }
    for d in &a.diagnostics {
        out.push_str(&format!("{:?} {} {}: {}\n", d.severity, d.object, d.field, d.message));
    }
    out
}

#[test]
fn allocation_table() {
    let p30 = [("a", &["10.0.0.0/30"][..])];
    let two = [("a", &["10.0.0.0/30"][..]), ("b", &["10.1.0.0/30"][..])];
    let cases: Vec<(&str, Vec<Pool>, Vec<LbService>, &str)> = vec![
        (
            "lowest free address, oldest Service first",
            pools(&p30),
            vec![mk_svc("young", 2), mk_svc("old", 1)],
            "old 10.0.0.0 (a)\nyoung 10.0.0.1 (a)\n",
        ),
        (
            "a status address stays even when an older Service arrives",
            pools(&p30),
            vec![mk_svc("old", 1), mk_svc("young", 2).holding(&["10.0.0.0"])],
            "old 10.0.0.1 (a)\nyoung 10.0.0.0 (a)\n",
        ),
        (
            "two Services claim one status address: the older keeps it, the younger is told and moves",
            pools(&p30),
            vec![mk_svc("b", 2).holding(&["10.0.0.0"]), mk_svc("a", 1).holding(&["10.0.0.0"])],
            "a 10.0.0.0 (a)\nb 10.0.0.1 (a)\n\
             Error Service default/b status.loadBalancer.ingress[0].ip: 10.0.0.0 is also held by Service default/a, \
             which is older, and the two may not share it; released here\n",
        ),
        (
            "a requested address is given; automatic ones go around it",
            pools(&p30),
            vec![mk_svc("auto", 1), mk_svc("want", 2).asking(&["10.0.0.0"])],
            "auto 10.0.0.1 (a)\nwant 10.0.0.0 (a)\n",
        ),
        (
            "a requested address held by another Service: error naming both, pending, nothing moves",
            pools(&p30),
            vec![mk_svc("holder", 2).holding(&["10.0.0.2"]), mk_svc("want", 1).asking(&["10.0.0.2"])],
            "holder 10.0.0.2 (a)\npending want\n\
             Error Service default/want spec.loadBalancerIP: 10.0.0.2 is held by Service default/holder and the two \
             may not share it (same causeway.dev/allow-shared-ip key and no common port needed); the Service stays \
             pending\n",
        ),
        (
            "a requested address outside every pool",
            pools(&p30),
            vec![mk_svc("want", 1).asking(&["192.168.1.1"])],
            "pending want\n\
             Error Service default/want spec.loadBalancerIP: 192.168.1.1 is outside every IPPool; the Service stays \
             pending\n",
        ),
        (
            "a requested address outside the named pool",
            pools(&two),
            vec![mk_svc("want", 1).asking(&["10.0.0.1"]).in_pool("b")],
            "pending want\n\
             Error Service default/want spec.loadBalancerIP: 10.0.0.1 is outside IPPool b; the Service stays pending\n",
        ),
        (
            "the pool annotation picks the pool; a missing pool is an error",
            pools(&two),
            vec![mk_svc("in-b", 1).in_pool("b"), mk_svc("in-c", 2).in_pool("c"), mk_svc("any", 3)],
            "any 10.0.0.0 (a)\nin-b 10.1.0.0 (b)\npending in-c\n\
             Error Service default/in-c metadata.annotations[causeway.dev/address-pool]: there is no IPPool c; the \
             Service stays pending\n",
        ),
        (
            "exhaustion leaves the youngest pending with a warning",
            pools(&[("small", &["10.0.0.0/31"][..])]),
            vec![mk_svc("s1", 1), mk_svc("s2", 2), mk_svc("s3", 3)],
            "s1 10.0.0.0 (small)\ns2 10.0.0.1 (small)\npending s3\n\
             Warning Service default/s3 status.loadBalancer: no free address in IPPool small; the Service stays \
             pending\n",
        ),
        (
            "sharing: same key and distinct ports share; a port collision or another key does not",
            pools(&p30),
            vec![
                mk_svc("web", 1).sharing("k", &[80]),
                mk_svc("tls", 2).sharing("k", &[443]),
                mk_svc("web2", 3).sharing("k", &[80]),
                mk_svc("other", 4).sharing("j", &[8080]),
                mk_svc("plain", 5),
            ],
            "other 10.0.0.2 (a)\nplain 10.0.0.3 (a)\ntls 10.0.0.0 (a)\nweb 10.0.0.0 (a)\nweb2 10.0.0.1 (a)\n",
        ),
        (
            "a shared address joins only when every holder agrees",
            pools(&p30),
            vec![
                mk_svc("a", 1).sharing("k", &[80]),
                mk_svc("b", 2).sharing("k", &[443]),
                mk_svc("c", 3).sharing("k", &[443, 8443]),
            ],
            "a 10.0.0.0 (a)\nb 10.0.0.0 (a)\nc 10.0.0.1 (a)\n",
        ),
        (
            "a disabled pool keeps what it gave and gives nothing new",
            {
                let mut p = pools(&p30);
                p[0].disabled = true;
                p
            },
            vec![mk_svc("kept", 1).holding(&["10.0.0.3"]), mk_svc("new", 2)],
            "kept 10.0.0.3 (a)\npending new\n\
             Warning Service default/new spec: no IPPool serves this Service (V4 addresses); it stays pending\n",
        ),
        (
            "autoAssign false serves only Services naming the pool",
            {
                let mut p = pools(&p30);
                p[0].auto_assign = false;
                p
            },
            vec![mk_svc("named", 1).in_pool("a"), mk_svc("unnamed", 2)],
            "named 10.0.0.0 (a)\npending unnamed\n\
             Warning Service default/unnamed spec: no IPPool serves this Service (V4 addresses); it stays pending\n",
        ),
        (
            "a pool selector admits only matching Services, and a named pool that does not select is an error",
            {
                let mut p = pools(&p30);
                p[0].selector =
                    crate::Selector::Requirements(vec![crate::Requirement::In("tier".into(), vec!["edge".into()])]);
                p
            },
            vec![mk_svc("edge", 1).labelled("tier", "edge"), mk_svc("other", 2), mk_svc("named", 3).in_pool("a")],
            "edge 10.0.0.0 (a)\npending other\npending named\n\
             Warning Service default/other spec: no IPPool serves this Service (V4 addresses); it stays pending\n\
             Error Service default/named metadata.annotations[causeway.dev/address-pool]: IPPool a does not select \
             this Service (spec.serviceSelector); it stays pending\n",
        ),
        (
            "an invalid selector keeps what Services hold and gives nothing new",
            {
                let mut p = pools(&p30);
                p[0].selector = crate::Selector::Nothing;
                p
            },
            vec![mk_svc("held", 1).holding(&["10.0.0.2"]), mk_svc("new", 2)],
            "held 10.0.0.2 (a)\npending new\n\
             Warning Service default/new spec: no IPPool serves this Service (V4 addresses); it stays pending\n",
        ),
        (
            "a status address no pool contains any more is released and replaced",
            pools(&p30),
            vec![mk_svc("a", 1).holding(&["192.168.0.1"])],
            "a 10.0.0.0 (a)\n\
             Warning Service default/a status.loadBalancer.ingress[0].ip: 192.168.0.1 is in no IPPool any more; \
             released\n",
        ),
        (
            "a changed request drops the old address",
            pools(&p30),
            vec![mk_svc("a", 1).holding(&["10.0.0.0"]).asking(&["10.0.0.3"]), mk_svc("b", 2)],
            "a 10.0.0.3 (a)\nb 10.0.0.0 (a)\n",
        ),
        (
            "an IPv6 Service gets an IPv6 address",
            pools(&[("dual", &["10.0.0.0/30", "fd00::10/126"][..])]),
            vec![{
                let mut s = mk_svc("v6", 1);
                s.family = Family::V6;
                s
            }],
            "v6 fd00::10 (dual)\n",
        ),
        (
            "sharing never crosses address families",
            pools(&[("dual", &["10.0.0.0/30", "fd00::10/126"][..])]),
            vec![mk_svc("v4", 1).sharing("k", &[80]), {
                let mut s = mk_svc("v6", 2).sharing("k", &[443]);
                s.family = Family::V6;
                s
            }],
            "v4 10.0.0.0 (dual)\nv6 fd00::10 (dual)\n",
        ),
        (
            "an unparsable request keeps what the Service holds and gets nothing new",
            pools(&p30),
            vec![
                {
                    let mut s = mk_svc("held", 1).holding(&["10.0.0.1"]);
                    s.request_error = true;
                    s
                },
                {
                    let mut s = mk_svc("fresh", 2);
                    s.request_error = true;
                    s
                },
            ],
            "held 10.0.0.1 (a)\npending fresh\n",
        ),
        (
            "the pool order is the fallback order",
            pools(&[("first", &["10.0.0.0/31"][..]), ("second", &["10.1.0.0/31"][..])]),
            vec![mk_svc("s1", 1), mk_svc("s2", 2), mk_svc("s3", 3)],
            "s1 10.0.0.0 (first)\ns2 10.0.0.1 (first)\ns3 10.1.0.0 (second)\n",
        ),
    ];
    for (case, pools, services, want) in cases {
        let got = allocate(&pools, &services);
        assert_eq!(render(&got), want, "case: {case}");
    }
}

#[test]
fn deleting_a_service_releases_its_address_and_nothing_else_moves() {
    let pools = pools(&[("a", &["10.0.0.0/30"][..])]);
    let first = allocate(&pools, &[mk_svc("a", 1), mk_svc("b", 2), mk_svc("c", 3)]);
    assert_eq!(render(&first), "a 10.0.0.0 (a)\nb 10.0.0.1 (a)\nc 10.0.0.2 (a)\n");
    // `a` is deleted; `b` and `c` come back with their status; a new Service takes the freed address.
    let second = allocate(
        &pools,
        &[mk_svc("b", 2).holding(&["10.0.0.1"]), mk_svc("c", 3).holding(&["10.0.0.2"]), mk_svc("d", 4)],
    );
    assert_eq!(render(&second), "b 10.0.0.1 (a)\nc 10.0.0.2 (a)\nd 10.0.0.0 (a)\n");
    assert_eq!(second.usage, vec![PoolUsage { pool: "a".into(), total: 4, used: 3 }]);
}

#[test]
fn free_addresses_skip_held_runs_and_stop_at_the_end() {
    let range = crate::addr::AddrRange::new(ip("10.0.0.254"), ip("10.0.1.1")).expect("range");
    let a = mk_svc("a", 1);
    let mut holders: Holders<'_> = BTreeMap::new();
    assert_eq!(first_free(&range, &holders), Some(ip("10.0.0.254")));
    for s in ["10.0.0.254", "10.0.0.255", "10.0.1.1"] {
        hold(&mut holders, ip(s), &a);
    }
    assert_eq!(first_free(&range, &holders), Some(ip("10.0.1.0")));
    hold(&mut holders, ip("10.0.1.0"), &a);
    assert_eq!(first_free(&range, &holders), None);
    let top = crate::addr::AddrRange::new(ip("255.255.255.255"), ip("255.255.255.255")).expect("range");
    hold(&mut holders, ip("255.255.255.255"), &a);
    assert_eq!(first_free(&top, &holders), None);
}

/// A small deterministic generator (xorshift64*) so that the invariant sweep needs no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_case(rng: &mut Rng) -> (Vec<Pool>, Vec<LbService>) {
    let pools = pools(&[("a", &["10.0.0.0/29"][..]), ("b", &["10.0.1.0-10.0.1.2"][..])]);
    let n = 1 + rng.below(14) as usize;
    let services = (0..n)
        .map(|i| {
            let mut s = mk_svc(&format!("s{i}"), rng.below(5) as i64);
            if rng.below(3) == 0 {
                s = s.sharing(["k", "j"][rng.below(2) as usize], &[80 + rng.below(3) as i32]);
            }
            match rng.below(6) {
                0 => s = s.holding(&[&format!("10.0.0.{}", rng.below(9))]),
                1 => s = s.holding(&[&format!("10.0.1.{}", rng.below(4))]),
                2 => s = s.asking(&[&format!("10.0.0.{}", rng.below(10))]),
                3 => s = s.in_pool(["a", "b", "c"][rng.below(3) as usize]),
                _ => {}
            }
            s
        })
        .collect();
    (pools, services)
}

#[test]
fn invariants_hold_on_random_inputs() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..3000 {
        let (pools, services) = random_case(&mut rng);
        let got = allocate(&pools, &services);
        let ctx = || format!("round {round}: {services:#?}\n{}", render(&got));

        // Every Service is either assigned or pending, never both.
        assert_eq!(got.assignments.len() + got.pending.len(), services.len(), "{}", ctx());
        // Every address lies in a pool; holders of one address may all share it.
        let by_key = |k: &ServiceKey| services.iter().find(|s| s.key == *k).expect("known service");
        let mut holders: BTreeMap<IpAddr, Vec<&LbService>> = BTreeMap::new();
        for (k, a) in &got.assignments {
            for ip in &a.addresses {
                assert!(pools.iter().any(|p| p.contains(*ip)), "{ip} outside pools; {}", ctx());
                holders.entry(*ip).or_default().push(by_key(k));
            }
        }
        for (ip, hs) in &holders {
            for (i, x) in hs.iter().enumerate() {
                for y in &hs[i + 1..] {
                    assert!(x.can_share_with(y), "{ip} duplicated between {} and {}; {}", x.key, y.key, ctx());
                }
            }
        }
        // Input order does not matter.
        let mut shuffled = services.clone();
        shuffled.reverse();
        shuffled.rotate_left(round % services.len());
        assert_eq!(allocate(&pools, &shuffled), got, "order dependence; {}", ctx());
        // Stable: feeding the result back as status changes nothing, and nothing conflicts.
        let fed: Vec<LbService> = services
            .iter()
            .map(|s| {
                let mut s = s.clone();
                s.current = got.assignments.get(&s.key).map(|a| a.addresses.clone()).unwrap_or_default();
                s
            })
            .collect();
        let again = allocate(&pools, &fed);
        assert_eq!(again.assignments, got.assignments, "not a fixpoint; {}", ctx());
        // Deleting one Service moves nobody else's address.
        let gone = round % fed.len();
        let rest: Vec<LbService> = fed.iter().enumerate().filter(|(i, _)| *i != gone).map(|(_, s)| s.clone()).collect();
        let after = allocate(&pools, &rest);
        for (k, a) in &again.assignments {
            if *k != fed[gone].key {
                let kept = after.assignments.get(k).map(|b| &b.addresses);
                assert_eq!(kept, Some(&a.addresses), "{k} moved after deleting {}; {}", fed[gone].key, ctx());
            }
        }
    }
}

#[test]
fn every_diagnostic_carries_the_event_reason_and_the_other_object() {
    use crate::note::*;
    let pools_in = [mk_pool("old", 1, &["10.0.0.0/31"]), mk_pool("new", 2, &["10.0.0.1-10.0.0.3", "10.0.1.0/33"])];
    let (pools, pool_diags) = crate::pool::validate(pools_in.iter());
    let services = [
        mk_svc("a", 1).holding(&["10.0.0.0"]),
        mk_svc("b", 2),
        mk_svc("c", 3),
        mk_svc("d", 4).asking(&["10.0.0.0"]),
        mk_svc("e", 5).asking(&["192.0.2.1"]),
    ];
    let alloc = allocate(&pools, &services);
    let note_of = |notes: &std::collections::BTreeMap<Diagnostic, EventNote>, kind: &str, name: &str, field: &str| {
        let found: Vec<&EventNote> = notes
            .iter()
            .filter(|(d, _)| d.object.kind == kind && d.object.name == name && d.field.starts_with(field))
            .map(|(_, n)| n)
            .collect();
        assert_eq!(found.len(), 1, "{kind} {name} {field}: {notes:#?}");
        (found[0].reason, found[0].related.as_ref().map(|r| r.to_string()))
    };
    // Every diagnostic has a note.
    for d in pool_diags.list.iter().chain(&alloc.diagnostics) {
        assert!(pool_diags.notes.contains_key(d) || alloc.notes.contains_key(d), "no note for {d}");
    }
    let pn = &pool_diags.notes;
    assert_eq!(note_of(pn, "IPPool", "new", "spec.blocks[0]"), (REASON_POOL_OVERLAP, Some("IPPool old".into())));
    assert_eq!(note_of(pn, "IPPool", "old", "spec.blocks[0]"), (REASON_POOL_OVERLAP, Some("IPPool new".into())));
    assert_eq!(note_of(pn, "IPPool", "new", "spec.blocks[1]"), (REASON_INVALID_POOL, None));
    // old has 10.0.0.0 (a) and 10.0.0.1 (b): c finds no free address, d asks for a's address, e for nothing of ours.
    let an = &alloc.notes;
    assert_eq!(
        note_of(an, "Service", "c", "status.loadBalancer"),
        (REASON_ALLOCATION_FAILED, Some("IPPool old".into()))
    );
    assert_eq!(
        note_of(an, "Service", "d", "spec.loadBalancerIP"),
        (REASON_ADDRESS_CONFLICT, Some("Service default/a".into()))
    );
    assert_eq!(note_of(an, "Service", "e", "spec.loadBalancerIP"), (REASON_ALLOCATION_FAILED, None));
    assert_eq!(alloc.pending.len(), 3);
}
