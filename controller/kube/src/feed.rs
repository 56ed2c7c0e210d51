//! `watch_cluster`: the watchers as a source, sending the same events the manifests source sends.

use causeway_source::SourceEvent;
use futures::StreamExt;
use kube::Client;
use kube::runtime::watcher::Event;
use tokio::sync::mpsc;

use crate::access::check_access;
use crate::error::{Error, Result};
use crate::metrics::KubeMetrics;
use crate::watch::{
    Change, Tracker, WATCHED_KINDS, merged_watchers_for, report_error, report_restart, required_access_for,
};
use causeway_translate::Kind;

/// The source name `watch_cluster` sends in `InitDone`; register it with
/// [`causeway_source::IndexFeed::new`].
pub const CLUSTER_SOURCE: &str = "kubernetes";

fn to_source(change: Change) -> SourceEvent {
    match change {
        Change::Apply(obj) => SourceEvent::Apply(obj),
        Change::Delete(key) => SourceEvent::Delete(key),
        Change::InitDone => SourceEvent::InitDone { source: CLUSTER_SOURCE.to_owned() },
    }
}

/// Watches Ingress, IngressClass, Service, EndpointSlice, TLS Secret and Node objects in every namespace and
/// sends them to `tx` as source events, until `tx`'s receiver is dropped.
///
/// First checks that list and watch are allowed on every kind and returns [`Error::Forbidden`] naming what is
/// missing. Then nothing is sent until every kind has finished its initial list; the initial state goes out as
/// `Apply` events followed by one `InitDone` naming [`CLUSTER_SOURCE`]. After that, each change is one `Apply` or `Delete`; a relist
/// (after an API outage or an expired watch) sends only what changed meanwhile. Watch errors are retried with
/// kube-rs's default backoff and counted in `causeway_kube_watch_errors_total` and
/// `causeway_kube_watch_restarts_total`.
pub async fn watch_cluster(client: Client, tx: mpsc::Sender<SourceEvent>, metrics: KubeMetrics) -> Result<()> {
    watch_cluster_kinds(client, tx, metrics, &WATCHED_KINDS).await
}

/// [`watch_cluster`] for a chosen subset of [`WATCHED_KINDS`] (for example the node agent's Service,
/// EndpointSlice and Node, so it needs no permission on Ingresses or Secrets). Only the permissions of those
/// kinds are checked ([`crate::watch_required_access_for`]); `InitDone` follows the first list of each of them.
/// A kind outside [`WATCHED_KINDS`] is refused with [`Error::UnsupportedKind`].
pub async fn watch_cluster_kinds(
    client: Client,
    tx: mpsc::Sender<SourceEvent>,
    metrics: KubeMetrics,
    kinds: &[Kind],
) -> Result<()> {
    if let Some(kind) = kinds.iter().find(|k| !WATCHED_KINDS.contains(k)) {
        return Err(Error::UnsupportedKind(kind.as_str()));
    }
    check_access(&client, &required_access_for(kinds)).await?;
    let mut stream = merged_watchers_for(&client, kinds);
    let mut tracker = Tracker::new(kinds);
    while let Some((kind, event)) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                report_error(kind, &error, &metrics);
                continue;
            }
        };
        let synced = metrics.watch_synced.with_label_values(&[kind.as_str()]);
        match &event {
            Event::Init => synced.set(0),
            Event::InitDone => synced.set(1),
            _ => {}
        }
        let (changes, restarted) = tracker.on_event(kind, event);
        if restarted {
            report_restart(kind, &metrics);
        }
        for change in changes {
            tx.send(to_source(change)).await.map_err(|_| Error::ReceiverGone)?;
        }
    }
    // The watchers retry for ever; a merged stream that ends means every watcher ended, which kube-rs never does.
    Ok(())
}
