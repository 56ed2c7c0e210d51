//! Prometheus metrics, all prefixed `causeway_node_`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Every metric the agent exports.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub sync_duration: HistogramVec,
    pub syncs: IntCounterVec,
    pub sync_failures: IntCounterVec,
    pub iptables_rules: IntGauge,
    pub service_ports: IntGauge,
    pub routes: IntGauge,
    pub route_failures: IntCounterVec,
    pub programming_latency: HistogramVec,
    pub diagnostics: IntGauge,
    pub last_sync_timestamp: IntGauge,
    pub lb_addresses_owned: IntGauge,
    pub ipam_addresses: prometheus::IntGaugeVec,
    pub lb_ownership_changes: IntCounterVec,
    pub lb_announce_failures: IntCounter,
    pub conntrack_deleted: IntCounter,
    pub conntrack_failures: IntCounter,
    pub heartbeat_live_nodes: IntGauge,
    pub heartbeat_dead_nodes: IntGauge,
    pub heartbeat_view_fresh: IntGauge,
}

fn buckets() -> Vec<f64> {
    vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let sync_duration = HistogramVec::new(
            HistogramOpts::new("causeway_node_sync_duration_seconds", "Time to render and apply Service rules.")
                .buckets(buckets()),
            &["kind", "family"],
        )?;
        let syncs =
            IntCounterVec::new(Opts::new("causeway_node_syncs_total", "Successful rule syncs."), &["kind", "family"])?;
        let sync_failures = IntCounterVec::new(
            Opts::new("causeway_node_sync_failures_total", "Failed rule syncs by reason."),
            &["reason", "family"],
        )?;
        let iptables_rules =
            IntGauge::new("causeway_node_iptables_rules", "Rules owned by Service ports after the last sync.")?;
        let service_ports = IntGauge::new("causeway_node_service_ports", "Service ports programmed.")?;
        let routes = IntGauge::new("causeway_node_routes", "Routes to other nodes' pod CIDRs.")?;
        let route_failures = IntCounterVec::new(
            Opts::new("causeway_node_route_sync_failures_total", "Failed route reconciles."),
            &["reason"],
        )?;
        let programming_latency = HistogramVec::new(
            HistogramOpts::new(
                "causeway_node_network_programming_latency_seconds",
                "From a change of the objects (as seen by the source) to its rules applied.",
            )
            .buckets(buckets()),
            &["family"],
        )?;
        let diagnostics =
            IntGauge::new("causeway_node_diagnostics", "Objects or fields skipped as invalid at the last sync.")?;
        let last_sync_timestamp =
            IntGauge::new("causeway_node_last_sync_timestamp_seconds", "Unix time of the last successful rule sync.")?;
        let lb_addresses_owned = IntGauge::new(
            "causeway_node_lb_addresses_owned",
            "LoadBalancer addresses this node owns (announces, with --lb-interface).",
        )?;
        let lb_ownership_changes = IntCounterVec::new(
            Opts::new(
                "causeway_node_lb_ownership_changes_total",
                "LoadBalancer addresses this node started (acquired) or stopped (released) owning.",
            ),
            &["change"],
        )?;
        let lb_announce_failures = IntCounter::new(
            "causeway_node_lb_announce_failures_total",
            "Failed address changes or gratuitous ARPs on the --lb-interface.",
        )?;
        let heartbeat_live_nodes = IntGauge::new(
            "causeway_node_heartbeat_live_nodes",
            "Nodes whose heartbeat Lease this agent sees alive (renewed within its duration).",
        )?;
        let heartbeat_dead_nodes = IntGauge::new(
            "causeway_node_heartbeat_dead_nodes",
            "Nodes whose heartbeat Lease this agent sees released or expired (they announce nothing).",
        )?;
        let heartbeat_view_fresh = IntGauge::new(
            "causeway_node_heartbeat_view_fresh",
            "1 while this agent sees its own heartbeat through the watch; 0: view stale, nobody newly judged dead.",
        )?;
        registry.register(Box::new(heartbeat_live_nodes.clone()))?;
        registry.register(Box::new(heartbeat_dead_nodes.clone()))?;
        registry.register(Box::new(heartbeat_view_fresh.clone()))?;
        let ipam_addresses = prometheus::IntGaugeVec::new(
            Opts::new(
                "causeway_node_ipam_addresses",
                "Pod addresses of this node: allocated (reserved in the IPAM store) and capacity (usable in its pod CIDRs).",
            ),
            &["state"],
        )?;
        let conntrack_deleted = IntCounter::new(
            "causeway_node_conntrack_flows_deleted_total",
            "Stale conntrack flows deleted after rule syncs (untranslated flows to Services that gained endpoints; \
             UDP/SCTP flows to removed endpoints).",
        )?;
        let conntrack_failures = IntCounter::new(
            "causeway_node_conntrack_cleanup_failures_total",
            "Conntrack clean-ups that could not run (conntrack missing or failing).",
        )?;
        registry.register(Box::new(conntrack_deleted.clone()))?;
        registry.register(Box::new(conntrack_failures.clone()))?;
        registry.register(Box::new(ipam_addresses.clone()))?;
        registry.register(Box::new(lb_addresses_owned.clone()))?;
        registry.register(Box::new(lb_ownership_changes.clone()))?;
        registry.register(Box::new(lb_announce_failures.clone()))?;
        registry.register(Box::new(sync_duration.clone()))?;
        registry.register(Box::new(syncs.clone()))?;
        registry.register(Box::new(sync_failures.clone()))?;
        registry.register(Box::new(iptables_rules.clone()))?;
        registry.register(Box::new(service_ports.clone()))?;
        registry.register(Box::new(routes.clone()))?;
        registry.register(Box::new(route_failures.clone()))?;
        registry.register(Box::new(programming_latency.clone()))?;
        registry.register(Box::new(diagnostics.clone()))?;
        registry.register(Box::new(last_sync_timestamp.clone()))?;
        Ok(Self {
            registry,
            sync_duration,
            syncs,
            sync_failures,
            iptables_rules,
            service_ports,
            routes,
            route_failures,
            programming_latency,
            diagnostics,
            last_sync_timestamp,
            lb_addresses_owned,
            ipam_addresses,
            lb_ownership_changes,
            lb_announce_failures,
            conntrack_deleted,
            conntrack_failures,
            heartbeat_live_nodes,
            heartbeat_dead_nodes,
            heartbeat_view_fresh,
        })
    }

    /// Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}
