//! The data-plane model shared by every Causeway component.
//!
//! This crate holds plain data: the [`RouteTable`] the edge proxy serves (virtual hosts, routes, backends with
//! their resolved endpoints, TLS certificates, L4 listeners) and the [`ServiceTable`] / [`NodeTable`] the node
//! agent renders into kernel state. The controller produces these values from Kubernetes objects; the proxy and
//! the node agent consume them.
//!
//! What it deliberately does not do: no I/O, no async, no Kubernetes types. Its only dependencies are serde and
//! thiserror, so that the proxy never links kube or k8s-openapi (design invariant 4) and every consumer can be
//! tested with values built by hand.
//!
//! ```text
//!  Kubernetes objects ──translate──► RouteTable ──compile──► proxy (one ArcSwap)
//!                                 └► ServiceTable + NodeTable ──render──► iptables-restore text, routes
//! ```
#![forbid(unsafe_code)]

mod diagnostic;
mod route;
mod service;

pub use diagnostic::{Diagnostic, ObjectRef, Severity};
pub use route::{
    Backend, Endpoint, HostPattern, InvalidHost, L4Listener, L4Protocol, PathMatch, Route, RouteTable, ServiceRef,
    TlsCertificate, VirtualHost,
};
pub use service::{
    EndpointInfo, NodeInfo, NodeTable, Protocol, ServicePort, ServicePortName, ServiceTable, TrafficPolicy,
};
