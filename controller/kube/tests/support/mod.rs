//! The real control plane of `tests/cluster/` ([`causeway_test_support::ControlPlane`]) with kube clients for
//! it, and the cluster source feeding an index as the controller binary wires it.
#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::future::Future;
use std::ops::Deref;
use std::time::{Duration, Instant};

use causeway_test_support::ControlPlane;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// How long any single wait in the tests may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// etcd and kube-apiserver on free loopback ports ([`ControlPlane`]), with async clients.
pub struct TestCluster(ControlPlane);

impl TestCluster {
    pub fn start() -> Self {
        Self(ControlPlane::start())
    }

    /// A client authenticated as `causeway-admin` (system:masters).
    pub async fn client(&self) -> Client {
        client_from(self.kubeconfig()).await
    }

    /// A client authenticated as `causeway-limited` (group `causeway:limited`), which has no RBAC bindings.
    pub async fn limited_client(&self) -> Client {
        client_from(self.limited_kubeconfig()).await
    }
}

impl Deref for TestCluster {
    type Target = ControlPlane;

    fn deref(&self) -> &ControlPlane {
        &self.0
    }
}

pub async fn client_from(kubeconfig: &str) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("kubeconfig written by start.sh");
    let config =
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("client configuration");
    Client::try_from(config).expect("client")
}

/// Polls `check` until it returns `Some`, failing the test after `deadline`. Returns the value and the time taken.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return (v, start.elapsed());
        }
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === The cluster source feeding an index, as the controller binary wires it ===

use std::sync::Arc;

use causeway_kube::{CLUSTER_SOURCE, KubeMetrics, watch_cluster};
use causeway_source::{IndexFeed, IndexSnapshot, SourceEvent};
use causeway_translate::{Index, KubeObject, ObjectKey};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

/// What the feed has seen so far.
#[derive(Default)]
pub struct FeedState {
    /// Keys of every Apply and Delete, in order (`true` = Apply), with `None` marking InitDone.
    pub log: Vec<Option<(bool, ObjectKey)>>,
    /// How watch_cluster ended, if it did.
    pub ended: Option<String>,
}

/// `watch_cluster` feeding the source crate's [`IndexFeed`], whose published snapshots the tests read.
pub struct Feed {
    pub state: Arc<Mutex<FeedState>>,
    pub snapshots: watch::Receiver<IndexSnapshot>,
    pub metrics: KubeMetrics,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Feed {
    pub fn start(client: Client) -> Self {
        let metrics = KubeMetrics::unregistered().expect("metrics");
        let state = Arc::new(Mutex::new(FeedState::default()));
        let (tx, mut rx) = mpsc::channel(64);
        let (tap_tx, tap_rx) = mpsc::channel(64);
        let (snapshots, feed_task) = IndexFeed::spawn([CLUSTER_SOURCE], tap_rx);

        let watch_metrics = metrics.clone();
        let ended = state.clone();
        let watch_task = tokio::spawn(async move {
            let result = watch_cluster(client, tx, watch_metrics).await;
            ended.lock().ended = Some(match result {
                Ok(()) => "ended".to_owned(),
                Err(e) => e.to_string(),
            });
        });
        // A tap between the source and the feed that logs what went through.
        let logged = state.clone();
        let tap_task = tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let entry = match &event {
                    SourceEvent::Apply(obj) => Some(Some((true, obj.key()))),
                    SourceEvent::Delete(key) => Some(Some((false, key.clone()))),
                    SourceEvent::InitDone { .. } => Some(None),
                    SourceEvent::Diagnostics { .. } => None,
                };
                if let Some(entry) = entry {
                    logged.lock().log.push(entry);
                }
                if tap_tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        Self { state, snapshots, metrics, tasks: vec![watch_task, tap_task, feed_task] }
    }

    /// Runs `f` on the log.
    pub fn with<T>(&self, f: impl FnOnce(&FeedState) -> T) -> T {
        f(&self.state.lock())
    }

    /// The latest published index; `None` before the source's InitDone.
    pub fn index(&self) -> Option<Arc<Index>> {
        self.snapshots.borrow().clone()
    }

    pub fn get(&self, key: &ObjectKey) -> Option<KubeObject> {
        self.index().and_then(|i| i.get(key))
    }

    pub async fn wait_init_done(&self) {
        eventually("the first index snapshot (InitDone from watch_cluster)", DEADLINE, || async {
            self.with(|s| assert!(s.ended.is_none(), "watch_cluster ended: {:?}", s.ended));
            self.index().map(|_| ())
        })
        .await;
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
