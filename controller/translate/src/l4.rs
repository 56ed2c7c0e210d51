//! Services of `loadBalancerClass: causeway.dev/proxy` to the proxy's TCP/UDP listeners.

use crate::PROXY_LOAD_BALANCER_CLASS;
use crate::endpoints::{service_endpoints, usable};
use crate::index::Index;
use causeway_model::{Diagnostic, L4Listener, L4Protocol, ObjectRef, ServiceRef};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// One listener per (status IP, port) of every proxy-class LoadBalancer Service. Two Services claiming the same
/// address, port and protocol: the older (creationTimestamp, then namespace/name) wins, the other gets a warning.
pub(crate) fn listeners(index: &Index, diags: &mut Vec<Diagnostic>) -> Vec<L4Listener> {
    let mut services: Vec<_> = index
        .services()
        .filter(|s| s.spec.as_ref().and_then(|s| s.load_balancer_class.as_deref()) == Some(PROXY_LOAD_BALANCER_CLASS))
        .collect();
    services.sort_by(|a, b| {
        let ta = &a.metadata.creation_timestamp;
        let tb = &b.metadata.creation_timestamp;
        (ta.is_none(), ta, &a.metadata.namespace, &a.metadata.name).cmp(&(
            tb.is_none(),
            tb,
            &b.metadata.namespace,
            &b.metadata.name,
        ))
    });
    let mut out: BTreeMap<(SocketAddr, L4Protocol), L4Listener> = BTreeMap::new();
    for svc in services {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let obj = ObjectRef::new("Service", ns.clone(), name.clone());
        let spec = svc.spec.clone().unwrap_or_default();
        if spec.type_.as_deref() != Some("LoadBalancer") {
            diags.push(Diagnostic::warning(
                obj,
                "spec.type",
                format!("loadBalancerClass {PROXY_LOAD_BALANCER_CLASS} only applies to type LoadBalancer; no listener"),
            ));
            continue;
        }
        let mut ips: Vec<IpAddr> = Vec::new();
        let ingress = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.as_ref());
        for (i, entry) in ingress.into_iter().flatten().enumerate() {
            let Some(ip) = entry.ip.as_deref() else { continue };
            match ip.parse() {
                Ok(ip) => ips.push(ip),
                Err(_) => diags.push(Diagnostic::error(
                    obj.clone(),
                    format!("status.loadBalancer.ingress[{i}].ip"),
                    format!("{ip:?} is not an IP address; no listener on it"),
                )),
            }
        }
        if ips.is_empty() {
            diags.push(Diagnostic::warning(
                obj.clone(),
                "status.loadBalancer.ingress",
                "no load-balancer IP assigned yet; no listener",
            ));
            continue;
        }
        for (pi, port) in spec.ports.iter().flatten().enumerate() {
            let field = format!("spec.ports[{pi}]");
            let protocol = match port.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => L4Protocol::Tcp,
                "UDP" => L4Protocol::Udp,
                other => {
                    diags.push(Diagnostic::error(
                        obj.clone(),
                        format!("{field}.protocol"),
                        format!(
                            "protocol {other} is not supported by the proxy (TCP and UDP only); the port is ignored"
                        ),
                    ));
                    continue;
                }
            };
            let Ok(number) = u16::try_from(port.port).map_err(drop).and_then(|p| if p == 0 { Err(()) } else { Ok(p) })
            else {
                diags.push(Diagnostic::error(
                    obj.clone(),
                    format!("{field}.port"),
                    format!("port {} is out of range 1-65535; the port is ignored", port.port),
                ));
                continue;
            };
            let proto_str = port.protocol.as_deref().unwrap_or("TCP");
            let all = service_endpoints(index, &ns, &name, port.name.as_deref().unwrap_or(""), proto_str, None, diags);
            let endpoints = usable(&all);
            let service = ServiceRef { namespace: ns.clone(), name: name.clone(), port: number };
            for ip in &ips {
                let listen = SocketAddr::new(*ip, number);
                if let Some(existing) = out.get(&(listen, protocol)) {
                    diags.push(Diagnostic::warning(
                        obj.clone(),
                        field.clone(),
                        format!(
                            "{listen} is already served by the older Service {}/{}; this port is ignored there",
                            existing.service.namespace, existing.service.name
                        ),
                    ));
                    continue;
                }
                out.insert(
                    (listen, protocol),
                    L4Listener { protocol, listen, service: service.clone(), endpoints: endpoints.clone() },
                );
            }
        }
    }
    out.into_values().collect()
}
