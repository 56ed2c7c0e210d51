//! Test constructors shared by the unit tests.

use crate::addr::Family;
use crate::service::{LbService, ServiceKey};
use causeway_translate::{IpPool, IpPoolBlock, IpPoolSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use std::net::IpAddr;
use std::sync::Arc;

pub(crate) fn time(age: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(age).expect("time"))
}

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// A pool from block strings: `a.b.c.d/n` is a CIDR, `x-y` a range, `cidr|start-stop` both (invalid).
pub(crate) fn mk_pool(name: &str, age: i64, blocks: &[&str]) -> Arc<IpPool> {
    let blocks = blocks
        .iter()
        .map(|b| {
            let (cidr, range) = match b.split_once('|') {
                Some((c, r)) => (Some(c), Some(r)),
                None if b.contains('/') => (Some(*b), None),
                None => (None, Some(*b)),
            };
            let (start, stop) = match range.map(|r| r.split_once('-').unwrap_or((r, ""))) {
                Some((a, z)) => (Some(a.to_owned()), (!z.is_empty()).then(|| z.to_owned())),
                None => (None, None),
            };
            IpPoolBlock { cidr: cidr.map(str::to_owned), start, stop }
        })
        .collect();
    Arc::new(IpPool {
        metadata: ObjectMeta { name: Some(name.to_owned()), creation_timestamp: Some(time(age)), ..Default::default() },
        spec: IpPoolSpec { blocks, ..Default::default() },
    })
}

/// A Service of ours in namespace `default`, created at `age` seconds, with one TCP port 80.
pub(crate) fn mk_svc(name: &str, age: i64) -> LbService {
    LbService {
        key: ServiceKey::new("default", name),
        created: Some(time(age)),
        labels: Default::default(),
        family: Family::V4,
        pool: None,
        requested: Vec::new(),
        requested_field: "spec.loadBalancerIP".to_owned(),
        sharing_key: None,
        ports: vec![("TCP".to_owned(), 80)],
        current: Vec::new(),
        request_error: false,
    }
}

impl LbService {
    pub(crate) fn holding(mut self, ips: &[&str]) -> Self {
        self.current = ips.iter().map(|s| ip(s)).collect();
        self
    }
    pub(crate) fn asking(mut self, ips: &[&str]) -> Self {
        self.requested = ips.iter().map(|s| ip(s)).collect();
        self
    }
    pub(crate) fn in_pool(mut self, pool: &str) -> Self {
        self.pool = Some(pool.to_owned());
        self
    }
    pub(crate) fn sharing(mut self, key: &str, ports: &[i32]) -> Self {
        self.sharing_key = Some(key.to_owned());
        self.ports = ports.iter().map(|p| ("TCP".to_owned(), *p)).collect();
        self
    }
    pub(crate) fn labelled(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.to_owned(), v.to_owned());
        self
    }
}
