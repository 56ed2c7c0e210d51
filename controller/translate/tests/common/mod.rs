//! Test helpers: YAML fixtures to an index, and compact renderings of tables for snapshot comparison.
#![allow(dead_code)]

use causeway_model::{Diagnostic, PathMatch, Route, RouteTable};
use causeway_translate::{Index, Kind, KubeObject};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde_json::Value;

/// Parse multi-document YAML into objects. Fixtures are written fully (no defaulting here: that is the source's
/// job and is tested there); a namespaced object without a namespace gets `default`.
pub fn objects(yaml: &str) -> Vec<KubeObject> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("fixture YAML parses");
    docs.into_iter()
        .filter(|d| !d.is_null())
        .map(|mut d| {
            let api = d["apiVersion"].as_str().expect("apiVersion").to_owned();
            let kind_name = d["kind"].as_str().expect("kind").to_owned();
            let kind = Kind::from_api(&api, &kind_name).unwrap_or_else(|| panic!("fixture kind {api} {kind_name}"));
            if kind.is_namespaced() && d.pointer("/metadata/namespace").is_none() {
                d["metadata"]["namespace"] = Value::String("default".into());
            }
            match kind {
                Kind::Namespace => KubeObject::from(serde_json::from_value::<Namespace>(d).expect("Namespace")),
                Kind::Service => KubeObject::from(serde_json::from_value::<Service>(d).expect("Service")),
                Kind::Secret => KubeObject::from(serde_json::from_value::<Secret>(d).expect("Secret")),
                Kind::Node => KubeObject::from(serde_json::from_value::<Node>(d).expect("Node")),
                Kind::ConfigMap => KubeObject::from(serde_json::from_value::<ConfigMap>(d).expect("ConfigMap")),
                Kind::Ingress => KubeObject::from(serde_json::from_value::<Ingress>(d).expect("Ingress")),
                Kind::IngressClass => {
                    KubeObject::from(serde_json::from_value::<IngressClass>(d).expect("IngressClass"))
                }
                Kind::EndpointSlice => {
                    KubeObject::from(serde_json::from_value::<EndpointSlice>(d).expect("EndpointSlice"))
                }
                Kind::IpPool => {
                    KubeObject::from(serde_json::from_value::<causeway_translate::IpPool>(d).expect("IPPool"))
                }
            }
        })
        .collect()
}

/// An index holding the objects of `yaml`.
pub fn index(yaml: &str) -> Index {
    let mut index = Index::new();
    for obj in objects(yaml) {
        index.apply(obj);
    }
    index
}

/// The IngressClass `causeway` of our controller, not the default.
pub const CLASS: &str = "
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: causeway}
spec: {controller: causeway.dev/ingress-controller}
";

/// A Service `name` with one TCP port 80 named `http` (target 8080) and a slice with ready endpoints `ips`.
pub fn service(name: &str, ips: &[&str]) -> String {
    let eps: String =
        ips.iter().map(|ip| format!("  - addresses: [\"{ip}\"]\n    conditions: {{ready: true}}\n")).collect();
    let eps = if eps.is_empty() { "  []\n".to_owned() } else { eps };
    format!(
        "---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  clusterIP: 10.96.0.10
  ports: [{{name: http, port: 80, protocol: TCP, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
{eps}"
    )
}

fn path(p: &PathMatch) -> String {
    match p {
        PathMatch::Exact(p) => format!("Exact {p}"),
        PathMatch::Prefix(p) => format!("Prefix {p}"),
    }
}

fn route(r: &Route) -> String {
    let eps: Vec<String> = r.backend.endpoints.iter().map(|e| e.address.to_string()).collect();
    format!(
        "{} -> {} [{}] ({}/{}){}",
        path(&r.path),
        r.backend.service,
        eps.join(" "),
        r.ingress.namespace,
        r.ingress.name,
        if r.ssl_redirect { " redirect" } else { "" }
    )
}

/// One line per host, route, certificate and listener.
pub fn render_routes(t: &RouteTable) -> String {
    let mut out = Vec::new();
    for vh in &t.virtual_hosts {
        out.push(format!("host {}", vh.host));
        for r in &vh.routes {
            out.push(format!("  {}", route(r)));
        }
    }
    if let Some(r) = &t.default_route {
        out.push(format!("default {}", route(r)));
    }
    for c in &t.certificates {
        let hosts: Vec<String> = c.hosts.iter().map(ToString::to_string).collect();
        out.push(format!("cert {}/{}: {}", c.secret.namespace, c.secret.name, hosts.join(" ")));
    }
    if let Some(c) = &t.default_certificate {
        out.push(format!("default-cert {}/{}", c.secret.namespace, c.secret.name));
    }
    for l in &t.l4_listeners {
        let eps: Vec<String> = l.endpoints.iter().map(|e| e.address.to_string()).collect();
        out.push(format!("l4 {:?} {} -> {} [{}]", l.protocol, l.listen, l.service, eps.join(" ")));
    }
    out.join("\n")
}

/// One line per diagnostic: severity, object, field (messages are checked separately where they matter).
pub fn render_diags(diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| format!("{:?} {} {}", d.severity, d.object, d.field)).collect::<Vec<_>>().join("\n")
}

/// Compare rendered text with the expected snapshot, ignoring common indentation and surrounding blank lines.
#[track_caller]
pub fn assert_text(actual: &str, expected: &str) {
    let lines: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
    let indent = lines.iter().map(|l| l.len() - l.trim_start().len()).min().unwrap_or(0);
    let expected: Vec<&str> = lines.iter().map(|l| &l[indent.min(l.len())..]).map(str::trim_end).collect();
    let actual: Vec<&str> = actual.lines().map(str::trim_end).collect();
    assert_eq!(actual, expected, "\n--- actual ---\n{}\n", actual.join("\n"));
}
