//! Prometheus metrics. Every label is bounded by the configuration (ingress, service, host of a certificate,
//! status class, listener kind); never a path or a client address.
//!
//! The request path never looks a label set up: [`RouteStats`] handles are resolved when a table is compiled.

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use std::collections::HashSet;
use std::time::Duration;

/// Every metric the proxy exports.
#[derive(Clone)]
pub(crate) struct Metrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub upstream_connect_errors: IntCounterVec,
    pub table_swaps: IntCounter,
    pub last_swap: Gauge,
    pub diagnostics: IntGaugeVec,
    pub table_entries: IntGaugeVec,
    pub cert_expiry: GaugeVec,
    pub connections: IntCounterVec,
    pub tls_handshake_errors: IntCounter,
    pub l4_connections: IntCounterVec,
    pub l4_active: IntGaugeVec,
    pub l4_bytes: IntCounterVec,
    pub l4_connect_errors: IntCounterVec,
    pub l4_listeners: IntGauge,
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl Metrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new("causeway_http_requests_total", "HTTP requests answered, by Ingress, Service and status class."),
            &["ingress", "service", "status_class"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "causeway_http_request_duration_seconds",
                "Time from receiving a request to sending its response headers.",
            )
            .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["ingress", "service"],
        )?;
        let upstream_connect_errors = IntCounterVec::new(
            Opts::new(
                "causeway_upstream_connect_errors_total",
                "Failed or timed-out connects to endpoints, by Service.",
            ),
            &["service"],
        )?;
        let table_swaps = IntCounter::new("causeway_route_table_swaps_total", "Route tables compiled and swapped in.")?;
        let last_swap =
            Gauge::new("causeway_route_table_last_swap_timestamp_seconds", "Unix time of the last route table swap.")?;
        let diagnostics = IntGaugeVec::new(
            Opts::new(
                "causeway_route_table_diagnostics",
                "Diagnostics of the live table (translation and compilation), by severity.",
            ),
            &["severity"],
        )?;
        let table_entries = IntGaugeVec::new(
            Opts::new(
                "causeway_route_table_entries",
                "Size of the live table: virtual hosts, routes, certificates and L4 listeners.",
            ),
            &["kind"],
        )?;
        let cert_expiry = GaugeVec::new(
            Opts::new(
                "causeway_tls_certificate_expiry_timestamp_seconds",
                "notAfter of the certificate served for a host, as Unix time.",
            ),
            &["host"],
        )?;
        let connections = IntCounterVec::new(
            Opts::new("causeway_connections_total", "Client connections accepted, by listener."),
            &["listener"],
        )?;
        let tls_handshake_errors =
            IntCounter::new("causeway_tls_handshake_errors_total", "TLS handshakes that failed or timed out.")?;
        let l4_connections = IntCounterVec::new(
            Opts::new("causeway_l4_connections_total", "L4 connections (TCP) or flows (UDP) accepted, by Service."),
            &["service", "protocol"],
        )?;
        let l4_active = IntGaugeVec::new(
            Opts::new("causeway_l4_active_connections", "Open L4 connections or flows, by Service."),
            &["service", "protocol"],
        )?;
        let l4_bytes = IntCounterVec::new(
            Opts::new("causeway_l4_bytes_total", "Bytes forwarded by L4 listeners, by Service and direction."),
            &["service", "protocol", "direction"],
        )?;
        let l4_connect_errors = IntCounterVec::new(
            Opts::new("causeway_l4_connect_errors_total", "Failed connects to L4 endpoints, by Service."),
            &["service", "protocol"],
        )?;
        let l4_listeners = IntGauge::new("causeway_l4_listeners", "L4 listeners open.")?;

        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(upstream_connect_errors.clone()))?;
        registry.register(Box::new(table_swaps.clone()))?;
        registry.register(Box::new(last_swap.clone()))?;
        registry.register(Box::new(diagnostics.clone()))?;
        registry.register(Box::new(table_entries.clone()))?;
        registry.register(Box::new(cert_expiry.clone()))?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(tls_handshake_errors.clone()))?;
        registry.register(Box::new(l4_connections.clone()))?;
        registry.register(Box::new(l4_active.clone()))?;
        registry.register(Box::new(l4_bytes.clone()))?;
        registry.register(Box::new(l4_connect_errors.clone()))?;
        registry.register(Box::new(l4_listeners.clone()))?;
        Ok(Self {
            requests,
            duration,
            upstream_connect_errors,
            table_swaps,
            last_swap,
            diagnostics,
            table_entries,
            cert_expiry,
            connections,
            tls_handshake_errors,
            l4_connections,
            l4_active,
            l4_bytes,
            l4_connect_errors,
            l4_listeners,
        })
    }

    /// Metrics registered on a private registry: for compiling a table only to check it.
    pub fn unregistered() -> Self {
        // Registering on a fresh registry cannot collide.
        match Self::register(&Registry::new()) {
            Ok(m) => m,
            Err(e) => unreachable!("fresh registry refused metrics: {e}"),
        }
    }

    /// Resolves the per-route handles for one (ingress, service) label pair.
    pub fn route_stats(&self, ingress: &str, service: &str) -> RouteStats {
        let requests = STATUS_CLASSES.map(|class| self.requests.with_label_values(&[ingress, service, class]));
        RouteStats {
            requests,
            duration: self.duration.with_label_values(&[ingress, service]),
            connect_errors: self.upstream_connect_errors.with_label_values(&[service]),
        }
    }

    /// Removes label sets that no live route uses any more, so that deleted Ingresses stop being exported.
    pub fn forget_routes(&self, gone: &HashSet<(String, String)>) {
        for (ingress, service) in gone {
            for class in STATUS_CLASSES {
                let _ = self.requests.remove_label_values(&[ingress, service, class]);
            }
            let _ = self.duration.remove_label_values(&[ingress, service]);
        }
    }
}

/// Pre-resolved metric handles for one route (or for "no route").
pub(crate) struct RouteStats {
    requests: [IntCounter; 5],
    duration: Histogram,
    pub connect_errors: IntCounter,
}

impl RouteStats {
    /// Counts one answered request.
    pub fn observe(&self, status: http::StatusCode, elapsed: Duration) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.requests[class].inc();
        self.duration.observe(elapsed.as_secs_f64());
    }
}
