//! `watch_cluster`: the watchers as a source, sending the same events the manifests source sends.

use causeway_source::SourceEvent;
use futures::StreamExt;
use kube::Client;
use kube::runtime::watcher::Event;
use tokio::sync::mpsc;

use crate::access::check_access;
use crate::error::{Error, Result};
use crate::metrics::KubeMetrics;
use crate::pool::{POOL_DIAGNOSTICS_ORIGIN, crd_missing_message};
use crate::watch::{
    Change, Delivered, Tracker, WATCHED_KINDS, is_not_found, merged_watchers_for, report_error, report_restart,
    required_access_for,
};
use causeway_translate::Kind;
use tracing::{info, warn};

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

/// Watches Ingress, IngressClass, Service, EndpointSlice, TLS Secret, Node and IPPool objects in every namespace
/// and sends them to `tx` as source events, until `tx`'s receiver is dropped.
///
/// First checks that list and watch are allowed on every kind and returns [`Error::Forbidden`] naming what is
/// missing. Then nothing is sent until every kind has finished its initial list; the initial state goes out as
/// `Apply` events followed by one `InitDone` naming [`CLUSTER_SOURCE`]. After that, each change is one `Apply` or
/// `Delete`; a relist (after an API outage or an expired watch) sends only what changed meanwhile. Watch errors
/// are retried with kube-rs's default backoff and counted in `causeway_kube_watch_errors_total` and
/// `causeway_kube_watch_restarts_total`.
///
/// IPPool: an object that cannot be decoded is a diagnostic naming the pool and the field (origin
/// `kubernetes:IPPool`), and its last good version stays. When the CRD is not installed (404), a warning names it
/// and its manifest once ([`crate::crd_missing_message`]) and the kind counts as listed and empty, so the rest
/// keeps working; the watcher keeps retrying and picks pools up once the CRD exists.
pub async fn watch_cluster(client: Client, tx: mpsc::Sender<SourceEvent>, metrics: KubeMetrics) -> Result<()> {
    watch_cluster_kinds(client, tx, metrics, &WATCHED_KINDS).await
}

/// [`watch_cluster`] for a chosen subset of [`WATCHED_KINDS`] (for example the node agent's Service,
/// EndpointSlice, Node and IPPool, so it needs no permission on Ingresses or Secrets). Only the permissions of
/// those kinds are checked ([`crate::watch_required_access_for`]); `InitDone` follows the first list of each of
/// them. A kind outside [`WATCHED_KINDS`] is refused with [`Error::UnsupportedKind`].
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
    let mut crd_missing = false;
    while let Some((kind, delivered)) = stream.next().await {
        let event = match delivered {
            Delivered::Diagnostics(diagnostics) => {
                let origin = POOL_DIAGNOSTICS_ORIGIN.to_owned();
                send_all(&tx, vec![SourceEvent::Diagnostics { origin, diagnostics }]).await?;
                continue;
            }
            Delivered::Event(Ok(event)) => event,
            Delivered::Event(Err(error)) if kind == Kind::IpPool && is_not_found(&error) => {
                // No CRD: the kind is listed and empty, once; the watcher keeps retrying with its backoff.
                if !crd_missing {
                    crd_missing = true;
                    warn!(message = crd_missing_message(), %error);
                    metrics.watch_synced.with_label_values(&[kind.as_str()]).set(1);
                    let mut out = Vec::new();
                    for event in [Event::Init, Event::InitDone] {
                        out.extend(tracker.on_event(kind, event).0.into_iter().map(to_source));
                    }
                    send_all(&tx, out).await?;
                }
                continue;
            }
            Delivered::Event(Err(error)) => {
                report_error(kind, &error, &metrics);
                continue;
            }
        };
        if kind == Kind::IpPool && crd_missing {
            crd_missing = false;
            info!(message = "The IPPool CRD is installed; watching LoadBalancer address pools.");
        }
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
        send_all(&tx, changes.into_iter().map(to_source).collect()).await?;
    }
    // The watchers retry for ever; a merged stream that ends means every watcher ended, which kube-rs never does.
    Ok(())
}

async fn send_all(tx: &mpsc::Sender<SourceEvent>, events: Vec<SourceEvent>) -> Result<()> {
    for event in events {
        tx.send(event).await.map_err(|_| Error::ReceiverGone)?;
    }
    Ok(())
}
