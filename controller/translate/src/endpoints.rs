//! EndpointSlice semantics shared by the route table and the service table (node-networking reference §7):
//! merge every slice of a Service, match slice ports to the Service port by name and protocol, keep conditions.

use crate::index::Index;
use causeway_model::{Diagnostic, Endpoint, EndpointInfo, ObjectRef};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// An IP family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    pub(crate) fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    fn address_type(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

fn slice_ref(slice: &EndpointSlice) -> ObjectRef {
    ObjectRef::new(
        "EndpointSlice",
        slice.metadata.namespace.clone().unwrap_or_default(),
        slice.metadata.name.clone().unwrap_or_default(),
    )
}

/// The slice's family, or a diagnostic when it is FQDN, unknown, or not one of `families` (when given).
fn slice_family(slice: &EndpointSlice, families: Option<&[Family]>, diags: &mut Vec<Diagnostic>) -> Option<Family> {
    let family = match slice.address_type.as_str() {
        "IPv4" => Family::V4,
        "IPv6" => Family::V6,
        other => {
            diags.push(Diagnostic::warning(
                slice_ref(slice),
                "addressType",
                format!("addressType {other:?} is not supported (only IPv4 and IPv6); the slice is ignored"),
            ));
            return None;
        }
    };
    if let Some(fams) = families
        && !fams.contains(&family)
    {
        diags.push(Diagnostic::warning(
            slice_ref(slice),
            "addressType",
            format!("addressType {} is not a family of its Service; the slice is ignored", family.address_type()),
        ));
        return None;
    }
    Some(family)
}

/// Every endpoint of Service `namespace/service` for the Service port named `port_name` (empty for an unnamed
/// port) with `protocol`, merged over all its slices, deduplicated by (ip, port) — a later non-terminating
/// duplicate replaces an earlier one — and sorted by (ip, port).
///
/// `families`: the IP families the Service has; slices of another family are skipped with a warning. `None`
/// accepts both families (the proxy can reach either).
pub(crate) fn service_endpoints(
    index: &Index,
    namespace: &str,
    service: &str,
    port_name: &str,
    protocol: &str,
    families: Option<&[Family]>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<EndpointInfo> {
    let mut merged: BTreeMap<(IpAddr, u16), EndpointInfo> = BTreeMap::new();
    for slice in index.slices_for_service(namespace, service) {
        let Some(family) = slice_family(slice, families, diags) else { continue };
        for (pi, port) in slice.ports.iter().flatten().enumerate() {
            if port.name.as_deref().unwrap_or("") != port_name || port.protocol.as_deref().unwrap_or("TCP") != protocol
            {
                continue;
            }
            let number = match port.port {
                Some(p) if (1..=65535).contains(&p) => p as u16,
                Some(0) | None => continue,
                Some(p) => {
                    diags.push(Diagnostic::error(
                        slice_ref(slice),
                        format!("ports[{pi}].port"),
                        format!("port {p} is out of range 1-65535; the port is ignored"),
                    ));
                    continue;
                }
            };
            for (ei, ep) in slice.endpoints.iter().enumerate() {
                let Some(first) = ep.addresses.first() else {
                    diags.push(Diagnostic::error(
                        slice_ref(slice),
                        format!("endpoints[{ei}].addresses"),
                        "the endpoint has no address; it is ignored",
                    ));
                    continue;
                };
                let ip: IpAddr = match first.parse() {
                    Ok(ip) if Family::of(ip) == family => ip,
                    Ok(_) => {
                        diags.push(Diagnostic::error(
                            slice_ref(slice),
                            format!("endpoints[{ei}].addresses[0]"),
                            format!(
                                "address {first:?} is not of the slice's addressType {}; it is ignored",
                                slice.address_type
                            ),
                        ));
                        continue;
                    }
                    Err(_) => {
                        diags.push(Diagnostic::error(
                            slice_ref(slice),
                            format!("endpoints[{ei}].addresses[0]"),
                            format!("address {first:?} is not an IP address; the endpoint is ignored"),
                        ));
                        continue;
                    }
                };
                let cond = ep.conditions.clone().unwrap_or_default();
                let info = EndpointInfo {
                    ip,
                    port: number,
                    node_name: ep.node_name.clone(),
                    zone: ep.zone.clone(),
                    // Reference §7.3: nil ready and nil serving mean true, nil terminating means false.
                    ready: cond.ready.unwrap_or(true),
                    serving: cond.serving.unwrap_or(true),
                    terminating: cond.terminating.unwrap_or(false),
                };
                match merged.get(&(ip, number)) {
                    Some(_) if info.terminating => {}
                    _ => {
                        merged.insert((ip, number), info);
                    }
                }
            }
        }
    }
    merged.into_values().collect()
}

/// The endpoints the proxy sends traffic to: the ready ones, or, when none is ready, the serving and terminating
/// ones (graceful drain, KEP-1669).
pub(crate) fn usable(endpoints: &[EndpointInfo]) -> Vec<Endpoint> {
    let ready: Vec<Endpoint> =
        endpoints.iter().filter(|e| e.ready).map(|e| Endpoint { address: SocketAddr::new(e.ip, e.port) }).collect();
    if !ready.is_empty() {
        return ready;
    }
    endpoints
        .iter()
        .filter(|e| e.serving && e.terminating)
        .map(|e| Endpoint { address: SocketAddr::new(e.ip, e.port) })
        .collect()
}
