//! Namespace tests of our plugin alone: datapath and result for every version, CHECK, DEL idempotency,
//! bad input with rollback, GC/STATUS, concurrency, dual stack. Needs root (CI runs as root).

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{Value, json};

/// ADD two pods, check the kernel state and the result, reach each other and the gateway, CHECK, DEL.
#[test]
fn add_check_del_every_version() {
    for (i, version) in VERSIONS.iter().enumerate() {
        let node = Node::new();
        let subnet = format!("10.77.{i}.0/24");
        let gw = format!("10.77.{i}.1");
        let conf = node.conf(version, &subnet);
        let pods = [Netns::new("pa"), Netns::new("pb")];
        let mut results = Vec::new();
        for (k, pod) in pods.iter().enumerate() {
            let r = node.cni("ADD", &format!("ctr{k}"), &pod.path(), &conf).expect_ok("ADD");
            results.push(r);
        }
        for (k, r) in results.iter().enumerate() {
            let pod = &pods[k];
            // Result shape per version.
            assert_eq!(r["cniVersion"], *version);
            let ifs = r["interfaces"].as_array().expect("interfaces");
            assert_eq!(ifs.len(), 3, "{r}");
            assert_eq!(ifs[0]["name"], node.bridge.as_str());
            let veth = ifs[1]["name"].as_str().unwrap().to_string();
            assert!(veth.starts_with("veth") && veth.len() == 12, "{veth}");
            assert_eq!(ifs[2]["name"], "eth0");
            assert_eq!(ifs[2]["sandbox"], pod.path().as_str());
            assert_eq!(r["ips"][0]["interface"], 2, "containerd needs an IP pointing at CNI_IFNAME");
            assert_eq!(r["ips"][0]["address"], format!("10.77.{i}.{}/24", k + 2));
            assert_eq!(r["ips"][0]["gateway"], gw.as_str());
            assert_eq!(r["ips"][0].get("version").is_some(), version.starts_with("0."), "{version}: {r}");
            assert_eq!(r["routes"], json!([{"dst": "0.0.0.0/0", "gw": gw}]));

            // Kernel state: pod side.
            assert_eq!(pod.links(), BTreeSet::from(["lo".to_string(), "eth0".to_string()]));
            let lo = pod.link("lo").unwrap();
            assert!(lo["flags"].as_array().unwrap().contains(&json!("UP")), "lo must be up");
            let eth0 = pod.link("eth0").unwrap();
            assert_eq!(eth0["mtu"], 1400);
            assert_eq!(eth0["linkinfo"]["info_kind"], "veth");
            assert_eq!(eth0["address"], ifs[2]["mac"]);
            assert_eq!(pod.addrs("eth0"), vec![format!("10.77.{i}.{}/24", k + 2)]);
            assert_eq!(pod.routes(), BTreeSet::from([format!("default via {gw} dev eth0")]));

            // Host side: veth on the bridge, hairpin on, MTU.
            let hv = node.ns.link(&veth).expect("host veth");
            assert_eq!(hv["master"], node.bridge.as_str());
            assert_eq!(hv["mtu"], 1400);
            assert_eq!(hv["linkinfo"]["info_slave_kind"], "bridge");
            assert_eq!(hv["linkinfo"]["info_slave_data"]["hairpin"], true);
            assert_eq!(hv["address"], ifs[1]["mac"]);
        }
        let br = node.ns.link(&node.bridge).expect("bridge");
        assert_eq!(br["linkinfo"]["info_kind"], "bridge");
        assert_eq!(br["mtu"], 1400);
        assert_eq!(br["address"], results[0]["interfaces"][0]["mac"]);
        assert_eq!(node.ns.addrs(&node.bridge), vec![format!("{gw}/24")]);
        assert_eq!(node.ns.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout, b"1\n");

        // Traffic: pod ↔ pod and pod → gateway.
        let b_ip = first_ip(&results[1]);
        assert!(pods[0].ping(&b_ip), "{version}: pod a cannot reach pod b {b_ip}");
        assert!(pods[1].ping(&first_ip(&results[0])), "{version}: pod b cannot reach pod a");
        assert!(pods[0].ping(&gw), "{version}: pod a cannot reach the gateway");

        // CHECK with prevResult (0.4.0+), refused for 0.3.x.
        for (k, pod) in pods.iter().enumerate() {
            let mut c = conf.clone();
            c["prevResult"] = results[k].clone();
            let reply = node.cni("CHECK", &format!("ctr{k}"), &pod.path(), &c);
            if version.starts_with("0.3") {
                reply.expect_err("CHECK on 0.3.x", 1, "CHECK");
            } else {
                reply.expect_ok("CHECK");
            }
        }

        // DEL (with prevResult, as runtimes send from 0.4.0), then DEL again.
        for (k, pod) in pods.iter().enumerate() {
            let mut c = conf.clone();
            c["prevResult"] = results[k].clone();
            node.cni("DEL", &format!("ctr{k}"), &pod.path(), &c).expect_ok("DEL");
            node.cni("DEL", &format!("ctr{k}"), &pod.path(), &c).expect_ok("repeated DEL");
            assert_eq!(pod.links(), BTreeSet::from(["lo".to_string()]));
        }
        assert!(node.ns.veths().is_empty(), "{version}: veths left: {:?}", node.ns.veths());
        assert!(node.reserved().is_empty(), "{version}: addresses left: {:?}", node.reserved());
        assert!(node.ns.link(&node.bridge).is_some(), "the bridge is never deleted");
    }
}

/// ADD continues after the last reserved address, as host-local does.
#[test]
fn allocation_continues_after_last_reserved() {
    let node = Node::new();
    let conf = node.conf("1.0.0", "10.78.0.0/24");
    let pod = Netns::new("p");
    let a = node.cni("ADD", "c1", &pod.path(), &conf).expect_ok("ADD");
    assert_eq!(first_ip(&a), "10.78.0.2");
    node.cni("DEL", "c1", &pod.path(), &conf).expect_ok("DEL");
    let b = node.cni("ADD", "c2", &pod.path(), &conf).expect_ok("ADD");
    assert_eq!(first_ip(&b), "10.78.0.3");
    assert_eq!(std::fs::read_to_string(node.store_dir().join("last_reserved_ip.0")).unwrap(), "10.78.0.3");
    assert_eq!(std::fs::read(node.store_dir().join("10.78.0.3")).unwrap(), b"c2\r\neth0");
}

/// A second ADD for an attachment that exists is an error and leaves the first one intact.
#[test]
fn repeated_add_is_refused_and_harmless() {
    let node = Node::new();
    let conf = node.conf("1.1.0", "10.85.0.0/24");
    let pod = Netns::new("p");
    let r = node.cni("ADD", "twice", &pod.path(), &conf).expect_ok("ADD");
    node.cni("ADD", "twice", &pod.path(), &conf).expect_err("second ADD", 999, "duplicate allocation");
    assert_eq!(node.reserved(), BTreeSet::from(["10.85.0.2".to_string()]));
    assert_eq!(node.ns.veths().len(), 1);
    let mut c = conf.clone();
    c["prevResult"] = r;
    node.cni("CHECK", "twice", &pod.path(), &c).expect_ok("CHECK after the refused ADD");
    assert!(pod.ping("10.85.0.1"));
}

/// CHECK names what is missing: route, address, interface, reservation.
#[test]
fn check_reports_missing_pieces() {
    let node = Node::new();
    let conf = node.conf("1.1.0", "10.79.0.0/24");
    let pod = Netns::new("p");
    let r = node.cni("ADD", "c1", &pod.path(), &conf).expect_ok("ADD");
    let mut c = conf.clone();
    c["prevResult"] = r.clone();
    node.cni("CHECK", "c1", &pod.path(), &c).expect_ok("CHECK");

    let mut no_prev = conf.clone();
    no_prev.as_object_mut().unwrap().remove("prevResult");
    node.cni("CHECK", "c1", &pod.path(), &no_prev).expect_err("CHECK without prevResult", 7, "prevResult");

    let veth = r["interfaces"][1]["name"].as_str().unwrap().to_string();
    node.ns.ip(&["link", "set", &veth, "type", "bridge_slave", "hairpin", "off"]);
    node.cni("CHECK", "c1", &pod.path(), &c).expect_err("CHECK hairpin", 100, "hairpin");
    node.ns.ip(&["link", "set", &veth, "type", "bridge_slave", "hairpin", "on"]);

    pod.ip(&["route", "del", "default"]);
    node.cni("CHECK", "c1", &pod.path(), &c).expect_err("CHECK route", 100, "route 0.0.0.0/0 via 10.79.0.1");
    pod.ip(&["addr", "del", "10.79.0.2/24", "dev", "eth0"]);
    node.cni("CHECK", "c1", &pod.path(), &c).expect_err("CHECK address", 100, "address 10.79.0.2/24");
    pod.ip(&["link", "del", "eth0"]);
    node.cni("CHECK", "c1", &pod.path(), &c).expect_err("CHECK interface", 100, "interface eth0 is missing");
    std::fs::remove_file(node.store_dir().join("10.79.0.2")).unwrap();
    node.cni("CHECK", "c1", &pod.path(), &c).expect_err("CHECK ipam", 100, "10.79.0.2 is not reserved");
}

/// DEL succeeds when the netns, the link or the reservation is already gone, and for unknown containers.
#[test]
fn del_is_idempotent_when_things_are_gone() {
    let node = Node::new();
    let conf = node.conf("1.0.0", "10.80.0.0/24");

    // Netns deleted before DEL: the kernel removed the veth; DEL releases the address.
    let pod = Netns::new("p");
    let r = node.cni("ADD", "gone", &pod.path(), &conf).expect_ok("ADD");
    let path = pod.path();
    drop(pod);
    let mut c = conf.clone();
    c["prevResult"] = r;
    node.cni("DEL", "gone", &path, &c).expect_ok("DEL after netns removal");
    assert!(node.reserved().is_empty());

    // Empty CNI_NETNS while the pod namespace still exists: the host end is found by name.
    let pod = Netns::new("p");
    node.cni("ADD", "lost", &pod.path(), &conf).expect_ok("ADD");
    assert_eq!(node.ns.veths().len(), 1);
    node.cni("DEL", "lost", "", &conf).expect_ok("DEL with empty CNI_NETNS");
    assert!(node.ns.veths().is_empty(), "host veth left: {:?}", node.ns.veths());
    assert!(node.reserved().is_empty());
    assert!(!pod.links().contains("eth0"), "deleting the host end removes the pod end");

    // Interface removed by someone else, reservation still there.
    node.cni("ADD", "manual", &pod.path(), &conf).expect_ok("ADD");
    pod.ip(&["link", "del", "eth0"]);
    node.cni("DEL", "manual", &pod.path(), &conf).expect_ok("DEL without link");
    assert!(node.reserved().is_empty());

    // A pod interface whose host end we cannot name (created by someone else): found inside the netns.
    node.ns.ip(&["link", "add", "hostend0", "type", "veth", "peer", "name", "eth0", "netns", &pod.name]);
    node.cni("DEL", "foreign", &pod.path(), &conf).expect_ok("DEL of a foreign pair");
    assert!(!pod.links().contains("eth0"));
    assert!(!node.ns.links().contains("hostend0"));

    // Never added; repeated.
    for _ in 0..2 {
        node.cni("DEL", "never", &pod.path(), &conf).expect_ok("DEL of unknown container");
    }
}

/// Each bad input returns the spec's code and names the field, and leaves no interface or address behind.
#[test]
fn bad_input_leaves_nothing_behind() {
    let node = Node::new();
    let conf = node.conf("1.0.0", "10.81.0.0/24");
    let pod = Netns::new("p");
    let env_ok = |cmd: &'static str| -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", cmd.to_string()),
            ("CNI_CONTAINERID", "bad".into()),
            ("CNI_NETNS", pod.path()),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_PATH", REF_DIR.into()),
        ]
    };
    let call = |env: Vec<(&'static str, String)>, stdin: &[u8]| {
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        node.call(BIN, &pairs, stdin)
    };
    let set = |mut env: Vec<(&'static str, String)>, k: &'static str, v: &str| {
        env.retain(|(key, _)| *key != k);
        env.push((k, v.to_string()));
        env
    };
    let unset = |mut env: Vec<(&'static str, String)>, k: &'static str| {
        env.retain(|(key, _)| *key != k);
        env
    };
    let good = conf.to_string().into_bytes();
    let mut unknown_version = conf.clone();
    unknown_version["cniVersion"] = json!("0.9.9");
    let mut typo = conf.clone();
    typo["hairpinmode"] = json!(true);

    type Case = (&'static str, Vec<(&'static str, String)>, Vec<u8>, u64, &'static str);
    let cases: Vec<Case> = vec![
        ("empty stdin", env_ok("ADD"), vec![], 6, "stdin"),
        ("malformed stdin", env_ok("ADD"), b"{\"cniVersion\": ".to_vec(), 6, "stdin"),
        ("unknown cniVersion", env_ok("ADD"), unknown_version.to_string().into_bytes(), 1, "cniVersion"),
        ("typo in our key", env_ok("ADD"), typo.to_string().into_bytes(), 2, "hairpinmode"),
        ("missing CNI_COMMAND", unset(env_ok("ADD"), "CNI_COMMAND"), good.clone(), 4, "CNI_COMMAND"),
        ("missing CNI_CONTAINERID", unset(env_ok("ADD"), "CNI_CONTAINERID"), good.clone(), 4, "CNI_CONTAINERID"),
        ("missing CNI_NETNS", unset(env_ok("ADD"), "CNI_NETNS"), good.clone(), 4, "CNI_NETNS"),
        ("missing CNI_IFNAME", unset(env_ok("ADD"), "CNI_IFNAME"), good.clone(), 4, "CNI_IFNAME"),
        ("invalid CNI_IFNAME", set(env_ok("ADD"), "CNI_IFNAME", "eth0:1"), good.clone(), 4, "CNI_IFNAME"),
        ("too long CNI_IFNAME", set(env_ok("ADD"), "CNI_IFNAME", "abcdefghijklmnop"), good.clone(), 4, "CNI_IFNAME"),
        (
            "netns does not exist",
            set(env_ok("ADD"), "CNI_NETNS", "/run/netns/cwt-does-not-exist"),
            good.clone(),
            3,
            "CNI_NETNS",
        ),
        ("netns is not a netns", set(env_ok("ADD"), "CNI_NETNS", "/etc/hostname"), good.clone(), 4, "CNI_NETNS"),
        ("netns is our own", set(env_ok("ADD"), "CNI_NETNS", &node.ns.path()), good.clone(), 4, "CNI_NETNS"),
    ];
    for (what, env, stdin, code, field) in cases {
        let reply = call(env, &stdin);
        let v = reply.expect_err(what, code, field);
        assert!(v["cniVersion"].is_string(), "{what}: error JSON carries cniVersion: {v}");
        assert!(node.ns.veths().is_empty(), "{what}: veth left behind");
        assert!(node.reserved().is_empty(), "{what}: address leaked: {:?}", node.reserved());
        assert_eq!(pod.links(), BTreeSet::from(["lo".to_string()]), "{what}: pod interface left behind");
    }

    // Range with no free address: one candidate, taken by the first ADD.
    let tiny = node.conf_with(
        "1.0.0",
        json!({"type": "host-local", "dataDir": node.data_dir.path(),
        "ranges": [[{"subnet": "10.81.1.0/24", "rangeStart": "10.81.1.9", "rangeEnd": "10.81.1.9"}]]}),
    );
    let other = Netns::new("q");
    node.cni("ADD", "first", &other.path(), &tiny).expect_ok("ADD into the tiny range");
    node.cni("ADD", "second", &pod.path(), &tiny).expect_err("exhausted range", 11, "ipam.ranges[0]");
    assert_eq!(node.reserved(), BTreeSet::from(["10.81.1.9".to_string()]));
    assert_eq!(node.ns.veths().len(), 1, "no veth for the failed ADD");
    assert_eq!(pod.links(), BTreeSet::from(["lo".to_string()]));

    // Interface already exists in the container: error, and the address reserved for it is rolled back.
    pod.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "squat0"]);
    node.cni("ADD", "dup", &pod.path(), &conf).expect_err("existing interface", 101, "CNI_IFNAME");
    assert_eq!(node.reserved(), BTreeSet::from(["10.81.1.9".to_string()]), "address of the failed ADD leaked");
    pod.ip(&["link", "del", "eth0"]);

    // The bridge already carries a different gateway address (as in the reference plugin: an error).
    node.cni("ADD", "other-subnet", &pod.path(), &node.conf("1.0.0", "10.81.2.0/24")).expect_err(
        "bridge address",
        7,
        "bridge",
    );
    assert_eq!(node.reserved(), BTreeSet::from(["10.81.1.9".to_string()]), "address of the failed ADD leaked");

    // A failure after the veth exists (unreachable route gateway) removes the veth and the address.
    let bad_route = node.conf_with(
        "1.0.0",
        json!({"type": "host-local", "dataDir": node.data_dir.path(),
        "ranges": [[{"subnet": "10.81.1.0/24", "rangeStart": "10.81.1.20", "rangeEnd": "10.81.1.30"}]],
        "routes": [{"dst": "192.0.2.0/24", "gw": "198.51.100.1"}]}),
    );
    node.cni("ADD", "late", &pod.path(), &bad_route).expect_err("late failure", 999, "192.0.2.0/24");
    assert_eq!(node.ns.veths().len(), 1, "veth of the failed ADD left behind");
    assert_eq!(pod.links(), BTreeSet::from(["lo".to_string()]));
    assert_eq!(node.reserved(), BTreeSet::from(["10.81.1.9".to_string()]));
    // The runtime still calls DEL after a failed ADD; it must succeed.
    node.cni("DEL", "late", &pod.path(), &bad_route).expect_ok("DEL after failed ADD");

    // A non-bridge link with the bridge's name.
    let squatted = Node::new();
    squatted.ns.ip(&["link", "add", &squatted.bridge, "type", "veth", "peer", "name", "squat0"]);
    squatted.cni("ADD", "sq", &pod.path(), &squatted.conf("1.0.0", "10.81.3.0/24")).expect_err(
        "bridge name taken by a veth",
        7,
        "bridge",
    );
    assert!(squatted.reserved().is_empty());
    assert!(squatted.ns.veths().is_empty());
}

/// VERSION echoes the request's version and lists what we support.
#[test]
fn version_reply() {
    let node = Node::new();
    let r = node.call(BIN, &[("CNI_COMMAND", "VERSION")], br#"{"cniVersion":"1.0.0"}"#).expect_ok("VERSION");
    assert_eq!(r, json!({"cniVersion": "1.0.0", "supportedVersions": VERSIONS}));
    let r = node.call(BIN, &[("CNI_COMMAND", "VERSION")], b"").expect_ok("VERSION without stdin");
    assert_eq!(r["cniVersion"], "1.1.0");
}

/// GC keeps exactly the valid attachments; STATUS reports exhaustion with code 50; both need 1.1.0.
#[test]
fn gc_and_status() {
    let node = Node::new();
    let conf = node.conf("1.1.0", "10.82.0.0/24");
    let pods: Vec<Netns> = (0..3).map(|_| Netns::new("p")).collect();
    for (k, pod) in pods.iter().enumerate() {
        node.cni("ADD", &format!("g{k}"), &pod.path(), &conf).expect_ok("ADD");
    }
    node.call(BIN, &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", REF_DIR)], conf.to_string().as_bytes())
        .expect_ok("STATUS");

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "g1", "ifname": "eth0"}]);
    node.call(BIN, &[("CNI_COMMAND", "GC"), ("CNI_PATH", REF_DIR)], gc.to_string().as_bytes()).expect_ok("GC");
    assert_eq!(node.reserved(), BTreeSet::from(["10.82.0.3".to_string()]));

    let old = node.conf("1.0.0", "10.82.0.0/24");
    node.call(BIN, &[("CNI_COMMAND", "STATUS")], old.to_string().as_bytes()).expect_err("STATUS on 1.0.0", 1, "1.1.0");
    node.call(BIN, &[("CNI_COMMAND", "GC")], old.to_string().as_bytes()).expect_err("GC on 1.0.0", 1, "1.1.0");

    let full = node.conf_with(
        "1.1.0",
        json!({"type": "host-local", "dataDir": node.data_dir.path(),
        "ranges": [[{"subnet": "10.82.0.0/24", "rangeStart": "10.82.0.3", "rangeEnd": "10.82.0.3"}]]}),
    );
    node.call(BIN, &[("CNI_COMMAND", "STATUS")], full.to_string().as_bytes()).expect_err(
        "STATUS exhausted",
        50,
        "ipam.ranges[0]",
    );

    // Without a list (libcni omits it when its caller passes none) no attachment is valid.
    node.call(BIN, &[("CNI_COMMAND", "GC")], conf.to_string().as_bytes()).expect_ok("GC without list");
    assert!(node.reserved().is_empty());
}

/// 50 parallel ADDs get 50 distinct addresses; 50 parallel DELs leave an empty store and no veth.
#[test]
fn fifty_parallel_adds_and_dels() {
    let node = Node::new();
    let conf = node.conf("1.0.0", "10.83.0.0/24");
    let pods: Vec<Netns> = (0..50).map(|_| Netns::new("c")).collect();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(k, pod)| {
                let (node, conf) = (&node, &conf);
                s.spawn(move || node.cni("ADD", &format!("par{k}"), &pod.path(), conf).expect_ok("parallel ADD"))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("ADD thread")).collect()
    });
    let ips: BTreeSet<String> = results.iter().map(first_ip).collect();
    assert_eq!(ips.len(), 50, "addresses must be distinct");
    assert_eq!(node.reserved(), ips);
    assert_eq!(node.ns.veths().len(), 50);
    for pod in &pods {
        assert_eq!(pod.addrs("eth0").len(), 1);
    }
    std::thread::scope(|s| {
        for (k, pod) in pods.iter().enumerate() {
            let (node, conf) = (&node, &conf);
            s.spawn(move || node.cni("DEL", &format!("par{k}"), &pod.path(), conf).expect_ok("parallel DEL"));
        }
    });
    assert!(node.reserved().is_empty(), "store not empty: {:?}", node.reserved());
    assert!(node.ns.veths().is_empty(), "veths left: {:?}", node.ns.veths());
}

/// Dual stack: one IPv4 and one IPv6 address, both default routes, v6 reachability.
#[test]
fn dual_stack() {
    let node = Node::new();
    let conf = node.conf_with(
        "1.1.0",
        json!({"type": "host-local", "dataDir": node.data_dir.path(),
        "ranges": [[{"subnet": "10.84.0.0/24"}], [{"subnet": "fd00:84::/64"}]]}),
    );
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    let ra = node.cni("ADD", "d1", &a.path(), &conf).expect_ok("ADD");
    let rb = node.cni("ADD", "d2", &b.path(), &conf).expect_ok("ADD");
    assert_eq!(ra["ips"][1]["address"], "fd00:84::2/64");
    assert_eq!(ra["ips"][1]["interface"], 2);
    assert_eq!(a.addrs("eth0"), vec!["10.84.0.2/24".to_string(), "fd00:84::2/64".to_string()]);
    assert_eq!(
        a.routes(),
        BTreeSet::from(["default via 10.84.0.1 dev eth0".to_string(), "default via fd00:84::1 dev eth0".to_string()])
    );
    assert!(a.ping(rb["ips"][1]["address"].as_str().unwrap().split('/').next().unwrap()), "v6 pod to pod");
    assert!(a.ping("fd00:84::1"), "v6 gateway");
    let mut c = conf.clone();
    c["prevResult"] = ra;
    node.cni("CHECK", "d1", &a.path(), &c).expect_ok("CHECK dual stack");
}
