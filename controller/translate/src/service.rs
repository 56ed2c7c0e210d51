//! Services + EndpointSlices to the node agent's [`ServiceTable`], Nodes to its [`NodeTable`].

use crate::PROXY_LOAD_BALANCER_CLASS;
use crate::endpoints::{Family, service_endpoints};
use crate::index::Index;
use causeway_model::{
    Diagnostic, NodeInfo, NodeTable, ObjectRef, Protocol, ServicePort, ServicePortName, ServiceTable, TrafficPolicy,
};
use k8s_openapi::api::core::v1::Service;
use std::net::IpAddr;

/// Label excluding a Service from kube-proxy-style processing (it is handled by another proxy).
const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Label marking a headless Service (its slices carry it too).
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// API default of `sessionAffinityConfig.clientIP.timeoutSeconds`.
const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

/// Build the node agent's service table: one [`ServicePort`] per (Service, port), with every endpoint of every
/// slice of the Service matched to the port by name and protocol, conditions kept.
///
/// Skipped silently, as kube-proxy does: `type: ExternalName`, headless (`clusterIP: None`) and Services labelled
/// `service.kubernetes.io/service-proxy-name` or `service.kubernetes.io/headless`. Skipped with a diagnostic: a
/// Service with no or an invalid ClusterIP (a manifests directory has no allocator, so it must set one); a port out
/// of range or of an unknown protocol (only that port); an invalid external IP, load-balancer IP or source range
/// (only that value); slices of another address family. Load-balancer IPs come from `status.loadBalancer.ingress`
/// (with `ipMode` unset or `VIP`) and are left empty for `loadBalancerClass: causeway.dev/proxy`, which the proxy
/// serves itself.
pub fn service_table(index: &Index) -> (ServiceTable, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let mut ports = Vec::new();
    for svc in index.services() {
        ports.extend(service_ports(index, svc, &mut diags));
    }
    ports.sort_by(|a: &ServicePort, b: &ServicePort| a.name.cmp(&b.name));
    ports.dedup_by(|a, b| a.name == b.name);
    (ServiceTable { ports }, crate::dedup(diags))
}

/// The [`ServicePort`]s of one Service (what [`service_table`] holds for it), for consumers that recompute only
/// the Services whose objects changed. Empty when the Service does not exist or is skipped.
pub fn service_ports_of(index: &Index, namespace: &str, name: &str) -> (Vec<ServicePort>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let ports = match index.service(namespace, name) {
        Some(svc) => {
            let mut ports = service_ports(index, svc, &mut diags);
            ports.sort_by(|a, b| a.name.cmp(&b.name));
            ports.dedup_by(|a, b| a.name == b.name);
            ports
        }
        None => Vec::new(),
    };
    (ports, crate::dedup(diags))
}

fn parse_ips(values: &[String], obj: &ObjectRef, field: &str, what: &str, diags: &mut Vec<Diagnostic>) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for (i, v) in values.iter().enumerate() {
        match v.parse::<IpAddr>() {
            Ok(ip) => out.push(ip),
            Err(_) => diags.push(Diagnostic::error(
                obj.clone(),
                format!("{field}[{i}]"),
                format!("{v:?} is not an IP address; this {what} is ignored"),
            )),
        }
    }
    out
}

fn service_ports(index: &Index, svc: &Service, diags: &mut Vec<Diagnostic>) -> Vec<ServicePort> {
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let obj = ObjectRef::new("Service", ns.clone(), name.clone());
    if let Some(labels) = &svc.metadata.labels
        && (labels.contains_key(SERVICE_PROXY_NAME_LABEL) || labels.contains_key(HEADLESS_LABEL))
    {
        return Vec::new();
    }
    let Some(spec) = svc.spec.as_ref() else { return Vec::new() };
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    if ty == "ExternalName" {
        return Vec::new();
    }
    // ClusterIPs: `spec.clusterIPs` when set (dual-stack), else `spec.clusterIP`.
    let raw: Vec<String> = match (&spec.cluster_ips, &spec.cluster_ip) {
        (Some(ips), _) if !ips.is_empty() => ips.clone(),
        (_, Some(ip)) if !ip.is_empty() => vec![ip.clone()],
        _ => Vec::new(),
    };
    if raw.first().is_some_and(|ip| ip == "None") {
        return Vec::new();
    }
    if raw.is_empty() {
        diags.push(Diagnostic::warning(
            obj,
            "spec.clusterIP",
            "the Service has no ClusterIP (a manifests directory has no allocator: set spec.clusterIP); it is skipped",
        ));
        return Vec::new();
    }
    let mut cluster_ips = Vec::new();
    for (i, ip) in raw.iter().enumerate() {
        match ip.parse::<IpAddr>() {
            Ok(ip) => cluster_ips.push(ip),
            Err(_) => {
                let field = if spec.cluster_ips.as_ref().is_some_and(|v| !v.is_empty()) {
                    format!("spec.clusterIPs[{i}]")
                } else {
                    "spec.clusterIP".to_owned()
                };
                diags.push(Diagnostic::error(
                    obj,
                    field,
                    format!("{ip:?} is not an IP address; the Service is skipped"),
                ));
                return Vec::new();
            }
        }
    }
    let families: Vec<Family> = cluster_ips.iter().map(|ip| Family::of(*ip)).collect();

    let external_ips =
        parse_ips(spec.external_ips.as_deref().unwrap_or(&[]), &obj, "spec.externalIPs", "external IP", diags);
    let load_balancer_ips =
        if ty == "LoadBalancer" && spec.load_balancer_class.as_deref() != Some(PROXY_LOAD_BALANCER_CLASS) {
            let mut ips = Vec::new();
            let ingress = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.as_ref());
            for (i, entry) in ingress.into_iter().flatten().enumerate() {
                // Reference §5.8: `ipMode: Proxy` entries are not VIPs the node should capture; hostnames are ignored.
                if entry.ip_mode.as_deref().is_some_and(|m| m != "VIP") {
                    continue;
                }
                let Some(ip) = entry.ip.as_deref() else { continue };
                match ip.parse::<IpAddr>() {
                    Ok(ip) => ips.push(ip),
                    Err(_) => diags.push(Diagnostic::error(
                        obj.clone(),
                        format!("status.loadBalancer.ingress[{i}].ip"),
                        format!("{ip:?} is not an IP address; this load-balancer IP is ignored"),
                    )),
                }
            }
            ips
        } else {
            Vec::new()
        };
    let mut source_ranges = Vec::new();
    for (i, r) in spec.load_balancer_source_ranges.iter().flatten().enumerate() {
        match r.trim().parse::<ipnet::IpNet>() {
            Ok(net) => source_ranges.push(net.trunc().to_string()),
            Err(_) => diags.push(Diagnostic::error(
                obj.clone(),
                format!("spec.loadBalancerSourceRanges[{i}]"),
                format!("{r:?} is not a CIDR; this range is ignored"),
            )),
        }
    }
    let session_affinity_timeout = if spec.session_affinity.as_deref() == Some("ClientIP") {
        let t =
            spec.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref()).and_then(|c| c.timeout_seconds);
        match t {
            None => Some(DEFAULT_AFFINITY_TIMEOUT),
            Some(t) if (1..=86_400).contains(&t) => Some(t as u32),
            Some(t) => {
                diags.push(Diagnostic::error(
                    obj.clone(),
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    format!("{t} is out of range 1-86400; the default {DEFAULT_AFFINITY_TIMEOUT} is used"),
                ));
                Some(DEFAULT_AFFINITY_TIMEOUT)
            }
        }
    } else {
        None
    };
    let external_policy_applies = ty == "NodePort" || ty == "LoadBalancer";
    let external_traffic_policy = if external_policy_applies && spec.external_traffic_policy.as_deref() == Some("Local")
    {
        TrafficPolicy::Local
    } else {
        TrafficPolicy::Cluster
    };
    let internal_traffic_policy = if spec.internal_traffic_policy.as_deref() == Some("Local") {
        TrafficPolicy::Local
    } else {
        TrafficPolicy::Cluster
    };
    let health_check_node_port = if ty == "LoadBalancer" && external_traffic_policy == TrafficPolicy::Local {
        spec.health_check_node_port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0)
    } else {
        None
    };

    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (pi, port) in spec.ports.iter().flatten().enumerate() {
        let field = format!("spec.ports[{pi}]");
        let number = match u16::try_from(port.port) {
            Ok(p) if p != 0 => p,
            _ => {
                diags.push(Diagnostic::error(
                    obj.clone(),
                    format!("{field}.port"),
                    format!("port {} is out of range 1-65535; the port is skipped", port.port),
                ));
                continue;
            }
        };
        let proto_str = port.protocol.as_deref().unwrap_or("TCP");
        let protocol = match proto_str {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            other => {
                diags.push(Diagnostic::error(
                    obj.clone(),
                    format!("{field}.protocol"),
                    format!("protocol {other:?} is not TCP, UDP or SCTP; the port is skipped"),
                ));
                continue;
            }
        };
        let node_port = match port.node_port {
            None | Some(0) => None,
            Some(p) => match u16::try_from(p) {
                Ok(p) if ty == "NodePort" || ty == "LoadBalancer" => Some(p),
                Ok(_) => None,
                Err(_) => {
                    diags.push(Diagnostic::error(
                        obj.clone(),
                        format!("{field}.nodePort"),
                        format!("nodePort {p} is out of range 1-65535; the port gets no NodePort"),
                    ));
                    None
                }
            },
        };
        let port_name = port.name.clone().unwrap_or_default();
        if !seen.insert((port_name.clone(), protocol)) {
            diags.push(Diagnostic::error(
                obj.clone(),
                format!("{field}.name"),
                format!("port name {port_name:?} is used by an earlier {proto_str} port; names must be unique; the port is skipped"),
            ));
            continue;
        }
        let endpoints = service_endpoints(index, &ns, &name, &port_name, proto_str, Some(&families), diags);
        out.push(ServicePort {
            name: ServicePortName { namespace: ns.clone(), name: name.clone(), port: port_name, protocol },
            cluster_ips: cluster_ips.clone(),
            port: number,
            node_port,
            external_ips: external_ips.clone(),
            load_balancer_ips: load_balancer_ips.clone(),
            load_balancer_source_ranges: source_ranges.clone(),
            session_affinity_timeout,
            external_traffic_policy,
            internal_traffic_policy,
            health_check_node_port,
            endpoints,
        });
    }
    out
}

/// Build the node agent's node table: pod CIDRs (`spec.podCIDRs`, else `spec.podCIDR`), InternalIP addresses,
/// readiness (the `Ready` condition; no conditions at all, as in a manifests directory, counts as ready) and labels.
///
/// A Node without a valid pod CIDR or without an InternalIP is skipped with a diagnostic; an invalid extra CIDR or
/// address is dropped with a diagnostic.
pub fn node_table(index: &Index) -> (NodeTable, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let mut nodes = Vec::new();
    for node in index.nodes() {
        let name = node.metadata.name.clone().unwrap_or_default();
        let obj = ObjectRef::new("Node", "", name.clone());
        let spec = node.spec.clone().unwrap_or_default();
        let (field, raw): (&str, Vec<String>) = match (&spec.pod_cidrs, &spec.pod_cidr) {
            (Some(list), _) if !list.is_empty() => ("spec.podCIDRs", list.clone()),
            (_, Some(one)) if !one.is_empty() => ("spec.podCIDR", vec![one.clone()]),
            _ => ("spec.podCIDR", Vec::new()),
        };
        let mut pod_cidrs = Vec::new();
        let mut cidr_errors = Vec::new();
        for (i, c) in raw.iter().enumerate() {
            let f = if field == "spec.podCIDRs" { format!("{field}[{i}]") } else { field.to_owned() };
            match c.parse::<ipnet::IpNet>() {
                Ok(net) if net.trunc() == net => pod_cidrs.push(net.to_string()),
                Ok(net) => cidr_errors.push((f, format!("{c:?} has host bits set (did you mean {}?)", net.trunc()))),
                Err(_) => cidr_errors.push((f, format!("{c:?} is not a CIDR"))),
            }
        }
        if pod_cidrs.is_empty() {
            // One diagnostic for the skipped Node, naming the first bad value when there was one.
            let (f, why) =
                cidr_errors.into_iter().next().unwrap_or_else(|| (field.to_owned(), "no pod CIDR is set".to_owned()));
            diags.push(Diagnostic::error(obj, f, format!("{why}; the Node has no valid pod CIDR and is skipped")));
            continue;
        }
        for (f, why) in cidr_errors {
            diags.push(Diagnostic::error(obj.clone(), f, format!("{why}; it is ignored")));
        }
        let mut internal_ips = Vec::new();
        let mut ip_errors = Vec::new();
        let status = node.status.clone().unwrap_or_default();
        for (i, a) in status.addresses.iter().flatten().enumerate() {
            if a.type_ != "InternalIP" {
                continue;
            }
            match a.address.parse::<IpAddr>() {
                Ok(ip) => internal_ips.push(ip),
                Err(_) => ip_errors
                    .push((format!("status.addresses[{i}].address"), format!("{:?} is not an IP address", a.address))),
            }
        }
        if internal_ips.is_empty() {
            let (f, why) = ip_errors
                .into_iter()
                .next()
                .unwrap_or_else(|| ("status.addresses".to_owned(), "no InternalIP address is set".to_owned()));
            diags.push(Diagnostic::error(obj, f, format!("{why}; the Node has no valid InternalIP and is skipped")));
            continue;
        }
        for (f, why) in ip_errors {
            diags.push(Diagnostic::error(obj.clone(), f, format!("{why}; it is ignored")));
        }
        let ready = match status.conditions.as_deref() {
            None | Some([]) => true,
            Some(conds) => conds.iter().any(|c| c.type_ == "Ready" && c.status == "True"),
        };
        nodes.push(NodeInfo {
            name,
            pod_cidrs,
            internal_ips,
            ready,
            labels: node.metadata.labels.clone().unwrap_or_default(),
        });
    }
    (NodeTable { nodes }, crate::dedup(diags))
}
