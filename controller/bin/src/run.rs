//! The subcommands' bodies: wiring of source → index → translate → proxy.

use crate::cli::{DemoArgs, RunArgs, SourceArgs};
use anyhow::{Context, bail};
use causeway_model::{Diagnostic, RouteTable, Severity};
use causeway_proxy::{AdminServer, Limits, Proxy, ProxyConfig, Readiness, Timeouts};
use causeway_source::{IndexFeed, SourceEvent};
use causeway_translate::TranslateConfig;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Builds the runtime (`--worker-threads`) and runs the proxy until SIGTERM/SIGINT.
pub fn run_blocking(args: RunArgs, before: Option<Box<dyn FnOnce() + Send>>) -> anyhow::Result<ExitCode> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.worker_threads {
        if n == 0 {
            bail!("--worker-threads must be at least 1");
        }
        // The data path then runs on its own `n` single-threaded runtimes (see `run`); this runtime only carries
        // the control plane: sources, translation, the admin server.
        builder.worker_threads(1);
    }
    let runtime = builder.enable_all().build().context("starting the async runtime")?;
    if let Some(before) = before {
        before();
    }
    runtime.block_on(run(args))?;
    Ok(ExitCode::SUCCESS)
}

/// `causeway demo`: writes the demo manifests into a fresh directory, starts the demo backends, then `run`.
pub fn demo_blocking(mut args: DemoArgs) -> anyhow::Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("causeway-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::demo::write_demo_dir(&dir)?;
    args.run.source.manifests = Some(dir.clone());
    // The demo runs without root: unless told otherwise, listen on unprivileged loopback ports.
    if args.run.http_addr == "0.0.0.0:80".parse()? {
        args.run.http_addr = "127.0.0.1:8080".parse()?;
    }
    if args.run.https_addr == "0.0.0.0:443".parse()? {
        args.run.https_addr = "127.0.0.1:8443".parse()?;
    }
    let (http, https) = (args.run.http_addr, args.run.https_addr);
    eprintln!(
        "causeway demo: serving {dir} (edit it live)\n  try: curl -s http://{http}/ -H 'Host: demo.local'\n       curl -s http://{http}/api/users -H 'Host: demo.local'\n       curl -s http://{http}/ -H 'Host: shop.apps.local'\n       curl -sk https://demo.local:{port}/api --resolve demo.local:{port}:{ip}",
        dir = dir.display(),
        port = https.port(),
        ip = https.ip(),
    );
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    let runtime = builder.enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async move {
        crate::demo::start_backends().await?;
        run(args.run).await
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let translate = translate_config(&args.source)?;
    let registry = prometheus::Registry::new();
    let config = ProxyConfig {
        http_addr: args.http_addr,
        https_addr: args.https_addr,
        redirect_https_port: args.redirect_https_port,
        timeouts: Timeouts {
            connect: args.upstream_connect_timeout,
            response_header: args.upstream_response_timeout,
            drain: args.drain_timeout,
            ..Timeouts::default()
        },
        limits: Limits { max_request_body_bytes: args.max_request_body_bytes, ..Limits::default() },
    };
    let proxy = Proxy::bind(config, &registry).await.context("binding the proxy listeners")?;
    let readiness = Readiness::new();
    let admin = AdminServer::bind(args.admin_addr, registry.clone(), readiness.clone(), proxy.table_view())
        .await
        .with_context(|| format!("binding the admin listener on {}", args.admin_addr))?;
    let mut cluster: Option<Cluster> = None;
    let addrs = proxy.local_addrs();
    tracing::info!(message = "Listening.", http = %addrs.http, https = %addrs.https, admin = %admin.local_addr());

    // Sources feed one index; nothing is published until every source finished its initial list.
    let (events_tx, events_rx) = mpsc::channel::<SourceEvent>(1024);
    let mut index_rx = match &args.source.manifests {
        Some(dir) => {
            let (index_rx, _feed) = IndexFeed::spawn([causeway_source::source_name(dir)], events_rx);
            let dir = dir.clone();
            tokio::spawn(async move {
                if let Err(error) = causeway_source::watch_manifests(&dir, events_tx).await {
                    tracing::error!(message = "The manifests source stopped.", error = %error);
                }
            });
            index_rx
        }
        None => {
            let (index_rx, _feed) = IndexFeed::spawn([causeway_kube::CLUSTER_SOURCE], events_rx);
            cluster = Some(start_cluster(&args, &registry, events_tx).await?);
            index_rx
        }
    };

    // One shutdown signal for every task.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let admin_task = tokio::spawn(admin.serve(stopped(stop_rx.clone())));
    // A draining proxy takes no new connections on its node: release its heartbeat when the drain starts, so the
    // agents move proxy-class addresses to another proxy's node at once.
    let mut heartbeat_release = cluster.as_mut().and_then(|c| c.heartbeat.take()).map(|heartbeat| {
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move {
            stop.await;
            heartbeat.release().await;
        })
    });

    // Translate each published index and swap the result in. One table per index version.
    let lb_metrics = LbMetrics::register(&registry).context("registering the LoadBalancer metrics")?;
    let handle = proxy.handle();
    let writers =
        cluster.as_ref().map(|c| (c.owned.clone(), c.diagnostics.clone(), c.lb_status.clone(), c.pool_status.clone()));
    let manifests_mode = cluster.is_none();
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let translator = tokio::spawn(async move {
        let mut seen: BTreeSet<Diagnostic> = BTreeSet::new();
        let mut first = Some(first_tx);
        loop {
            let index = index_rx.borrow_and_update().clone();
            if let Some(index) = index {
                let (table, lb) = translate_index(&index, &translate, manifests_mode);
                lb_metrics.observe(&lb);
                let mut diagnostics = table.diagnostics.clone();
                if let Some((owned, _, lb_status, pool_status)) = &writers {
                    owned.send_replace(Some(Arc::new(causeway_translate::owned_ingresses(&index, &translate))));
                    lb_status.send_replace(Arc::new(causeway_lb::status_updates(&index, &lb.assignments)));
                    pool_status.send_if_modified(|current| {
                        let next = causeway_lb::pool_counts(&lb.usage);
                        let changed = **current != next;
                        if changed {
                            *current = Arc::new(next);
                        }
                        changed
                    });
                }
                diagnostics.extend(handle.store(table));
                if let Some((_, events, _, _)) = &writers {
                    events.send_replace(Arc::new(notices(&diagnostics, &lb)));
                }
                log_new_diagnostics(&mut seen, diagnostics);
                readiness.set_ready(true);
                if let Some(first) = first.take() {
                    let _ = first.send(());
                }
            }
            if index_rx.changed().await.is_err() {
                break;
            }
        }
    });

    // Accept nothing before the first complete table (design invariant 2): until then connections wait in the
    // listen backlog and /readyz answers 503.
    tokio::select! {
        _ = first_rx => tracing::info!(message = "First table published; serving."),
        _ = stopped(stop_rx.clone()) => {
            translator.abort();
            admin_task.abort();
            if let Some(release) = heartbeat_release.take() {
                let _ = release.await;
            }
            return Ok(());
        }
    }
    match args.worker_threads {
        // The nginx worker model: n OS threads, each a current-thread runtime accepting from the same sockets.
        // Cheaper per request than a work-stealing runtime (see tests/bench/l7.sh).
        Some(n) => proxy.serve_on_threads(n, stopped(stop_rx)).await.context("serving")?,
        None => proxy.serve(stopped(stop_rx)).await.context("serving")?,
    }
    translator.abort();
    admin_task.abort();
    if let Some(release) = heartbeat_release {
        let _ = release.await;
    }
    if let Some(cluster) = cluster {
        // Release the Lease so another replica takes over at once instead of after the lease duration.
        cluster.leader.shutdown().await;
    }
    tracing::info!(message = "Drained; exiting.");
    Ok(())
}

/// LoadBalancer address metrics: pool sizes and use, and Services left without an address.
struct LbMetrics {
    pool_addresses: prometheus::IntGaugeVec,
    pending: prometheus::IntGauge,
}

impl LbMetrics {
    fn register(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let pool_addresses = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "causeway_lb_pool_addresses",
                "Addresses of each IPPool: usable in total, and held by at least one Service.",
            ),
            &["pool", "state"],
        )?;
        let pending = prometheus::IntGauge::new(
            "causeway_lb_services_pending",
            "LoadBalancer Services of ours without an address (pool exhausted or request refused).",
        )?;
        registry.register(Box::new(pool_addresses.clone()))?;
        registry.register(Box::new(pending.clone()))?;
        Ok(Self { pool_addresses, pending })
    }

    fn observe(&self, plan: &causeway_lb::LbPlan) {
        // Pools come and go: export exactly the current ones.
        self.pool_addresses.reset();
        for usage in &plan.usage {
            let total = i64::try_from(usage.total).unwrap_or(i64::MAX);
            let used = i64::try_from(usage.used).unwrap_or(i64::MAX);
            self.pool_addresses.with_label_values(&[&usage.pool, "total"]).set(total);
            self.pool_addresses.with_label_values(&[&usage.pool, "used"]).set(used);
        }
        self.pending.set(i64::try_from(plan.pending.len()).unwrap_or(i64::MAX));
    }
}

/// The Kubernetes side of `run`: the watchers, the leader elector and the leader-only writers.
struct Cluster {
    leader: causeway_kube::LeaderHandle,
    /// The proxy's node heartbeat (`--node-name`), released as soon as the drain starts.
    heartbeat: Option<causeway_kube::heartbeat::HeartbeatHandle>,
    /// The Ingresses we serve, for the status writer.
    owned: tokio::sync::watch::Sender<causeway_kube::OwnedIngresses>,
    /// The current diagnostics, for the Event writer.
    diagnostics: tokio::sync::watch::Sender<Arc<Vec<causeway_kube::Notice>>>,
    /// LoadBalancer status writes the allocation needs, for the leader's Service status writer.
    lb_status: tokio::sync::watch::Sender<causeway_lb::writer::StatusUpdates>,
    /// IPPool counts, for the leader's IPPool status writer.
    pool_status: tokio::sync::watch::Sender<causeway_lb::writer::PoolStatuses>,
}

async fn start_cluster(
    args: &RunArgs,
    registry: &prometheus::Registry,
    events_tx: mpsc::Sender<SourceEvent>,
) -> anyhow::Result<Cluster> {
    use causeway_kube as ck;
    let config = match &args.source.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no --manifests DIR and no Kubernetes configuration (not in a cluster, no $KUBECONFIG, no --kubeconfig)",
        )?,
    };
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
    let metrics = ck::KubeMetrics::register(registry).context("registering the Kubernetes metrics")?;
    let publish = match (&args.publish_address, &args.publish_service) {
        (Some(_), Some(_)) => bail!("--publish-address and --publish-service are mutually exclusive"),
        (Some(ip), None) => Some(ck::Publish::Addresses(vec![ip.to_string()])),
        (None, Some(service)) => Some(ck::Publish::service(service).context("--publish-service")?),
        (None, None) => None,
    };
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host = host.trim();
        format!("{host}-{}", std::process::id())
    });
    let lease = ck::LeaseConfig::new(args.lease_namespace.clone(), args.lease_name.clone(), identity.clone());
    // The proxy's per-node heartbeat: the node agents announce proxy-class addresses only where a proxy lives.
    let heartbeat = match &args.node_name {
        Some(node) => {
            let mut config = ck::heartbeat::HeartbeatConfig::node(args.lease_namespace.clone(), node.clone());
            config.component = ck::heartbeat::PROXY_COMPONENT.to_owned();
            config.validate().context("--node-name")?;
            Some(config)
        }
        None => None,
    };

    // Missing RBAC is one clear start-up error naming every verb and resource, not a watcher retrying a 403.
    let mut needed = ck::watch_required_access();
    needed.extend(lease.required_access());
    needed.extend(ck::event_required_access());
    if let Some(publish) = &publish {
        needed.extend(publish.required_access());
    }
    if let Some(heartbeat) = &heartbeat {
        needed.extend(heartbeat.renew_required_access());
    }
    // The LoadBalancer allocator's status writes (merge patches on services/status).
    needed.push(ck::Access { verb: "patch", group: "", resource: "services/status", namespace: None });
    ck::check_access(&client, &needed).await?;

    tokio::spawn(ck::watch_cluster(client.clone(), events_tx, metrics.clone()));
    let leader = ck::spawn_elector(client.clone(), lease, metrics.clone());
    let heartbeat = match heartbeat {
        Some(config) => {
            let hb_metrics = ck::heartbeat::HeartbeatMetrics::register(registry).context("registering metrics")?;
            tracing::info!(message = "Proxy heartbeat on.", lease = %config.lease_name(), namespace = %config.namespace);
            Some(ck::heartbeat::spawn_heartbeat(client.clone(), config, hb_metrics))
        }
        None => None,
    };
    let (owned, owned_rx) = tokio::sync::watch::channel(None);
    let (diagnostics, diagnostics_rx) = tokio::sync::watch::channel(Arc::new(Vec::new()));
    if let Some(publish) = publish {
        tokio::spawn(ck::run_status_writer(client.clone(), publish, leader.is_leader(), owned_rx, metrics.clone()));
    }
    let (lb_status, lb_status_rx) = tokio::sync::watch::channel(Arc::new(Vec::new()));
    tokio::spawn(causeway_lb::writer::run_status_writer(
        client.clone(),
        leader.is_leader(),
        lb_status_rx,
        std::time::Duration::from_secs(1),
    ));
    let (pool_status, pool_status_rx) = tokio::sync::watch::channel(Arc::new(BTreeMap::new()));
    tokio::spawn(causeway_lb::writer::run_pool_status_writer(
        client.clone(),
        leader.is_leader(),
        pool_status_rx,
        std::time::Duration::from_secs(1),
    ));
    tokio::spawn(ck::run_event_writer(
        client,
        args.source.controller_name.clone(),
        identity,
        leader.is_leader(),
        diagnostics_rx,
        metrics,
    ));
    Ok(Cluster { leader, heartbeat, owned, diagnostics, lb_status, pool_status })
}

/// Translates one index snapshot into the route table, with the LoadBalancer plan folded in.
///
/// LoadBalancer addresses: in a cluster the leader writes them into Service status and the watch brings them
/// back, so the plain index is translated; a manifests directory has nobody to write status, so translation reads
/// the allocation directly (it is deterministic, so every component computing it agrees). The plan's diagnostics
/// join the table's.
fn translate_index(
    index: &causeway_translate::Index,
    translate: &TranslateConfig,
    manifests_mode: bool,
) -> (RouteTable, causeway_lb::LbPlan) {
    let lb = causeway_lb::plan(index, "");
    let mut table = if manifests_mode {
        let assigned = causeway_lb::with_assigned_status(index, &lb.assignments);
        causeway_translate::route_table(&assigned, translate)
    } else {
        causeway_translate::route_table(index, translate)
    };
    table.diagnostics.extend(lb.diagnostics.iter().cloned());
    (table, lb)
}

/// The diagnostics as Event notices; the LoadBalancer allocator's carry their precise reason and other object.
fn notices(diagnostics: &[Diagnostic], lb: &causeway_lb::LbPlan) -> Vec<causeway_kube::Notice> {
    diagnostics
        .iter()
        .map(|d| {
            let note = lb.notes.get(d);
            causeway_kube::Notice {
                diagnostic: d.clone(),
                reason: note.map(|n| n.reason),
                related: note.and_then(|n| n.related.clone()),
            }
        })
        .collect()
}

/// Logs each diagnostic once, when it first appears, and notes the ones that went away.
fn log_new_diagnostics(seen: &mut BTreeSet<Diagnostic>, current: Vec<Diagnostic>) {
    let current: BTreeSet<Diagnostic> = current.into_iter().collect();
    for d in current.difference(seen) {
        match d.severity {
            Severity::Error => tracing::warn!(
                message = "Left out of the table.",
                object = %d.object, field = %d.field, error = %d.message
            ),
            Severity::Warning => tracing::warn!(
                message = "Possible mistake.",
                object = %d.object, field = %d.field, warning = %d.message
            ),
        }
    }
    for d in seen.difference(&current) {
        tracing::info!(message = "Diagnostic resolved.", object = %d.object, field = %d.field);
    }
    *seen = current;
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(message = "Cannot listen for SIGTERM.", error = %error);
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(message = "SIGTERM: draining."),
        _ = tokio::signal::ctrl_c() => tracing::info!(message = "SIGINT: draining."),
    }
}

fn translate_config(args: &SourceArgs) -> anyhow::Result<TranslateConfig> {
    let default_tls_secret = match &args.default_tls_secret {
        None => None,
        Some(s) => match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Some((ns.to_owned(), name.to_owned()))
            }
            _ => bail!("--default-tls-secret {s:?}: expected namespace/name"),
        },
    };
    Ok(TranslateConfig {
        ingress_class: args.ingress_class.clone(),
        controller_name: args.controller_name.clone(),
        default_tls_secret,
    })
}

/// Loads a manifests directory once and translates it (for `routes` and `check`).
fn load_table(args: &SourceArgs) -> anyhow::Result<RouteTable> {
    let Some(dir) = &args.manifests else { bail!("--manifests DIR is required") };
    let translate = translate_config(args)?;
    let (index, mut file_diagnostics) =
        causeway_source::load_dir(Path::new(dir)).with_context(|| format!("reading {}", dir.display()))?;
    let (mut table, _) = translate_index(&index, &translate, true);
    // The proxy's compiler also checks certificates and keys; report those as it would at run time.
    let compile = causeway_proxy::check(&table).context("compiling the table")?;
    file_diagnostics.retain(|d| !table.diagnostics.contains(d));
    table.diagnostics.extend(file_diagnostics);
    table.diagnostics.extend(compile);
    table.diagnostics.sort();
    table.diagnostics.dedup();
    Ok(table)
}

/// `causeway routes`: the compiled table and its diagnostics as JSON on stdout.
pub fn routes(args: SourceArgs) -> anyhow::Result<ExitCode> {
    let table = load_table(&args)?;
    let mut text = serde_json::to_string_pretty(&table)?;
    text.push('\n');
    write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// `causeway check`: diagnostics, one per line; exit 1 when any is an error.
pub fn check(args: SourceArgs) -> anyhow::Result<ExitCode> {
    let table = load_table(&args)?;
    let mut errors = 0;
    let mut out = String::new();
    for d in &table.diagnostics {
        let level = match d.severity {
            Severity::Error => {
                errors += 1;
                "error"
            }
            Severity::Warning => "warning",
        };
        out.push_str(&format!("{level}: {d}\n"));
    }
    let routes: usize = table.virtual_hosts.iter().map(|v| v.routes.len()).sum();
    out.push_str(&format!(
        "{} virtual hosts, {routes} routes, {} certificates, {errors} errors, {} warnings\n",
        table.virtual_hosts.len(),
        table.certificates.len(),
        table.diagnostics.len() - errors
    ));
    write_stdout(&out)?;
    Ok(if errors > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Writes to stdout; a closed pipe (`causeway routes | head`) is not an error.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}
