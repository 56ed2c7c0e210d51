//! What several test files share: the path, scaling and LoadBalancer checks, each run against both sources.
#![allow(dead_code)]

pub mod lb;
pub mod paths;
pub mod scale;
