//! The `ipam` section of a CNI network configuration, host-local's keys, parsed by hand so that every
//! error names its field (`ipam.ranges[0][0].rangeStart`) and unknown keys are refused instead of ignored.
//!
//! Parsing ([`IpamConf::from_json`]) is separate from validation ([`IpamConf::validate`]), which yields
//! the [`Ipam`] the allocator works with.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::error::ConfigError;
use crate::range::{Range, RangeSet};

/// host-local's default store root.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// IPAM types we serve in-process. We do not exec a delegate: `host-local` names the on-disk format we
/// are compatible with.
pub const SUPPORTED_TYPES: &[&str] = &["host-local", "causeway"];

/// One configured range, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeConf {
    /// `subnet`, required.
    pub subnet: IpNet,
    /// `rangeStart`, inclusive.
    pub range_start: Option<IpAddr>,
    /// `rangeEnd`, inclusive.
    pub range_end: Option<IpAddr>,
    /// `gateway`.
    pub gateway: Option<IpAddr>,
}

/// A route to hand to the container, from `ipam.routes` (or the plugin's defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConf {
    /// Destination.
    pub dst: IpNet,
    /// Next hop; when absent the gateway of the same family is used.
    pub gw: Option<IpAddr>,
}

/// The parsed, not yet validated, `ipam` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConf {
    /// `type`.
    pub kind: String,
    /// `ranges`, with a legacy flat `subnet` prepended as its own set.
    pub ranges: Vec<Vec<RangeConf>>,
    /// `routes`.
    pub routes: Vec<RouteConf>,
    /// `dataDir`.
    pub data_dir: Option<PathBuf>,
}

/// The validated IPAM configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipam {
    /// One address is allocated from each set.
    pub sets: Vec<RangeSet>,
    /// Routes for the result.
    pub routes: Vec<RouteConf>,
    /// Store root (the network's directory is below it).
    pub data_dir: PathBuf,
}

// === impl IpamConf ===

impl IpamConf {
    /// Parse the `ipam` object. `field` is its path in the document (normally `ipam`).
    pub fn from_json(value: &Value, field: &str) -> Result<Self, ConfigError> {
        let obj = as_object(value, field)?;
        check_keys(
            obj,
            field,
            &["type", "ranges", "routes", "dataDir", "subnet", "rangeStart", "rangeEnd", "gateway"],
        )?;
        let kind = req_str(obj, field, "type")?.to_string();
        if !SUPPORTED_TYPES.contains(&kind.as_str()) {
            return Err(ConfigError::Unsupported { field: format!("{field}.type"), value: format!("{kind:?}") });
        }
        let mut ranges = Vec::new();
        // host-local converts the legacy flat form into a first range set.
        if obj.contains_key("subnet") {
            ranges.push(vec![range_conf(obj, field)?]);
        } else {
            for key in ["rangeStart", "rangeEnd", "gateway"] {
                if obj.contains_key(key) {
                    return Err(ConfigError::invalid(format!("{field}.{key}"), "only valid together with ipam.subnet"));
                }
            }
        }
        if let Some(v) = obj.get("ranges") {
            let sets = v.as_array().ok_or_else(|| ConfigError::invalid(format!("{field}.ranges"), "not an array"))?;
            for (i, set) in sets.iter().enumerate() {
                let set_field = format!("{field}.ranges[{i}]");
                let items = set.as_array().ok_or_else(|| ConfigError::invalid(&set_field, "not an array"))?;
                let mut out = Vec::new();
                for (j, r) in items.iter().enumerate() {
                    let rf = format!("{set_field}[{j}]");
                    let robj = as_object(r, &rf)?;
                    check_keys(robj, &rf, &["subnet", "rangeStart", "rangeEnd", "gateway"])?;
                    out.push(range_conf(robj, &rf)?);
                }
                ranges.push(out);
            }
        }
        let routes = match obj.get("routes") {
            Some(v) => parse_routes(v, &format!("{field}.routes"))?,
            None => Vec::new(),
        };
        let data_dir = opt_str(obj, field, "dataDir")?.map(PathBuf::from);
        Ok(IpamConf { kind, ranges, routes, data_dir })
    }

    /// Validate ranges the way host-local does: every set non-empty, one family per set, no overlap within
    /// or between sets.
    pub fn validate(&self, field: &str) -> Result<Ipam, ConfigError> {
        if self.ranges.is_empty() {
            return Err(ConfigError::missing(format!("{field}.ranges")));
        }
        let mut sets: Vec<RangeSet> = Vec::new();
        for (i, set) in self.ranges.iter().enumerate() {
            let set_field = format!("{field}.ranges[{i}]");
            if set.is_empty() {
                return Err(ConfigError::invalid(&set_field, "empty range set"));
            }
            let mut ranges: Vec<Range> = Vec::new();
            for (j, rc) in set.iter().enumerate() {
                let rf = format!("{set_field}[{j}]");
                let r = Range::try_new(rc, &rf)?;
                if let Some(first) = ranges.first()
                    && first.subnet.addr().is_ipv4() != r.subnet.addr().is_ipv4()
                {
                    return Err(ConfigError::invalid(&rf, "mixes address families within one range set"));
                }
                if let Some(other) = ranges.iter().find(|o| o.overlaps(&r)) {
                    return Err(ConfigError::invalid(&rf, format!("range {r} overlaps {other}")));
                }
                ranges.push(r);
            }
            let new = RangeSet(ranges);
            if let Some(k) = sets.iter().position(|s| s.overlaps(&new)) {
                return Err(ConfigError::invalid(&set_field, format!("overlaps {field}.ranges[{k}]")));
            }
            sets.push(new);
        }
        let data_dir = self.data_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        if !data_dir.is_absolute() {
            return Err(ConfigError::invalid(
                format!("{field}.dataDir"),
                format!("{} is not absolute", data_dir.display()),
            ));
        }
        Ok(Ipam { sets, routes: self.routes.clone(), data_dir })
    }
}

fn range_conf(obj: &Map<String, Value>, field: &str) -> Result<RangeConf, ConfigError> {
    let subnet_s = req_str(obj, field, "subnet")?;
    let subnet: IpNet = subnet_s
        .parse()
        .map_err(|_| ConfigError::invalid(format!("{field}.subnet"), format!("{subnet_s:?} is not a CIDR")))?;
    Ok(RangeConf {
        subnet,
        range_start: opt_ip(obj, field, "rangeStart")?,
        range_end: opt_ip(obj, field, "rangeEnd")?,
        gateway: opt_ip(obj, field, "gateway")?,
    })
}

/// Parse a `routes` array of `{dst, gw?}`.
pub fn parse_routes(value: &Value, field: &str) -> Result<Vec<RouteConf>, ConfigError> {
    let arr = value.as_array().ok_or_else(|| ConfigError::invalid(field, "not an array"))?;
    let mut out = Vec::new();
    for (i, r) in arr.iter().enumerate() {
        let rf = format!("{field}[{i}]");
        let obj = as_object(r, &rf)?;
        check_keys(obj, &rf, &["dst", "gw"])?;
        let dst_s = req_str(obj, &rf, "dst")?;
        let dst: IpNet =
            dst_s.parse().map_err(|_| ConfigError::invalid(format!("{rf}.dst"), format!("{dst_s:?} is not a CIDR")))?;
        let gw = opt_ip(obj, &rf, "gw")?;
        if let Some(gw) = gw
            && gw.is_ipv4() != dst.addr().is_ipv4()
        {
            return Err(ConfigError::invalid(format!("{rf}.gw"), format!("{gw} is not of the family of {dst}")));
        }
        out.push(RouteConf { dst: dst.trunc(), gw });
    }
    Ok(out)
}

// === JSON helpers (shared with the CNI crate) ===

/// `value` as an object, or an error naming `field`.
pub fn as_object<'a>(value: &'a Value, field: &str) -> Result<&'a Map<String, Value>, ConfigError> {
    value.as_object().ok_or_else(|| ConfigError::invalid(field, "not a JSON object"))
}

/// Refuse keys outside `allowed`, naming the first unknown key and its value.
pub fn check_keys(obj: &Map<String, Value>, field: &str, allowed: &[&str]) -> Result<(), ConfigError> {
    match obj.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        Some((k, v)) => Err(ConfigError::Unsupported { field: join(field, k), value: v.to_string() }),
        None => Ok(()),
    }
}

/// An optional string key.
pub fn opt_str<'a>(obj: &'a Map<String, Value>, field: &str, key: &str) -> Result<Option<&'a str>, ConfigError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(ConfigError::invalid(join(field, key), format!("expected a string, got {v}"))),
    }
}

/// A required, non-empty string key.
pub fn req_str<'a>(obj: &'a Map<String, Value>, field: &str, key: &str) -> Result<&'a str, ConfigError> {
    match opt_str(obj, field, key)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(ConfigError::missing(join(field, key))),
    }
}

/// An optional IP address key.
pub fn opt_ip(obj: &Map<String, Value>, field: &str, key: &str) -> Result<Option<IpAddr>, ConfigError> {
    opt_str(obj, field, key)?
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| ConfigError::invalid(join(field, key), format!("{s:?} is not an IP address")))
        })
        .transpose()
}

/// An optional boolean key.
pub fn opt_bool(obj: &Map<String, Value>, field: &str, key: &str) -> Result<Option<bool>, ConfigError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(ConfigError::invalid(join(field, key), format!("expected true or false, got {v}"))),
    }
}

/// An optional unsigned integer key.
pub fn opt_u32(obj: &Map<String, Value>, field: &str, key: &str) -> Result<Option<u32>, ConfigError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| ConfigError::invalid(join(field, key), format!("expected an unsigned integer, got {v}"))),
    }
}

fn join(field: &str, key: &str) -> String {
    if field.is_empty() { key.to_string() } else { format!("{field}.{key}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Result<Ipam, ConfigError> {
        IpamConf::from_json(&v, "ipam")?.validate("ipam")
    }

    #[test]
    fn defaults_follow_host_local() {
        let ipam = check(json!({"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]]})).unwrap();
        let r = &ipam.sets[0].0[0];
        assert_eq!(r.start.to_string(), "10.244.1.1");
        assert_eq!(r.end.to_string(), "10.244.1.254");
        assert_eq!(r.gateway.to_string(), "10.244.1.1");
        assert_eq!(ipam.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        let v6 = check(json!({"type": "host-local", "ranges": [[{"subnet": "fd00::/120"}]]})).unwrap();
        assert_eq!(v6.sets[0].0[0].end.to_string(), "fd00::ff");
    }

    #[test]
    fn legacy_subnet_is_first_set() {
        let ipam = check(json!({"type": "host-local", "subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10",
            "ranges": [[{"subnet": "fd00::/64"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "/tmp/x"}))
        .unwrap();
        assert_eq!(ipam.sets.len(), 2);
        assert_eq!(ipam.sets[0].0[0].start.to_string(), "10.0.0.10");
        assert_eq!(ipam.routes, vec![RouteConf { dst: "0.0.0.0/0".parse().unwrap(), gw: None }]);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!({"type": "host-local"}), "ipam.ranges"),
            (json!({"ranges": [[{"subnet": "10.0.0.0/24"}]]}), "ipam.type"),
            (json!({"type": "dhcp", "ranges": [[{"subnet": "10.0.0.0/24"}]]}), "ipam.type"),
            (
                json!({"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24", "rangestart": "10.0.0.5"}]]}),
                "ipam.ranges[0][0].rangestart",
            ),
            (json!({"type": "host-local", "ranges": [[{"subnet": "10.0.0.1/24"}]]}), "ipam.ranges[0][0].subnet"),
            (json!({"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/31"}]]}), "ipam.ranges[0][0].subnet"),
            (json!({"type": "host-local", "ranges": [[{"subnet": "banana"}]]}), "ipam.ranges[0][0].subnet"),
            (
                json!({"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24", "rangeEnd": "10.0.1.5"}]]}),
                "ipam.ranges[0][0].rangeEnd",
            ),
            (
                json!({"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.9", "rangeEnd": "10.0.0.5"}]]}),
                "ipam.ranges[0][0].rangeStart",
            ),
            (
                json!({"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.0.0/25"}]]}),
                "ipam.ranges[0][1]",
            ),
            (
                json!({"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/24"}]]}),
                "ipam.ranges[1]",
            ),
            (
                json!({"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]]}),
                "ipam.ranges[0][1]",
            ),
            (
                json!({"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0", "gw": "fd00::1"}]}),
                "ipam.routes[0].gw",
            ),
            (json!({"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24"}]], "dataDir": "rel"}), "ipam.dataDir"),
            (
                json!({"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24"}]], "resolvConf": "/etc/resolv.conf"}),
                "ipam.resolvConf",
            ),
            (json!("x"), "ipam"),
        ];
        for (input, field) in cases {
            let err = check(input.clone()).expect_err(&input.to_string());
            let named = match &err {
                ConfigError::Unsupported { field, .. }
                | ConfigError::Missing { field }
                | ConfigError::Invalid { field, .. } => field.clone(),
            };
            assert_eq!(named, field, "{input} -> {err}");
        }
    }
}
