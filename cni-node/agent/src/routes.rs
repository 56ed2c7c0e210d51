//! Routes to other nodes' pod CIDRs (`podCIDR via InternalIP`, kindnet's host-gw routing) over netlink.
//!
//! Our routes carry their own protocol number ([`ROUTE_PROTOCOL`]) so a reconcile can tell them apart: routes
//! of Nodes that are gone are deleted only if they are ours; a route for a wanted CIDR with a wrong gateway is
//! replaced whoever made it (kindnet does the same).

use causeway_model::{Diagnostic, NodeTable, ObjectRef};
use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::{Handle, RouteMessageBuilder};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The `proto` of routes we install (`ip route` shows it as a number). 0xc5 is unassigned in rt_protos.
pub const ROUTE_PROTOCOL: u8 = 0xc5;

/// The main routing table.
const MAIN_TABLE: u32 = 254;

/// Errors talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("cannot open a netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    #[error("listing routes failed: {0}")]
    List(#[source] rtnetlink::Error),
    #[error("route {dst} via {gw}: {source}")]
    Replace {
        dst: IpNet,
        gw: IpAddr,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("deleting route {dst}: {source}")]
    Delete {
        dst: IpNet,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("invalid route {0}")]
    Invalid(String),
}

/// A route the agent wants: `dst via gw`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WantedRoute {
    pub dst: IpNet,
    pub gw: IpAddr,
}

/// A route found in the main table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundRoute {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    pub ours: bool,
}

/// A change to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteOp {
    Replace(WantedRoute),
    Delete(FoundRoute),
}

/// The routes this node needs: for every other Node, each pod CIDR via that Node's InternalIP of the same
/// family. Nodes without pod CIDRs or InternalIPs are skipped with a diagnostic.
pub fn wanted_routes(nodes: &NodeTable, self_name: &str) -> (Vec<WantedRoute>, Vec<Diagnostic>) {
    let mut out = Vec::new();
    let mut diags = Vec::new();
    for node in nodes.nodes.iter().filter(|n| n.name != self_name) {
        let obj = ObjectRef::new("Node", "", node.name.clone());
        if node.pod_cidrs.is_empty() {
            diags.push(Diagnostic::warning(obj.clone(), "spec.podCIDRs", "Node has no pod CIDR; no route to it"));
            continue;
        }
        for cidr in &node.pod_cidrs {
            let Ok(dst) = cidr.parse::<IpNet>() else {
                diags.push(Diagnostic::error(obj.clone(), "spec.podCIDRs", format!("{cidr:?} is not a CIDR")));
                continue;
            };
            let gw = node.internal_ips.iter().copied().find(|ip| ip.is_ipv4() == matches!(dst, IpNet::V4(_)));
            match gw {
                Some(gw) => out.push(WantedRoute { dst: dst.trunc(), gw }),
                None => diags.push(Diagnostic::warning(
                    obj.clone(),
                    "status.addresses",
                    format!("Node has no InternalIP of the family of {cidr}; no route to it"),
                )),
            }
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.dst == b.dst);
    (out, diags)
}

/// What to change so the main table has `wanted` and none of our stale routes.
pub fn plan(wanted: &[WantedRoute], found: &[FoundRoute]) -> Vec<RouteOp> {
    let mut ops = Vec::new();
    let by_dst: BTreeMap<IpNet, &WantedRoute> = wanted.iter().map(|w| (w.dst, w)).collect();
    for w in wanted {
        let same_dst: Vec<&FoundRoute> = found.iter().filter(|f| f.dst == w.dst).collect();
        let good = same_dst.iter().any(|f| f.ours && f.gw == Some(w.gw));
        for f in &same_dst {
            if f.gw != Some(w.gw) {
                ops.push(RouteOp::Delete((*f).clone()));
            }
        }
        if !good {
            ops.push(RouteOp::Replace(w.clone()));
        }
    }
    for f in found.iter().filter(|f| f.ours && !by_dst.contains_key(&f.dst)) {
        ops.push(RouteOp::Delete(f.clone()));
    }
    ops
}

/// Routes over one netlink connection.
#[derive(Clone)]
pub struct Router {
    handle: Handle,
}

fn addr_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

impl Router {
    /// Opens a netlink connection in the current network namespace (spawns its task on the runtime).
    pub fn connect() -> Result<Self, RouteError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(RouteError::Connect)?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// Routes of the main table, both families.
    pub async fn list(&self) -> Result<Vec<(FoundRoute, RouteMessage)>, RouteError> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = RouteMessage::default();
            msg.header.address_family = family;
            let mut stream = self.handle.route().get(msg).execute();
            while let Some(m) = stream.try_next().await.map_err(RouteError::List)? {
                let table = m
                    .attributes
                    .iter()
                    .find_map(|a| if let RouteAttribute::Table(t) = a { Some(*t) } else { None })
                    .unwrap_or(u32::from(m.header.table));
                if table != MAIN_TABLE {
                    continue;
                }
                let mut dst = None;
                let mut gw = None;
                for a in &m.attributes {
                    match a {
                        RouteAttribute::Destination(d) => dst = addr_of(d),
                        RouteAttribute::Gateway(g) => gw = addr_of(g),
                        _ => {}
                    }
                }
                let Some(dst) = dst else { continue };
                let Ok(net) = IpNet::new(dst, m.header.destination_prefix_length) else { continue };
                let ours = m.header.protocol == RouteProtocol::Other(ROUTE_PROTOCOL);
                out.push((FoundRoute { dst: net, gw, ours }, m));
            }
        }
        Ok(out)
    }

    /// Makes the main table match `wanted`; returns the number of our routes afterwards and the changes made.
    pub async fn reconcile(&self, wanted: &[WantedRoute]) -> Result<(usize, Vec<RouteOp>), RouteError> {
        let found = self.list().await?;
        let plain: Vec<FoundRoute> = found.iter().map(|(f, _)| f.clone()).collect();
        let ops = plan(wanted, &plain);
        for op in &ops {
            match op {
                RouteOp::Replace(w) => {
                    let msg = RouteMessageBuilder::<IpAddr>::new()
                        .destination_prefix(w.dst.addr(), w.dst.prefix_len())
                        .and_then(|b| b.gateway(w.gw))
                        .map_err(|e| RouteError::Invalid(format!("{} via {}: {e}", w.dst, w.gw)))?
                        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
                        .build();
                    self.handle.route().add(msg).replace().execute().await.map_err(|source| RouteError::Replace {
                        dst: w.dst,
                        gw: w.gw,
                        source,
                    })?;
                }
                RouteOp::Delete(f) => {
                    if let Some((_, msg)) = found.iter().find(|(x, _)| x == f) {
                        match self.handle.route().del(msg.clone()).execute().await {
                            Ok(()) => {}
                            // Gone already: fine.
                            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_enoent() => {}
                            Err(source) => return Err(RouteError::Delete { dst: f.dst, source }),
                        }
                    }
                }
            }
        }
        Ok((wanted.len(), ops))
    }
}

/// `ESRCH`, which the kernel returns for a route that no longer exists.
fn libc_enoent() -> i32 {
    nix::errno::Errno::ESRCH as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_model::NodeInfo;

    fn node(name: &str, cidrs: &[&str], ips: &[&str]) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            pod_cidrs: cidrs.iter().map(|s| s.to_string()).collect(),
            internal_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            ready: true,
            labels: Default::default(),
        }
    }

    #[test]
    fn wanted_routes_skip_self_and_bad_nodes() {
        let t = NodeTable {
            nodes: vec![
                node("a", &["10.244.0.0/24"], &["172.18.0.2"]),
                node("b", &["10.244.1.0/24", "fd00:10:244:1::/64"], &["172.18.0.3", "fc00::3"]),
                node("c", &[], &["172.18.0.4"]),
                node("d", &["10.244.3.0/24"], &[]),
            ],
        };
        let (routes, diags) = wanted_routes(&t, "a");
        let got: Vec<String> = routes.iter().map(|r| format!("{} via {}", r.dst, r.gw)).collect();
        assert_eq!(got, ["10.244.1.0/24 via 172.18.0.3", "fd00:10:244:1::/64 via fc00::3"]);
        let names: Vec<&str> = diags.iter().map(|d| d.object.name.as_str()).collect();
        assert_eq!(names, ["c", "d"]);
    }

    #[test]
    fn plan_table() {
        let w = |d: &str, g: &str| WantedRoute { dst: d.parse().unwrap(), gw: g.parse().unwrap() };
        let f =
            |d: &str, g: &str, ours: bool| FoundRoute { dst: d.parse().unwrap(), gw: Some(g.parse().unwrap()), ours };
        type Case = (&'static str, Vec<WantedRoute>, Vec<FoundRoute>, Vec<RouteOp>);
        let cases: Vec<Case> = vec![
            (
                "missing is added",
                vec![w("10.244.1.0/24", "172.18.0.3")],
                vec![],
                vec![RouteOp::Replace(w("10.244.1.0/24", "172.18.0.3"))],
            ),
            (
                "present is kept",
                vec![w("10.244.1.0/24", "172.18.0.3")],
                vec![f("10.244.1.0/24", "172.18.0.3", true)],
                vec![],
            ),
            (
                "wrong gateway is fixed",
                vec![w("10.244.1.0/24", "172.18.0.3")],
                vec![f("10.244.1.0/24", "172.18.0.9", false)],
                vec![
                    RouteOp::Delete(f("10.244.1.0/24", "172.18.0.9", false)),
                    RouteOp::Replace(w("10.244.1.0/24", "172.18.0.3")),
                ],
            ),
            (
                "foreign route with the right gateway is taken over",
                vec![w("10.244.1.0/24", "172.18.0.3")],
                vec![f("10.244.1.0/24", "172.18.0.3", false)],
                vec![RouteOp::Replace(w("10.244.1.0/24", "172.18.0.3"))],
            ),
            (
                "ours, stale, deleted",
                vec![],
                vec![f("10.244.2.0/24", "172.18.0.4", true)],
                vec![RouteOp::Delete(f("10.244.2.0/24", "172.18.0.4", true))],
            ),
            ("foreign, unrelated, untouched", vec![], vec![f("192.168.0.0/16", "172.18.0.1", false)], vec![]),
        ];
        for (what, wanted, found, want) in cases {
            assert_eq!(plan(&wanted, &found), want, "{what}");
        }
    }
}
