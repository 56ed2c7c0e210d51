//! IPPool objects to validated pools: address ranges, overlap removal, Service selectors.

use crate::addr::{AddrRange, Family};
use crate::note::{Diags, REASON_INVALID_POOL, REASON_POOL_OVERLAP};
use causeway_model::{Diagnostic, ObjectRef};
use causeway_translate::IpPool;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// A validated pool: the usable ranges of one IPPool, in the order its blocks are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    /// `metadata.name` of the IPPool.
    pub name: String,
    /// Usable ranges: every well-formed block that overlaps no block of an older pool (or an earlier block of this
    /// one). Never empty for a pool returned by [`validate_pools`] unless every block was rejected.
    pub ranges: Vec<AddrRange>,
    /// `spec.disabled`: no new addresses from this pool (assigned ones stay).
    pub disabled: bool,
    /// `spec.autoAssign`: `false` serves only Services that name the pool or ask for one of its addresses.
    pub auto_assign: bool,
    /// `spec.serviceSelector`.
    pub selector: Selector,
}

impl Pool {
    /// Whether `ip` lies in one of the pool's usable ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }

    /// Number of addresses in the pool (saturating at `u128::MAX`).
    pub fn size(&self) -> u128 {
        self.ranges.iter().fold(0u128, |n, r| n.saturating_add(r.len()))
    }

    /// Whether the pool has a range of `family`.
    pub fn has_family(&self, family: Family) -> bool {
        self.ranges.iter().any(|r| r.family() == family)
    }

    /// The IPPool as a diagnostics reference.
    pub fn object_ref(&self) -> ObjectRef {
        pool_ref(&self.name)
    }
}

pub(crate) fn pool_ref(name: &str) -> ObjectRef {
    ObjectRef::new("IPPool", "", name)
}

/// A label selector (`matchLabels` and `matchExpressions`, ANDed), already checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Selector {
    /// No selector, or an empty one: every Service.
    #[default]
    Everything,
    /// Labels must satisfy every requirement.
    Requirements(Vec<Requirement>),
    /// The selector was invalid: no Service (fail closed, with a diagnostic on the pool).
    Nothing,
}

/// One requirement of a [`Selector`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// The label's value is one of these (`matchLabels` entries are `In` with one value).
    In(String, Vec<String>),
    /// The label is absent or its value is none of these.
    NotIn(String, Vec<String>),
    /// The label is present.
    Exists(String),
    /// The label is absent.
    DoesNotExist(String),
}

impl Selector {
    /// Check a Kubernetes label selector. An unknown operator, or `In`/`NotIn` without values, is an error
    /// (returned as `(field, message)`).
    pub fn try_from_label_selector(sel: &LabelSelector) -> Result<Self, (String, String)> {
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            reqs.push(Requirement::In(k.clone(), vec![v.clone()]));
        }
        for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
            let values = e.values.clone().unwrap_or_default();
            let field = format!("spec.serviceSelector.matchExpressions[{i}]");
            let req = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err((
                        format!("{field}.values"),
                        format!("operator {} needs at least one value", e.operator),
                    ));
                }
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                other => {
                    return Err((
                        format!("{field}.operator"),
                        format!("{other:?} is not In, NotIn, Exists or DoesNotExist"),
                    ));
                }
            };
            reqs.push(req);
        }
        Ok(if reqs.is_empty() { Selector::Everything } else { Selector::Requirements(reqs) })
    }

    /// Whether a Service with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Selector::Everything => true,
            Selector::Nothing => false,
            Selector::Requirements(reqs) => reqs.iter().all(|r| match r {
                Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
                Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
                Requirement::Exists(k) => labels.contains_key(k),
                Requirement::DoesNotExist(k) => !labels.contains_key(k),
            }),
        }
    }
}

/// Parse one block (`cidr`, or `start` + `stop`), or say what is wrong with it.
fn parse_block(block: &causeway_translate::IpPoolBlock) -> Result<AddrRange, String> {
    match (&block.cidr, &block.start, &block.stop) {
        (Some(cidr), None, None) => {
            let net: ipnet::IpNet = cidr.trim().parse().map_err(|_| format!("{cidr:?} is not a CIDR"))?;
            if net.trunc() != net {
                return Err(format!("{cidr:?} has host bits set (did you mean {}?)", net.trunc()));
            }
            Ok(AddrRange::from_net(net))
        }
        (None, Some(start), Some(stop)) => {
            let a: IpAddr = start.trim().parse().map_err(|_| format!("start {start:?} is not an IP address"))?;
            let b: IpAddr = stop.trim().parse().map_err(|_| format!("stop {stop:?} is not an IP address"))?;
            AddrRange::new(a, b)
                .ok_or_else(|| format!("{start}-{stop} is not a range (mixed families, or stop below start)"))
        }
        (Some(_), _, _) => Err("a block is either cidr or start/stop, not both".to_owned()),
        (None, None, None) => Err("a block needs cidr, or start and stop".to_owned()),
        (None, _, _) => Err("a range needs both start and stop".to_owned()),
    }
}

/// Validate IPPools into [`Pool`]s, with a diagnostic for every problem.
///
/// - Pools are taken oldest first (`creationTimestamp`, a missing one last, then name); the result is in that
///   order, which is also the order in which the allocator tries them.
/// - A malformed block (not a CIDR, host bits set, start above stop, both or neither form) is an error on
///   `spec.blocks[i]` and is left out; the pool's other blocks still serve.
/// - A block overlapping a block of an older pool (or an earlier block of the same pool) is left out with an
///   error on the newer pool and a warning on the older one, each naming the other object and block. Addresses
///   already assigned from the overlap stay: they are still inside the older pool.
/// - An invalid `serviceSelector` is an error, and the pool then selects no Service (fail closed).
/// - A pool left with no usable block gets a warning (it hands out nothing).
pub fn validate_pools<'a>(pools: impl IntoIterator<Item = &'a Arc<IpPool>>) -> (Vec<Pool>, Vec<Diagnostic>) {
    let (pools, diags) = validate(pools);
    (pools, diags.list)
}

/// [`validate_pools`], with an [`crate::EventNote`] for each diagnostic.
pub(crate) fn validate<'a>(pools: impl IntoIterator<Item = &'a Arc<IpPool>>) -> (Vec<Pool>, Diags) {
    let mut pools: Vec<&Arc<IpPool>> = pools.into_iter().collect();
    pools.sort_by(|a, b| {
        let (ta, tb) = (&a.metadata.creation_timestamp, &b.metadata.creation_timestamp);
        (ta.is_none(), ta, &a.metadata.name).cmp(&(tb.is_none(), tb, &b.metadata.name))
    });
    let mut out = Vec::new();
    let mut diags = Diags::default();
    // Every accepted block so far: (range, pool name, block index).
    let mut accepted: Vec<(AddrRange, String, usize)> = Vec::new();
    for p in pools {
        let name = p.metadata.name.clone().unwrap_or_default();
        let obj = pool_ref(&name);
        let mut ranges = Vec::new();
        for (i, block) in p.spec.blocks.iter().enumerate() {
            let field = format!("spec.blocks[{i}]");
            let range = match parse_block(block) {
                Ok(r) => r,
                Err(why) => {
                    let d = Diagnostic::error(obj.clone(), field, format!("{why}; the block is ignored"));
                    diags.push(d, REASON_INVALID_POOL, None);
                    continue;
                }
            };
            if let Some((other, other_pool, j)) = accepted.iter().find(|(r, _, _)| r.overlaps(&range)) {
                let (other, other_pool, j) = (*other, other_pool.clone(), *j);
                if other_pool == name {
                    diags.push(
                        Diagnostic::error(
                            obj.clone(),
                            field,
                            format!(
                                "{range} overlaps spec.blocks[{j}] ({other}) of the same pool; the block is ignored"
                            ),
                        ),
                        REASON_POOL_OVERLAP,
                        None,
                    );
                } else {
                    diags.push(
                        Diagnostic::error(
                            obj.clone(),
                            field.clone(),
                            format!(
                                "{range} overlaps IPPool {other_pool} spec.blocks[{j}] ({other}), which is older; \
                                 the block is ignored"
                            ),
                        ),
                        REASON_POOL_OVERLAP,
                        Some(pool_ref(&other_pool)),
                    );
                    diags.push(
                        Diagnostic::warning(
                            pool_ref(&other_pool),
                            format!("spec.blocks[{j}]"),
                            format!("{other} is overlapped by IPPool {name} {field} ({range}), which is ignored there"),
                        ),
                        REASON_POOL_OVERLAP,
                        Some(obj.clone()),
                    );
                }
                continue;
            }
            accepted.push((range, name.clone(), i));
            ranges.push(range);
        }
        let selector = match &p.spec.service_selector {
            None => Selector::Everything,
            Some(sel) => match Selector::try_from_label_selector(sel) {
                Ok(s) => s,
                Err((field, why)) => {
                    let d = Diagnostic::error(obj.clone(), field, format!("{why}; the pool selects no Service"));
                    diags.push(d, REASON_INVALID_POOL, None);
                    Selector::Nothing
                }
            },
        };
        if ranges.is_empty() && !p.spec.blocks.is_empty() {
            let d = Diagnostic::warning(obj.clone(), "spec.blocks", "no usable block; the pool hands out nothing");
            diags.push(d, REASON_INVALID_POOL, None);
        }
        out.push(Pool { name, ranges, disabled: p.spec.disabled, auto_assign: p.spec.auto_assign, selector });
    }
    (out, diags)
}

#[cfg(test)]
mod tests;
