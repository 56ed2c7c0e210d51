//! Network configuration parsing: pure, from the stdin bytes to a validated [`NetConf`].
//!
//! Keys the runtime or the spec define (`cniVersion`, `name`, `type`, `capabilities`, `runtimeConfig`,
//! `args`, `prevResult`, `dns`, `ipMasq`, `cni.dev/*`) are accepted; our own keys are checked strictly, so a
//! typo such as `hairpinmode` is an error (code 2) rather than a silently ignored setting.

use causeway_ipam::config::{as_object, check_keys, opt_bool, opt_str, opt_u32};
use causeway_ipam::{ConfigError, Ipam, IpamConf};
use serde_json::{Map, Value};

use crate::env::{valid_name, validate_ifname};
use crate::error::{CniError, code};
use crate::result::CniResult;
use crate::version::{CniVersion, SUPPORTED};

/// Default bridge name, as in the reference plugin.
pub const DEFAULT_BRIDGE: &str = "cni0";

/// Keys defined by the spec or injected by runtimes.
const SPEC_KEYS: &[&str] = &[
    "cniVersion",
    "cniVersions",
    "name",
    "type",
    "capabilities",
    "runtimeConfig",
    "args",
    "prevResult",
    "dns",
    "ipMasq",
    "ipam",
];
/// Our own keys.
const OWN_KEYS: &[&str] = &["bridge", "isGateway", "isDefaultGateway", "hairpinMode", "mtu"];

/// A validated plugin configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// `cniVersion`.
    pub version: CniVersion,
    /// `name`: the network name, also the IPAM store directory name.
    pub name: String,
    /// `bridge` [cni0].
    pub bridge: String,
    /// `isGateway` [false]: put the gateway address on the bridge and enable forwarding.
    pub is_gateway: bool,
    /// `isDefaultGateway` [false]: implies `isGateway`, adds a default route via the gateway.
    pub is_default_gateway: bool,
    /// `hairpinMode` [true]: hairpin on the host veth's bridge port (pod → own Service VIP).
    pub hairpin: bool,
    /// `mtu`: bridge (on creation) and both veth ends; kernel default when absent.
    pub mtu: Option<u32>,
    /// `ipam`: host-local keys.
    pub ipam: Ipam,
    /// `dns`, copied into the result.
    pub dns: Map<String, Value>,
    /// `prevResult` (DEL, CHECK, chained ADD).
    pub prev_result: Option<CniResult>,
    /// `cni.dev/valid-attachments` (or libcni's `cni.dev/attachments`) for GC: `(containerID, ifname)`.
    pub valid_attachments: Option<Vec<(String, String)>>,
}

/// The `cniVersion` of a request, as a string, if it can be read at all (used to version error replies).
pub fn peek_version(stdin: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

/// Parse stdin into JSON, mapping failures to codes 6 (decode).
pub fn parse_json(stdin: &[u8]) -> Result<Value, CniError> {
    if stdin.iter().all(u8::is_ascii_whitespace) {
        return Err(CniError::new(code::DECODE, "stdin: empty, expected the network configuration as JSON"));
    }
    serde_json::from_slice(stdin).map_err(|e| CniError::new(code::DECODE, format!("stdin: invalid JSON: {e}")))
}

/// Read and check `cniVersion` (missing means 0.1.0, which we do not speak: code 1).
pub fn parse_version(v: &Value) -> Result<CniVersion, CniError> {
    let raw = match v.get("cniVersion") {
        None | Some(Value::Null) => "0.1.0".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    CniVersion::parse(&raw).ok_or_else(|| {
        CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("cniVersion {raw:?} is not supported; supported versions: {}", SUPPORTED.join(", ")),
        )
    })
}

/// Parse and validate the whole configuration.
pub fn load_net_conf(stdin: &[u8]) -> Result<NetConf, CniError> {
    let v = parse_json(stdin)?;
    let obj =
        v.as_object().ok_or_else(|| CniError::new(code::DECODE, "stdin: the configuration is not a JSON object"))?;
    let version = parse_version(&v)?;
    if let Some((k, val)) = obj.iter().find(|(k, _)| {
        !SPEC_KEYS.contains(&k.as_str()) && !OWN_KEYS.contains(&k.as_str()) && !k.starts_with("cni.dev/")
    }) {
        return Err(ConfigError::Unsupported { field: k.clone(), value: val.to_string() }.into());
    }
    let name = obj.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    if name.is_empty() {
        return Err(ConfigError::missing("name").into());
    }
    if !valid_name(&name) {
        return Err(ConfigError::invalid("name", format!("{name:?} must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")).into());
    }
    if opt_str(obj, "", "type")?.is_none() {
        return Err(ConfigError::missing("type").into());
    }
    let bridge = opt_str(obj, "", "bridge")?.unwrap_or(DEFAULT_BRIDGE).to_string();
    if let Err(why) = validate_ifname(&bridge) {
        return Err(ConfigError::invalid("bridge", format!("{bridge:?} {why}")).into());
    }
    let mtu = opt_u32(obj, "", "mtu")?;
    if let Some(m) = mtu
        && !(68..=65535).contains(&m)
    {
        return Err(ConfigError::invalid("mtu", format!("{m} is outside 68..65535")).into());
    }
    if opt_bool(obj, "", "ipMasq")? == Some(true) {
        return Err(ConfigError::Unsupported {
            field: "ipMasq".into(),
            value: "true (masquerading is done node-wide by causeway-node)".into(),
        }
        .into());
    }
    let is_default_gateway = opt_bool(obj, "", "isDefaultGateway")?.unwrap_or(false);
    let is_gateway = opt_bool(obj, "", "isGateway")?.unwrap_or(false) || is_default_gateway;
    let hairpin = opt_bool(obj, "", "hairpinMode")?.unwrap_or(true);
    let ipam_v = obj.get("ipam").ok_or_else(|| ConfigError::missing("ipam"))?;
    let ipam = IpamConf::from_json(ipam_v, "ipam")?.validate("ipam")?;
    let dns = match obj.get("dns") {
        None | Some(Value::Null) => Map::new(),
        Some(d) => {
            let d = as_object(d, "dns")?;
            check_keys(d, "dns", &["nameservers", "domain", "search", "options"])?;
            d.clone()
        }
    };
    let prev_result = match obj.get("prevResult") {
        None | Some(Value::Null) => None,
        Some(p) => Some(CniResult::from_json(p).map_err(|e| CniError::new(code::DECODE, e))?),
    };
    let valid_attachments = match obj.get("cni.dev/valid-attachments").or_else(|| obj.get("cni.dev/attachments")) {
        None | Some(Value::Null) => None,
        Some(a) => Some(parse_attachments(a)?),
    };
    Ok(NetConf {
        version,
        name,
        bridge,
        is_gateway,
        is_default_gateway,
        hairpin,
        mtu,
        ipam,
        dns,
        prev_result,
        valid_attachments,
    })
}

fn parse_attachments(v: &Value) -> Result<Vec<(String, String)>, CniError> {
    let field = "cni.dev/valid-attachments";
    let arr = v.as_array().ok_or_else(|| ConfigError::invalid(field, "not an array"))?;
    let mut out = Vec::new();
    for (i, a) in arr.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let o = as_object(a, &f)?;
        let id = o
            .get("containerID")
            .and_then(Value::as_str)
            .ok_or_else(|| ConfigError::missing(format!("{f}.containerID")))?;
        let ifname =
            o.get("ifname").and_then(Value::as_str).ok_or_else(|| ConfigError::missing(format!("{f}.ifname")))?;
        out.push((id.to_string(), ifname.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
