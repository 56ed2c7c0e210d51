//! `causeway.dev/v1alpha1` IPPool: the address pools the LoadBalancer allocator (`causeway-lb`) hands out.
//!
//! A hand-written serde type mirroring `manifests/crd-ippool.yaml` (no kube derive, so this crate stays free of
//! kube). Addresses are kept as the strings the object holds: validation (malformed blocks, overlaps between
//! pools) belongs to `causeway-lb`, which turns every problem into a diagnostic naming the objects involved.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

/// The `apiVersion` of IPPool objects.
pub const IP_POOL_API_VERSION: &str = "causeway.dev/v1alpha1";

/// A pool of addresses for Services of type LoadBalancer (cluster-scoped).
///
/// Unknown fields inside `spec` are rejected (a typo such as `block:` must not silently give an empty pool);
/// `apiVersion`, `kind` and `status` are accepted and ignored at the top level.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IpPool {
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The pool's addresses and who may use them.
    pub spec: IpPoolSpec,
}

/// `spec` of an [`IpPool`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpPoolSpec {
    /// Address blocks: each a CIDR or an inclusive `start`–`stop` range.
    pub blocks: Vec<IpPoolBlock>,
    /// A disabled pool hands out no new addresses; addresses already assigned from it are kept.
    #[serde(default)]
    pub disabled: bool,
    /// `false`: the pool only serves Services that name it (annotation `causeway.dev/address-pool`) or ask for
    /// one of its addresses. Default `true`.
    #[serde(default = "default_true")]
    pub auto_assign: bool,
    /// Only Services whose labels match take addresses from this pool; absent or empty matches every Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selector: Option<LabelSelector>,
}

impl Default for IpPoolSpec {
    fn default() -> Self {
        Self { blocks: Vec::new(), disabled: false, auto_assign: true, service_selector: None }
    }
}

fn default_true() -> bool {
    true
}

/// One block of an [`IpPoolSpec`]: `cidr`, or `start` and `stop` (both inclusive). Exactly one form is valid;
/// `causeway-lb` reports the others.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpPoolBlock {
    /// A prefix such as `172.18.255.200/29` (host bits zero); every address in it is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// First address of an inclusive range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Last address of an inclusive range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_crd_example_with_defaults() {
        let json = serde_json::json!({
            "apiVersion": "causeway.dev/v1alpha1",
            "kind": "IPPool",
            "metadata": {"name": "kind"},
            "spec": {"blocks": [{"cidr": "172.18.255.200/29"}, {"start": "172.18.255.210", "stop": "172.18.255.219"}]},
            "status": {"total": 18}
        });
        let pool: IpPool = serde_json::from_value(json).expect("decodes");
        assert_eq!(pool.metadata.name.as_deref(), Some("kind"));
        assert_eq!(pool.spec.blocks.len(), 2);
        assert_eq!(pool.spec.blocks[1].stop.as_deref(), Some("172.18.255.219"));
        assert!(pool.spec.auto_assign);
        assert!(!pool.spec.disabled);
    }

    #[test]
    fn unknown_spec_fields_are_errors() {
        let json = serde_json::json!({"metadata": {"name": "p"}, "spec": {"block": []}});
        assert!(serde_json::from_value::<IpPool>(json).is_err());
        let json =
            serde_json::json!({"metadata": {"name": "p"}, "spec": {"blocks": [{"cidr": "10.0.0.0/8", "end": "x"}]}});
        assert!(serde_json::from_value::<IpPool>(json).is_err());
    }
}
