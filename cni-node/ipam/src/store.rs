//! The reservation store interface, shaped after host-local's `backend.Store`.
//!
//! Implementations: [`crate::disk::DiskStore`] (the on-disk, flock'd format host-local uses) and
//! [`crate::fake::FakeStore`] (in memory, for allocator tests). A store value represents a *locked* store:
//! the disk store takes its exclusive lock when opened and drops it with the value, so every method runs
//! under the lock.

use std::net::IpAddr;

use crate::error::StoreError;

/// Who holds an address: a container id and, except for legacy reservations, an interface name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// `CNI_CONTAINERID`.
    pub id: String,
    /// `CNI_IFNAME`; `None` for legacy files that hold only the container id.
    pub ifname: Option<String>,
}

/// One reserved address and its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The address.
    pub ip: IpAddr,
    /// Its holder.
    pub owner: Owner,
}

/// A locked reservation store.
pub trait Store {
    /// Reserve `ip` for `(id, ifname)` unless it is taken; on success remember it as the last reserved
    /// address of range set `range_id`. Returns whether the address was free.
    fn reserve(&mut self, id: &str, ifname: &str, ip: IpAddr, range_id: &str) -> Result<bool, StoreError>;
    /// The last address reserved in range set `range_id`.
    fn last_reserved_ip(&self, range_id: &str) -> Result<Option<IpAddr>, StoreError>;
    /// Drop the reservation of `ip`, whoever holds it (used to roll back our own reservations).
    fn release(&mut self, ip: IpAddr) -> Result<(), StoreError>;
    /// Drop every reservation of `(id, ifname)`; if there is none, those of legacy id-only files. Returns
    /// the released addresses; releasing nothing is success.
    fn release_by_id(&mut self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, StoreError>;
    /// Addresses held by `(id, ifname)` (or, if none, by a legacy reservation of `id`).
    fn get_by_id(&self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, StoreError>;
    /// Who holds `ip`, if anyone.
    fn owner(&self, ip: IpAddr) -> Result<Option<Owner>, StoreError>;
    /// Every reservation in the store.
    fn list(&self) -> Result<Vec<Reservation>, StoreError>;
}

/// The content host-local writes into a reservation file: `id` + CRLF + `ifname`, no trailing newline.
pub fn owner_content(id: &str, ifname: &str) -> String {
    format!("{}\r\n{}", id.trim(), ifname)
}

/// Parse a reservation file's content (host-local trims surrounding whitespace before comparing).
pub fn parse_owner(content: &str) -> Owner {
    let t = content.trim();
    match t.split_once("\r\n") {
        Some((id, ifname)) => Owner { id: id.to_string(), ifname: Some(ifname.to_string()) },
        None => Owner { id: t.to_string(), ifname: None },
    }
}

/// Which reservations `release_by_id` / `get_by_id` select: exact `(id, ifname)` matches, or, when there are
/// none, legacy id-only ones. Shared by both store implementations.
pub fn select_owned<'a>(all: &'a [Reservation], id: &str, ifname: &str) -> Vec<&'a Reservation> {
    let exact: Vec<&Reservation> =
        all.iter().filter(|r| r.owner.id == id.trim() && r.owner.ifname.as_deref() == Some(ifname)).collect();
    if !exact.is_empty() {
        return exact;
    }
    all.iter().filter(|r| r.owner.id == id.trim() && r.owner.ifname.is_none()).collect()
}
