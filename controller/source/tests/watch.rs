//! The directory watcher and the index feed against real files in temporary directories.

use causeway_model::Severity;
use causeway_source::{IndexFeed, SourceEvent, load_dir, source_name, watch_manifests, watch_manifests_with};
use causeway_translate::{TranslateConfig, route_table};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The contract: a change appears as events within one second of the write.
const CONTRACT: Duration = Duration::from_secs(1);

fn namespace(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n")
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write test file");
}

fn describe(e: &SourceEvent) -> String {
    match e {
        SourceEvent::Apply(o) => format!("apply {}", o.key()),
        SourceEvent::Delete(k) => format!("delete {k}"),
        SourceEvent::Diagnostics { diagnostics, .. } => {
            let files: Vec<String> = diagnostics.iter().map(|d| format!("{:?} {}", d.severity, d.object)).collect();
            format!("diagnostics [{}]", files.join(", "))
        }
        SourceEvent::InitDone { .. } => "init-done".to_owned(),
    }
}

/// Receive events until one satisfies `want`, failing after `within`. Returns everything received.
async fn until(rx: &mut mpsc::Receiver<SourceEvent>, within: Duration, want: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => {
                let d = describe(&e);
                let done = want(&d);
                seen.push(d);
                if done {
                    return seen;
                }
            }
            Ok(None) => panic!("the watcher stopped; events so far: {seen:?}"),
            Err(_) => panic!("no matching event within {within:?}; events so far: {seen:?}"),
        }
    }
}

fn start(dir: &Path) -> (mpsc::Receiver<SourceEvent>, tokio::task::JoinHandle<Result<(), causeway_source::Error>>) {
    let (tx, rx) = mpsc::channel(256);
    let dir = dir.to_owned();
    // A short poll keeps the tests quick; the default (200 ms) is what `causeway run` uses.
    (rx, tokio::spawn(async move { watch_manifests_with(&dir, tx, Duration::from_millis(50)).await }))
}

#[tokio::test]
async fn initial_state_comes_before_init_done() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write(tmp.path(), "a.yaml", &format!("{}---\n{}", namespace("a"), namespace("b")));
    write(tmp.path(), "c.json", r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "c"}}"#);
    // Not manifests: other extensions, hidden files, subdirectories.
    write(tmp.path(), "notes.txt", &namespace("txt"));
    write(tmp.path(), ".hidden.yaml", &namespace("hidden"));
    std::fs::create_dir(tmp.path().join("sub.yaml")).expect("mkdir");
    write(&tmp.path().join("sub.yaml"), "inner.yaml", &namespace("inner"));
    let (mut rx, _task) = start(tmp.path());
    let events = until(&mut rx, CONTRACT, |e| e == "init-done").await;
    assert_eq!(events, ["apply Namespace a", "apply Namespace b", "apply Namespace c", "diagnostics []", "init-done"]);
}

#[tokio::test]
async fn adds_updates_and_deletes_arrive_within_one_second() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut rx, _task) = start(tmp.path());
    until(&mut rx, CONTRACT, |e| e == "init-done").await;

    let t = Instant::now();
    write(tmp.path(), "web.yaml", &namespace("web"));
    until(&mut rx, CONTRACT, |e| e == "apply Namespace web").await;
    assert!(t.elapsed() < CONTRACT);

    // Updates of the same size in quick succession (one mtime tick on coarse filesystems) are each seen.
    for label in ["b", "c"] {
        let t = Instant::now();
        write(
            tmp.path(),
            "web.yaml",
            &namespace("web").replace("{name: web}", &format!("{{name: web, labels: {{a: {label}}}}}")),
        );
        until(&mut rx, CONTRACT, |e| e == "apply Namespace web").await;
        assert!(t.elapsed() < CONTRACT);
    }

    // Replacing the file's content drops the old object and adds the new one.
    write(tmp.path(), "web.yaml", &namespace("api"));
    let events = until(&mut rx, CONTRACT, |e| e == "apply Namespace api").await;
    assert!(events.contains(&"delete Namespace web".to_owned()), "{events:?}");

    let t = Instant::now();
    std::fs::remove_file(tmp.path().join("web.yaml")).expect("remove");
    until(&mut rx, CONTRACT, |e| e == "delete Namespace api").await;
    assert!(t.elapsed() < CONTRACT);
}

#[tokio::test]
async fn a_broken_file_is_reported_and_the_rest_applies() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write(tmp.path(), "good.yaml", &namespace("good"));
    write(tmp.path(), "broken.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: [\n");
    let (mut rx, _task) = start(tmp.path());
    let events = until(&mut rx, CONTRACT, |e| e == "init-done").await;
    assert_eq!(events, ["apply Namespace good", "diagnostics [Error File broken.yaml]", "init-done"]);

    // Fixing the file applies it and clears its diagnostic.
    write(tmp.path(), "broken.yaml", &namespace("fixed"));
    let events = until(&mut rx, CONTRACT, |e| e == "diagnostics []").await;
    assert_eq!(events, ["apply Namespace fixed", "diagnostics []"]);
}

#[tokio::test]
async fn a_half_written_file_does_not_delete_its_objects() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let full = format!("{}---\n{}", namespace("one"), namespace("two"));
    write(tmp.path(), "app.yaml", &full);
    let (mut rx, _task) = start(tmp.path());
    until(&mut rx, CONTRACT, |e| e == "init-done").await;

    // The writer has flushed only part of the second document.
    write(tmp.path(), "app.yaml", &full[..full.len() - 8]);
    let events = until(&mut rx, CONTRACT, |e| e.starts_with("diagnostics [Error")).await;
    assert!(!events.iter().any(|e| e.starts_with("delete")), "{events:?}");

    // Then the write completes with `two` really gone.
    write(tmp.path(), "app.yaml", &namespace("one"));
    let events = until(&mut rx, CONTRACT, |e| e == "delete Namespace two").await;
    assert!(!events.iter().any(|e| e == "delete Namespace one"), "{events:?}");
}

#[tokio::test]
async fn a_configmap_volume_symlink_swap_is_seen() {
    // Kubelet writes ConfigMap volumes as `name -> ..data/name`, `..data -> ..<timestamp>/`, and updates them by
    // swapping the `..data` link atomically.
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    std::fs::create_dir(root.join("..v1")).expect("mkdir");
    write(&root.join("..v1"), "app.yaml", &namespace("v1"));
    std::os::unix::fs::symlink("..v1", root.join("..data")).expect("symlink");
    std::os::unix::fs::symlink("..data/app.yaml", root.join("app.yaml")).expect("symlink");
    let (mut rx, _task) = start(root);
    let events = until(&mut rx, CONTRACT, |e| e == "init-done").await;
    assert_eq!(events, ["apply Namespace v1", "diagnostics []", "init-done"]);

    std::fs::create_dir(root.join("..v2")).expect("mkdir");
    write(&root.join("..v2"), "app.yaml", &namespace("v2"));
    std::os::unix::fs::symlink("..v2", root.join("..data_tmp")).expect("symlink");
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap");
    let events = until(&mut rx, CONTRACT, |e| e == "apply Namespace v2").await;
    assert_eq!(events, ["delete Namespace v1", "apply Namespace v2"]);
}

#[tokio::test]
async fn a_missing_directory_is_an_error_and_a_dropped_receiver_ends_the_watch() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (tx, _rx) = mpsc::channel(8);
    let err = watch_manifests(tmp.path().join("nope"), tx).await.expect_err("missing dir");
    assert!(err.to_string().contains("nope"), "{err}");

    let (mut rx, task) = start(tmp.path());
    until(&mut rx, CONTRACT, |e| e == "init-done").await;
    drop(rx);
    let result = tokio::time::timeout(Duration::from_secs(5), task).await.expect("watch ends").expect("no panic");
    assert!(result.is_ok());
}

#[tokio::test]
async fn feed_publishes_after_init_and_a_route_appears_within_one_second() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write(
        tmp.path(),
        "class.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: causeway}\nspec: {controller: causeway.dev/ingress-controller}\n",
    );
    let (tx, rx) = mpsc::channel(256);
    let (mut snapshots, _feed) = IndexFeed::spawn([source_name(tmp.path())], rx);
    assert!(snapshots.borrow().is_none(), "nothing before InitDone");
    let dir = tmp.path().to_owned();
    let _watch = tokio::spawn(async move { watch_manifests(&dir, tx).await });
    tokio::time::timeout(CONTRACT, snapshots.wait_for(Option::is_some)).await.expect("first snapshot").expect("open");

    let t = Instant::now();
    write(
        tmp.path(),
        "ingress.yaml",
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  ingressClassName: causeway
  rules:
  - host: web.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
",
    );
    let config = TranslateConfig::default();
    let has_route = |s: &Option<std::sync::Arc<causeway_translate::Index>>| {
        s.as_ref().is_some_and(|i| route_table(i, &config).virtual_hosts.len() == 1)
    };
    tokio::time::timeout(CONTRACT, snapshots.wait_for(has_route)).await.expect("route within 1 s").expect("open");
    assert!(t.elapsed() < CONTRACT);
}

#[test]
fn load_dir_returns_objects_and_diagnostics_that_the_table_repeats() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write(tmp.path(), "ns.yaml", &namespace("a"));
    write(tmp.path(), "bad.yml", "kind: [");
    let (index, diags) = load_dir(tmp.path()).expect("load");
    assert_eq!(index.len(), 1);
    assert_eq!(diags.len(), 1);
    assert_eq!((diags[0].severity, diags[0].object.name.as_str()), (Severity::Error, "bad.yml"));
    let table = route_table(&index, &TranslateConfig::default());
    assert_eq!(table.diagnostics, diags);
    assert!(load_dir(tmp.path().join("missing")).is_err());
}
