//! Network namespaces with run-unique names, removed by a guard, and the sweep of a killed run's leftovers.
//!
//! Every name starts with [`PREFIX`] followed by the PID of the test process (`cwnc4711-n1`), so a later run can
//! tell its own namespaces from a dead run's: a namespace whose PID is no longer alive is a leftover.

use std::path::Path;
use std::process::Command;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::Result;
use crate::sys;

/// The prefix of every namespace and temporary directory this harness creates.
pub const PREFIX: &str = "cwnc";

/// This run's id: the prefix and the PID (`cwnc4711`).
pub fn run_id() -> String {
    format!("{PREFIX}{}", std::process::id())
}

/// A network namespace we created; deleted (after killing anything still inside it) when dropped.
#[derive(Debug)]
pub struct Netns {
    /// The name under /run/netns.
    pub name: String,
}

impl Netns {
    /// `ip netns add NAME`, then brings `lo` up inside it.
    pub fn create(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        sys::ip(&["netns", "add", &name])?;
        let ns = Self { name };
        sys::ip_in(&ns.name, &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip netns add NAME` without touching anything inside (a pod's namespace: the CNI plugin owns `lo`).
    pub fn create_bare(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        sys::ip(&["netns", "add", &name])?;
        Ok(Self { name })
    }

    /// The bind-mount path, as a runtime passes it in `CNI_NETNS`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove_netns(&self.name);
    }
}

/// Kills what is left inside `name` (only processes this harness started can be there) and deletes it.
fn remove_netns(name: &str) {
    if let Ok(pids) = sys::run(Command::new("ip").args(["netns", "pids", name])) {
        for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    let _ = sys::run(Command::new("ip").args(["netns", "del", name]));
}

/// What is left of run `run` (its namespaces and scratch directory under `tmp_root`); empty after a clean drop.
pub fn leftovers(run: &str, tmp_root: &Path) -> Vec<String> {
    let mut left = Vec::new();
    if let Ok(list) = sys::ip(&["netns", "list"]) {
        let prefix = format!("{run}-");
        left.extend(
            list.lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|n| n.starts_with(&prefix))
                .map(|n| format!("netns {n}")),
        );
    }
    let dir = tmp_root.join(run);
    if dir.exists() {
        left.push(format!("dir {}", dir.display()));
    }
    // Every process of a run names its scratch directory (flags, kubeconfig, logs): one still alive outlived
    // the cluster (a namespace that is deleted does not end the processes inside it).
    left.extend(processes_naming(&dir).into_iter().map(|(pid, cmd)| format!("process {pid} ({cmd})")));
    left
}

/// Live processes whose command line mentions `dir` (`dir/` or exactly `dir`), with their command line.
pub fn processes_naming(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut found = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<String> =
            raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.iter().any(|a| a == &needle || a.contains(&format!("{needle}/"))) {
            found.push((pid, args.join(" ")));
        }
    }
    found
}

/// The PID embedded in one of our names (`cwnc4711-n1` → 4711).
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Removes namespaces and temporary directories left by earlier runs whose process is gone.
/// Returns what was removed.
pub fn sweep_leftovers(tmp_root: &Path) -> Vec<String> {
    let me = std::process::id();
    let dead = |name: &str| match owner_pid(name) {
        Some(pid) => pid != me && !Path::new(&format!("/proc/{pid}")).exists(),
        None => false,
    };
    let mut removed = Vec::new();
    if let Ok(list) = sys::ip(&["netns", "list"]) {
        for line in list.lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if dead(name) {
                remove_netns(name);
                removed.push(format!("netns {name}"));
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(tmp_root) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if dead(&name) && std::fs::remove_dir_all(e.path()).is_ok() {
                removed.push(format!("dir {}", e.path().display()));
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn processes_naming_a_directory_are_found() {
        let dir = std::env::temp_dir().join(format!("cwnc-naming-test-{}", std::process::id()));
        let other = std::env::temp_dir().join(format!("cwnc-naming-test-{}0", std::process::id()));
        // `sh -c 'sleep 30' NAME ARG`: ARG is in the command line, and nothing else of the test's.
        let spawn = |arg: String| {
            std::process::Command::new("sh").args(["-c", "sleep 30", "naming-test", &arg]).spawn().expect("sh")
        };
        let mut inside = spawn(format!("--log={}/x.log", dir.display()));
        let mut prefix_only = spawn(other.display().to_string());
        // Until both have exec'd, their command lines are still the test's.
        let execd = |pid: u32| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.windows(11).any(|w| w == b"naming-test"))
        };
        let started = sys::poll("both to exec", Duration::from_secs(5), Duration::from_millis(10), || {
            if execd(inside.id()) && execd(prefix_only.id()) { Ok(()) } else { Err(crate::Error::check("not yet")) }
        });
        let found: Vec<u32> = processes_naming(&dir).into_iter().map(|(pid, _)| pid).collect();
        let _ = (inside.kill(), prefix_only.kill());
        let _ = (inside.wait(), prefix_only.wait());
        assert!(started.is_ok(), "{started:?}");
        assert!(found.contains(&inside.id()), "{found:?} misses {}", inside.id());
        assert!(!found.contains(&prefix_only.id()), "a process naming {} matched {}", other.display(), dir.display());
        assert!(processes_naming(&dir).is_empty(), "reaped processes still listed");
    }

    #[test]
    fn owner_pids() {
        assert_eq!(owner_pid("cwnc4711-n1"), Some(4711));
        assert_eq!(owner_pid("cwnc12"), Some(12));
        assert_eq!(owner_pid("cwexp4912"), None);
        assert_eq!(owner_pid("cwnc-x"), None);
        assert_eq!(owner_pid("other"), None);
    }
}
