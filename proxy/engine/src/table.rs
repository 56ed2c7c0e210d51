//! Compiling a [`RouteTable`] into the structure the request path reads.
//!
//! Compilation runs off the request path (in [`crate::ProxyHandle::store`]); the result is immutable and
//! swapped in with one `ArcSwap::store`. State that must outlive a swap (keep-alive pools per endpoint,
//! round-robin positions per backend) is looked up in the [`Compiler`]'s registries and shared by `Arc`.

use crate::metrics::{Metrics, RouteStats};
use crate::tls::{self, CertMap};
use crate::upstream::{EndpointPool, PoolSettings};
use causeway_model::{
    Diagnostic, Endpoint, HostPattern, L4Protocol, ObjectRef, PathMatch, Route, RouteTable, ServiceRef,
};
use rustls::sign::CertifiedKey;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

/// One immutable version of the configuration, as the data path reads it.
pub struct CompiledTable {
    source: Arc<RouteTable>,
    version: u64,
    exact: HashMap<String, VHost>,
    /// `*.example.com` under `example.com`.
    wildcard: HashMap<String, VHost>,
    any: Option<VHost>,
    default_route: Option<Arc<CompiledRoute>>,
    pub(crate) certs: CertMap,
    pub(crate) l4: HashMap<(L4Protocol, SocketAddr), Arc<L4Route>>,
    diagnostics: Vec<Diagnostic>,
    /// Counters for requests that match no route.
    pub(crate) no_route: Arc<RouteStats>,
}

/// Which rule a request matched (for tests and debugging).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteMatch {
    pub path: PathMatch,
    pub service: ServiceRef,
    pub endpoints: Vec<SocketAddr>,
    pub ssl_redirect: bool,
}

#[derive(Default)]
struct VHost {
    exact: HashMap<String, Arc<CompiledRoute>>,
    /// Longest prefix first.
    prefixes: Vec<Arc<CompiledRoute>>,
}

impl VHost {
    fn find(&self, path: &str) -> Option<&Arc<CompiledRoute>> {
        if let Some(r) = self.exact.get(path) {
            return Some(r);
        }
        self.prefixes.iter().find(|r| r.path.matches(path))
    }
}

/// A route ready to serve.
pub(crate) struct CompiledRoute {
    pub path: PathMatch,
    pub ssl_redirect: bool,
    pub backend: Arc<CompiledBackend>,
    pub stats: Arc<RouteStats>,
}

/// A Service port's endpoints with their pools and the round-robin position.
pub(crate) struct CompiledBackend {
    pub service: ServiceRef,
    pub endpoints: Vec<Arc<EndpointPool>>,
    rr: Arc<AtomicUsize>,
}

impl CompiledBackend {
    /// The next index in round-robin order (callers take it modulo the endpoint count).
    pub fn next_index(&self) -> usize {
        self.rr.fetch_add(1, Ordering::Relaxed)
    }
}

/// An L4 listener's forwarding target.
pub(crate) struct L4Route {
    pub service: ServiceRef,
    pub endpoints: Vec<SocketAddr>,
    rr: Arc<AtomicUsize>,
}

impl L4Route {
    /// The next index in round-robin order.
    pub fn next_index(&self) -> usize {
        self.rr.fetch_add(1, Ordering::Relaxed)
    }
}

impl CompiledTable {
    /// The table this was compiled from.
    pub fn source(&self) -> &Arc<RouteTable> {
        &self.source
    }

    /// Increases by one with every compiled table of a proxy (0 for the empty start-up table).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// What compilation left out (translation's own diagnostics are in [`Self::source`]).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// The route a request for `host` (any case, port allowed) and `path` (no query) goes to.
    pub fn route_for(&self, host: &str, path: &str) -> Option<RouteMatch> {
        let host = normalize_host(host);
        self.find(&host, path).map(|r| RouteMatch {
            path: r.path.clone(),
            service: r.backend.service.clone(),
            endpoints: r.backend.endpoints.iter().map(|e| e.addr()).collect(),
            ssl_redirect: r.ssl_redirect,
        })
    }

    /// Host precedence: exact, then the wildcard of the parent domain, then a host-less rule; within the virtual
    /// host, an exact path, then the longest prefix. Nothing: the table's default route, if any.
    pub(crate) fn find(&self, host: &str, path: &str) -> Option<&Arc<CompiledRoute>> {
        let vhost = self
            .exact
            .get(host)
            .or_else(|| host.split_once('.').and_then(|(_, parent)| self.wildcard.get(parent)))
            .or(self.any.as_ref());
        vhost.and_then(|v| v.find(path)).or(self.default_route.as_ref())
    }
}

/// Lowercases and strips the port and a trailing dot; borrows when nothing changes.
pub(crate) fn normalize_host(raw: &str) -> Cow<'_, str> {
    let without_port = if raw.starts_with('[') {
        // An IPv6 literal: `[::1]:8080`.
        match raw.find(']') {
            Some(end) => &raw[..=end],
            None => raw,
        }
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        }
    };
    let trimmed = without_port.strip_suffix('.').unwrap_or(without_port);
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        Cow::Borrowed(trimmed)
    }
}

/// Holds what survives table swaps and turns route tables into [`CompiledTable`]s.
pub(crate) struct Compiler {
    metrics: Metrics,
    generated_default: Arc<CertifiedKey>,
    pool_settings: PoolSettings,
    pools: HashMap<SocketAddr, Weak<EndpointPool>>,
    round_robin: HashMap<(ServiceRef, Vec<SocketAddr>), Weak<AtomicUsize>>,
    live_labels: HashSet<(String, String)>,
    version: u64,
}

impl Compiler {
    pub fn new(metrics: Metrics, generated_default: Arc<CertifiedKey>, pool_settings: PoolSettings) -> Self {
        Self {
            metrics,
            generated_default,
            pool_settings,
            pools: HashMap::new(),
            round_robin: HashMap::new(),
            live_labels: HashSet::new(),
            version: 0,
        }
    }

    /// The table served before the first [`crate::ProxyHandle::store`]: everything answers 404.
    pub fn empty(&mut self) -> CompiledTable {
        let table = self.compile(Arc::new(RouteTable::default()));
        self.version = 0;
        CompiledTable { version: 0, ..table }
    }

    fn pool(&mut self, addr: SocketAddr) -> Arc<EndpointPool> {
        if let Some(p) = self.pools.get(&addr).and_then(Weak::upgrade) {
            return p;
        }
        let p = Arc::new(EndpointPool::new(addr, self.pool_settings.clone()));
        self.pools.insert(addr, Arc::downgrade(&p));
        p
    }

    fn rr(&mut self, service: &ServiceRef, endpoints: &[Endpoint]) -> Arc<AtomicUsize> {
        let key = (service.clone(), endpoints.iter().map(|e| e.address).collect::<Vec<_>>());
        if let Some(rr) = self.round_robin.get(&key).and_then(Weak::upgrade) {
            return rr;
        }
        let rr = Arc::new(AtomicUsize::new(0));
        self.round_robin.insert(key, Arc::downgrade(&rr));
        rr
    }

    /// Compiles `table`. Never fails: what cannot be used becomes a diagnostic and is left out.
    pub fn compile(&mut self, table: Arc<RouteTable>) -> CompiledTable {
        self.version += 1;
        let mut diags = Vec::new();
        let mut stats_by_label: HashMap<(String, String), Arc<RouteStats>> = HashMap::new();
        let mut backends: HashMap<(ServiceRef, Vec<Endpoint>), Arc<CompiledBackend>> = HashMap::new();

        let mut exact: HashMap<String, VHost> = HashMap::new();
        let mut wildcard: HashMap<String, VHost> = HashMap::new();
        let mut any: Option<VHost> = None;
        let mut seen_hosts = HashSet::new();

        for vh in &table.virtual_hosts {
            if !seen_hosts.insert(vh.host.clone()) {
                let object = vh.routes.first().map(|r| r.ingress.clone()).unwrap_or_else(table_ref);
                diags.push(Diagnostic::warning(
                    object,
                    "virtual_hosts",
                    format!("host {} appears twice in the table; the routes were merged, first one wins", vh.host),
                ));
            }
            let target = match &vh.host {
                HostPattern::Exact(h) => exact.entry(h.clone()).or_default(),
                HostPattern::Wildcard(s) => wildcard.entry(s.clone()).or_default(),
                HostPattern::Any => any.get_or_insert_with(VHost::default),
            };
            for route in &vh.routes {
                let compiled = self.route(route, &mut stats_by_label, &mut backends);
                let duplicate = match &route.path {
                    PathMatch::Exact(p) => {
                        if target.exact.contains_key(p) {
                            true
                        } else {
                            target.exact.insert(p.clone(), compiled);
                            false
                        }
                    }
                    PathMatch::Prefix(_) => {
                        if target.prefixes.iter().any(|r| r.path == route.path) {
                            true
                        } else {
                            target.prefixes.push(compiled);
                            false
                        }
                    }
                };
                if duplicate {
                    diags.push(Diagnostic::warning(
                        route.ingress.clone(),
                        "spec.rules",
                        format!("path {:?} of host {} is routed twice; the first route wins", route.path, vh.host),
                    ));
                }
            }
        }
        for vhost in exact.values_mut().chain(wildcard.values_mut()).chain(any.iter_mut()) {
            vhost.prefixes.sort_by_key(|r| match &r.path {
                PathMatch::Prefix(p) => std::cmp::Reverse(p.len()),
                PathMatch::Exact(_) => std::cmp::Reverse(usize::MAX),
            });
        }
        let default_route = table.default_route.as_ref().map(|r| self.route(r, &mut stats_by_label, &mut backends));

        let certs = self.certificates(&table, &mut diags);
        let l4 = self.l4(&table, &mut diags);
        let no_route = Arc::new(self.metrics.route_stats("", ""));

        // Stop exporting label sets of routes that are gone.
        let live: HashSet<(String, String)> = stats_by_label.into_keys().collect();
        let gone: HashSet<_> = self.live_labels.difference(&live).cloned().collect();
        self.metrics.forget_routes(&gone);
        self.live_labels = live;
        self.pools.retain(|_, p| p.strong_count() > 0);
        self.round_robin.retain(|_, r| r.strong_count() > 0);

        CompiledTable {
            source: table,
            version: self.version,
            exact,
            wildcard,
            any,
            default_route,
            certs,
            l4,
            diagnostics: diags,
            no_route,
        }
    }

    fn route(
        &mut self,
        route: &Route,
        stats: &mut HashMap<(String, String), Arc<RouteStats>>,
        backends: &mut HashMap<(ServiceRef, Vec<Endpoint>), Arc<CompiledBackend>>,
    ) -> Arc<CompiledRoute> {
        let ingress = format!("{}/{}", route.ingress.namespace, route.ingress.name);
        let service = format!("{}/{}", route.backend.service.namespace, route.backend.service.name);
        let stats = stats
            .entry((ingress.clone(), service.clone()))
            .or_insert_with(|| Arc::new(self.metrics.route_stats(&ingress, &service)))
            .clone();
        let key = (route.backend.service.clone(), route.backend.endpoints.clone());
        let backend = match backends.get(&key) {
            Some(b) => b.clone(),
            None => {
                let endpoints = route.backend.endpoints.iter().map(|e| self.pool(e.address)).collect();
                let rr = self.rr(&route.backend.service, &route.backend.endpoints);
                let b = Arc::new(CompiledBackend { service: route.backend.service.clone(), endpoints, rr });
                backends.insert(key, b.clone());
                b
            }
        };
        Arc::new(CompiledRoute { path: route.path.clone(), ssl_redirect: route.ssl_redirect, backend, stats })
    }

    fn certificates(&mut self, table: &RouteTable, diags: &mut Vec<Diagnostic>) -> CertMap {
        let expiry = &self.metrics.cert_expiry;
        expiry.reset();
        let default = match &table.default_certificate {
            None => self.generated_default.clone(),
            Some(c) => match tls::load(c) {
                Ok(loaded) => {
                    if let Some(t) = loaded.not_after {
                        expiry.with_label_values(&["*default*"]).set(t as f64);
                    }
                    loaded.key
                }
                Err(why) => {
                    diags.push(Diagnostic::error(
                        c.secret.clone(),
                        "data",
                        format!("default certificate unusable ({why}); serving a generated one"),
                    ));
                    self.generated_default.clone()
                }
            },
        };
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for cert in &table.certificates {
            let loaded = match tls::load(cert) {
                Ok(l) => l,
                Err(why) => {
                    diags.push(Diagnostic::error(
                        cert.secret.clone(),
                        "data",
                        format!("{why}; its hosts get the default certificate"),
                    ));
                    continue;
                }
            };
            for host in &cert.hosts {
                let (map, key) = match host {
                    HostPattern::Exact(h) => (&mut exact, h),
                    HostPattern::Wildcard(s) => (&mut wildcard, s),
                    HostPattern::Any => continue,
                };
                if map.contains_key(key) {
                    diags.push(Diagnostic::warning(
                        cert.secret.clone(),
                        "data",
                        format!("host {host} already has a certificate from another Secret; the first one is kept"),
                    ));
                    continue;
                }
                map.insert(key.clone(), loaded.key.clone());
                if let Some(t) = loaded.not_after {
                    expiry.with_label_values(&[&host.to_string()]).set(t as f64);
                }
            }
        }
        CertMap { exact, wildcard, default }
    }

    fn l4(
        &mut self,
        table: &RouteTable,
        diags: &mut Vec<Diagnostic>,
    ) -> HashMap<(L4Protocol, SocketAddr), Arc<L4Route>> {
        let mut out = HashMap::new();
        for l in &table.l4_listeners {
            let key = (l.protocol, l.listen);
            if out.contains_key(&key) {
                diags.push(Diagnostic::error(
                    ObjectRef::new("Service", &l.service.namespace, &l.service.name),
                    "spec.ports",
                    format!("{:?} {} is already taken by another Service; left out", l.protocol, l.listen),
                ));
                continue;
            }
            let rr = self.rr(&l.service, &l.endpoints);
            out.insert(
                key,
                Arc::new(L4Route {
                    service: l.service.clone(),
                    endpoints: l.endpoints.iter().map(|e| e.address).collect(),
                    rr,
                }),
            );
        }
        out
    }
}

fn table_ref() -> ObjectRef {
    ObjectRef::new("RouteTable", "", "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_model::{Backend, VirtualHost};

    fn mk_route(path: PathMatch, svc: &str) -> Route {
        Route {
            path,
            backend: Backend {
                service: ServiceRef { namespace: "ns".into(), name: svc.into(), port: 80 },
                endpoints: vec![Endpoint { address: "127.0.0.1:1".parse().unwrap() }],
            },
            ingress: ObjectRef::new("Ingress", "ns", "ing"),
            ssl_redirect: false,
        }
    }

    fn mk_compiler() -> Compiler {
        let metrics = Metrics::unregistered();
        Compiler::new(metrics, tls::generate_default().unwrap(), PoolSettings::default())
    }

    fn check(table: &RouteTable, cases: &[(&str, &str, Option<&str>)]) {
        let compiled = mk_compiler().compile(Arc::new(table.clone()));
        for (host, path, want) in cases {
            let got = compiled.route_for(host, path).map(|m| m.service.name);
            assert_eq!(got.as_deref(), *want, "{host}{path}");
        }
    }

    #[test]
    fn host_and_path_precedence() {
        let table = RouteTable {
            virtual_hosts: vec![
                VirtualHost {
                    host: "*.example.com".parse().unwrap(),
                    routes: vec![mk_route(PathMatch::prefix("/"), "wild")],
                },
                VirtualHost {
                    host: "a.example.com".parse().unwrap(),
                    routes: vec![
                        mk_route(PathMatch::prefix("/"), "root"),
                        mk_route(PathMatch::prefix("/api"), "api"),
                        mk_route(PathMatch::prefix("/api/v2"), "api2"),
                        mk_route(PathMatch::Exact("/api/v2/exact".into()), "exact"),
                    ],
                },
                VirtualHost { host: HostPattern::Any, routes: vec![mk_route(PathMatch::prefix("/any"), "any")] },
            ],
            ..RouteTable::default()
        };
        check(
            &table,
            &[
                ("a.example.com", "/", Some("root")),
                ("A.Example.COM:8080", "/api", Some("api")),
                ("a.example.com.", "/api/x", Some("api")),
                ("a.example.com", "/apix", Some("root")),
                ("a.example.com", "/api/v2/", Some("api2")),
                ("a.example.com", "/api/v2/exact", Some("exact")),
                ("a.example.com", "/api/v2/exact/", Some("api2")),
                ("b.example.com", "/anything", Some("wild")),
                ("x.b.example.com", "/any", Some("any")),
                ("example.com", "/any/thing", Some("any")),
                ("example.com", "/other", None),
                ("", "/any", Some("any")),
            ],
        );
    }

    #[test]
    fn default_route_catches_unmatched() {
        let table = RouteTable {
            virtual_hosts: vec![VirtualHost {
                host: "a.example.com".parse().unwrap(),
                routes: vec![mk_route(PathMatch::prefix("/api"), "api")],
            }],
            default_route: Some(mk_route(PathMatch::prefix("/"), "fallback")),
            ..RouteTable::default()
        };
        check(
            &table,
            &[
                ("a.example.com", "/api", Some("api")),
                ("a.example.com", "/web", Some("fallback")),
                ("other.example", "/", Some("fallback")),
            ],
        );
    }

    #[test]
    fn pools_and_round_robin_survive_recompilation() {
        let mut c = mk_compiler();
        let mut table = RouteTable {
            virtual_hosts: vec![VirtualHost {
                host: "a.example.com".parse().unwrap(),
                routes: vec![mk_route(PathMatch::prefix("/"), "s")],
            }],
            ..RouteTable::default()
        };
        let first = c.compile(Arc::new(table.clone()));
        let b1 = first.find("a.example.com", "/").unwrap().backend.clone();
        b1.next_index();
        let second = c.compile(Arc::new(table.clone()));
        let b2 = second.find("a.example.com", "/").unwrap().backend.clone();
        assert!(Arc::ptr_eq(&b1.endpoints[0], &b2.endpoints[0]), "endpoint pool reused");
        assert_eq!(b2.next_index(), 1, "round-robin position kept");
        table.virtual_hosts[0].routes[0].backend.endpoints.push(Endpoint { address: "127.0.0.1:2".parse().unwrap() });
        let third = c.compile(Arc::new(table));
        let b3 = third.find("a.example.com", "/").unwrap().backend.clone();
        assert!(Arc::ptr_eq(&b1.endpoints[0], &b3.endpoints[0]), "pool kept for a kept endpoint");
        assert_eq!(b3.next_index(), 0, "new endpoint set starts over");
        assert_eq!(third.version(), 3);
    }

    #[test]
    fn lookup_never_panics_on_odd_hosts_and_paths() {
        let table = RouteTable {
            virtual_hosts: vec![
                VirtualHost { host: "*.a.b".parse().unwrap(), routes: vec![mk_route(PathMatch::prefix("/x"), "w")] },
                VirtualHost { host: HostPattern::Any, routes: vec![mk_route(PathMatch::Exact("/".into()), "any")] },
            ],
            ..RouteTable::default()
        };
        let compiled = mk_compiler().compile(Arc::new(table));
        let odd = ["", ".", "..", ":", "[", "]", "[::1", "a.b:", ":80", "é.a.b", "x.a.b.", "*.a.b", "\u{0}", "a..b"];
        for host in odd {
            for path in ["", "/", "*", "/x", "/x/", "x", "//", "/é"] {
                let _ = compiled.route_for(host, path);
            }
        }
    }

    #[test]
    fn host_normalisation() {
        assert_eq!(normalize_host("Example.COM:443"), "example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("a.b."), "a.b");
        assert!(matches!(normalize_host("plain.host"), Cow::Borrowed(_)));
    }
}
