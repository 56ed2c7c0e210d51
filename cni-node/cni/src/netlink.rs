//! A small synchronous rtnetlink client: one `NETLINK_ROUTE` socket, one request at a time, no runtime.
//!
//! A socket belongs to the network namespace it was created in, so opening one on a thread that has
//! entered a pod's namespace (see [`crate::netns`]) gives a handle on that namespace that can be used from
//! any thread afterwards.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use ipnet::IpNet;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// A failed netlink request.
#[derive(Debug, thiserror::Error)]
pub enum NlError {
    /// The kernel refused the request.
    #[error("{op}: {source}")]
    Kernel {
        /// What we asked for, e.g. `create veth vethab12cd34`.
        op: String,
        /// The errno as an I/O error.
        #[source]
        source: io::Error,
    },
    /// The socket failed.
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    /// The kernel's answer could not be decoded.
    #[error("netlink decode: {0}")]
    Decode(String),
}

impl NlError {
    /// The errno of a kernel refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NlError::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// Whether the kernel answered "already exists".
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// Whether the kernel answered "no such device / entry".
    pub fn is_not_found(&self) -> bool {
        matches!(self.errno(), Some(libc::ENODEV) | Some(libc::ENOENT) | Some(libc::ESRCH))
    }
}

/// What we need to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// `IFLA_INFO_KIND` (`bridge`, `veth`, ...), if any.
    pub kind: Option<String>,
    /// Hardware address as `aa:bb:cc:dd:ee:ff`.
    pub mac: Option<String>,
    /// MTU.
    pub mtu: Option<u32>,
    /// Index of the bridge (or other master) the link is enslaved to.
    pub master: Option<u32>,
    /// Administratively up.
    pub up: bool,
    /// Hairpin flag, for a bridge port.
    pub hairpin: Option<bool>,
}

/// A route as read back from the kernel (main table only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    /// Destination.
    pub dst: IpNet,
    /// Gateway.
    pub gw: Option<IpAddr>,
    /// Output interface.
    pub oif: Option<u32>,
}

/// A synchronous rtnetlink socket.
pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").field("fd", &self.sock.as_raw_fd()).finish()
    }
}

impl Netlink {
    /// Open a socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, NlError> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // Strict checking makes the kernel honour dump filters (by index) instead of dumping everything.
        let _ = sock.set_netlink_get_strict_chk(true);
        Ok(Netlink { sock, seq: 0, buf: vec![0; 64 * 1024] })
    }

    /// Send one request and collect the answer: every message up to `NLMSG_DONE` for a dump, or up to the
    /// acknowledgement otherwise.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16, op: &str) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = flags | NLM_F_REQUEST;
        header.sequence_number = seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let mut out = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut out);
        self.sock.send(&out, 0)?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut answer = Vec::new();
        loop {
            let n = self.sock.recv(&mut &mut self.buf[..], 0)?;
            let mut offset = 0;
            while offset < n {
                let chunk = &self.buf[offset..n];
                let len =
                    NetlinkBuffer::new_checked(chunk).map_err(|e| NlError::Decode(e.to_string()))?.length() as usize;
                if len == 0 || len > chunk.len() {
                    return Err(NlError::Decode(format!("bad message length {len}")));
                }
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&chunk[..len])
                    .map_err(|e| NlError::Decode(e.to_string()))?;
                // Netlink messages are 4-byte aligned inside a datagram.
                offset += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(answer),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(answer),
                            Some(code) => Err(NlError::Kernel {
                                op: op.to_string(),
                                source: io::Error::from_raw_os_error(-code.get()),
                            }),
                        };
                    }
                    NetlinkPayload::InnerMessage(inner) => {
                        answer.push(inner);
                        if !dump {
                            // A non-dump GET answers with one message and no ACK unless asked.
                            if flags & NLM_F_ACK == 0 {
                                return Ok(answer);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn ack(&mut self, msg: RouteNetlinkMessage, extra: u16, op: &str) -> Result<(), NlError> {
        self.request(msg, NLM_F_ACK | extra, op).map(drop)
    }

    // === links ===

    /// Look a link up by name; `Ok(None)` if there is none.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NlError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(msg, &format!("get link {name}"))
    }

    /// Look a link up by index; `Ok(None)` if there is none.
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>, NlError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.get_link(msg, &format!("get link #{index}"))
    }

    fn get_link(&mut self, msg: LinkMessage, op: &str) -> Result<Option<Link>, NlError> {
        match self.request(RouteNetlinkMessage::GetLink(msg), 0, op) {
            Ok(msgs) => Ok(msgs.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(to_link(&l)),
                _ => None,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Create a bridge that is up, with a fixed MAC (so the bridge address does not follow its ports).
    /// `EEXIST` is reported to the caller, who re-reads the link.
    pub fn create_bridge(&mut self, name: &str, mtu: Option<u32>, mac: [u8; 6]) -> Result<(), NlError> {
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
        self.ack(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL, &format!("create bridge {name}"))
    }

    /// Create a veth pair in one request: `host` here, up and enslaved to `master`; `peer` directly inside
    /// the namespace `peer_ns` (no move between namespaces, which costs the kernel a device
    /// unregister/register), down. Returns the host end.
    pub fn create_veth(
        &mut self,
        host: &str,
        peer: &str,
        peer_ns: BorrowedFd<'_>,
        mtu: Option<u32>,
        master: u32,
    ) -> Result<Option<Link>, NlError> {
        // The peer cannot be created up: veth refuses to open an end before both are linked (ENOTCONN).
        let mut peer_msg = LinkMessage::default();
        peer_msg.attributes.push(LinkAttribute::IfName(peer.to_string()));
        peer_msg.attributes.push(LinkAttribute::NetNsFd(peer_ns.as_raw_fd()));
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(host.to_string()));
        if let Some(mtu) = mtu {
            peer_msg.attributes.push(LinkAttribute::Mtu(mtu));
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::Controller(master));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        // NLM_F_ECHO returns the new host end with the acknowledgement, saving a GETLINK round trip.
        let msgs = self.request(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK | NLM_F_ECHO | NLM_F_CREATE | NLM_F_EXCL,
            &format!("create veth {host}/{peer}"),
        )?;
        let echoed = msgs.iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(to_link(l)).filter(|l| l.name == host),
            _ => None,
        });
        match echoed {
            Some(l) => Ok(Some(l)),
            // Kernels before 6.3 do not echo link creation.
            None => self.link_by_name(host),
        }
    }

    /// Bring a link up.
    pub fn set_up(&mut self, index: u32) -> Result<(), NlError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.ack(RouteNetlinkMessage::SetLink(msg), 0, &format!("set link #{index} up"))
    }

    /// Set the hairpin flag of a bridge port (`ip link set X type bridge_slave hairpin on`).
    pub fn set_hairpin(&mut self, index: u32, on: bool) -> Result<(), NlError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(on)])),
        ]));
        self.ack(RouteNetlinkMessage::NewLink(msg), 0, &format!("set hairpin on link #{index}"))
    }

    /// Delete a link. A missing link is success.
    pub fn delete_link(&mut self, index: u32) -> Result<(), NlError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.ack(RouteNetlinkMessage::DelLink(msg), 0, &format!("delete link #{index}")) {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    // === addresses ===

    /// Add an address. IPv6 addresses skip duplicate address detection, so they are usable at once.
    pub fn add_address(&mut self, index: u32, addr: IpNet) -> Result<(), NlError> {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        msg.header.prefix_len = addr.prefix_len();
        msg.header.scope = AddressScope::Universe;
        match addr {
            IpNet::V4(v4) => {
                msg.header.family = AddressFamily::Inet;
                msg.attributes.push(AddressAttribute::Local(IpAddr::V4(v4.addr())));
                msg.attributes.push(AddressAttribute::Address(IpAddr::V4(v4.addr())));
                if v4.prefix_len() < 31 {
                    msg.attributes.push(AddressAttribute::Broadcast(v4.broadcast()));
                }
            }
            IpNet::V6(v6) => {
                msg.header.family = AddressFamily::Inet6;
                msg.attributes.push(AddressAttribute::Address(IpAddr::V6(v6.addr())));
                msg.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
        self.ack(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            &format!("add address {addr} to link #{index}"),
        )
    }

    /// Addresses (global scope, both families) of a link.
    pub fn addresses(&mut self, index: u32) -> Result<Vec<IpNet>, NlError> {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        let msgs = self.request(
            RouteNetlinkMessage::GetAddress(msg),
            NLM_F_DUMP,
            &format!("list addresses of link #{index}"),
        )?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewAddress(a) = m else { continue };
            if a.header.index != index || a.header.scope != AddressScope::Universe {
                continue;
            }
            let ip = a.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let ip = ip.or_else(|| {
                a.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(ip) = ip
                && let Ok(net) = IpNet::new(ip, a.header.prefix_len)
            {
                out.push(net);
            }
        }
        Ok(out)
    }

    // === routes ===

    /// Add a route in the main table: via `gw` when given, else directly on the link.
    pub fn add_route(&mut self, dst: IpNet, gw: Option<IpAddr>, oif: u32) -> Result<(), NlError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = if dst.addr().is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        msg.header.destination_prefix_length = dst.prefix_len();
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.kind = RouteType::Unicast;
        msg.header.scope = if gw.is_some() { RouteScope::Universe } else { RouteScope::Link };
        if dst.prefix_len() > 0 {
            msg.attributes.push(RouteAttribute::Destination(route_addr(dst.network())));
        }
        if let Some(gw) = gw {
            msg.attributes.push(RouteAttribute::Gateway(route_addr(gw)));
        }
        msg.attributes.push(RouteAttribute::Oif(oif));
        let op = match gw {
            Some(gw) => format!("add route {dst} via {gw}"),
            None => format!("add route {dst} dev #{oif}"),
        };
        self.ack(RouteNetlinkMessage::NewRoute(msg), NLM_F_CREATE | NLM_F_EXCL, &op)
    }

    /// Routes of the main table, both families.
    pub fn routes(&mut self) -> Result<Vec<RouteEntry>, NlError> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = RouteMessage::default();
            msg.header.address_family = family;
            let msgs = self.request(RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP, "list routes")?;
            for m in msgs {
                let RouteNetlinkMessage::NewRoute(r) = m else { continue };
                let table = r
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        RouteAttribute::Table(t) => Some(*t),
                        _ => None,
                    })
                    .unwrap_or(u32::from(r.header.table));
                if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
                    continue;
                }
                let mut dst = None;
                let mut gw = None;
                let mut oif = None;
                for a in &r.attributes {
                    match a {
                        RouteAttribute::Destination(d) => dst = from_route_addr(d),
                        RouteAttribute::Gateway(g) => gw = from_route_addr(g),
                        RouteAttribute::Oif(o) => oif = Some(*o),
                        _ => {}
                    }
                }
                let zero = if family == AddressFamily::Inet { IpAddr::from([0u8; 4]) } else { IpAddr::from([0u8; 16]) };
                if let Ok(dst) = IpNet::new(dst.unwrap_or(zero), r.header.destination_prefix_length) {
                    out.push(RouteEntry { dst, gw, oif });
                }
            }
        }
        Ok(out)
    }
}

fn route_addr(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(v4) => RouteAddress::Inet(v4),
        IpAddr::V6(v6) => RouteAddress::Inet6(v6),
    }
}

fn from_route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn to_link(l: &LinkMessage) -> Link {
    let mut link = Link {
        index: l.header.index,
        name: String::new(),
        kind: None,
        mac: None,
        mtu: None,
        master: None,
        up: l.header.flags.contains(LinkFlags::Up),
        hairpin: None,
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(mac) => link.mac = Some(format_mac(mac)),
            LinkAttribute::Mtu(m) => link.mtu = Some(*m),
            LinkAttribute::Controller(m) => link.master = Some(*m),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => link.kind = Some(k.to_string()),
                        LinkInfo::PortData(InfoPortData::BridgePort(port)) => {
                            for p in port {
                                if let InfoBridgePort::HairpinMode(on) = p {
                                    link.hairpin = Some(*on);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    link
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}
