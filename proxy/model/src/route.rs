//! The L7/L4 route table the edge proxy serves.
//!
//! Contract between translation and the proxy:
//! - Within one [`VirtualHost`], routes are unique by [`PathMatch`]; translation has already resolved conflicts
//!   (and reported them). The proxy applies precedence itself: `Exact` beats `Prefix`, a longer prefix beats a
//!   shorter one. Route order in the vector carries no meaning.
//! - Host patterns are unique across `virtual_hosts`; exact hosts beat wildcards at match time.
//! - A [`Backend`] with no endpoints answers 503; a request that matches no route answers 404 (or goes to
//!   [`RouteTable::default_route`] when one is set).

use crate::diagnostic::{Diagnostic, ObjectRef};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Everything the proxy needs to serve one version of the configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTable {
    /// One entry per distinct host pattern.
    pub virtual_hosts: Vec<VirtualHost>,
    /// Serves requests whose host matches no virtual host (an Ingress `spec.defaultBackend`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_route: Option<Route>,
    /// Certificates chosen by SNI (exact host first, then wildcard).
    pub certificates: Vec<TlsCertificate>,
    /// The certificate for handshakes with no SNI or an unknown one. `None`: the proxy uses one it generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_certificate: Option<TlsCertificate>,
    /// TCP/UDP listeners for Services of `loadBalancerClass: causeway.dev/proxy`.
    #[serde(default)]
    pub l4_listeners: Vec<L4Listener>,
    /// What translation left out, and why.
    #[serde(default)]
    pub diagnostics: Vec<Diagnostic>,
}

/// The routes for one host pattern.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualHost {
    pub host: HostPattern,
    pub routes: Vec<Route>,
}

/// One path rule and where it sends requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub path: PathMatch,
    pub backend: Backend,
    /// The Ingress this route came from (used for metric labels and diagnostics).
    pub ingress: ObjectRef,
    /// Answer plain-HTTP requests with a 308 redirect to https (the host has TLS and the Ingress did not opt out).
    #[serde(default)]
    pub ssl_redirect: bool,
}

/// How a route matches the request path.
///
/// `Prefix` holds a normalised prefix: it starts with `/` and has no trailing `/` unless it is `/` itself.
/// It matches element by element: `/foo` matches `/foo`, `/foo/` and `/foo/bar`, not `/foobar`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "value")]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

impl PathMatch {
    /// A prefix match, normalised (trailing slashes removed except for `/`).
    pub fn prefix(path: &str) -> Self {
        let trimmed = path.trim_end_matches('/');
        if trimmed.is_empty() { PathMatch::Prefix("/".to_owned()) } else { PathMatch::Prefix(trimmed.to_owned()) }
    }

    /// Does this rule match `path` (the request path without query)?
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => p == path,
            PathMatch::Prefix(p) => {
                if p == "/" {
                    return path.starts_with('/');
                }
                match path.strip_prefix(p.as_str()) {
                    Some(rest) => rest.is_empty() || rest.starts_with('/'),
                    None => false,
                }
            }
        }
    }
}

/// A Service port with the endpoints it resolved to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub service: ServiceRef,
    /// Ready endpoints (or serving+terminating ones when none is ready). Empty: answer 503.
    pub endpoints: Vec<Endpoint>,
}

/// A Service and the port of it a route names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
    /// The Service port number (resolved from a port name when the Ingress named one). 0 when unresolved.
    pub port: u16,
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
    }
}

/// A pod address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    pub address: SocketAddr,
}

/// A certificate and key (PEM) and the hosts it serves.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsCertificate {
    pub hosts: Vec<HostPattern>,
    /// PEM certificate chain, leaf first.
    pub cert_pem: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing, default)]
    pub key_pem: String,
    /// The Secret it came from.
    pub secret: ObjectRef,
}

impl fmt::Debug for TlsCertificate {
    // The key never appears in logs or debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCertificate")
            .field("hosts", &self.hosts)
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

/// A TCP or UDP listener the proxy opens for a Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct L4Listener {
    pub protocol: L4Protocol,
    pub listen: SocketAddr,
    pub service: ServiceRef,
    pub endpoints: Vec<Endpoint>,
}

/// Transport of an [`L4Listener`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum L4Protocol {
    Tcp,
    Udp,
}

/// A host an Ingress rule or TLS entry names: an exact DNS name, `*.suffix` (exactly one extra label), or any host.
///
/// Stored lowercase. Parse with [`str::parse`]; IP literals and malformed names are rejected with [`InvalidHost`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostPattern {
    /// Matches every host (an Ingress rule with no `host`).
    Any,
    /// Matches this name exactly (case-insensitively).
    Exact(String),
    /// `*.example.com` stored as `example.com`: matches `a.example.com`, not `example.com` nor `a.b.example.com`.
    Wildcard(String),
}

/// Why a host string is not a valid Ingress host.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidHost {
    #[error("host is empty")]
    Empty,
    #[error("host {0:?} is an IP address; Ingress hosts must be DNS names")]
    IpLiteral(String),
    #[error("host {0:?} has a wildcard that is not a whole leading label (only `*.example.com` is allowed)")]
    BadWildcard(String),
    #[error("host {0:?} is not a valid DNS name: {1}")]
    BadName(String, &'static str),
}

impl HostPattern {
    /// Does this pattern match `host` (already lowercased, port stripped)?
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(h) => h == host,
            HostPattern::Wildcard(suffix) => match host.strip_suffix(suffix.as_str()) {
                Some(head) => match head.strip_suffix('.') {
                    Some(label) => !label.is_empty() && !label.contains('.'),
                    None => false,
                },
                None => false,
            },
        }
    }
}

impl FromStr for HostPattern {
    type Err = InvalidHost;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(InvalidHost::Empty);
        }
        if s.parse::<IpAddr>().is_ok() {
            return Err(InvalidHost::IpLiteral(s.to_owned()));
        }
        let lower = s.to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        if name.contains('*') {
            return Err(InvalidHost::BadWildcard(s.to_owned()));
        }
        validate_dns_name(name).map_err(|why| InvalidHost::BadName(s.to_owned(), why))?;
        Ok(if wildcard { HostPattern::Wildcard(name.to_owned()) } else { HostPattern::Exact(name.to_owned()) })
    }
}

/// RFC 1123 subdomain rules, as the API server validates `spec.rules[].host`.
fn validate_dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("a label is longer than 63 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err("only lowercase letters, digits, '-' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label starts or ends with '-'");
        }
    }
    Ok(())
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Any => f.write_str("*"),
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

impl Serialize for HostPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "*" {
            return Ok(HostPattern::Any);
        }
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        let cases: &[(&str, &str, bool)] = &[
            ("foo.example.com", "foo.example.com", true),
            ("Foo.Example.com", "foo.example.com", true),
            ("foo.example.com", "bar.example.com", false),
            ("*.example.com", "foo.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "a.b.example.com", false),
            ("*.example.com", "fooexample.com", false),
        ];
        for (pattern, host, want) in cases {
            let p: HostPattern = pattern.parse().unwrap();
            assert_eq!(p.matches(host), *want, "{pattern} vs {host}");
        }
    }

    #[test]
    fn invalid_hosts() {
        for bad in ["", "10.0.0.1", "foo.*.com", "*foo.com", "a..b", "-a.com", "a_b.com", "*"] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn prefix_matching_is_element_wise() {
        let cases: &[(&str, &str, bool)] = &[
            ("/foo", "/foo", true),
            ("/foo", "/foo/", true),
            ("/foo", "/foo/bar", true),
            ("/foo", "/foobar", false),
            ("/foo/", "/foo", true),
            ("/foo/", "/foo/bar", true),
            ("/", "/anything", true),
            ("/aaa/bb", "/aaa/bbb", false),
            ("/aaa/bbb", "/aaa/bbb/", true),
        ];
        for (prefix, path, want) in cases {
            assert_eq!(PathMatch::prefix(prefix).matches(path), *want, "{prefix} vs {path}");
        }
        assert!(PathMatch::Exact("/foo".into()).matches("/foo"));
        assert!(!PathMatch::Exact("/foo".into()).matches("/foo/"));
    }
}
