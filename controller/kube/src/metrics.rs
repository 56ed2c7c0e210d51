//! Prometheus metrics of the Kubernetes side: watch errors and restarts, leadership, status writes, Events.
//!
//! Every label is bounded: `kind` is one of the seven watched kinds, `result` is `ok` or `error`.

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::error::{Error, Result};

/// The metrics of this crate. Cheap to clone; clones share the counters.
#[derive(Clone, Debug)]
pub struct KubeMetrics {
    /// `causeway_kube_watch_errors_total{kind}`: errors a watcher saw (failed list, failed or broken watch).
    pub watch_errors: IntCounterVec,
    /// `causeway_kube_watch_restarts_total{kind}`: re-lists after the initial one (after an error or expiry).
    pub watch_restarts: IntCounterVec,
    /// `causeway_kube_watch_synced{kind}`: 1 once the kind's current list has been delivered completely.
    pub watch_synced: IntGaugeVec,
    /// `causeway_leader`: 1 while this replica holds the lease.
    pub leader: IntGauge,
    /// `causeway_leader_transitions_total{change}`: `acquired` and `lost` transitions of this replica.
    pub leader_transitions: IntCounterVec,
    /// `causeway_ingress_status_updates_total{result}`: Ingress status writes.
    pub status_updates: IntCounterVec,
    /// `causeway_kube_events_total{result}`: Kubernetes Events published for diagnostics.
    pub events: IntCounterVec,
}

impl KubeMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self> {
        let metrics = Self::unregistered()?;
        for collector in metrics.collectors() {
            registry.register(collector).map_err(Error::Metrics)?;
        }
        Ok(metrics)
    }

    /// Creates the metrics without registering them (tests, or callers that do not export them).
    pub fn unregistered() -> Result<Self> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).map_err(Error::Metrics)
        };
        Ok(Self {
            watch_errors: counter(
                "causeway_kube_watch_errors_total",
                "Errors seen by the Kubernetes watchers (failed list, failed or broken watch).",
                &["kind"],
            )?,
            watch_restarts: counter(
                "causeway_kube_watch_restarts_total",
                "Re-lists of a watched kind after its initial list.",
                &["kind"],
            )?,
            watch_synced: IntGaugeVec::new(
                Opts::new("causeway_kube_watch_synced", "1 once the kind's current list has been delivered."),
                &["kind"],
            )
            .map_err(Error::Metrics)?,
            leader: IntGauge::new("causeway_leader", "1 while this replica holds the leader lease.")
                .map_err(Error::Metrics)?,
            leader_transitions: counter(
                "causeway_leader_transitions_total",
                "Leadership changes of this replica.",
                &["change"],
            )?,
            status_updates: counter(
                "causeway_ingress_status_updates_total",
                "Writes of Ingress status.loadBalancer.",
                &["result"],
            )?,
            events: counter("causeway_kube_events_total", "Kubernetes Events published.", &["result"])?,
        })
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.watch_errors.clone()),
            Box::new(self.watch_restarts.clone()),
            Box::new(self.watch_synced.clone()),
            Box::new(self.leader.clone()),
            Box::new(self.leader_transitions.clone()),
            Box::new(self.status_updates.clone()),
            Box::new(self.events.clone()),
        ]
    }
}

pub(crate) fn result_label<T, E>(result: &std::result::Result<T, E>) -> &'static str {
    if result.is_ok() { "ok" } else { "error" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_prefixed_and_registers_once() {
        let registry = Registry::new();
        let metrics = KubeMetrics::register(&registry).expect("first registration");
        metrics.watch_errors.with_label_values(&["Ingress"]).inc();
        metrics.watch_restarts.with_label_values(&["Ingress"]).inc();
        metrics.watch_synced.with_label_values(&["Ingress"]).set(1);
        metrics.leader_transitions.with_label_values(&["acquired"]).inc();
        metrics.status_updates.with_label_values(&["ok"]).inc();
        metrics.events.with_label_values(&["ok"]).inc();
        let names: Vec<String> = registry.gather().iter().map(|f| f.name().to_owned()).collect();
        assert_eq!(names.len(), 7, "{names:?}");
        assert!(names.iter().all(|n| n.starts_with("causeway_")), "{names:?}");
        assert!(names.contains(&"causeway_kube_watch_errors_total".to_owned()));
        // A second registration in the same registry is a clear error, not a panic.
        assert!(matches!(KubeMetrics::register(&registry), Err(Error::Metrics(_))));
    }
}
