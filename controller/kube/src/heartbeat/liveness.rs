//! Which nodes are alive, from what one observer saw of the heartbeat Leases: pure, no I/O, no wall clock.
//!
//! Each heartbeat is named by its key, `<component>/<node>` ([`heartbeat_key`]): the node agents' heartbeats
//! (`node/…`) and, when proxies heartbeat, theirs (`proxy/…`) are judged together, so one observer's stale-view
//! guard covers both.
//!
//! The rule is client-go leader election's: a Lease is alive while it was *observed to change* within its
//! duration, measured on the observer's own monotonic clock from the moment the change was seen. `renewTime` is
//! never compared with our clock, so a node whose clock is off by minutes is judged exactly like the others.
//!
//! ```text
//!  Lease events ──► Observations { key → Heartbeat { record, observed_at } } ──judge(now)──► Verdict
//!                                                                                  dead, live, recheck_at
//! ```
//!
//! - A **released** Lease (empty `holderIdentity`, written on a graceful stop) is dead at once.
//! - A Lease not seen to change for its duration is dead; [`Verdict::recheck_at`] is the next instant a live
//!   Lease would expire, so the caller re-judges on a timer even when no event arrives.
//! - A node **without** a Lease is not judged here (it is in neither set): the caller falls back to Node
//!   readiness for it, so agents without heartbeats (an upgrade in progress) keep working.
//! - **A stale view judges nothing new.** The observer's own Lease is renewed every interval and comes back
//!   through the same watch; when it has not been seen for half of its duration, the watch (or the API server)
//!   is not delivering, and silence from the others proves nothing. Expiry is then judged only up to that
//!   instant ([`Verdict::fresh`] false): during an API server outage no address moves, instead of every node
//!   declaring every other dead. When the observer's own Lease is seen again after such a gap, the gap does not
//!   count against the others either: every Lease still alive when the gap began has its silence measured from
//!   the end of the gap (as if the clock had stopped while we could not see), so nobody is declared dead merely
//!   because its first renewal after an outage arrives a moment after ours.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The parts of a heartbeat Lease whose change is a sign of life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatRecord {
    /// `spec.holderIdentity`; `None` (or empty in the object) once released.
    pub holder: Option<String>,
    /// `spec.renewTime` as written (compared for change only, never with our clock).
    pub renew_time: Option<String>,
    /// How long the Lease stays alive without a change (the precise duration annotation, else
    /// `spec.leaseDurationSeconds`).
    pub duration: Duration,
}

/// One node's heartbeat as one observer knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// The Lease as last seen.
    pub record: HeartbeatRecord,
    /// Local monotonic time at which `record` was first seen in its current state.
    pub observed_at: Instant,
}

/// The key of the heartbeat of `component` (`node`, `proxy`) on `node`: `<component>/<node>` (node names
/// never contain a slash).
pub fn heartbeat_key(component: &str, node: &str) -> String {
    format!("{component}/{node}")
}

/// Everything one observer has seen: every heartbeat that has a Lease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observations {
    /// Heartbeat key ([`heartbeat_key`]) → its heartbeat.
    pub leases: BTreeMap<String, Heartbeat>,
    /// When the first full list of the Leases arrived; `None` before it (nothing is judged yet).
    pub synced_at: Option<Instant>,
    /// The observer's own heartbeat, when it renews one (see the module documentation on stale views).
    pub own: Option<OwnHeartbeat>,
}

impl Observations {
    /// No observations yet, for an observer renewing `own` (or none).
    pub fn new(own: Option<OwnHeartbeat>) -> Self {
        Self { own, ..Self::default() }
    }

    /// Folds in one Lease as seen at `now`: the observation time moves only when the record changed. A change of
    /// the observer's own Lease after a stale gap first moves the others' silence past the gap.
    pub fn observe(&mut self, key: &str, record: HeartbeatRecord, now: Instant) {
        if self.leases.get(key).is_some_and(|hb| hb.record == record) {
            return;
        }
        if let Some(own) = &self.own
            && own.key == key
            && let Some(synced_at) = self.synced_at
        {
            let seen = self.leases.get(key).map_or(synced_at, |hb| hb.observed_at.max(synced_at));
            let frozen_at = seen + own.lease_duration / 2;
            if now > frozen_at {
                let gap = now.saturating_duration_since(seen);
                for (other, hb) in &mut self.leases {
                    if other != key && hb.record.holder.is_some() && hb.observed_at + hb.record.duration > frozen_at {
                        hb.observed_at = (hb.observed_at + gap).min(now);
                    }
                }
            }
        }
        self.leases.insert(key.to_owned(), Heartbeat { record, observed_at: now });
    }

    /// Forgets a Lease (deleted): its node is left to its readiness again.
    pub fn forget(&mut self, key: &str) {
        self.leases.remove(key);
    }

    /// A complete list of the Leases as seen at `now` (the first list, or a relist after a watch restart):
    /// unchanged records keep their first sighting (a relist is no sign of life), changed ones count as renewed,
    /// missing ones are forgotten. The observer's own Lease is folded in first (see [`Self::observe`]).
    pub fn relist(&mut self, leases: impl IntoIterator<Item = (String, HeartbeatRecord)>, now: Instant) {
        let mut leases: BTreeMap<String, HeartbeatRecord> = leases.into_iter().collect();
        self.leases.retain(|key, _| leases.contains_key(key));
        self.synced_at.get_or_insert(now);
        let own = self.own.as_ref().map(|o| o.key.clone());
        if let Some(own) = own
            && let Some(record) = leases.remove(&own)
        {
            self.observe(&own, record, now);
        }
        for (key, record) in leases {
            self.observe(&key, record, now);
        }
    }
}

/// The observer's own heartbeat, when it renews one (see the module documentation on stale views).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnHeartbeat {
    /// The key of the heartbeat this observer renews ([`heartbeat_key`]).
    pub key: String,
    /// The duration it writes into that Lease.
    pub lease_duration: Duration,
}

/// What one observer concludes at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Heartbeats (keys) whose Lease is alive.
    pub live: BTreeSet<String>,
    /// Heartbeats (keys) whose Lease is released or expired.
    pub dead: BTreeSet<String>,
    /// Whether the view is current (see the module documentation); when false, expiry was judged as of the last
    /// instant the view was known to be current.
    pub fresh: bool,
    /// When to judge again if nothing else happens: the next expiry of a live Lease (always after `now`);
    /// `None` when nothing can change without a new event.
    pub recheck_at: Option<Instant>,
}

impl Verdict {
    /// The nodes among `nodes` that may announce as far as the heartbeats of `component` are concerned: all
    /// but those whose heartbeat is dead (a node without a Lease is left to its readiness).
    pub fn alive_among<'a>(&self, component: &str, nodes: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        nodes.into_iter().filter(|n| !self.dead.contains(&heartbeat_key(component, n))).map(str::to_owned).collect()
    }

    /// The nodes whose heartbeat of `component` is alive.
    pub fn live_nodes(&self, component: &str) -> BTreeSet<String> {
        let prefix = format!("{component}/");
        self.live.iter().filter_map(|k| k.strip_prefix(&prefix)).map(str::to_owned).collect()
    }

    /// The nodes whose heartbeat of `component` is dead.
    pub fn dead_nodes(&self, component: &str) -> BTreeSet<String> {
        let prefix = format!("{component}/");
        self.dead.iter().filter_map(|k| k.strip_prefix(&prefix)).map(str::to_owned).collect()
    }

    /// Whether any heartbeat of `component` exists at all (alive or dead).
    pub fn knows(&self, component: &str) -> bool {
        let prefix = format!("{component}/");
        self.live.iter().chain(&self.dead).any(|k| k.starts_with(&prefix))
    }
}

/// Judges every observed heartbeat at `now`.
///
/// With [`Observations::own`] set, the view counts as current until half of the own lease duration after this
/// observer last saw its own Lease change (or, before its Lease first appears, after the first list); expiry is
/// judged at `min(now, that instant)`. Half the duration is more than one renewal interval (so a healthy view
/// never freezes) and less than the duration minus one interval (so a view that stopped at an outage cannot see
/// another node's last renewal expire). Without it the view is always taken as current.
pub fn judge(observations: &Observations, now: Instant) -> Verdict {
    let Some(synced_at) = observations.synced_at else {
        return Verdict::default();
    };
    let trusted_until = observations.own.as_ref().map(|own| {
        let seen = observations.leases.get(&own.key).map_or(synced_at, |hb| hb.observed_at.max(synced_at));
        seen + own.lease_duration / 2
    });
    let (at, fresh) = match trusted_until {
        Some(until) if until <= now => (until, false),
        _ => (now, true),
    };
    let mut verdict = Verdict { fresh, ..Verdict::default() };
    for (key, hb) in &observations.leases {
        let expires = hb.observed_at + hb.record.duration;
        if hb.record.holder.is_none() || expires <= at {
            verdict.dead.insert(key.clone());
        } else {
            verdict.live.insert(key.clone());
            if fresh {
                verdict.recheck_at = Some(verdict.recheck_at.map_or(expires, |r| r.min(expires)));
            }
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_millis(1500);
    const ONE_S: Duration = Duration::from_secs(1);
    const FOUR_S: Duration = Duration::from_secs(4);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn record(holder: Option<&str>, renew: &str, duration: Duration) -> HeartbeatRecord {
        HeartbeatRecord { holder: holder.map(str::to_owned), renew_time: Some(renew.to_owned()), duration }
    }

    /// (node, holder, last change seen at ms after t0, lease duration).
    type Seen = (&'static str, Option<&'static str>, u64, Duration);

    fn observations(t0: Instant, seen: &[Seen]) -> Observations {
        let mut o = Observations { synced_at: Some(t0), ..Observations::default() };
        for (node, holder, at, d) in seen {
            o.leases.insert(
                (*node).to_owned(),
                Heartbeat { record: record(*holder, &format!("r{at}"), *d), observed_at: t0 + ms(*at) },
            );
        }
        o
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            seen: &'static [Seen],
            own: Option<(&'static str, Duration)>,
            now: u64,
            live: &'static [&'static str],
            dead: &'static [&'static str],
            fresh: bool,
            recheck: Option<u64>,
        }
        let cases = [
            Case {
                name: "all renewed recently",
                seen: &[("a", Some("a"), 900, D), ("b", Some("b"), 1000, D)],
                own: None,
                now: 1200,
                live: &["a", "b"],
                dead: &[],
                fresh: true,
                recheck: Some(2400),
            },
            Case {
                name: "expiry is exact: alive one ms before, dead at the instant",
                seen: &[("a", Some("a"), 0, D)],
                own: None,
                now: 1499,
                live: &["a"],
                dead: &[],
                fresh: true,
                recheck: Some(1500),
            },
            Case {
                name: "expired at the instant",
                seen: &[("a", Some("a"), 0, D)],
                own: None,
                now: 1500,
                live: &[],
                dead: &["a"],
                fresh: true,
                recheck: None,
            },
            Case {
                name: "released is dead at once",
                seen: &[("a", None, 1000, D), ("b", Some("b"), 1000, D)],
                own: None,
                now: 1001,
                live: &["b"],
                dead: &["a"],
                fresh: true,
                recheck: Some(2500),
            },
            Case {
                name: "each lease keeps its own duration",
                seen: &[("a", Some("a"), 0, ONE_S), ("b", Some("b"), 0, FOUR_S)],
                own: None,
                now: 2000,
                live: &["b"],
                dead: &["a"],
                fresh: true,
                recheck: Some(4000),
            },
            Case {
                name: "own lease seen recently: judged at now",
                seen: &[("me", Some("me"), 1900, D), ("a", Some("a"), 100, D), ("b", Some("b"), 1800, D)],
                own: Some(("me", D)),
                now: 2000,
                live: &["b", "me"],
                dead: &["a"],
                fresh: true,
                recheck: Some(3300),
            },
            Case {
                name: "own lease silent for half its duration: frozen at that instant, nothing newly dead",
                // An API outage from t=1000: everybody's last renewal was seen between 600 and 1000.
                seen: &[("me", Some("me"), 1000, D), ("a", Some("a"), 600, D), ("b", Some("b"), 900, D)],
                own: Some(("me", D)),
                now: 5000,
                live: &["a", "b", "me"],
                dead: &[],
                fresh: false,
                recheck: None,
            },
            Case {
                name: "frozen view still sees what expired before it froze",
                seen: &[("me", Some("me"), 3000, D), ("a", Some("a"), 0, D), ("gone", None, 10, D)],
                own: Some(("me", D)),
                now: 9000,
                live: &["me"],
                dead: &["a", "gone"],
                fresh: false,
                recheck: None,
            },
            Case {
                name: "own lease not created yet: trusted from the first list",
                seen: &[("a", Some("a"), 0, D)],
                own: Some(("me", D)),
                now: 700,
                live: &["a"],
                dead: &[],
                fresh: true,
                recheck: Some(1500),
            },
            Case {
                name: "own lease never appears: the view freezes at the first list plus half a duration",
                seen: &[("a", Some("a"), 0, D)],
                own: Some(("me", D)),
                now: 60_000,
                live: &["a"],
                dead: &[],
                fresh: false,
                recheck: None,
            },
            Case {
                name: "a fresh view never schedules a recheck in the past",
                seen: &[("me", Some("me"), 4900, D), ("a", Some("a"), 3600, D)],
                own: Some(("me", D)),
                now: 5000,
                live: &["a", "me"],
                dead: &[],
                fresh: true,
                recheck: Some(5100),
            },
        ];
        for c in cases {
            let t0 = Instant::now();
            let mut obs = observations(t0, c.seen);
            obs.own = c.own.map(|(node, lease_duration)| OwnHeartbeat { key: node.to_owned(), lease_duration });
            let v = judge(&obs, t0 + ms(c.now));
            assert_eq!(v.live, set(c.live), "{}: live", c.name);
            assert_eq!(v.dead, set(c.dead), "{}: dead", c.name);
            assert_eq!(v.fresh, c.fresh, "{}: fresh", c.name);
            assert_eq!(v.recheck_at, c.recheck.map(|r| t0 + ms(r)), "{}: recheck", c.name);
            if let Some(r) = v.recheck_at {
                assert!(r > t0 + ms(c.now), "{}: recheck not in the future", c.name);
            }
        }
    }

    #[test]
    fn nothing_is_judged_before_the_first_list() {
        let t0 = Instant::now();
        let mut obs = observations(t0, &[("a", None, 0, D)]);
        obs.synced_at = None;
        assert_eq!(judge(&obs, t0 + ms(10)), Verdict::default());
    }

    #[test]
    fn observing_the_same_record_again_keeps_the_first_sighting() {
        let t0 = Instant::now();
        let mut obs = Observations { synced_at: Some(t0), ..Observations::default() };
        obs.observe("a", record(Some("a"), "r1", D), t0);
        // A relist or a metadata-only change brings the same record back later: not a sign of life.
        obs.observe("a", record(Some("a"), "r1", D), t0 + ms(1400));
        assert_eq!(obs.leases["a"].observed_at, t0);
        assert!(judge(&obs, t0 + ms(1500)).dead.contains("a"));
        // A renewal is.
        obs.observe("a", record(Some("a"), "r2", D), t0 + ms(1600));
        assert_eq!(obs.leases["a"].observed_at, t0 + ms(1600));
        assert!(judge(&obs, t0 + ms(1700)).live.contains("a"));
    }

    #[test]
    fn alive_among_leaves_nodes_without_a_lease_to_readiness() {
        let t0 = Instant::now();
        let seen = [
            ("node/a", Some("a"), 0, D),
            ("node/b", None, 0, D),
            ("proxy/a", None, 0, D),
            ("proxy/c", Some("c"), 0, D),
        ];
        let obs = observations(t0, &seen);
        let v = judge(&obs, t0 + ms(10));
        assert_eq!(v.alive_among("node", ["a", "b", "old-agent"]), set(&["a", "old-agent"]));
        assert_eq!(v.alive_among("proxy", ["a", "b", "c"]), set(&["b", "c"]));
        assert_eq!(v.live_nodes("proxy"), set(&["c"]));
        assert_eq!(v.live_nodes("node"), set(&["a"]));
        assert_eq!(v.dead_nodes("node"), set(&["b"]));
        assert!(v.knows("proxy") && v.knows("node") && !v.knows("other"));
    }

    #[test]
    fn silence_during_our_own_gap_does_not_count_against_the_others() {
        let t0 = Instant::now();
        let rec = |n: &str, r: u64| record(Some(n), &format!("r{r}"), D);
        let mut obs = Observations::new(Some(OwnHeartbeat { key: "me".into(), lease_duration: D }));
        obs.relist([("me".into(), rec("me", 0)), ("a".into(), rec("a", 0)), ("b".into(), rec("b", 0))], t0);
        obs.relist([("me".into(), rec("me", 0)), ("a".into(), rec("a", 0)), ("c".into(), rec("c", 0))], t0);
        assert!(!obs.leases.contains_key("b"), "a Lease missing from a relist is forgotten");
        obs.observe("me", rec("me", 500), t0 + ms(500));
        obs.observe("a", rec("a", 600), t0 + ms(600));
        obs.observe("me", rec("me", 1000), t0 + ms(1000));
        // An API outage from 1000 to 5000: nothing arrives; the view freezes at 1750 with `a` alive, `c` dead.
        let frozen = judge(&obs, t0 + ms(4000));
        assert!(!frozen.fresh);
        assert_eq!((frozen.live, frozen.dead), (set(&["a", "me"]), set(&["c"])));
        // Our own renewal comes back first: `a` is not dead for having been silent while we could not see.
        obs.observe("me", rec("me", 5000), t0 + ms(5000));
        let back = judge(&obs, t0 + ms(5000));
        assert!(back.fresh);
        assert_eq!((back.live.clone(), back.dead.clone()), (set(&["a", "me"]), set(&["c"])));
        // `a` was last seen 400 ms before our own last sighting at 1000; its remaining 1100 ms start at 5000.
        assert_eq!(back.recheck_at, Some(t0 + ms(6100)));
        obs.observe("me", rec("me", 5500), t0 + ms(5500));
        obs.observe("me", rec("me", 6000), t0 + ms(6000));
        assert_eq!(judge(&obs, t0 + ms(6099)).dead, set(&["c"]));
        assert_eq!(judge(&obs, t0 + ms(6100)).dead, set(&["a", "c"]), "a node that stays silent still expires");
    }

    #[test]
    fn a_relist_is_no_sign_of_life_but_a_changed_record_in_it_is() {
        let t0 = Instant::now();
        let mut obs = Observations::new(None);
        obs.relist([("a".into(), record(Some("a"), "r0", D)), ("b".into(), record(Some("b"), "r0", D))], t0);
        obs.relist([("a".into(), record(Some("a"), "r0", D)), ("b".into(), record(Some("b"), "r1", D))], t0 + ms(1000));
        assert_eq!(obs.synced_at, Some(t0), "synced_at is the first list");
        assert_eq!(obs.leases["a"].observed_at, t0);
        assert_eq!(obs.leases["b"].observed_at, t0 + ms(1000));
        assert_eq!(judge(&obs, t0 + ms(1500)).dead, set(&["a"]));
        obs.forget("a");
        assert!(judge(&obs, t0 + ms(1500)).dead.is_empty());
    }
}
