//! What the renderer needs to know about the node it renders for.

use ipnet::IpNet;
use std::net::IpAddr;

/// IP family of one ruleset (`iptables-restore` or `ip6tables-restore`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// Whether `ip` belongs to this family.
    pub fn has(self, ip: IpAddr) -> bool {
        matches!((self, ip), (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_)))
    }

    /// Whether `net` belongs to this family.
    pub fn has_net(self, net: &IpNet) -> bool {
        matches!((self, net), (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_)))
    }
}

/// The node the rules are rendered for, and the knobs kube-proxy exposes as flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCtx {
    /// This node's name: endpoints with this `nodeName` are local.
    pub node_name: String,
    pub family: Family,
    /// The cluster's pod CIDRs: the "local traffic" detector (`! -s <cidr> -j KUBE-MARK-MASQ`) and the egress
    /// masquerade exception. Only those of `family` are used.
    pub cluster_cidrs: Vec<IpNet>,
    /// This node's own addresses (used for `loadBalancerSourceRanges` that contain the node).
    pub node_ips: Vec<IpAddr>,
    /// The masquerade mark bit (kube-proxy default 14 → `0x4000`).
    pub masquerade_bit: u8,
    /// Append `--random-fully` to the service MASQUERADE rule.
    pub random_fully: bool,
    /// Accept NodePorts on 127.0.0.0/8 (IPv4 only; needs `route_localnet=1`). kube-proxy's default is true; ours
    /// is false, which adds `! -d 127.0.0.0/8` to the NodePort jump.
    pub localhost_nodeports: bool,
    /// Drop conntrack-INVALID forwarded packets (kube-proxy does unless `nf_conntrack_tcp_be_liberal` is set).
    pub drop_invalid: bool,
    /// Write the egress masquerade chain `CAUSEWAY-MASQ` (pod → outside the cluster CIDRs).
    pub egress_masquerade: bool,
}

impl NodeCtx {
    /// Defaults matching kube-proxy's, except `localhost_nodeports`.
    pub fn new(node_name: impl Into<String>, family: Family) -> Self {
        Self {
            node_name: node_name.into(),
            family,
            cluster_cidrs: Vec::new(),
            node_ips: Vec::new(),
            masquerade_bit: 14,
            random_fully: true,
            localhost_nodeports: false,
            drop_invalid: true,
            egress_masquerade: true,
        }
    }

    /// The masquerade mark as kube-proxy's tests and `iptables-save` print it, e.g. `0x4000`.
    pub fn mark(&self) -> String {
        format!("{:#x}", 1u32 << u32::from(self.masquerade_bit.min(31)))
    }

    /// Cluster CIDRs of this family.
    pub fn family_cidrs(&self) -> impl Iterator<Item = &IpNet> {
        self.cluster_cidrs.iter().filter(|n| self.family.has_net(n))
    }
}
