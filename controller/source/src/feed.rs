//! Folding source events into an index and publishing snapshots.

use crate::event::SourceEvent;
use causeway_translate::Index;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// A published index snapshot: `None` until every registered source finished its initial list.
pub type IndexSnapshot = Option<Arc<Index>>;

/// Folds [`SourceEvent`]s from any number of sources into one [`Index`] and publishes snapshots on a
/// `tokio::sync::watch` channel.
///
/// - Nothing is published (the channel holds `None`) until every source named at construction has sent
///   `InitDone` (design invariant 2); events that arrive before are folded in and go out with the first snapshot.
/// - After that, one snapshot per batch: events arriving together are coalesced (the feed keeps reading while
///   more arrive within [`IndexFeed::with_coalesce`]'s window, bounded by its maximum delay), and a batch that
///   changed nothing publishes nothing.
/// - It knows nothing about where events come from, so the manifests watcher and the kube-rs watchers share it.
pub struct IndexFeed {
    index: Index,
    waiting: BTreeSet<String>,
    ready: bool,
    dirty: bool,
    window: Duration,
    max_delay: Duration,
    tx: watch::Sender<IndexSnapshot>,
}

impl IndexFeed {
    /// A feed waiting for `InitDone` from each of `sources`, and the receiving end of its snapshots. With no
    /// source at all it is ready at once and publishes an empty index on the first [`IndexFeed::publish`].
    pub fn new<S: Into<String>>(sources: impl IntoIterator<Item = S>) -> (Self, watch::Receiver<IndexSnapshot>) {
        let (tx, rx) = watch::channel(None);
        let waiting: BTreeSet<String> = sources.into_iter().map(Into::into).collect();
        let ready = waiting.is_empty();
        let feed = Self {
            index: Index::new(),
            waiting,
            ready,
            dirty: ready,
            window: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
            tx,
        };
        (feed, rx)
    }

    /// Coalescing: after an event, keep reading while the next one comes within `window`, for at most
    /// `max_delay` in total, then publish. Defaults: 10 ms and 100 ms.
    pub fn with_coalesce(mut self, window: Duration, max_delay: Duration) -> Self {
        self.window = window;
        self.max_delay = max_delay;
        self
    }

    /// Another receiver of the snapshots.
    pub fn subscribe(&self) -> watch::Receiver<IndexSnapshot> {
        self.tx.subscribe()
    }

    /// Whether every source has sent `InitDone`.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// The sources that have not sent `InitDone` yet.
    pub fn waiting_for(&self) -> impl Iterator<Item = &str> {
        self.waiting.iter().map(String::as_str)
    }

    /// The index as folded so far (published or not).
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Fold one event in, without publishing.
    pub fn handle(&mut self, event: SourceEvent) {
        let changed = match event {
            SourceEvent::Apply(obj) => self.index.apply(obj),
            SourceEvent::Delete(key) => self.index.delete(&key),
            SourceEvent::Diagnostics { origin, diagnostics } => self.index.set_source_diagnostics(origin, diagnostics),
            SourceEvent::InitDone { source } => {
                if !self.waiting.remove(&source) && !self.ready {
                    tracing::warn!(message = "InitDone from a source the index feed does not wait for.", source);
                }
                if !self.ready && self.waiting.is_empty() {
                    self.ready = true;
                    true
                } else {
                    false
                }
            }
        };
        self.dirty |= changed;
    }

    /// Publish a snapshot if the feed is ready and something changed since the last one. Returns whether it did.
    pub fn publish(&mut self) -> bool {
        if !self.ready || !self.dirty {
            return false;
        }
        self.dirty = false;
        self.tx.send_replace(Some(Arc::new(self.index.clone())));
        true
    }

    /// Fold events from `rx` and publish one snapshot per batch, until every sender is gone.
    pub async fn run(mut self, mut rx: mpsc::Receiver<SourceEvent>) {
        while let Some(event) = rx.recv().await {
            self.handle(event);
            let deadline = Instant::now() + self.max_delay;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match tokio::time::timeout(self.window.min(left), rx.recv()).await {
                    Ok(Some(event)) => self.handle(event),
                    Ok(None) => {
                        self.publish();
                        return;
                    }
                    Err(_) => break,
                }
            }
            self.publish();
        }
        self.publish();
    }

    /// Spawn [`IndexFeed::run`] for `sources` on the current runtime; returns the snapshots and the task.
    pub fn spawn<S: Into<String>>(
        sources: impl IntoIterator<Item = S>,
        rx: mpsc::Receiver<SourceEvent>,
    ) -> (watch::Receiver<IndexSnapshot>, tokio::task::JoinHandle<()>) {
        let (feed, snapshots) = IndexFeed::new(sources);
        (snapshots, tokio::spawn(feed.run(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_translate::{KubeObject, ObjectKey};
    use k8s_openapi::api::core::v1::Node;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str) -> SourceEvent {
        SourceEvent::Apply(KubeObject::from(Node {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            ..Default::default()
        }))
    }

    #[test]
    fn nothing_is_published_before_every_source_is_done() {
        let (mut feed, rx) = IndexFeed::new(["files", "cluster"]);
        feed.handle(node("a"));
        feed.handle(SourceEvent::InitDone { source: "files".into() });
        assert!(!feed.publish());
        assert!(rx.borrow().is_none());
        feed.handle(SourceEvent::InitDone { source: "cluster".into() });
        assert!(feed.publish());
        assert_eq!(rx.borrow().as_ref().map(|i| i.len()), Some(1));
        // Nothing changed: no new snapshot.
        feed.handle(node("a"));
        assert!(!feed.publish());
        feed.handle(SourceEvent::Delete(ObjectKey::new(causeway_translate::Kind::Node, "", "a")));
        assert!(feed.publish());
        assert_eq!(rx.borrow().as_ref().map(|i| i.len()), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_published_as_one_snapshot() {
        let (tx, rx) = mpsc::channel(64);
        let (mut snapshots, task) = IndexFeed::spawn(["files"], rx);
        tx.send(node("a")).await.ok();
        tx.send(SourceEvent::InitDone { source: "files".into() }).await.ok();
        snapshots.changed().await.ok();
        assert_eq!(snapshots.borrow_and_update().as_ref().map(|i| i.len()), Some(1));
        for i in 0..20 {
            tx.send(node(&format!("n{i}"))).await.ok();
        }
        snapshots.changed().await.ok();
        assert_eq!(snapshots.borrow_and_update().as_ref().map(|i| i.len()), Some(21));
        drop(tx);
        task.await.ok();
        assert!(!snapshots.has_changed().unwrap_or(false));
    }
}
