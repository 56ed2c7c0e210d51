use super::*;
use serde_json::json;

fn dynamic(name: &str, rv: &str, spec: Option<serde_json::Value>) -> DynamicObject {
    let mut obj = DynamicObject::new(name, &ip_pool_resource());
    obj.metadata.resource_version = Some(rv.to_owned());
    obj.data = match spec {
        Some(spec) => json!({ "spec": spec }),
        None => json!({}),
    };
    obj
}

fn good(name: &str, rv: &str) -> DynamicObject {
    dynamic(name, rv, Some(json!({ "blocks": [{ "cidr": "10.0.0.0/30" }] })))
}

fn pool_of(event: &Option<Event<KubeObject>>) -> Option<(String, String, usize)> {
    let obj = match event.as_ref()? {
        Event::Apply(o) | Event::InitApply(o) | Event::Delete(o) => o,
        Event::Init | Event::InitDone => return None,
    };
    let KubeObject::IpPool(p) = obj else { return None };
    Some((
        p.metadata.name.clone().unwrap_or_default(),
        p.metadata.resource_version.clone().unwrap_or_default(),
        p.spec.blocks.len(),
    ))
}

#[test]
fn decoding_names_the_field_that_is_wrong() {
    // (spec, expected field, part of the message)
    let cases = [
        (None, "spec", "missing"),
        (Some(json!("x")), "spec", "invalid type"),
        (Some(json!({ "block": [] })), "spec.block", "unknown field `block`"),
        (
            Some(json!({ "blocks": [{ "cidr": "10.0.0.0/8", "end": "x" }] })),
            "spec.blocks[0].end",
            "unknown field `end`",
        ),
        (Some(json!({ "blocks": [{ "cidr": 10 }] })), "spec.blocks[0].cidr", "invalid type"),
        (Some(json!({ "blocks": [], "autoAssign": "yes" })), "spec.autoAssign", "invalid type"),
        (
            Some(json!({ "blocks": [], "serviceSelector": { "matchLabels": { "a": 1 } } })),
            "spec.serviceSelector.matchLabels.a",
            "invalid type",
        ),
    ];
    for (i, (spec, field, message)) in cases.into_iter().enumerate() {
        let d = decode(&dynamic("p", "1", spec)).expect_err("does not decode");
        assert_eq!(d.object, ObjectRef::new("IPPool", "", "p"), "case {i}");
        assert_eq!(d.field, field, "case {i}: {d}");
        assert!(d.message.contains(message), "case {i}: {d}");
    }
    // A well-formed pool keeps its metadata; malformed addresses are causeway-lb's to report, not the decoder's.
    let pool = decode(&dynamic("p", "7", Some(json!({ "blocks": [{ "cidr": "10.0.0.0/33" }], "disabled": true }))))
        .expect("decodes");
    assert_eq!(pool.metadata.resource_version.as_deref(), Some("7"));
    assert!(pool.spec.disabled && pool.spec.auto_assign);
    assert_eq!(pool.spec.blocks[0].cidr.as_deref(), Some("10.0.0.0/33"));
}

#[test]
fn a_bad_version_keeps_the_last_good_one_and_is_reported() {
    let mut d = PoolDecoder::default();
    assert!(!d.on_event(Event::Init).1);
    let (e, changed) = d.on_event(Event::InitApply(good("a", "1")));
    assert_eq!((pool_of(&e), changed), (Some(("a".into(), "1".into(), 1)), false));
    let (e, changed) = d.on_event(Event::InitApply(dynamic("b", "2", Some(json!({ "block": [] })))));
    assert_eq!((pool_of(&e), changed), (None, true), "a pool never decoded is left out");
    d.on_event(Event::InitDone);
    assert_eq!(d.diagnostics().len(), 1);
    assert!(d.diagnostics()[0].message.ends_with("the pool is not used"), "{:?}", d.diagnostics());

    // a turns bad: nothing is handed on (the index keeps version 1) and a diagnostic names it.
    let (e, changed) = d.on_event(Event::Apply(dynamic("a", "3", Some(json!({ "blocks": "10.0.0.0/30" })))));
    assert!(e.is_none() && changed);
    let diags = d.diagnostics();
    assert_eq!(diags.len(), 2);
    assert_eq!((diags[0].object.name.as_str(), diags[0].field.as_str()), ("a", "spec.blocks"));
    assert!(diags[0].message.ends_with("the previous version of the pool stays in use"), "{diags:?}");

    // A relist while a is bad lists version 1 again (the tracker then sees no change, and no delete).
    d.on_event(Event::Init);
    let (e, _) = d.on_event(Event::InitApply(dynamic("a", "3", Some(json!({ "blocks": "10.0.0.0/30" })))));
    assert_eq!(pool_of(&e), Some(("a".into(), "1".into(), 1)));
    // b is gone from the list: its diagnostic goes at the end of the list.
    let (_, changed) = d.on_event(Event::InitDone);
    assert!(changed);
    assert_eq!(d.diagnostics().len(), 1);

    // a is fixed: handed on, diagnostic gone.
    let (e, changed) = d.on_event(Event::Apply(good("a", "4")));
    assert_eq!((pool_of(&e), changed), (Some(("a".into(), "4".into(), 1)), true));
    assert!(d.diagnostics().is_empty());

    // A bad version that is deleted: the delete still goes through, by key.
    d.on_event(Event::Apply(dynamic("a", "5", None)));
    let (e, changed) = d.on_event(Event::Delete(dynamic("a", "6", None)));
    assert_eq!((pool_of(&e), changed), (Some(("a".into(), "6".into(), 0)), true));
    assert!(d.diagnostics().is_empty());
    assert!(!d.clear());
}
