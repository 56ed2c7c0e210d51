//! How the allocator's diagnostics read as Kubernetes Events: a reason more precise than the generic one, and the
//! second object a diagnostic is about (the other pool of an overlap, the Service holding a wanted address).

use causeway_model::{Diagnostic, ObjectRef};
use std::collections::BTreeMap;

/// Event reason: a block of an IPPool is malformed, its selector is invalid, or nothing of it is usable.
pub const REASON_INVALID_POOL: &str = "InvalidIPPool";
/// Event reason: blocks of two IPPools (or of one) overlap; the newer block is ignored.
pub const REASON_POOL_OVERLAP: &str = "IPPoolOverlap";
/// Event reason: a Service gets no address (pools exhausted, a refused request, no pool for it); it stays pending.
pub const REASON_ALLOCATION_FAILED: &str = "AllocationFailed";
/// Event reason: a Service holds or asks for an address another Service holds, and the two may not share it.
pub const REASON_ADDRESS_CONFLICT: &str = "AddressConflict";
/// Event reason: an address in a Service's status is given up (in no pool any more, or a second of its family).
pub const REASON_ADDRESS_RELEASED: &str = "AddressReleased";

/// What the Event for one diagnostic says besides the diagnostic itself.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventNote {
    /// The Event's `reason` (one of the `REASON_*` constants).
    pub reason: &'static str,
    /// The other object involved, for the Event's `related` reference.
    pub related: Option<ObjectRef>,
}

/// Diagnostics, each with its [`EventNote`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Diags {
    pub(crate) list: Vec<Diagnostic>,
    pub(crate) notes: BTreeMap<Diagnostic, EventNote>,
}

impl Diags {
    pub(crate) fn push(&mut self, diagnostic: Diagnostic, reason: &'static str, related: Option<ObjectRef>) {
        self.notes.insert(diagnostic.clone(), EventNote { reason, related });
        self.list.push(diagnostic);
    }
}
