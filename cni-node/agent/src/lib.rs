//! `causeway-node`, the node agent: it makes pods reachable across nodes and makes Services work, replacing
//! kindnet and kube-proxy.
//!
//! ```text
//!  --manifests DIR ─┐
//!  --kubeconfig ────┴► IndexFeed ─► translate ─► Desired ─┬─► rules: build_ruleset → render (full | partial)
//!                                                        │          → RuleSink (iptables-restore --noflush -w)
//!                                                        ├─► routes: podCIDR via InternalIP (netlink)
//!                                                        ├─► CNI: causeway-cni binary + 10-causeway.conflist
//!                                                        └─► healthCheckNodePort listeners
//!                   └► causeway_lb::plan ─► owned LoadBalancer addresses ─► AnnounceWorker (--lb-interface)
//! ```
//!
//! Modules follow the pipeline: [`sync`] decides full or partial and applies through [`sink`]; [`runner`] is the
//! bounded-frequency runner's bucket; [`routes`], [`sysctl`] and [`cni`] are the kindnet half; [`lb`] the
//! LoadBalancer announcement; [`diagnostics`] reports bad input once; [`http`] and [`metrics`] the admin
//! surface; [`agent`] wires them into tasks.
//!
//! What it deliberately does not do: it owns only its own chains and jump rules and never flushes anything
//! else (design invariant 5); it does not implement hostPort itself (it chains `portmap`), nftables mode,
//! NetworkPolicy or topology-aware routing. After a sync, [`conntrack`] deletes the flows the new rules cannot
//! fix (kube-proxy's UDP clean-up, extended to untranslated TCP flows). Every path, directory and binary is a
//! flag, so several agents can run in several network namespaces of one machine (design invariant 6).
#![forbid(unsafe_code)]

pub mod agent;
pub mod cni;
pub mod conntrack;
pub mod diagnostics;
pub mod http;
pub mod lb;
pub mod metrics;
pub mod routes;
pub mod runner;
pub mod sink;
pub mod sync;
pub mod sysctl;
