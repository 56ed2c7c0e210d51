//! Address arithmetic shared by both families: an address is its family plus a `u128`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> Self {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address `v` of `family`. `None` when it does not fit (above 2^32 for IPv4).
fn from_u128(family: Family, v: u128) -> Option<IpAddr> {
    match family {
        Family::V4 => u32::try_from(v).ok().map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        Family::V6 => Some(IpAddr::V6(Ipv6Addr::from(v))),
    }
}

/// The address after `ip` in its family, `None` at the top.
pub(crate) fn next(ip: IpAddr) -> Option<IpAddr> {
    to_u128(ip).checked_add(1).and_then(|v| from_u128(Family::of(ip), v))
}

/// An inclusive range of addresses of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddrRange {
    start: IpAddr,
    stop: IpAddr,
}

impl AddrRange {
    /// `start..=stop`; `None` when the families differ or `stop < start`.
    pub fn new(start: IpAddr, stop: IpAddr) -> Option<Self> {
        (Family::of(start) == Family::of(stop) && start <= stop).then_some(Self { start, stop })
    }

    /// Every address of a prefix (network and broadcast included: these are VIPs, not a subnet).
    pub fn from_net(net: ipnet::IpNet) -> Self {
        Self { start: net.network(), stop: net.broadcast() }
    }

    /// First address.
    pub fn start(&self) -> IpAddr {
        self.start
    }

    /// Last address.
    pub fn stop(&self) -> IpAddr {
        self.stop
    }

    /// The range's family.
    pub fn family(&self) -> Family {
        Family::of(self.start)
    }

    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family() && self.start <= ip && ip <= self.stop
    }

    /// Whether two ranges share an address.
    pub fn overlaps(&self, other: &AddrRange) -> bool {
        self.family() == other.family() && self.start <= other.stop && other.start <= self.stop
    }

    /// Number of addresses (saturating: a whole IPv6 space reads as `u128::MAX`).
    pub fn len(&self) -> u128 {
        (to_u128(self.stop) - to_u128(self.start)).saturating_add(1)
    }

    /// A range is never empty; present for API symmetry with [`AddrRange::len`].
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.stop { write!(f, "{}", self.start) } else { write!(f, "{}-{}", self.start, self.stop) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn ranges_from_prefixes_and_bounds() {
        let r = AddrRange::from_net("172.18.255.200/29".parse().expect("net"));
        assert_eq!((r.start(), r.stop(), r.len()), (ip("172.18.255.200"), ip("172.18.255.207"), 8));
        assert!(r.contains(ip("172.18.255.207")) && !r.contains(ip("172.18.255.208")));
        assert!(!r.contains(ip("::1")));
        assert_eq!(AddrRange::new(ip("10.0.0.2"), ip("10.0.0.1")), None);
        assert_eq!(AddrRange::new(ip("10.0.0.1"), ip("::2")), None);
        let all6 = AddrRange::from_net("::/0".parse().expect("net"));
        assert_eq!(all6.len(), u128::MAX);
        assert_eq!(AddrRange::from_net("10.0.0.1/32".parse().expect("net")).to_string(), "10.0.0.1");
    }

    #[test]
    fn overlap_is_symmetric_and_family_bound() {
        let a = AddrRange::new(ip("10.0.0.0"), ip("10.0.0.10")).expect("range");
        let b = AddrRange::new(ip("10.0.0.10"), ip("10.0.0.20")).expect("range");
        let c = AddrRange::new(ip("10.0.0.11"), ip("10.0.0.20")).expect("range");
        let v6 = AddrRange::new(ip("::a00:0"), ip("::a00:ff")).expect("range");
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c) && !c.overlaps(&a));
        assert!(!a.overlaps(&v6));
    }

    #[test]
    fn next_stops_at_the_top_of_the_family() {
        assert_eq!(next(ip("10.0.0.255")), Some(ip("10.0.1.0")));
        assert_eq!(next(ip("255.255.255.255")), None);
        assert_eq!(next(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")), None);
    }
}
