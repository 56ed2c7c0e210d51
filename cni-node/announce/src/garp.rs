//! Gratuitous ARP: the packet (pure) and an `AF_PACKET` socket to broadcast it.

use crate::Error;
use nix::sys::socket::{AddressFamily, LinkAddr, MsgFlags, SockFlag, SockType, SockaddrLike, sendto, socket};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

/// EtherType of ARP.
const ETH_P_ARP: u16 = 0x0806;
/// The Ethernet broadcast address.
const BROADCAST: [u8; 6] = [0xff; 6];

/// A gratuitous ARP request for `ip` from `mac` (RFC 5227 §3 "ARP Announcement"): sender and target protocol
/// address are both `ip`, target hardware address zero. Linux treats such a request (sender IP = target IP) as
/// gratuitous and overrides an existing neighbour entry at once, ignoring `locktime`; it never creates an entry
/// where none exists unless `arp_accept` is set, so only hosts that talk to the address are touched.
pub fn announcement(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
    p[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol type: IPv4
    p[4] = 6; // hardware address length
    p[5] = 4; // protocol address length
    p[6..8].copy_from_slice(&1u16.to_be_bytes()); // operation: request
    p[8..14].copy_from_slice(&mac);
    p[14..18].copy_from_slice(&ip.octets());
    // p[18..24]: target hardware address, zero.
    p[24..28].copy_from_slice(&ip.octets());
    p
}

/// An `AF_PACKET` datagram socket: the kernel adds the Ethernet header from the destination address we give.
/// It is opened with protocol 0, so it receives nothing.
pub(crate) struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    pub(crate) fn open() -> Result<Self, Error> {
        let fd = socket(AddressFamily::Packet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)
            .map_err(|e| Error::Socket(e.into()))?;
        Ok(Self { fd })
    }

    /// Broadcast the announcement of `ip` on link `ifindex`.
    pub(crate) fn send(&self, ifindex: u32, mac: [u8; 6], ip: Ipv4Addr) -> Result<(), Error> {
        let packet = announcement(mac, ip);
        let dest = link_addr(ifindex)?;
        sendto(self.fd.as_raw_fd(), &packet, &dest, MsgFlags::empty())
            .map_err(|e| Error::Announce { ip: ip.into(), source: e.into() })?;
        Ok(())
    }
}

/// The `sockaddr_ll` for an ARP broadcast on link `ifindex`.
#[allow(unsafe_code)]
fn link_addr(ifindex: u32) -> Result<LinkAddr, Error> {
    let mut sll_addr = [0u8; 8];
    sll_addr[..6].copy_from_slice(&BROADCAST);
    let sll = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as libc::c_ushort,
        sll_protocol: ETH_P_ARP.to_be(),
        sll_ifindex: i32::try_from(ifindex).map_err(|_| Error::Decode(format!("link index {ifindex} too large")))?,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr,
    };
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `sll` is a live, initialised `sockaddr_ll` on our stack for the duration of the call, `len` is its
    // exact size, and its family is AF_PACKET — the three conditions `LinkAddr::from_raw` reads through the
    // pointer under. nix copies the structure out, so nothing borrows `sll` afterwards.
    unsafe { LinkAddr::from_raw((&raw const sll).cast::<libc::sockaddr>(), Some(len)) }
        .ok_or_else(|| Error::Decode("sockaddr_ll rejected".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcement_layout() {
        let p = announcement([2, 0, 0, 0, 0, 0xaa], Ipv4Addr::new(172, 18, 255, 200));
        let want: [u8; 28] = [
            0, 1, 8, 0, 6, 4, 0, 1, // Ethernet, IPv4, lengths, request
            2, 0, 0, 0, 0, 0xaa, 172, 18, 255, 200, // sender
            0, 0, 0, 0, 0, 0, 172, 18, 255, 200, // target
        ];
        assert_eq!(p, want);
    }

    #[test]
    fn link_addresses_are_arp_broadcasts() {
        let a = link_addr(7).expect("link address");
        assert_eq!((a.ifindex(), a.protocol(), a.halen(), a.addr()), (7, ETH_P_ARP.to_be(), 6, Some(BROADCAST)));
        assert!(link_addr(u32::MAX).is_err());
    }
}
