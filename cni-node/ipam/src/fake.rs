//! An in-memory [`Store`] for allocator tests.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::error::StoreError;
use crate::store::{Owner, Reservation, Store, select_owned};

/// In-memory store with the same semantics as the disk store.
#[derive(Debug, Default, Clone)]
pub struct FakeStore {
    /// Reservations by address.
    pub ips: BTreeMap<IpAddr, Owner>,
    /// `last_reserved_ip.<range id>`.
    pub last_reserved: HashMap<String, IpAddr>,
}

impl FakeStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for FakeStore {
    fn reserve(&mut self, id: &str, ifname: &str, ip: IpAddr, range_id: &str) -> Result<bool, StoreError> {
        if self.ips.contains_key(&ip) {
            return Ok(false);
        }
        self.ips.insert(ip, Owner { id: id.trim().to_string(), ifname: Some(ifname.to_string()) });
        self.last_reserved.insert(range_id.to_string(), ip);
        Ok(true)
    }

    fn last_reserved_ip(&self, range_id: &str) -> Result<Option<IpAddr>, StoreError> {
        Ok(self.last_reserved.get(range_id).copied())
    }

    fn release(&mut self, ip: IpAddr) -> Result<(), StoreError> {
        self.ips.remove(&ip);
        Ok(())
    }

    fn release_by_id(&mut self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, StoreError> {
        let all = self.list()?;
        let ips: Vec<IpAddr> = select_owned(&all, id, ifname).iter().map(|r| r.ip).collect();
        for ip in &ips {
            self.ips.remove(ip);
        }
        Ok(ips)
    }

    fn get_by_id(&self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, StoreError> {
        let all = self.list()?;
        Ok(select_owned(&all, id, ifname).iter().map(|r| r.ip).collect())
    }

    fn owner(&self, ip: IpAddr) -> Result<Option<Owner>, StoreError> {
        Ok(self.ips.get(&ip).cloned())
    }

    fn list(&self) -> Result<Vec<Reservation>, StoreError> {
        Ok(self.ips.iter().map(|(ip, owner)| Reservation { ip: *ip, owner: owner.clone() }).collect())
    }
}
