//! `plan` and `with_assigned_status` on indexes built from manifests (parsed and defaulted by causeway-source).

use super::*;
use causeway_translate::{Index, TranslateConfig, route_table, service_table};

fn index(yaml: &str) -> Index {
    let (objects, diags) = causeway_source::parse_manifests("test.yaml", yaml.as_bytes());
    assert!(diags.is_empty(), "{diags:#?}");
    let mut index = Index::new();
    for o in objects {
        index.apply(o);
    }
    index
}

fn node(name: &str, ready: bool, extra_labels: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Node\nmetadata: {{name: {name}, labels: {{{extra_labels}}}}}\n\
         spec: {{podCIDR: 10.244.0.0/24}}\n\
         status:\n  addresses: [{{type: InternalIP, address: 172.18.0.2}}]\n  \
         conditions: [{{type: Ready, status: \"{}\"}}]\n",
        if ready { "True" } else { "False" }
    )
}

fn service(name: &str, age: u32, extra_spec: &str, annotations: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  \
         creationTimestamp: \"2026-01-01T00:00:{age:02}Z\"\n  annotations: {{{annotations}}}\n\
         spec: {{type: LoadBalancer, ports: [{{port: 80}}], clusterIP: 10.96.0.{age}{extra_spec}}}\n"
    )
}

fn slice(service: &str, node: &str, ready: bool) -> String {
    format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-1\n  \
         labels: {{kubernetes.io/service-name: {service}}}\naddressType: IPv4\nports: [{{port: 80}}]\n\
         endpoints: [{{addresses: [10.244.1.5], nodeName: {node}, conditions: {{ready: {ready}}}}}]\n"
    )
}

const POOL: &str = "---\napiVersion: causeway.dev/v1alpha1\nkind: IPPool\nmetadata: {name: kind, creationTimestamp: \"2026-01-01T00:00:00Z\"}\n\
                    spec: {blocks: [{cidr: 172.18.255.200/29}]}\n";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

#[test]
fn every_address_has_exactly_one_owner_among_ready_nodes() {
    let mut yaml = String::from(POOL);
    for n in ["n1", "n2", "n3"] {
        yaml += &node(n, true, "");
    }
    yaml += &node("down", false, "");
    yaml += &node("excluded", true, "node.kubernetes.io/exclude-from-external-load-balancers: \"\"");
    for i in 1..=6 {
        yaml += &service(&format!("s{i}"), i, "", "");
    }
    let index = index(&yaml);
    let plans: Vec<LbPlan> = ["n1", "n2", "n3", "down", "excluded"].iter().map(|n| plan(&index, n)).collect();
    assert!(plans[0].diagnostics.is_empty(), "{:#?}", plans[0].diagnostics);
    assert_eq!(plans[0].assignments.len(), 6);
    let mut all: Vec<IpAddr> = plans.iter().flat_map(|p| p.my_addresses.iter().copied()).collect();
    all.sort();
    let want: Vec<IpAddr> = (200..206).map(|i| ip(&format!("172.18.255.{i}"))).collect();
    assert_eq!(all, want, "each address announced by exactly one node");
    assert!(plans[3].my_addresses.is_empty() && plans[4].my_addresses.is_empty());
    // Every node computes the same allocation and owners.
    for p in &plans[1..] {
        assert_eq!((&p.assignments, &p.owners), (&plans[0].assignments, &plans[0].owners));
    }
    // The oldest Service gets the lowest address.
    let s1 = &plans[0].assignments[&ServiceKey::new("default", "s1")];
    assert_eq!((s1.addresses.as_slice(), s1.pool.as_str()), (&[ip("172.18.255.200")][..], "kind"));
}

#[test]
fn local_traffic_policy_announces_only_from_nodes_with_a_ready_endpoint() {
    let mut yaml = String::from(POOL);
    for n in ["n1", "n2", "n3"] {
        yaml += &node(n, true, "");
    }
    yaml += &service("local", 1, ", externalTrafficPolicy: Local", "");
    yaml += &slice("local", "n2", true);
    yaml += &service("nowhere", 2, ", externalTrafficPolicy: Local", "");
    yaml += &slice("nowhere", "n3", false);
    let index = index(&yaml);
    let p = plan(&index, "n2");
    assert_eq!(p.owners[&ip("172.18.255.200")].as_deref(), Some("n2"));
    assert!(p.my_addresses.contains(&ip("172.18.255.200")));
    // No ready endpoint anywhere: the address is assigned but nobody announces it.
    assert_eq!(p.owners[&ip("172.18.255.201")], None);
}

#[test]
fn other_classes_are_ignored_and_ours_are_served() {
    let mut yaml = String::from(POOL);
    yaml += &node("n1", true, "");
    yaml += &service("theirs", 1, ", loadBalancerClass: metallb.io/metallb", "");
    yaml += &service("proxy", 2, ", loadBalancerClass: causeway.dev/proxy", "");
    yaml += &service("lb", 3, ", loadBalancerClass: causeway.dev/lb", "");
    yaml += "---\napiVersion: v1\nkind: Service\nmetadata: {name: cip}\nspec: {ports: [{port: 80}], clusterIP: 10.96.0.9}\n";
    let p = plan(&index(&yaml), "n1");
    let names: Vec<&str> = p.assignments.keys().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["lb", "proxy"]);
}

#[test]
fn assigned_status_feeds_node_chains_and_proxy_listeners() {
    let mut yaml = String::from(POOL);
    yaml += &node("n1", true, "");
    yaml += &service("web", 1, "", "causeway.dev/loadBalancerIPs: 172.18.255.203");
    yaml += &service("l4", 2, ", loadBalancerClass: causeway.dev/proxy", "");
    yaml += &slice("l4", "n1", true);
    let index = index(&yaml);
    let p = plan(&index, "n1");
    let with = with_assigned_status(&index, &p.assignments);
    let (table, _) = service_table(&with);
    let web = table.ports.iter().find(|sp| sp.name.name == "web").expect("web port");
    assert_eq!(web.load_balancer_ips, [ip("172.18.255.203")]);
    let routes = route_table(&with, &TranslateConfig::default());
    let addrs: Vec<String> = routes.l4_listeners.iter().map(|l| l.listen.to_string()).collect();
    assert_eq!(addrs, ["172.18.255.200:80"]);
    // The plain index has no status: no listener and no load-balancer IP.
    assert!(route_table(&index, &TranslateConfig::default()).l4_listeners.is_empty());
    // The leader's writes: both Services get their address; after applying, nothing is left to write.
    let writes: Vec<(String, Vec<String>)> = status_updates(&index, &p.assignments)
        .into_iter()
        .map(|(k, st)| (k.name, st.ingress.unwrap_or_default().into_iter().filter_map(|i| i.ip).collect()))
        .collect();
    assert_eq!(
        writes,
        [("l4".to_owned(), vec!["172.18.255.200".to_owned()]), ("web".to_owned(), vec!["172.18.255.203".to_owned()])]
    );
    assert!(status_updates(&with, &p.assignments).is_empty());
    // A released Service is written back to no address.
    let released = status_updates(&with, &BTreeMap::new());
    assert_eq!(released.len(), 2);
    assert!(released.iter().all(|(_, st)| st.ingress.is_none()));
    // Applying twice changes nothing more.
    let again = with_assigned_status(&with, &p.assignments);
    assert_eq!(with_assigned_status(&again, &p.assignments).service("default", "web"), with.service("default", "web"));
}

#[test]
fn without_pools_the_allocator_is_dormant_and_status_is_trusted() {
    let mut yaml = node("n1", true, "");
    yaml += &service("web", 1, "", "");
    yaml += "status: {loadBalancer: {ingress: [{ip: 192.0.2.10}]}}\n";
    yaml += &service("bare", 2, "", "");
    let index = index(&yaml);
    let p = plan(&index, "n1");
    assert!(p.diagnostics.is_empty(), "{:#?}", p.diagnostics);
    assert_eq!(p.my_addresses.iter().copied().collect::<Vec<_>>(), [ip("192.0.2.10")]);
    assert_eq!(p.pending, [ServiceKey::new("default", "bare")]);
    let with = with_assigned_status(&index, &p.assignments);
    assert_eq!(with.service("default", "web"), index.service("default", "web"));
}

#[test]
fn bad_input_becomes_diagnostics_naming_the_objects() {
    let mut yaml = String::from(POOL);
    yaml += "---\napiVersion: causeway.dev/v1alpha1\nkind: IPPool\nmetadata: {name: clash, creationTimestamp: \"2030-01-01T00:00:00Z\"}\n\
             spec: {blocks: [{cidr: 172.18.255.204/30}, {cidr: not-a-cidr}]}\n";
    yaml += &node("n1", true, "");
    yaml += &service("holder", 1, "", "causeway.dev/loadBalancerIPs: 172.18.255.201");
    yaml += &service("thief", 2, "", "causeway.dev/loadBalancerIPs: 172.18.255.201");
    yaml += &service("outside", 3, "", "causeway.dev/loadBalancerIPs: 10.9.9.9");
    yaml += &service("garbage", 4, "", "causeway.dev/loadBalancerIPs: \"172.18.255.202, nope\"");
    let p = plan(&index(&yaml), "n1");
    let lines: Vec<String> = p.diagnostics.iter().map(|d| format!("{} {}", d.object, d.field)).collect();
    assert_eq!(
        lines,
        [
            "IPPool clash spec.blocks[0]",
            "IPPool kind spec.blocks[0]",
            "IPPool clash spec.blocks[1]",
            "IPPool clash spec.blocks",
            "Service default/garbage metadata.annotations[causeway.dev/loadBalancerIPs]",
            "Service default/thief metadata.annotations[causeway.dev/loadBalancerIPs]",
            "Service default/outside metadata.annotations[causeway.dev/loadBalancerIPs]",
        ]
    );
    assert!(p.diagnostics[0].message.contains("IPPool kind"), "{}", p.diagnostics[0].message);
    assert!(p.diagnostics[1].message.contains("IPPool clash"), "{}", p.diagnostics[1].message);
    assert!(p.diagnostics[5].message.contains("held by Service default/holder"), "{}", p.diagnostics[4].message);
    let pending: Vec<&str> = p.pending.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(pending, ["thief", "outside", "garbage"]);
    assert_eq!(p.assignments[&ServiceKey::new("default", "holder")].addresses, [ip("172.18.255.201")]);
}

#[test]
fn a_dead_announcer_loses_only_its_addresses() {
    let mut yaml = String::from(POOL);
    for n in ["n1", "n2", "n3"] {
        yaml += &node(n, true, "");
    }
    for i in 1..=8 {
        yaml += &service(&format!("s{i}"), i, "", "");
    }
    let index = index(&yaml);
    let all = plan(&index, "n1");
    let victim = all.owners.values().flatten().next().expect("an owner").clone();
    let alive: BTreeSet<String> = ["n1", "n2", "n3"].into_iter().filter(|n| *n != victim).map(str::to_owned).collect();
    let after = plan_with(&index, "n1", &PlanOptions { alive_nodes: Some(alive), ..PlanOptions::default() });
    assert_eq!(after.assignments, all.assignments, "allocation does not depend on liveness");
    for (ip, owner) in &all.owners {
        let now = after.owners[ip].as_deref();
        if owner.as_deref() == Some(victim.as_str()) {
            assert!(now.is_some() && now != Some(victim.as_str()), "{ip} must move off {victim}");
        } else {
            assert_eq!(now, owner.as_deref(), "{ip} moved although its owner is alive");
        }
    }
}

#[test]
fn proxy_class_addresses_are_announced_only_from_nodes_with_a_live_proxy() {
    let mut yaml = String::from(POOL);
    for n in ["n1", "n2", "n3"] {
        yaml += &node(n, true, "");
    }
    for i in 1..=4 {
        yaml += &service(&format!("p{i}"), i, ", loadBalancerClass: causeway.dev/proxy", "");
        yaml += &service(&format!("s{i}"), i + 10, "", "");
    }
    let index = index(&yaml);
    let owner_of = |plan: &LbPlan, svc: &str| {
        let a = &plan.assignments[&ServiceKey::new("default", svc)];
        plan.owners[&a.addresses[0]].clone()
    };
    let any = plan(&index, "n1");
    let proxies = |names: &[&str]| PlanOptions {
        proxy_nodes: Some(names.iter().map(|n| (*n).to_owned()).collect()),
        ..PlanOptions::default()
    };
    struct Case {
        name: &'static str,
        options: PlanOptions,
        /// The owner every proxy-class address must have (`None`: unchanged from a plan without proxy nodes).
        proxy_owner: Option<Option<&'static str>>,
    }
    let cases = [
        Case { name: "no proxy heartbeats: as any Service", options: PlanOptions::default(), proxy_owner: None },
        Case {
            name: "one live proxy takes every proxy address",
            options: proxies(&["n3"]),
            proxy_owner: Some(Some("n3")),
        },
        Case { name: "no live proxy: nobody announces", options: proxies(&[]), proxy_owner: Some(None) },
        Case {
            name: "a proxy on a node whose agent is dead does not count",
            options: PlanOptions {
                alive_nodes: Some(["n1", "n2"].iter().map(|n| (*n).to_owned()).collect()),
                ..proxies(&["n2", "n3"])
            },
            proxy_owner: Some(Some("n2")),
        },
    ];
    for c in cases {
        let p = plan_with(&index, "n1", &c.options);
        assert_eq!(p.assignments, any.assignments, "{}: allocation does not depend on proxies", c.name);
        for i in 1..=4 {
            let (proxied, plain) = (format!("p{i}"), format!("s{i}"));
            let want = match c.proxy_owner {
                Some(o) => o.map(str::to_owned),
                None => owner_of(&any, &proxied),
            };
            assert_eq!(owner_of(&p, &proxied), want, "{}: {proxied}", c.name);
            if c.options.alive_nodes.is_none() {
                assert_eq!(owner_of(&p, &plain), owner_of(&any, &plain), "{}: {plain} moved", c.name);
            }
        }
    }
}

#[test]
fn a_shared_address_with_local_policies_uses_common_nodes_or_warns() {
    let mut yaml = String::from(POOL);
    for n in ["n1", "n2", "n3"] {
        yaml += &node(n, true, "");
    }
    let shared = "causeway.dev/allow-shared-ip: k";
    yaml += &service("a", 1, ", externalTrafficPolicy: Local", shared);
    yaml += &slice("a", "n2", true);
    // `b` shares with `a` (its port must differ: the fixture's port is 80, so give it another).
    yaml += &service("b", 2, ", externalTrafficPolicy: Local", shared).replace("port: 80", "port: 81");
    yaml += &slice("b", "n3", true);
    let p = plan(&index(&yaml), "n2");
    let a = &p.assignments[&ServiceKey::new("default", "a")];
    assert_eq!(p.assignments[&ServiceKey::new("default", "b")].addresses, a.addresses, "the address is shared");
    // No node has local endpoints of both: the oldest holder's nodes announce, and the other is warned.
    assert_eq!(p.owners[&a.addresses[0]].as_deref(), Some("n2"));
    assert_eq!(p.diagnostics.len(), 1, "{:#?}", p.diagnostics);
    assert_eq!(p.diagnostics[0].object.to_string(), "Service default/b");
    assert!(p.diagnostics[0].message.contains("shared with Service default/a"), "{}", p.diagnostics[0].message);
}
