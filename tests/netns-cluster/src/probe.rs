//! Requests from inside a namespace, made by the `cw-netns-probe` helper (see its doc), and the parsed answer.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sys;

/// One answer of a probe server: who answered and the peer address it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The answering pod's name.
    pub pod: String,
    /// The source address as the server saw it.
    pub peer: SocketAddr,
    /// The server's local address (the pod IP after DNAT).
    pub local: SocketAddr,
    /// The Host header (TCP) or `-`.
    pub host: String,
    /// The request path (TCP) or `-`.
    pub path: String,
}

impl Reply {
    /// The source IP the server saw.
    pub fn peer_ip(&self) -> IpAddr {
        self.peer.ip()
    }
}

impl FromStr for Reply {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let field = |k: &str| -> Result<String> {
            s.split_whitespace()
                .find_map(|w| w.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
                .map(str::to_string)
                .ok_or_else(|| Error::check(format!("reply {s:?} has no {k}=")))
        };
        let addr = |k: &str| -> Result<SocketAddr> {
            let v = field(k)?;
            v.parse().map_err(|_| Error::check(format!("reply {s:?}: {k}={v} is not an address")))
        };
        Ok(Self {
            pod: field("pod")?,
            peer: addr("peer")?,
            local: addr("local")?,
            host: field("host")?,
            path: field("path")?,
        })
    }
}

/// Runs the probe helper inside network namespaces.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The `cw-netns-probe` binary.
    pub bin: PathBuf,
}

impl Probe {
    /// The probe at `bin`.
    pub fn new(bin: &Path) -> Self {
        Self { bin: bin.to_path_buf() }
    }

    /// A probe command inside `ns`.
    pub fn cmd(&self, ns: &str) -> Command {
        sys::in_ns(ns, &self.bin)
    }

    /// One HTTP GET from `ns` to `to` with optional Host header and path.
    pub fn get(&self, ns: &str, to: SocketAddr, host: Option<&str>, path: &str, timeout: Duration) -> Result<Reply> {
        let mut cmd = self.cmd(ns);
        cmd.arg("get")
            .arg(to.to_string())
            .arg("--path")
            .arg(path)
            .arg("--timeout-ms")
            .arg(timeout.as_millis().to_string());
        if let Some(h) = host {
            cmd.arg("--host").arg(h);
        }
        sys::run(&mut cmd).map_err(|e| Error::check(format!("GET http://{to}{path} from {ns}: {e}")))?.trim().parse()
    }

    /// One GET expecting the raw body (admin endpoints), 200 only.
    pub fn get_raw(&self, ns: &str, to: SocketAddr, path: &str, timeout: Duration) -> Result<String> {
        let mut cmd = self.cmd(ns);
        cmd.arg("get")
            .arg(to.to_string())
            .arg("--path")
            .arg(path)
            .arg("--timeout-ms")
            .arg(timeout.as_millis().to_string());
        sys::run(&mut cmd)
    }

    /// One UDP datagram from `ns` to `to`.
    pub fn udp(&self, ns: &str, to: SocketAddr, timeout: Duration) -> Result<Reply> {
        let mut cmd = self.cmd(ns);
        cmd.arg("udp").arg(to.to_string()).arg("--timeout-ms").arg(timeout.as_millis().to_string());
        sys::run(&mut cmd).map_err(|e| Error::check(format!("UDP to {to} from {ns}: {e}")))?.trim().parse()
    }

    /// A request loop from `ns` to `to` for `duration`, one new connection every `interval`; started in the
    /// background, read with [`LoopRecord::parse`] after the process exits.
    pub fn spawn_loop(
        &self,
        ns: &str,
        to: SocketAddr,
        host: Option<&str>,
        duration: Duration,
        interval: Duration,
        log: &Path,
    ) -> Result<sys::Proc> {
        let mut cmd = self.cmd(ns);
        cmd.arg("loop")
            .arg(to.to_string())
            .arg("--duration-ms")
            .arg(duration.as_millis().to_string())
            .arg("--interval-ms")
            .arg(interval.as_millis().to_string())
            // Longer than TCP's first SYN retransmission (1 s): a request whose first SYN is lost on a loaded
            // machine and that then succeeds is not a failed request to a client, so it must not count as one.
            .arg("--timeout-ms")
            .arg("3000");
        if let Some(h) = host {
            cmd.arg("--host").arg(h);
        }
        sys::Proc::spawn(format!("request loop {ns} -> {to}"), cmd, log)
    }
}

/// Now, in ms since the Unix epoch (the loop's clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Probe {
    /// Requests on one kept-alive connection from `ns` to `to` (an established flow), `count` of them
    /// `interval` apart; read with [`LoopRecord::parse`].
    pub fn spawn_keepalive(
        &self,
        ns: &str,
        to: SocketAddr,
        count: usize,
        interval: Duration,
        log: &Path,
    ) -> Result<sys::Proc> {
        let mut cmd = self.cmd(ns);
        cmd.arg("keepalive")
            .arg(to.to_string())
            .arg("--count")
            .arg(count.to_string())
            .arg("--interval-ms")
            .arg(interval.as_millis().to_string());
        sys::Proc::spawn(format!("keep-alive connection {ns} -> {to}"), cmd, log)
    }
}

/// One request of a loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopRecord {
    /// When the request started, in ms since the Unix epoch (compare with [`now_ms`]).
    pub at_ms: u64,
    /// The reply, or the error.
    pub outcome: std::result::Result<Reply, String>,
}

impl LoopRecord {
    /// Parses a loop's output.
    pub fn parse(text: &str) -> Vec<LoopRecord> {
        text.lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, ' ');
                let at_ms = parts.next()?.parse().ok()?;
                let kind = parts.next()?;
                let rest = parts.next().unwrap_or_default();
                let outcome = match kind {
                    "OK" => rest.parse::<Reply>().map_err(|e| e.to_string()),
                    _ => Err(rest.to_string()),
                };
                Some(LoopRecord { at_ms, outcome })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies_and_loops() {
        let r: Reply = "pod=web-1 peer=10.244.1.3:41234 local=10.244.2.2:8080 host=a.example path=/x".parse().unwrap();
        assert_eq!((r.pod.as_str(), r.peer_ip().to_string().as_str(), r.path.as_str()), ("web-1", "10.244.1.3", "/x"));
        assert!("pod=x".parse::<Reply>().is_err());
        let recs =
            LoopRecord::parse("0 OK pod=a peer=1.2.3.4:5 local=5.6.7.8:9 host=- path=/\n50 ERR connect: refused\n");
        assert_eq!(recs.len(), 2);
        assert!(recs[0].outcome.is_ok());
        assert_eq!(recs[1].outcome, Err("connect: refused".to_string()));
    }
}
