//! Services of type LoadBalancer as the allocator sees them.

use crate::addr::Family;
use crate::{ADDRESS_POOL_ANNOTATION, LOAD_BALANCER_IPS_ANNOTATION, OUR_CLASSES, SHARED_IP_ANNOTATION};
use causeway_model::{Diagnostic, ObjectRef};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// A Service's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl ServiceKey {
    /// A key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }

    /// The Service as a diagnostics reference.
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef::new("Service", self.namespace.clone(), self.name.clone())
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A Service port for collision checks: protocol (`TCP`, `UDP`, `SCTP`) and port.
pub type PortKey = (String, i32);

/// One Service of type LoadBalancer that the allocator handles, with everything allocation reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LbService {
    /// Namespace and name.
    pub key: ServiceKey,
    /// `metadata.creationTimestamp`; orders Services (older first, a missing one last).
    pub created: Option<Time>,
    /// `metadata.labels`, for pool selectors.
    pub labels: BTreeMap<String, String>,
    /// Family of the address to hand out: the first of `spec.ipFamilies`, IPv4 when absent.
    pub family: Family,
    /// Annotation `causeway.dev/address-pool`.
    pub pool: Option<String>,
    /// Annotation `causeway.dev/loadBalancerIPs` (comma-separated), else `spec.loadBalancerIP`.
    pub requested: Vec<IpAddr>,
    /// The field `requested` was read from, for diagnostics.
    pub requested_field: String,
    /// Annotation `causeway.dev/allow-shared-ip`.
    pub sharing_key: Option<String>,
    /// `spec.ports` as (protocol, port).
    pub ports: Vec<PortKey>,
    /// `status.loadBalancer.ingress[].ip`: what the Service holds now (kept when still valid).
    pub current: Vec<IpAddr>,
    /// The requested addresses could not be parsed (a diagnostic says so): the Service gets nothing new and
    /// stays pending, rather than silently receiving any address.
    pub request_error: bool,
}

impl LbService {
    /// The order allocation processes Services in: oldest first, then namespace/name.
    pub(crate) fn order_key(&self) -> (bool, Option<&Time>, &ServiceKey) {
        (self.created.is_none(), self.created.as_ref(), &self.key)
    }

    /// Whether two Services may hold the same address: both carry the same sharing key and no (protocol, port)
    /// appears in both.
    pub fn can_share_with(&self, other: &LbService) -> bool {
        match (&self.sharing_key, &other.sharing_key) {
            (Some(a), Some(b)) if a == b => !self.ports.iter().any(|p| other.ports.contains(p)),
            _ => false,
        }
    }
}

/// Whether a Service is one the allocator handles: type LoadBalancer, and `spec.loadBalancerClass` unset or one of
/// ours ([`OUR_CLASSES`]).
pub fn is_ours(svc: &Service) -> bool {
    let Some(spec) = &svc.spec else { return false };
    spec.type_.as_deref() == Some("LoadBalancer")
        && spec.load_balancer_class.as_deref().is_none_or(|c| OUR_CLASSES.contains(&c))
}

/// The allocator's view of `svc`, or `None` when it is not ours ([`is_ours`]). Unparsable requested addresses
/// are errors naming the field (the Service then asks for nothing it can get: it stays pending); unparsable
/// status addresses are warnings and are dropped.
pub fn lb_service(svc: &Service, diags: &mut Vec<Diagnostic>) -> Option<LbService> {
    if !is_ours(svc) {
        return None;
    }
    let spec = svc.spec.as_ref()?;
    let meta = &svc.metadata;
    let key = ServiceKey::new(meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default());
    let obj = key.object_ref();
    let annotations = meta.annotations.clone().unwrap_or_default();
    let non_empty = |k: &str| annotations.get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());

    let mut requested = Vec::new();
    let mut bad_request = false;
    let (raw, field) = match non_empty(LOAD_BALANCER_IPS_ANNOTATION) {
        Some(v) => (v, format!("metadata.annotations[{LOAD_BALANCER_IPS_ANNOTATION}]")),
        None => (spec.load_balancer_ip.clone().unwrap_or_default(), "spec.loadBalancerIP".to_owned()),
    };
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<IpAddr>() {
            Ok(ip) if !requested.contains(&ip) => requested.push(ip),
            Ok(_) => {}
            Err(_) => {
                diags.push(Diagnostic::error(
                    obj.clone(),
                    field.clone(),
                    format!("{part:?} is not an IP address; the Service stays pending"),
                ));
                bad_request = true;
            }
        }
    }
    let family = match spec.ip_families.as_ref().and_then(|f| f.first()).map(String::as_str) {
        Some("IPv6") => Family::V6,
        _ => Family::V4,
    };
    let mut current = Vec::new();
    let ingress = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.as_ref());
    for (i, entry) in ingress.into_iter().flatten().enumerate() {
        let Some(ip) = entry.ip.as_deref() else { continue };
        match ip.parse::<IpAddr>() {
            Ok(ip) => current.push(ip),
            Err(_) => diags.push(Diagnostic::warning(
                obj.clone(),
                format!("status.loadBalancer.ingress[{i}].ip"),
                format!("{ip:?} is not an IP address; it is ignored"),
            )),
        }
    }
    let ports =
        spec.ports.iter().flatten().map(|p| (p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()), p.port)).collect();
    Some(LbService {
        key,
        created: meta.creation_timestamp.clone(),
        labels: meta.labels.clone().unwrap_or_default(),
        family,
        pool: non_empty(ADDRESS_POOL_ANNOTATION),
        requested,
        requested_field: field,
        sharing_key: non_empty(SHARED_IP_ANNOTATION),
        ports,
        current,
        request_error: bad_request,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, ServicePort, ServiceSpec, ServiceStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(class: Option<&str>, annotations: &[(&str, &str)], lb_ip: Option<&str>, status: &[&str]) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some("s".into()),
                annotations: Some(annotations.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                load_balancer_class: class.map(str::to_owned),
                load_balancer_ip: lb_ip.map(str::to_owned),
                ip_families: Some(vec!["IPv6".into()]),
                ports: Some(vec![ServicePort { port: 53, protocol: Some("UDP".into()), ..Default::default() }]),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(
                        status
                            .iter()
                            .map(|ip| LoadBalancerIngress { ip: Some((*ip).to_owned()), ..Default::default() })
                            .collect(),
                    ),
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn extraction_table() {
        // (service, expected: requested, requested_field, request_error, current, diagnostics)
        let cases = [
            (svc(None, &[], Some("10.0.0.5"), &[]), vec!["10.0.0.5"], "spec.loadBalancerIP", false, vec![], 0),
            (
                svc(None, &[(LOAD_BALANCER_IPS_ANNOTATION, "10.0.0.6, fd00::6")], Some("10.0.0.5"), &["10.0.0.1"]),
                vec!["10.0.0.6", "fd00::6"],
                "metadata.annotations[causeway.dev/loadBalancerIPs]",
                false,
                vec!["10.0.0.1"],
                0,
            ),
            (
                svc(None, &[], Some("nonsense"), &["bad", "10.0.0.2"]),
                vec![],
                "spec.loadBalancerIP",
                true,
                vec!["10.0.0.2"],
                2,
            ),
            (
                svc(Some("causeway.dev/lb"), &[(LOAD_BALANCER_IPS_ANNOTATION, " ")], Some(""), &[]),
                vec![],
                "spec.loadBalancerIP",
                false,
                vec![],
                0,
            ),
        ];
        for (i, (s, requested, field, error, current, n_diags)) in cases.into_iter().enumerate() {
            let mut diags = Vec::new();
            let got = lb_service(&s, &mut diags).expect("ours");
            let ips = |v: Vec<&str>| v.into_iter().map(|x| x.parse::<IpAddr>().expect("ip")).collect::<Vec<_>>();
            assert_eq!(got.requested, ips(requested), "case {i}");
            assert_eq!((got.requested_field.as_str(), got.request_error), (field, error), "case {i}");
            assert_eq!(got.current, ips(current), "case {i}");
            assert_eq!(diags.len(), n_diags, "case {i}: {diags:?}");
            assert_eq!((got.family, got.ports.clone()), (Family::V6, vec![("UDP".to_owned(), 53)]), "case {i}");
        }
    }

    #[test]
    fn only_our_classes_and_type_load_balancer() {
        let mut diags = Vec::new();
        assert!(lb_service(&svc(Some("metallb.io/metallb"), &[], None, &[]), &mut diags).is_none());
        assert!(lb_service(&svc(Some("causeway.dev/proxy"), &[], None, &[]), &mut diags).is_some());
        let mut cluster_ip = svc(None, &[], None, &[]);
        if let Some(spec) = cluster_ip.spec.as_mut() {
            spec.type_ = Some("ClusterIP".into());
        }
        assert!(lb_service(&cluster_ip, &mut diags).is_none());
        assert!(lb_service(&Service::default(), &mut diags).is_none());
        assert!(diags.is_empty());
    }

    #[test]
    fn sharing_needs_the_same_key_and_distinct_ports() {
        let mk = |key: Option<&str>, ports: &[(&str, i32)]| LbService {
            sharing_key: key.map(str::to_owned),
            ports: ports.iter().map(|(p, n)| ((*p).to_owned(), *n)).collect(),
            ..crate::test_util::mk_svc("x", 1)
        };
        let tcp80 = mk(Some("k"), &[("TCP", 80)]);
        assert!(tcp80.can_share_with(&mk(Some("k"), &[("UDP", 80)])), "same port, other protocol");
        assert!(!tcp80.can_share_with(&mk(Some("k"), &[("TCP", 80)])));
        assert!(!tcp80.can_share_with(&mk(Some("j"), &[("TCP", 81)])));
        assert!(!tcp80.can_share_with(&mk(None, &[("TCP", 81)])));
        assert!(!mk(None, &[("TCP", 80)]).can_share_with(&mk(None, &[("TCP", 81)])));
    }
}
