//! The object index: every object the sources delivered, by kind and key, with no I/O.

use crate::object::{Kind, KubeObject, ObjectKey};
use crate::pool::IpPool;
use causeway_model::Diagnostic;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

type Map<T> = BTreeMap<(String, String), Arc<T>>;
/// A map shared between snapshots: cloning the index bumps one reference count per kind, and the first change to a
/// kind after a snapshot copies that kind's map (copy-on-write), never the objects.
type Shared<T> = Arc<Map<T>>;

/// Every object the sources delivered, keyed by `(namespace, name)` per kind (namespace empty for cluster-scoped
/// kinds), plus the diagnostics the sources reported.
///
/// Mutation is synchronous ([`Index::apply`], [`Index::delete`]); nothing here awaits or talks to a cluster.
/// Objects are stored as `Arc`s in ordered maps, themselves shared copy-on-write, so a clone (one snapshot per
/// batch of changes) costs a few reference counts; the first change to a kind after a snapshot copies that kind's
/// map, never the objects. Iteration order is deterministic.
#[derive(Clone, Debug, Default)]
pub struct Index {
    namespaces: Shared<Namespace>,
    services: Shared<Service>,
    secrets: Shared<Secret>,
    nodes: Shared<Node>,
    config_maps: Shared<ConfigMap>,
    ingresses: Shared<Ingress>,
    ingress_classes: Shared<IngressClass>,
    endpoint_slices: Shared<EndpointSlice>,
    ip_pools: Shared<IpPool>,
    /// `(namespace, service name)` → names of the slices labelled with it.
    slices_by_service: Arc<BTreeMap<(String, String), BTreeSet<String>>>,
    /// Source origin (for example `manifests:/etc/causeway`) → its current diagnostics.
    source_diagnostics: BTreeMap<String, Vec<Diagnostic>>,
}

fn upsert<T: PartialEq>(map: &mut Shared<T>, key: (String, String), obj: Arc<T>) -> bool {
    match map.get(&key) {
        Some(old) if Arc::ptr_eq(old, &obj) || **old == *obj => false,
        _ => {
            Arc::make_mut(map).insert(key, obj);
            true
        }
    }
}

fn remove<T>(map: &mut Shared<T>, key: &(String, String)) -> Option<Arc<T>> {
    if map.contains_key(key) { Arc::make_mut(map).remove(key) } else { None }
}

fn slice_service(slice: &EndpointSlice) -> Option<&String> {
    slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL))
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Insert or replace an object. Returns whether the index changed (an identical object is a no-op).
    /// An object without a name is ignored (sources report it as a diagnostic before it gets here).
    pub fn apply(&mut self, obj: KubeObject) -> bool {
        let key = obj.key();
        if key.name.is_empty() {
            return false;
        }
        let k = (key.namespace, key.name);
        match obj {
            KubeObject::Namespace(o) => upsert(&mut self.namespaces, k, o),
            KubeObject::Service(o) => upsert(&mut self.services, k, o),
            KubeObject::Secret(o) => upsert(&mut self.secrets, k, o),
            KubeObject::Node(o) => upsert(&mut self.nodes, k, o),
            KubeObject::ConfigMap(o) => upsert(&mut self.config_maps, k, o),
            KubeObject::Ingress(o) => upsert(&mut self.ingresses, k, o),
            KubeObject::IngressClass(o) => upsert(&mut self.ingress_classes, k, o),
            KubeObject::IpPool(o) => upsert(&mut self.ip_pools, k, o),
            KubeObject::EndpointSlice(o) => {
                let new_service = slice_service(&o).cloned();
                let old_service = self.endpoint_slices.get(&k).and_then(|old| slice_service(old).cloned());
                if !upsert(&mut self.endpoint_slices, k.clone(), o) {
                    return false;
                }
                if old_service != new_service
                    && let Some(svc) = old_service
                {
                    self.unlink_slice(&k.0, &svc, &k.1);
                }
                if let Some(svc) = new_service {
                    Arc::make_mut(&mut self.slices_by_service).entry((k.0.clone(), svc)).or_default().insert(k.1);
                }
                true
            }
        }
    }

    /// Remove an object. Returns whether it was present.
    pub fn delete(&mut self, key: &ObjectKey) -> bool {
        let k = (key.namespace.clone(), key.name.clone());
        match key.kind {
            Kind::Namespace => remove(&mut self.namespaces, &k).is_some(),
            Kind::Service => remove(&mut self.services, &k).is_some(),
            Kind::Secret => remove(&mut self.secrets, &k).is_some(),
            Kind::Node => remove(&mut self.nodes, &k).is_some(),
            Kind::ConfigMap => remove(&mut self.config_maps, &k).is_some(),
            Kind::Ingress => remove(&mut self.ingresses, &k).is_some(),
            Kind::IngressClass => remove(&mut self.ingress_classes, &k).is_some(),
            Kind::IpPool => remove(&mut self.ip_pools, &k).is_some(),
            Kind::EndpointSlice => match remove(&mut self.endpoint_slices, &k) {
                Some(old) => {
                    if let Some(svc) = slice_service(&old).cloned() {
                        self.unlink_slice(&k.0, &svc, &k.1);
                    }
                    true
                }
                None => false,
            },
        }
    }

    fn unlink_slice(&mut self, namespace: &str, service: &str, slice: &str) {
        let sk = (namespace.to_owned(), service.to_owned());
        if !self.slices_by_service.contains_key(&sk) {
            return;
        }
        let by_service = Arc::make_mut(&mut self.slices_by_service);
        if let Some(set) = by_service.get_mut(&sk) {
            set.remove(slice);
            if set.is_empty() {
                by_service.remove(&sk);
            }
        }
    }

    /// Replace the diagnostics a source reported under `origin` (an empty vector clears them).
    /// Returns whether they changed.
    pub fn set_source_diagnostics(&mut self, origin: impl Into<String>, diagnostics: Vec<Diagnostic>) -> bool {
        let origin = origin.into();
        if diagnostics.is_empty() {
            return self.source_diagnostics.remove(&origin).is_some();
        }
        if self.source_diagnostics.get(&origin) == Some(&diagnostics) {
            return false;
        }
        self.source_diagnostics.insert(origin, diagnostics);
        true
    }

    /// Every source diagnostic, ordered by origin.
    pub fn source_diagnostics(&self) -> impl Iterator<Item = &Diagnostic> {
        self.source_diagnostics.values().flatten()
    }

    /// The object stored under `key`, if any.
    pub fn get(&self, key: &ObjectKey) -> Option<KubeObject> {
        let k = (key.namespace.clone(), key.name.clone());
        match key.kind {
            Kind::Namespace => self.namespaces.get(&k).cloned().map(KubeObject::from),
            Kind::Service => self.services.get(&k).cloned().map(KubeObject::from),
            Kind::Secret => self.secrets.get(&k).cloned().map(KubeObject::from),
            Kind::Node => self.nodes.get(&k).cloned().map(KubeObject::from),
            Kind::ConfigMap => self.config_maps.get(&k).cloned().map(KubeObject::from),
            Kind::Ingress => self.ingresses.get(&k).cloned().map(KubeObject::from),
            Kind::IngressClass => self.ingress_classes.get(&k).cloned().map(KubeObject::from),
            Kind::EndpointSlice => self.endpoint_slices.get(&k).cloned().map(KubeObject::from),
            Kind::IpPool => self.ip_pools.get(&k).cloned().map(KubeObject::from),
        }
    }

    /// Total number of objects.
    pub fn len(&self) -> usize {
        self.namespaces.len()
            + self.services.len()
            + self.secrets.len()
            + self.nodes.len()
            + self.config_maps.len()
            + self.ingresses.len()
            + self.ingress_classes.len()
            + self.endpoint_slices.len()
            + self.ip_pools.len()
    }

    /// Whether the index holds no object.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys of every object, ordered by kind then namespace/name.
    pub fn keys(&self) -> Vec<ObjectKey> {
        fn push<T>(out: &mut Vec<ObjectKey>, kind: Kind, map: &Shared<T>) {
            out.extend(map.keys().map(|(ns, n)| ObjectKey::new(kind, ns.clone(), n.clone())));
        }
        let mut out = Vec::with_capacity(self.len());
        push(&mut out, Kind::Namespace, &self.namespaces);
        push(&mut out, Kind::Service, &self.services);
        push(&mut out, Kind::Secret, &self.secrets);
        push(&mut out, Kind::Node, &self.nodes);
        push(&mut out, Kind::ConfigMap, &self.config_maps);
        push(&mut out, Kind::Ingress, &self.ingresses);
        push(&mut out, Kind::IngressClass, &self.ingress_classes);
        push(&mut out, Kind::EndpointSlice, &self.endpoint_slices);
        push(&mut out, Kind::IpPool, &self.ip_pools);
        out
    }

    /// A Service by namespace and name.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Arc<Service>> {
        self.services.get(&(namespace.to_owned(), name.to_owned()))
    }

    /// A Secret by namespace and name.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<&Arc<Secret>> {
        self.secrets.get(&(namespace.to_owned(), name.to_owned()))
    }

    /// An IngressClass by name.
    pub fn ingress_class(&self, name: &str) -> Option<&Arc<IngressClass>> {
        self.ingress_classes.get(&(String::new(), name.to_owned()))
    }

    /// A ConfigMap by namespace and name.
    pub fn config_map(&self, namespace: &str, name: &str) -> Option<&Arc<ConfigMap>> {
        self.config_maps.get(&(namespace.to_owned(), name.to_owned()))
    }

    /// A Node by name.
    pub fn node(&self, name: &str) -> Option<&Arc<Node>> {
        self.nodes.get(&(String::new(), name.to_owned()))
    }

    /// All Namespaces, by name.
    pub fn namespaces(&self) -> impl Iterator<Item = &Arc<Namespace>> {
        self.namespaces.values()
    }

    /// All Services, by namespace/name.
    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.services.values()
    }

    /// All Secrets, by namespace/name.
    pub fn secrets(&self) -> impl Iterator<Item = &Arc<Secret>> {
        self.secrets.values()
    }

    /// All Nodes, by name.
    pub fn nodes(&self) -> impl Iterator<Item = &Arc<Node>> {
        self.nodes.values()
    }

    /// All ConfigMaps, by namespace/name.
    pub fn config_maps(&self) -> impl Iterator<Item = &Arc<ConfigMap>> {
        self.config_maps.values()
    }

    /// All Ingresses, by namespace/name.
    pub fn ingresses(&self) -> impl Iterator<Item = &Arc<Ingress>> {
        self.ingresses.values()
    }

    /// All IngressClasses, by name.
    pub fn ingress_classes(&self) -> impl Iterator<Item = &Arc<IngressClass>> {
        self.ingress_classes.values()
    }

    /// All EndpointSlices, by namespace/name.
    pub fn endpoint_slices(&self) -> impl Iterator<Item = &Arc<EndpointSlice>> {
        self.endpoint_slices.values()
    }

    /// All IPPools, by name.
    pub fn ip_pools(&self) -> impl Iterator<Item = &Arc<IpPool>> {
        self.ip_pools.values()
    }

    /// An IPPool by name.
    pub fn ip_pool(&self, name: &str) -> Option<&Arc<IpPool>> {
        self.ip_pools.get(&(String::new(), name.to_owned()))
    }

    /// The slices labelled `kubernetes.io/service-name: <service>` in `namespace`, by slice name.
    pub fn slices_for_service<'a>(
        &'a self,
        namespace: &str,
        service: &str,
    ) -> impl Iterator<Item = &'a Arc<EndpointSlice>> + 'a {
        let ns = namespace.to_owned();
        self.slices_by_service
            .get(&(namespace.to_owned(), service.to_owned()))
            .into_iter()
            .flatten()
            .filter_map(move |slice| self.endpoint_slices.get(&(ns.clone(), slice.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn slice(name: &str, service: Option<&str>) -> KubeObject {
        KubeObject::from(EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some(name.into()),
                labels: service.map(|s| [(SERVICE_NAME_LABEL.to_owned(), s.to_owned())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            ..Default::default()
        })
    }

    fn names(index: &Index, svc: &str) -> Vec<String> {
        index.slices_for_service("ns", svc).map(|s| s.metadata.name.clone().unwrap_or_default()).collect()
    }

    #[test]
    fn slices_are_grouped_by_service_label_and_follow_relabels_and_deletes() {
        let mut index = Index::new();
        assert!(index.apply(slice("a-1", Some("a"))));
        assert!(index.apply(slice("a-2", Some("a"))));
        assert!(index.apply(slice("orphan", None)));
        assert_eq!(names(&index, "a"), ["a-1", "a-2"]);
        // Re-applying the same object is not a change.
        assert!(!index.apply(slice("a-1", Some("a"))));
        // A slice moved to another Service leaves the old group.
        assert!(index.apply(slice("a-2", Some("b"))));
        assert_eq!(names(&index, "a"), ["a-1"]);
        assert_eq!(names(&index, "b"), ["a-2"]);
        assert!(index.delete(&ObjectKey::new(Kind::EndpointSlice, "ns", "a-1")));
        assert!(names(&index, "a").is_empty());
        assert!(!index.delete(&ObjectKey::new(Kind::EndpointSlice, "ns", "a-1")));
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn every_kind_applies_reads_back_and_deletes() {
        use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret, Service};
        use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
        let meta = |ns: Option<&str>| ObjectMeta {
            namespace: ns.map(str::to_owned),
            name: Some("x".into()),
            ..Default::default()
        };
        let objects = [
            KubeObject::from(Namespace { metadata: meta(None), ..Default::default() }),
            KubeObject::from(Service { metadata: meta(Some("ns")), ..Default::default() }),
            KubeObject::from(Secret { metadata: meta(Some("ns")), ..Default::default() }),
            KubeObject::from(Node { metadata: meta(None), ..Default::default() }),
            KubeObject::from(ConfigMap { metadata: meta(Some("ns")), ..Default::default() }),
            KubeObject::from(Ingress { metadata: meta(Some("ns")), ..Default::default() }),
            KubeObject::from(IngressClass { metadata: meta(None), ..Default::default() }),
            KubeObject::from(EndpointSlice { metadata: meta(Some("ns")), ..Default::default() }),
            KubeObject::from(IpPool { metadata: meta(None), ..Default::default() }),
        ];
        let mut index = Index::new();
        for obj in &objects {
            assert!(index.apply(obj.clone()), "{}", obj.key());
            assert_eq!(index.get(&obj.key()).as_ref(), Some(obj));
        }
        assert_eq!(index.len(), Kind::ALL.len());
        assert_eq!(index.keys().iter().map(|k| k.kind).collect::<Vec<_>>(), Kind::ALL);
        for obj in &objects {
            assert!(index.delete(&obj.key()), "{}", obj.key());
            assert_eq!(index.get(&obj.key()), None);
        }
        assert!(index.is_empty());
        // An object without a name cannot be keyed and is ignored.
        assert!(!index.apply(KubeObject::from(Node::default())));
    }

    #[test]
    fn snapshots_are_independent() {
        let mut index = Index::new();
        index.apply(slice("a-1", Some("a")));
        let snapshot = index.clone();
        index.delete(&ObjectKey::new(Kind::EndpointSlice, "ns", "a-1"));
        assert_eq!(snapshot.len(), 1);
        assert!(index.is_empty());
        assert_eq!(snapshot.keys(), vec![ObjectKey::new(Kind::EndpointSlice, "ns", "a-1")]);
    }

    #[test]
    fn source_diagnostics_replace_per_origin() {
        let mut index = Index::new();
        let d = Diagnostic::error(causeway_model::ObjectRef::new("File", "", "a.yaml"), "[0]", "bad");
        assert!(index.set_source_diagnostics("m", vec![d.clone()]));
        assert!(!index.set_source_diagnostics("m", vec![d.clone()]));
        assert_eq!(index.source_diagnostics().count(), 1);
        assert!(index.set_source_diagnostics("m", vec![]));
        assert_eq!(index.source_diagnostics().count(), 0);
    }
}
