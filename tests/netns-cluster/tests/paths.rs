//! Every path of design §1 with real packets (the checks in `common/paths.rs`), on a cluster whose source is a
//! manifests directory.

mod common;

use std::path::Path;

use causeway_netns_cluster::{Cluster, Suite};

#[test]
fn netns_cluster_paths() {
    Suite::run(
        "netns_cluster_paths",
        || Cluster::start(Path::new(env!("CARGO_BIN_EXE_cw-netns-probe"))),
        common::paths::populate,
        common::paths::CHECKS,
    );
}
