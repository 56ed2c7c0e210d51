//! `causeway-node`: flag parsing and wiring; the work is in the library.

use anyhow::{Context as _, bail};
use causeway_announce::{AnnounceWorker, Announcer, GarpConfig};
use causeway_node::agent::{CniTarget, Desired, RulesConfig, cni_task, families, routes_task, rules_task};
use causeway_node::cni::CniSettings;
use causeway_node::diagnostics::DiagnosticLog;
use causeway_node::http::{Handler, HealthState, serve};
use causeway_node::lb::{Announcement, Liveness, plan_and_announce};
use causeway_node::metrics::Metrics;
use causeway_node::sink::{IptablesRestore, RuleSink};
use causeway_rules::Family;
use causeway_translate::Kind;
use clap::{Parser, ValueEnum};
use hyper::StatusCode;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ProxyMode {
    /// Service rules in kube-proxy's iptables layout.
    Iptables,
    /// No Service rules (kube-proxy stays); CNI, routes and masquerade only.
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map(|i| s.split_at(i)).unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

/// The Causeway node agent: Service rules (kube-proxy replacement), routes to other nodes, egress masquerade,
/// CNI configuration.
#[derive(Debug, Parser)]
#[command(name = "causeway-node", version)]
struct Args {
    /// This node's name.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Read objects from this manifests directory.
    #[arg(long)]
    manifests: Option<PathBuf>,
    /// Watch a cluster's Services, EndpointSlices and Nodes with this kubeconfig (instead of --manifests).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The cluster's pod CIDR(s), comma-separated (local-traffic detection and egress masquerade).
    #[arg(long, value_delimiter = ',')]
    cluster_cidr: Vec<IpNet>,
    /// The Service CIDR(s) (informational; Service rules match exact ClusterIPs).
    #[arg(long, value_delimiter = ',')]
    service_cidr: Vec<IpNet>,
    #[arg(long, value_enum, default_value = "iptables")]
    proxy_mode: ProxyMode,
    #[arg(long, default_value = "/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    #[arg(long, default_value = "10-causeway.conflist")]
    cni_conf_name: String,
    #[arg(long, default_value = "/opt/cni/bin")]
    cni_bin_dir: PathBuf,
    /// The causeway-cni binary to install [causeway-cni next to this executable].
    #[arg(long)]
    cni_plugin: Option<PathBuf>,
    /// Do not write CNI config or install the plugin.
    #[arg(long)]
    no_cni: bool,
    #[arg(long, default_value = "causeway")]
    cni_network: String,
    #[arg(long, default_value = "cni0")]
    cni_bridge: String,
    #[arg(long)]
    cni_mtu: Option<u32>,
    /// host-local IPAM store root written into the conflist.
    #[arg(long, default_value = "/var/lib/cni/networks")]
    ipam_dir: PathBuf,
    /// Do not manage routes to other nodes.
    #[arg(long)]
    no_routes: bool,
    /// Root of the sysctl tree; empty to leave sysctls alone.
    #[arg(long, default_value = "/proc/sys")]
    sysctl_root: PathBuf,
    #[arg(long, default_value = "127.0.0.1:10249")]
    admin_addr: SocketAddr,
    /// Address the healthCheckNodePort listeners bind.
    #[arg(long, default_value = "0.0.0.0")]
    health_check_bind: IpAddr,
    #[arg(long, default_value = "iptables-restore")]
    iptables_restore: PathBuf,
    #[arg(long, default_value = "iptables-save")]
    iptables_save: PathBuf,
    #[arg(long, default_value = "iptables")]
    iptables: PathBuf,
    #[arg(long, default_value = "ip6tables")]
    ip6tables: PathBuf,
    /// The `conntrack` program (conntrack-tools), used after syncs to delete flows the new rules cannot fix.
    #[arg(long, default_value = "conntrack")]
    conntrack: PathBuf,
    /// Do not delete stale conntrack flows after syncs.
    #[arg(long)]
    no_conntrack_cleanup: bool,
    #[arg(long, default_value = "ip6tables-restore")]
    ip6tables_restore: PathBuf,
    #[arg(long, default_value = "ip6tables-save")]
    ip6tables_save: PathBuf,
    /// xtables lock file passed to iptables as XTABLES_LOCKFILE [iptables' default /run/xtables.lock].
    #[arg(long)]
    xtables_lock: Option<PathBuf>,
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    min_sync_period: Duration,
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    sync_period: Duration,
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    full_sync_period: Duration,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    route_period: Duration,
    #[arg(long, default_value_t = 14)]
    masquerade_bit: u8,
    /// Accept NodePorts on 127.0.0.0/8 (needs route_localnet=1, which this agent does not set).
    #[arg(long)]
    localhost_nodeports: bool,
    /// Do not drop conntrack-INVALID forwarded packets (for nf_conntrack_tcp_be_liberal=1).
    #[arg(long)]
    no_drop_invalid: bool,
    /// Do not masquerade pod traffic leaving the cluster CIDR.
    #[arg(long)]
    no_egress_masquerade: bool,
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Announce the LoadBalancer addresses this node owns on this interface (the one holding the node's
    /// InternalIP): added as /32 (IPv6: /128) and announced with gratuitous ARP (IPv6: unsolicited neighbour
    /// advertisement). Off when not given.
    #[arg(long)]
    lb_interface: Option<String>,
    /// How often the announced addresses are re-checked (an address removed by hand comes back).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    lb_resync_period: Duration,
    /// Namespace of the per-node heartbeat Leases (cluster mode; every agent must use the same).
    #[arg(long, env = "POD_NAMESPACE", default_value = "causeway-system")]
    heartbeat_namespace: String,
    /// How often this node renews its heartbeat Lease (one API write each).
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    heartbeat_interval: Duration,
    /// How long a heartbeat stays valid without renewal: another node takes this node's LoadBalancer addresses
    /// about this long after its agent dies. More than twice --heartbeat-interval.
    #[arg(long, default_value = "1500ms", value_parser = parse_duration)]
    heartbeat_lease_duration: Duration,
    /// No heartbeat Lease: LoadBalancer failover then follows Node readiness only (tens of seconds).
    #[arg(long)]
    no_heartbeat: bool,
}

/// Where the objects come from.
enum Source {
    Manifests(PathBuf),
    Cluster(PathBuf),
}

/// The kinds the agent watches in a cluster: it needs no permission on Ingresses, IngressClasses or Secrets.
/// IPPool: the agent computes the same deterministic allocation as the leader (who writes it into
/// `status.loadBalancer`), so it announces an address as soon as it is allocated; without the CRD installed the
/// kind is empty and `causeway_lb::plan` takes the status addresses as they are.
const CLUSTER_KINDS: [Kind; 4] = [Kind::Service, Kind::EndpointSlice, Kind::Node, Kind::IpPool];

/// Connects with the kubeconfig, checks list/watch on [`CLUSTER_KINDS`] (one clear start-up error naming every
/// missing permission) and starts the watchers feeding `tx`.
async fn start_cluster_source(
    path: &std::path::Path,
    metrics: &Metrics,
    tx: mpsc::Sender<causeway_source::SourceEvent>,
) -> anyhow::Result<kube::Client> {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading kubeconfig {}", path.display()))?;
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
    let kube_metrics =
        causeway_kube::KubeMetrics::register(&metrics.registry).context("registering the Kubernetes metrics")?;
    causeway_kube::check_access(&client, &causeway_kube::watch_required_access_for(&CLUSTER_KINDS)).await?;
    let watch_client = client.clone();
    tokio::spawn(async move {
        if let Err(error) = causeway_kube::watch_cluster_kinds(watch_client, tx, kube_metrics, &CLUSTER_KINDS).await {
            warn!(message = "Cluster source stopped.", %error);
        }
    });
    Ok(client)
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(args.log_format);
    let source = match (&args.manifests, &args.kubeconfig) {
        (Some(_), Some(_)) => bail!("--manifests and --kubeconfig are mutually exclusive"),
        (Some(dir), None) => Source::Manifests(dir.clone()),
        (None, Some(path)) => Source::Cluster(path.clone()),
        (None, None) => bail!("a source is required: --manifests DIR or --kubeconfig FILE"),
    };
    if args.masquerade_bit > 31 {
        bail!("--masquerade-bit must be 0..=31");
    }
    let fams = families(&args.cluster_cidr);

    if !args.sysctl_root.as_os_str().is_empty() {
        let (changed, errors) = causeway_node::sysctl::ensure(&args.sysctl_root, fams);
        for key in changed {
            info!(message = "Sysctl set.", key);
        }
        for error in errors {
            warn!(message = "Sysctl not set.", %error);
        }
    }

    let metrics = Metrics::new().context("registering metrics")?;
    let health = Arc::new(HealthState::default());
    let ready = Arc::new(AtomicBool::new(false));

    // Admin endpoints.
    let admin =
        tokio::net::TcpListener::bind(args.admin_addr).await.with_context(|| format!("binding {}", args.admin_addr))?;
    info!(message = "Admin endpoints listening.", addr = %admin.local_addr().map(|a| a.to_string()).unwrap_or_default());
    let (m2, r2, h2) = (metrics.clone(), ready.clone(), health.clone());
    let admin_handler: Handler = Arc::new(move |path: &str| match path {
        "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", m2.render(), vec![]),
        "/readyz" if r2.load(Ordering::Relaxed) => (StatusCode::OK, "text/plain", "ok\n".into(), vec![]),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", "waiting for the first sync\n".into(), vec![]),
        "/healthz" if h2.proxy_healthy.load(Ordering::Relaxed) => (StatusCode::OK, "text/plain", "ok\n".into(), vec![]),
        "/healthz" => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", "last sync failed or none yet\n".into(), vec![]),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into(), vec![]),
    });
    tokio::spawn(serve(admin, admin_handler));

    // Source → index snapshots → desired state.
    let (tx, rx) = mpsc::channel(1024);
    let mut client = None;
    let (mut snapshots, _feed) = match &source {
        Source::Manifests(dir) => {
            let feed = causeway_source::IndexFeed::spawn([causeway_source::source_name(dir)], rx);
            let watch_dir = dir.clone();
            tokio::spawn(async move {
                if let Err(error) = causeway_source::watch_manifests(&watch_dir, tx).await {
                    warn!(message = "Manifests source stopped.", %error);
                }
            });
            feed
        }
        Source::Cluster(path) => {
            let feed = causeway_source::IndexFeed::spawn([causeway_kube::CLUSTER_SOURCE], rx);
            client = Some(start_cluster_source(path, &metrics, tx).await?);
            feed
        }
    };
    // Per-node heartbeat Leases decide which nodes may announce (cluster mode); readiness alone otherwise.
    let (heartbeat, mut liveness) = match client {
        Some(client) if !args.no_heartbeat => {
            let mut config =
                causeway_kube::heartbeat::HeartbeatConfig::node(&args.heartbeat_namespace, &args.node_name);
            config.renew_interval = args.heartbeat_interval;
            config.lease_duration = args.heartbeat_lease_duration;
            let (handle, liveness) = causeway_node::lb::start_heartbeat(client, config, &metrics.registry)
                .await
                .context("starting the heartbeat (--no-heartbeat turns it off)")?;
            (Some(handle), liveness)
        }
        _ => (None, Liveness::readiness_only()),
    };
    let (desired_tx, desired_rx) = watch::channel::<Option<Arc<Desired>>>(None);
    // LoadBalancer addresses: announced from the thread of the worker, created here (in our namespace).
    let worker = match &args.lb_interface {
        Some(iface) => {
            let announcer = Announcer::new(iface.clone(), GarpConfig::default())
                .with_context(|| format!("--lb-interface {iface}"))?;
            let w = AnnounceWorker::spawn(announcer, args.lb_resync_period).context("starting the announcer")?;
            info!(message = "Announcing owned LoadBalancer addresses.", interface = %iface);
            Some(w)
        }
        None => None,
    };
    let announcement = Arc::new(parking_lot::Mutex::new(Announcement::new(worker)));
    let stopping = announcement.clone();
    let (ann2, m3) = (announcement.clone(), metrics.clone());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            ann2.lock().check_worker(&m3);
        }
    });
    // A manifests directory has nobody to write LoadBalancer status, so the chains use the allocation itself; in
    // a cluster the leader writes status and the watch brings it back.
    let manifests_mode = matches!(source, Source::Manifests(_));
    let diag_metrics = metrics.clone();
    let node_name = args.node_name.clone();
    tokio::spawn(async move {
        let mut log = DiagnosticLog::default();
        loop {
            let snap = snapshots.borrow_and_update().clone();
            if let Some(index) = snap {
                let seen_at = tokio::time::Instant::now();
                // Source diagnostics (a file that does not parse, named by the file) first, then translation's.
                let mut diagnostics: Vec<_> = index.source_diagnostics().cloned().collect();
                let lb = plan_and_announce(&index, &node_name, &liveness, &announcement, &diag_metrics);
                diagnostics.extend(lb.diagnostics.iter().cloned());
                let (services, service_diags) = if manifests_mode {
                    causeway_translate::service_table(&causeway_lb::with_assigned_status(&index, &lb.assignments))
                } else {
                    causeway_translate::service_table(&index)
                };
                let (nodes, node_diags) = causeway_translate::node_table(&index);
                diagnostics.extend(service_diags);
                diagnostics.extend(node_diags);
                log.update(diagnostics.iter().cloned());
                diag_metrics.diagnostics.set(log.len() as i64);
                desired_tx.send_replace(Some(Arc::new(Desired { services, nodes, diagnostics, seen_at })));
            }
            // Until the next snapshot, a change of which nodes are alive re-plans the announcement alone.
            loop {
                tokio::select! {
                    changed = snapshots.changed() => match changed {
                        Ok(()) => break,
                        Err(_) => return,
                    },
                    () = liveness.changed(&diag_metrics) => {
                        let current = snapshots.borrow().clone();
                        if let Some(index) = current {
                            plan_and_announce(&index, &node_name, &liveness, &announcement, &diag_metrics);
                        }
                    }
                }
            }
        }
    });

    // Tasks.
    let mut tasks = Vec::new();
    if args.proxy_mode == ProxyMode::Iptables {
        let mut sinks: Vec<(Family, Arc<dyn RuleSink>)> = Vec::new();
        if fams.v4 {
            let s = IptablesRestore {
                restore: args.iptables_restore.clone(),
                save: args.iptables_save.clone(),
                iptables: args.iptables.clone(),
                wait_seconds: 5,
                lock_file: args.xtables_lock.clone(),
            };
            sinks.push((Family::V4, Arc::new(s)));
        }
        if fams.v6 {
            let s = IptablesRestore {
                restore: args.ip6tables_restore.clone(),
                save: args.ip6tables_save.clone(),
                iptables: args.ip6tables.clone(),
                wait_seconds: 5,
                lock_file: args.xtables_lock.clone(),
            };
            sinks.push((Family::V6, Arc::new(s)));
        }
        let cfg = RulesConfig {
            node_name: args.node_name.clone(),
            cluster_cidrs: args.cluster_cidr.clone(),
            masquerade_bit: args.masquerade_bit,
            localhost_nodeports: args.localhost_nodeports,
            drop_invalid: !args.no_drop_invalid,
            egress_masquerade: !args.no_egress_masquerade,
            random_fully: true,
            min_sync_period: args.min_sync_period,
            sync_period: args.sync_period,
            full_sync_period: args.full_sync_period,
            retry_period: args.sync_period.min(Duration::from_secs(5)),
            health_bind: args.health_check_bind,
            conntrack: (!args.no_conntrack_cleanup)
                .then(|| causeway_node::conntrack::ConntrackTool { program: args.conntrack.clone() }),
        };
        tasks.push(tokio::spawn(rules_task(
            cfg,
            sinks,
            desired_rx.clone(),
            metrics.clone(),
            health.clone(),
            ready.clone(),
        )));
    } else {
        ready.store(true, Ordering::Relaxed);
        health.proxy_healthy.store(true, Ordering::Relaxed);
    }
    if !args.no_routes {
        tasks.push(tokio::spawn(routes_task(
            args.node_name.clone(),
            args.route_period,
            desired_rx.clone(),
            metrics.clone(),
        )));
    }
    if !args.no_cni {
        let plugin_src = args.cni_plugin.clone().or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|d| d.join("causeway-cni")))
                .filter(|p| p.exists())
        });
        let target = CniTarget {
            conf_dir: args.cni_conf_dir.clone(),
            conf_name: args.cni_conf_name.clone(),
            bin_dir: args.cni_bin_dir.clone(),
            plugin_src,
            settings: CniSettings {
                network: args.cni_network.clone(),
                bridge: args.cni_bridge.clone(),
                mtu: args.cni_mtu,
                ipam_dir: args.ipam_dir.clone(),
                portmap_uses_kube_mark_masq: args.proxy_mode == ProxyMode::Iptables,
            },
        };
        tasks.push(tokio::spawn(cni_task(args.node_name.clone(), target, desired_rx.clone())));
        tasks.push(tokio::spawn(causeway_node::agent::ipam_usage_task(
            args.node_name.clone(),
            args.ipam_dir.join(&args.cni_network),
            metrics.clone(),
            desired_rx.clone(),
            std::time::Duration::from_secs(10),
        )));
    }
    let _ = args.service_cidr;

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!(message = "Stopping; rules and routes stay in place.");
    if let Some(heartbeat) = heartbeat {
        // Another node takes this node's LoadBalancer addresses as soon as the release arrives: withdraw them
        // first, so that two nodes never claim one.
        let worker = stopping.lock().take_worker();
        if let Some(worker) = worker {
            match tokio::task::spawn_blocking(move || worker.stop(true)).await {
                Ok(Ok(())) => info!(message = "Withdrew the LoadBalancer addresses."),
                Ok(Err(error)) => warn!(message = "Withdrawing the LoadBalancer addresses failed.", %error),
                Err(error) => warn!(message = "Withdrawing the LoadBalancer addresses failed.", %error),
            }
        }
        heartbeat.release().await;
    }
    for t in tasks {
        t.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (s, want) in [("1s", 1000), ("250ms", 250), ("2m", 120_000), ("1h", 3_600_000), ("5", 5000)] {
            assert_eq!(parse_duration(s).unwrap().as_millis(), want, "{s}");
        }
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("x").is_err());
    }
}
