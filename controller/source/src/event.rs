//! The events every source sends.

use causeway_model::Diagnostic;
use causeway_translate::{KubeObject, ObjectKey};

/// One change from a source (the manifests directory watcher here, the kube-rs watchers in `causeway-kube`).
///
/// A source sends its initial state as `Apply` events (plus `Diagnostics`), then exactly one `InitDone`, then
/// changes as they happen. The consumer is [`crate::IndexFeed`].
#[derive(Clone, Debug, PartialEq)]
pub enum SourceEvent {
    /// An object was added or changed.
    Apply(KubeObject),
    /// An object was removed.
    Delete(ObjectKey),
    /// The complete current set of diagnostics of a source (replaces the previous set; empty clears it).
    Diagnostics {
        /// Which source (and part of it) reports them, for example `manifests:/etc/causeway`.
        origin: String,
        /// Every current diagnostic of that origin.
        diagnostics: Vec<Diagnostic>,
    },
    /// A source has sent its whole initial state.
    InitDone {
        /// The source's name, as registered with [`crate::IndexFeed::new`].
        source: String,
    },
}
