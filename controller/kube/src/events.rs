//! Diagnostics become Kubernetes Events (`events.k8s.io/v1`, type Warning) on the object concerned, so
//! `kubectl describe ingress x` shows why a route is missing. Only the leader publishes, and each diagnostic
//! once while it lasts: one that goes away and comes back is published again.
//!
//! A [`Notice`] is a diagnostic plus what its Event says beyond it: a precise reason (`AllocationFailed`,
//! `IPPoolOverlap`, ...) and the other object involved, named in the Event's `related` reference (the older pool
//! of an overlap, the Service holding a wanted address). A plain diagnostic reads as `InvalidObject` (error) or
//! `Warning`, with no related object.

use std::collections::HashSet;
use std::sync::Arc;

use causeway_translate::{Diagnostic, Kind, ObjectRef, Severity};
use k8s_openapi::api::core::v1::{Node, ObjectReference, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::watch;
use tracing::warn;

use crate::error::Access;
use crate::metrics::{KubeMetrics, result_label};
use crate::pool::ip_pool_resource;
use crate::watch::{WATCHED_KINDS, group_resource};

/// The Event `note` limit of the API server (1 kB).
const NOTE_MAX: usize = 1024;

/// One diagnostic to publish as an Event, with what the Event says beyond it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Notice {
    /// The object, field and message.
    pub diagnostic: Diagnostic,
    /// The Event's reason; `None`: `InvalidObject` for an error, `Warning` for a warning.
    pub reason: Option<&'static str>,
    /// Another object the diagnostic is about, named in the Event's `related` reference.
    pub related: Option<ObjectRef>,
}

impl From<Diagnostic> for Notice {
    fn from(diagnostic: Diagnostic) -> Self {
        Self { diagnostic, reason: None, related: None }
    }
}

/// The permissions the Event writer needs: create and patch Events (the recorder patches a repeated Event into
/// a series), and get on the watched kinds (to name the object's UID).
pub fn required_access() -> Vec<Access> {
    let mut needed: Vec<Access> = ["create", "patch"]
        .into_iter()
        .map(|verb| Access { verb, group: "events.k8s.io", resource: "events", namespace: None })
        .collect();
    for (group, resource) in WATCHED_KINDS.into_iter().filter_map(group_resource) {
        needed.push(Access { verb: "get", group, resource, namespace: None });
    }
    needed
}

/// Publishes the notices of `notices` as Events while `is_leader` is true; returns when either channel closes.
/// `controller` is the reporting controller (for example `causeway.dev/ingress-controller`), `instance` this
/// replica's identity. Plain diagnostics become notices with [`Notice::from`].
pub async fn run_event_writer(
    client: Client,
    controller: String,
    instance: String,
    mut is_leader: watch::Receiver<bool>,
    mut notices: watch::Receiver<Arc<Vec<Notice>>>,
    metrics: KubeMetrics,
) {
    let recorder = Recorder::new(client.clone(), Reporter { controller, instance: Some(instance) });
    let mut published: HashSet<Notice> = HashSet::new();
    loop {
        if *is_leader.borrow() {
            let current: Vec<Notice> = notices.borrow().as_ref().clone();
            let current_set: HashSet<Notice> = current.iter().cloned().collect();
            // Forget what is gone, so that it is published again if it comes back.
            published.retain(|d| current_set.contains(d));
            for notice in current {
                if published.contains(&notice) {
                    continue;
                }
                let Some(reference) = object_reference(&client, &notice.diagnostic.object).await else {
                    // Not an API object (a manifests file) or already deleted: nothing to attach it to.
                    published.insert(notice);
                    continue;
                };
                let mut event = to_event(&notice);
                if let Some(related) = &notice.related {
                    event.secondary = object_reference(&client, related).await;
                }
                let result = recorder.publish(&event, &reference).await;
                metrics.events.with_label_values(&[result_label(&result)]).inc();
                match result {
                    Ok(()) => {
                        published.insert(notice);
                    }
                    Err(error) => {
                        warn!(message = "Publishing an Event failed.", object = %notice.diagnostic.object, %error);
                    }
                }
            }
        } else {
            // A new leader publishes everything current again.
            published.clear();
        }
        tokio::select! {
            changed = is_leader.changed() => if changed.is_err() { return },
            changed = notices.changed() => if changed.is_err() { return },
        }
    }
}

/// The Event for one notice (without its `related` reference, which needs the object's UID).
pub(crate) fn to_event(notice: &Notice) -> Event {
    let diagnostic = &notice.diagnostic;
    let reason = notice.reason.unwrap_or(match diagnostic.severity {
        Severity::Error => "InvalidObject",
        Severity::Warning => "Warning",
    });
    let mut note = if diagnostic.field.is_empty() {
        diagnostic.message.clone()
    } else {
        format!("{}: {}", diagnostic.field, diagnostic.message)
    };
    truncate(&mut note, NOTE_MAX);
    Event {
        type_: EventType::Warning,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Translate".to_owned(),
        secondary: None,
    }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// A reference to `object`, with its UID (so `kubectl describe` finds the Event); `None` for kinds that are not
/// API objects or objects that no longer exist.
async fn object_reference(client: &Client, object: &ObjectRef) -> Option<ObjectReference> {
    let kind = Kind::ALL.into_iter().find(|k| k.as_str() == object.kind)?;
    let ns = object.namespace.as_str();
    let name = object.name.as_str();
    let c = client.clone();
    let meta = match kind {
        Kind::Ingress => Api::<Ingress>::namespaced(c, ns).get_metadata_opt(name).await.map(|m| m.map(|m| m.metadata)),
        Kind::Service => Api::<Service>::namespaced(c, ns).get_metadata_opt(name).await.map(|m| m.map(|m| m.metadata)),
        Kind::Secret => Api::<Secret>::namespaced(c, ns).get_metadata_opt(name).await.map(|m| m.map(|m| m.metadata)),
        Kind::EndpointSlice => {
            Api::<EndpointSlice>::namespaced(c, ns).get_metadata_opt(name).await.map(|m| m.map(|m| m.metadata))
        }
        Kind::IngressClass => Api::<IngressClass>::all(c).get_metadata_opt(name).await.map(|m| m.map(|m| m.metadata)),
        Kind::Node => Api::<Node>::all(c).get_metadata_opt(name).await.map(|m| m.map(|m| m.metadata)),
        Kind::IpPool => Api::<DynamicObject>::all_with(c, &ip_pool_resource())
            .get_metadata_opt(name)
            .await
            .map(|m| m.map(|m| m.metadata)),
        // Not watched here (and no Event is worth a lookup for them).
        _ => return None,
    };
    let meta = match meta {
        Ok(meta) => meta?,
        Err(error) => {
            warn!(message = "Looking up the object of a diagnostic failed.", object = %object, %error);
            return None;
        }
    };
    Some(ObjectReference {
        api_version: Some(kind.api_version().to_owned()),
        kind: Some(kind.as_str().to_owned()),
        namespace: kind.is_namespaced().then(|| ns.to_owned()),
        name: Some(name.to_owned()),
        uid: meta.uid,
        resource_version: meta.resource_version,
        ..ObjectReference::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_translate::ObjectRef;

    #[test]
    fn errors_and_warnings_become_warning_events_naming_the_field() {
        let d = Diagnostic::error(
            ObjectRef::new("Ingress", "default", "web"),
            "spec.rules[0].http.paths[0].backend.service.name",
            "Service default/missing does not exist.",
        );
        let e = to_event(&d.into());
        assert!(matches!(e.type_, EventType::Warning));
        assert_eq!(e.reason, "InvalidObject");
        assert_eq!(
            e.note.as_deref(),
            Some("spec.rules[0].http.paths[0].backend.service.name: Service default/missing does not exist.")
        );
        let w = Diagnostic::warning(ObjectRef::new("Ingress", "default", "web"), "", "Route conflict.");
        let w = Notice::from(w);
        assert_eq!(to_event(&w).reason, "Warning");
        assert_eq!(to_event(&w).note.as_deref(), Some("Route conflict."));
        let precise = Notice { reason: Some("AllocationFailed"), ..w };
        assert_eq!(to_event(&precise).reason, "AllocationFailed");
    }

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        let d = Diagnostic::error(ObjectRef::new("Ingress", "default", "web"), "f", "é".repeat(2000));
        let note = to_event(&d.into()).note.unwrap_or_default();
        assert!(note.len() <= NOTE_MAX);
        assert!(note.starts_with("f: é"));
    }
}
