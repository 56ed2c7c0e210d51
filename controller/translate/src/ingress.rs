//! Ingress v1 to the L7 part of the route table.

use crate::endpoints::{service_endpoints, usable};
use crate::index::Index;
use crate::tls::{CertKey, cert_key, default_certificate};
use crate::{DEFAULT_CLASS_ANNOTATION, LEGACY_CLASS_ANNOTATION, SSL_REDIRECT_ANNOTATION, TranslateConfig};
use causeway_model::{
    Backend, Diagnostic, HostPattern, ObjectRef, PathMatch, Route, RouteTable, ServiceRef, TlsCertificate, VirtualHost,
};
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// Path types of `spec.rules[].http.paths[].pathType`.
const PATH_TYPES: &str = "Exact, Prefix or ImplementationSpecific";

/// One of our Ingresses, with what every rule of it needs.
struct Ours<'a> {
    ing: &'a Ingress,
    obj: ObjectRef,
    namespace: String,
    /// `causeway.dev/ssl-redirect: "false"`.
    redirect_off: bool,
}

/// A route being assembled for one (host, path).
struct Slot {
    route: Route,
    /// Came from an Ingress's `spec.defaultBackend` (explicit paths override it silently).
    from_default_backend: bool,
    redirect_off: bool,
}

pub(crate) fn translate(index: &Index, config: &TranslateConfig, diags: &mut Vec<Diagnostic>) -> RouteTable {
    let mut ours: Vec<(&Arc<Ingress>, ObjectRef)> = Vec::new();
    for ing in index.ingresses() {
        let obj = ingress_ref(ing);
        if is_ours(ing, &obj, index, config, diags) {
            ours.push((ing, obj));
        }
    }
    // Oldest first: creationTimestamp (a missing one sorts last), then namespace/name.
    ours.sort_by(|(a, ao), (b, bo)| {
        let ta = &a.metadata.creation_timestamp;
        let tb = &b.metadata.creation_timestamp;
        (ta.is_none(), ta, ao).cmp(&(tb.is_none(), tb, bo))
    });
    let ours: Vec<Ours<'_>> = ours
        .into_iter()
        .map(|(ing, obj)| Ours {
            ing,
            namespace: obj.namespace.clone(),
            obj,
            redirect_off: ing
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SSL_REDIRECT_ANNOTATION))
                .is_some_and(|v| v.eq_ignore_ascii_case("false")),
        })
        .collect();

    let tls = collect_tls(&ours, index, diags);

    let mut hosts: BTreeMap<HostPattern, BTreeMap<PathMatch, Slot>> = BTreeMap::new();
    // Explicit paths first, oldest Ingress first, so that the first holder of a (host, path) is the winner.
    for o in &ours {
        for (ri, rule) in o.ing.spec.iter().flat_map(|s| s.rules.iter().flatten()).enumerate() {
            let Some(host) = rule_host(rule.host.as_deref(), &o.obj, ri, diags) else { continue };
            let Some(http) = &rule.http else { continue };
            for (pi, p) in http.paths.iter().enumerate() {
                let field = format!("spec.rules[{ri}].http.paths[{pi}]");
                let path = match path_match(p.path.as_deref(), &p.path_type) {
                    Ok(path) => path,
                    Err((sub, msg)) => {
                        diags.push(Diagnostic::error(o.obj.clone(), format!("{field}.{sub}"), msg));
                        continue;
                    }
                };
                let Some(backend) = resolve_backend(index, o, &p.backend, &format!("{field}.backend"), diags) else {
                    continue;
                };
                let vhost = hosts.entry(host.clone()).or_default();
                if let Some(existing) = vhost.get(&path) {
                    diags.push(conflict(o, &field, &host, &path, &existing.route.ingress));
                    continue;
                }
                let route = Route { path: path.clone(), backend, ingress: o.obj.clone(), ssl_redirect: false };
                vhost.insert(path, Slot { route, from_default_backend: false, redirect_off: o.redirect_off });
            }
        }
    }

    // Then default backends: unmatched paths of the Ingress's own hosts, and unmatched hosts for the oldest.
    let mut default_route: Option<Route> = None;
    for o in &ours {
        let Some(db) = o.ing.spec.as_ref().and_then(|s| s.default_backend.as_ref()) else { continue };
        let Some(backend) = resolve_backend(index, o, db, "spec.defaultBackend", diags) else { continue };
        let root = PathMatch::prefix("/");
        match &default_route {
            None => {
                default_route = Some(Route {
                    path: root.clone(),
                    backend: backend.clone(),
                    ingress: o.obj.clone(),
                    ssl_redirect: false,
                })
            }
            Some(winner) => diags.push(Diagnostic::warning(
                o.obj.clone(),
                "spec.defaultBackend",
                format!(
                    "the default backend of the older Ingress {}/{} serves unmatched hosts; this one serves only \
                     the unmatched paths of its own hosts",
                    winner.ingress.namespace, winner.ingress.name
                ),
            )),
        }
        for host in ingress_hosts(o.ing) {
            let vhost = hosts.entry(host.clone()).or_default();
            match vhost.get(&root) {
                None => {
                    let route = Route {
                        path: root.clone(),
                        backend: backend.clone(),
                        ingress: o.obj.clone(),
                        ssl_redirect: false,
                    };
                    vhost
                        .insert(root.clone(), Slot { route, from_default_backend: true, redirect_off: o.redirect_off });
                }
                Some(existing) if existing.from_default_backend && existing.route.ingress != o.obj => {
                    diags.push(Diagnostic::warning(
                        o.obj.clone(),
                        "spec.defaultBackend",
                        format!(
                            "host {host}: the default backend of the older Ingress {}/{} wins; this one is ignored \
                             for this host",
                            existing.route.ingress.namespace, existing.route.ingress.name
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
    }

    let virtual_hosts = hosts
        .into_iter()
        .map(|(host, routes)| {
            let has_tls = tls.covers(&host);
            let routes = routes
                .into_values()
                .map(|slot| Route { ssl_redirect: has_tls && !slot.redirect_off, ..slot.route })
                .collect();
            VirtualHost { host, routes }
        })
        .collect();

    RouteTable {
        virtual_hosts,
        default_route,
        certificates: tls.certificates(),
        default_certificate: default_certificate(index, config.default_tls_secret.as_ref(), diags),
        l4_listeners: Vec::new(),
        diagnostics: Vec::new(),
    }
}

fn ingress_ref(ing: &Ingress) -> ObjectRef {
    ObjectRef::new(
        "Ingress",
        ing.metadata.namespace.clone().unwrap_or_default(),
        ing.metadata.name.clone().unwrap_or_default(),
    )
}

/// The keys of every Ingress of our class.
pub(crate) fn owned(index: &Index, config: &TranslateConfig) -> std::collections::BTreeSet<crate::ObjectKey> {
    let mut ignored = Vec::new();
    index
        .ingresses()
        .filter(|ing| is_ours(ing, &ingress_ref(ing), index, config, &mut ignored))
        .map(|ing| {
            let obj = ingress_ref(ing);
            crate::ObjectKey::new(crate::Kind::Ingress, obj.namespace, obj.name)
        })
        .collect()
}

/// Ingress class selection (see [`crate::route_table`]).
fn is_ours(
    ing: &Ingress,
    obj: &ObjectRef,
    index: &Index,
    config: &TranslateConfig,
    diags: &mut Vec<Diagnostic>,
) -> bool {
    let legacy = ing.metadata.annotations.as_ref().and_then(|a| a.get(LEGACY_CLASS_ANNOTATION));
    let class_name = ing.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref()).filter(|c| !c.is_empty());
    match (class_name, legacy) {
        (Some(name), legacy) => {
            if name != config.ingress_class {
                return false;
            }
            if let Some(legacy) = legacy.filter(|l| **l != config.ingress_class) {
                diags.push(Diagnostic::warning(
                    obj.clone(),
                    format!("metadata.annotations[\"{LEGACY_CLASS_ANNOTATION}\"]"),
                    format!("the legacy class annotation ({legacy:?}) is ignored because spec.ingressClassName is set"),
                ));
            }
            match index.ingress_class(name) {
                None => {
                    diags.push(Diagnostic::error(
                        obj.clone(),
                        "spec.ingressClassName",
                        format!("IngressClass {name:?} does not exist; the Ingress is not served"),
                    ));
                    false
                }
                Some(class) => {
                    let controller = class.spec.as_ref().and_then(|s| s.controller.as_deref()).unwrap_or("");
                    if controller == config.controller_name {
                        true
                    } else {
                        diags.push(Diagnostic::warning(
                            obj.clone(),
                            "spec.ingressClassName",
                            format!(
                                "IngressClass {name:?} has spec.controller {controller:?}, not {:?}; the Ingress is \
                                 left to that controller",
                                config.controller_name
                            ),
                        ));
                        false
                    }
                }
            }
        }
        (None, Some(legacy)) => *legacy == config.ingress_class,
        (None, None) => {
            let is_default = |class: &IngressClass| {
                class
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                    .is_some_and(|v| v == "true")
            };
            let ours = index.ingress_class(&config.ingress_class).is_some_and(|class| {
                class.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(config.controller_name.as_str())
                    && is_default(class)
            });
            // With no default class at all, nobody serves this Ingress: say so. (When another class is the
            // default, the API server's admission would have given the Ingress that class.)
            if !ours && !index.ingress_classes().any(|c| is_default(c)) {
                diags.push(Diagnostic::warning(
                    obj.clone(),
                    "spec.ingressClassName",
                    format!(
                        "no ingressClassName and no default IngressClass; set ingressClassName: {} (or mark that \
                         IngressClass {DEFAULT_CLASS_ANNOTATION}: \"true\") for this controller to serve it",
                        config.ingress_class
                    ),
                ));
            }
            ours
        }
    }
}

/// The host of rule `ri`: `Any` when absent or empty, `None` (with a diagnostic) when invalid.
fn rule_host(host: Option<&str>, obj: &ObjectRef, ri: usize, diags: &mut Vec<Diagnostic>) -> Option<HostPattern> {
    match host {
        None | Some("") => Some(HostPattern::Any),
        Some(h) => match h.parse::<HostPattern>() {
            Ok(p) => Some(p),
            Err(e) => {
                diags.push(Diagnostic::error(
                    obj.clone(),
                    format!("spec.rules[{ri}].host"),
                    format!("{e}; the rule is ignored"),
                ));
                None
            }
        },
    }
}

/// Every valid host the Ingress's rules name (`Any` for host-less rules), for its default backend.
fn ingress_hosts(ing: &Ingress) -> BTreeSet<HostPattern> {
    ing.spec
        .iter()
        .flat_map(|s| s.rules.iter().flatten())
        .filter_map(|r| match r.host.as_deref() {
            None | Some("") => Some(HostPattern::Any),
            Some(h) => h.parse().ok(),
        })
        .collect()
}

/// Validate a path and its type the way the API server does, and turn it into a [`PathMatch`].
/// The error is (field under the path entry, message).
fn path_match(path: Option<&str>, path_type: &str) -> Result<PathMatch, (&'static str, String)> {
    let path = path.unwrap_or("");
    let is_prefix = match path_type {
        "Exact" => false,
        // We treat ImplementationSpecific exactly as Prefix (element-wise), which is what most controllers do.
        "Prefix" | "ImplementationSpecific" => true,
        "" => return Err(("pathType", format!("pathType is required ({PATH_TYPES}); the path is ignored"))),
        other => {
            return Err(("pathType", format!("pathType {other:?} is not one of {PATH_TYPES}; the path is ignored")));
        }
    };
    if path.is_empty() && path_type == "ImplementationSpecific" {
        return Ok(PathMatch::prefix("/"));
    }
    if !path.starts_with('/') {
        return Err(("path", format!("path {path:?} must be an absolute path starting with '/'; the path is ignored")));
    }
    if let Some(c) = path.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(("path", format!("path {path:?} contains the character {c:?}; the path is ignored")));
    }
    // The API server's checks for Exact and Prefix paths: no dot segments, no doubled or encoded slashes.
    for bad in ["//", "/./", "/../", "%2f", "%2F"] {
        if path.contains(bad) {
            return Err(("path", format!("path {path:?} must not contain {bad:?}; the path is ignored")));
        }
    }
    for bad in ["/..", "/."] {
        if path.ends_with(bad) {
            return Err(("path", format!("path {path:?} must not end with {bad:?}; the path is ignored")));
        }
    }
    Ok(if is_prefix { PathMatch::prefix(path) } else { PathMatch::Exact(path.to_owned()) })
}

fn conflict(o: &Ours<'_>, field: &str, host: &HostPattern, path: &PathMatch, winner: &ObjectRef) -> Diagnostic {
    let (ty, p) = match path {
        PathMatch::Exact(p) => ("Exact", p),
        PathMatch::Prefix(p) => ("Prefix", p),
    };
    let who = if *winner == o.obj {
        "an earlier path of this Ingress".to_owned()
    } else {
        format!("the older Ingress {}/{}", winner.namespace, winner.name)
    };
    Diagnostic::warning(
        o.obj.clone(),
        field.to_owned(),
        format!("host {host} path {ty} {p} is already routed by {who}, which wins; this path is ignored"),
    )
}

/// Resolve an Ingress backend to a Service port and its endpoints.
///
/// `None` (with an error) when the backend itself is malformed and the path must be left out. A missing Service
/// or port gives a backend with no endpoints (the proxy answers 503) and an error; no usable endpoint gives the
/// same with a warning.
fn resolve_backend(
    index: &Index,
    o: &Ours<'_>,
    backend: &IngressBackend,
    field: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Backend> {
    let Some(svc_backend) = &backend.service else {
        let msg = if backend.resource.is_some() {
            "resource backends are not supported; only Service backends"
        } else {
            "the backend names no Service"
        };
        diags.push(Diagnostic::error(o.obj.clone(), format!("{field}.service"), format!("{msg}; the path is ignored")));
        return None;
    };
    let name = &svc_backend.name;
    if name.is_empty() {
        diags.push(Diagnostic::error(
            o.obj.clone(),
            format!("{field}.service.name"),
            "the Service name is empty; the path is ignored",
        ));
        return None;
    }
    enum Want<'a> {
        Number(u16),
        Name(&'a str),
    }
    let want = match svc_backend.port.as_ref().map(|p| (p.number, p.name.as_deref())) {
        Some((Some(n), _)) if (1..=65535).contains(&n) => Want::Number(n as u16),
        Some((Some(n), _)) => {
            diags.push(Diagnostic::error(
                o.obj.clone(),
                format!("{field}.service.port.number"),
                format!("port {n} is out of range 1-65535; the path is ignored"),
            ));
            return None;
        }
        Some((None, Some(n))) if !n.is_empty() => Want::Name(n),
        _ => {
            diags.push(Diagnostic::error(
                o.obj.clone(),
                format!("{field}.service.port"),
                "the Service port is missing (set number or name); the path is ignored",
            ));
            return None;
        }
    };
    let mut service = ServiceRef {
        namespace: o.namespace.clone(),
        name: name.clone(),
        port: match want {
            Want::Number(n) => n,
            Want::Name(_) => 0,
        },
    };
    let no_endpoints = |service: ServiceRef| Some(Backend { service, endpoints: Vec::new() });
    let Some(svc) = index.service(&o.namespace, name) else {
        diags.push(Diagnostic::error(
            o.obj.clone(),
            format!("{field}.service.name"),
            format!("Service {}/{name} does not exist; the route answers 503", o.namespace),
        ));
        return no_endpoints(service);
    };
    let spec = svc.spec.as_ref();
    if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        diags.push(Diagnostic::error(
            o.obj.clone(),
            format!("{field}.service.name"),
            format!(
                "Service {}/{name} is of type ExternalName, which is not supported; the route answers 503",
                o.namespace
            ),
        ));
        return no_endpoints(service);
    }
    let ports: &[k8s_openapi::api::core::v1::ServicePort] = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    let found = match want {
        Want::Number(n) => ports.iter().find(|p| p.port == i32::from(n)),
        Want::Name(n) => ports.iter().find(|p| p.name.as_deref() == Some(n)),
    };
    let Some(port) = found else {
        let (sub, what) = match want {
            Want::Number(n) => ("number", format!("port {n}")),
            Want::Name(n) => ("name", format!("a port named {n:?}")),
        };
        diags.push(Diagnostic::error(
            o.obj.clone(),
            format!("{field}.service.port.{sub}"),
            format!("Service {}/{name} has no {what}; the route answers 503", o.namespace),
        ));
        return no_endpoints(service);
    };
    service.port = u16::try_from(port.port).unwrap_or(0);
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    if protocol != "TCP" {
        diags.push(Diagnostic::error(
            o.obj.clone(),
            format!("{field}.service.port"),
            format!("Service port {service} is {protocol}; HTTP needs TCP; the route answers 503"),
        ));
        return no_endpoints(service);
    }
    let port_name = port.name.as_deref().unwrap_or("");
    let all = service_endpoints(index, &o.namespace, name, port_name, protocol, None, diags);
    let endpoints = usable(&all);
    if endpoints.is_empty() {
        diags.push(Diagnostic::warning(
            o.obj.clone(),
            format!("{field}.service"),
            format!("Service port {service} has no ready endpoints; the route answers 503"),
        ));
    }
    Some(Backend { service, endpoints })
}

/// TLS hosts of our Ingresses and the certificates serving them.
#[derive(Default)]
struct Tls {
    /// Host → (Ingress that declared it first, its Secret when usable).
    owner: BTreeMap<HostPattern, (ObjectRef, Option<ObjectRef>)>,
    /// Secret → certificate and the hosts it serves.
    certs: BTreeMap<ObjectRef, (CertKey, BTreeSet<HostPattern>)>,
}

impl Tls {
    /// Whether `host` has TLS: an exact TLS host equal to it or a wildcard matching it; a wildcard vhost only by
    /// the same wildcard.
    fn covers(&self, host: &HostPattern) -> bool {
        match host {
            HostPattern::Any => false,
            HostPattern::Wildcard(_) => self.owner.contains_key(host),
            HostPattern::Exact(h) => self.owner.keys().any(|p| p.matches(h)),
        }
    }

    fn certificates(&self) -> Vec<TlsCertificate> {
        self.certs
            .iter()
            .filter(|(_, (_, hosts))| !hosts.is_empty())
            .map(|(secret, (ck, hosts))| TlsCertificate {
                hosts: hosts.iter().cloned().collect(),
                cert_pem: ck.cert_pem.clone(),
                key_pem: ck.key_pem.clone(),
                secret: secret.clone(),
            })
            .collect()
    }
}

fn collect_tls(ours: &[Ours<'_>], index: &Index, diags: &mut Vec<Diagnostic>) -> Tls {
    let mut tls = Tls::default();
    // Each Secret is validated once; `None` = unusable (already reported).
    let mut checked: HashMap<ObjectRef, Option<CertKey>> = HashMap::new();
    for o in ours {
        for (ti, entry) in o.ing.spec.iter().flat_map(|s| s.tls.iter().flatten()).enumerate() {
            let field = format!("spec.tls[{ti}]");
            // No hosts: the entry covers the Ingress's own rule hosts.
            let hosts: Vec<(String, HostPattern)> = match entry.hosts.as_deref() {
                Some(list) if !list.is_empty() => list
                    .iter()
                    .enumerate()
                    .filter_map(|(hi, h)| match h.parse::<HostPattern>() {
                        Ok(p) => Some((format!("{field}.hosts[{hi}]"), p)),
                        Err(e) => {
                            diags.push(Diagnostic::error(
                                o.obj.clone(),
                                format!("{field}.hosts[{hi}]"),
                                format!("{e}; the TLS host is ignored"),
                            ));
                            None
                        }
                    })
                    .collect(),
                _ => ingress_hosts(o.ing)
                    .into_iter()
                    .filter(|h| *h != HostPattern::Any)
                    .map(|h| (format!("{field}.hosts"), h))
                    .collect(),
            };
            if hosts.is_empty() {
                continue;
            }
            let secret = match entry.secret_name.as_deref().filter(|s| !s.is_empty()) {
                // No Secret: the hosts have TLS with the default certificate.
                None => None,
                Some(name) => {
                    let sref = ObjectRef::new("Secret", o.namespace.clone(), name);
                    let usable = checked
                        .entry(sref.clone())
                        .or_insert_with(|| match index.secret(&o.namespace, name) {
                            None => {
                                diags.push(Diagnostic::error(
                                    o.obj.clone(),
                                    format!("{field}.secretName"),
                                    format!(
                                        "Secret {}/{name} does not exist; its hosts fall back to the default certificate",
                                        o.namespace
                                    ),
                                ));
                                None
                            }
                            Some(secret) => match cert_key(secret, "its hosts fall back to the default certificate") {
                                Ok(ck) => Some(ck),
                                Err(d) => {
                                    diags.push(*d);
                                    None
                                }
                            },
                        })
                        .clone();
                    usable.map(|ck| {
                        tls.certs.entry(sref.clone()).or_insert_with(|| (ck, BTreeSet::new()));
                        sref
                    })
                }
            };
            for (hfield, host) in hosts {
                match tls.owner.get(&host) {
                    None => {
                        if let Some(s) = &secret
                            && let Some((_, set)) = tls.certs.get_mut(s)
                        {
                            set.insert(host.clone());
                        }
                        tls.owner.insert(host, (o.obj.clone(), secret.clone()));
                    }
                    Some((_, s)) if *s == secret => {}
                    Some((winner, _)) => diags.push(Diagnostic::warning(
                        o.obj.clone(),
                        hfield,
                        format!(
                            "TLS host {host} already has a certificate from Ingress {}/{}, which is older and wins; \
                             this entry is ignored for it",
                            winner.namespace, winner.name
                        ),
                    )),
                }
            }
        }
    }
    tls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_validation() {
        let ok: &[(Option<&str>, &str, PathMatch)] = &[
            (Some("/foo"), "Exact", PathMatch::Exact("/foo".into())),
            (Some("/foo/"), "Exact", PathMatch::Exact("/foo/".into())),
            (Some("/foo/"), "Prefix", PathMatch::Prefix("/foo".into())),
            (Some("/"), "Prefix", PathMatch::Prefix("/".into())),
            (Some("/a/b"), "ImplementationSpecific", PathMatch::Prefix("/a/b".into())),
            (None, "ImplementationSpecific", PathMatch::Prefix("/".into())),
        ];
        for (path, ty, want) in ok {
            assert_eq!(path_match(*path, ty).as_ref().ok(), Some(want), "{path:?} {ty}");
        }
        let bad: &[(Option<&str>, &str, &str)] = &[
            (Some("foo"), "Prefix", "path"),
            (None, "Exact", "path"),
            (Some("/a//b"), "Prefix", "path"),
            (Some("/a/../b"), "Prefix", "path"),
            (Some("/a/.."), "Exact", "path"),
            (Some("/a%2Fb"), "Prefix", "path"),
            (Some("/a b"), "Prefix", "path"),
            (Some("/a"), "Regex", "pathType"),
            (Some("/a"), "", "pathType"),
        ];
        for (path, ty, field) in bad {
            assert_eq!(path_match(*path, ty).err().map(|e| e.0), Some(*field), "{path:?} {ty}");
        }
    }
}
