//! LoadBalancer addresses (the checks in `common/lb.rs`) on a cluster whose source is a manifests directory: the
//! allocation is computed by every agent from the same files, and a lost node is marked NotReady by the harness.

mod common;

use std::path::Path;

use causeway_netns_cluster::cluster::Options;
use causeway_netns_cluster::{Cluster, Suite};

#[test]
fn netns_cluster_lb() {
    let options = Options { agent_args: vec!["--lb-interface".into(), "eth0".into()], ..Options::default() };
    Suite::run(
        "netns_cluster_lb",
        || Cluster::start_with(Path::new(env!("CARGO_BIN_EXE_cw-netns-probe")), options),
        common::lb::populate,
        common::lb::CHECKS,
    );
}
