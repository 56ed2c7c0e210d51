//! A real control plane for the integration tests: `tests/cluster/start.sh` starts etcd and kube-apiserver (built
//! by `tests/cluster/build.sh`) on free loopback ports in a temporary directory; dropping the [`TestCluster`]
//! stops both by PID. If the test process dies without dropping it, the watchdog start.sh leaves behind stops
//! them when this process exits.
#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// How long any single wait in the tests may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub struct TestCluster {
    dir: tempfile::TempDir,
    pub env: HashMap<String, String>,
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/cluster")
}

fn run_script(args: &[&str]) -> std::process::Output {
    let script = scripts().join(args[0]);
    Command::new(&script)
        .args(&args[1..])
        .env("CAUSEWAY_CLUSTER_OWNER_PID", std::process::id().to_string())
        // kube-apiserver keeps serving open watch streams after SIGTERM until they end; test data is disposable,
        // so do not wait long before SIGKILL.
        .env("CAUSEWAY_CLUSTER_STOP_GRACE", "3")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()))
}

impl TestCluster {
    /// Starts etcd and kube-apiserver. Fails the test, naming `tests/cluster/build.sh`, when the binaries are
    /// missing. A start that fails otherwise is tried once more in a fresh directory with fresh ports (another
    /// process may take a free port between start.sh picking it and the server binding it).
    pub fn start() -> Self {
        let mut failures = Vec::new();
        for _ in 0..2 {
            let dir = tempfile::Builder::new().prefix("causeway-cluster-").tempdir().expect("temporary directory");
            let path = dir.path().to_str().expect("UTF-8 temporary path").to_owned();
            let out = run_script(&["start.sh", &path]);
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            if out.status.code() == Some(3) {
                panic!("kube-apiserver and etcd are not built; run tests/cluster/build.sh first (CI does).\n{stderr}");
            }
            if out.status.success() {
                let env = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                return Self { dir, env };
            }
            eprintln!("tests/cluster/start.sh failed ({}), trying once more:\n{stderr}", out.status);
            failures.push(stderr);
        }
        panic!("tests/cluster/start.sh failed twice:\n{}", failures.join("\n---\n"));
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn path_arg(&self) -> String {
        self.dir.path().to_string_lossy().into_owned()
    }

    /// A client authenticated as `causeway-admin` (system:masters).
    pub async fn client(&self) -> Client {
        client_from(&self.env["KUBECONFIG"]).await
    }

    /// A client authenticated as `causeway-limited` (group `causeway:limited`), which has no RBAC bindings.
    pub async fn limited_client(&self) -> Client {
        client_from(&self.env["LIMITED_KUBECONFIG"]).await
    }

    /// Stops only the API server (etcd keeps the data), as an outage would.
    pub fn stop_apiserver(&self) {
        let out = run_script(&["stop.sh", "--only", "apiserver", &self.path_arg()]);
        assert!(out.status.success(), "stop.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Starts the API server again on the same port, and waits until it is ready.
    pub fn start_apiserver(&self) {
        let out = run_script(&["start.sh", "--only", "apiserver", &self.path_arg()]);
        assert!(out.status.success(), "start.sh --only apiserver failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let out = run_script(&["stop.sh", &self.path_arg()]);
        if !out.status.success() {
            eprintln!("stop.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        if std::env::var_os("CAUSEWAY_KEEP_CLUSTER_DIR").is_some() {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temporary directory"));
            eprintln!("cluster directory kept: {}", kept.keep().display());
        }
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
