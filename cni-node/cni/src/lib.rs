//! `causeway-cni`: a CNI 1.1 plugin that attaches pods to a node-local bridge through a veth pair and
//! hands out addresses from a host-local-compatible store (crate `causeway-ipam`).
//!
//! What it does: ADD / DEL / CHECK / STATUS / GC / VERSION for configurations of cniVersion 0.3.0–1.1.0,
//! answering in the request's version; bridge, veth, addresses and routes through a synchronous rtnetlink
//! socket (no async runtime, no `ip` exec); pod-namespace work through sockets opened on a dedicated
//! thread that entered the namespace. Errors are the spec's JSON on stdout; logs go to stderr.
//!
//! What it deliberately does not do: exec a delegate IPAM plugin (the `ipam` section is served
//! in-process, host-local format), masquerade (`ipMasq`; the node agent does that node-wide), hostPort
//! (chain the `portmap` plugin), VLANs, MAC spoof checks, requested IPs/MACs.
//!
//! ```text
//! env (CNI_*) + stdin ─► env::read_env + conf::load_net_conf (pure) ─► ops::cmd_* ─► result::to_json(version)
//!                                                                          │
//!                             causeway_ipam (flock'd store) ◄──────────────┼──► netlink (host / pod netns)
//! ```
#![forbid(unsafe_code)]

pub mod conf;
pub mod env;
pub mod error;
pub mod netlink;
pub mod netns;
pub mod ops;
pub mod result;
pub mod rollback;
pub mod version;

use serde_json::{Value, json};

use crate::env::{Command, Strings};
use crate::error::CniError;
use crate::version::{CniVersion, SUPPORTED};

/// Run one invocation: returns what to print on stdout on success (`None` prints nothing).
pub fn dispatch(env: &dyn Strings, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let command = env::read_command(env)?;
    if command == Command::Version {
        return Ok(Some(version_reply(stdin)));
    }
    let cni_env = env::read_env(command, env)?;
    let conf = conf::load_net_conf(stdin)?;
    match command {
        Command::Add => ops::cmd_add(&cni_env, &conf).map(|r| Some(r.to_json(conf.version))),
        Command::Del => ops::cmd_del(&cni_env, &conf).map(|()| None),
        Command::Check => ops::cmd_check(&cni_env, &conf).map(|()| None),
        Command::Status => ops::cmd_status(&conf).map(|()| None),
        Command::Gc => ops::cmd_gc(&conf).map(|_| None),
        Command::Version => Ok(Some(version_reply(stdin))),
    }
}

/// The VERSION answer: the request's `cniVersion` echoed (our newest if none), and our versions.
pub fn version_reply(stdin: &[u8]) -> Value {
    let v = conf::peek_version(stdin).unwrap_or_else(|| CniVersion::LATEST.as_str().to_string());
    json!({"cniVersion": v, "supportedVersions": SUPPORTED})
}

/// The version to put into an error reply: the request's if readable, else our newest.
pub fn error_version(stdin: &[u8]) -> String {
    conf::peek_version(stdin).unwrap_or_else(|| CniVersion::LATEST.as_str().to_string())
}
