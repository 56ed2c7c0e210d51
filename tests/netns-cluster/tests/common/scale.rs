//! Scaling a Service up and down under load (issue 6 item 3), the same check on either source: `tests/churn.rs`
//! runs it on a manifests directory, `tests/kube.rs` through the API server.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use causeway_netns_cluster::cluster::{POD_PORT, node_ip};
use causeway_netns_cluster::objects::{self, IngressPath};
use causeway_netns_cluster::probe::{LoopRecord, now_ms};
use causeway_netns_cluster::{Cluster, Error, PodSpec, Result, Svc, SvcPort, ensure, sys};

use super::paths::{CONVERGE, sa};

pub const SCALE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
pub const SCALE_HOST: &str = "scale.example.test";
/// The bound: a changed EndpointSlice moves traffic within 2 s.
pub const MOVE_WITHIN_MS: u64 = 2000;

pub fn scale_svc() -> Svc {
    Svc::new("scale", SCALE_IP, vec![SvcPort::tcp("http", 80, POD_PORT)])
}

/// Pods `s1` (node1) and `s2` (node2) behind Service `scale`, also served by the Ingress at `SCALE_HOST`.
pub fn populate(c: &mut Cluster) -> Result<()> {
    c.add_pod("s1", 0, PodSpec::default())?;
    c.add_pod("s2", 1, PodSpec::default())?;
    c.apply_service(&scale_svc(), &["s1", "s2"])?;
    let path = IngressPath { host: SCALE_HOST.into(), path: "/".into(), service: "scale".into(), port: 80 };
    c.apply("ingress-scale", &[objects::ingress("scale", &[path], &[])])
}

pub fn answered_by(recs: &[LoopRecord], pod: &str) -> Vec<u64> {
    recs.iter().filter(|r| r.outcome.as_ref().is_ok_and(|rep| rep.pod == pod)).map(|r| r.at_ms).collect()
}

/// Polls until `log`'s loop has at least `n` records after `after_ms`.
pub fn wait_records(what: &str, log: &Path, after_ms: u64, n: usize) -> Result<()> {
    sys::poll(what, Duration::from_secs(6), Duration::from_millis(50), || {
        let recs = LoopRecord::parse(&std::fs::read_to_string(log).unwrap_or_default());
        if recs.iter().filter(|r| r.at_ms > after_ms).count() >= n { Ok(()) } else { Err(Error::check("not yet")) }
    })
}

/// Service `scale` scaled up (a pod added by CNI ADD, the slice updated in the source) and down (the pod
/// unlisted, then deleted by CNI DEL) while two request loops run: through its ClusterIP from pod `from` and
/// through the Ingress from outside. Traffic reaches the new pod and leaves the removed one within 2 s of the
/// write to the source; no request fails. Needs [`populate`] (`s1` on node1, `s2` on node2); `s3` joins on node3.
pub fn scale_up_and_down_moves_traffic_within_2s(c: &mut Cluster, from: &str) -> Result<()> {
    let a2 = c.pod_ns(from)?;
    let client = c.client.name.clone();
    let want: BTreeSet<String> = ["s1", "s2"].iter().map(|s| s.to_string()).collect();
    sys::poll(&format!("{from} -> scale to reach both s1 and s2"), CONVERGE, Duration::from_millis(50), || {
        let mut seen = BTreeSet::new();
        for _ in 0..12 {
            seen.insert(c.probe.get(&a2, sa(SCALE_IP, 80), None, "/", Duration::from_millis(700))?.pod);
        }
        if seen == want { Ok(()) } else { Err(Error::check(format!("seen {seen:?}"))) }
    })?;
    super::paths::wait_proxy_ready(c)?;
    sys::poll("the edge proxy to route scale.example.test", CONVERGE, Duration::from_millis(100), || {
        c.probe.get(&client, sa(node_ip(0), 80), Some(SCALE_HOST), "/", Duration::from_millis(700))
    })?;
    let loops: Vec<(&str, std::path::PathBuf, SocketAddr, Option<&str>, &str)> = vec![
        ("ClusterIP from the pod", c.dir.join("scale-loop-clusterip.log"), sa(SCALE_IP, 80), None, a2.as_str()),
        ("Ingress from outside", c.dir.join("scale-loop-ingress.log"), sa(node_ip(0), 80), Some(SCALE_HOST), &client),
    ];
    let mut procs = Vec::new();
    for (name, log, to, host, ns) in &loops {
        procs.push(c.probe.spawn_loop(ns, *to, *host, Duration::from_secs(40), Duration::from_millis(50), log)?);
        wait_records(&format!("the {name} loop to start"), log, 0, 4)?;
    }
    let records = |log: &Path| LoopRecord::parse(&std::fs::read_to_string(log).unwrap_or_default());
    let mut report = Vec::new();

    // Times are taken when the write starts (with the API server, kubectl's own time counts against the bound).
    c.add_pod("s3", 2, PodSpec::default())?;
    let t_up = now_ms();
    c.apply_service(&scale_svc(), &["s1", "s2", "s3"])?;
    report.push(format!("slice written in {} ms", now_ms() - t_up));
    for (name, log, ..) in &loops {
        let first = sys::poll(
            &format!("{name}: a request answered by s3 after scale-up"),
            Duration::from_secs(6),
            Duration::from_millis(50),
            || {
                answered_by(&records(log), "s3")
                    .into_iter()
                    .find(|&t| t >= t_up)
                    .ok_or_else(|| Error::check("none yet"))
            },
        )?;
        let took = first.saturating_sub(t_up);
        report.push(format!("{name}: s3 after {took} ms"));
        ensure!(took <= MOVE_WITHIN_MS, "{name}: first answer from s3 {took} ms after the write started");
    }

    let t_down = now_ms();
    c.apply_service(&scale_svc(), &["s2", "s3"])?;
    for (name, log, ..) in &loops {
        wait_records(&format!("{name}: requests past the scale-down window"), log, t_down + MOVE_WITHIN_MS + 500, 4)?;
        let last = answered_by(&records(log), "s1").into_iter().max().unwrap_or(0) as i64 - t_down as i64;
        report.push(format!("{name}: last s1 at {last:+} ms"));
        ensure!(
            answered_by(&records(log), "s1").into_iter().all(|t| t <= t_down + MOVE_WITHIN_MS),
            "{name}: s1 still answered {last} ms after the write that unlisted it started"
        );
    }
    c.delete_pod("s1")?;
    let t_del = now_ms();
    for (name, log, ..) in &loops {
        wait_records(&format!("{name}: requests after s1's DEL"), log, t_del + 300, 10)?;
    }
    for mut p in procs {
        p.kill();
    }
    for (name, log, ..) in &loops {
        let recs = records(log);
        let failed: Vec<String> = recs
            .iter()
            .filter_map(|r| {
                r.outcome.as_ref().err().map(|e| format!("at t_up{:+} ms: {e}", r.at_ms as i64 - t_up as i64))
            })
            .collect();
        ensure!(
            failed.is_empty(),
            "{name}: {} of {} requests failed during scaling: {}",
            failed.len(),
            recs.len(),
            failed.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
        );
        let after: BTreeSet<String> = recs
            .iter()
            .filter(|r| r.at_ms > t_del)
            .filter_map(|r| r.outcome.as_ref().ok().map(|rep| rep.pod.clone()))
            .collect();
        ensure!(after.iter().all(|p| p == "s2" || p == "s3"), "{name}: after scale-down, answered by {after:?}");
    }
    eprintln!("  {}", report.join("; "));
    Ok(())
}
