use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use std::collections::BTreeMap;

fn mk_service(name: &str, rv: &str) -> KubeObject {
    KubeObject::from(Service {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some(name.into()),
            resource_version: Some(rv.into()),
            ..ObjectMeta::default()
        },
        ..Service::default()
    })
}

fn mk_node(name: &str, rv: &str) -> KubeObject {
    KubeObject::from(Node {
        metadata: ObjectMeta { name: Some(name.into()), resource_version: Some(rv.into()), ..ObjectMeta::default() },
        ..Node::default()
    })
}

fn key(obj: &KubeObject) -> ObjectKey {
    obj.key()
}

/// Feeds a whole list (Init, InitApply..., InitDone) for one kind.
fn list(t: &mut Tracker, kind: Kind, objs: &[KubeObject]) -> Vec<Change> {
    let mut out = t.on_event(kind, Event::Init).0;
    for o in objs {
        out.extend(t.on_event(kind, Event::InitApply(o.clone())).0);
    }
    out.extend(t.on_event(kind, Event::InitDone).0);
    out
}

#[test]
fn nothing_is_emitted_until_every_kind_has_listed() {
    let mut t = Tracker::new(&[Kind::Service, Kind::Node]);
    let a = mk_service("a", "1");
    assert_eq!(list(&mut t, Kind::Service, std::slice::from_ref(&a)), vec![]);
    assert!(!t.initialized());
    // A change of an already listed kind is held back too.
    let a2 = mk_service("a", "2");
    assert_eq!(t.on_event(Kind::Service, Event::Apply(a2.clone())).0, vec![]);
    let n = mk_node("n1", "3");
    let out = list(&mut t, Kind::Node, std::slice::from_ref(&n));
    assert_eq!(out, vec![Change::Apply(a), Change::Apply(a2), Change::Apply(n), Change::InitDone]);
    assert!(t.initialized());
}

#[test]
fn relist_emits_only_the_difference() {
    let mut t = Tracker::new(&[Kind::Service]);
    let (a, b, c) = (mk_service("a", "1"), mk_service("b", "2"), mk_service("c", "3"));
    let out = list(&mut t, Kind::Service, &[a.clone(), b.clone(), c.clone()]);
    assert_eq!(out.len(), 4);

    // During an outage: b changed, c was deleted, d was created.
    let b2 = mk_service("b", "7");
    let d = mk_service("d", "8");
    let (first, restarted) = t.on_event(Kind::Service, Event::Init);
    assert!(restarted);
    assert_eq!(first, vec![]);
    let mut out = Vec::new();
    for o in [a.clone(), b2.clone(), d.clone()] {
        out.extend(t.on_event(Kind::Service, Event::InitApply(o)).0);
    }
    assert_eq!(out, vec![], "a list in progress emits nothing");
    let out = t.on_event(Kind::Service, Event::InitDone).0;
    assert_eq!(out, vec![Change::Apply(b2), Change::Apply(d), Change::Delete(key(&c))]);
}

#[test]
fn first_list_is_not_a_restart_and_repeated_applies_are_dropped() {
    let mut t = Tracker::new(&[Kind::Service]);
    assert!(!t.on_event(Kind::Service, Event::Init).1);
    t.on_event(Kind::Service, Event::InitDone);
    let a = mk_service("a", "5");
    assert_eq!(t.on_event(Kind::Service, Event::Apply(a.clone())).0, vec![Change::Apply(a.clone())]);
    assert_eq!(t.on_event(Kind::Service, Event::Apply(a.clone())).0, vec![]);
    assert_eq!(t.on_event(Kind::Service, Event::Delete(a.clone())).0, vec![Change::Delete(key(&a))]);
}

#[test]
fn events_of_unwatched_kinds_are_ignored() {
    let mut t = Tracker::new(&[Kind::Service]);
    assert_eq!(t.on_event(Kind::Node, Event::Init), (vec![], false));
    assert_eq!(t.on_event(Kind::Node, Event::InitDone).0, vec![]);
    assert!(!t.initialized());
}

#[test]
fn slimming_drops_managed_fields_and_last_applied() {
    let mut svc = Service {
        metadata: ObjectMeta {
            managed_fields: Some(vec![ManagedFieldsEntry::default()]),
            annotations: Some(BTreeMap::from([
                (LAST_APPLIED.to_owned(), "{...}".to_owned()),
                ("keep".to_owned(), "me".to_owned()),
            ])),
            ..ObjectMeta::default()
        },
        ..Service::default()
    };
    svc.slim();
    assert_eq!(svc.metadata.managed_fields, None);
    assert_eq!(svc.metadata.annotations, Some(BTreeMap::from([("keep".to_owned(), "me".to_owned())])));

    let mut node = Node {
        metadata: ObjectMeta {
            annotations: Some(BTreeMap::from([(LAST_APPLIED.to_owned(), "{}".to_owned())])),
            ..ObjectMeta::default()
        },
        status: Some(k8s_openapi::api::core::v1::NodeStatus {
            images: Some(vec![k8s_openapi::api::core::v1::ContainerImage::default()]),
            ..Default::default()
        }),
        ..Node::default()
    };
    node.slim();
    assert_eq!(node.metadata.annotations, None);
    assert_eq!(node.status.and_then(|s| s.images), None);
}

#[test]
fn required_access_covers_list_and_watch_of_every_kind() {
    let needed = required_access();
    assert_eq!(needed.len(), 14);
    assert!(needed.iter().any(|a| a.verb == "list" && a.resource == "ippools" && a.group == "causeway.dev"));
    assert!(
        needed.iter().any(|a| a.verb == "watch" && a.resource == "endpointslices" && a.group == "discovery.k8s.io")
    );
    assert_eq!(needed[0].to_string(), "list ingressclasses (API group networking.k8s.io) in all namespaces");
}

#[test]
fn required_access_for_a_subset_names_only_those_kinds() {
    let needed = required_access_for(&[Kind::Service, Kind::EndpointSlice, Kind::Node]);
    let got: Vec<(&str, &str, &str)> = needed.iter().map(|a| (a.group, a.resource, a.verb)).collect();
    assert_eq!(
        got,
        vec![
            ("", "services", "list"),
            ("", "services", "watch"),
            ("discovery.k8s.io", "endpointslices", "list"),
            ("discovery.k8s.io", "endpointslices", "watch"),
            ("", "nodes", "list"),
            ("", "nodes", "watch"),
        ]
    );
    assert!(needed.iter().all(|a| a.namespace.is_none()));
    // The full set is the subset function over every watched kind.
    assert_eq!(required_access(), required_access_for(&WATCHED_KINDS));
    assert_eq!(required_access().len(), 14);
}
