//! The Ingress status writer: `status.loadBalancer.ingress` of our Ingresses says where they are served.
//!
//! Only the leader writes. The addresses come from `--publish-address` or from the Service named by
//! `--publish-service ns/name` (its load-balancer status, else its external IPs, else its cluster IPs). Ingresses
//! that stop being ours (another class, or deleted from our set) are cleared: any Ingress outside our set
//! whose status is exactly what we publish, or that this replica wrote, gets an empty status.
//!
//! ```text
//!  watcher<Ingress> ──► current statuses ─┐
//!  watcher<Service> ──► addresses ────────┼──► reconcile (leader only) ──► PATCH ingresses/status
//!  ours: watch<Option<set>> ──────────────┤       (only where current != desired; retried on failure)
//!  is_leader: watch<bool> ────────────────┘
//! ```

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use causeway_translate::{Kind, ObjectKey, RouteTable};
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::error::{Access, Error, Result};
use crate::metrics::{KubeMetrics, result_label};

/// Where our Ingresses are reachable, as written to their status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Publish {
    /// `--publish-address`: fixed IPs or host names.
    Addresses(Vec<String>),
    /// `--publish-service ns/name`: the addresses of that Service.
    Service {
        /// The Service's namespace.
        namespace: String,
        /// The Service's name.
        name: String,
    },
}

impl Publish {
    /// Parses a `--publish-service` value, `namespace/name`.
    pub fn service(value: &str) -> Result<Self> {
        match value.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Publish::Service { namespace: namespace.to_owned(), name: name.to_owned() })
            }
            _ => Err(Error::InvalidPublishService(value.to_owned())),
        }
    }

    /// The permissions the status writer needs with this setting.
    pub fn required_access(&self) -> Vec<Access> {
        let mut needed = vec![
            Access { verb: "list", group: "networking.k8s.io", resource: "ingresses", namespace: None },
            Access { verb: "watch", group: "networking.k8s.io", resource: "ingresses", namespace: None },
            Access { verb: "patch", group: "networking.k8s.io", resource: "ingresses/status", namespace: None },
        ];
        if let Publish::Service { namespace, .. } = self {
            for verb in ["list", "watch"] {
                needed.push(Access { verb, group: "", resource: "services", namespace: Some(namespace.clone()) });
            }
        }
        needed
    }
}

/// One entry of `status.loadBalancer.ingress`: an IP or a host name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Address {
    /// An IP address.
    Ip(String),
    /// A DNS name.
    Hostname(String),
}

impl Address {
    /// An IP if `s` parses as one, else a host name.
    pub fn parse(s: &str) -> Self {
        match s.parse::<IpAddr>() {
            Ok(ip) => Address::Ip(ip.to_string()),
            Err(_) => Address::Hostname(s.to_owned()),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            Address::Ip(ip) => json!({ "ip": ip }),
            Address::Hostname(h) => json!({ "hostname": h }),
        }
    }
}

/// The addresses a Service publishes: load-balancer status, else external IPs, else cluster IPs (or the
/// external name of an `ExternalName` Service).
pub fn service_addresses(svc: &Service) -> Vec<Address> {
    let mut out = BTreeSet::new();
    let lb = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.as_ref());
    for entry in lb.into_iter().flatten() {
        if let Some(ip) = entry.ip.as_deref().filter(|s| !s.is_empty()) {
            out.insert(Address::Ip(ip.to_owned()));
        } else if let Some(h) = entry.hostname.as_deref().filter(|s| !s.is_empty()) {
            out.insert(Address::Hostname(h.to_owned()));
        }
    }
    let spec = svc.spec.as_ref();
    if out.is_empty() {
        for ip in spec.and_then(|s| s.external_ips.as_ref()).into_iter().flatten() {
            out.insert(Address::parse(ip));
        }
    }
    if out.is_empty()
        && let Some(name) = spec.and_then(|s| s.external_name.as_deref()).filter(|s| !s.is_empty())
    {
        out.insert(Address::Hostname(name.to_owned()));
    }
    if out.is_empty() {
        let ips = spec.and_then(|s| s.cluster_ips.clone()).unwrap_or_default();
        let ips = if ips.is_empty() { spec.and_then(|s| s.cluster_ip.clone()).into_iter().collect() } else { ips };
        for ip in ips.iter().filter(|ip| !ip.is_empty() && ip.as_str() != "None") {
            out.insert(Address::parse(ip));
        }
    }
    out.into_iter().collect()
}

/// The addresses currently in an Ingress's status, sorted.
pub fn ingress_addresses(ing: &Ingress) -> Vec<Address> {
    let entries = ing.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.as_ref());
    let mut out: Vec<Address> = entries
        .into_iter()
        .flatten()
        .filter_map(|e| match (e.ip.as_deref(), e.hostname.as_deref()) {
            (Some(ip), _) if !ip.is_empty() => Some(Address::Ip(ip.to_owned())),
            (_, Some(h)) if !h.is_empty() => Some(Address::Hostname(h.to_owned())),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The set of Ingresses that are ours; `None` until the caller knows (before the index finished its first
/// list), during which nothing is written or cleared.
pub type OwnedIngresses = Option<Arc<BTreeSet<ObjectKey>>>;

/// The Ingresses that have at least one route in `table`, as an [`OwnedIngresses`] value.
///
/// A stop-gap for callers until the translation exposes its ownership decision directly: an Ingress of ours
/// whose every rule is invalid has no route, so it is missing here (its status is then left as it is, or
/// cleared if this replica wrote it).
pub fn ingresses_with_routes(table: &RouteTable) -> OwnedIngresses {
    let routes = table.virtual_hosts.iter().flat_map(|vh| vh.routes.iter()).chain(table.default_route.iter());
    let keys = routes
        .filter(|r| r.ingress.kind == Kind::Ingress.as_str())
        .map(|r| ObjectKey::new(Kind::Ingress, r.ingress.namespace.clone(), r.ingress.name.clone()))
        .collect();
    Some(Arc::new(keys))
}

/// The writes one reconciliation makes: `(ingress, new addresses)`, empty addresses meaning "clear".
pub(crate) fn plan(
    current: &HashMap<ObjectKey, Vec<Address>>,
    ours: &BTreeSet<ObjectKey>,
    desired: &[Address],
    written_by_us: &HashSet<ObjectKey>,
) -> Vec<(ObjectKey, Vec<Address>)> {
    let mut writes = Vec::new();
    let mut entries: Vec<(&ObjectKey, &Vec<Address>)> = current.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    for (key, now) in entries {
        if ours.contains(key) {
            if now.as_slice() != desired {
                writes.push((key.clone(), desired.to_vec()));
            }
        } else if !now.is_empty() && ((!desired.is_empty() && now.as_slice() == desired) || written_by_us.contains(key))
        {
            writes.push((key.clone(), Vec::new()));
        }
    }
    writes
}

/// Runs the status writer until `is_leader` or `ours` is closed. Writes only while `is_leader` is true.
pub async fn run_status_writer(
    client: Client,
    publish: Publish,
    mut is_leader: watch::Receiver<bool>,
    mut ours: watch::Receiver<OwnedIngresses>,
    metrics: KubeMetrics,
) -> Result<()> {
    let mut ingresses =
        watcher::watcher(Api::<Ingress>::all(client.clone()), watcher::Config::default()).default_backoff().boxed();
    let mut services: BoxStream<'static, Result<Event<Service>, watcher::Error>> = match &publish {
        Publish::Service { namespace, name } => watcher::watcher(
            Api::<Service>::namespaced(client.clone(), namespace),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
        )
        .default_backoff()
        .boxed(),
        Publish::Addresses(_) => futures::stream::pending().boxed(),
    };

    let mut desired: Vec<Address> = match &publish {
        Publish::Addresses(list) => {
            let mut v: Vec<Address> = list.iter().map(|s| Address::parse(s)).collect();
            v.sort();
            v.dedup();
            v
        }
        Publish::Service { .. } => Vec::new(),
    };
    let mut desired_known = matches!(publish, Publish::Addresses(_));
    let mut current: HashMap<ObjectKey, Vec<Address>> = HashMap::new();
    let mut listing: Option<HashMap<ObjectKey, Vec<Address>>> = None;
    let mut ingresses_known = false;
    let mut written_by_us: HashSet<ObjectKey> = HashSet::new();
    let mut retry_at: Option<tokio::time::Instant> = None;

    loop {
        let mut dirty = false;
        tokio::select! {
            event = ingresses.next() => match event {
                Some(Ok(event)) => {
                    dirty = fold_ingress(&mut current, &mut listing, &mut ingresses_known, event);
                }
                Some(Err(error)) => {
                    metrics.watch_errors.with_label_values(&["Ingress"]).inc();
                    warn!(message = "Ingress watch of the status writer failed; retrying.", %error);
                }
                None => return Ok(()),
            },
            event = services.next() => match event {
                Some(Ok(Event::Apply(svc) | Event::InitApply(svc))) => {
                    desired = service_addresses(&svc);
                    desired_known = true;
                    dirty = true;
                }
                Some(Ok(Event::Delete(_))) => {
                    desired.clear();
                    dirty = true;
                }
                Some(Ok(Event::Init)) => {}
                Some(Ok(Event::InitDone)) => {
                    desired_known = true;
                    dirty = true;
                }
                Some(Err(error)) => {
                    metrics.watch_errors.with_label_values(&["Service"]).inc();
                    warn!(message = "Publish-service watch failed; retrying.", %error);
                }
                None => return Ok(()),
            },
            changed = is_leader.changed() => {
                if changed.is_err() { return Ok(()); }
                dirty = true;
            }
            changed = ours.changed() => {
                if changed.is_err() { return Ok(()); }
                dirty = true;
            }
            () = sleep_until(retry_at) => {
                retry_at = None;
                dirty = true;
            }
        }
        if !dirty || !*is_leader.borrow() || !ingresses_known || !desired_known {
            continue;
        }
        let Some(owned) = ours.borrow().clone() else {
            continue;
        };
        let writes = plan(&current, &owned, &desired, &written_by_us);
        for (key, addresses) in writes {
            let result = write_status(&client, &key, &addresses).await;
            metrics.status_updates.with_label_values(&[result_label(&result)]).inc();
            match result {
                Ok(()) => {
                    info!(message = "Wrote Ingress status.", ingress = %key, addresses = ?addresses);
                    // Record what we wrote so the next plan does not repeat it before the watch echoes it.
                    current.insert(key.clone(), addresses.clone());
                    if addresses.is_empty() {
                        written_by_us.remove(&key);
                    } else {
                        written_by_us.insert(key);
                    }
                }
                Err(error) if error_is_not_found(&error) => {
                    // Deleted meanwhile; its watch event will drop it.
                }
                Err(error) => {
                    warn!(message = "Writing Ingress status failed; will retry.", ingress = %key, %error);
                    retry_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                }
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn fold_ingress(
    current: &mut HashMap<ObjectKey, Vec<Address>>,
    listing: &mut Option<HashMap<ObjectKey, Vec<Address>>>,
    known: &mut bool,
    event: Event<Ingress>,
) -> bool {
    let key_of = |ing: &Ingress| {
        ObjectKey::new(
            Kind::Ingress,
            ing.metadata.namespace.clone().unwrap_or_default(),
            ing.metadata.name.clone().unwrap_or_default(),
        )
    };
    match event {
        Event::Init => {
            *listing = Some(HashMap::new());
            false
        }
        Event::InitApply(ing) => {
            let entry = (key_of(&ing), ingress_addresses(&ing));
            match listing.as_mut() {
                Some(list) => list.insert(entry.0, entry.1),
                None => current.insert(entry.0, entry.1),
            };
            false
        }
        Event::InitDone => {
            if let Some(list) = listing.take() {
                *current = list;
            }
            *known = true;
            true
        }
        Event::Apply(ing) => {
            current.insert(key_of(&ing), ingress_addresses(&ing));
            true
        }
        Event::Delete(ing) => {
            current.remove(&key_of(&ing));
            true
        }
    }
}

fn error_is_not_found(error: &Error) -> bool {
    matches!(error, Error::Api { source, .. } if crate::error::is_status(source, 404))
}

/// Merge-patches `status.loadBalancer.ingress`; an empty list removes the field.
async fn write_status(client: &Client, key: &ObjectKey, addresses: &[Address]) -> Result<()> {
    let api: Api<Ingress> = Api::namespaced(client.clone(), &key.namespace);
    let entries = if addresses.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::Value::Array(addresses.iter().map(Address::to_json).collect())
    };
    let patch = json!({ "status": { "loadBalancer": { "ingress": entries } } });
    api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|e| Error::api(format!("patch status of {key}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus};

    fn k(name: &str) -> ObjectKey {
        ObjectKey::new(Kind::Ingress, "default", name)
    }

    fn ip(s: &str) -> Address {
        Address::Ip(s.to_owned())
    }

    #[test]
    fn publish_service_must_be_namespace_slash_name() {
        assert_eq!(
            Publish::service("ingress/causeway").ok(),
            Some(Publish::Service { namespace: "ingress".into(), name: "causeway".into() })
        );
        for bad in ["causeway", "/x", "x/", "a/b/c", ""] {
            assert!(Publish::service(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_parse_ips_and_hostnames() {
        assert_eq!(Address::parse("10.0.0.1"), ip("10.0.0.1"));
        assert_eq!(Address::parse("::1"), ip("::1"));
        assert_eq!(Address::parse("lb.example.com"), Address::Hostname("lb.example.com".into()));
    }

    #[test]
    fn service_addresses_prefer_load_balancer_then_external_then_cluster() {
        let mut svc = Service {
            spec: Some(ServiceSpec {
                cluster_ip: Some("10.96.0.10".into()),
                cluster_ips: Some(vec!["10.96.0.10".into()]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        assert_eq!(service_addresses(&svc), vec![ip("10.96.0.10")]);
        if let Some(spec) = svc.spec.as_mut() {
            spec.external_ips = Some(vec!["192.0.2.5".into()]);
        }
        assert_eq!(service_addresses(&svc), vec![ip("192.0.2.5")]);
        svc.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![
                    LoadBalancerIngress { ip: Some("172.18.255.200".into()), ..Default::default() },
                    LoadBalancerIngress { hostname: Some("lb.example".into()), ..Default::default() },
                ]),
            }),
            ..ServiceStatus::default()
        });
        assert_eq!(service_addresses(&svc), vec![ip("172.18.255.200"), Address::Hostname("lb.example".into())]);
        let headless = Service {
            spec: Some(ServiceSpec { cluster_ip: Some("None".into()), ..ServiceSpec::default() }),
            ..Service::default()
        };
        assert_eq!(service_addresses(&headless), vec![]);
    }

    #[test]
    fn plan_writes_ours_and_clears_what_stopped_being_ours() {
        let desired = vec![ip("192.0.2.1")];
        let current = HashMap::from([
            (k("ours-empty"), vec![]),
            (k("ours-done"), desired.clone()),
            (k("ours-stale"), vec![ip("192.0.2.9")]),
            (k("left-us"), desired.clone()),
            (k("foreign"), vec![ip("198.51.100.1")]),
            (k("foreign-empty"), vec![]),
            (k("we-wrote-old"), vec![ip("192.0.2.7")]),
        ]);
        let ours = BTreeSet::from([k("ours-empty"), k("ours-done"), k("ours-stale"), k("not-listed-yet")]);
        let written = HashSet::from([k("we-wrote-old")]);
        let writes = plan(&current, &ours, &desired, &written);
        assert_eq!(
            writes,
            vec![
                (k("left-us"), vec![]),
                (k("ours-empty"), desired.clone()),
                (k("ours-stale"), desired.clone()),
                (k("we-wrote-old"), vec![]),
            ]
        );
    }

    #[test]
    fn plan_with_nothing_to_publish_does_not_clear_foreign_empty_matches() {
        let current = HashMap::from([(k("foreign"), vec![])]);
        assert_eq!(plan(&current, &BTreeSet::new(), &[], &HashSet::new()), vec![]);
    }
}
