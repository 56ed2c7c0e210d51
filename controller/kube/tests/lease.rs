//! Leader election against a real kube-apiserver: two electors, exactly one leader; when the leader crashes the
//! other takes over within the lease duration (plus one retry period); a graceful stop hands over at once.

mod support;

use std::time::{Duration, Instant};

use causeway_kube::{KubeMetrics, LeaderHandle, LeaseConfig, run_leader_election, spawn_elector};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use support::{DEADLINE, TestCluster, eventually};

const LEASE: Duration = Duration::from_secs(3);
const RETRY: Duration = Duration::from_millis(300);

fn config(identity: &str) -> LeaseConfig {
    LeaseConfig {
        lease_duration: LEASE,
        renew_deadline: Duration::from_secs(2),
        retry_period: RETRY,
        ..LeaseConfig::new("default", "causeway-test", identity)
    }
}

fn leading(h: &LeaderHandle) -> bool {
    *h.is_leader().borrow()
}

async fn holder(api: &Api<Lease>) -> Option<String> {
    api.get_opt("causeway-test").await.ok().flatten().and_then(|l| l.spec).and_then(|s| s.holder_identity)
}

/// Waits until exactly one of the two leads, and checks the Lease names it.
async fn one_leader<'a>(
    api: &Api<Lease>,
    a: &'a LeaderHandle,
    b: &'a LeaderHandle,
) -> (&'a LeaderHandle, &'a LeaderHandle, &'static str) {
    let ((), _) = eventually("one leader", DEADLINE, || async { (leading(a) || leading(b)).then_some(()) }).await;
    assert!(!(leading(a) && leading(b)), "both replicas lead");
    let (leader, follower, name) = if leading(a) { (a, b, "replica-a") } else { (b, a, "replica-b") };
    assert_eq!(holder(api).await.as_deref(), Some(name));
    (leader, follower, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_electors_one_leader_and_failover_within_the_lease() {
    let cluster = TestCluster::start();
    let client_a = cluster.client().await;
    let client_b = cluster.client().await;
    let api: Api<Lease> = Api::namespaced(client_a.clone(), "default");
    let metrics = KubeMetrics::unregistered().expect("metrics");

    let a = spawn_elector(client_a.clone(), config("replica-a"), metrics.clone());
    let b = spawn_elector(client_b, config("replica-b"), KubeMetrics::unregistered().expect("metrics"));
    let (leader, follower, name) = one_leader(&api, &a, &b).await;

    // Over several renewals the leadership stays put and never doubles.
    let steady = Instant::now();
    while steady.elapsed() < 2 * LEASE {
        assert!(leading(leader) && !leading(follower), "leadership moved without a failure");
        tokio::time::sleep(RETRY).await;
    }
    assert_eq!(holder(&api).await.as_deref(), Some(name));

    // A crash: the leader stops renewing and never releases. The follower waits out the lease.
    let crashed_at = Instant::now();
    let (leader, follower) = if name == "replica-a" { (a, b) } else { (b, a) };
    let follower_name = if name == "replica-a" { "replica-b" } else { "replica-a" };
    leader.abort();
    let ((), took) = eventually("failover", DEADLINE, || async { leading(&follower).then_some(()) }).await;
    assert!(took >= LEASE - RETRY * 2, "took over after {took:?}, before the lease of {LEASE:?} ran out");
    // Worst case: the follower saw the last renewal one retry late, then needs one more retry and a write.
    let bound = LEASE + RETRY * 3 + Duration::from_millis(500);
    assert!(took <= bound, "failover took {took:?}, lease {LEASE:?}, bound {bound:?}");
    assert_eq!(holder(&api).await.as_deref(), Some(follower_name));
    eprintln!("failover after a crash: {:?}", crashed_at.elapsed());

    // A graceful stop releases the lease; a new candidate takes it at its first try, well within a lease.
    let c = spawn_elector(client_a, config("replica-c"), metrics.clone());
    let stopped_at = Instant::now();
    follower.shutdown().await;
    let ((), took) = eventually("hand-over after release", DEADLINE, || async { leading(&c).then_some(()) }).await;
    assert!(took < LEASE, "hand-over after a release took {took:?}");
    assert_eq!(holder(&api).await.as_deref(), Some("replica-c"));
    eprintln!("hand-over after a graceful stop: {:?}", stopped_at.elapsed());
    let lease = api.get("causeway-test").await.expect("lease");
    assert!(lease.spec.and_then(|s| s.lease_transitions).unwrap_or(0) >= 2, "transitions counted");
    c.shutdown().await;
    assert_eq!(holder(&api).await, None, "released on shutdown");

    // The convenience form runs until its receiver is dropped, then releases its lease.
    let rx = run_leader_election(cluster.client().await, "default", "causeway-simple", "replica-d", metrics);
    eventually("run_leader_election to lead", DEADLINE, || async { (*rx.borrow()).then_some(()) }).await;
    let simple: Api<Lease> = Api::namespaced(cluster.client().await, "default");
    let holder_of = |api: Api<Lease>| async move {
        api.get_opt("causeway-simple").await.ok().flatten().and_then(|l| l.spec).and_then(|s| s.holder_identity)
    };
    assert_eq!(holder_of(simple.clone()).await.as_deref(), Some("replica-d"));
    drop(rx);
    eventually("the lease released after the receiver is dropped", DEADLINE, || async {
        holder_of(simple.clone()).await.is_none().then_some(())
    })
    .await;
}
