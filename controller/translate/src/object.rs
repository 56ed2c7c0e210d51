//! The Kubernetes objects Causeway reads, as one enum, and their keys.

use crate::pool::{IP_POOL_API_VERSION, IpPool};
use causeway_model::ObjectRef;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::fmt;
use std::sync::Arc;

/// The kinds of object Causeway handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `v1` Namespace (cluster-scoped).
    Namespace,
    /// `v1` Service.
    Service,
    /// `v1` Secret.
    Secret,
    /// `v1` Node (cluster-scoped).
    Node,
    /// `v1` ConfigMap.
    ConfigMap,
    /// `networking.k8s.io/v1` Ingress.
    Ingress,
    /// `networking.k8s.io/v1` IngressClass (cluster-scoped).
    IngressClass,
    /// `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice,
    /// `causeway.dev/v1alpha1` IPPool (cluster-scoped): LoadBalancer address pools.
    IpPool,
}

impl Kind {
    /// Every kind, in a fixed order.
    pub const ALL: [Kind; 9] = [
        Kind::Namespace,
        Kind::Service,
        Kind::Secret,
        Kind::Node,
        Kind::ConfigMap,
        Kind::Ingress,
        Kind::IngressClass,
        Kind::EndpointSlice,
        Kind::IpPool,
    ];

    /// The Kubernetes `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::Secret => "Secret",
            Kind::Node => "Node",
            Kind::ConfigMap => "ConfigMap",
            Kind::Ingress => "Ingress",
            Kind::IngressClass => "IngressClass",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::IpPool => "IPPool",
        }
    }

    /// The `apiVersion` objects of this kind are read in.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Namespace | Kind::Service | Kind::Secret | Kind::Node | Kind::ConfigMap => "v1",
            Kind::Ingress | Kind::IngressClass => "networking.k8s.io/v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::IpPool => IP_POOL_API_VERSION,
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::Node | Kind::IngressClass | Kind::IpPool)
    }

    /// The kind for an `apiVersion` + `kind` pair, if Causeway handles it.
    pub fn from_api(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.api_version() == api_version && k.as_str() == kind)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one object: kind, namespace (empty for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// The object's kind.
    pub kind: Kind,
    /// `metadata.namespace`; empty for cluster-scoped kinds.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectKey {
    /// A key; `namespace` is ignored (stored empty) for cluster-scoped kinds.
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        let namespace = if kind.is_namespaced() { namespace.into() } else { String::new() };
        Self { kind, namespace, name: name.into() }
    }

    /// The model's reference to this object, for diagnostics.
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef::new(self.kind.as_str(), self.namespace.clone(), self.name.clone())
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One object of a kind Causeway handles, shared (`Arc`) so that index snapshots and events are cheap to clone.
#[derive(Clone, Debug, PartialEq)]
pub enum KubeObject {
    /// A Namespace.
    Namespace(Arc<Namespace>),
    /// A Service.
    Service(Arc<Service>),
    /// A Secret.
    Secret(Arc<Secret>),
    /// A Node.
    Node(Arc<Node>),
    /// A ConfigMap.
    ConfigMap(Arc<ConfigMap>),
    /// A Ingress.
    Ingress(Arc<Ingress>),
    /// A IngressClass.
    IngressClass(Arc<IngressClass>),
    /// A EndpointSlice.
    EndpointSlice(Arc<EndpointSlice>),
    /// An IPPool.
    IpPool(Arc<IpPool>),
}

impl KubeObject {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            KubeObject::Namespace(_) => Kind::Namespace,
            KubeObject::Service(_) => Kind::Service,
            KubeObject::Secret(_) => Kind::Secret,
            KubeObject::Node(_) => Kind::Node,
            KubeObject::ConfigMap(_) => Kind::ConfigMap,
            KubeObject::Ingress(_) => Kind::Ingress,
            KubeObject::IngressClass(_) => Kind::IngressClass,
            KubeObject::EndpointSlice(_) => Kind::EndpointSlice,
            KubeObject::IpPool(_) => Kind::IpPool,
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            KubeObject::Namespace(o) => &o.metadata,
            KubeObject::Service(o) => &o.metadata,
            KubeObject::Secret(o) => &o.metadata,
            KubeObject::Node(o) => &o.metadata,
            KubeObject::ConfigMap(o) => &o.metadata,
            KubeObject::Ingress(o) => &o.metadata,
            KubeObject::IngressClass(o) => &o.metadata,
            KubeObject::EndpointSlice(o) => &o.metadata,
            KubeObject::IpPool(o) => &o.metadata,
        }
    }

    /// The object's key. A missing name or namespace reads as empty (the source rejects such objects before).
    pub fn key(&self) -> ObjectKey {
        let meta = self.metadata();
        ObjectKey::new(self.kind(), meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
    }
}

macro_rules! impl_from {
    ($($ty:ident),*) => {$(
        impl From<$ty> for KubeObject {
            fn from(o: $ty) -> Self {
                KubeObject::$ty(Arc::new(o))
            }
        }
        impl From<Arc<$ty>> for KubeObject {
            fn from(o: Arc<$ty>) -> Self {
                KubeObject::$ty(o)
            }
        }
    )*};
}

impl_from!(Namespace, Service, Secret, Node, ConfigMap, Ingress, IngressClass, EndpointSlice, IpPool);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_api_names() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_api(kind.api_version(), kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::from_api("extensions/v1beta1", "Ingress"), None);
        assert_eq!(Kind::from_api("v1", "Pod"), None);
    }

    #[test]
    fn cluster_scoped_keys_drop_the_namespace() {
        assert_eq!(ObjectKey::new(Kind::Node, "default", "n1").namespace, "");
        assert_eq!(ObjectKey::new(Kind::IpPool, "default", "p").namespace, "");
        assert_eq!(ObjectKey::new(Kind::Service, "default", "s").namespace, "default");
        assert_eq!(ObjectKey::new(Kind::Service, "ns", "s").to_string(), "Service ns/s");
    }
}
