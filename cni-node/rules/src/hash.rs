//! kube-proxy's chain-name hashing: SHA-256, standard base32, first 16 characters.

use causeway_model::{EndpointInfo, ServicePortName};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// The first `len` characters of the RFC 4648 base32 encoding of `data` (padding never reached for len ≤ 16).
fn base32_prefix(data: &[u8], len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    for &byte in data {
        acc = (acc << 8) | u64::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            let idx = ((acc >> bits) & 0x1f) as usize;
            out.push(char::from(BASE32[idx]));
            if out.len() == len {
                return out;
            }
        }
    }
    if bits > 0 && out.len() < len {
        let idx = ((acc << (5 - bits)) & 0x1f) as usize;
        out.push(char::from(BASE32[idx]));
    }
    out
}

/// The 16-character suffix kube-proxy derives from an arbitrary string.
pub fn hash16(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    base32_prefix(&digest, 16)
}

/// The suffix shared by `KUBE-SVC-`, `KUBE-SVL-`, `KUBE-EXT-` and `KUBE-FW-` of one service port:
/// hash of `servicePortName + protocol`.
pub fn service_port_hash(name: &ServicePortName) -> String {
    hash16(&format!("{}{}", name, name.protocol.as_lower()))
}

/// `IP:port` as Go's `net.JoinHostPort` writes it (IPv6 in brackets).
pub fn endpoint_string(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

/// `KUBE-SEP-` chain of one endpoint of a service port: hash of `servicePortName + protocol + IP:port`.
pub fn endpoint_chain(name: &ServicePortName, ep: &EndpointInfo) -> String {
    let input = format!("{}{}{}", name, name.protocol.as_lower(), endpoint_string(ep.ip, ep.port));
    format!("KUBE-SEP-{}", hash16(&input))
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_model::Protocol;

    fn spn(ns: &str, name: &str, port: &str) -> ServicePortName {
        ServicePortName { namespace: ns.into(), name: name.into(), port: port.into(), protocol: Protocol::Tcp }
    }

    fn ep(ip: &str, port: u16) -> EndpointInfo {
        EndpointInfo {
            ip: ip.parse().unwrap(),
            port,
            node_name: None,
            zone: None,
            ready: true,
            serving: true,
            terminating: false,
        }
    }

    /// Test vectors from the reference (§5.2), themselves checked against upstream kube-proxy test data.
    #[test]
    fn reference_vectors() {
        type Case<'a> = (ServicePortName, Option<(&'a str, u16)>, &'a str);
        let cases: &[Case] = &[
            (spn("ns1", "svc1", "p80"), None, "KUBE-SVC-XPGD46QRK7WJZT7O"),
            (spn("ns1", "svc1", "p80"), Some(("10.180.0.1", 80)), "KUBE-SEP-SXIVWICOYRO3J4NJ"),
            (spn("ns2", "svc2", "p80"), None, "KUBE-SVC-GNZBNJ2PO5MGZ6GT"),
            (spn("default", "kubernetes", "https"), None, "KUBE-SVC-NPX46M4PTMTKRN6Y"),
            (spn("default", "web", "http"), None, "KUBE-SVC-CDGGSHYLG3RE2FKL"),
            (spn("default", "web", "http"), Some(("10.244.1.5", 8080)), "KUBE-SEP-AFGSLHOD2HFNCBX4"),
            (spn("default", "web", "http"), Some(("10.244.2.7", 8080)), "KUBE-SEP-2RIJ5GIYXEFH6G4D"),
        ];
        for (name, endpoint, want) in cases {
            let got = match endpoint {
                None => format!("KUBE-SVC-{}", service_port_hash(name)),
                Some((ip, port)) => endpoint_chain(name, &ep(ip, *port)),
            };
            assert_eq!(&got, want, "{name} {endpoint:?}");
        }
    }

    #[test]
    fn base32_matches_rfc4648_examples() {
        // RFC 4648 §10: BASE32("foobar") = "MZXW6YTBOI======".
        assert_eq!(base32_prefix(b"foobar", 16), "MZXW6YTBOI");
        assert_eq!(base32_prefix(b"f", 16), "MY");
    }

    #[test]
    fn ipv6_endpoints_are_bracketed() {
        assert_eq!(endpoint_string("fd00::1".parse().unwrap(), 80), "[fd00::1]:80");
    }
}
