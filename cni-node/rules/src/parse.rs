//! A reader for `iptables-save` output and `iptables-restore --noflush` input, and a simulator of the
//! latter: enough to diff rulesets, to find which jump rules already exist, and to check in unit tests that a
//! partial sync applied on top of a full one gives the next full one.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Errors reading restore text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("line {line}: {msg}")]
    Syntax { line: usize, msg: String },
}

/// Splits one rule line into words: whitespace-separated, double quotes group (with `\"` and `\\` escapes).
pub fn tokenize(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// One table: chains with their rules (each rule = its words after `-A CHAIN`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableDump {
    pub chains: BTreeMap<String, Vec<Vec<String>>>,
}

/// A set of tables, as `iptables-save` prints them or as a restore leaves them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dump {
    pub tables: BTreeMap<String, TableDump>,
}

const BUILTIN_CHAINS: &[&str] = &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// Whether `chain` is a built-in chain (never flushed by a `--noflush` declaration).
pub fn is_builtin_chain(chain: &str) -> bool {
    BUILTIN_CHAINS.contains(&chain)
}

impl Dump {
    /// Parses `iptables-save` output (a restore input parsed against an empty state).
    pub fn parse(text: &str) -> Result<Dump, ParseError> {
        let mut d = Dump::default();
        d.apply_restore(text)?;
        Ok(d)
    }

    /// Applies restore text with `--noflush` semantics: a declared chain is created or flushed (built-in
    /// chains only get a policy), `-A` appends, `-I [n]` inserts, `-D` deletes the first equal rule (compared in
    /// [`canonical`] form), `-X` deletes an empty, unreferenced chain. Errors name the failing line, like
    /// `iptables-restore` does. Unlike the kernel, a failure leaves the state partly applied.
    pub fn apply_restore(&mut self, text: &str) -> Result<(), ParseError> {
        let mut table: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.trim();
            let err = |msg: String| ParseError::Syntax { line: line_no, msg };
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                table = Some(name.to_string());
                self.tables.entry(name.to_string()).or_default();
                continue;
            }
            if line == "COMMIT" {
                table = None;
                continue;
            }
            let Some(tname) = table.as_ref() else {
                return Err(err("rule outside a table".into()));
            };
            let t = self.tables.entry(tname.clone()).or_default();
            if let Some(decl) = line.strip_prefix(':') {
                let chain = decl.split_whitespace().next().unwrap_or_default().to_string();
                if chain.is_empty() {
                    return Err(err("empty chain declaration".into()));
                }
                let rules = t.chains.entry(chain.clone()).or_default();
                if !is_builtin_chain(&chain) {
                    rules.clear();
                }
                continue;
            }
            let words = tokenize(line);
            let (Some(op), Some(chain)) = (words.first(), words.get(1)) else {
                return Err(err(format!("cannot parse {line:?}")));
            };
            let rest = &words[2..];
            if is_builtin_chain(chain) {
                t.chains.entry(chain.clone()).or_default();
            }
            match op.as_str() {
                "-A" | "--append" => {
                    let rules = t.chains.get_mut(chain).ok_or_else(|| err(format!("no chain {chain}")))?;
                    rules.push(rest.to_vec());
                }
                "-I" | "--insert" => {
                    let (pos, spec) = match rest.first().and_then(|w| w.parse::<usize>().ok()) {
                        Some(n) => (n.max(1) - 1, &rest[1..]),
                        None => (0, rest),
                    };
                    let rules = t.chains.get_mut(chain).ok_or_else(|| err(format!("no chain {chain}")))?;
                    if pos > rules.len() {
                        return Err(err(format!("index {} too big for {chain}", pos + 1)));
                    }
                    rules.insert(pos, spec.to_vec());
                }
                "-D" | "--delete" => {
                    let rules = t.chains.get_mut(chain).ok_or_else(|| err(format!("no chain {chain}")))?;
                    let want = canonical(rest);
                    let idx = rules
                        .iter()
                        .position(|r| canonical(r) == want)
                        .ok_or_else(|| err(format!("no such rule in {chain}")))?;
                    rules.remove(idx);
                }
                "-X" | "--delete-chain" => {
                    let rules = t.chains.get(chain).ok_or_else(|| err(format!("no chain {chain}")))?;
                    if !rules.is_empty() {
                        return Err(err(format!("chain {chain} is not empty")));
                    }
                    let used = t.chains.values().flatten().any(|r| target_of(r) == Some(chain.as_str()));
                    if used {
                        return Err(err(format!("chain {chain} is still referenced")));
                    }
                    t.chains.remove(chain);
                }
                "-N" | "--new-chain" => {
                    t.chains.entry(chain.clone()).or_default();
                }
                "-F" | "--flush" => {
                    if let Some(rules) = t.chains.get_mut(chain) {
                        rules.clear();
                    }
                }
                other => return Err(err(format!("unsupported command {other}"))),
            }
        }
        Ok(())
    }

    /// The rules of one chain, or none.
    pub fn chain(&self, table: &str, chain: &str) -> &[Vec<String>] {
        self.tables.get(table).and_then(|t| t.chains.get(chain)).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// The `-j`/`-g` target of a rule, if any.
pub fn target_of(rule: &[String]) -> Option<&str> {
    rule.iter()
        .position(|w| w == "-j" || w == "--jump" || w == "-g" || w == "--goto")
        .and_then(|i| rule.get(i + 1))
        .map(String::as_str)
}

fn norm_addr(v: &str) -> String {
    v.strip_suffix("/32").or_else(|| v.strip_suffix("/128")).unwrap_or(v).to_string()
}

fn norm_value(module: &str, opt: &str, v: &str) -> String {
    match (module, opt) {
        ("statistic", "--probability") => v.parse::<f64>().map(|f| format!("{f:.4}")).unwrap_or_else(|_| v.to_string()),
        (_, "--mark") | (_, "--set-xmark") => v.to_lowercase(),
        _ => v.to_string(),
    }
}

/// A canonical text for one rule spec, insensitive to the order `iptables-save` prints options in, to `/32`
/// suffixes, to probability digits, and to defaults `iptables-save` adds (`--mask`, `--rsource`,
/// `--reject-with icmp-port-unreachable`, `MARK --or-mark/--xor-mark` printed as `--set-xmark`).
pub fn canonical(rule: &[String]) -> String {
    let mut core: BTreeMap<&'static str, String> = BTreeMap::new();
    let mut modules: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut target: Option<String> = None;
    let mut target_opts: Vec<String> = Vec::new();
    let mut neg = false;
    let mut i = 0;
    while i < rule.len() {
        let w = rule[i].as_str();
        let next = rule.get(i + 1).map(String::as_str);
        let bang = if neg { "!" } else { "" };
        let take_value = |i: &mut usize| {
            *i += 1;
            rule.get(*i).cloned().unwrap_or_default()
        };
        match w {
            "!" => {
                neg = true;
                i += 1;
                continue;
            }
            "-s" | "--source" => {
                let v = take_value(&mut i);
                core.insert("s", format!("{bang}{}", norm_addr(&v)));
            }
            "-d" | "--destination" => {
                let v = take_value(&mut i);
                core.insert("d", format!("{bang}{}", norm_addr(&v)));
            }
            "-p" | "--protocol" => {
                let v = take_value(&mut i);
                core.insert("p", format!("{bang}{}", v.to_lowercase()));
            }
            "-i" | "--in-interface" => {
                let v = take_value(&mut i);
                core.insert("i", format!("{bang}{v}"));
            }
            "-o" | "--out-interface" => {
                let v = take_value(&mut i);
                core.insert("o", format!("{bang}{v}"));
            }
            "-m" | "--match" => {
                let v = take_value(&mut i);
                modules.entry(v.clone()).or_default();
                current = Some(v);
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                let v = take_value(&mut i);
                target = Some(format!("{w}{v}").replace("--jump", "-j").replace("--goto", "-g"));
                current = None;
            }
            opt if opt.starts_with("--") => {
                let has_value =
                    next.is_some_and(|n| !n.starts_with("--") && n != "!" && !(n.starts_with('-') && n.len() == 2));
                let value = if has_value { take_value(&mut i) } else { String::new() };
                match (&target, &current) {
                    (Some(_), _) => {
                        target_opts.push(format!("{bang}{opt} {value}").trim_end().to_string());
                    }
                    (None, Some(m)) => {
                        let skip =
                            m == "recent" && (opt == "--rsource" || (opt == "--mask" && value == "255.255.255.255"));
                        if !skip {
                            let v = norm_value(m, opt, &value);
                            modules
                                .entry(m.clone())
                                .or_default()
                                .push(format!("{bang}{opt} {v}").trim_end().to_string());
                        }
                    }
                    (None, None) => {
                        modules.entry(String::new()).or_default().push(format!("{bang}{opt} {value}"));
                    }
                }
            }
            other => {
                modules.entry(String::new()).or_default().push(format!("{bang}{other}"));
            }
        }
        neg = false;
        i += 1;
    }
    // Target normalisation.
    let target = target.unwrap_or_default();
    let mut topts: Vec<String> = Vec::new();
    for o in target_opts {
        let mut parts = o.splitn(2, ' ');
        let (k, v) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default().to_lowercase());
        match (target.as_str(), k) {
            ("-jMARK", "--or-mark") => topts.push(format!("--set-xmark {v}/{v}")),
            ("-jMARK", "--xor-mark") => topts.push(format!("--set-xmark {v}/0x0")),
            ("-jMARK", "--set-xmark") => topts.push(format!("--set-xmark {v}")),
            ("-jREJECT", "--reject-with") if v == "icmp-port-unreachable" || v == "icmp6-port-unreachable" => {}
            _ => topts.push(o.clone()),
        }
    }
    let mut out = String::new();
    for (k, v) in &core {
        let _ = write!(out, "{k}={v} ");
    }
    for (m, mut opts) in modules {
        opts.sort();
        let _ = write!(out, "[{m}:{}] ", opts.join(","));
    }
    let _ = write!(out, "{target} {}", topts.join(" "));
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        tokenize(s)
    }

    #[test]
    fn tokenize_quotes() {
        assert_eq!(words(r#"-m comment --comment "a b" -j X"#), ["-m", "comment", "--comment", "a b", "-j", "X"]);
        assert_eq!(words(r#"--comment "say \"hi\"""#), ["--comment", r#"say "hi""#]);
    }

    /// Our spelling and `iptables-save`'s spelling of the same rule compare equal.
    #[test]
    fn canonical_matches_iptables_save_spelling() {
        let cases = [
            (
                r#"-m comment --comment "default/web:http cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80 -j KUBE-SVC-X"#,
                r#"-d 10.96.0.10/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-X"#,
            ),
            ("-j MARK --or-mark 0x4000", "-j MARK --set-xmark 0x4000/0x4000"),
            ("-j MARK --xor-mark 0x4000", "-j MARK --set-xmark 0x4000/0x0"),
            (
                "-m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-A",
                "-m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-A",
            ),
            (
                "-m recent --name KUBE-SEP-A --rcheck --seconds 10800 --reap -j KUBE-SEP-A",
                "-m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-A --mask 255.255.255.255 --rsource -j KUBE-SEP-A",
            ),
            ("-m mark ! --mark 0x4000/0x4000 -j RETURN", "-m mark ! --mark 0x4000/0x4000 -j RETURN"),
            (
                "-m tcp -p tcp -d 1.2.3.4 --dport 80 -j REJECT",
                "-d 1.2.3.4/32 -p tcp -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable",
            ),
        ];
        for (ours, saved) in cases {
            assert_eq!(canonical(&words(ours)), canonical(&words(saved)), "{ours}");
        }
        assert_ne!(canonical(&words("-d 1.2.3.4 -j A")), canonical(&words("! -d 1.2.3.4 -j A")));
        assert_ne!(
            canonical(&words("-m tcp -p tcp --dport 80 -j A")),
            canonical(&words("-m tcp -p tcp --dport 81 -j A"))
        );
    }

    #[test]
    fn restore_semantics() {
        let mut d = Dump::parse(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:FOO - [0:0]\n-A PREROUTING -j FOO\n-A FOO -j RETURN\nCOMMIT\n",
        )
        .unwrap();
        // Declaring a user chain flushes it; built-in chains keep their rules.
        d.apply_restore("*nat\n:FOO - [0:0]\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n").unwrap();
        assert!(d.chain("nat", "FOO").is_empty());
        assert_eq!(d.chain("nat", "PREROUTING").len(), 1);
        // A referenced chain cannot be deleted; the error names the line.
        let e = d.apply_restore("*nat\n-X FOO\nCOMMIT\n").unwrap_err();
        assert_eq!(e, ParseError::Syntax { line: 2, msg: "chain FOO is still referenced".into() });
        d.apply_restore("*nat\n-D PREROUTING -j FOO\n-X FOO\nCOMMIT\n").unwrap();
        assert!(d.chain("nat", "PREROUTING").is_empty());
        assert!(!d.tables["nat"].chains.contains_key("FOO"));
    }
}
