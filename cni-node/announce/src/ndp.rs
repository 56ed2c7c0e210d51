//! Unsolicited neighbour advertisements, the IPv6 counterpart of gratuitous ARP: the packet (pure) and a raw
//! ICMPv6 socket to send it to all nodes on the link.

use crate::Error;
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn6, sendmsg, setsockopt,
    socket, sockopt,
};
use std::io::IoSlice;
use std::net::{IpAddr, Ipv6Addr, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};

/// ICMPv6 type of a neighbour advertisement (RFC 4861 §4.4).
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// The Override flag: the receiver replaces the link-layer address it has cached for the target.
const FLAG_OVERRIDE: u8 = 0x20;
/// Option type "Target Link-Layer Address".
const OPT_TARGET_LL_ADDR: u8 = 2;
/// All-nodes link-local multicast.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// Neighbour discovery packets must arrive with hop limit 255 or receivers drop them (RFC 4861 §7.1.2).
const HOP_LIMIT: i32 = 255;
/// `ICMP6_FILTER` (linux/icmpv6.h): which ICMPv6 types a raw socket receives.
const ICMP6_FILTER: libc::c_int = 1;

/// An unsolicited neighbour advertisement for `ip` at `mac`: Override set, Solicited and Router clear, with the
/// target link-layer address option. The checksum is left zero: the kernel computes it for raw ICMPv6 sockets.
///
/// Linux receivers treat it as gratuitous ARP is treated: an existing neighbour entry for `ip` switches to `mac`
/// at once (state STALE, confirmed on next use); no entry is created where none exists.
pub fn advertisement(mac: [u8; 6], ip: Ipv6Addr) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[0] = NEIGHBOR_ADVERTISEMENT;
    // p[1]: code 0; p[2..4]: checksum, filled in by the kernel.
    p[4] = FLAG_OVERRIDE;
    // p[5..8]: reserved.
    p[8..24].copy_from_slice(&ip.octets());
    p[24] = OPT_TARGET_LL_ADDR;
    p[25] = 1; // option length in units of 8 bytes
    p[26..32].copy_from_slice(&mac);
    p
}

/// A raw ICMPv6 socket that only sends: its receive filter blocks every type, so nothing queues on it.
pub(crate) struct NdpSocket {
    fd: OwnedFd,
}

impl NdpSocket {
    pub(crate) fn open() -> Result<Self, Error> {
        let fd = socket(AddressFamily::Inet6, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::IcmpV6)
            .map_err(|e| Error::Socket(e.into()))?;
        setsockopt(&fd, sockopt::Ipv6MulticastHops, &HOP_LIMIT).map_err(|e| Error::Socket(e.into()))?;
        block_all_input(&fd)?;
        Ok(Self { fd })
    }

    /// Advertise `ip` at `mac` to all nodes on link `ifindex`, sent from `ip` itself (an address the interface
    /// holds, without duplicate address detection, so it is usable at once).
    pub(crate) fn send(&self, ifindex: u32, mac: [u8; 6], ip: Ipv6Addr) -> Result<(), Error> {
        let packet = advertisement(mac, ip);
        let failed = |source: std::io::Error| Error::Announce { ip: IpAddr::V6(ip), source };
        let dest = SockaddrIn6::from(SocketAddrV6::new(ALL_NODES, 0, 0, ifindex));
        let info = libc::in6_pktinfo { ipi6_addr: libc::in6_addr { s6_addr: ip.octets() }, ipi6_ifindex: ifindex as _ };
        sendmsg(
            self.fd.as_raw_fd(),
            &[IoSlice::new(&packet)],
            &[ControlMessage::Ipv6PacketInfo(&info)],
            MsgFlags::empty(),
            Some(&dest),
        )
        .map_err(|e| failed(e.into()))?;
        Ok(())
    }
}

/// Sets an `ICMP6_FILTER` that blocks every ICMPv6 type: a raw ICMPv6 socket otherwise gets a copy of every
/// ICMPv6 packet the host receives, which this write-only socket would never read.
#[allow(unsafe_code)]
fn block_all_input(fd: &OwnedFd) -> Result<(), Error> {
    // struct icmp6_filter { __u32 data[8]; }: a set bit blocks that type.
    let filter = [u32::MAX; 8];
    // SAFETY: `filter` is a live array of exactly the size of `struct icmp6_filter`, valid for reads for the
    // duration of the call; the kernel copies it and keeps no pointer; `fd` is an open socket we own.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_ICMPV6,
            ICMP6_FILTER,
            filter.as_ptr().cast::<libc::c_void>(),
            std::mem::size_of_val(&filter) as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(Error::Socket(std::io::Error::last_os_error())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertisement_layout() {
        let mac = [0x02, 0, 0, 0x77, 0, 0x0a];
        let ip: Ipv6Addr = "fd00:77::c8".parse().expect("address");
        let p = advertisement(mac, ip);
        assert_eq!(p[0], 136, "type: neighbour advertisement");
        assert_eq!(p[1], 0, "code");
        assert_eq!(&p[2..4], &[0, 0], "checksum left to the kernel");
        assert_eq!(p[4], 0x20, "Override only: not a router, not solicited (it goes to a multicast group)");
        assert_eq!(&p[5..8], &[0, 0, 0]);
        assert_eq!(&p[8..24], &ip.octets(), "target");
        assert_eq!(&p[24..26], &[2, 1], "target link-layer address option, 8 bytes");
        assert_eq!(&p[26..32], &mac);
    }

    #[test]
    fn all_nodes_is_link_local_multicast() {
        assert!(ALL_NODES.is_multicast());
        assert_eq!(ALL_NODES.segments()[0] & 0x000f, 2, "link-local scope");
    }
}
