//! Named checks over one shared cluster: each check runs, its outcome and time are printed, a failure (error or
//! panic) is recorded with the cluster's diagnostics and the next check still runs; [`Suite::finish`] fails the
//! test naming every failed check. The cluster is dropped (and so removed) before the test fails.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::error::Result;

/// The outcome of one named check.
#[derive(Debug)]
pub struct Outcome {
    /// Check name.
    pub name: String,
    /// `None` when it passed, else why it failed.
    pub failure: Option<String>,
    /// How long it took.
    pub took: Duration,
}

/// Runs named checks and collects their outcomes.
#[derive(Debug)]
pub struct Suite {
    /// Suite name (the test function).
    pub name: String,
    /// Outcomes so far.
    pub outcomes: Vec<Outcome>,
    started: Instant,
}

/// One named check of a suite: it runs against the shared cluster and fails with an error naming what broke.
pub type Check = fn(&mut Cluster) -> Result<()>;

impl Suite {
    /// Runs a whole suite: starts the cluster (`start`), sets it up (`populate`), runs every check in order (or
    /// reports them all as skipped, with the cluster's diagnostics, when the setup fails), tears the cluster down,
    /// checks that nothing was left behind, and fails the test listing every failed check.
    pub fn run(
        name: &str,
        start: impl FnOnce() -> Result<Cluster>,
        populate: fn(&mut Cluster) -> Result<()>,
        checks: &[(&str, Check)],
    ) {
        let mut suite = Suite::new(name);
        let mut cluster = match start() {
            Ok(c) => c,
            Err(e) => panic!("setting up the netns cluster failed: {e}"),
        };
        eprintln!("netns cluster suite {name}: cluster up after {:.1} s", suite.started.elapsed().as_secs_f64());
        match populate(&mut cluster) {
            Ok(()) => {
                eprintln!("netns cluster suite {name}: populated after {:.1} s", suite.started.elapsed().as_secs_f64());
                for (check_name, check) in checks {
                    suite.check(&mut cluster, check_name, check);
                }
            }
            Err(e) => {
                let why = format!("{e}\n{}", cluster.diagnostics());
                suite.skipped_by_setup(&checks.iter().map(|(n, _)| *n).collect::<Vec<_>>(), &why);
            }
        }
        let run = cluster.run.clone();
        drop(cluster);
        suite.check_cleanup(&run);
        suite.finish();
    }

    /// A new suite.
    pub fn new(name: &str) -> Self {
        eprintln!("netns cluster suite {name}: starting");
        Self { name: name.into(), outcomes: Vec::new(), started: Instant::now() }
    }

    /// Runs check `name`; a failure is recorded, not propagated.
    pub fn check(&mut self, cluster: &mut Cluster, name: &str, f: impl FnOnce(&mut Cluster) -> Result<()>) {
        let start = Instant::now();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| f(cluster)));
        let took = start.elapsed();
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(panic) => Some(
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panicked".into()),
            ),
        };
        match &failure {
            None => eprintln!("check {name} ... ok ({} ms)", took.as_millis()),
            Some(why) => {
                eprintln!("check {name} ... FAILED ({} ms): {why}\n{}", took.as_millis(), cluster.diagnostics())
            }
        }
        self.outcomes.push(Outcome { name: name.into(), failure, took });
    }

    /// Records a check that could not run because setup failed.
    pub fn skipped_by_setup(&mut self, names: &[&str], why: &str) {
        for n in names {
            eprintln!("check {n} ... FAILED (setup): {why}");
            self.outcomes.push(Outcome {
                name: (*n).into(),
                failure: Some(format!("setup failed: {why}")),
                took: Duration::ZERO,
            });
        }
    }

    /// Records the check that run `run` left nothing behind (call after dropping the cluster).
    pub fn check_cleanup(&mut self, run: &str) {
        let left = crate::netns::leftovers(run, &std::env::temp_dir());
        let failure =
            (!left.is_empty()).then(|| format!("left behind after the cluster was dropped: {}", left.join(", ")));
        match &failure {
            None => eprintln!("check cleanup_leaves_nothing_behind ... ok"),
            Some(why) => eprintln!("check cleanup_leaves_nothing_behind ... FAILED: {why}"),
        }
        self.outcomes.push(Outcome { name: "cleanup_leaves_nothing_behind".into(), failure, took: Duration::ZERO });
    }

    /// The failed checks' names.
    pub fn failed(&self) -> Vec<&str> {
        self.outcomes.iter().filter(|o| o.failure.is_some()).map(|o| o.name.as_str()).collect()
    }

    /// Prints the summary and panics if any check failed. Call after the cluster has been dropped.
    pub fn finish(self) {
        let failed: Vec<String> =
            self.outcomes.iter().filter_map(|o| o.failure.as_ref().map(|f| format!("  {}: {f}", o.name))).collect();
        eprintln!(
            "netns cluster suite {}: {} checks, {} failed, {:.1} s",
            self.name,
            self.outcomes.len(),
            failed.len(),
            self.started.elapsed().as_secs_f64()
        );
        assert!(failed.is_empty(), "failed checks in {}:\n{}", self.name, failed.join("\n"));
    }
}
