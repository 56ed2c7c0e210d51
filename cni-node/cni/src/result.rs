//! The ADD result: one internal model, one serializer per target version, and a lenient parser for
//! `prevResult` in any supported version.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value, json};

use crate::version::CniVersion;

/// An interface of the result.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interface {
    /// Name.
    pub name: String,
    /// MAC, `aa:bb:...`.
    pub mac: Option<String>,
    /// MTU (emitted for 1.1.0 only).
    pub mtu: Option<u32>,
    /// `CNI_NETNS` for interfaces inside the container, `None` on the host.
    pub sandbox: Option<String>,
}

/// An address of the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpEntry {
    /// Address with prefix.
    pub address: IpNet,
    /// Gateway.
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

/// A route of the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop.
    pub gw: Option<IpAddr>,
}

/// The result of ADD (and the `prevResult` of DEL/CHECK).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CniResult {
    /// Interfaces created.
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    pub ips: Vec<IpEntry>,
    /// Routes installed in the container.
    pub routes: Vec<Route>,
    /// DNS settings, passed through as given in the configuration.
    pub dns: Map<String, Value>,
}

impl CniResult {
    /// Serialize for `version`: 0.3.x/0.4.0 add `ips[].version`; only 1.1.0 carries interface `mtu`.
    pub fn to_json(&self, version: CniVersion) -> Value {
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut o = Map::new();
                o.insert("name".into(), json!(i.name));
                if let Some(mac) = &i.mac {
                    o.insert("mac".into(), json!(mac));
                }
                if let (Some(mtu), CniVersion::V1_1_0) = (i.mtu, version) {
                    o.insert("mtu".into(), json!(mtu));
                }
                if let Some(sb) = &i.sandbox {
                    o.insert("sandbox".into(), json!(sb));
                }
                Value::Object(o)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = Map::new();
                if version.legacy_result() {
                    o.insert("version".into(), json!(if ip.address.addr().is_ipv4() { "4" } else { "6" }));
                }
                if let Some(i) = ip.interface {
                    o.insert("interface".into(), json!(i));
                }
                o.insert("address".into(), json!(ip.address.to_string()));
                if let Some(gw) = ip.gateway {
                    o.insert("gateway".into(), json!(gw.to_string()));
                }
                Value::Object(o)
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| match r.gw {
                Some(gw) => json!({"dst": r.dst.to_string(), "gw": gw.to_string()}),
                None => json!({"dst": r.dst.to_string()}),
            })
            .collect();
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version.as_str()));
        if !interfaces.is_empty() {
            out.insert("interfaces".into(), Value::Array(interfaces));
        }
        if !ips.is_empty() {
            out.insert("ips".into(), Value::Array(ips));
        }
        if !routes.is_empty() {
            out.insert("routes".into(), Value::Array(routes));
        }
        out.insert("dns".into(), Value::Object(self.dns.clone()));
        Value::Object(out)
    }

    /// Parse a result of any supported version (unknown keys are ignored: the result may come from a
    /// chain). Errors name the offending field under `prevResult`.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let obj = v.as_object().ok_or("prevResult: not a JSON object")?;
        let mut out = CniResult::default();
        let arr = |k: &str| -> Result<Vec<Value>, String> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(a)) => Ok(a.clone()),
                Some(_) => Err(format!("prevResult.{k}: not an array")),
            }
        };
        let s = |o: &Map<String, Value>, k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
        for (i, iv) in arr("interfaces")?.iter().enumerate() {
            let o = iv.as_object().ok_or(format!("prevResult.interfaces[{i}]: not an object"))?;
            out.interfaces.push(Interface {
                name: s(o, "name").ok_or(format!("prevResult.interfaces[{i}].name: missing"))?,
                mac: s(o, "mac").filter(|m| !m.is_empty()),
                mtu: o.get("mtu").and_then(Value::as_u64).and_then(|m| u32::try_from(m).ok()),
                sandbox: s(o, "sandbox").filter(|m| !m.is_empty()),
            });
        }
        for (i, iv) in arr("ips")?.iter().enumerate() {
            let o = iv.as_object().ok_or(format!("prevResult.ips[{i}]: not an object"))?;
            let address = s(o, "address")
                .and_then(|a| a.parse::<IpNet>().ok())
                .ok_or(format!("prevResult.ips[{i}].address: missing or not a CIDR"))?;
            let gateway = match s(o, "gateway") {
                Some(g) => Some(g.parse().map_err(|_| format!("prevResult.ips[{i}].gateway: not an IP"))?),
                None => None,
            };
            let interface = match o.get("interface") {
                None | Some(Value::Null) => None,
                Some(x) => Some(
                    x.as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or(format!("prevResult.ips[{i}].interface: not an index"))?,
                ),
            };
            out.ips.push(IpEntry { address, gateway, interface });
        }
        for (i, rv) in arr("routes")?.iter().enumerate() {
            let o = rv.as_object().ok_or(format!("prevResult.routes[{i}]: not an object"))?;
            let dst = s(o, "dst")
                .and_then(|a| a.parse::<IpNet>().ok())
                .ok_or(format!("prevResult.routes[{i}].dst: missing or not a CIDR"))?;
            let gw = match s(o, "gw") {
                Some(g) => Some(g.parse().map_err(|_| format!("prevResult.routes[{i}].gw: not an IP"))?),
                None => None,
            };
            out.routes.push(Route { dst, gw });
        }
        if let Some(Value::Object(d)) = obj.get("dns") {
            out.dns = d.clone();
        }
        Ok(out)
    }

    /// Chain semantics for ADD: a plugin that is not first in a chain receives `prevResult` and must pass
    /// it on, amended. Our interfaces are appended after the previous ones (our `ips[].interface`
    /// indexes shift accordingly), addresses and routes follow the previous ones, and our DNS replaces
    /// theirs only when we have some.
    pub fn chained_after(self, prev: &CniResult) -> CniResult {
        let offset = prev.interfaces.len();
        let mut out = prev.clone();
        out.interfaces.extend(self.interfaces);
        out.ips.extend(self.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + offset);
            ip
        }));
        out.routes.extend(self.routes);
        if !self.dns.is_empty() {
            out.dns = self.dns;
        }
        out
    }

    /// The container-side interface: the one named `ifname` with a sandbox.
    pub fn container_interface(&self, ifname: &str) -> Option<(usize, &Interface)> {
        self.interfaces.iter().enumerate().find(|(_, i)| i.name == ifname && i.sandbox.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "cni0".into(),
                    mac: Some("02:00:00:00:00:01".into()),
                    mtu: Some(1500),
                    sandbox: None,
                },
                Interface {
                    name: "veth01234567".into(),
                    mac: Some("02:00:00:00:00:02".into()),
                    mtu: Some(1500),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("02:00:00:00:00:03".into()),
                    mtu: Some(1500),
                    sandbox: Some("/run/netns/p".into()),
                },
            ],
            ips: vec![IpEntry {
                address: "10.244.1.2/24".parse().unwrap(),
                gateway: Some("10.244.1.1".parse().unwrap()),
                interface: Some(2),
            }],
            routes: vec![Route { dst: "0.0.0.0/0".parse().unwrap(), gw: Some("10.244.1.1".parse().unwrap()) }],
            dns: Map::new(),
        }
    }

    #[test]
    fn per_version_shape() {
        let r = sample();
        for v in crate::version::SUPPORTED {
            let ver = CniVersion::parse(v).unwrap();
            let j = r.to_json(ver);
            assert_eq!(j["cniVersion"], *v);
            assert_eq!(j["ips"][0]["interface"], 2);
            assert_eq!(j["ips"][0].get("version").is_some(), ver.legacy_result(), "{v}");
            assert_eq!(j["interfaces"][2].get("mtu").is_some(), ver == CniVersion::V1_1_0, "{v}");
            assert_eq!(j["interfaces"][2]["sandbox"], "/run/netns/p");
            assert!(j["interfaces"][0].get("sandbox").is_none());
            assert_eq!(j["dns"], json!({}));
            // Round trip: the result of every version parses back to the same model (mtu aside).
            let back = CniResult::from_json(&j).unwrap();
            assert_eq!(back.ips, r.ips);
            assert_eq!(back.routes, r.routes);
            assert_eq!(back.container_interface("eth0").map(|(i, _)| i), Some(2));
        }
    }

    #[test]
    fn chained_add_appends_to_prev_result() {
        let prev = CniResult {
            interfaces: vec![Interface {
                name: "lo".into(),
                sandbox: Some("/run/netns/p".into()),
                ..Default::default()
            }],
            ips: vec![IpEntry { address: "127.0.0.1/8".parse().unwrap(), gateway: None, interface: Some(0) }],
            routes: vec![],
            dns: serde_json::from_value(json!({"nameservers": ["10.96.0.10"]})).unwrap(),
        };
        let merged = sample().chained_after(&prev);
        assert_eq!(merged.interfaces.len(), 4);
        assert_eq!(merged.ips[0].interface, Some(0));
        assert_eq!(merged.ips[1].interface, Some(3));
        assert_eq!(merged.container_interface("eth0").map(|(i, _)| i), Some(3));
        assert_eq!(merged.routes.len(), 1);
        assert_eq!(merged.dns["nameservers"], json!(["10.96.0.10"]));
    }

    #[test]
    fn bad_prev_result_names_field() {
        let cases = [
            (json!([]), "prevResult"),
            (json!({"ips": [{"address": "nope"}]}), "prevResult.ips[0].address"),
            (json!({"ips": [{"address": "10.0.0.2/24", "interface": -1}]}), "prevResult.ips[0].interface"),
            (json!({"routes": [{"gw": "10.0.0.1"}]}), "prevResult.routes[0].dst"),
            (json!({"interfaces": [{}]}), "prevResult.interfaces[0].name"),
        ];
        for (v, field) in cases {
            let e = CniResult::from_json(&v).unwrap_err();
            assert!(e.starts_with(field), "{v}: {e}");
        }
    }
}
