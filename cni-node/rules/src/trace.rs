//! A small packet tracer over rendered rules: which endpoints a new connection `(src, dst, proto, port)` can be
//! DNATed to, whether it is masqueraded, or whether it is rejected or dropped.
//!
//! It models what our rules use (addresses, protocol/port, addrtype, mark, statistic, recent, conntrack NEW),
//! follows every branch of `-m statistic` (so a DNAT result lists all endpoints the connection may reach), and
//! treats `-m recent --rcheck` as a first packet (no affinity recorded yet). Unknown matches never match.

use crate::parse::Dump;
use causeway_model::Protocol;
use ipnet::IpNet;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// A new connection's first packet.
#[derive(Clone, Debug)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Protocol,
    pub dport: u16,
}

/// What the rules do with the packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// DNATed to one of `endpoints` (`IP:port`); `masquerade` if the masquerade mark was set on any path.
    Dnat {
        endpoints: BTreeSet<String>,
        masquerade: bool,
    },
    Reject,
    Drop,
    /// Untouched by our chains.
    NoMatch,
}

const MAX_DEPTH: usize = 32;

#[derive(Clone, Debug)]
enum End {
    /// Fell off the end of the entry chain (or returned).
    Continue(u32),
    Dnat(String, u32),
    Accept,
    Drop,
    Reject,
}

struct Tracer<'a> {
    dump: &'a Dump,
    table: &'a str,
    pkt: &'a Packet,
    local: &'a [IpAddr],
    mark_bit: u32,
}

fn addr_match(spec: &str, ip: IpAddr) -> bool {
    if let Ok(net) = spec.parse::<IpNet>() {
        return net.contains(&ip);
    }
    spec.parse::<IpAddr>().is_ok_and(|a| a == ip)
}

fn parse_mark(v: &str) -> Option<(u32, u32)> {
    let hex = |s: &str| u32::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    match v.split_once('/') {
        Some((a, b)) => Some((hex(a)?, hex(b)?)),
        None => hex(v).map(|a| (a, u32::MAX)),
    }
}

impl Tracer<'_> {
    fn is_local(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.local.contains(&ip)
    }

    /// Runs `chain` with `mark`; returns every way it can end.
    fn run(&self, chain: &str, mark: u32, depth: usize) -> Vec<End> {
        if depth > MAX_DEPTH {
            return vec![End::Continue(mark)];
        }
        let rules = self.dump.chain(self.table, chain);
        self.run_from(rules, 0, mark, depth)
    }

    fn run_from(&self, rules: &[Vec<String>], start: usize, mut mark: u32, depth: usize) -> Vec<End> {
        for (i, rule) in rules.iter().enumerate().skip(start) {
            let (matched, branch) = self.matches(rule, mark);
            if !matched {
                continue;
            }
            let taken = self.take(rule, mark, depth);
            if branch {
                // Random statistic: the rule may or may not be taken.
                let mut out = taken.0;
                out.extend(self.run_from(rules, i + 1, mark, depth));
                return out;
            }
            match taken {
                (ends, None) => return ends,
                (_, Some(m)) => mark = m,
            }
        }
        vec![End::Continue(mark)]
    }

    /// Applies the target. Returns the ends, or `Some(new mark)` when evaluation continues with the next rule.
    fn take(&self, rule: &[String], mark: u32, depth: usize) -> (Vec<End>, Option<u32>) {
        let Some(ti) = rule.iter().position(|w| w == "-j" || w == "-g") else {
            return (vec![], Some(mark));
        };
        let target = rule.get(ti + 1).map(String::as_str).unwrap_or_default();
        let opt = |name: &str| rule.iter().skip(ti).position(|w| w == name).and_then(|p| rule.get(ti + p + 1));
        match target {
            "ACCEPT" => (vec![End::Accept], None),
            "DROP" => (vec![End::Drop], None),
            "REJECT" => (vec![End::Reject], None),
            "RETURN" => (vec![End::Continue(mark)], None),
            "DNAT" => (vec![End::Dnat(opt("--to-destination").cloned().unwrap_or_default(), mark)], None),
            "MASQUERADE" | "SNAT" => (vec![End::Accept], None),
            "MARK" => {
                let new = if let Some(v) = opt("--or-mark").and_then(|v| parse_mark(v)) {
                    mark | v.0
                } else if let Some(v) = opt("--xor-mark").and_then(|v| parse_mark(v)) {
                    mark ^ v.0
                } else if let Some((v, m)) = opt("--set-xmark").and_then(|v| parse_mark(v)) {
                    (mark & !m) ^ v
                } else {
                    mark
                };
                (vec![], Some(new))
            }
            chain => {
                let ends = self.run(chain, mark, depth + 1);
                // A sub-chain that returns resumes here; with several paths we keep the first continuing mark.
                let mut terminal = Vec::new();
                let mut cont = None;
                for e in ends {
                    match e {
                        End::Continue(m) => cont = cont.or(Some(m)),
                        other => terminal.push(other),
                    }
                }
                match (terminal.is_empty(), cont) {
                    (true, Some(m)) => (vec![], Some(m)),
                    (_, None) => (terminal, None),
                    (false, Some(m)) => {
                        // Mixed: some paths end, some continue. Report both by continuing in a copy.
                        terminal.push(End::Continue(m));
                        (terminal, None)
                    }
                }
            }
        }
    }

    /// Whether the rule's matches hold; the second value is true for a random statistic match.
    fn matches(&self, rule: &[String], mark: u32) -> (bool, bool) {
        let p = self.pkt;
        let mut neg = false;
        let mut module = "";
        let mut random = false;
        let mut i = 0;
        while i < rule.len() {
            let w = rule[i].as_str();
            let v = rule.get(i + 1).map(String::as_str).unwrap_or_default();
            let check = |ok: bool, neg: bool| ok != neg;
            let ok = match w {
                "!" => {
                    neg = true;
                    i += 1;
                    continue;
                }
                "-j" | "-g" => break,
                "-s" => check(addr_match(v, p.src), neg),
                "-d" => check(addr_match(v, p.dst), neg),
                "-p" => check(v.eq_ignore_ascii_case(p.proto.as_lower()), neg),
                "-i" | "-o" => false,
                "-m" => {
                    module = match v {
                        "tcp" | "udp" | "sctp" | "comment" | "addrtype" | "mark" | "statistic" | "recent"
                        | "conntrack" => v,
                        _ => return (false, false),
                    };
                    true
                }
                "--dport" => check(v.parse::<u16>().is_ok_and(|d| d == p.dport), neg),
                "--dst-type" => check(v == "LOCAL" && self.is_local(p.dst), neg),
                "--src-type" => check(v == "LOCAL" && self.is_local(p.src), neg),
                "--mark" => check(parse_mark(v).is_some_and(|(val, m)| mark & m == val), neg),
                "--ctstate" => check(v.split(',').any(|s| s == "NEW"), neg),
                "--probability" => {
                    random = true;
                    true
                }
                "--rcheck" if module == "recent" => false,
                _ => true,
            };
            if !ok {
                return (false, false);
            }
            let takes_value = matches!(
                w,
                "-s" | "-d"
                    | "-p"
                    | "-i"
                    | "-o"
                    | "-m"
                    | "--dport"
                    | "--dst-type"
                    | "--src-type"
                    | "--mark"
                    | "--ctstate"
                    | "--probability"
                    | "--comment"
                    | "--mode"
                    | "--name"
                    | "--seconds"
            );
            i += if takes_value { 2 } else { 1 };
            neg = false;
        }
        (true, random)
    }
}

/// Traces `pkt` through nat `KUBE-SERVICES` (PREROUTING/OUTPUT), then, when nothing DNATed it, through the
/// filter chains that reject or drop (`KUBE-SERVICES`, `KUBE-EXTERNAL-SERVICES`, `KUBE-PROXY-FIREWALL`).
/// `local` lists the node's addresses (for `addrtype LOCAL`); loopback addresses are always local.
pub fn trace(dump: &Dump, pkt: &Packet, local: &[IpAddr], masquerade_bit: u8) -> Verdict {
    let bit = 1u32 << u32::from(masquerade_bit.min(31));
    let nat = Tracer { dump, table: "nat", pkt, local, mark_bit: bit };
    let ends = nat.run("KUBE-SERVICES", 0, 0);
    let mut endpoints = BTreeSet::new();
    let mut masquerade = false;
    for e in &ends {
        if let End::Dnat(to, mark) = e {
            endpoints.insert(to.clone());
            masquerade |= mark & nat.mark_bit != 0;
        }
    }
    if !endpoints.is_empty() {
        return Verdict::Dnat { endpoints, masquerade };
    }
    let filter = Tracer { dump, table: "filter", pkt, local, mark_bit: bit };
    for chain in ["KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-PROXY-FIREWALL"] {
        for e in filter.run(chain, 0, 0) {
            match e {
                End::Reject => return Verdict::Reject,
                End::Drop => return Verdict::Drop,
                _ => {}
            }
        }
    }
    Verdict::NoMatch
}
