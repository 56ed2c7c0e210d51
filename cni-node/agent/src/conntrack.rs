//! Conntrack clean-up after a rule sync: flows the new rules can no longer fix are deleted, so their next
//! packet is translated afresh.
//!
//! Two kinds of flow are stale (the first is what kube-proxy does for UDP; we also do it for TCP and SCTP):
//!
//! 1. **Untranslated flows to a frontend that now has endpoints.** A packet sent to a ClusterIP, external IP or
//!    LoadBalancer address before its rules existed (or while it had no endpoints) leaves a conntrack entry
//!    *without* DNAT. Every later packet of that 5-tuple follows the entry, not the rules: a UDP client keeps
//!    sending into the void, and a TCP client that happens to reuse the source port within the SYN_SENT
//!    timeout (120 s) has its SYN "retransmitted" to nowhere. Such an entry answers with the frontend's own
//!    address and port in its reply tuple, which is how it is recognised.
//! 2. **UDP and SCTP flows DNATed to an endpoint that left the Service.** Without a connection to break, the
//!    client would keep talking to the dead endpoint for as long as it keeps the flow alive. TCP flows to a
//!    removed endpoint are left alone (they end with the endpoint, as with kube-proxy).
//!
//! [`StaleFlows::between`] (pure) says what is stale after a change; [`parse_flows`] (pure) reads
//! `conntrack -L`; [`ConntrackTool`] runs the `conntrack` program at the edge, only when there is something to
//! look for: one listing per family, then one filtered delete per distinct [`FlowKey`] found stale.

use causeway_model::{EndpointInfo, Protocol, ServicePort, ServiceTable};
use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;

/// One conntrack entry, as far as clean-up needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    pub protocol: Protocol,
    pub orig_src: IpAddr,
    pub orig_dst: IpAddr,
    pub orig_sport: u16,
    pub orig_dport: u16,
    pub reply_src: IpAddr,
    pub reply_sport: u16,
}

/// What decides whether a flow is stale: everything but the client's address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowKey {
    pub protocol: Protocol,
    pub orig_dst: IpAddr,
    pub orig_dport: u16,
    pub reply_src: IpAddr,
    pub reply_sport: u16,
}

/// The count in `conntrack -D`'s closing line (`... N flow entries have been deleted.`); 0 when absent.
fn deleted_count(stderr: &str) -> usize {
    stderr
        .lines()
        .filter_map(|l| l.split_once("): ")?.1.strip_suffix(" flow entries have been deleted.")?.parse::<usize>().ok())
        .sum()
}

impl Flow {
    /// The fields [`StaleFlows::matches`] looks at.
    pub fn key(&self) -> FlowKey {
        FlowKey {
            protocol: self.protocol,
            orig_dst: self.orig_dst,
            orig_dport: self.orig_dport,
            reply_src: self.reply_src,
            reply_sport: self.reply_sport,
        }
    }

    /// The entry's reply comes from where the client sent it: nothing translated its destination.
    fn untranslated(&self) -> bool {
        self.reply_src == self.orig_dst && self.reply_sport == self.orig_dport
    }
}

/// What a change of the Service table made stale.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StaleFlows {
    /// (protocol, address, port) of frontends that gained their first usable endpoint.
    gained: HashSet<(Protocol, IpAddr, u16)>,
    /// (protocol, node port) of NodePorts that gained their first usable endpoint.
    gained_node_ports: HashSet<(Protocol, u16)>,
    /// (protocol, frontend address, port, endpoint address, endpoint port) of removed UDP/SCTP endpoints.
    removed: HashSet<(Protocol, IpAddr, u16, IpAddr, u16)>,
    /// (protocol, node port, endpoint address, endpoint port) of removed UDP/SCTP endpoints behind NodePorts.
    removed_node_ports: HashSet<(Protocol, u16, IpAddr, u16)>,
}

fn usable(e: &EndpointInfo) -> bool {
    e.ready || (e.serving && e.terminating)
}

fn frontends(sp: &ServicePort) -> impl Iterator<Item = IpAddr> + '_ {
    sp.cluster_ips.iter().chain(&sp.external_ips).chain(&sp.load_balancer_ips).copied()
}

impl StaleFlows {
    /// What became stale going from `prev` (what the kernel had; `None` on the first sync, when any flow may
    /// predate the rules) to `next` (what was just applied).
    pub fn between(prev: Option<&ServiceTable>, next: &ServiceTable) -> Self {
        let mut out = StaleFlows::default();
        // Frontends that had a usable endpoint before, and the endpoints behind each (UDP/SCTP only).
        let mut served: HashSet<(Protocol, IpAddr, u16)> = HashSet::new();
        let mut served_node_ports: HashSet<(Protocol, u16)> = HashSet::new();
        let mut before: HashSet<(Protocol, IpAddr, u16, IpAddr, u16)> = HashSet::new();
        let mut before_node_ports: HashSet<(Protocol, u16, IpAddr, u16)> = HashSet::new();
        for sp in prev.iter().flat_map(|t| &t.ports) {
            let proto = sp.name.protocol;
            let eps: Vec<&EndpointInfo> = sp.endpoints.iter().filter(|e| usable(e)).collect();
            if eps.is_empty() {
                continue;
            }
            for ip in frontends(sp) {
                served.insert((proto, ip, sp.port));
                if proto != Protocol::Tcp {
                    before.extend(eps.iter().map(|e| (proto, ip, sp.port, e.ip, e.port)));
                }
            }
            if let Some(np) = sp.node_port {
                served_node_ports.insert((proto, np));
                if proto != Protocol::Tcp {
                    before_node_ports.extend(eps.iter().map(|e| (proto, np, e.ip, e.port)));
                }
            }
        }
        let mut after: HashSet<(Protocol, IpAddr, u16, IpAddr, u16)> = HashSet::new();
        let mut after_node_ports: HashSet<(Protocol, u16, IpAddr, u16)> = HashSet::new();
        for sp in &next.ports {
            let proto = sp.name.protocol;
            let eps: Vec<&EndpointInfo> = sp.endpoints.iter().filter(|e| usable(e)).collect();
            if eps.is_empty() {
                continue;
            }
            for ip in frontends(sp) {
                if !served.contains(&(proto, ip, sp.port)) {
                    out.gained.insert((proto, ip, sp.port));
                }
                after.extend(eps.iter().map(|e| (proto, ip, sp.port, e.ip, e.port)));
            }
            if let Some(np) = sp.node_port {
                // A TCP NodePort's untranslated flows are to the node's own address, where a local listener
                // may legitimately answer: only UDP and SCTP NodePorts are cleaned, as kube-proxy does.
                if proto != Protocol::Tcp && !served_node_ports.contains(&(proto, np)) {
                    out.gained_node_ports.insert((proto, np));
                }
                after_node_ports.extend(eps.iter().map(|e| (proto, np, e.ip, e.port)));
            }
        }
        out.removed = before.difference(&after).copied().collect();
        out.removed_node_ports = before_node_ports.difference(&after_node_ports).copied().collect();
        out
    }

    /// Nothing to look for: the conntrack table need not be read.
    pub fn is_empty(&self) -> bool {
        self.gained.is_empty()
            && self.gained_node_ports.is_empty()
            && self.removed.is_empty()
            && self.removed_node_ports.is_empty()
    }

    /// Whether `flow` is stale by these changes.
    pub fn matches(&self, flow: &Flow) -> bool {
        let p = flow.protocol;
        if flow.untranslated() {
            return self.gained.contains(&(p, flow.orig_dst, flow.orig_dport))
                || self.gained_node_ports.contains(&(p, flow.orig_dport));
        }
        self.removed.contains(&(p, flow.orig_dst, flow.orig_dport, flow.reply_src, flow.reply_sport))
            || self.removed_node_ports.contains(&(p, flow.orig_dport, flow.reply_src, flow.reply_sport))
    }
}

/// The flows of `conntrack -L` output (with or without `-o extended`). Lines that are not TCP, UDP or SCTP
/// (ICMP has no ports) or that do not parse are skipped: clean-up is best effort, never a reason to fail a sync.
pub fn parse_flows(text: &str) -> Vec<Flow> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Flow> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let protocol = tokens.iter().take(3).find_map(|t| match *t {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        "sctp" => Some(Protocol::Sctp),
        _ => None,
    })?;
    // The first src/dst/sport/dport are the original direction, the second the reply.
    let (mut src, mut dst, mut sport, mut dport) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for t in &tokens {
        let Some((k, v)) = t.split_once('=') else { continue };
        match k {
            "src" => src.push(v.parse::<IpAddr>().ok()?),
            "dst" => dst.push(v.parse::<IpAddr>().ok()?),
            "sport" => sport.push(v.parse::<u16>().ok()?),
            "dport" => dport.push(v.parse::<u16>().ok()?),
            _ => {}
        }
    }
    if src.len() != 2 || dst.len() != 2 || sport.len() != 2 || dport.len() != 2 {
        return None;
    }
    Some(Flow {
        protocol,
        orig_src: src[0],
        orig_dst: dst[0],
        orig_sport: sport[0],
        orig_dport: dport[0],
        reply_src: src[1],
        reply_sport: sport[1],
    })
}

/// Errors running `conntrack`.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} -L failed: {stderr}")]
    List { program: String, stderr: String },
}

/// The `conntrack` program (conntrack-tools), run in the agent's network namespace.
#[derive(Clone, Debug)]
pub struct ConntrackTool {
    pub program: PathBuf,
}

impl Default for ConntrackTool {
    fn default() -> Self {
        Self { program: "conntrack".into() }
    }
}

impl ConntrackTool {
    /// Deletes the flows of both families that `stale` matches; returns how many were deleted. A flow that is
    /// gone by the time it is deleted is not an error.
    pub fn clean(&self, stale: &StaleFlows) -> Result<usize, ConntrackError> {
        if stale.is_empty() {
            return Ok(0);
        }
        let program = self.program.display().to_string();
        let mut deleted = 0;
        for family in ["ipv4", "ipv6"] {
            let out = Command::new(&self.program)
                .args(["-L", "-f", family])
                .output()
                .map_err(|source| ConntrackError::Spawn { program: program.clone(), source })?;
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
                // A kernel without IPv6 conntrack is not an error for the IPv4 half.
                if family == "ipv6" {
                    continue;
                }
                return Err(ConntrackError::List { program, stderr });
            }
            // Whether a flow is stale depends only on its key, so one filtered delete per key removes exactly the
            // stale flows: a handful of `conntrack` runs even when thousands of clients talked to a removed
            // endpoint (a restarted DNS pod), instead of one run per flow.
            let keys: BTreeSet<FlowKey> = parse_flows(&String::from_utf8_lossy(&out.stdout))
                .iter()
                .filter(|f| stale.matches(f))
                .map(Flow::key)
                .collect();
            for k in keys {
                let out = Command::new(&self.program)
                    .args(["-D", "-f", family, "-p", k.protocol.as_lower()])
                    .args(["--orig-dst", &k.orig_dst.to_string(), "--orig-port-dst", &k.orig_dport.to_string()])
                    .args(["--reply-src", &k.reply_src.to_string(), "--reply-port-src", &k.reply_sport.to_string()])
                    .output()
                    .map_err(|source| ConntrackError::Spawn { program: program.clone(), source })?;
                // Exit status 1 with "0 flow entries have been deleted": they ended meanwhile.
                deleted += deleted_count(&String::from_utf8_lossy(&out.stderr));
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_model::ServicePortName;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn ep(addr: &str, ready: bool) -> EndpointInfo {
        EndpointInfo { ready, serving: ready, ..EndpointInfo::ready(ip(addr), 8080, None) }
    }

    fn port(proto: Protocol, eps: Vec<EndpointInfo>) -> ServicePort {
        ServicePort {
            node_port: Some(30080),
            external_ips: vec![ip("192.0.2.7")],
            endpoints: eps,
            ..ServicePort::new(ServicePortName::new("default", "svc", "p", proto), ip("10.96.0.20"), 80)
        }
    }

    fn table(ports: Vec<ServicePort>) -> ServiceTable {
        ServiceTable { ports }
    }

    fn flow(proto: Protocol, dst: &str, dport: u16, reply_src: &str, reply_sport: u16) -> Flow {
        Flow {
            protocol: proto,
            orig_src: ip("10.244.2.2"),
            orig_dst: ip(dst),
            orig_sport: 33480,
            orig_dport: dport,
            reply_src: ip(reply_src),
            reply_sport,
        }
    }

    #[test]
    fn parses_both_output_formats_and_skips_what_has_no_ports() {
        let text = "\
ipv4     2 tcp      6 106 SYN_SENT src=10.244.2.2 dst=10.96.0.20 sport=33480 dport=80 [UNREPLIED] src=10.96.0.20 dst=172.18.0.4 sport=80 dport=33480 mark=0 use=1
udp      17 29 src=10.244.1.3 dst=10.96.0.10 sport=5353 dport=53 src=10.244.0.5 dst=10.244.1.3 sport=53 dport=5353 [ASSURED] mark=0 use=1
ipv4     2 icmp     1 29 src=10.244.2.2 dst=10.96.0.20 type=8 code=0 id=7 [UNREPLIED] src=10.96.0.20 dst=10.244.2.2 type=0 code=0 id=7 mark=0 use=1
ipv4     2 unknown  2 587 src=10.244.2.1 dst=224.0.0.22 [UNREPLIED] src=224.0.0.22 dst=10.244.2.1 mark=0 use=1
tcp      6 1 garbage src=nonsense
conntrack v1.4.7 (conntrack-tools): 5 flow entries have been shown.
";
        let flows = parse_flows(text);
        assert_eq!(
            flows,
            vec![
                Flow {
                    protocol: Protocol::Tcp,
                    orig_src: ip("10.244.2.2"),
                    orig_dst: ip("10.96.0.20"),
                    orig_sport: 33480,
                    orig_dport: 80,
                    reply_src: ip("10.96.0.20"),
                    reply_sport: 80,
                },
                Flow {
                    protocol: Protocol::Udp,
                    orig_src: ip("10.244.1.3"),
                    orig_dst: ip("10.96.0.10"),
                    orig_sport: 5353,
                    orig_dport: 53,
                    reply_src: ip("10.244.0.5"),
                    reply_sport: 53,
                },
            ]
        );
        assert!(flows[0].untranslated() && !flows[1].untranslated());
    }

    #[test]
    fn stale_flows_by_change() {
        use Protocol::{Tcp, Udp};
        let a = || ep("10.244.1.2", true);
        let b = || ep("10.244.2.3", true);
        // (what, prev, next, flow, stale?)
        let cases: Vec<(&str, Option<ServiceTable>, ServiceTable, Flow, bool)> = vec![
            (
                "first sync: an untranslated TCP flow to a ClusterIP that has endpoints",
                None,
                table(vec![port(Tcp, vec![a()])]),
                flow(Tcp, "10.96.0.20", 80, "10.96.0.20", 80),
                true,
            ),
            (
                "a Service created after the flow: untranslated flow to its external IP",
                Some(table(vec![])),
                table(vec![port(Tcp, vec![a()])]),
                flow(Tcp, "192.0.2.7", 80, "192.0.2.7", 80),
                true,
            ),
            (
                "no endpoints to endpoints (UDP)",
                Some(table(vec![port(Udp, vec![ep("10.244.1.2", false)])])),
                table(vec![port(Udp, vec![a()])]),
                flow(Udp, "10.96.0.20", 80, "10.96.0.20", 80),
                true,
            ),
            (
                "UDP NodePort gained endpoints: untranslated flow to the node",
                Some(table(vec![port(Udp, vec![])])),
                table(vec![port(Udp, vec![a()])]),
                flow(Udp, "172.18.0.4", 30080, "172.18.0.4", 30080),
                true,
            ),
            (
                "TCP NodePort gained endpoints: a local listener may own that flow",
                Some(table(vec![port(Tcp, vec![])])),
                table(vec![port(Tcp, vec![a()])]),
                flow(Tcp, "172.18.0.4", 30080, "172.18.0.4", 30080),
                false,
            ),
            (
                "already served: an untranslated flow is someone else's business",
                Some(table(vec![port(Tcp, vec![a()])])),
                table(vec![port(Tcp, vec![a(), b()])]),
                flow(Tcp, "10.96.0.20", 80, "10.96.0.20", 80),
                false,
            ),
            (
                "a translated TCP flow to a new Service's address is not touched",
                None,
                table(vec![port(Tcp, vec![a()])]),
                flow(Tcp, "10.96.0.20", 80, "10.244.1.2", 8080),
                false,
            ),
            (
                "UDP endpoint removed: flows DNATed to it",
                Some(table(vec![port(Udp, vec![a(), b()])])),
                table(vec![port(Udp, vec![b()])]),
                flow(Udp, "10.96.0.20", 80, "10.244.1.2", 8080),
                true,
            ),
            (
                "UDP endpoint removed: flows to the one that stays are kept",
                Some(table(vec![port(Udp, vec![a(), b()])])),
                table(vec![port(Udp, vec![b()])]),
                flow(Udp, "10.96.0.20", 80, "10.244.2.3", 8080),
                false,
            ),
            (
                "UDP endpoint turned not ready behind a NodePort",
                Some(table(vec![port(Udp, vec![a(), b()])])),
                table(vec![port(Udp, vec![ep("10.244.1.2", false), b()])]),
                flow(Udp, "172.18.0.4", 30080, "10.244.1.2", 8080),
                true,
            ),
            (
                "TCP endpoint removed: its flows end with it, as with kube-proxy",
                Some(table(vec![port(Tcp, vec![a(), b()])])),
                table(vec![port(Tcp, vec![b()])]),
                flow(Tcp, "10.96.0.20", 80, "10.244.1.2", 8080),
                false,
            ),
            (
                "whole UDP Service deleted: its endpoints' flows go",
                Some(table(vec![port(Udp, vec![a()])])),
                table(vec![]),
                flow(Udp, "10.96.0.20", 80, "10.244.1.2", 8080),
                true,
            ),
            (
                "another port of the same address is not touched",
                None,
                table(vec![port(Tcp, vec![a()])]),
                flow(Tcp, "10.96.0.20", 81, "10.96.0.20", 81),
                false,
            ),
            (
                "same address and port, other protocol",
                None,
                table(vec![port(Tcp, vec![a()])]),
                flow(Udp, "10.96.0.20", 80, "10.96.0.20", 80),
                false,
            ),
        ];
        for (what, prev, next, f, want) in cases {
            let stale = StaleFlows::between(prev.as_ref(), &next);
            assert_eq!(stale.matches(&f), want, "{what}: {stale:?}");
        }
    }

    #[test]
    fn counts_what_conntrack_says_it_deleted() {
        assert_eq!(deleted_count("conntrack v1.4.7 (conntrack-tools): 3 flow entries have been deleted.\n"), 3);
        assert_eq!(deleted_count("conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n"), 0);
        assert_eq!(deleted_count("conntrack v1.4.7 (conntrack-tools): Operation not permitted\n"), 0);
    }

    #[test]
    fn nothing_changed_means_nothing_to_read() {
        let t = table(vec![port(Protocol::Udp, vec![ep("10.244.1.2", true)])]);
        assert!(StaleFlows::between(Some(&t), &t).is_empty());
        assert!(!StaleFlows::between(None, &t).is_empty());
        assert!(StaleFlows::between(None, &table(vec![])).is_empty());
    }
}
