//! Watching a manifests directory.

use crate::dir::DirState;
use crate::event::SourceEvent;
use crate::{Error, source_name};
use causeway_model::Diagnostic;
use causeway_translate::Index;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often [`watch_manifests`] polls the directory.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Read every manifests file of `dir` once: the index of its objects (with the diagnostics also stored in it as
/// source diagnostics, under [`source_name`]) and the diagnostics. For `causeway routes` and `causeway check`.
///
/// Errors only when the directory cannot be read; bad files are diagnostics.
pub fn load_dir(dir: impl AsRef<Path>) -> Result<(Index, Vec<Diagnostic>), Error> {
    let dir = dir.as_ref();
    let mut state = DirState::new(dir);
    state.scan().map_err(|source| Error::ReadDir { dir: dir.to_owned(), source })?;
    let (objects, diagnostics) = state.effective();
    let mut index = Index::new();
    for obj in objects.into_values() {
        index.apply(obj);
    }
    index.set_source_diagnostics(source_name(dir), diagnostics.clone());
    Ok((index, diagnostics))
}

/// Watch `dir` and send its objects to `tx`, polling every [`DEFAULT_POLL_INTERVAL`]. See
/// [`watch_manifests_with`].
pub async fn watch_manifests(dir: impl AsRef<Path>, tx: mpsc::Sender<SourceEvent>) -> Result<(), Error> {
    watch_manifests_with(dir, tx, DEFAULT_POLL_INTERVAL).await
}

/// Watch `dir` (not recursively: `*.yaml`, `*.yml`, `*.json`, hidden files ignored) and send its objects to
/// `tx` as [`SourceEvent`]s under the source name [`source_name`]`(dir)`:
/// the initial state as `Apply` events and one `Diagnostics`, then `InitDone`; after that, every `poll`
/// interval, the changes since the last scan (`Delete`, `Apply`, and `Diagnostics` when they changed).
///
/// Why polling rather than inotify: it needs no extra dependency or kernel watch limits, it sees changes through
/// symlink swaps (ConfigMap volumes) and on network or overlay filesystems where inotify is silent, and at
/// 200 ms it meets the one-second contract with a scan that only `stat`s unchanged files (a file is re-read when
/// its size or mtime changed or it was modified in the last two seconds, and re-parsed only when its content
/// hash changed).
///
/// Files caught half-written keep their previous objects (see the crate docs). Returns `Ok(())` when the
/// receiver is gone; `Err` only when the directory cannot be read at start. A directory that becomes unreadable
/// later is a diagnostic, and its objects are kept.
pub async fn watch_manifests_with(
    dir: impl AsRef<Path>,
    tx: mpsc::Sender<SourceEvent>,
    poll: Duration,
) -> Result<(), Error> {
    let dir = dir.as_ref().to_owned();
    let origin = source_name(&dir);
    let state = DirState::new(&dir);
    let (mut state, first) = scan_blocking(state, &origin, true).await?;
    if let Err(source) = first.0 {
        return Err(Error::ReadDir { dir, source });
    }
    for event in first.1 {
        if tx.send(event).await.is_err() {
            return Ok(());
        }
    }
    if tx.send(SourceEvent::InitDone { source: origin.clone() }).await.is_err() {
        return Ok(());
    }
    // `interval` rejects a zero period.
    let mut ticker = tokio::time::interval(poll.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = tx.closed() => return Ok(()),
        }
        let (next, (result, events)) = scan_blocking(state, &origin, false).await?;
        state = next;
        if let Err(error) = result {
            tracing::warn!(message = "Cannot read the manifests directory.", dir = %dir.display(), %error);
        }
        if !events.is_empty() {
            let changed = events.iter().filter(|e| !matches!(e, SourceEvent::Diagnostics { .. })).count();
            tracing::debug!(message = "Manifests changed.", dir = %dir.display(), objects = changed);
        }
        for event in events {
            if tx.send(event).await.is_err() {
                return Ok(());
            }
        }
    }
}

type ScanResult = (std::io::Result<()>, Vec<SourceEvent>);

/// Scan on the blocking pool (file reads and parsing), returning the state and the events.
async fn scan_blocking(mut state: DirState, origin: &str, initial: bool) -> Result<(DirState, ScanResult), Error> {
    let origin = origin.to_owned();
    tokio::task::spawn_blocking(move || {
        let result = state.scan();
        let events = state.take_events(&origin, initial);
        (state, (result, events))
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))
}
