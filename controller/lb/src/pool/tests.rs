use super::*;
use crate::test_util::mk_pool;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

fn render(pools: &[Pool], diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for p in pools {
        let ranges: Vec<String> = p.ranges.iter().map(ToString::to_string).collect();
        out.push_str(&format!("{}: {}\n", p.name, ranges.join(" ")));
    }
    for d in diags {
        out.push_str(&format!("{:?} {} {}: {}\n", d.severity, d.object, d.field, d.message));
    }
    out
}

#[test]
fn validation_table() {
    // (case, pools, expected rendering)
    let cases: &[(&str, Vec<Arc<IpPool>>, &str)] = &[
        (
            "cidr and range",
            vec![mk_pool("a", 1, &["172.18.255.200/29", "172.18.255.210-172.18.255.219"])],
            "a: 172.18.255.200-172.18.255.207 172.18.255.210-172.18.255.219\n",
        ),
        (
            "malformed blocks are dropped one by one",
            vec![mk_pool(
                "a",
                1,
                &[
                    "10.0.0.0/33",
                    "10.0.0.1/24",
                    "10.0.1.9-10.0.1.1",
                    "10.0.2.0/24|10.0.2.1-10.0.2.2",
                    "10.0.3.1",
                    "10.0.4.0/30",
                ],
            )],
            "a: 10.0.4.0-10.0.4.3\n\
             Error IPPool a spec.blocks[0]: \"10.0.0.0/33\" is not a CIDR; the block is ignored\n\
             Error IPPool a spec.blocks[1]: \"10.0.0.1/24\" has host bits set (did you mean 10.0.0.0/24?); the block is ignored\n\
             Error IPPool a spec.blocks[2]: 10.0.1.9-10.0.1.1 is not a range (mixed families, or stop below start); the block is ignored\n\
             Error IPPool a spec.blocks[3]: a block is either cidr or start/stop, not both; the block is ignored\n\
             Error IPPool a spec.blocks[4]: a range needs both start and stop; the block is ignored\n",
        ),
        (
            "the newer of two overlapping pools loses the block, both are named",
            vec![mk_pool("new", 2, &["10.0.0.4-10.0.0.9", "10.1.0.0/30"]), mk_pool("old", 1, &["10.0.0.0/29"])],
            "old: 10.0.0.0-10.0.0.7\n\
             new: 10.1.0.0-10.1.0.3\n\
             Error IPPool new spec.blocks[0]: 10.0.0.4-10.0.0.9 overlaps IPPool old spec.blocks[0] (10.0.0.0-10.0.0.7), which is older; the block is ignored\n\
             Warning IPPool old spec.blocks[0]: 10.0.0.0-10.0.0.7 is overlapped by IPPool new spec.blocks[0] (10.0.0.4-10.0.0.9), which is ignored there\n",
        ),
        (
            "a lone address is not a block; a pool left empty",
            vec![mk_pool("a", 1, &["10.0.0.0/24", "10.0.0.5"]), mk_pool("b", 2, &["10.0.0.7-10.0.0.8"])],
            "a: 10.0.0.0-10.0.0.255\n\
             b: \n\
             Error IPPool a spec.blocks[1]: a range needs both start and stop; the block is ignored\n\
             Error IPPool b spec.blocks[0]: 10.0.0.7-10.0.0.8 overlaps IPPool a spec.blocks[0] (10.0.0.0-10.0.0.255), which is older; the block is ignored\n\
             Warning IPPool a spec.blocks[0]: 10.0.0.0-10.0.0.255 is overlapped by IPPool b spec.blocks[0] (10.0.0.7-10.0.0.8), which is ignored there\n\
             Warning IPPool b spec.blocks: no usable block; the pool hands out nothing\n",
        ),
        (
            "same-pool overlap; IPv6 is accepted and never overlaps IPv4",
            vec![mk_pool("a", 1, &["10.0.0.0/30", "10.0.0.2-10.0.0.5", "fd00::/126"])],
            "a: 10.0.0.0-10.0.0.3 fd00::-fd00::3\n\
             Error IPPool a spec.blocks[1]: 10.0.0.2-10.0.0.5 overlaps spec.blocks[0] (10.0.0.0-10.0.0.3) of the same pool; the block is ignored\n",
        ),
        (
            "equal timestamps order by name",
            vec![mk_pool("b", 1, &["10.0.0.0/30"]), mk_pool("a", 1, &["10.0.0.0/30"])],
            "a: 10.0.0.0-10.0.0.3\n\
             b: \n\
             Error IPPool b spec.blocks[0]: 10.0.0.0-10.0.0.3 overlaps IPPool a spec.blocks[0] (10.0.0.0-10.0.0.3), which is older; the block is ignored\n\
             Warning IPPool a spec.blocks[0]: 10.0.0.0-10.0.0.3 is overlapped by IPPool b spec.blocks[0] (10.0.0.0-10.0.0.3), which is ignored there\n\
             Warning IPPool b spec.blocks: no usable block; the pool hands out nothing\n",
        ),
    ];
    for (case, pools, want) in cases {
        let (got, diags) = validate_pools(pools.iter());
        assert_eq!(render(&got, &diags), *want, "case: {case}");
    }
}

#[test]
fn selectors_match_labels_and_bad_ones_select_nothing() {
    let labels: BTreeMap<String, String> = [("tier".to_owned(), "edge".to_owned())].into();
    let none = BTreeMap::new();
    let req = |op: &str, values: &[&str]| LabelSelectorRequirement {
        key: "tier".into(),
        operator: op.into(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
    };
    let sel =
        |exprs: Vec<LabelSelectorRequirement>| LabelSelector { match_expressions: Some(exprs), match_labels: None };
    // (selector, matches `tier=edge`, matches no labels)
    let table = [
        (sel(vec![req("In", &["edge", "core"])]), true, false),
        (sel(vec![req("NotIn", &["edge"])]), false, true),
        (sel(vec![req("Exists", &[])]), true, false),
        (sel(vec![req("DoesNotExist", &[])]), false, true),
        (LabelSelector { match_labels: Some(labels.clone()), match_expressions: None }, true, false),
        (LabelSelector::default(), true, true),
    ];
    for (s, with, without) in table {
        let s = Selector::try_from_label_selector(&s).expect("valid selector");
        assert_eq!((s.matches(&labels), s.matches(&none)), (with, without), "{s:?}");
    }
    let err = Selector::try_from_label_selector(&sel(vec![req("Equals", &["x"])])).expect_err("bad operator");
    assert_eq!(err.0, "spec.serviceSelector.matchExpressions[0].operator");
    assert!(Selector::try_from_label_selector(&sel(vec![req("In", &[])])).is_err());

    let mut bad = (*mk_pool("p", 1, &["10.0.0.0/30"])).clone();
    bad.spec.service_selector = Some(sel(vec![req("Equals", &["x"])]));
    let (pools, diags) = validate_pools([Arc::new(bad)].iter());
    assert_eq!(pools[0].selector, Selector::Nothing);
    assert!(!pools[0].selector.matches(&labels));
    assert_eq!(diags.len(), 1);
    assert!(diags[0].message.ends_with("the pool selects no Service"), "{}", diags[0].message);
}
