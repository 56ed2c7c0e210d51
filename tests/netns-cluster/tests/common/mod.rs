//! What several test files share: the path checks run against both sources.

pub mod paths;
