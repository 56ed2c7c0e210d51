//! No input panics: truncations and corruptions of the example manifests go through parsing and every
//! translation without a panic.

use causeway_source::parse_manifests;
use causeway_translate::{Index, TranslateConfig, node_table, route_table, service_table};
use std::path::Path;

fn demo_files() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/manifests/demo");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("demo dir")
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).expect("read")))
        .collect();
    files.sort();
    files
}

/// Parse `bytes` as `name` on top of the other demo objects and translate everything.
fn exercise(base: &Index, name: &str, bytes: &[u8]) {
    let (objects, _diags) = parse_manifests(name, bytes);
    let mut index = base.clone();
    for o in objects {
        index.apply(o);
    }
    let config =
        TranslateConfig { default_tls_secret: Some(("default".into(), "demo-tls".into())), ..Default::default() };
    let _ = route_table(&index, &config);
    let _ = service_table(&index);
    let _ = node_table(&index);
}

fn base_index() -> Index {
    let mut index = Index::new();
    for (name, bytes) in demo_files() {
        for o in parse_manifests(&name, &bytes).0 {
            index.apply(o);
        }
    }
    index
}

#[test]
fn every_truncation_of_every_file_is_handled() {
    let base = base_index();
    for (name, bytes) in demo_files() {
        // Every line end and every eleventh byte in between.
        for cut in (0..bytes.len()).filter(|&i| i % 11 == 0 || bytes[i] == b'\n') {
            exercise(&base, &name, &bytes[..cut]);
        }
    }
}

#[test]
fn corrupted_bytes_are_handled() {
    let base = base_index();
    // A small deterministic generator (xorshift), so failures reproduce.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet = b" \n\t:-{}[]\",'#&*!|>%@`0123456789abcxyz/.\\\xff";
    for (name, bytes) in demo_files() {
        for _ in 0..60 {
            let mut b = bytes.clone();
            for _ in 0..(1 + next() % 4) {
                let at = (next() as usize) % b.len().max(1);
                let c = alphabet[(next() as usize) % alphabet.len()];
                if b.is_empty() {
                    b.push(c);
                } else {
                    b[at] = c;
                }
            }
            exercise(&base, &name, &b);
        }
    }
}
