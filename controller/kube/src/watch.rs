//! The watchers: one kube-rs watcher per kind, merged into one stream of source events.
//!
//! ```text
//!  watcher<Ingress> ─┐
//!  watcher<Service> ─┤  default backoff, slim()     ┌─ Apply / Delete (only real changes)
//!  ... 7 kinds ──────┼──────────────────► Tracker ──┤
//!  watcher<Node> ────┤  (kind, Event<KubeObject>)   └─ InitDone once, after every kind's first list
//!  watcher<IPPool> ──┘  DynamicObject, decoded by crate::pool::PoolDecoder (bad pools become diagnostics)
//! ```
//!
//! A watcher (re)lists with `Init`, `InitApply`... `InitDone`. The [`Tracker`] buffers a list until its
//! `InitDone`, then emits an `Apply` for each object that is new or changed (by `resourceVersion`) and a
//! `Delete` for each object the previous list had and this one lacks, so a relist after an outage turns into
//! exactly the changes made meanwhile. Nothing is emitted before every kind has finished its first list; then
//! the whole initial state goes out followed by one `InitDone`.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use causeway_translate::{Diagnostic, Kind, KubeObject, ObjectKey};
use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};
use k8s_openapi::Metadata;
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tracing::{error, info, warn};

use crate::error::{Access, is_status};
use crate::metrics::KubeMetrics;
use crate::pool::{PoolDecoder, ip_pool_resource};

/// The kinds the cluster source watches, in the order they are set up. IPPool is a CRD
/// (`manifests/crd-ippool.yaml`); without it installed the kind counts as empty (see `crate::pool`).
pub const WATCHED_KINDS: [Kind; 7] =
    [Kind::IngressClass, Kind::Ingress, Kind::Service, Kind::EndpointSlice, Kind::Secret, Kind::Node, Kind::IpPool];

/// The field selector for Secrets: only TLS Secrets are read (the others may hold anything and we never need them).
pub const TLS_SECRET_SELECTOR: &str = "type=kubernetes.io/tls";

/// Annotation kubectl writes with a full copy of the applied object (for a Secret, a copy of the key): dropped.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What the tracker tells the source to do.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Change {
    Apply(KubeObject),
    Delete(ObjectKey),
    /// Every kind has finished its first list; sent once.
    InitDone,
}

/// The permissions the watchers need: list and watch on each kind, in every namespace.
pub fn required_access() -> Vec<Access> {
    required_access_for(&WATCHED_KINDS)
}

/// The permissions watching only `kinds` needs (see [`crate::watch_cluster_kinds`]); kinds this crate does not
/// watch are left out.
pub fn required_access_for(kinds: &[Kind]) -> Vec<Access> {
    let mut needed = Vec::new();
    for (group, resource) in kinds.iter().copied().filter_map(group_resource) {
        for verb in ["list", "watch"] {
            needed.push(Access { verb, group, resource, namespace: None });
        }
    }
    needed
}

/// API group and plural resource of a watched kind (`None` for kinds this crate does not watch).
pub(crate) fn group_resource(kind: Kind) -> Option<(&'static str, &'static str)> {
    match kind {
        Kind::Ingress => Some(("networking.k8s.io", "ingresses")),
        Kind::IngressClass => Some(("networking.k8s.io", "ingressclasses")),
        Kind::EndpointSlice => Some(("discovery.k8s.io", "endpointslices")),
        Kind::Service => Some(("", "services")),
        Kind::Secret => Some(("", "secrets")),
        Kind::Node => Some(("", "nodes")),
        Kind::IpPool => Some(("causeway.dev", "ippools")),
        _ => None,
    }
}

/// What the merged watchers deliver for a kind: a watcher event, or (IPPool only) the current decoding problems.
#[derive(Debug)]
pub(crate) enum Delivered {
    Event(Result<Event<KubeObject>, watcher::Error>),
    /// Every IPPool that does not decode, one diagnostic each ([`PoolDecoder`]); sent when they change.
    Diagnostics(Vec<Diagnostic>),
}

pub(crate) type KindEvent = (Kind, Delivered);

/// `event` with `f` applied to its object.
pub(crate) fn map_event<A, B>(event: Event<A>, mut f: impl FnMut(A) -> B) -> Event<B> {
    match event {
        Event::Apply(o) => Event::Apply(f(o)),
        Event::Delete(o) => Event::Delete(f(o)),
        Event::InitApply(o) => Event::InitApply(f(o)),
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
    }
}

/// The watchers of `kinds` (each a kind of [`WATCHED_KINDS`]; others are skipped) as one stream, each with the
/// default backoff (client-go's: 0.8 s doubling to 30 s, jittered).
pub(crate) fn merged_watchers_for(client: &Client, kinds: &[Kind]) -> SelectAll<BoxStream<'static, KindEvent>> {
    let all = watcher::Config::default();
    let stream = |kind: Kind| -> Option<BoxStream<'static, KindEvent>> {
        let c = client.clone();
        Some(match kind {
            Kind::IngressClass => kind_stream::<IngressClass>(Api::all(c), all.clone(), kind),
            Kind::Ingress => kind_stream::<Ingress>(Api::all(c), all.clone(), kind),
            Kind::Service => kind_stream::<Service>(Api::all(c), all.clone(), kind),
            Kind::EndpointSlice => kind_stream::<EndpointSlice>(Api::all(c), all.clone(), kind),
            Kind::Secret => kind_stream::<Secret>(Api::all(c), all.clone().fields(TLS_SECRET_SELECTOR), kind),
            Kind::Node => kind_stream::<Node>(Api::all(c), all.clone(), kind),
            Kind::IpPool => pool_stream(Api::<DynamicObject>::all_with(c, &ip_pool_resource()), all.clone()),
            _ => return None,
        })
    };
    futures::stream::select_all(kinds.iter().copied().filter_map(stream))
}

fn kind_stream<K>(api: Api<K>, config: watcher::Config, kind: Kind) -> BoxStream<'static, KindEvent>
where
    K: Resource + Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
    K: Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K: Slim,
    KubeObject: From<Arc<K>>,
{
    watcher::watcher(api, config)
        .default_backoff()
        .map(move |event| {
            let event = event.map(|e| map_event(e, into_object));
            (kind, Delivered::Event(event))
        })
        .boxed()
}

/// The IPPool watcher: objects decoded by a [`PoolDecoder`] of its own, whose diagnostics go out as
/// [`Delivered::Diagnostics`] whenever they change (also when a 404 says the CRD is gone: then they empty).
fn pool_stream(api: Api<DynamicObject>, config: watcher::Config) -> BoxStream<'static, KindEvent> {
    let mut decoder = PoolDecoder::default();
    watcher::watcher(api, config)
        .default_backoff()
        .flat_map(move |event| {
            let mut out = Vec::new();
            match event {
                Ok(event) => {
                    let event = map_event(event, |mut o: DynamicObject| {
                        slim_meta(&mut o.metadata);
                        o
                    });
                    let (event, changed) = decoder.on_event(event);
                    if changed {
                        out.push((Kind::IpPool, Delivered::Diagnostics(decoder.diagnostics())));
                    }
                    out.extend(event.map(|e| (Kind::IpPool, Delivered::Event(Ok(e)))));
                }
                Err(error) => {
                    if is_not_found(&error) && decoder.clear() {
                        out.push((Kind::IpPool, Delivered::Diagnostics(Vec::new())));
                    }
                    out.push((Kind::IpPool, Delivered::Event(Err(error))));
                }
            }
            futures::stream::iter(out)
        })
        .boxed()
}

fn into_object<K>(mut obj: K) -> KubeObject
where
    K: Slim + Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
    KubeObject: From<Arc<K>>,
{
    obj.slim();
    KubeObject::from(Arc::new(obj))
}

/// Drops what we never read before an object is stored: managed fields, kubectl's last-applied copy and, for
/// Nodes, the image list (often the largest part of a Node).
pub(crate) trait Slim {
    fn slim(&mut self);
}

fn slim_meta(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

macro_rules! impl_slim {
    ($($ty:ty),*) => {$(
        impl Slim for $ty {
            fn slim(&mut self) {
                slim_meta(&mut self.metadata);
            }
        }
    )*};
}
impl_slim!(Ingress, IngressClass, Service, EndpointSlice, Secret);

impl Slim for Node {
    fn slim(&mut self) {
        slim_meta(&mut self.metadata);
        if let Some(status) = self.status.as_mut() {
            status.images = None;
            status.volumes_attached = None;
            status.volumes_in_use = None;
        }
    }
}

// === Tracker ===

#[derive(Default)]
struct KindState {
    /// Objects as last delivered: key → resourceVersion.
    known: HashMap<ObjectKey, String>,
    /// A list in progress.
    listing: Option<Vec<KubeObject>>,
    /// The kind has finished at least one list.
    synced: bool,
}

/// Turns watcher events of all kinds into source changes. Pure: no I/O, no clock.
pub(crate) struct Tracker {
    kinds: HashMap<Kind, KindState>,
    /// Changes held back until every kind has finished its first list.
    held: Option<Vec<Change>>,
}

impl Tracker {
    pub(crate) fn new(kinds: &[Kind]) -> Self {
        Self { kinds: kinds.iter().map(|k| (*k, KindState::default())).collect(), held: Some(Vec::new()) }
    }

    /// Whether every kind has finished its first list (and `InitDone` has been emitted).
    #[cfg(test)]
    pub(crate) fn initialized(&self) -> bool {
        self.held.is_none()
    }

    /// Folds one watcher event in. Returns the changes to send now, and whether this event started a relist of
    /// a kind that had already synced (a watch restart).
    pub(crate) fn on_event(&mut self, kind: Kind, event: Event<KubeObject>) -> (Vec<Change>, bool) {
        let Some(state) = self.kinds.get_mut(&kind) else {
            return (Vec::new(), false);
        };
        let mut out = Vec::new();
        let mut restarted = false;
        match event {
            Event::Init => {
                restarted = state.synced;
                state.listing = Some(Vec::new());
            }
            Event::InitApply(obj) => match state.listing.as_mut() {
                Some(list) => list.push(obj),
                None => apply(state, obj, &mut out),
            },
            Event::InitDone => {
                let listed = state.listing.take().unwrap_or_default();
                let mut seen: HashMap<ObjectKey, String> = HashMap::with_capacity(listed.len());
                for obj in listed {
                    let key = obj.key();
                    let version = resource_version(&obj);
                    if state.known.get(&key) != Some(&version) {
                        out.push(Change::Apply(obj));
                    }
                    seen.insert(key, version);
                }
                let mut gone: Vec<ObjectKey> = state.known.keys().filter(|k| !seen.contains_key(*k)).cloned().collect();
                gone.sort();
                out.extend(gone.into_iter().map(Change::Delete));
                state.known = seen;
                state.synced = true;
            }
            Event::Apply(obj) => apply(state, obj, &mut out),
            Event::Delete(obj) => {
                let key = obj.key();
                state.known.remove(&key);
                out.push(Change::Delete(key));
            }
        }
        if let Some(held) = self.held.as_mut() {
            held.append(&mut out);
            if self.kinds.values().all(|s| s.synced) {
                let mut all = self.held.take().unwrap_or_default();
                all.push(Change::InitDone);
                return (all, restarted);
            }
        }
        (out, restarted)
    }
}

fn apply(state: &mut KindState, obj: KubeObject, out: &mut Vec<Change>) {
    let key = obj.key();
    let version = resource_version(&obj);
    if state.known.get(&key) == Some(&version) && !version.is_empty() {
        return;
    }
    state.known.insert(key, version);
    out.push(Change::Apply(obj));
}

fn resource_version(obj: &KubeObject) -> String {
    obj.metadata().resource_version.clone().unwrap_or_default()
}

// === Error reporting ===

/// Logs a watcher error; a 403 names the verb and resource so the missing RBAC rule is obvious.
pub(crate) fn report_error(kind: Kind, error: &watcher::Error, metrics: &KubeMetrics) {
    metrics.watch_errors.with_label_values(&[kind.as_str()]).inc();
    let (verb, source) = match error {
        watcher::Error::InitialListFailed(e) => ("list", Some(e)),
        watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => ("watch", Some(e)),
        watcher::Error::WatchError(_) | watcher::Error::NoResourceVersion => ("watch", None),
    };
    let forbidden = source.is_some_and(|e| is_status(e, 403))
        || matches!(error, watcher::Error::WatchError(status) if status.code == 403);
    if forbidden && let Some((group, resource)) = group_resource(kind) {
        let access = Access { verb, group, resource, namespace: None };
        error!(message = "Permission denied; grant it in the controller's ClusterRole.", missing = %access, %error);
    } else {
        warn!(message = "Watch failed; retrying with backoff.", kind = kind.as_str(), %error);
    }
}

/// Whether a watcher error is the API server answering 404: the resource does not exist (an uninstalled CRD).
pub(crate) fn is_not_found(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            is_status(e, 404)
        }
        watcher::Error::WatchError(status) => status.code == 404,
        watcher::Error::NoResourceVersion => false,
    }
}

pub(crate) fn report_restart(kind: Kind, metrics: &KubeMetrics) {
    metrics.watch_restarts.with_label_values(&[kind.as_str()]).inc();
    info!(message = "Re-listing after a watch restart.", kind = kind.as_str());
}

#[cfg(test)]
mod tests;
