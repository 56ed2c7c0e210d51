//! The announcer in network namespaces: two nodes and an observer on one bridge (in a hub namespace).
//!
//! Namespaces are named `cwl<role><n>_<pid>` (≤ 15 characters) and deleted on drop even when a test fails. The
//! root namespace is never connected: every link is created inside a lab namespace (`ip -n`), and traffic stays
//! on the lab bridge.

use causeway_announce::{Announcer, GarpConfig};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

mod common;
use common::*;

#[test]
fn announced_address_is_reachable_and_only_ours_are_removed() {
    let lab = Lab::new();
    assert!(!lab.ping_vip(), "nobody holds the address yet");

    let mut a = announcer(&lab.a);
    let report = a.sync(&set(&[VIP]), Instant::now()).expect("sync");
    assert_eq!(report.added, [vip()]);
    assert!(report.removed.is_empty() && report.garp_failed.is_empty(), "{report:?}");
    let shown = sh(&["ip", "-n", &lab.a, "addr", "show", "dev", "eth0"]);
    assert!(shown.contains("10.77.0.200/32"), "{shown}");
    assert!(lab.ping_vip(), "the observer reaches the announced address");

    // Idempotent.
    let again = a.sync(&set(&[VIP]), Instant::now()).expect("sync");
    assert!(again.added.is_empty() && again.removed.is_empty(), "{again:?}");

    // An operator's own /32 is never ours: not removed, and not re-added when wanted.
    sh(&["ip", "-n", &lab.a, "addr", "add", "10.77.0.201/32", "dev", "eth0"]);
    let r = a.sync(&set(&[VIP, "10.77.0.201"]), Instant::now()).expect("sync");
    assert_eq!(r.skipped.len(), 1, "{r:?}");
    assert!(r.added.is_empty(), "{r:?}");

    // A restarted agent adopts what its predecessor added: nothing flaps.
    drop(a);
    let mut a = announcer(&lab.a);
    let adopted = a.sync(&set(&[VIP]), Instant::now()).expect("sync");
    // (This relies on the IFA_PROTO tag: the new announcer added nothing itself.)
    assert!(adopted.added.is_empty() && adopted.removed.is_empty() && adopted.skipped.is_empty(), "{adopted:?}");

    // Withdrawing removes ours only.
    assert_eq!(a.withdraw_all().expect("withdraw"), [vip()]);
    let shown = sh(&["ip", "-n", &lab.a, "addr", "show", "dev", "eth0"]);
    assert!(!shown.contains("10.77.0.200/32"), "{shown}");
    assert!(shown.contains("10.77.0.201/32"), "the operator's address stays: {shown}");
    assert!(shown.contains("10.77.0.1/24"), "{shown}");
    assert!(!lab.ping_vip(), "a withdrawn address is no longer answered");
}

#[test]
fn neighbour_advertisement_moves_the_ipv6_entry_to_the_new_owner() {
    let lab = Lab::new();
    assert!(!lab.ping_vip6(), "nobody holds the address yet");
    let mut a = announcer(&lab.a);
    let mut b = announcer(&lab.b);
    let report = a.sync(&set(&[VIP6]), Instant::now()).expect("sync a");
    assert_eq!(report.added, [vip6()]);
    assert!(report.garp_failed.is_empty(), "the first advertisement failed: {report:?}");
    let shown = sh(&["ip", "-n", &lab.a, "-6", "addr", "show", "dev", "eth0"]);
    let line = shown.lines().find(|l| l.contains("fd00:77::c8/128")).unwrap_or_else(|| panic!("no VIP: {shown}"));
    assert!(line.contains("nodad") && !line.contains("tentative"), "added without duplicate address detection: {line}");
    assert!(lab.ping_vip6(), "the observer reaches the announced IPv6 address");
    assert!(lab.neighbour6().contains(MAC_A), "observer learned node a's MAC: {}", lab.neighbour6());

    // Control: the address appears on b without any advertisement; the observer's entry stays on a.
    sh(&["ip", "-n", &lab.b, "addr", "add", "fd00:77::c8/128", "dev", "eth0", "nodad"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(lab.neighbour6().contains(MAC_A), "without an advertisement nothing changes: {}", lab.neighbour6());
    sh(&["ip", "-n", &lab.b, "addr", "del", "fd00:77::c8/128", "dev", "eth0"]);

    // The address moves; the observer sends nothing meanwhile, so only the advertisement can update its entry.
    let moved_at = Instant::now();
    assert_eq!(a.sync(&BTreeSet::new(), moved_at).expect("withdraw a").removed, [vip6()]);
    assert_eq!(b.sync(&set(&[VIP6]), moved_at).expect("sync b").added, [vip6()]);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut last = String::new();
    while Instant::now() < deadline {
        last = lab.neighbour6();
        if last.contains(MAC_B) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(last.contains(MAC_B), "the observer's entry still points elsewhere: {last}");
    assert!(lab.ping_vip6(), "the observer reaches the new owner");

    // Withdrawal removes only ours: the lab's own /64 stays.
    assert_eq!(b.withdraw_all().expect("withdraw"), [vip6()]);
    let shown = sh(&["ip", "-n", &lab.b, "-6", "addr", "show", "dev", "eth0"]);
    assert!(!shown.contains("fd00:77::c8"), "{shown}");
    assert!(shown.contains("fd00:77::2/64"), "{shown}");
}

#[test]
fn gratuitous_arp_moves_the_neighbour_entry_to_the_new_owner() {
    let lab = Lab::new();
    let mut a = announcer(&lab.a);
    let mut b = announcer(&lab.b);
    a.sync(&set(&[VIP]), Instant::now()).expect("sync a");
    assert!(lab.ping_vip());
    let before = lab.neighbour();
    assert!(before.contains(MAC_A), "observer learned node a's MAC: {before}");

    // Control: the address appears on b without any announcement; the observer's entry stays on a.
    sh(&["ip", "-n", &lab.b, "addr", "add", "10.77.0.200/32", "dev", "eth0"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(lab.neighbour().contains(MAC_A), "without a gratuitous ARP nothing changes: {}", lab.neighbour());
    sh(&["ip", "-n", &lab.b, "addr", "del", "10.77.0.200/32", "dev", "eth0"]);

    // The address moves: a drops it, b takes it and announces. The observer sends nothing meanwhile, so only
    // the gratuitous ARP can update its entry.
    let moved_at = Instant::now();
    assert_eq!(a.sync(&BTreeSet::new(), moved_at).expect("withdraw a").removed, [vip()]);
    let report = b.sync(&set(&[VIP]), moved_at).expect("sync b");
    assert_eq!(report.added, [vip()]);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut last = String::new();
    while Instant::now() < deadline {
        last = lab.neighbour();
        if last.contains(MAC_B) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(last.contains(MAC_B), "the observer's entry still points elsewhere: {last}");
    assert!(lab.ping_vip(), "the observer reaches the new owner");

    // Repeats: count - 1 more announcements, one interval apart, then nothing is pending.
    let first = b.send_due(moved_at).expect("nothing due yet");
    assert_eq!(first, Some(moved_at + Duration::from_millis(100)));
    let mut now = moved_at;
    let mut rounds = 0;
    while let Some(next) = b.send_due(now).expect("send") {
        now = next;
        rounds += 1;
        assert!(rounds < 10, "repeats never end");
    }
    assert_eq!(rounds, 2, "two repeats after the first announcement");
}

#[test]
fn a_missing_interface_is_an_error_not_a_panic() {
    let lab = Lab::new();
    let err = in_ns(&lab.a, || Announcer::new("nosuch0", GarpConfig::default())).expect_err("no interface");
    assert!(err.to_string().contains("nosuch0"), "{err}");
}

/// The L2 part of a failover: the owner dies (its link goes down, it withdraws nothing), the new owner adds the
/// address and announces it. Measures, from an outside client probing every 10 ms, how long requests fail from
/// the new owner's sync on (detection time is not part of this: see `causeway_lb::PlanOptions`).
#[test]
fn takeover_after_owner_loss_is_fast() {
    let lab = Lab::new();
    let _echo_a = udp_echo(&lab.a);
    let _echo_b = udp_echo(&lab.b);
    let mut a = announcer(&lab.a);
    let mut b = announcer(&lab.b);
    a.sync(&set(&[VIP]), Instant::now()).expect("sync a");
    let mut client = Prober::new(&lab.obs);
    assert!(client.until_answer(Duration::from_secs(3)).is_some(), "the first owner never answered");

    // The owner dies.
    sh(&["ip", "-n", &lab.a, "link", "set", "eth0", "down"]);
    let died = Instant::now();
    assert!(!client.probe(), "a dead owner still answers");
    // The survivor's plan now names it: it takes the address.
    let took = Instant::now();
    b.sync(&set(&[VIP]), took).expect("sync b");
    client.until_answer(Duration::from_secs(2)).expect("no answer within 2 s of the takeover");
    let takeover = took.elapsed();
    eprintln!(
        "L2 takeover: first answer {} ms after the new owner's sync ({} ms after the owner died)",
        takeover.as_millis(),
        died.elapsed().as_millis()
    );
    assert!(takeover < Duration::from_millis(500), "takeover took {takeover:?}");
    drop(a);
}

#[test]
fn worker_follows_the_wanted_set_and_repairs_drift() {
    use causeway_announce::AnnounceWorker;
    let lab = Lab::new();
    let worker = AnnounceWorker::spawn(announcer(&lab.a), Duration::from_millis(200)).expect("spawn");
    let has_vip = || sh(&["ip", "-n", &lab.a, "addr", "show", "dev", "eth0"]).contains("10.77.0.200/32");
    let wait = |want: bool, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(2);
        while has_vip() != want {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    worker.set(set(&["10.77.0.9", VIP]));
    worker.set(set(&[VIP]));
    wait(true, "the worker never added the address");
    assert!(lab.ping_vip());
    // Someone removes it by hand: the periodic re-sync puts it back.
    sh(&["ip", "-n", &lab.a, "addr", "del", "10.77.0.200/32", "dev", "eth0"]);
    wait(true, "the worker never repaired the address");
    let stats = worker.stats();
    assert_eq!(stats.announced, set(&[VIP]));
    assert!(stats.syncs >= 2 && stats.errors == 0, "{stats:?}");
    assert!(!sh(&["ip", "-n", &lab.a, "addr", "show"]).contains("10.77.0.9/32"), "an address no longer wanted is gone");
    worker.stop(true).expect("withdraw on stop");
    assert!(!has_vip(), "stop(true) withdraws");
}
