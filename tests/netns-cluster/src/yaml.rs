//! A small block-style YAML writer for the objects the harness builds as `serde_json::Value`, and base64 for
//! Secret data. Strings are always written as double-quoted JSON strings (a valid YAML double-quoted scalar), so
//! no value can change the document's structure.

use serde_json::Value;

/// One YAML document (no leading `---`).
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(_) | Value::Array(_) => block(v, 0, &mut out),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

/// Several documents separated by `---`.
pub fn to_yaml_stream(docs: &[Value]) -> String {
    docs.iter().map(to_yaml).collect::<Vec<_>>().join("---\n")
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(o) if o.is_empty() => "{}".into(),
        _ => unreachable!("collections are written as blocks"),
    }
}

fn is_block(v: &Value) -> bool {
    matches!(v, Value::Object(o) if !o.is_empty()) || matches!(v, Value::Array(a) if !a.is_empty())
}

fn block(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) => {
            for (k, val) in map {
                let key = Value::String(k.clone()).to_string();
                if is_block(val) {
                    out.push_str(&format!("{pad}{key}:\n"));
                    block(val, indent + 2, out);
                } else {
                    out.push_str(&format!("{pad}{key}: {}\n", scalar(val)));
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                if is_block(item) {
                    // "- " then the first line of the nested block on the same line.
                    let mut nested = String::new();
                    block(item, indent + 2, &mut nested);
                    let nested = nested.strip_prefix(&" ".repeat(indent + 2)).unwrap_or(&nested).to_string();
                    out.push_str(&format!("{pad}- {nested}"));
                } else {
                    out.push_str(&format!("{pad}- {}\n", scalar(item)));
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base64_vectors() {
        // RFC 4648 §10.
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want, "{input:?}");
        }
    }

    #[test]
    fn yaml_shapes() {
        // Keys in alphabetical order at every level, so the test holds with or without serde_json's
        // preserve_order feature.
        let v = json!({
            "kind": "Service",
            "metadata": {"labels": {"a": "b: c"}, "name": "web"},
            "spec": {"empty": [], "flag": true, "ips": ["10.0.0.1"], "ports": [{"name": "http", "port": 80}, {"port": 81}]}
        });
        let want = "\"kind\": \"Service\"\n\"metadata\":\n  \"labels\":\n    \"a\": \"b: c\"\n  \"name\": \"web\"\n\"spec\":\n  \"empty\": []\n  \"flag\": true\n  \"ips\":\n    - \"10.0.0.1\"\n  \"ports\":\n    - \"name\": \"http\"\n      \"port\": 80\n    - \"port\": 81\n";
        assert_eq!(to_yaml(&v), want);
    }
}
