//! The manifests-directory source: Kubernetes manifests in files, turned into the same object events a cluster
//! watch produces, folded into the object index that translation reads.
//!
//! ```text
//!  DIR/*.yaml|yml|json ──poll (200 ms)──► parse_manifests ──► DirState ──SourceEvent──► mpsc ──► IndexFeed
//!                                                                                   (kube-rs watchers too) │
//!                                         watch::Receiver<Option<Arc<Index>>> ◄── one snapshot per batch ──┘
//! ```
//!
//! - [`parse_manifests`] turns one file into objects: multi-document YAML (serde-saphyr) or JSON (one object,
//!   several, or a `v1 List`), dispatched by `apiVersion` + `kind`, with the API server's defaults filled in
//!   ([`defaults`]). A document that does not parse is one diagnostic naming the file and document index; the
//!   other documents still apply.
//! - [`load_dir`] reads a directory once (for `causeway routes` / `causeway check`).
//! - [`watch_manifests`] watches a directory: initial state, `InitDone`, then changes within a poll interval.
//!   **A file that fails to parse, or is empty, keeps its previous objects** (it may be half-written) until it
//!   parses cleanly or is deleted; its good documents still apply. A deleted file deletes its objects. The same
//!   object in two files: the first file by name wins, with a warning.
//! - [`IndexFeed`] folds [`SourceEvent`]s from any source into an [`Index`] and publishes snapshots, `None` until
//!   every registered source sent `InitDone` (design invariant 2).
//!
//! What it deliberately does not do: no Kubernetes client (that is `causeway-kube`, which sends the same
//! events), no recursion into subdirectories, no allocation of cluster-assigned fields (ClusterIPs, NodePorts),
//! no translation (that is `causeway-translate`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod defaults;
mod dir;
mod event;
mod feed;
mod parse;
mod watch;

pub use dir::is_manifest_file;
pub use event::SourceEvent;
pub use feed::{IndexFeed, IndexSnapshot};
pub use parse::{file_ref, parse_manifests};
pub use watch::{DEFAULT_POLL_INTERVAL, load_dir, watch_manifests, watch_manifests_with};

use std::path::{Path, PathBuf};

/// Errors of this crate. Bad file content is never an error (it is a diagnostic); only I/O on the directory is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The manifests directory cannot be listed.
    #[error("cannot read manifests directory {}: {source}", dir.display())]
    ReadDir {
        /// The directory.
        dir: PathBuf,
        /// Why it cannot be read.
        #[source]
        source: std::io::Error,
    },
    /// A blocking scan task failed (it panicked or the runtime is shutting down).
    #[error("manifests scan task failed: {0}")]
    Task(String),
}

/// The source name the manifests watcher of `dir` uses in `InitDone` and as its diagnostics origin:
/// `manifests:<dir>`. Register it with [`IndexFeed::new`].
pub fn source_name(dir: impl AsRef<Path>) -> String {
    format!("manifests:{}", dir.as_ref().display())
}
