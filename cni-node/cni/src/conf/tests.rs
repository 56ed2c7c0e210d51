use super::*;
use serde_json::json;

fn base() -> Value {
    json!({
        "cniVersion": "1.1.0", "name": "kind", "type": "causeway-cni", "bridge": "cw0",
        "isDefaultGateway": true, "mtu": 1400,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]], "dataDir": "/run/x"}
    })
}

fn with(mut v: Value, key: &str, val: Value) -> Value {
    v.as_object_mut().unwrap().insert(key.into(), val);
    v
}

fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().unwrap().remove(key);
    v
}

#[test]
fn parses_our_keys_and_defaults() {
    let c = load_net_conf(base().to_string().as_bytes()).unwrap();
    assert_eq!(c.version, CniVersion::V1_1_0);
    assert_eq!(c.bridge, "cw0");
    assert!(c.is_gateway && c.is_default_gateway && c.hairpin);
    assert_eq!(c.mtu, Some(1400));
    let minimal = without(without(without(base(), "bridge"), "isDefaultGateway"), "mtu");
    let c = load_net_conf(minimal.to_string().as_bytes()).unwrap();
    assert_eq!((c.bridge.as_str(), c.is_gateway, c.mtu), ("cni0", false, None));
}

#[test]
fn runtime_keys_are_tolerated() {
    let v = with(
        with(with(base(), "capabilities", json!({"portMappings": true})), "runtimeConfig", json!({"portMappings": []})),
        "cni.dev/valid-attachments",
        json!([{"containerID": "a", "ifname": "eth0"}]),
    );
    let v = with(
        with(v, "args", json!({"cni": {}})),
        "prevResult",
        json!({"cniVersion": "1.1.0", "ips": [{"address": "10.244.1.2/24"}]}),
    );
    let c = load_net_conf(v.to_string().as_bytes()).unwrap();
    assert_eq!(c.valid_attachments, Some(vec![("a".into(), "eth0".into())]));
    assert_eq!(c.prev_result.unwrap().ips.len(), 1);
    let legacy = with(base(), "cni.dev/attachments", json!([{"containerID": "b", "ifname": "eth0"}]));
    assert_eq!(load_net_conf(legacy.to_string().as_bytes()).unwrap().valid_attachments.unwrap()[0].0, "b");
}

/// Each bad input maps to the spec's code and a message naming the field.
#[test]
fn bad_input_table() {
    let cases: Vec<(Vec<u8>, u32, &str)> = vec![
        (b"".to_vec(), code::DECODE, "stdin"),
        (b"{not json".to_vec(), code::DECODE, "stdin"),
        (b"[1]".to_vec(), code::DECODE, "stdin"),
        (without(base(), "cniVersion").to_string().into_bytes(), code::INCOMPATIBLE_VERSION, "cniVersion"),
        (with(base(), "cniVersion", json!("0.2.0")).to_string().into_bytes(), code::INCOMPATIBLE_VERSION, "cniVersion"),
        (with(base(), "cniVersion", json!("9.9.9")).to_string().into_bytes(), code::INCOMPATIBLE_VERSION, "cniVersion"),
        (with(base(), "hairpinmode", json!(true)).to_string().into_bytes(), code::UNSUPPORTED_FIELD, "hairpinmode"),
        (with(base(), "vlan", json!(5)).to_string().into_bytes(), code::UNSUPPORTED_FIELD, "vlan = 5"),
        (with(base(), "ipMasq", json!(true)).to_string().into_bytes(), code::UNSUPPORTED_FIELD, "ipMasq"),
        (without(base(), "name").to_string().into_bytes(), code::INVALID_CONFIG, "name"),
        (with(base(), "name", json!("../etc")).to_string().into_bytes(), code::INVALID_CONFIG, "name"),
        (without(base(), "type").to_string().into_bytes(), code::INVALID_CONFIG, "type"),
        (
            with(base(), "bridge", json!("a-name-that-is-too-long")).to_string().into_bytes(),
            code::INVALID_CONFIG,
            "bridge",
        ),
        (with(base(), "mtu", json!(10)).to_string().into_bytes(), code::INVALID_CONFIG, "mtu"),
        (with(base(), "mtu", json!("1500")).to_string().into_bytes(), code::INVALID_CONFIG, "mtu"),
        (with(base(), "isGateway", json!("yes")).to_string().into_bytes(), code::INVALID_CONFIG, "isGateway"),
        (without(base(), "ipam").to_string().into_bytes(), code::INVALID_CONFIG, "ipam"),
        (
            with(
                base(),
                "ipam",
                json!({"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24", "rangeStrat": "10.0.0.9"}]]}),
            )
            .to_string()
            .into_bytes(),
            code::UNSUPPORTED_FIELD,
            "ipam.ranges[0][0].rangeStrat",
        ),
        (
            with(base(), "ipam", json!({"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/33"}]]}))
                .to_string()
                .into_bytes(),
            code::INVALID_CONFIG,
            "ipam.ranges[0][0].subnet",
        ),
        (
            with(base(), "prevResult", json!({"ips": [{"address": "x"}]})).to_string().into_bytes(),
            code::DECODE,
            "prevResult.ips[0].address",
        ),
        (
            with(base(), "dns", json!({"nameserver": ["1.1.1.1"]})).to_string().into_bytes(),
            code::UNSUPPORTED_FIELD,
            "dns.nameserver",
        ),
        (
            with(base(), "cni.dev/valid-attachments", json!([{"ifname": "eth0"}])).to_string().into_bytes(),
            code::INVALID_CONFIG,
            "containerID",
        ),
    ];
    for (input, want_code, field) in cases {
        let err = load_net_conf(&input).expect_err(&String::from_utf8_lossy(&input));
        assert_eq!(err.code, want_code, "{}: {}", String::from_utf8_lossy(&input), err.msg);
        assert!(
            err.msg.contains(field),
            "{}: message {:?} does not name {field}",
            String::from_utf8_lossy(&input),
            err.msg
        );
    }
}

#[test]
fn peek_version_reads_any_string() {
    assert_eq!(peek_version(br#"{"cniVersion":"0.4.0"}"#).as_deref(), Some("0.4.0"));
    assert_eq!(peek_version(b"garbage"), None);
}

/// Robustness: thousands of byte-level mutations of a valid configuration never panic, and every
/// rejection carries one of the spec's configuration codes.
#[test]
fn mutated_input_never_panics() {
    let base = with(base(), "prevResult", json!({"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
        "ips": [{"address": "10.244.1.2/24", "gateway": "10.244.1.1", "interface": 0}], "routes": [{"dst": "0.0.0.0/0"}]}))
    .to_string()
    .into_bytes();
    let alphabet = b"{}[]\":,0123456789./abcxyz-_ \\tnulltruefalse";
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // xorshift64*: deterministic, no dependency.
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    for _ in 0..5000 {
        let mut input = base.clone();
        for _ in 0..(1 + next() % 4) {
            let pos = (next() as usize) % input.len().max(1);
            match next() % 3 {
                0 if !input.is_empty() => {
                    input.remove(pos);
                }
                1 => input.insert(pos, alphabet[(next() as usize) % alphabet.len()]),
                _ if !input.is_empty() => input[pos] = alphabet[(next() as usize) % alphabet.len()],
                _ => {}
            }
        }
        if let Err(e) = load_net_conf(&input) {
            assert!([1, 2, 6, 7].contains(&e.code), "{}: code {} {}", String::from_utf8_lossy(&input), e.code, e.msg);
            assert!(!e.msg.is_empty());
        }
    }
}
