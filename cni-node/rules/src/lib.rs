//! Pure rendering of Causeway's [`ServiceTable`](causeway_model::ServiceTable) into `iptables-restore` input in
//! kube-proxy's iptables layout and chain names, so the node agent can replace kube-proxy.
//!
//! ```text
//!  ServiceTable + NodeCtx ──build_ruleset──► Ruleset ──render_full(existing)──► restore text (full sync)
//!                                              └──────render_partial(prev)────► restore text (partial sync)
//!  restore text / iptables-save ──Dump::parse──► compare / check_targets / trace
//! ```
//!
//! It also reads `iptables-save` output ([`Dump`]), compares rulesets without caring about rule order where
//! order does not matter ([`compare`]), and traces a packet through rendered rules ([`trace`]).
//!
//! Cost (release build, busy 2-core machine, `tests/bench/rules.sh`): a full render of 10k Services × 3 endpoints
//! (150k lines) takes ~260 ms; the incremental build plus diff for a one-Service change takes ~11 ms, and yields a
//! batch of ~20 lines whatever the cluster size.
//!
//! What it deliberately does not do: no I/O, no processes, no clocks. Applying the text, holding the xtables
//! lock and deciding when to sync belong to the agent (`causeway-node`). IPv6 rules render with the same code
//! (a `Family::V6` context); nftables mode is not implemented.
#![forbid(unsafe_code)]

pub mod compare;
pub mod ctx;
pub mod hash;
pub mod parse;
pub mod restore;
pub mod ruleset;
pub mod select;
pub mod trace;

pub use compare::{check_targets, compare};
pub use ctx::{Family, NodeCtx};
pub use hash::{endpoint_chain, service_port_hash};
pub use parse::{Dump, ParseError};
pub use restore::{Restore, can_partial, failed_line, jump_rules, render_full, render_iptables, render_partial};
pub use ruleset::{Ruleset, ServiceRules, Table, build_ruleset, build_ruleset_incremental};
pub use select::local_ready_endpoints;
pub use trace::{Packet, Verdict, trace};
