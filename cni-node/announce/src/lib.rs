//! Layer-2 announcement of LoadBalancer addresses on one node.
//!
//! ```text
//!  causeway_lb::plan(&index, node).my_addresses ──► Announcer::sync(wanted, now)
//!        ├─ netlink: add each wanted address as /32 or /128 (IPv6 without DAD), tagged IFA_PROTO = ADDRESS_PROTOCOL
//!        ├─ netlink: remove tagged addresses no longer wanted (never anything else)
//!        └─ announce each new address now, then GarpConfig::count - 1 repeats:
//!             IPv4: gratuitous ARP (AF_PACKET)   IPv6: unsolicited neighbour advertisement to ff02::1 (raw ICMPv6)
//!  Announcer::send_due(now) ──► the repeats that are due; returns when to call it next
//!  AnnounceWorker: both on a dedicated thread, fed the latest set with `set`, re-syncing periodically
//! ```
//!
//! **Only its own addresses**: an address this crate adds carries the address protocol tag
//! [`ADDRESS_PROTOCOL`] (`IFA_PROTO`, Linux ≥ 5.18; `ip -d addr` shows it as `proto 0xca`), and removal only ever
//! touches host addresses (`/32`, `/128`) with that tag, or ones this process added itself (for kernels that drop the tag). So a
//! restarted agent adopts the addresses its predecessor added (no flap, no removal) and an operator's own
//! addresses on the interface are never removed, even when they equal a LoadBalancer address.
//!
//! Once the kernel holds the address it answers ARP (and neighbour solicitations) for it; the gratuitous ARP or
//! unsolicited neighbour advertisement tells neighbours that already have an entry for it (the router, clients on
//! the segment) to switch to this node's MAC now, which is what makes a failover fast.
//!
//! What it deliberately does not do: no owner election (that is `causeway_lb::owner_node`, stateless), no
//! answering of ARP or neighbour solicitations itself (the kernel does, for the address it holds), no BGP, no
//! namespace switching (create the `Announcer` in the namespace it should act in), no shelling out.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod garp;
mod ndp;
mod netlink;
mod worker;

pub use garp::announcement;
pub use ndp::advertisement;
pub use worker::{AnnounceWorker, WorkerStats};

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The `IFA_PROTO` value marking addresses added by Causeway (kernel values 0–3 are taken; 0xca is ours).
pub const ADDRESS_PROTOCOL: u8 = 0xca;

/// Errors of the announcer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket could not be opened or used.
    #[error("socket: {0}")]
    Socket(#[source] io::Error),
    /// The kernel refused a netlink request.
    #[error("{op}: {source}")]
    Netlink {
        /// What was asked, e.g. `add 172.18.255.200/32 to link #2`.
        op: String,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// A kernel answer could not be decoded.
    #[error("netlink decode: {0}")]
    Decode(String),
    /// The configured interface does not exist.
    #[error("interface {0} not found")]
    NoInterface(String),
    /// A gratuitous ARP (IPv4) or unsolicited neighbour advertisement (IPv6) could not be sent.
    #[error("announcing {ip} ({}): {source}", if ip.is_ipv4() { "gratuitous ARP" } else { "unsolicited neighbour advertisement" })]
    Announce {
        /// The address announced.
        ip: IpAddr,
        /// Why sending failed.
        #[source]
        source: io::Error,
    },
}

/// How often a new address is announced (gratuitous ARP or unsolicited neighbour advertisement).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GarpConfig {
    /// Announcements per new address, the first at once (at least 1). Default 3.
    pub count: u32,
    /// Time between announcements. Default 500 ms.
    pub interval: Duration,
}

impl Default for GarpConfig {
    fn default() -> Self {
        Self { count: 3, interval: Duration::from_millis(500) }
    }
}

/// What one [`Announcer::sync`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Addresses added to the interface (and announced).
    pub added: Vec<IpAddr>,
    /// Addresses removed from the interface.
    pub removed: Vec<IpAddr>,
    /// Wanted addresses left alone, and why (already present but not ours).
    pub skipped: Vec<(IpAddr, &'static str)>,
    /// New addresses whose first announcement failed (the address is in place; the repeats retry).
    pub garp_failed: Vec<(IpAddr, String)>,
}

/// Adds the addresses this node owns to one interface and announces them; removes the ones it no longer owns.
///
/// Create it in the network namespace it should act in (its sockets stay bound to that namespace). Calls are
/// synchronous and short (a few netlink round trips and one `sendto` per announcement); call [`Announcer::sync`]
/// whenever the set of owned addresses changes and [`Announcer::send_due`] when its last return says.
pub struct Announcer {
    interface: String,
    garp: GarpConfig,
    nl: netlink::Netlink,
    packet: garp::PacketSocket,
    /// Opened with the announcer, in its namespace; an error on a host without IPv6, reported per IPv6 address.
    ndp: Result<ndp::NdpSocket, String>,
    /// Addresses this process added (a fallback for kernels that do not keep `IFA_PROTO`).
    added: BTreeSet<IpAddr>,
    /// Pending repeat announcements: address → (announcements left, when the next is due).
    repeats: BTreeMap<IpAddr, (u32, Instant)>,
}

impl std::fmt::Debug for Announcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announcer").field("interface", &self.interface).field("added", &self.added).finish()
    }
}

impl Announcer {
    /// An announcer for `interface` in the calling thread's network namespace. The interface is looked up on
    /// every sync (it may be recreated), but must exist now.
    pub fn new(interface: impl Into<String>, garp: GarpConfig) -> Result<Self, Error> {
        let interface = interface.into();
        let mut nl = netlink::Netlink::open()?;
        if nl.link(&interface)?.is_none() {
            return Err(Error::NoInterface(interface));
        }
        let packet = garp::PacketSocket::open()?;
        let ndp = ndp::NdpSocket::open().map_err(|e| e.to_string());
        let garp = GarpConfig { count: garp.count.max(1), interval: garp.interval };
        Ok(Self { interface, garp, nl, packet, ndp, added: BTreeSet::new(), repeats: BTreeMap::new() })
    }

    /// The interface this announcer acts on.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// Make the interface carry exactly the `wanted` addresses among ours: add the missing ones (and announce
    /// them), remove ours that are no longer wanted. Addresses present but not ours are left as they are.
    ///
    /// On an error part of the work may be done; calling again with the same set finishes it (every step is
    /// idempotent).
    pub fn sync(&mut self, wanted: &BTreeSet<IpAddr>, now: Instant) -> Result<SyncReport, Error> {
        let link = self.nl.link(&self.interface)?.ok_or_else(|| Error::NoInterface(self.interface.clone()))?;
        let present = self.nl.addresses(link.index)?;
        let mut report = SyncReport::default();
        let is_ours = |a: &netlink::LinkAddress| {
            a.prefix_len == netlink::host_prefix(a.ip) && (a.protocol == ADDRESS_PROTOCOL || self.added.contains(&a.ip))
        };
        let ours: BTreeSet<IpAddr> = present.iter().filter(|a| is_ours(a)).map(|a| a.ip).collect();
        let foreign: BTreeSet<IpAddr> = present.iter().filter(|a| !is_ours(a)).map(|a| a.ip).collect();

        for ip in ours.difference(wanted) {
            self.nl.delete_address(link.index, *ip)?;
            self.added.remove(ip);
            self.repeats.remove(ip);
            report.removed.push(*ip);
        }
        for ip in wanted {
            if ours.contains(ip) {
                // Adopt what a previous run added.
                self.added.insert(*ip);
                continue;
            }
            if foreign.contains(ip) {
                report.skipped.push((*ip, "already on the interface, not added by causeway"));
                continue;
            }
            match self.nl.add_address(link.index, *ip, ADDRESS_PROTOCOL) {
                Ok(()) => {}
                // Added meanwhile (another prefix length of it, or a race): treat it as present, announce anyway.
                Err(Error::Netlink { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e),
            }
            self.added.insert(*ip);
            report.added.push(*ip);
            let left = match self.announce(link, *ip) {
                Ok(()) => self.garp.count - 1,
                Err(e) => {
                    report.garp_failed.push((*ip, e.to_string()));
                    self.garp.count
                }
            };
            if left > 0 {
                self.repeats.insert(*ip, (left, now + self.garp.interval));
            }
        }
        Ok(report)
    }

    /// Send the repeat announcements that are due at `now`. Returns when to call again (`None`: nothing pending).
    pub fn send_due(&mut self, now: Instant) -> Result<Option<Instant>, Error> {
        let due: Vec<IpAddr> = self.repeats.iter().filter(|(_, (_, at))| *at <= now).map(|(ip, _)| *ip).collect();
        if !due.is_empty() {
            let link = self.nl.link(&self.interface)?.ok_or_else(|| Error::NoInterface(self.interface.clone()))?;
            for ip in due {
                self.announce(link, ip)?;
                if let Some((left, at)) = self.repeats.get_mut(&ip) {
                    *left -= 1;
                    *at = now + self.garp.interval;
                    if *left == 0 {
                        self.repeats.remove(&ip);
                    }
                }
            }
        }
        Ok(self.repeats.values().map(|(_, at)| *at).min())
    }

    /// Remove every address of ours from the interface (for a node leaving the pool of announcers; a plain
    /// restart should not call this, since the next run adopts the addresses without a flap).
    pub fn withdraw_all(&mut self) -> Result<Vec<IpAddr>, Error> {
        Ok(self.sync(&BTreeSet::new(), Instant::now())?.removed)
    }

    /// One announcement of `ip` on `link`: gratuitous ARP for IPv4, an unsolicited neighbour advertisement for
    /// IPv6.
    fn announce(&self, link: netlink::Link, ip: IpAddr) -> Result<(), Error> {
        match ip {
            IpAddr::V4(v4) => self.packet.send(link.index, link.mac, v4),
            IpAddr::V6(v6) => match &self.ndp {
                Ok(socket) => socket.send(link.index, link.mac, v6),
                Err(e) => Err(Error::Announce { ip, source: std::io::Error::other(format!("no ICMPv6 socket: {e}")) }),
            },
        }
    }
}
