//! The `CNI_*` environment, read through [`Strings`] so tests pass a map instead of mutating the process
//! environment.

use std::collections::HashMap;

use crate::error::{CniError, code};

/// A source of environment strings.
pub trait Strings {
    /// The value of `key`, if set.
    fn get(&self, key: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Strings for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl Strings for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }
}

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// ADD
    Add,
    /// DEL
    Del,
    /// CHECK
    Check,
    /// STATUS
    Status,
    /// GC
    Gc,
    /// VERSION
    Version,
}

/// The validated invocation parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    /// The operation.
    pub command: Command,
    /// `CNI_CONTAINERID` (empty for STATUS/GC/VERSION).
    pub container_id: String,
    /// `CNI_NETNS` (may be empty for DEL).
    pub netns: String,
    /// `CNI_IFNAME` (empty for STATUS/GC/VERSION).
    pub ifname: String,
    /// `CNI_NETNS_OVERRIDE`: allow `CNI_NETNS` to be our own namespace.
    pub netns_override: bool,
}

/// Read `CNI_COMMAND`.
pub fn read_command(env: &dyn Strings) -> Result<Command, CniError> {
    let raw = env.get("CNI_COMMAND").unwrap_or_default();
    Ok(match raw.as_str() {
        "ADD" => Command::Add,
        "DEL" => Command::Del,
        "CHECK" => Command::Check,
        "STATUS" => Command::Status,
        "GC" => Command::Gc,
        "VERSION" => Command::Version,
        "" => return Err(CniError::new(code::INVALID_ENV, "required environment variables missing: CNI_COMMAND")),
        other => return Err(CniError::new(code::INVALID_ENV, format!("CNI_COMMAND: unknown command {other:?}"))),
    })
}

/// Read and validate the variables `command` needs (as the reference skel does).
pub fn read_env(command: Command, env: &dyn Strings) -> Result<CniEnv, CniError> {
    let per_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
    let needs_netns = matches!(command, Command::Add | Command::Check);
    let get = |k: &str| env.get(k).unwrap_or_default();
    let out = CniEnv {
        command,
        container_id: get("CNI_CONTAINERID"),
        netns: get("CNI_NETNS"),
        ifname: get("CNI_IFNAME"),
        netns_override: matches!(get("CNI_NETNS_OVERRIDE").as_str(), "1" | "true"),
    };
    let mut missing = Vec::new();
    if per_attachment && out.container_id.is_empty() {
        missing.push("CNI_CONTAINERID");
    }
    if needs_netns && out.netns.is_empty() {
        missing.push("CNI_NETNS");
    }
    if per_attachment && out.ifname.is_empty() {
        missing.push("CNI_IFNAME");
    }
    if !missing.is_empty() {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("required environment variables missing: {}", missing.join(", ")),
        ));
    }
    if per_attachment {
        if !valid_name(&out.container_id) {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_CONTAINERID {:?}: must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$", out.container_id),
            ));
        }
        if let Err(why) = validate_ifname(&out.ifname) {
            return Err(CniError::new(code::INVALID_ENV, format!("CNI_IFNAME {:?}: {why}", out.ifname)));
        }
    }
    Ok(out)
}

/// Network names and container ids: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Interface names: 1–15 bytes, not `.`/`..`, no `/`, `:` or whitespace (the kernel's rules).
pub fn validate_ifname(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("is empty");
    }
    if s.len() > 15 {
        return Err("longer than 15 bytes");
    }
    if s == "." || s == ".." {
        return Err("is . or ..");
    }
    if s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return Err("contains '/', ':' or whitespace");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn table() {
        let full = [("CNI_CONTAINERID", "abc"), ("CNI_NETNS", "/run/netns/x"), ("CNI_IFNAME", "eth0")];
        type Case<'a> = (Command, Vec<(&'a str, &'a str)>, Option<&'a str>);
        let cases: Vec<Case> = vec![
            (Command::Add, full.to_vec(), None),
            (Command::Add, vec![("CNI_CONTAINERID", "abc"), ("CNI_IFNAME", "eth0")], Some("CNI_NETNS")),
            (Command::Del, vec![("CNI_CONTAINERID", "abc"), ("CNI_IFNAME", "eth0")], None),
            (Command::Del, vec![("CNI_IFNAME", "eth0")], Some("CNI_CONTAINERID")),
            (Command::Check, vec![], Some("CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME")),
            (
                Command::Add,
                vec![("CNI_CONTAINERID", "-bad"), ("CNI_NETNS", "/x"), ("CNI_IFNAME", "eth0")],
                Some("CNI_CONTAINERID"),
            ),
            (
                Command::Add,
                vec![("CNI_CONTAINERID", "a"), ("CNI_NETNS", "/x"), ("CNI_IFNAME", "eth/0")],
                Some("CNI_IFNAME"),
            ),
            (
                Command::Add,
                vec![("CNI_CONTAINERID", "a"), ("CNI_NETNS", "/x"), ("CNI_IFNAME", "a-very-long-ifname")],
                Some("CNI_IFNAME"),
            ),
            (
                Command::Add,
                vec![("CNI_CONTAINERID", "a"), ("CNI_NETNS", "/x"), ("CNI_IFNAME", "..")],
                Some("CNI_IFNAME"),
            ),
            (Command::Status, vec![], None),
            (Command::Gc, vec![], None),
        ];
        for (cmd, vars, err) in cases {
            let got = read_env(cmd, &env(&vars));
            match (got, err) {
                (Ok(_), None) => {}
                (Err(e), Some(name)) => {
                    assert_eq!(e.code, code::INVALID_ENV);
                    assert!(e.msg.contains(name), "{cmd:?} {vars:?}: {}", e.msg);
                }
                (got, want) => panic!("{cmd:?} {vars:?}: got {got:?}, want error {want:?}"),
            }
        }
    }

    #[test]
    fn command() {
        assert_eq!(read_command(&env(&[("CNI_COMMAND", "ADD")])).ok(), Some(Command::Add));
        assert!(read_command(&env(&[])).unwrap_err().msg.contains("CNI_COMMAND"));
        assert!(read_command(&env(&[("CNI_COMMAND", "add")])).unwrap_err().msg.contains("CNI_COMMAND"));
    }
}
