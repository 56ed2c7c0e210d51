//! The few rtnetlink requests announcement needs, over one synchronous `NETLINK_ROUTE` socket.
//!
//! The socket belongs to the network namespace of the thread that opened it, so an [`crate::Announcer`] created
//! inside a namespace keeps working there from any thread.

use crate::Error;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressProtocol, AddressScope,
};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::io;
use std::net::IpAddr;

/// A link's index and hardware address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    pub index: u32,
    pub mac: [u8; 6],
}

/// One address on a link, with the protocol tag it was added with (`IFA_PROTO`, 0 when none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LinkAddress {
    pub ip: IpAddr,
    pub prefix_len: u8,
    pub protocol: u8,
}

pub(crate) struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    pub(crate) fn open() -> Result<Self, Error> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(Error::Socket)?;
        sock.bind_auto().map_err(Error::Socket)?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(Error::Socket)?;
        // Strict checking makes the kernel apply the per-link dump filter instead of dumping every address.
        let _ = sock.set_netlink_get_strict_chk(true);
        Ok(Self { sock, seq: 0, buf: vec![0; 64 * 1024] })
    }

    /// Send one request; collect the answer up to `NLMSG_DONE` (dumps) or the acknowledgement.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16, op: &str) -> Result<Vec<RouteNetlinkMessage>, Error> {
        let kernel = |source: io::Error| Error::Netlink { op: op.to_owned(), source };
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = flags | NLM_F_REQUEST;
        header.sequence_number = seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let mut out = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut out);
        self.sock.send(&out, 0).map_err(kernel)?;
        let mut answer = Vec::new();
        loop {
            let n = self.sock.recv(&mut &mut self.buf[..], 0).map_err(kernel)?;
            let mut offset = 0;
            while offset < n {
                let chunk = &self.buf[offset..n];
                let len = NetlinkBuffer::new_checked(chunk).map_err(|e| Error::Decode(format!("{op}: {e}")))?.length()
                    as usize;
                if len == 0 || len > chunk.len() {
                    return Err(Error::Decode(format!("{op}: bad message length {len}")));
                }
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&chunk[..len])
                    .map_err(|e| Error::Decode(format!("{op}: {e}")))?;
                // Messages are 4-byte aligned within a datagram.
                offset += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(answer),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(answer),
                            Some(code) => Err(kernel(io::Error::from_raw_os_error(-code.get()))),
                        };
                    }
                    NetlinkPayload::InnerMessage(inner) => {
                        answer.push(inner);
                        if flags & NLM_F_DUMP != NLM_F_DUMP && flags & NLM_F_ACK == 0 {
                            return Ok(answer);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// The link named `name`, or `None`.
    pub(crate) fn link(&mut self, name: &str) -> Result<Option<Link>, Error> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        let answer = match self.request(RouteNetlinkMessage::GetLink(msg), 0, &format!("look up link {name}")) {
            Ok(a) => a,
            Err(Error::Netlink { source, .. }) if source.raw_os_error() == Some(libc::ENODEV) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(answer.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => {
                let mut mac = [0u8; 6];
                for a in &l.attributes {
                    if let LinkAttribute::Address(bytes) = a
                        && bytes.len() == 6
                    {
                        mac.copy_from_slice(bytes);
                    }
                }
                Some(Link { index: l.header.index, mac })
            }
            _ => None,
        }))
    }

    /// Addresses of both families on link `index`.
    pub(crate) fn addresses(&mut self, index: u32) -> Result<Vec<LinkAddress>, Error> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Unspec;
        msg.header.index = index;
        let answer = self.request(
            RouteNetlinkMessage::GetAddress(msg),
            NLM_F_DUMP,
            &format!("list addresses of link #{index}"),
        )?;
        let mut out = Vec::new();
        for m in answer {
            let RouteNetlinkMessage::NewAddress(a) = m else { continue };
            if a.header.index != index {
                continue;
            }
            let mut ip = None;
            let mut protocol = 0;
            for attr in &a.attributes {
                match attr {
                    // IFA_LOCAL is the address itself when present (IPv4 point-to-point links put the peer in
                    // IFA_ADDRESS); IPv6 sends IFA_ADDRESS only.
                    AddressAttribute::Local(local) => ip = Some(*local),
                    AddressAttribute::Address(addr) if ip.is_none() => ip = Some(*addr),
                    AddressAttribute::Protocol(p) => protocol = u8::from(*p),
                    _ => {}
                }
            }
            if let Some(ip) = ip {
                out.push(LinkAddress { ip, prefix_len: a.header.prefix_len, protocol });
            }
        }
        Ok(out)
    }

    fn address_message(index: u32, ip: IpAddr, protocol: Option<u8>) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        msg.header.prefix_len = host_prefix(ip);
        msg.header.scope = AddressScope::Universe;
        match ip {
            IpAddr::V4(_) => {
                msg.header.family = AddressFamily::Inet;
                msg.attributes.push(AddressAttribute::Local(ip));
                msg.attributes.push(AddressAttribute::Address(ip));
            }
            IpAddr::V6(_) => {
                // No duplicate address detection: the address must be usable (and announced) at once, and the
                // single owner is decided by the hash, not by DAD. Without NODAD it stays tentative for about a
                // second and the kernel neither answers neighbour solicitations for it nor lets us send from it.
                msg.header.family = AddressFamily::Inet6;
                msg.header.flags = AddressHeaderFlags::Nodad;
                msg.attributes.push(AddressAttribute::Address(ip));
                msg.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
        if let Some(p) = protocol {
            msg.attributes.push(AddressAttribute::Protocol(AddressProtocol::from(p)));
        }
        msg
    }

    /// Add `ip` as a host address (/32 or /128) to link `index`, tagged with `protocol`.
    pub(crate) fn add_address(&mut self, index: u32, ip: IpAddr, protocol: u8) -> Result<(), Error> {
        let msg = Self::address_message(index, ip, Some(protocol));
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &format!("add {ip}/{} to link #{index}", host_prefix(ip)),
        )
        .map(drop)
    }

    /// Remove host address `ip` from link `index`; an address already gone is not an error.
    pub(crate) fn delete_address(&mut self, index: u32, ip: IpAddr) -> Result<(), Error> {
        let msg = Self::address_message(index, ip, None);
        match self.request(
            RouteNetlinkMessage::DelAddress(msg),
            NLM_F_ACK,
            &format!("remove {ip}/{} from link #{index}", host_prefix(ip)),
        ) {
            Err(Error::Netlink { source, .. }) if source.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(()),
            other => other.map(drop),
        }
    }
}

/// The prefix length of a single-address block of `ip`'s family: 32 or 128.
pub(crate) fn host_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}
