//! Allocation, release and garbage collection over any [`Store`], as host-local does them.
//!
//! These functions hold no lock themselves: the caller passes a locked store (for the disk store, the
//! value returned by [`crate::disk::DiskStore::lock`]), so one call is one critical section.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::Ipam;
use crate::error::{AllocError, StoreError};
use crate::store::Store;

/// One allocated address: `address` carries the subnet's prefix length, `gateway` is the range's gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Address with prefix, e.g. `10.244.1.5/24`.
    pub address: IpNet,
    /// Gateway of the range the address came from.
    pub gateway: IpAddr,
}

/// Allocate one address per range set for `(id, ifname)`.
///
/// Like host-local: an attachment that already holds an address in a set is refused (duplicate), the
/// search starts after the set's last reserved address, and a failure in a later set releases what
/// earlier sets reserved, so the call reserves all or nothing.
pub fn allocate(store: &mut dyn Store, ipam: &Ipam, id: &str, ifname: &str) -> Result<Vec<IpConfig>, AllocError> {
    let held = store.get_by_id(id, ifname)?;
    let mut out: Vec<IpConfig> = Vec::new();
    for idx in 0..ipam.sets.len() {
        let result = allocate_in_set(store, ipam, idx, &held, id, ifname);
        match result {
            Ok(ipc) => out.push(ipc),
            Err(e) => {
                for ipc in &out {
                    // Best effort: the original error is the one to report.
                    let _ = store.release(ipc.address.addr());
                }
                return Err(e);
            }
        }
    }
    Ok(out)
}

fn allocate_in_set(
    store: &mut dyn Store,
    ipam: &Ipam,
    idx: usize,
    held: &[IpAddr],
    id: &str,
    ifname: &str,
) -> Result<IpConfig, AllocError> {
    let set = &ipam.sets[idx];
    if let Some(ip) = held.iter().find(|ip| set.contains(**ip)) {
        return Err(AllocError::Duplicate { ip: *ip, id: id.to_string() });
    }
    let range_id = idx.to_string();
    let last = store.last_reserved_ip(&range_id)?;
    for (ridx, ip) in set.iter_from(last) {
        if store.reserve(id, ifname, ip, &range_id)? {
            let r = &set.0[ridx];
            let address = IpNet::new(ip, r.subnet.prefix_len())
                .map_err(|_| AllocError::Exhausted { field: format!("ipam.ranges[{idx}]"), set: set.to_string() })?;
            return Ok(IpConfig { address, gateway: r.gateway });
        }
    }
    Err(AllocError::Exhausted { field: format!("ipam.ranges[{idx}]"), set: set.to_string() })
}

/// Release every address of `(id, ifname)`. Releasing nothing is success.
pub fn release(store: &mut dyn Store, id: &str, ifname: &str) -> Result<Vec<IpAddr>, StoreError> {
    store.release_by_id(id, ifname)
}

/// Release `(id, ifname)` knowing which addresses it should hold (DEL's `prevResult`): when the hint names
/// one address per range set and each is held by this attachment, only those files are touched; otherwise
/// this falls back to [`release`], which reads every reservation. Same outcome, less I/O on busy nodes.
pub fn release_hinted(
    store: &mut dyn Store,
    ipam: &Ipam,
    id: &str,
    ifname: &str,
    hint: &[IpAddr],
) -> Result<Vec<IpAddr>, StoreError> {
    let mut mine = Vec::new();
    for ip in hint {
        match store.owner(*ip)? {
            Some(o) if o.id == id.trim() && o.ifname.as_deref() == Some(ifname) => mine.push(*ip),
            _ => {}
        }
    }
    // Allocation gives an attachment at most one address per set, so a full match covers everything.
    let covers_all = ipam.sets.iter().all(|set| mine.iter().filter(|ip| set.contains(**ip)).count() == 1);
    if mine.len() != ipam.sets.len() || !covers_all {
        return release(store, id, ifname);
    }
    for ip in &mine {
        store.release(*ip)?;
    }
    Ok(mine)
}

/// Addresses `(id, ifname)` holds inside the configured sets (IPAM CHECK).
pub fn held(store: &dyn Store, ipam: &Ipam, id: &str, ifname: &str) -> Result<Vec<IpAddr>, StoreError> {
    Ok(store.get_by_id(id, ifname)?.into_iter().filter(|ip| ipam.sets.iter().any(|s| s.contains(*ip))).collect())
}

/// Release every reservation whose attachment is not in `valid` (CNI GC). A legacy id-only reservation is
/// kept when any valid attachment has that container id. Returns the released addresses.
pub fn gc(store: &mut dyn Store, valid: &[(String, String)]) -> Result<Vec<IpAddr>, StoreError> {
    let pairs: HashSet<(&str, &str)> = valid.iter().map(|(i, n)| (i.as_str(), n.as_str())).collect();
    let ids: HashSet<&str> = valid.iter().map(|(i, _)| i.as_str()).collect();
    let mut released = Vec::new();
    for r in store.list()? {
        let keep = match &r.owner.ifname {
            Some(ifname) => pairs.contains(&(r.owner.id.as_str(), ifname.as_str())),
            None => ids.contains(r.owner.id.as_str()),
        };
        if !keep {
            store.release(r.ip)?;
            released.push(r.ip);
        }
    }
    Ok(released)
}

/// Free candidate addresses per range set (for STATUS).
pub fn free_counts(store: &dyn Store, ipam: &Ipam) -> Result<Vec<u128>, StoreError> {
    let taken = store.list()?;
    Ok(ipam
        .sets
        .iter()
        .map(|set| {
            let used = taken
                .iter()
                .filter(|r| set.contains(r.ip) && set.range_for(r.ip).is_some_and(|(_, rg)| rg.gateway != r.ip))
                .count();
            set.size().saturating_sub(used as u128)
        })
        .collect())
}

#[cfg(test)]
mod tests;
