//! The kernel settings a bridge datapath needs: IP forwarding, and bridged traffic through iptables
//! (`br_netfilter`, `bridge-nf-call-iptables`) so that a reply between two pods on the same bridge is un-DNATed.
//!
//! Checked on this kernel (6.x): `net.bridge.*` and `net.ipv4.ip_forward` are per network namespace (since 5.3
//! for the bridge ones), so an agent in a node namespace sets its own. When `net/bridge` is missing we try
//! `modprobe br_netfilter` once (impossible in a kind node: the host must have it loaded).

use crate::cni::Families;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A sysctl that could not be set.
#[derive(Debug, thiserror::Error)]
#[error("cannot set {} = {value}: {source}", path.display())]
pub struct SysctlError {
    pub path: PathBuf,
    pub value: String,
    #[source]
    pub source: std::io::Error,
}

fn set(root: &Path, key: &str, value: &str) -> Result<bool, SysctlError> {
    let path = root.join(key);
    let current = std::fs::read_to_string(&path).map_err(|source| SysctlError {
        path: path.clone(),
        value: value.into(),
        source,
    })?;
    if current.trim() == value {
        return Ok(false);
    }
    std::fs::write(&path, value).map_err(|source| SysctlError { path, value: value.into(), source })?;
    Ok(true)
}

/// Sets forwarding and the bridge-netfilter switches under `root` (normally `/proc/sys`). Returns the keys
/// it changed; each failure is returned separately so one does not hide the others.
pub fn ensure(root: &Path, families: Families) -> (Vec<String>, Vec<SysctlError>) {
    let mut changed = Vec::new();
    let mut errors = Vec::new();
    let mut keys: Vec<&str> = Vec::new();
    if families.v4 {
        keys.push("net/ipv4/ip_forward");
    }
    if families.v6 {
        keys.push("net/ipv6/conf/all/forwarding");
    }
    if !root.join("net/bridge").exists() {
        // Best effort: the error shows up below as a missing file if it did not help.
        let _ = Command::new("modprobe").arg("br_netfilter").output();
    }
    if families.v4 {
        keys.push("net/bridge/bridge-nf-call-iptables");
    }
    if families.v6 {
        keys.push("net/bridge/bridge-nf-call-ip6tables");
    }
    for key in keys {
        match set(root, key, "1") {
            Ok(true) => changed.push(key.replace('/', ".")),
            Ok(false) => {}
            Err(e) => errors.push(e),
        }
    }
    (changed, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_only_what_differs() {
        let dir = tempfile::tempdir().unwrap();
        for (k, v) in [("net/ipv4/ip_forward", "0\n"), ("net/bridge/bridge-nf-call-iptables", "1\n")] {
            let p = dir.path().join(k);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, v).unwrap();
        }
        let (changed, errors) = ensure(dir.path(), Families { v4: true, v6: false });
        assert_eq!(changed, ["net.ipv4.ip_forward"]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(std::fs::read_to_string(dir.path().join("net/ipv4/ip_forward")).unwrap(), "1");
    }
}
