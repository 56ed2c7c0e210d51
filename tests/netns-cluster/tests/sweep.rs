//! The leftovers of a killed run (its namespaces, the processes still inside them, its scratch directory) are
//! removed by the next run's sweep, and nothing of a live run is touched.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use causeway_netns_cluster::netns::{self, Netns, PREFIX};
use causeway_netns_cluster::{Error, sys};

/// A PID that no process has: above the kernel's `pid_max` or simply unused.
fn dead_pid() -> u32 {
    (4_000_000..4_194_304u32).rev().find(|p| !Path::new(&format!("/proc/{p}")).exists()).unwrap_or(4_194_303)
}

#[test]
fn leftovers_of_a_killed_run_are_swept() {
    if let Err(e) = sys::require_root() {
        panic!("{e}");
    }
    let tmp = std::env::temp_dir();
    let dead = dead_pid();
    let run = format!("{PREFIX}{dead}");
    // A guard, so that the namespace goes even if the sweep under test does not remove it.
    let ns = Netns::create(format!("{run}-sweep{}", std::process::id())).expect("creating the leftover namespace");
    let dir = tmp.join(&run);
    std::fs::create_dir_all(dir.join("manifests")).expect("creating the leftover directory");
    let mut orphan = sys::in_ns(&ns.name, "sleep")
        .arg("60")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("starting a process inside the leftover namespace");
    // A namespace of this (live) run must survive the sweep.
    let mine = Netns::create(format!("{}-live", netns::run_id())).expect("creating a live namespace");

    let removed = netns::sweep_leftovers(&tmp);

    let exited =
        sys::poll("the leftover's process to be killed", Duration::from_secs(5), Duration::from_millis(20), || {
            match orphan.try_wait() {
                Ok(Some(_)) => Ok(()),
                _ => Err(Error::check("still running")),
            }
        });
    if exited.is_err() {
        let _ = orphan.kill();
        let _ = orphan.wait();
    }
    let list = sys::ip(&["netns", "list"]).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(removed.iter().any(|r| r.contains(&ns.name)), "the sweep did not report {}: {removed:?}", ns.name);
    assert!(!list.contains(&ns.name), "{} still exists after the sweep", ns.name);
    assert!(exited.is_ok(), "the process inside the leftover namespace was not killed");
    assert!(
        removed.iter().any(|r| r.contains(&dir.display().to_string())),
        "the sweep did not remove {}",
        dir.display()
    );
    assert!(list.contains(&mine.name), "the sweep removed a namespace of the live run");
}
