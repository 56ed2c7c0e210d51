//! The service and node tables the node agent renders into iptables rules and routes.
//!
//! One [`ServicePort`] per (Service, port), as kube-proxy keys its chains, with its endpoints already merged from
//! every EndpointSlice of the Service and matched to the port by name. Endpoint *selection* (ready first, then
//! serving+terminating; traffic policies) is left to the renderer, which needs the conditions to do it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

/// All service ports the node agent programs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceTable {
    /// Sorted by name; unique by name.
    pub ports: Vec<ServicePort>,
}

/// Transport protocol of a Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// Lowercase, as iptables `-p` and kube-proxy's chain-name hash input spell it.
    pub fn as_lower(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// `namespace/name:portName` plus protocol: kube-proxy's `ServicePortName`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServicePortName {
    pub namespace: String,
    pub name: String,
    /// The port's name; empty for a Service with a single unnamed port.
    pub port: String,
    pub protocol: Protocol,
}

impl ServicePortName {
    /// `namespace/name:port` over `protocol`.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        port: impl Into<String>,
        protocol: Protocol,
    ) -> Self {
        Self { namespace: namespace.into(), name: name.into(), port: port.into(), protocol }
    }
}

impl fmt::Display for ServicePortName {
    /// `ns/name:port`, or `ns/name` when the port is unnamed — the form kube-proxy puts in rule comments.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port.is_empty() {
            write!(f, "{}/{}", self.namespace, self.name)
        } else {
            write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
        }
    }
}

/// Cluster or Local traffic policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

/// One port of one Service, with everything needed to render its chains.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    pub name: ServicePortName,
    /// `spec.clusterIPs` (empty for headless Services, which get no rules).
    pub cluster_ips: Vec<IpAddr>,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
    #[serde(default)]
    pub external_ips: Vec<IpAddr>,
    /// From `status.loadBalancer.ingress[].ip` (left empty for `loadBalancerClass: causeway.dev/proxy`).
    #[serde(default)]
    pub load_balancer_ips: Vec<IpAddr>,
    /// `spec.loadBalancerSourceRanges`, as CIDR strings already validated.
    #[serde(default)]
    pub load_balancer_source_ranges: Vec<String>,
    /// `sessionAffinity: ClientIP` with this timeout in seconds; `None` for no affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_timeout: Option<u32>,
    #[serde(default)]
    pub external_traffic_policy: TrafficPolicy,
    #[serde(default)]
    pub internal_traffic_policy: TrafficPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_node_port: Option<u16>,
    /// Every endpoint of every slice of the Service that carries this port, deduplicated, sorted by (ip, port).
    pub endpoints: Vec<EndpointInfo>,
}

impl ServicePort {
    /// A ClusterIP-only port with no endpoints and every option at its default (Cluster policies, no NodePort,
    /// no affinity): the starting point for tools, benchmarks and tests, which set what they need with struct
    /// update syntax.
    pub fn new(name: ServicePortName, cluster_ip: IpAddr, port: u16) -> Self {
        Self {
            name,
            cluster_ips: vec![cluster_ip],
            port,
            node_port: None,
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            load_balancer_source_ranges: Vec::new(),
            session_affinity_timeout: None,
            external_traffic_policy: TrafficPolicy::Cluster,
            internal_traffic_policy: TrafficPolicy::Cluster,
            health_check_node_port: None,
            endpoints: Vec::new(),
        }
    }
}

/// One endpoint of a service port with its conditions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EndpointInfo {
    pub ip: IpAddr,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

impl EndpointInfo {
    /// A ready, serving, not terminating endpoint on `node` (no zone).
    pub fn ready(ip: IpAddr, port: u16, node: Option<&str>) -> Self {
        Self {
            ip,
            port,
            node_name: node.map(str::to_owned),
            zone: None,
            ready: true,
            serving: true,
            terminating: false,
        }
    }
}

/// All Nodes of the cluster, as the node agent needs them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeTable {
    /// Sorted by name.
    pub nodes: Vec<NodeInfo>,
}

/// One Node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    /// `spec.podCIDRs` (or `spec.podCIDR`), validated CIDR strings.
    pub pod_cidrs: Vec<String>,
    /// `status.addresses` of type InternalIP.
    pub internal_ips: Vec<IpAddr>,
    /// The `Ready` condition is `True` (a Node with no conditions, as in a manifests directory, counts as ready).
    pub ready: bool,
    /// Labels, for LoadBalancer eligibility and topology.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}
