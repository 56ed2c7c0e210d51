//! Kubernetes objects to Causeway tables.
//!
//! Sources (the manifests directory watcher in `causeway-source`, the kube-rs watchers in `causeway-kube`) turn
//! objects into [`KubeObject`]s and fold them into an [`Index`] with synchronous [`Index::apply`] /
//! [`Index::delete`]. Pure functions then build the tables the data plane serves:
//!
//! ```text
//!  sources ──KubeObject──► Index ──route_table(&Index, &TranslateConfig)──► RouteTable (proxy)
//!                            ├───service_table(&Index)──► ServiceTable  (node agent)
//!                            └───node_table(&Index)─────► NodeTable     (node agent)
//! ```
//!
//! Every problem with an object becomes a [`Diagnostic`] naming the object and field; the object (or the part of
//! it that is wrong) is left out and everything else is still translated. No input panics.
//!
//! What it deliberately does not do: no I/O, no async, no Kubernetes client, no defaulting of raw manifests (the
//! source fills in what the API server would), no certificate parsing beyond PEM framing (the proxy loads the
//! keys), and no endpoint *selection* for the node agent (the renderer applies traffic policies using the
//! conditions kept in [`causeway_model::EndpointInfo`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod endpoints;
mod index;
mod ingress;
mod l4;
mod object;
mod pool;
mod service;
mod tls;

pub use causeway_model::{Diagnostic, NodeTable, ObjectRef, RouteTable, ServiceTable, Severity};
pub use index::{Index, SERVICE_NAME_LABEL};
pub use object::{Kind, KubeObject, ObjectKey};
pub use pool::{IP_POOL_API_VERSION, IpPool, IpPoolBlock, IpPoolSpec};
pub use service::{node_table, service_ports_of, service_table};

/// The `loadBalancerClass` of Services whose ports the proxy itself serves (L4 listeners); the node agent leaves
/// them alone.
pub const PROXY_LOAD_BALANCER_CLASS: &str = "causeway.dev/proxy";
/// IngressClass annotation marking the cluster's default class.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The legacy (pre-IngressClass) class annotation on an Ingress.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Ingress annotation: `"false"` turns off the HTTP→HTTPS redirect for the Ingress's routes.
pub const SSL_REDIRECT_ANNOTATION: &str = "causeway.dev/ssl-redirect";

/// What the controller was told on its command line that changes translation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranslateConfig {
    /// `--ingress-class`: the IngressClass name we serve.
    pub ingress_class: String,
    /// `--controller-name`: the `spec.controller` our IngressClass must carry.
    pub controller_name: String,
    /// `--default-tls-secret ns/name`: the certificate for handshakes with no or unknown SNI. `None`: the proxy
    /// generates one.
    pub default_tls_secret: Option<(String, String)>,
}

impl Default for TranslateConfig {
    /// The defaults of design §4: class `causeway`, controller `causeway.dev/ingress-controller`.
    fn default() -> Self {
        Self {
            ingress_class: "causeway".to_owned(),
            controller_name: "causeway.dev/ingress-controller".to_owned(),
            default_tls_secret: None,
        }
    }
}

/// Build the proxy's route table from the index.
///
/// Rules (each has a named test in `tests/route_table.rs`):
/// - Only our Ingresses: `spec.ingressClassName` equals [`TranslateConfig::ingress_class`] and that IngressClass
///   exists with `spec.controller` equal to [`TranslateConfig::controller_name`]; without a class name, the legacy
///   annotation `kubernetes.io/ingress.class` decides, and without either the Ingress is ours when our IngressClass
///   is annotated as the default class.
/// - Hosts are validated ([`causeway_model::HostPattern`]); a rule with no host serves every host.
/// - `Exact` paths are kept as is; `Prefix` and `ImplementationSpecific` become normalised prefixes (we treat
///   `ImplementationSpecific` exactly as `Prefix`).
/// - Several Ingresses for one host are merged. The same host + path from two Ingresses: the oldest Ingress
///   (`creationTimestamp`, then namespace/name; a missing timestamp sorts after every present one) wins, and the
///   other gets a warning.
/// - `spec.defaultBackend` serves the unmatched paths of the Ingress's own hosts (a `Prefix /` route that an
///   explicit `/` path overrides) and, for the oldest Ingress that has one, unmatched hosts
///   ([`RouteTable::default_route`]).
/// - Backends: the Service port by number or name, endpoints from every EndpointSlice labelled with the Service,
///   matched to the port by name and protocol; ready endpoints, or serving+terminating ones when none is ready.
///   A missing Service or port keeps the route with no endpoints (503) plus an error; no usable endpoint keeps
///   it with a warning.
/// - TLS: `spec.tls` hosts with `kubernetes.io/tls` Secrets become certificates; a broken or missing Secret is an
///   error and its hosts fall back to the default certificate. Routes of a host with TLS redirect plain HTTP
///   unless their Ingress has `causeway.dev/ssl-redirect: "false"`.
/// - L4: Services with `loadBalancerClass: causeway.dev/proxy` get one listener per status IP and port.
/// - Source diagnostics stored in the index come first in [`RouteTable::diagnostics`].
pub fn route_table(index: &Index, config: &TranslateConfig) -> RouteTable {
    let mut diagnostics: Vec<Diagnostic> = index.source_diagnostics().cloned().collect();
    let mut table = ingress::translate(index, config, &mut diagnostics);
    table.l4_listeners = l4::listeners(index, &mut diagnostics);
    table.diagnostics = dedup(diagnostics);
    table
}

/// The Ingresses of our class (the same selection [`route_table`] makes), whether or not any of their rules
/// produced a route: the set whose `status.loadBalancer` the controller owns.
pub fn owned_ingresses(index: &Index, config: &TranslateConfig) -> std::collections::BTreeSet<ObjectKey> {
    ingress::owned(index, config)
}

/// Remove repeated diagnostics, keeping the first of each.
pub(crate) fn dedup(diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut seen = std::collections::HashSet::new();
    diagnostics.into_iter().filter(|d| seen.insert(d.clone())).collect()
}
