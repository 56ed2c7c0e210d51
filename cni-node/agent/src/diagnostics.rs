//! Diagnostics of the objects the agent reads (a broken manifests file, an invalid Service field, a Node
//! without podCIDR, a bad IPPool), logged once when they appear and once when they are resolved, as the
//! `causeway` binary does.

use causeway_model::{Diagnostic, Severity};
use std::collections::BTreeSet;
use tracing::{info, warn};

/// The diagnostics already reported.
#[derive(Debug, Default)]
pub struct DiagnosticLog {
    seen: BTreeSet<Diagnostic>,
}

impl DiagnosticLog {
    /// Logs each diagnostic of `current` not in the previous set (a warn line naming the object, e.g.
    /// `File svc.yaml`, and the field) and each one gone since (info). Returns (new, resolved) counts.
    pub fn update(&mut self, current: impl IntoIterator<Item = Diagnostic>) -> (usize, usize) {
        let current: BTreeSet<Diagnostic> = current.into_iter().collect();
        let mut new = 0;
        for d in current.difference(&self.seen) {
            new += 1;
            match d.severity {
                Severity::Error => {
                    warn!(message = "Left out.", object = %d.object, field = %d.field, error = %d.message)
                }
                Severity::Warning => {
                    warn!(message = "Possible mistake.", object = %d.object, field = %d.field, warning = %d.message)
                }
            }
        }
        let resolved = self.seen.difference(&current).inspect(|d| {
            info!(message = "Diagnostic resolved.", object = %d.object, field = %d.field);
        });
        let resolved = resolved.count();
        self.seen = current;
        (new, resolved)
    }

    /// How many diagnostics are current.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no diagnostic is current.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_model::ObjectRef;

    #[test]
    fn reports_each_diagnostic_once_and_its_resolution() {
        let a = Diagnostic::error(ObjectRef::new("File", "", "svc-half.yaml"), "", "unexpected end of input");
        let b = Diagnostic::warning(ObjectRef::new("Node", "", "n1"), "spec.podCIDR", "missing");
        let mut log = DiagnosticLog::default();
        assert_eq!(log.update([a.clone()]), (1, 0));
        assert_eq!(log.update([a.clone()]), (0, 0));
        assert_eq!(log.update([a.clone(), b.clone()]), (1, 0));
        assert_eq!(log.len(), 2);
        assert_eq!(log.update([b]), (0, 1));
        assert_eq!(log.update([]), (0, 1));
        assert!(log.is_empty());
    }
}
