//! The CNI configuration of this node: install the `causeway-cni` binary and write the conflist from the
//! Node's pod CIDRs, atomically (write a temporary file, then rename), named to sort first.
//!
//! hostPort: we chain the upstream `portmap` plugin (`capabilities.portMappings`) rather than implement its
//! rules, as kindnet does. It is the reference implementation containerd expects, handles DEL/CHECK and the
//! hairpin/localhost cases, and with `externalSetMarkChain: KUBE-MARK-MASQ` it shares our masquerade mark
//! instead of adding a second one. The `portmap` binary must be in `--cni-bin-dir` (kind's node image ships it).

use ipnet::IpNet;
use serde_json::{Value, json};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Which IP families are in use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Families {
    pub v4: bool,
    pub v6: bool,
}

impl Families {
    /// The families of `cidrs`; IPv4 when there are none.
    pub fn of(cidrs: &[IpNet]) -> Self {
        let v4 = cidrs.iter().any(|c| matches!(c, IpNet::V4(_)));
        let v6 = cidrs.iter().any(|c| matches!(c, IpNet::V6(_)));
        if !v4 && !v6 { Families { v4: true, v6: false } } else { Families { v4, v6 } }
    }
}

/// Inputs of the conflist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniSettings {
    /// Network name (also the IPAM directory name under `ipam_dir`).
    pub network: String,
    pub bridge: String,
    pub mtu: Option<u32>,
    /// host-local `dataDir`.
    pub ipam_dir: PathBuf,
    /// Pass `externalSetMarkChain: KUBE-MARK-MASQ` to portmap (only when our Service rules create that chain).
    pub portmap_uses_kube_mark_masq: bool,
}

/// The conflist for a node with `pod_cidrs` (pure).
pub fn render_conflist(s: &CniSettings, pod_cidrs: &[IpNet]) -> String {
    let ranges: Vec<Value> = pod_cidrs.iter().map(|c| json!([{ "subnet": c.trunc().to_string() }])).collect();
    let mut plugin = json!({
        "type": "causeway-cni",
        "bridge": s.bridge,
        "isGateway": true,
        "isDefaultGateway": true,
        "hairpinMode": true,
        "ipMasq": false,
        "ipam": {
            "type": "host-local",
            "dataDir": s.ipam_dir.display().to_string(),
            "ranges": ranges,
        },
    });
    if let (Some(mtu), Some(obj)) = (s.mtu, plugin.as_object_mut()) {
        obj.insert("mtu".into(), json!(mtu));
    }
    let mut portmap = json!({ "type": "portmap", "capabilities": { "portMappings": true } });
    if let (true, Some(obj)) = (s.portmap_uses_kube_mark_masq, portmap.as_object_mut()) {
        obj.insert("externalSetMarkChain".into(), json!("KUBE-MARK-MASQ"));
    }
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": s.network,
        "plugins": [plugin, portmap],
    });
    let mut text = serde_json::to_string_pretty(&conf).unwrap_or_default();
    text.push('\n');
    text
}

/// Writes `content` to `dir/name` through a temporary file and a rename, unless the file already has it.
/// Returns whether the file changed.
pub fn write_atomic(dir: &Path, name: &str, content: &[u8], mode: u32) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt as _;
    let dst = dir.join(name);
    if std::fs::read(&dst).is_ok_and(|old| old == content) {
        return Ok(false);
    }
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(content)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, &dst)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| true)
}

/// Copies the plugin binary `src` to `bin_dir/causeway-cni` (atomically, mode 0755) unless it is already there.
pub fn install_plugin(src: &Path, bin_dir: &Path) -> std::io::Result<bool> {
    let bytes = std::fs::read(src)?;
    write_atomic(bin_dir, "causeway-cni", &bytes, 0o755)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CniSettings {
        CniSettings {
            network: "causeway".into(),
            bridge: "cni0".into(),
            mtu: Some(1450),
            ipam_dir: "/var/lib/cni/networks".into(),
            portmap_uses_kube_mark_masq: true,
        }
    }

    #[test]
    fn conflist_shape() {
        let text =
            render_conflist(&settings(), &["10.244.1.0/24".parse().unwrap(), "fd00:10:244:1::/64".parse().unwrap()]);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["plugins"][0]["type"], "causeway-cni");
        assert_eq!(v["plugins"][0]["hairpinMode"], true);
        assert_eq!(v["plugins"][0]["mtu"], 1450);
        assert_eq!(v["plugins"][0]["ipam"]["ranges"][1][0]["subnet"], "fd00:10:244:1::/64");
        assert_eq!(v["plugins"][1]["type"], "portmap");
        assert_eq!(v["plugins"][1]["capabilities"]["portMappings"], true);
        assert_eq!(v["plugins"][1]["externalSetMarkChain"], "KUBE-MARK-MASQ");
    }

    #[test]
    fn write_atomic_replaces_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_atomic(dir.path(), "10-causeway.conflist", b"a", 0o644).unwrap());
        assert!(!write_atomic(dir.path(), "10-causeway.conflist", b"a", 0o644).unwrap());
        assert!(write_atomic(dir.path(), "10-causeway.conflist", b"b", 0o644).unwrap());
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names, ["10-causeway.conflist"], "no temporary file left behind");
    }
}
