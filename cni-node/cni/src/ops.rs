//! The CNI operations: ADD, DEL, CHECK, STATUS, GC. Each takes the validated environment and
//! configuration and returns a result or a [`CniError`].
//!
//! ADD, in order (every step after IPAM registers its undo in a [`Rollback`]):
//!
//! ```text
//! IPAM allocate (store locked only for this step)
//! pod netns: refuse if CNI_IFNAME exists
//! host: bridge (create if absent, pinned MAC), gateway address (isGateway), ip_forward
//! host: one RTM_NEWLINK creates veth<hash> (up, on the bridge) + CNI_IFNAME inside the pod netns
//! host: hairpin on the bridge port
//! pod:  addresses, link up, lo up, routes
//! ```

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::os::fd::AsFd;

use causeway_ipam::{DiskStore, IpConfig, Store};
use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::conf::NetConf;
use crate::env::CniEnv;
use crate::error::{CniError, code};
use crate::netlink::{Link, Netlink};
use crate::netns::{NetNs, NetnsError};
use crate::result::{CniResult, Interface, IpEntry, Route};
use crate::rollback::Rollback;
use crate::version::CniVersion;

/// The host-side veth name of an attachment: `veth` + 8 hex digits of SHA-256(containerID, ifname), so
/// DEL can find it without state.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let mut h = Sha256::new();
    h.update(container_id.as_bytes());
    h.update(b"\0");
    h.update(ifname.as_bytes());
    let d = h.finalize();
    format!("veth{:02x}{:02x}{:02x}{:02x}", d[0], d[1], d[2], d[3])
}

// === ADD ===

/// ADD: create the attachment and return its result.
pub fn cmd_add(env: &CniEnv, conf: &NetConf) -> Result<CniResult, CniError> {
    let ns = NetNs::open(&env.netns, env.netns_override)?;
    // Open the pod-side socket on its own thread while IPAM and the host side proceed.
    let pending_pod = ns.netlink_async()?;
    let mut rollback = Rollback::default();

    let ips = {
        let mut store = DiskStore::lock(&conf.ipam.data_dir, &conf.name)?;
        causeway_ipam::allocate(&mut store, &conf.ipam, &env.container_id, &env.ifname)?
    };
    {
        let (dir, name) = (conf.ipam.data_dir.clone(), conf.name.clone());
        let addrs: Vec<IpAddr> = ips.iter().map(|c| c.address.addr()).collect();
        rollback.push(move || release_addresses(&dir, &name, &addrs));
    }

    let mut pod = pending_pod.wait()?;
    if pod.link_by_name(&env.ifname)?.is_some() {
        return Err(CniError::new(
            code::IFACE_EXISTS,
            format!("CNI_IFNAME: interface {} already exists in {}", env.ifname, env.netns),
        ));
    }

    let mut host = Netlink::open()?;
    let bridge = ensure_bridge(&mut host, conf)?;
    if conf.is_gateway {
        ensure_gateway(&mut host, conf, &bridge, &ips)?;
        enable_forwarding(&ips)?;
    }

    let veth = host_veth_name(&env.container_id, &env.ifname);
    let echoed = host.create_veth(&veth, &env.ifname, ns.file().as_fd(), conf.mtu, bridge.index).map_err(|e| {
        let err = CniError::from(e);
        if err.msg.contains("File exists") {
            err.with_details(format!("a link named {veth} exists on the host: a DEL for this attachment is pending"))
        } else {
            err
        }
    })?;
    {
        let veth = veth.clone();
        rollback.push(move || delete_host_link(&veth));
    }
    let host_link = match echoed {
        Some(l) => l,
        None => host
            .link_by_name(&veth)?
            .ok_or_else(|| CniError::new(code::INTERNAL, format!("host veth {veth} vanished after creation")))?,
    };
    if conf.hairpin {
        host.set_hairpin(host_link.index, true)?;
    }

    let cont = pod.link_by_name(&env.ifname)?.ok_or_else(|| {
        CniError::new(code::INTERNAL, format!("{} vanished from {} after creation", env.ifname, env.netns))
    })?;
    for ipc in &ips {
        pod.add_address(cont.index, ipc.address)?;
    }
    if !cont.up {
        pod.set_up(cont.index)?;
    }
    if let Some(lo) = pod.link_by_name("lo")?
        && !lo.up
    {
        pod.set_up(lo.index)?;
    }
    let routes = container_routes(conf, &ips);
    for r in &routes {
        let gw = r.gw.or_else(|| gateway_for(&ips, r.dst));
        match pod.add_route(r.dst, gw, cont.index) {
            Err(e) if e.is_exists() => {}
            other => other?,
        }
    }

    let result = CniResult {
        interfaces: vec![
            Interface { name: bridge.name.clone(), mac: bridge.mac.clone(), mtu: bridge.mtu, sandbox: None },
            Interface { name: veth, mac: host_link.mac.clone(), mtu: host_link.mtu, sandbox: None },
            Interface {
                name: env.ifname.clone(),
                mac: cont.mac.clone(),
                mtu: cont.mtu,
                sandbox: Some(env.netns.clone()),
            },
        ],
        ips: ips.iter().map(|c| IpEntry { address: c.address, gateway: Some(c.gateway), interface: Some(2) }).collect(),
        routes,
        dns: conf.dns.clone(),
    };
    let result = match &conf.prev_result {
        Some(prev) => result.chained_after(prev),
        None => result,
    };
    rollback.disarm();
    Ok(result)
}

/// The bridge, created (up, with a fixed random MAC and the configured MTU) if absent.
fn ensure_bridge(host: &mut Netlink, conf: &NetConf) -> Result<Link, CniError> {
    if let Some(link) = host.link_by_name(&conf.bridge)? {
        return check_is_bridge(link, conf);
    }
    match host.create_bridge(&conf.bridge, conf.mtu, random_mac()?) {
        // A parallel ADD created it first.
        Err(e) if e.is_exists() => {}
        other => other?,
    }
    let link = host
        .link_by_name(&conf.bridge)?
        .ok_or_else(|| CniError::new(code::INTERNAL, format!("bridge {} vanished after creation", conf.bridge)))?;
    check_is_bridge(link, conf)
}

fn check_is_bridge(link: Link, conf: &NetConf) -> Result<Link, CniError> {
    if link.kind.as_deref() != Some("bridge") {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!(
                "bridge: link {} exists and is not a bridge (kind {:?})",
                conf.bridge,
                link.kind.unwrap_or_default()
            ),
        ));
    }
    Ok(link)
}

/// Put each range's gateway on the bridge. Like the reference plugin, refuse a bridge that already has a
/// different IPv4 address.
fn ensure_gateway(host: &mut Netlink, conf: &NetConf, bridge: &Link, ips: &[IpConfig]) -> Result<(), CniError> {
    let existing = host.addresses(bridge.index)?;
    for ipc in ips {
        let want = IpNet::new(ipc.gateway, ipc.address.prefix_len())
            .map_err(|e| CniError::new(code::INTERNAL, format!("gateway {}: {e}", ipc.gateway)))?;
        if existing.contains(&want) {
            continue;
        }
        if let Some(other) = existing.iter().find(|a| a.addr().is_ipv4() && want.addr().is_ipv4()) {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!("bridge: {} already has an IP address {other} different from the gateway {want}", conf.bridge),
            ));
        }
        match host.add_address(bridge.index, want) {
            Err(e) if e.is_exists() => {}
            other => other?,
        }
    }
    Ok(())
}

/// `net.ipv4.ip_forward` / IPv6 `forwarding` for each family in use (written only when not yet 1).
fn enable_forwarding(ips: &[IpConfig]) -> Result<(), CniError> {
    let mut paths = BTreeSet::new();
    for ipc in ips {
        paths.insert(if ipc.address.addr().is_ipv4() {
            "/proc/sys/net/ipv4/ip_forward"
        } else {
            "/proc/sys/net/ipv6/conf/all/forwarding"
        });
    }
    for p in paths {
        let cur = std::fs::read_to_string(p).map_err(|e| CniError::new(code::IO, format!("read {p}: {e}")))?;
        if cur.trim() != "1" {
            std::fs::write(p, "1").map_err(|e| CniError::new(code::IO, format!("write {p}: {e}")))?;
        }
    }
    Ok(())
}

/// The routes to install: `ipam.routes`, plus a default route per family via its gateway when
/// `isDefaultGateway` and IPAM did not already give one.
fn container_routes(conf: &NetConf, ips: &[IpConfig]) -> Vec<Route> {
    let mut routes: Vec<Route> = conf.ipam.routes.iter().map(|r| Route { dst: r.dst, gw: r.gw }).collect();
    if conf.is_default_gateway {
        for ipc in ips {
            let v4 = ipc.address.addr().is_ipv4();
            let has_default = routes.iter().any(|r| r.dst.prefix_len() == 0 && r.dst.addr().is_ipv4() == v4);
            if !has_default {
                let dst = if v4 { IpNet::V4(Default::default()) } else { IpNet::V6(Default::default()) };
                routes.push(Route { dst, gw: Some(ipc.gateway) });
            }
        }
    }
    routes
}

fn gateway_for(ips: &[IpConfig], dst: IpNet) -> Option<IpAddr> {
    ips.iter().find(|c| c.address.addr().is_ipv4() == dst.addr().is_ipv4()).map(|c| c.gateway)
}

/// A random, locally administered unicast MAC.
fn random_mac() -> Result<[u8; 6], CniError> {
    use std::io::Read;
    let mut mac = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut mac))
        .map_err(|e| CniError::new(code::IO, format!("/dev/urandom: {e}")))?;
    mac[0] = (mac[0] & 0xfe) | 0x02;
    Ok(mac)
}

fn release_addresses(dir: &std::path::Path, name: &str, ips: &[IpAddr]) {
    if let Ok(mut store) = DiskStore::lock(dir, name) {
        for ip in ips {
            if let Err(e) = store.release(*ip) {
                eprintln!("causeway-cni: rollback: release {ip}: {e}");
            }
        }
    }
}

fn delete_host_link(name: &str) {
    let res = Netlink::open().and_then(|mut nl| match nl.link_by_name(name)? {
        Some(l) => nl.delete_link(l.index),
        None => Ok(()),
    });
    if let Err(e) = res {
        eprintln!("causeway-cni: rollback: delete {name}: {e}");
    }
}

// === DEL ===

/// DEL: remove the attachment; anything already gone (netns, link, address) is success.
///
/// The pair is removed from the host side when we can name the host end (from `prevResult`, else derived
/// from containerID and ifname): deleting either end of a veth deletes both, and the host side needs no
/// namespace switch. Only when no such host link exists do we look for `CNI_IFNAME` inside `CNI_NETNS`.
pub fn cmd_del(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let mut names: Vec<String> = conf
        .prev_result
        .iter()
        .flat_map(|r| r.interfaces.iter())
        .filter(|i| i.sandbox.is_none() && i.name != conf.bridge && i.name.starts_with("veth"))
        .map(|i| i.name.clone())
        .collect();
    let derived = host_veth_name(&env.container_id, &env.ifname);
    if !names.contains(&derived) {
        names.push(derived);
    }
    let mut host = Netlink::open()?;
    let mut deleted = false;
    for name in &names {
        if let Some(l) = host.link_by_name(name)?
            && l.kind.as_deref() == Some("veth")
        {
            host.delete_link(l.index)?;
            deleted = true;
        }
    }
    if !deleted && !env.netns.is_empty() {
        match NetNs::open(&env.netns, true) {
            Ok(ns) => {
                let mut pod = ns.netlink()?;
                if let Some(l) = pod.link_by_name(&env.ifname)? {
                    pod.delete_link(l.index)?;
                }
            }
            // Gone, or only an unmounted placeholder file left: nothing to remove inside it.
            Err(NetnsError::NotFound { .. }) | Err(NetnsError::Invalid { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let hint: Vec<IpAddr> = conf.prev_result.iter().flat_map(|r| r.ips.iter()).map(|ip| ip.address.addr()).collect();
    let mut store = DiskStore::lock(&conf.ipam.data_dir, &conf.name)?;
    causeway_ipam::release_hinted(&mut store, &conf.ipam, &env.container_id, &env.ifname, &hint)?;
    Ok(())
}

// === CHECK ===

/// CHECK: verify that what ADD reported (`prevResult`) still exists.
pub fn cmd_check(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    if conf.version < CniVersion::V0_4_0 {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("cniVersion {}: CHECK needs 0.4.0 or later", conf.version.as_str()),
        ));
    }
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(code::INVALID_CONFIG, "prevResult: required for CHECK"))?;
    let fail = |msg: String| CniError::new(code::CHECK_FAILED, msg);

    // IPAM: every address of ours in prevResult is still reserved for this attachment.
    {
        let store = DiskStore::lock(&conf.ipam.data_dir, &conf.name)?;
        let held = causeway_ipam::held(&store, &conf.ipam, &env.container_id, &env.ifname)?;
        for ip in &prev.ips {
            let a = ip.address.addr();
            if conf.ipam.sets.iter().any(|s| s.contains(a)) && !held.contains(&a) {
                return Err(fail(format!("ipam: {a} is not reserved for {}/{}", env.container_id, env.ifname)));
            }
        }
    }

    let mut host = Netlink::open()?;
    let bridge = host.link_by_name(&conf.bridge)?.ok_or_else(|| fail(format!("bridge {} is missing", conf.bridge)))?;
    let bridge = check_is_bridge(bridge, conf)?;
    if let Some(bi) = prev.interfaces.iter().find(|i| i.name == conf.bridge && i.sandbox.is_none())
        && bi.mac.is_some()
        && bi.mac != bridge.mac
    {
        return Err(fail(format!(
            "bridge {}: MAC {:?} differs from the result's {:?}",
            conf.bridge, bridge.mac, bi.mac
        )));
    }

    let ns = NetNs::open(&env.netns, env.netns_override)?;
    let mut pod = ns.netlink()?;
    let (cidx, ci) = prev
        .container_interface(&env.ifname)
        .ok_or_else(|| fail(format!("prevResult: no interface {} with a sandbox", env.ifname)))?;
    let cont = pod
        .link_by_name(&env.ifname)?
        .ok_or_else(|| fail(format!("interface {} is missing in {}", env.ifname, env.netns)))?;
    if cont.kind.as_deref() != Some("veth") {
        return Err(fail(format!("interface {} is not a veth", env.ifname)));
    }
    if ci.mac.is_some() && ci.mac != cont.mac {
        return Err(fail(format!(
            "interface {}: MAC {:?} differs from the result's {:?}",
            env.ifname, cont.mac, ci.mac
        )));
    }
    for hi in
        prev.interfaces.iter().filter(|i| i.sandbox.is_none() && i.name != conf.bridge && i.name.starts_with("veth"))
    {
        let l = host.link_by_name(&hi.name)?.ok_or_else(|| fail(format!("host interface {} is missing", hi.name)))?;
        if l.master != Some(bridge.index) {
            return Err(fail(format!("host interface {} is not a port of bridge {}", hi.name, conf.bridge)));
        }
        if conf.hairpin && l.hairpin != Some(true) {
            return Err(fail(format!("host interface {}: hairpin mode is off", hi.name)));
        }
    }
    let addrs = pod.addresses(cont.index)?;
    for ip in prev.ips.iter().filter(|ip| ip.interface.is_none_or(|i| i == cidx)) {
        if !addrs.contains(&ip.address) {
            return Err(fail(format!("address {} is missing on {}", ip.address, env.ifname)));
        }
    }
    let routes = pod.routes()?;
    for r in &prev.routes {
        let found = routes.iter().any(|k| k.dst == r.dst && (r.gw.is_none() || k.gw == r.gw));
        if !found {
            let via = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
            return Err(fail(format!("route {}{via} is missing in {}", r.dst, env.netns)));
        }
    }
    Ok(())
}

// === STATUS and GC ===

fn require_v110(conf: &NetConf, op: &str) -> Result<(), CniError> {
    if conf.version < CniVersion::V1_1_0 {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("cniVersion {}: {op} needs 1.1.0", conf.version.as_str()),
        ));
    }
    Ok(())
}

/// STATUS: ready when the store is usable, every range set has a free address and the bridge name is not
/// taken by a link of another kind. Failures are code 50.
pub fn cmd_status(conf: &NetConf) -> Result<(), CniError> {
    require_v110(conf, "STATUS")?;
    let unavailable = |msg: String| CniError::new(code::NOT_AVAILABLE, msg);
    let store =
        DiskStore::lock(&conf.ipam.data_dir, &conf.name).map_err(|e| unavailable(format!("ipam store: {e}")))?;
    let free = causeway_ipam::free_counts(&store, &conf.ipam).map_err(|e| unavailable(format!("ipam store: {e}")))?;
    if let Some(i) = free.iter().position(|n| *n == 0) {
        return Err(unavailable(format!("ipam.ranges[{i}]: no free address in {}", conf.ipam.sets[i])));
    }
    drop(store);
    let mut host = Netlink::open().map_err(|e| unavailable(e.to_string()))?;
    if let Some(l) = host.link_by_name(&conf.bridge).map_err(|e| unavailable(e.to_string()))? {
        check_is_bridge(l, conf).map_err(|e| unavailable(e.msg))?;
    }
    Ok(())
}

/// GC: release every reservation of this network whose attachment is not in `cni.dev/valid-attachments`.
/// An absent list means no attachment is valid: libcni omits the key when its caller passes no arguments
/// (cnitool's `gc` does exactly that).
pub fn cmd_gc(conf: &NetConf) -> Result<Vec<IpAddr>, CniError> {
    require_v110(conf, "GC")?;
    let valid = conf.valid_attachments.clone().unwrap_or_default();
    let mut store = DiskStore::lock(&conf.ipam.data_dir, &conf.name)?;
    Ok(causeway_ipam::gc(&mut store, &valid)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_name_is_stable_short_and_distinct() {
        let a = host_veth_name("abc", "eth0");
        assert_eq!(a, host_veth_name("abc", "eth0"));
        assert_eq!(a.len(), 12);
        assert!(a.starts_with("veth") && a[4..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, host_veth_name("abc", "eth1"));
        assert_ne!(a, host_veth_name("abd", "eth0"));
        // The separator keeps ("ab", "ceth0") and ("abc", "eth0") apart.
        assert_ne!(host_veth_name("ab", "ceth0"), a);
    }
}
