//! One sync of Service rules: render the desired [`ServiceTable`] and apply it — in full the first time and
//! after any failure, otherwise only what changed since the last successful apply.

use crate::sink::{RuleSink, SinkError};
use causeway_model::{Diagnostic, ServiceTable};
use causeway_rules::{NodeCtx, Ruleset, build_ruleset_incremental, can_partial, render_full, render_partial};
use std::sync::Arc;

/// Full or partial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncKind {
    Full,
    Partial,
}

impl SyncKind {
    /// The `kind` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncKind::Full => "full",
            SyncKind::Partial => "partial",
        }
    }
}

/// What a successful sync did.
#[derive(Clone, Debug)]
pub struct SyncReport {
    pub kind: SyncKind,
    /// Rule lines in the batch (0 when nothing changed and nothing was applied).
    pub rules_written: usize,
    /// Service ports whose rules the batch wrote.
    pub services_written: usize,
    /// Rules our Services own in the kernel after the sync.
    pub service_rules: usize,
    /// Service ports programmed.
    pub service_ports: usize,
    /// Bad input that was skipped.
    pub diagnostics: Vec<Diagnostic>,
}

/// A failed sync. The previous rules stay in place (a rejected batch changes nothing) and the next sync is full.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The batch failed on a line that belongs to a Service.
    #[error("iptables rules for Service {service} were rejected ({line}): {source}")]
    Service {
        service: String,
        line: String,
        #[source]
        source: SinkError,
    },
    /// Any other failure.
    #[error("{source}{}", line.as_ref().map(|l| format!(" (line: {l})")).unwrap_or_default())]
    Sink {
        line: Option<String>,
        #[source]
        source: SinkError,
    },
}

impl SyncError {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            SyncError::Service { source, .. } | SyncError::Sink { source, .. } => source.metric_label(),
        }
    }
}

/// Keeps what was last applied and decides full versus partial.
pub struct Syncer {
    sink: Arc<dyn RuleSink>,
    applied: Option<Ruleset>,
    need_full: bool,
}

impl Syncer {
    /// A syncer whose first sync is full.
    pub fn new(sink: Arc<dyn RuleSink>) -> Self {
        Self { sink, applied: None, need_full: true }
    }

    /// Whether the next sync will be full.
    pub fn needs_full(&self) -> bool {
        self.need_full || self.applied.is_none()
    }

    /// Forces the next sync to be full (periodic full resync).
    pub fn request_full(&mut self) {
        self.need_full = true;
    }

    /// On a periodic tick: if our canary chain is gone (someone flushed the nat table), the next sync is full.
    /// Returns whether a full sync was requested.
    pub fn check_canary(&mut self) -> bool {
        if self.applied.is_none() || self.need_full {
            return false;
        }
        match self.sink.chain_exists("nat", causeway_rules::ruleset::chains::CANARY) {
            Ok(true) => false,
            Ok(false) | Err(_) => {
                self.need_full = true;
                true
            }
        }
    }

    /// Renders `table` for `ctx` and applies it.
    pub fn sync(&mut self, table: &ServiceTable, ctx: &NodeCtx) -> Result<SyncReport, SyncError> {
        let (next, diagnostics) = build_ruleset_incremental(table, ctx, self.applied.as_ref());
        let partial_from = match &self.applied {
            Some(prev) if !self.need_full && can_partial(prev, &next) => Some(prev),
            _ => None,
        };
        let (kind, restore) = match partial_from {
            Some(prev) => (SyncKind::Partial, render_partial(prev, &next)),
            None => {
                let existing = self.sink.save().map_err(|source| {
                    self.need_full = true;
                    SyncError::Sink { line: None, source }
                })?;
                (SyncKind::Full, render_full(&next, &existing))
            }
        };
        if !restore.is_empty()
            && let Err(source) = self.sink.restore(&restore.text)
        {
            self.need_full = true;
            let line_no = match &source {
                SinkError::Rejected { line, .. } => *line,
                _ => None,
            };
            let line = line_no.and_then(|l| restore.line(l)).map(str::to_string);
            return Err(match line_no.and_then(|l| restore.owner_of_line(l)) {
                Some(owner) => {
                    SyncError::Service { service: owner.to_string(), line: line.unwrap_or_default(), source }
                }
                None => SyncError::Sink { line, source },
            });
        }
        let report = SyncReport {
            kind,
            rules_written: restore.rules_written,
            services_written: restore.services_written,
            service_rules: next.service_rule_count(),
            service_ports: next.services.len(),
            diagnostics,
        };
        self.applied = Some(next);
        self.need_full = false;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::FakeSink;
    use causeway_model::{EndpointInfo, Protocol, ServicePort, ServicePortName};
    use causeway_rules::Family;

    fn mk_svc(name: &str, ip: &str, eps: &[&str]) -> ServicePort {
        ServicePort {
            endpoints: eps.iter().map(|e| EndpointInfo::ready(e.parse().unwrap(), 8080, None)).collect(),
            ..ServicePort::new(ServicePortName::new("default", name, "", Protocol::Tcp), ip.parse().unwrap(), 80)
        }
    }

    fn ctx() -> NodeCtx {
        let mut c = NodeCtx::new("n", Family::V4);
        c.cluster_cidrs = vec!["10.244.0.0/16".parse().unwrap()];
        c
    }

    #[test]
    fn first_full_then_partial_then_full_after_failure() {
        let sink = Arc::new(FakeSink::default());
        let mut s = Syncer::new(sink.clone());
        let t1 = ServiceTable {
            ports: vec![mk_svc("a", "10.96.0.1", &["10.244.1.1"]), mk_svc("b", "10.96.0.2", &["10.244.1.2"])],
        };
        assert_eq!(s.sync(&t1, &ctx()).unwrap().kind, SyncKind::Full);
        let r = s.sync(&t1, &ctx()).unwrap();
        assert_eq!((r.kind, r.rules_written), (SyncKind::Partial, 0), "nothing changed, nothing applied");
        assert_eq!(sink.batches.lock().len(), 1);

        // A change to b only touches b.
        let t2 = ServiceTable {
            ports: vec![mk_svc("a", "10.96.0.1", &["10.244.1.1"]), mk_svc("b", "10.96.0.2", &["10.244.1.3"])],
        };
        let r = s.sync(&t2, &ctx()).unwrap();
        assert_eq!((r.kind, r.services_written), (SyncKind::Partial, 1));
        assert!(!sink.batches.lock()[1].contains("default/a"));

        // A rejected batch: the error names the Service, the kernel keeps the previous rules, next sync is full.
        let before = sink.state.lock().clone();
        *sink.reject_containing.lock() = Some("10.244.1.4".into());
        let t3 = ServiceTable {
            ports: vec![mk_svc("a", "10.96.0.1", &["10.244.1.1"]), mk_svc("b", "10.96.0.2", &["10.244.1.4"])],
        };
        let err = s.sync(&t3, &ctx()).unwrap_err();
        assert!(err.to_string().contains("Service default/b"), "{err}");
        assert_eq!(*sink.state.lock(), before);
        assert!(s.needs_full());
        *sink.reject_containing.lock() = None;
        assert_eq!(s.sync(&t3, &ctx()).unwrap().kind, SyncKind::Full);

        // Someone flushes and deletes our chains: the canary notices, the next sync is full and restores them.
        assert!(!s.check_canary());
        sink.state.lock().tables.get_mut("nat").unwrap().chains.retain(|c, _| !c.starts_with("KUBE-"));
        assert!(s.check_canary());
        assert_eq!(s.sync(&t3, &ctx()).unwrap().kind, SyncKind::Full);
        assert!(sink.state.lock().tables["nat"].chains.contains_key("KUBE-SERVICES"));
    }
}
