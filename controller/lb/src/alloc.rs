//! Deterministic address allocation.

use crate::addr::{Family, next};
use crate::note::{Diags, EventNote, REASON_ADDRESS_CONFLICT, REASON_ADDRESS_RELEASED, REASON_ALLOCATION_FAILED};
use crate::pool::Pool;
use crate::service::{LbService, ServiceKey};
use causeway_model::Diagnostic;
use causeway_model::ObjectRef;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The addresses one Service is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// One address per family the Service gets (today: one address, or the addresses it asked for).
    pub addresses: Vec<IpAddr>,
    /// The pool of the first address.
    pub pool: String,
}

/// How full a pool is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolUsage {
    /// The IPPool's name.
    pub pool: String,
    /// Addresses in its usable ranges (saturating).
    pub total: u128,
    /// Distinct addresses of the pool held by at least one Service.
    pub used: u64,
}

/// The outcome of [`allocate`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allocation {
    /// Every Service that holds at least one address.
    pub assignments: BTreeMap<ServiceKey, Assignment>,
    /// Services that hold nothing (exhaustion, a refused request, no pool for them), oldest first.
    pub pending: Vec<ServiceKey>,
    /// Per pool, in pool order.
    pub usage: Vec<PoolUsage>,
    /// Why Services are pending or lost an address.
    pub diagnostics: Vec<Diagnostic>,
    /// How each diagnostic reads as an Event (reason, the other object involved).
    pub notes: BTreeMap<Diagnostic, EventNote>,
}

/// Who holds each address.
type Holders<'a> = BTreeMap<IpAddr, Vec<&'a LbService>>;

/// The first holder of `ip` that `svc` may not share it with.
fn conflict<'a>(holders: &Holders<'a>, ip: IpAddr, svc: &LbService) -> Option<&'a LbService> {
    holders.get(&ip)?.iter().copied().find(|h| !svc.can_share_with(h))
}

/// The lowest address of `range` that nobody holds.
fn first_free(range: &crate::addr::AddrRange, holders: &Holders<'_>) -> Option<IpAddr> {
    let mut cursor = range.start();
    for held in holders.range(range.start()..=range.stop()).map(|(ip, _)| *ip) {
        if held != cursor {
            break;
        }
        cursor = next(cursor)?;
    }
    range.contains(cursor).then_some(cursor)
}

fn hold<'a>(holders: &mut Holders<'a>, ip: IpAddr, svc: &'a LbService) {
    holders.entry(ip).or_default().push(svc);
}

/// Allocate addresses to `services` from `pools`.
///
/// **Deterministic**: the result depends only on the inputs, never on their order or on earlier calls. Services
/// are taken oldest first (`creationTimestamp`, a missing one last, then namespace/name) and pools in the order
/// [`crate::validate_pools`] returns them (oldest first); addresses are tried lowest first. So every process that
/// computes the allocation from the same objects agrees — which is what makes manifests mode work without
/// status writes: the controller, every node agent and the proxy each run this on the same directory and get
/// the same addresses.
///
/// Rules, in this order:
/// 1. **Stable**: an address in `status.loadBalancer.ingress` ([`LbService::current`]) stays while it lies in a
///    pool (a disabled one too), fits what the Service asks for (its requested addresses, its named pool, the
///    pool's selector — an invalid selector takes nothing away), and no older Service holds it without being
///    able to share it. At most one per family.
/// 2. **Requested**: annotation `causeway.dev/loadBalancerIPs` or `spec.loadBalancerIP` — each address must be in
///    a pool (the named one, if any), that pool must be enabled and select the Service, and the address must be
///    free or shareable; otherwise an error naming the holder or the pool, and the Service stays pending. All
///    requests are served before any automatic choice, so "any address" never takes an address that another
///    Service asks for by name (in manifests mode, where nothing is held in status, adding such a request moves
///    the automatic holder; in a cluster, the holder keeps it by rule 1 and the request is refused).
/// 3. **Automatic**: from the pool named by `causeway.dev/address-pool`, else from every enabled pool with
///    `autoAssign` whose selector matches; a Service with a sharing key first joins an address already held by
///    Services it may share with ([`LbService::can_share_with`]), else takes the lowest free address.
/// 4. **Never duplicated**: two Services hold one address only when each may share with every other holder.
/// 5. **Released**: a Service missing from `services` (deleted, no longer type LoadBalancer, another class) holds
///    nothing, so its addresses are free for the next Service.
/// 6. **Exhaustion**: a warning naming the pools; the Service stays pending (listed in [`Allocation::pending`]).
pub fn allocate(pools: &[Pool], services: &[LbService]) -> Allocation {
    let mut ordered: Vec<&LbService> = services.iter().collect();
    ordered.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    let mut diags = Diags::default();
    let mut holders: Holders<'_> = BTreeMap::new();
    let mut got: BTreeMap<&ServiceKey, Vec<(IpAddr, &Pool)>> = BTreeMap::new();

    // 1. Keep what the Services already hold.
    for &svc in &ordered {
        let obj = svc.key.object_ref();
        let mut kept: Vec<(IpAddr, &Pool)> = Vec::new();
        for (i, &ip) in svc.current.iter().enumerate() {
            let field = format!("status.loadBalancer.ingress[{i}].ip");
            if kept.iter().any(|(k, _)| Family::of(*k) == Family::of(ip)) {
                let d = Diagnostic::warning(
                    obj.clone(),
                    field,
                    format!("{ip} is a second address of its family; released"),
                );
                diags.push(d, REASON_ADDRESS_RELEASED, None);
                continue;
            }
            let Some(pool) = pools.iter().find(|p| p.contains(ip)) else {
                let d = Diagnostic::warning(obj.clone(), field, format!("{ip} is in no IPPool any more; released"));
                diags.push(d, REASON_ADDRESS_RELEASED, None);
                continue;
            };
            // An invalid selector (`Nothing`, already reported on the pool) gives no new addresses but takes
            // none away: bad input must not move what is allocated.
            let fits = (svc.requested.is_empty() || svc.requested.contains(&ip))
                && svc.pool.as_ref().is_none_or(|want| *want == pool.name)
                && (pool.selector == crate::Selector::Nothing || pool.selector.matches(&svc.labels));
            if !fits {
                // The Service now asks for something else: re-evaluated below.
                continue;
            }
            if let Some(other) = conflict(&holders, ip, svc) {
                diags.push(
                    Diagnostic::error(
                        obj.clone(),
                        field,
                        format!(
                            "{ip} is also held by Service {}, which is older, and the two may not share it; released \
                             here",
                            other.key
                        ),
                    ),
                    REASON_ADDRESS_CONFLICT,
                    Some(other.key.object_ref()),
                );
                continue;
            }
            hold(&mut holders, ip, svc);
            kept.push((ip, pool));
        }
        if !kept.is_empty() {
            got.insert(&svc.key, kept);
        }
    }

    // 2. Requested addresses, before any automatic choice, so that "any address" never takes the address another
    //    Service asks for by name.
    for &svc in &ordered {
        let obj = svc.key.object_ref();
        let have: Vec<IpAddr> = got.get(&svc.key).map(|v| v.iter().map(|(ip, _)| *ip).collect()).unwrap_or_default();
        if svc.request_error || svc.requested.is_empty() {
            continue;
        }
        {
            let missing: Vec<IpAddr> = svc.requested.iter().copied().filter(|ip| !have.contains(ip)).collect();
            if missing.is_empty() {
                continue;
            }
            let mut new = Vec::new();
            for ip in missing {
                match check_request(pools, svc, ip, &holders) {
                    Ok(pool) => new.push((ip, pool)),
                    Err((why, reason, related)) => {
                        diags.push(Diagnostic::error(obj.clone(), svc.requested_field.clone(), why), reason, related);
                        new.clear();
                        break;
                    }
                }
            }
            for (ip, pool) in new {
                hold(&mut holders, ip, svc);
                got.entry(&svc.key).or_default().push((ip, pool));
            }
        }
    }

    // 3. Automatic choices.
    for &svc in &ordered {
        let obj = svc.key.object_ref();
        if svc.request_error || !svc.requested.is_empty() {
            continue;
        }
        if got.get(&svc.key).is_some_and(|v| v.iter().any(|(ip, _)| Family::of(*ip) == svc.family)) {
            continue;
        }
        let candidates: Vec<&Pool> = match &svc.pool {
            Some(name) => match pools.iter().find(|p| p.name == *name) {
                None => {
                    let d = Diagnostic::error(
                        obj,
                        pool_field(),
                        format!("there is no IPPool {name}; the Service stays pending"),
                    );
                    diags.push(d, REASON_ALLOCATION_FAILED, None);
                    continue;
                }
                Some(p) if p.disabled => {
                    let d = Diagnostic::warning(
                        obj,
                        pool_field(),
                        format!("IPPool {name} is disabled; the Service stays pending"),
                    );
                    diags.push(d, REASON_ALLOCATION_FAILED, Some(p.object_ref()));
                    continue;
                }
                Some(p) if !p.selector.matches(&svc.labels) => {
                    let d = Diagnostic::error(
                        obj,
                        pool_field(),
                        format!("IPPool {name} does not select this Service (spec.serviceSelector); it stays pending"),
                    );
                    diags.push(d, REASON_ALLOCATION_FAILED, Some(p.object_ref()));
                    continue;
                }
                Some(p) => vec![p],
            },
            None => pools.iter().filter(|p| p.auto_assign && !p.disabled && p.selector.matches(&svc.labels)).collect(),
        };
        let candidates: Vec<&Pool> = candidates.into_iter().filter(|p| p.has_family(svc.family)).collect();
        if candidates.is_empty() {
            let d = Diagnostic::warning(
                obj,
                "spec",
                format!("no IPPool serves this Service ({:?} addresses); it stays pending", svc.family),
            );
            diags.push(d, REASON_ALLOCATION_FAILED, None);
            continue;
        }
        let family = svc.family;
        let ranges = || {
            candidates
                .iter()
                .flat_map(|p| p.ranges.iter().map(move |r| (*p, r)))
                .filter(move |(_, r)| r.family() == family)
        };
        let shared = svc.sharing_key.as_ref().and_then(|_| {
            ranges().find_map(|(p, r)| {
                holders
                    .range(r.start()..=r.stop())
                    .find(|(ip, _)| conflict(&holders, **ip, svc).is_none())
                    .map(|(ip, _)| (*ip, p))
            })
        });
        let pick = shared.or_else(|| ranges().find_map(|(p, r)| first_free(r, &holders).map(|ip| (ip, p))));
        match pick {
            Some((ip, pool)) => {
                hold(&mut holders, ip, svc);
                got.entry(&svc.key).or_default().push((ip, pool));
            }
            None => {
                let names: Vec<&str> = candidates.iter().map(|p| p.name.as_str()).collect();
                let d = Diagnostic::warning(
                    obj,
                    "status.loadBalancer",
                    format!("no free address in IPPool {}; the Service stays pending", names.join(", ")),
                );
                let related = match candidates.as_slice() {
                    [only] => Some(only.object_ref()),
                    _ => None,
                };
                diags.push(d, REASON_ALLOCATION_FAILED, related);
            }
        }
    }

    let mut assignments = BTreeMap::new();
    let mut pending = Vec::new();
    for &svc in &ordered {
        match got.get(&svc.key) {
            Some(list) if !list.is_empty() => {
                let mut addresses: Vec<IpAddr> = list.iter().map(|(ip, _)| *ip).collect();
                addresses.sort_by_key(|ip| Family::of(*ip) != svc.family);
                let pool =
                    list.iter().find(|(ip, _)| *ip == addresses[0]).map(|(_, p)| p.name.clone()).unwrap_or_default();
                assignments.insert(svc.key.clone(), Assignment { addresses, pool });
            }
            _ => pending.push(svc.key.clone()),
        }
    }
    let usage = pools
        .iter()
        .map(|p| PoolUsage {
            pool: p.name.clone(),
            total: p.size(),
            used: holders.keys().filter(|ip| p.contains(**ip)).count() as u64,
        })
        .collect();
    Allocation { assignments, pending, usage, diagnostics: crate::dedup(diags.list), notes: diags.notes }
}

fn pool_field() -> String {
    format!("metadata.annotations[{}]", crate::ADDRESS_POOL_ANNOTATION)
}

/// Why a request is refused: the message, the Event reason and the other object involved.
type Refusal = (String, &'static str, Option<ObjectRef>);

/// Whether `svc` may have the address it asked for; the pool it comes from, or why not.
fn check_request<'p>(
    pools: &'p [Pool],
    svc: &LbService,
    ip: IpAddr,
    holders: &Holders<'_>,
) -> Result<&'p Pool, Refusal> {
    let failed = |why: String, pool: Option<&Pool>| (why, REASON_ALLOCATION_FAILED, pool.map(Pool::object_ref));
    let pool = match &svc.pool {
        Some(name) => match pools.iter().find(|p| p.name == *name) {
            None => return Err(failed(format!("there is no IPPool {name}; the Service stays pending"), None)),
            Some(p) if !p.contains(ip) => {
                return Err(failed(format!("{ip} is outside IPPool {name}; the Service stays pending"), Some(p)));
            }
            Some(p) => p,
        },
        None => match pools.iter().find(|p| p.contains(ip)) {
            None => return Err(failed(format!("{ip} is outside every IPPool; the Service stays pending"), None)),
            Some(p) => p,
        },
    };
    if pool.disabled {
        let why = format!("{ip} is in IPPool {}, which is disabled; the Service stays pending", pool.name);
        return Err(failed(why, Some(pool)));
    }
    if !pool.selector.matches(&svc.labels) {
        let why = format!(
            "{ip} is in IPPool {}, which does not select this Service (spec.serviceSelector); it stays pending",
            pool.name
        );
        return Err(failed(why, Some(pool)));
    }
    if let Some(other) = conflict(holders, ip, svc) {
        let why = format!(
            "{ip} is held by Service {} and the two may not share it (same causeway.dev/allow-shared-ip key and \
             no common port needed); the Service stays pending",
            other.key
        );
        return Err((why, REASON_ADDRESS_CONFLICT, Some(other.key.object_ref())));
    }
    Ok(pool)
}

#[cfg(test)]
mod tests;
