//! Which node announces an address: a stateless rendezvous hash over the eligible nodes.

use causeway_translate::{Index, SERVICE_NAME_LABEL};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// Nodes carrying this label (any value) never announce LoadBalancer addresses, as for cloud load balancers.
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// The weight of `node` for `address`: the first 8 bytes of SHA-256(`node` ‖ 0 ‖ address octets), big-endian.
///
/// SHA-256 rather than `std`'s hasher because every node must compute the same weight, across processes and
/// across Rust versions during a rolling upgrade.
pub fn weight(node: &str, address: IpAddr) -> u64 {
    let mut h = Sha256::new();
    h.update(node.as_bytes());
    h.update([0u8]);
    match address {
        IpAddr::V4(a) => h.update(a.octets()),
        IpAddr::V6(a) => h.update(a.octets()),
    }
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_be_bytes(first)
}

/// The node that owns (announces) `address`: the eligible node with the highest [`weight`] (rendezvous or
/// highest-random-weight hashing; a tie goes to the smaller name). `None` when no node is eligible.
///
/// Stateless: every node computes the same owner from the same eligible set, with no Lease and no election.
/// When a node leaves the set, only the addresses it owned move (each to its own runner-up); when one joins, it
/// takes only the addresses for which it now weighs most.
pub fn owner_node<'a, I, S>(address: IpAddr, eligible_nodes: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a S>,
    S: AsRef<str> + ?Sized + 'a,
{
    eligible_nodes
        .into_iter()
        .map(AsRef::as_ref)
        .map(|n| (weight(n, address), std::cmp::Reverse(n)))
        .max()
        .map(|(_, std::cmp::Reverse(n))| n)
}

/// Nodes that may announce any address: Ready (a Node with no conditions, as in a manifests directory, counts
/// as Ready) and not labelled [`EXCLUDE_LABEL`].
pub fn ready_nodes(index: &Index) -> BTreeSet<String> {
    index
        .nodes()
        .filter(|n| {
            let ready = match n.status.as_ref().and_then(|s| s.conditions.as_deref()) {
                None | Some([]) => true,
                Some(conds) => conds.iter().any(|c| c.type_ == "Ready" && c.status == "True"),
            };
            let excluded = n.metadata.labels.as_ref().is_some_and(|l| l.contains_key(EXCLUDE_LABEL));
            ready && !excluded
        })
        .filter_map(|n| n.metadata.name.clone())
        .collect()
}

/// Nodes with a ready endpoint of Service `namespace/name` (EndpointSlice endpoints with `nodeName` and
/// `conditions.ready` true or unset).
pub fn local_endpoint_nodes(index: &Index, namespace: &str, name: &str) -> BTreeSet<String> {
    index
        .slices_for_service(namespace, name)
        .filter(|s| s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)).is_some())
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter_map(|e| e.node_name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn nodes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    fn addresses(n: u32) -> Vec<IpAddr> {
        (0..n).map(|i| IpAddr::V4(std::net::Ipv4Addr::from(0xac12_0000 + i))).collect()
    }

    #[test]
    fn weight_vector_is_stable() {
        // Pinned (computed independently with Python's hashlib) so that a change of hash, which would move every
        // address during a rolling upgrade, fails loudly.
        assert_eq!(weight("node-a", ip("172.18.255.200")), 0x54fa_efdb_ab06_18b1);
        assert_eq!(weight("node-b", ip("172.18.255.200")), 0x3358_fb55_2281_006b);
        assert_eq!(owner_node(ip("172.18.255.200"), ["node-b", "node-a"].iter().copied()), Some("node-a"));
    }

    #[test]
    fn no_eligible_node_no_owner() {
        let none: Vec<String> = Vec::new();
        assert_eq!(owner_node(ip("10.0.0.1"), &none), None);
        assert_eq!(owner_node(ip("10.0.0.1"), ["only"].iter().copied()), Some("only"));
    }

    #[test]
    fn owner_does_not_depend_on_input_order() {
        let mut ns = nodes(5);
        for a in addresses(50) {
            let first = owner_node(a, &ns).map(str::to_owned);
            ns.reverse();
            assert_eq!(owner_node(a, &ns).map(str::to_owned), first);
            ns.rotate_left(2);
            assert_eq!(owner_node(a, &ns).map(str::to_owned), first);
        }
    }

    #[test]
    fn losing_a_node_moves_only_its_addresses() {
        let all = nodes(5);
        let addrs = addresses(400);
        for gone in &all {
            let rest: Vec<&String> = all.iter().filter(|n| *n != gone).collect();
            for &a in &addrs {
                let before = owner_node(a, &all).expect("owner");
                let after = owner_node(a, rest.iter().copied()).expect("owner");
                if before != gone {
                    assert_eq!(before, after, "{a} moved although its owner {before} stayed");
                } else {
                    assert_ne!(after, gone.as_str());
                }
            }
        }
    }

    #[test]
    fn a_joining_node_takes_only_addresses_it_now_wins() {
        let all = nodes(4);
        let mut more = all.clone();
        more.push("node-new".to_owned());
        for a in addresses(400) {
            let before = owner_node(a, &all).expect("owner");
            let after = owner_node(a, &more).expect("owner");
            assert!(after == before || after == "node-new", "{a}: {before} -> {after}");
        }
    }

    #[test]
    fn ownership_spreads_over_nodes() {
        let all = nodes(4);
        let mut count = std::collections::BTreeMap::<&str, usize>::new();
        for a in addresses(4000) {
            *count.entry(owner_node(a, &all).expect("owner")).or_default() += 1;
        }
        // 1000 expected each; a fair hash stays well within ±20 %.
        for (n, c) in &count {
            assert!((800..=1200).contains(c), "{n} owns {c} of 4000");
        }
        assert_eq!(count.len(), 4);
    }
}
