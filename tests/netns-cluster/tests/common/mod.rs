//! What several test files share: the path, scaling, agent-restart and LoadBalancer checks, each run against both sources.
#![allow(dead_code)]

pub mod lb;
pub mod paths;
pub mod restart;
pub mod scale;
