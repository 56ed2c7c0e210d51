//! Benchmark driver for `tests/bench/rules.sh`: run it inside a throwaway network namespace.
//!
//! For N Services × 3 endpoints it measures, with the real `iptables-restore`: render time, the agent's full sync
//! (iptables-save + render + restore), a one-Service endpoint change (partial sync), a one-Service add, and the
//! same change written the way kube-proxy's partial sync writes it (top-level chains in full). It also writes
//! the full ruleset to `--out` so the script can time a plain `iptables-restore` of it. Output: `key=value` lines.

use causeway_model::{EndpointInfo, Protocol, ServicePort, ServicePortName, ServiceTable};
use causeway_node::sink::{IptablesRestore, RuleSink};
use causeway_node::sync::Syncer;
use causeway_rules::{Family, NodeCtx, build_ruleset, render_full};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

fn svc(i: u32, generation: u32) -> ServicePort {
    let ip = |base: [u8; 2], n: u32| IpAddr::V4(Ipv4Addr::new(base[0], base[1], (n >> 8) as u8, (n & 0xff) as u8));
    ServicePort {
        endpoints: (0..3)
            .map(|e| {
                let node = format!("node-{e}");
                EndpointInfo::ready(ip([10, 244 + e as u8], i + 1), 8080 + generation as u16, Some(&node))
            })
            .collect(),
        ..ServicePort::new(
            ServicePortName::new("bench", format!("svc-{i}"), "http", Protocol::Tcp),
            ip([10, 96], i + 1),
            80,
        )
    }
}

fn table(n: u32) -> ServiceTable {
    let mut t = ServiceTable { ports: (0..n).map(|i| svc(i, 0)).collect() };
    t.ports.sort_by(|a, b| a.name.cmp(&b.name));
    t
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn ms(t: Instant) -> String {
    format!("{:.1}", t.elapsed().as_secs_f64() * 1000.0)
}

fn main() -> anyhow::Result<()> {
    let n: u32 = arg("--services").unwrap_or_else(|| "1000".into()).parse()?;
    let mut sink = IptablesRestore::v4();
    if let Some(r) = arg("--restore") {
        sink.restore = r.into();
    }
    if let Some(s) = arg("--save") {
        sink.save = s.into();
    }
    let mut ctx = NodeCtx::new("node-0", Family::V4);
    ctx.cluster_cidrs = vec!["10.244.0.0/14".parse()?];
    let t = table(n);

    let t0 = Instant::now();
    let (rs, _) = build_ruleset(&t, &ctx);
    let full = render_full(&rs, &causeway_rules::Dump::default());
    println!("render_full_ms={} rules={} lines={}", ms(t0), full.rules_written, full.text.lines().count());
    if let Some(out) = arg("--out") {
        std::fs::write(out, &full.text)?;
    }

    let sink: Arc<dyn RuleSink> = Arc::new(sink);
    let mut syncer = Syncer::new(sink.clone());
    let t0 = Instant::now();
    let r = syncer.sync(&t, &ctx)?;
    println!("agent_full_sync_ms={} kind={}", ms(t0), r.kind.as_str());

    // One Service's endpoints change.
    let mut t2 = t.clone();
    let mid = t2.ports.len() / 2;
    t2.ports[mid] = svc(mid as u32, 1);
    t2.ports[mid].name = t.ports[mid].name.clone();
    t2.ports[mid].cluster_ips = t.ports[mid].cluster_ips.clone();
    // Pure CPU part of the change (incremental build + diff), best of 5 runs on a busy machine.
    let mut best = f64::MAX;
    let mut lines = 0;
    for _ in 0..5 {
        let t0 = Instant::now();
        let (inc, _) = causeway_rules::build_ruleset_incremental(&t2, &ctx, Some(&rs));
        let partial = causeway_rules::render_partial(&rs, &inc);
        best = best.min(t0.elapsed().as_secs_f64() * 1000.0);
        lines = partial.text.lines().count();
    }
    println!("partial_render_ms={best:.1} partial_lines={lines}");
    let t0 = Instant::now();
    let r = syncer.sync(&t2, &ctx)?;
    println!("agent_one_service_change_ms={} kind={} rules_written={}", ms(t0), r.kind.as_str(), r.rules_written);

    // The floor: an empty batch still makes iptables-restore read the current table (legacy: the whole table
    // blob; nft: the chain cache). Best of 3.
    let mut floor = f64::MAX;
    for _ in 0..3 {
        let t0 = Instant::now();
        sink.restore("*nat\nCOMMIT\n")?;
        floor = floor.min(t0.elapsed().as_secs_f64() * 1000.0);
    }
    println!("empty_restore_ms={floor:.1}");

    // One Service added.
    let mut t3 = t2.clone();
    t3.ports.push(svc(n, 0));
    t3.ports.sort_by(|a, b| a.name.cmp(&b.name));
    let t0 = Instant::now();
    let r = syncer.sync(&t3, &ctx)?;
    println!("agent_one_service_add_ms={} kind={} rules_written={}", ms(t0), r.kind.as_str(), r.rules_written);

    // The same endpoint change written as kube-proxy's partial sync does: every top-level chain in full plus the
    // changed Service's chains (back to t2's endpoints so the text differs from the kernel's state).
    let (rs3, _) = build_ruleset(&t3, &ctx);
    let mut t4 = t3.clone();
    let idx = t4.ports.iter().position(|p| p.name == t.ports[mid].name).unwrap_or(0);
    let changed_name = t4.ports[idx].name.clone();
    t4.ports[idx] = svc(mid as u32, 2);
    t4.ports[idx].name = changed_name.clone();
    t4.ports[idx].cluster_ips = t.ports[mid].cluster_ips.clone();
    let (rs4, _) = build_ruleset(&t4, &ctx);
    let old_chains: Vec<String> =
        rs3.services.get(&changed_name).map(|s| s.chains.iter().map(|c| c.name.clone()).collect()).unwrap_or_default();
    let new_chains: Vec<String> =
        rs4.services.get(&changed_name).map(|s| s.chains.iter().map(|c| c.name.clone()).collect()).unwrap_or_default();
    let full4 = render_full(&rs4, &sink.save()?).text;
    let is_service_chain =
        |c: &str| ["KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-"].iter().any(|p| c.starts_with(p));
    let mut kp = String::new();
    for line in full4.lines() {
        let chain =
            line.strip_prefix(':').or_else(|| line.strip_prefix("-A ")).and_then(|r| r.split_whitespace().next());
        let keep = match chain {
            Some(c) if is_service_chain(c) => new_chains.iter().any(|x| x == c),
            _ => !line.starts_with("-X "),
        };
        if keep {
            kp.push_str(line);
            kp.push('\n');
            if line == "*nat" {
                for c in old_chains.iter().filter(|c| !new_chains.contains(c)) {
                    kp.push_str(&format!(":{c} - [0:0]\n"));
                }
            }
        }
    }
    let stale: String = old_chains.iter().filter(|c| !new_chains.contains(c)).map(|c| format!("-X {c}\n")).collect();
    if let Some(pos) = kp.rfind("COMMIT") {
        kp.insert_str(pos, &stale);
    }
    let t0 = Instant::now();
    sink.restore(&kp)?;
    println!("kube_proxy_style_one_service_change_ms={} lines={}", ms(t0), kp.lines().count());
    Ok(())
}
