//! The example manifests directory (`tests/manifests/demo`) translated end to end, compared with golden JSON
//! snapshots. Regenerate them with `UPDATE_EXPECT=1 cargo test -p causeway-source --test demo` and review the diff.

use causeway_source::load_dir;
use causeway_translate::{TranslateConfig, route_table, service_table};
use std::path::{Path, PathBuf};

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/manifests")
}

#[track_caller]
fn check_golden(name: &str, actual: &serde_json::Value) {
    let path = manifests().join(name);
    let text = serde_json::to_string_pretty(actual).expect("serialise") + "\n";
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&path, &text).expect("write golden file");
        return;
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_EXPECT=1)", path.display()));
    assert!(text == expected, "{} differs from the translation:\n{text}", path.display());
}

#[test]
fn demo_directory_route_table_snapshot() {
    let (index, diags) = load_dir(manifests().join("demo")).expect("load demo");
    assert!(diags.is_empty(), "{diags:#?}");
    let table = route_table(&index, &TranslateConfig::default());
    assert!(table.diagnostics.is_empty(), "{:#?}", table.diagnostics);
    check_golden("demo.routes.json", &serde_json::to_value(&table).expect("json"));
}

#[test]
fn demo_directory_service_table_snapshot() {
    let (index, _) = load_dir(manifests().join("demo")).expect("load demo");
    let (table, diags) = service_table(&index);
    assert!(diags.is_empty(), "{diags:#?}");
    check_golden("demo.services.json", &serde_json::to_value(&table).expect("json"));
}
