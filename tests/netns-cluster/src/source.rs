//! Where the cluster's objects live, chosen by one parameter ([`Source`] in [`crate::cluster::Options`]): a
//! manifests directory every component watches, or the real kube-apiserver. Both take the same objects (built by
//! [`crate::objects`]) in the same groups ("stems": one file in the directory, one server-side apply on the API
//! server), so a suite runs unchanged against either.

use std::ffi::OsString;

use serde_json::Value;

use crate::apiserver::ApiServer;
use crate::error::{Error, Result};
use crate::manifests::ManifestDir;

/// Which source the node agents and the edge proxy watch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Source {
    /// A manifests directory (`--manifests DIR`).
    #[default]
    Manifests,
    /// The real kube-apiserver of `tests/cluster/start.sh`, run in the underlay namespace (`--kubeconfig FILE`).
    ApiServer,
}

/// A component the cluster runs, as far as its access to the source differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// `causeway-node` (ServiceAccount `causeway-system/causeway-node` on the API server).
    Node,
    /// `causeway run` (ServiceAccount `causeway-system/causeway`).
    Proxy,
}

/// The running source, where the harness writes objects.
#[derive(Debug)]
pub enum ObjectStore {
    /// The watched directory.
    Manifests(ManifestDir),
    /// The control plane.
    ApiServer(ApiServer),
}

impl ObjectStore {
    /// Which source this is.
    pub fn source(&self) -> Source {
        match self {
            ObjectStore::Manifests(_) => Source::Manifests,
            ObjectStore::ApiServer(_) => Source::ApiServer,
        }
    }

    /// Replaces the objects of group `stem` with `docs` (objects no longer listed are deleted).
    pub fn write(&self, stem: &str, docs: &[Value]) -> Result<()> {
        match self {
            ObjectStore::Manifests(m) => m.write(stem, docs),
            ObjectStore::ApiServer(a) => a.write(stem, docs),
        }
    }

    /// Deletes the objects of group `stem`.
    pub fn remove(&self, stem: &str) -> Result<()> {
        match self {
            ObjectStore::Manifests(m) => m.remove(stem),
            ObjectStore::ApiServer(a) => a.remove(stem),
        }
    }

    /// The flags that point `component` at this source.
    pub fn component_args(&self, component: Component) -> Vec<OsString> {
        match (self, component) {
            (ObjectStore::Manifests(m), _) => vec!["--manifests".into(), m.dir.clone().into()],
            (ObjectStore::ApiServer(a), Component::Node) => {
                vec!["--kubeconfig".into(), a.node_kubeconfig.clone().into()]
            }
            (ObjectStore::ApiServer(a), Component::Proxy) => {
                vec!["--kubeconfig".into(), a.proxy_kubeconfig.clone().into()]
            }
        }
    }

    /// The manifests directory, for checks that only make sense there (a file written half-way).
    pub fn manifests(&self) -> Result<&ManifestDir> {
        match self {
            ObjectStore::Manifests(m) => Ok(m),
            ObjectStore::ApiServer(_) => {
                Err(Error::check("this cluster's source is the API server, not a manifests directory"))
            }
        }
    }

    /// The control plane, for checks that only make sense there.
    pub fn api_server(&self) -> Result<&ApiServer> {
        match self {
            ObjectStore::ApiServer(a) => Ok(a),
            ObjectStore::Manifests(_) => Err(Error::check("this cluster's source is a manifests directory")),
        }
    }
}
