//! Leader election on a `coordination.k8s.io/v1` Lease, the protocol client-go's `leaderelection` uses.
//!
//! Every replica runs an elector. The holder renews `spec.renewTime` every retry period; the others watch the
//! record and take it over once it has not changed for `leaseDurationSeconds`, measured on their own clock from
//! the moment they first saw that version (no clock comparison between machines). Every write is a `replace`
//! carrying the `resourceVersion` we read, so two candidates cannot both win: the API server rejects the
//! second with 409 Conflict.
//!
//! A leader that cannot renew for `renew_deadline` (shorter than the lease duration) stops leading before
//! anyone else may take over. When the elector is stopped gracefully it releases the lease (empty holder), so a
//! successor takes over at its next retry instead of after a full lease duration.
//!
//! ```text
//!   get lease ──► decide(record, observed_at, now) ──► Create | Renew | Acquire | Wait
//!                                                          │ replace(resourceVersion)
//!                                 is_leader: watch<bool> ◄─┘ (true only after a successful write)
//! ```

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::error::{Access, is_status};
use crate::metrics::KubeMetrics;

/// Settings of one elector.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease; all replicas of one deployment use the same name.
    pub name: String,
    /// This replica's identity (the pod name, or host name plus a random suffix); unique per replica.
    pub identity: String,
    /// How long a lease stays valid without renewal before another replica may take it [15 s].
    pub lease_duration: Duration,
    /// How long the leader keeps leading while renewals fail [10 s]; must be shorter than `lease_duration`.
    pub renew_deadline: Duration,
    /// How often to try to renew or acquire [2 s].
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// The client-go defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// The permissions the elector needs.
    pub fn required_access(&self) -> Vec<Access> {
        ["get", "create", "update"]
            .into_iter()
            .map(|verb| Access {
                verb,
                group: "coordination.k8s.io",
                resource: "leases",
                namespace: Some(self.namespace.clone()),
            })
            .collect()
    }
}

/// A running elector. Dropping the handle stops it and releases the lease in the background;
/// [`LeaderHandle::shutdown`] does the same and waits, [`LeaderHandle::abort`] stops without releasing.
#[derive(Debug)]
pub struct LeaderHandle {
    is_leader: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl LeaderHandle {
    /// Whether this replica leads now; `changed()` wakes on every transition.
    pub fn is_leader(&self) -> watch::Receiver<bool> {
        self.is_leader.clone()
    }

    /// Stops electing and, if leading, releases the lease so a successor takes over at once.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            warn!(message = "Leader election task failed.", %error);
        }
    }

    /// Stops electing without releasing the lease, as a crash would: a successor waits out the lease.
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Starts leader election with the default timings and returns whether this replica leads.
///
/// The elector runs until every clone of the returned receiver is dropped; then it releases the lease.
pub fn run_leader_election(
    client: Client,
    lease_ns: &str,
    lease_name: &str,
    identity: &str,
    metrics: KubeMetrics,
) -> watch::Receiver<bool> {
    let LeaderHandle { is_leader, stop, task } =
        spawn_elector(client, LeaseConfig::new(lease_ns, lease_name, identity), metrics);
    // The elector ends by itself (and releases the lease) when every receiver is gone; keep its stop channel
    // open until then, since a closed stop channel also ends it.
    tokio::spawn(async move {
        let _stop = stop;
        if let Err(error) = task.await {
            warn!(message = "Leader election task failed.", %error);
        }
    });
    is_leader
}

/// Starts an elector with explicit settings.
pub fn spawn_elector(client: Client, config: LeaseConfig, metrics: KubeMetrics) -> LeaderHandle {
    let (leader_tx, leader_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let task = tokio::spawn(run(api, config, leader_tx, stop_rx, metrics));
    LeaderHandle { is_leader: leader_rx, stop: stop_tx, task }
}

// === Decision ===

/// What the elector does next, given the lease as last read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// No lease exists: create it with us as holder.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over.
    Acquire,
    /// Someone else holds a live lease.
    Wait,
}

/// The parts of a Lease the decision reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub holder: Option<String>,
    pub lease_duration: Option<Duration>,
    pub resource_version: Option<String>,
}

impl Record {
    fn from_lease(lease: &Lease) -> Self {
        let spec = lease.spec.as_ref();
        Self {
            holder: spec.and_then(|s| s.holder_identity.clone()).filter(|h| !h.is_empty()),
            lease_duration: spec
                .and_then(|s| s.lease_duration_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs),
            resource_version: lease.metadata.resource_version.clone(),
        }
    }
}

/// The election rule. `observed_at` is when this elector first saw the current version of the record.
pub(crate) fn decide(
    identity: &str,
    record: Option<&Record>,
    observed_at: Instant,
    now: Instant,
    default_duration: Duration,
) -> Step {
    let Some(record) = record else {
        return Step::Create;
    };
    match record.holder.as_deref() {
        Some(holder) if holder == identity => Step::Renew,
        None => Step::Acquire,
        Some(_) => {
            let duration = record.lease_duration.unwrap_or(default_duration);
            if now.saturating_duration_since(observed_at) >= duration { Step::Acquire } else { Step::Wait }
        }
    }
}

// === Loop ===

struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    leader_tx: watch::Sender<bool>,
    metrics: KubeMetrics,
    /// The record last read and when we first saw that version.
    observed: Option<(Record, Instant)>,
    /// When we last renewed successfully, while leading.
    last_renew: Option<Instant>,
}

async fn run(
    api: Api<Lease>,
    config: LeaseConfig,
    leader_tx: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
    metrics: KubeMetrics,
) {
    let retry = config.retry_period;
    let mut elector = Elector { api, config, leader_tx, metrics, observed: None, last_renew: None };
    loop {
        elector.tick().await;
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            // A stop request, or the handle dropped together with its stop channel.
            _ = stop.changed() => break,
            _ = elector.leader_tx.closed() => break,
        }
    }
    elector.release().await;
}

impl Elector {
    fn set_leader(&mut self, leading: bool) {
        let was = *self.leader_tx.borrow();
        if was != leading {
            let change = if leading { "acquired" } else { "lost" };
            info!(message = "Leadership changed.", lease = %self.config.name, identity = %self.config.identity, change);
            self.metrics.leader_transitions.with_label_values(&[change]).inc();
            self.metrics.leader.set(i64::from(leading));
            self.leader_tx.send_replace(leading);
        }
        if !leading {
            self.last_renew = None;
        }
    }

    /// A leader whose renewals have failed for longer than the renew deadline steps down.
    fn renew_failed(&mut self, now: Instant) {
        if let Some(last) = self.last_renew
            && now.saturating_duration_since(last) >= self.config.renew_deadline
        {
            warn!(message = "Could not renew the lease within the renew deadline; stepping down.", lease = %self.config.name);
            self.set_leader(false);
        }
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        let current = match self.api.get_opt(&self.config.name).await {
            Ok(lease) => lease,
            Err(error) => {
                warn!(message = "Reading the leader lease failed.", lease = %self.config.name, %error);
                self.renew_failed(now);
                return;
            }
        };
        let record = current.as_ref().map(Record::from_lease);
        let observed_at = match (&self.observed, &record) {
            (Some((seen, at)), Some(record)) if seen == record => *at,
            _ => now,
        };
        self.observed = record.clone().map(|r| (r, observed_at));

        let step = decide(&self.config.identity, record.as_ref(), observed_at, now, self.config.lease_duration);
        let written = match (step, current) {
            (Step::Wait, _) => {
                self.set_leader(false);
                return;
            }
            (Step::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec_for_new_term(0)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (Step::Renew, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                spec.renew_time = Some(MicroTime(Timestamp::now()));
                spec.lease_duration_seconds = Some(duration_secs(self.config.lease_duration));
                self.api.replace(&self.config.name, &PostParams::default(), &lease).await
            }
            (Step::Acquire, Some(mut lease)) => {
                let transitions = lease.spec.as_ref().and_then(|s| s.lease_transitions).unwrap_or(0);
                lease.spec = Some(self.spec_for_new_term(transitions.saturating_add(1)));
                self.api.replace(&self.config.name, &PostParams::default(), &lease).await
            }
            // decide() only answers Renew or Acquire for an existing lease.
            (Step::Renew | Step::Acquire, None) => return,
        };
        match written {
            Ok(lease) => {
                self.observed = Some((Record::from_lease(&lease), now));
                self.last_renew = Some(now);
                self.set_leader(true);
            }
            Err(error) => {
                // 409: another candidate wrote first; 404 after a delete; both resolve at the next read.
                if !is_status(&error, 409) {
                    warn!(message = "Writing the leader lease failed.", lease = %self.config.name, ?step, %error);
                }
                if step == Step::Renew {
                    self.renew_failed(now);
                }
            }
        }
    }

    fn spec_for_new_term(&self, transitions: i32) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(duration_secs(self.config.lease_duration)),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Gives the lease up if we hold it: empty holder, so the next candidate acquires without waiting.
    async fn release(&mut self) {
        let was_leader = *self.leader_tx.borrow();
        self.set_leader(false);
        if !was_leader {
            return;
        }
        let mut lease = match self.api.get_opt(&self.config.name).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return,
            Err(error) => {
                warn!(message = "Reading the leader lease for release failed.", %error);
                return;
            }
        };
        let ours = lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(&self.config.identity);
        if !ours {
            return;
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        }
        match self.api.replace(&self.config.name, &PostParams::default(), &lease).await {
            Ok(_) => info!(message = "Released the leader lease.", lease = %self.config.name),
            Err(error) => warn!(message = "Releasing the leader lease failed.", %error),
        }
    }
}

fn duration_secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);

    fn record(holder: Option<&str>, secs: Option<u64>) -> Record {
        Record {
            holder: holder.map(str::to_owned),
            lease_duration: secs.map(Duration::from_secs),
            resource_version: Some("1".into()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_lease_is_created() {
        let t = Instant::now();
        assert_eq!(decide("a", None, t, t, D), Step::Create);
    }

    #[tokio::test(start_paused = true)]
    async fn holder_renews_and_others_wait_out_the_lease() {
        let t0 = Instant::now();
        let r = record(Some("a"), Some(10));
        assert_eq!(decide("a", Some(&r), t0, t0, D), Step::Renew);
        assert_eq!(decide("b", Some(&r), t0, t0 + Duration::from_secs(9), D), Step::Wait);
        // The lease's own duration wins over the local default.
        assert_eq!(decide("b", Some(&r), t0, t0 + Duration::from_secs(10), D), Step::Acquire);
        let no_duration = record(Some("a"), None);
        assert_eq!(decide("b", Some(&no_duration), t0, t0 + Duration::from_secs(14), D), Step::Wait);
        assert_eq!(decide("b", Some(&no_duration), t0, t0 + D, D), Step::Acquire);
    }

    #[tokio::test(start_paused = true)]
    async fn released_lease_is_taken_at_once() {
        let t = Instant::now();
        assert_eq!(decide("b", Some(&record(None, Some(1))), t, t, D), Step::Acquire);
    }

    #[test]
    fn empty_holder_in_a_lease_counts_as_free() {
        let lease = Lease {
            spec: Some(LeaseSpec { holder_identity: Some(String::new()), ..LeaseSpec::default() }),
            ..Lease::default()
        };
        assert_eq!(Record::from_lease(&lease).holder, None);
    }

    #[test]
    fn durations_are_whole_seconds_at_least_one() {
        assert_eq!(duration_secs(Duration::from_millis(300)), 1);
        assert_eq!(duration_secs(Duration::from_secs(15)), 15);
    }
}
