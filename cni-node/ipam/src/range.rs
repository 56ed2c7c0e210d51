//! Address ranges and the host-local iteration order, as pure functions.
//!
//! A [`Range`] is one validated `{subnet, rangeStart, rangeEnd, gateway}` entry; a [`RangeSet`] is the
//! inner list of a host-local `ranges` entry (one address is allocated per set). [`RangeIter`] walks a set
//! in exactly the order host-local does: it starts after `last_reserved_ip` when that address lies in the
//! set, otherwise at the first range's start, wraps across ranges, skips gateways and stops after one
//! full cycle.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::config::RangeConf;
use crate::error::ConfigError;

/// One validated address range inside a subnet. `start..=end` are the candidates, `gateway` is never
/// handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet; its prefix length is the prefix of every address allocated from it.
    pub subnet: IpNet,
    /// First candidate address (inclusive).
    pub start: IpAddr,
    /// Last candidate address (inclusive).
    pub end: IpAddr,
    /// The subnet's gateway (network + 1 unless configured).
    pub gateway: IpAddr,
}

/// The pool of alternative ranges that one address is drawn from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet(pub Vec<Range>);

// === impl Range ===

impl Range {
    /// Validate a configured range the way host-local's `Range.Canonicalize` does. `field` names the
    /// range in error messages, e.g. `ipam.ranges[0][1]`.
    pub fn try_new(conf: &RangeConf, field: &str) -> Result<Self, ConfigError> {
        let subnet = conf.subnet;
        if subnet.network() != subnet.addr() {
            return Err(ConfigError::invalid(
                format!("{field}.subnet"),
                format!("{subnet} has host bits set (network address is {})", subnet.network()),
            ));
        }
        let max_prefix = match subnet {
            IpNet::V4(_) => 30,
            IpNet::V6(_) => 126,
        };
        if subnet.prefix_len() > max_prefix {
            return Err(ConfigError::invalid(
                format!("{field}.subnet"),
                format!("network {subnet} is too small to allocate from"),
            ));
        }
        let network = subnet.network();
        let first = next_ip(network).unwrap_or(network);
        let last = match subnet {
            // Exclude the IPv4 broadcast address, as host-local does.
            IpNet::V4(n) => prev_ip(IpAddr::V4(n.broadcast())).unwrap_or(network),
            IpNet::V6(n) => IpAddr::V6(n.broadcast()),
        };
        let in_subnet = |ip: IpAddr, key: &str| -> Result<IpAddr, ConfigError> {
            if subnet.contains(&ip) {
                Ok(ip)
            } else {
                Err(ConfigError::invalid(format!("{field}.{key}"), format!("{ip} is not in subnet {subnet}")))
            }
        };
        let gateway = in_subnet(conf.gateway.unwrap_or(first), "gateway")?;
        let start = in_subnet(conf.range_start.unwrap_or(first), "rangeStart")?;
        let end = in_subnet(conf.range_end.unwrap_or(last), "rangeEnd")?;
        if ip_to_u128(start) > ip_to_u128(end) {
            return Err(ConfigError::invalid(
                format!("{field}.rangeStart"),
                format!("{start} is after rangeEnd {end}"),
            ));
        }
        Ok(Range { subnet, start, end, gateway })
    }

    /// Whether `ip` is a candidate of this range (between start and end, same family).
    pub fn contains(&self, ip: IpAddr) -> bool {
        same_family(ip, self.start)
            && ip_to_u128(ip) >= ip_to_u128(self.start)
            && ip_to_u128(ip) <= ip_to_u128(self.end)
    }

    /// Whether two ranges share any candidate address.
    pub fn overlaps(&self, other: &Range) -> bool {
        same_family(self.start, other.start)
            && ip_to_u128(self.start) <= ip_to_u128(other.end)
            && ip_to_u128(other.start) <= ip_to_u128(self.end)
    }

    /// Number of candidate addresses, the gateway excluded.
    pub fn size(&self) -> u128 {
        let n = ip_to_u128(self.end) - ip_to_u128(self.start) + 1;
        if self.contains(self.gateway) { n - 1 } else { n }
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

// === impl RangeSet ===

impl RangeSet {
    /// The range that contains `ip`, if any.
    pub fn range_for(&self, ip: IpAddr) -> Option<(usize, &Range)> {
        self.0.iter().enumerate().find(|(_, r)| r.contains(ip))
    }

    /// Whether `ip` is a candidate of any range of the set.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    /// Whether any range of `self` overlaps any range of `other` (or of `self`, when `other` is `self`).
    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.0.iter().any(|a| other.0.iter().any(|b| a.overlaps(b)))
    }

    /// Total number of candidate addresses.
    pub fn size(&self) -> u128 {
        self.0.iter().map(Range::size).sum()
    }

    /// Iterate candidates in host-local order, starting after `last_reserved` when it lies in the set.
    pub fn iter_from(&self, last_reserved: Option<IpAddr>) -> RangeIter<'_> {
        RangeIter::new(self, last_reserved)
    }
}

impl std::fmt::Display for RangeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|r| r.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

/// Host-local's allocation order over a [`RangeSet`]; yields `(range index, address)`.
#[derive(Debug)]
pub struct RangeIter<'a> {
    set: &'a RangeSet,
    range_idx: usize,
    cur: Option<IpAddr>,
    start: Option<IpAddr>,
    done: bool,
}

impl<'a> RangeIter<'a> {
    fn new(set: &'a RangeSet, last_reserved: Option<IpAddr>) -> Self {
        let (range_idx, cur) = match last_reserved.and_then(|ip| set.range_for(ip).map(|(i, _)| (i, ip))) {
            Some((i, ip)) => (i, Some(ip)),
            None => (0, None),
        };
        RangeIter { set, range_idx, cur, start: None, done: set.0.is_empty() }
    }
}

impl Iterator for RangeIter<'_> {
    type Item = (usize, IpAddr);

    fn next(&mut self) -> Option<Self::Item> {
        // Loop instead of host-local's recursion to skip gateways.
        loop {
            if self.done {
                return None;
            }
            let mut r = &self.set.0[self.range_idx];
            match self.cur {
                None => {
                    self.cur = Some(r.start);
                    self.start = Some(r.start);
                }
                Some(cur) => {
                    let next = if cur == r.end {
                        self.range_idx = (self.range_idx + 1) % self.set.0.len();
                        r = &self.set.0[self.range_idx];
                        r.start
                    } else {
                        // `cur < end` inside one family, so the successor exists.
                        next_ip(cur).unwrap_or(r.start)
                    };
                    self.cur = Some(next);
                    match self.start {
                        None => self.start = Some(next),
                        Some(s) if s == next => {
                            self.done = true;
                            return None;
                        }
                        Some(_) => {}
                    }
                }
            }
            let cur = self.cur?;
            if cur != r.gateway {
                return Some((self.range_idx, cur));
            }
        }
    }
}

/// The address as an integer (IPv4 in the low 32 bits).
pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// The next address of the same family, `None` at the top of the address space.
pub fn next_ip(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) => u32::from(v4).checked_add(1).map(|n| IpAddr::V4(Ipv4Addr::from(n))),
        IpAddr::V6(v6) => u128::from(v6).checked_add(1).map(|n| IpAddr::V6(Ipv6Addr::from(n))),
    }
}

/// The previous address of the same family, `None` at zero.
pub fn prev_ip(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) => u32::from(v4).checked_sub(1).map(|n| IpAddr::V4(Ipv4Addr::from(n))),
        IpAddr::V6(v6) => u128::from(v6).checked_sub(1).map(|n| IpAddr::V6(Ipv6Addr::from(n))),
    }
}

#[cfg(test)]
mod tests;
