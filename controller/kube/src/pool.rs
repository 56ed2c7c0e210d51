//! IPPool (`causeway.dev/v1alpha1`, `manifests/crd-ippool.yaml`) through the API: watched as a `DynamicObject`
//! and decoded here into [`causeway_translate::IpPool`], so that an object the decoder cannot read is a
//! diagnostic naming the pool and the field, never a watch stream that fails and re-lists for ever.
//!
//! ```text
//!  watcher<DynamicObject> ──Event──► PoolDecoder ──Event<KubeObject::IpPool>──► Tracker (like every kind)
//!                                         └──────── diagnostics (origin `kubernetes:IPPool`) ──► index
//! ```
//!
//! A pool whose new version cannot be decoded keeps its **last good version** in the index (addresses already
//! handed out from it must not move because of a typo), with an error saying so; a pool never decoded is left
//! out. With the CRD's schema installed the API server already refuses most such objects; the decoder is the
//! line of defence for a CRD of another version or one installed without its schema.
//!
//! No CRD installed (the list answers 404): [`crd_missing_message`] is logged once and the kind counts as listed
//! and empty, so Ingress keeps working on clusters that use no LoadBalancer pools; the watcher keeps retrying
//! with its backoff (at most 30 s apart) and picks pools up once the CRD is applied.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use causeway_translate::{Diagnostic, IpPool, IpPoolSpec, Kind, KubeObject, ObjectRef};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher::Event;

/// The CRD that defines IPPool.
pub const IP_POOL_CRD: &str = "ippools.causeway.dev";

/// The manifest that installs [`IP_POOL_CRD`], relative to the repository root.
pub const IP_POOL_CRD_MANIFEST: &str = "manifests/crd-ippool.yaml";

/// The `origin` of the decoder's diagnostics in the index (`SourceEvent::Diagnostics`).
pub(crate) const POOL_DIAGNOSTICS_ORIGIN: &str = "kubernetes:IPPool";

/// The API resource of IPPool, for `Api::<DynamicObject>::all_with`.
pub fn ip_pool_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("causeway.dev", "v1alpha1", "IPPool"), "ippools")
}

/// What the controller and the agent log when the IPPool CRD is not installed.
pub fn crd_missing_message() -> String {
    format!(
        "The IPPool CRD ({IP_POOL_CRD}) is not installed; LoadBalancer address pools are treated as empty (Ingress \
         and Services are unaffected). Install it with `kubectl apply -f {IP_POOL_CRD_MANIFEST}`; pools are \
         picked up within 30 s of that."
    )
}

/// Decodes one IPPool object, or says which field is wrong (as a diagnostic on the pool).
pub(crate) fn decode(obj: &DynamicObject) -> Result<IpPool, Box<Diagnostic>> {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let object = ObjectRef::new(Kind::IpPool.as_str(), "", name);
    let Some(spec) = obj.data.get("spec") else {
        return Err(Box::new(Diagnostic::error(object, "spec", "missing")));
    };
    let spec: IpPoolSpec = serde_path_to_error::deserialize(spec.clone()).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "spec".to_owned() } else { format!("spec.{path}") };
        Box::new(Diagnostic::error(object.clone(), field, e.into_inner().to_string()))
    })?;
    Ok(IpPool { metadata: obj.metadata.clone(), spec })
}

/// Turns watcher events of `DynamicObject` IPPools into events of [`KubeObject::IpPool`]. Pure: no I/O.
#[derive(Default)]
pub(crate) struct PoolDecoder {
    /// The last version of each pool that decoded, by name.
    last_good: HashMap<String, Arc<IpPool>>,
    /// Pools whose current version does not decode, by name.
    bad: BTreeMap<String, Diagnostic>,
    /// Names seen in a list in progress.
    listing: Option<HashSet<String>>,
}

impl PoolDecoder {
    /// Folds one event in. Returns the event to hand on (`None`: nothing to tell the tracker) and whether
    /// [`Self::diagnostics`] changed.
    pub(crate) fn on_event(&mut self, event: Event<DynamicObject>) -> (Option<Event<KubeObject>>, bool) {
        let before = self.bad.clone();
        let out = match event {
            Event::Init => {
                self.listing = Some(HashSet::new());
                Some(Event::Init)
            }
            Event::InitApply(obj) => {
                if let Some(listing) = self.listing.as_mut() {
                    listing.insert(obj.metadata.name.clone().unwrap_or_default());
                }
                // A version that does not decode: the last good one is listed instead, so the tracker sees no
                // change and no delete.
                self.decode_tracked(&obj).map(Some).unwrap_or_else(|kept| kept).map(Event::InitApply)
            }
            // A version that does not decode: nothing changes in the index (the last good version stays).
            Event::Apply(obj) => self.decode_tracked(&obj).ok().map(Event::Apply),
            Event::InitDone => {
                if let Some(listed) = self.listing.take() {
                    self.last_good.retain(|name, _| listed.contains(name));
                    self.bad.retain(|name, _| listed.contains(name));
                }
                Some(Event::InitDone)
            }
            Event::Delete(obj) => {
                let name = obj.metadata.name.clone().unwrap_or_default();
                self.last_good.remove(&name);
                self.bad.remove(&name);
                // Only the key matters to a delete.
                Some(Event::Delete(KubeObject::from(IpPool { metadata: obj.metadata, ..IpPool::default() })))
            }
        };
        (out, self.bad != before)
    }

    /// Forgets every pool (the CRD went away): the diagnostics empty too.
    pub(crate) fn clear(&mut self) -> bool {
        self.last_good.clear();
        self.listing = None;
        let had = !self.bad.is_empty();
        self.bad.clear();
        had
    }

    /// Every current decoding problem, by pool name.
    pub(crate) fn diagnostics(&self) -> Vec<Diagnostic> {
        self.bad.values().cloned().collect()
    }

    /// `Ok`: the decoded object. `Err`: it does not decode (now in [`Self::diagnostics`]), with the last good
    /// version if there is one.
    fn decode_tracked(&mut self, obj: &DynamicObject) -> Result<KubeObject, Option<KubeObject>> {
        let name = obj.metadata.name.clone().unwrap_or_default();
        match decode(obj) {
            Ok(pool) => {
                let pool = Arc::new(pool);
                self.bad.remove(&name);
                self.last_good.insert(name, pool.clone());
                Ok(KubeObject::IpPool(pool))
            }
            Err(mut diagnostic) => {
                let kept = self.last_good.get(&name).cloned();
                diagnostic.message.push_str(if kept.is_some() {
                    "; the previous version of the pool stays in use"
                } else {
                    "; the pool is not used"
                });
                self.bad.insert(name, *diagnostic);
                Err(kept.map(KubeObject::IpPool))
            }
        }
    }
}

#[cfg(test)]
mod tests;
