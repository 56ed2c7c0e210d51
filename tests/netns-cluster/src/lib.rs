//! The netns cluster: every path from the edge to the pod, checked with real packets (issue 6, design §5 item 3).
//!
//! A [`Cluster`] is three node network namespaces and an outside client on an underlay bridge that lives in a
//! namespace of its own (the root namespace is never connected), `causeway-node` in every node namespace, the edge
//! proxy (`causeway run`) in node 1's, and pods created by calling `causeway-cni` exactly as containerd does. Pod
//! "containers" are `cw-netns-probe` servers that answer with the peer address they saw, so every check asserts
//! on who answered and which source address arrived. Objects (Nodes, Services, EndpointSlices, Ingresses,
//! Secrets) go to the source every agent and the proxy watch, one parameter of the cluster ([`Source`]): a
//! manifests directory, or the real kube-apiserver run inside the underlay namespace ([`apiserver`]).
//!
//! What it deliberately does not do: it never touches the root namespace's links, routes, sysctls or iptables; it
//! never edits the components' configuration beyond their documented flags; it never waits with a fixed sleep
//! (every wait is a poll with a deadline). The binaries under test are found next to the test executable
//! ([`bins`]), built by the workspace build.
//!
//! The checks live in `tests/`: `paths.rs` (every path of design §1, checks in `common/paths.rs`), `churn.rs`
//! (changes while running and bad input), `lb.rs` (LoadBalancer announcement) and `kube.rs` (the path checks and
//! scaling on the API-server source), one cluster each, each check a named step reported on its own.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod apiserver;
pub mod bins;
pub mod cluster;
pub mod cni;
pub mod error;
pub mod manifests;
pub mod netns;
pub mod objects;
pub mod probe;
pub mod source;
pub mod suite;
pub mod sys;
pub mod tls;
pub mod yaml;

pub use cluster::{Cluster, Options, PodSpec};
pub use error::{Error, Result};
pub use objects::{Svc, SvcPort};
pub use source::Source;
pub use suite::{Check, Suite};
