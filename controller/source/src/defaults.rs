//! The defaults the API server fills in when an object is created, applied to objects read from files so that
//! translation sees the same objects a cluster would show it.
//!
//! Filled in:
//! - every namespaced object: `metadata.namespace: default` when absent; cluster-scoped objects lose a namespace;
//! - Service: `type: ClusterIP`, `sessionAffinity: None` (and the ClientIP timeout 10800 s when `ClientIP`),
//!   `ports[].protocol: TCP`, `ports[].targetPort` = `port`, `clusterIPs` from `clusterIP`, `ipFamilies` from the
//!   ClusterIPs, `ipFamilyPolicy: SingleStack`, `internalTrafficPolicy: Cluster`, and for NodePort/LoadBalancer
//!   `externalTrafficPolicy: Cluster` (plus `allocateLoadBalancerNodePorts: true` for LoadBalancer);
//! - Secret: `type: Opaque`, and `stringData` merged into `data` (what the API server stores);
//! - EndpointSlice: `ports[].protocol: TCP`, `ports[].name: ""`, and endpoint conditions `ready`/`serving` nil →
//!   true, `terminating` nil → false (reference §7.3);
//! - Ingress: a missing `pathType` (required by the API) becomes `""` so that translation reports it on the exact
//!   path (`spec.rules[i].http.paths[j].pathType`) instead of the whole Ingress failing to decode.
//!
//! Not filled in, because a cluster would *allocate* them: `clusterIP`, `nodePort`, `healthCheckNodePort`,
//! `creationTimestamp`, `uid`.

use causeway_translate::KubeObject;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ClientIPConfig, Secret, Service, SessionAffinityConfig};
use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use std::net::IpAddr;
use std::sync::Arc;

/// The namespace of a namespaced object that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Defaults that must be applied before the typed decode (required fields).
pub(crate) fn prepare_value(kind: causeway_translate::Kind, value: &mut Value) {
    if kind == causeway_translate::Kind::Ingress
        && let Some(rules) = value.pointer_mut("/spec/rules").and_then(Value::as_array_mut)
    {
        for rule in rules {
            let Some(paths) = rule.pointer_mut("/http/paths").and_then(Value::as_array_mut) else { continue };
            for path in paths {
                if let Some(map) = path.as_object_mut()
                    && !map.get("pathType").is_some_and(Value::is_string)
                {
                    map.insert("pathType".to_owned(), Value::String(String::new()));
                }
            }
        }
    }
    if kind == causeway_translate::Kind::EndpointSlice
        && let Some(map) = value.as_object_mut()
        && !map.get("endpoints").is_some_and(Value::is_array)
    {
        // `endpoints` is required but may be empty; an omitted list means no endpoints.
        map.insert("endpoints".to_owned(), Value::Array(Vec::new()));
    }
}

/// Set or clear `metadata.namespace` by the object's scope.
pub(crate) fn namespace(obj: KubeObject) -> KubeObject {
    let kind = obj.kind();
    let current = obj.metadata().namespace.clone().unwrap_or_default();
    let want = if kind.is_namespaced() {
        if current.is_empty() { DEFAULT_NAMESPACE.to_owned() } else { current.clone() }
    } else {
        String::new()
    };
    if want == current {
        return obj;
    }
    let ns = if want.is_empty() { None } else { Some(want) };
    macro_rules! set {
        ($o:expr, $v:ident) => {{
            let mut o = Arc::unwrap_or_clone($o);
            o.metadata.namespace = ns;
            KubeObject::$v(Arc::new(o))
        }};
    }
    match obj {
        KubeObject::Namespace(o) => set!(o, Namespace),
        KubeObject::Service(o) => set!(o, Service),
        KubeObject::Secret(o) => set!(o, Secret),
        KubeObject::Node(o) => set!(o, Node),
        KubeObject::ConfigMap(o) => set!(o, ConfigMap),
        KubeObject::Ingress(o) => set!(o, Ingress),
        KubeObject::IngressClass(o) => set!(o, IngressClass),
        KubeObject::EndpointSlice(o) => set!(o, EndpointSlice),
        KubeObject::IpPool(o) => set!(o, IpPool),
    }
}

fn set_if_none(field: &mut Option<String>, value: &str) {
    if field.as_deref().is_none_or(str::is_empty) {
        *field = Some(value.to_owned());
    }
}

/// Service defaults.
pub(crate) fn service(svc: &mut Service) {
    let spec = svc.spec.get_or_insert_with(Default::default);
    set_if_none(&mut spec.type_, "ClusterIP");
    let ty = spec.type_.clone().unwrap_or_default();
    if ty == "ExternalName" {
        return;
    }
    set_if_none(&mut spec.session_affinity, "None");
    if spec.session_affinity.as_deref() == Some("ClientIP") {
        let cfg = spec.session_affinity_config.get_or_insert_with(SessionAffinityConfig::default);
        let client = cfg.client_ip.get_or_insert_with(ClientIPConfig::default);
        client.timeout_seconds.get_or_insert(10_800);
    }
    for port in spec.ports.iter_mut().flatten() {
        set_if_none(&mut port.protocol, "TCP");
        if port.target_port.is_none() {
            port.target_port = Some(IntOrString::Int(port.port));
        }
    }
    if spec.cluster_ips.as_ref().is_none_or(Vec::is_empty)
        && let Some(ip) = spec.cluster_ip.clone().filter(|ip| !ip.is_empty())
    {
        spec.cluster_ips = Some(vec![ip]);
    }
    if spec.cluster_ip.as_deref().is_none_or(str::is_empty)
        && let Some(first) = spec.cluster_ips.as_ref().and_then(|ips| ips.first())
    {
        spec.cluster_ip = Some(first.clone());
    }
    if spec.ip_families.as_ref().is_none_or(Vec::is_empty) {
        let families: Vec<String> = spec
            .cluster_ips
            .iter()
            .flatten()
            .filter_map(|ip| ip.parse::<IpAddr>().ok())
            .map(|ip| if ip.is_ipv4() { "IPv4" } else { "IPv6" }.to_owned())
            .collect();
        if !families.is_empty() {
            spec.ip_families = Some(families);
        }
    }
    if spec.ip_family_policy.is_none() {
        let dual = spec.cluster_ips.as_ref().is_some_and(|ips| ips.len() > 1);
        spec.ip_family_policy = Some(if dual { "RequireDualStack" } else { "SingleStack" }.to_owned());
    }
    set_if_none(&mut spec.internal_traffic_policy, "Cluster");
    if ty == "NodePort" || ty == "LoadBalancer" {
        set_if_none(&mut spec.external_traffic_policy, "Cluster");
    }
    if ty == "LoadBalancer" {
        spec.allocate_load_balancer_node_ports.get_or_insert(true);
    }
}

/// Secret defaults: `type: Opaque`, `stringData` merged into `data`.
pub(crate) fn secret(secret: &mut Secret) {
    set_if_none(&mut secret.type_, "Opaque");
    if let Some(string_data) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(Default::default);
        for (k, v) in string_data {
            data.insert(k, ByteString(v.into_bytes()));
        }
    }
}

/// EndpointSlice defaults.
pub(crate) fn endpoint_slice(slice: &mut EndpointSlice) {
    for port in slice.ports.iter_mut().flatten() {
        set_if_none(&mut port.protocol, "TCP");
        port.name.get_or_insert_with(String::new);
    }
    for ep in &mut slice.endpoints {
        let c = ep.conditions.get_or_insert_with(EndpointConditions::default);
        c.ready.get_or_insert(true);
        c.serving.get_or_insert(true);
        c.terminating.get_or_insert(false);
    }
}
