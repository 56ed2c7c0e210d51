//! A dedicated thread that keeps an [`Announcer`] in step with the latest wanted set.

use crate::{Announcer, Error};
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the worker has done, for metrics and `/debug` pages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Addresses the node announces after the last successful sync.
    pub announced: BTreeSet<IpAddr>,
    /// Successful syncs.
    pub syncs: u64,
    /// Failed syncs and announcements.
    pub errors: u64,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
}

enum Msg {
    Set(BTreeSet<IpAddr>),
    Stop { withdraw: bool },
}

/// The handle of a running worker; dropping it stops the worker without withdrawing (a restart adopts the
/// addresses without a flap).
pub struct AnnounceWorker {
    tx: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<Result<(), Error>>>,
    stats: Arc<Mutex<WorkerStats>>,
}

impl AnnounceWorker {
    /// Run `announcer` on its own thread. It syncs whenever [`AnnounceWorker::set`] gives a new set, sends the
    /// repeat announcements when due, and re-syncs every `resync` (which restores an address someone removed
    /// by hand) and after a failure (with the same period).
    pub fn spawn(announcer: Announcer, resync: Duration) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(Mutex::new(WorkerStats::default()));
        let shared = stats.clone();
        let thread = std::thread::Builder::new()
            .name("causeway-announce".to_owned())
            .spawn(move || run(announcer, rx, resync, &shared))?;
        Ok(Self { tx, thread: Some(thread), stats })
    }

    /// The addresses this node should announce from now on (replaces the previous set).
    pub fn set(&self, wanted: BTreeSet<IpAddr>) {
        // A send fails only when the thread has ended; `stop` reports why.
        let _ = self.tx.send(Msg::Set(wanted));
    }

    /// A snapshot of the worker's counters.
    pub fn stats(&self) -> WorkerStats {
        self.stats.lock().clone()
    }

    /// Stop the worker; with `withdraw`, remove every address it announced first. Returns the error of the
    /// final withdrawal, if any.
    pub fn stop(mut self, withdraw: bool) -> Result<(), Error> {
        let _ = self.tx.send(Msg::Stop { withdraw });
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::Decode("the announce thread panicked".to_owned())),
            None => Ok(()),
        }
    }
}

impl Drop for AnnounceWorker {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop { withdraw: false });
    }
}

fn run(
    mut announcer: Announcer,
    rx: mpsc::Receiver<Msg>,
    resync: Duration,
    stats: &Mutex<WorkerStats>,
) -> Result<(), Error> {
    let mut wanted: BTreeSet<IpAddr> = BTreeSet::new();
    let mut next_sync: Option<Instant> = None;
    let mut next_garp: Option<Instant> = None;
    let record = |r: Result<(), Error>, announced: Option<&BTreeSet<IpAddr>>| {
        let mut s = stats.lock();
        match r {
            Ok(()) => {
                if let Some(a) = announced {
                    s.syncs += 1;
                    s.announced = a.clone();
                }
                s.last_error = None;
            }
            Err(e) => {
                s.errors += 1;
                s.last_error = Some(e.to_string());
            }
        }
    };
    loop {
        let wake = [next_sync, next_garp].into_iter().flatten().min();
        let msg = match wake {
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match msg {
            Ok(Msg::Set(set)) => {
                // Coalesce a burst of updates: only the latest set matters.
                wanted = set;
                while let Ok(m) = rx.try_recv() {
                    match m {
                        Msg::Set(s) => wanted = s,
                        Msg::Stop { withdraw } => return stop(&mut announcer, withdraw),
                    }
                }
                next_sync = Some(Instant::now());
            }
            Ok(Msg::Stop { withdraw }) => return stop(&mut announcer, withdraw),
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        if next_sync.is_some_and(|at| at <= now) {
            match announcer.sync(&wanted, now) {
                Ok(report) => {
                    // Addresses already on the interface but not ours count too: the kernel answers for them.
                    let announced = wanted.clone();
                    let garp = match report.garp_failed.first() {
                        Some((ip, e)) => Err(Error::Decode(format!("first announcement of {ip}: {e}"))),
                        None => Ok(()),
                    };
                    record(Ok(()), Some(&announced));
                    if garp.is_err() {
                        record(garp, None);
                    }
                }
                Err(e) => record(Err(e), None),
            }
            next_sync = Some(now + resync);
        }
        if next_garp.is_none_or(|at| at <= now) {
            match announcer.send_due(now) {
                Ok(next) => next_garp = next,
                Err(e) => {
                    record(Err(e), None);
                    next_garp = Some(now + resync);
                }
            }
        }
    }
}

fn stop(announcer: &mut Announcer, withdraw: bool) -> Result<(), Error> {
    if withdraw { announcer.withdraw_all().map(drop) } else { Ok(()) }
}
