//! Host-local-compatible IPAM for the Causeway CNI plugin.
//!
//! What it does: parses and validates host-local's `ipam` keys ([`config`]), walks address ranges in
//! host-local's order ([`range`], pure), allocates/releases/garbage-collects addresses ([`allocator`])
//! over a [`store::Store`]: either the on-disk, flock'd format the reference `host-local` plugin uses
//! ([`disk::DiskStore`], so both can share a directory) or an in-memory fake ([`fake::FakeStore`]).
//!
//! What it deliberately does not do: exec a delegate IPAM plugin, talk to the kernel, serve DHCP, honour
//! requested addresses (`CNI_ARGS IP=`, `args.cni.ips`, `runtimeConfig.ips`) or `resolvConf`.
//!
//! ```text
//! ipam JSON ─► IpamConf::from_json ─► validate ─► Ipam {sets, routes, dataDir}
//!                                                   │
//!            DiskStore::lock(dataDir, network) ─► allocate / release / gc ─► IpConfig
//! ```
#![forbid(unsafe_code)]

pub mod allocator;
pub mod config;
pub mod disk;
pub mod error;
pub mod fake;
pub mod range;
pub mod store;

pub use allocator::{IpConfig, allocate, free_counts, gc, held, release, release_hinted};
pub use config::{Ipam, IpamConf, RouteConf};
pub use disk::DiskStore;
pub use error::{AllocError, ConfigError, StoreError};
pub use fake::FakeStore;
pub use store::{Owner, Reservation, Store};
