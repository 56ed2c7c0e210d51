//! Against real peers: the reference `bridge` + `host-local` plugins from Debian's
//! containernetworking-plugins (in /usr/lib/cni), and `cnitool`, a real libcni client, built by
//! tests/cni/setup.sh. Missing peers FAIL these tests with a message naming the setup script.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::{Value, json};

/// Versions the Debian reference bridge speaks (it stops at 1.0.0).
const REF_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

fn reference(node: &Node, cmd: &str, id: &str, netns: &str, conf: &Value) -> Reply {
    node.call(
        &format!("{REF_DIR}/bridge"),
        &[
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", REF_DIR),
        ],
        conf.to_string().as_bytes(),
    )
}

fn host_local(node: &Node, cmd: &str, id: &str, conf: &Value) -> Reply {
    node.call(
        &format!("{REF_DIR}/host-local"),
        &[
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", "/run/netns/unused"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", REF_DIR),
        ],
        conf.to_string().as_bytes(),
    )
}

/// Pod-side state worth comparing: links with kind/MTU/up, addresses, routes (full `ip -j route` entries).
fn pod_layout(pod: &Netns) -> Value {
    let mut links = Vec::new();
    for name in pod.links() {
        let l = pod.link(&name).unwrap_or_default();
        links.push(json!({
            "name": name,
            "kind": l["linkinfo"]["info_kind"],
            "mtu": l["mtu"],
            "up": l["flags"].as_array().is_some_and(|f| f.contains(&json!("UP"))),
        }));
    }
    let mut routes = Vec::new();
    for fam in ["-4", "-6"] {
        for r in pod.ip_json(&[fam, "route", "show"]).as_array().into_iter().flatten() {
            routes.push(r.clone());
        }
    }
    json!({"links": links, "addrs": pod.addrs("eth0"), "routes": routes})
}

/// The layout without `lo`'s up flag.
fn mask_lo(mut layout: Value) -> Value {
    for l in layout["links"].as_array_mut().into_iter().flatten() {
        if l["name"] == "lo" {
            l["up"] = json!("<runtime's loopback plugin>");
        }
    }
    layout
}

/// Host-side state: bridge kind/MTU/addresses, and per veth its master, hairpin and MTU.
fn host_layout(node: &Netns, bridge: &str) -> Value {
    let br = node.link(bridge).unwrap_or_default();
    let mut ports = Vec::new();
    for v in node.veths() {
        let l = node.link(&v).unwrap_or_default();
        ports.push(
            json!({"master": l["master"], "mtu": l["mtu"], "hairpin": l["linkinfo"]["info_slave_data"]["hairpin"]}),
        );
    }
    json!({"bridge_kind": br["linkinfo"]["info_kind"], "bridge_mtu": br["mtu"], "bridge_addrs": node.addrs(bridge), "ports": ports})
}

/// The result with the parts that legitimately differ masked: MACs (random) and the host veth name
/// (random in the reference, hash-derived in ours; both `veth` + 8 hex digits).
fn normalise(mut r: Value) -> Value {
    if let Some(ifs) = r["interfaces"].as_array_mut() {
        for i in ifs {
            if let Some(o) = i.as_object_mut() {
                if o.remove("mac").is_some() {
                    o.insert("mac".into(), json!("<mac>"));
                }
                if let Some(n) = o.get("name").and_then(Value::as_str)
                    && n.starts_with("veth")
                    && n.len() == 12
                    && n[4..].chars().all(|c| c.is_ascii_hexdigit())
                {
                    o.insert("name".into(), json!("veth<8 hex>"));
                }
            }
        }
    }
    r
}

/// The same configuration through the reference bridge/host-local and through ours yields the same
/// pod-side layout, the same first addresses, the same host layout and an equivalent result.
#[test]
fn same_layout_and_result_as_reference_bridge() {
    for (i, version) in REF_VERSIONS.iter().enumerate() {
        let ours = Node::new();
        let theirs = Node::new();
        let subnet = format!("10.90.{i}.0/24");
        let mut our_conf = ours.conf(version, &subnet);
        let mut ref_conf = theirs.conf(version, &subnet);
        ref_conf["type"] = json!("bridge");
        // Same bridge and network name on both sides (they live in different node namespaces).
        ref_conf["bridge"] = our_conf["bridge"].clone();
        ref_conf["name"] = our_conf["name"].clone();
        our_conf["ipam"]["routes"] = json!([{"dst": "192.0.2.0/24"}]);
        ref_conf["ipam"]["routes"] = our_conf["ipam"]["routes"].clone();
        let ref_store = theirs.data_dir.path().join(ours.network.as_str());

        let mut our_results = Vec::new();
        let mut ref_results = Vec::new();
        let mut pods = Vec::new();
        for k in 0..2 {
            let (po, pr) = (Netns::new("o"), Netns::new("r"));
            let ro = ours.cni("ADD", &format!("c{k}"), &po.path(), &our_conf).expect_ok("our ADD");
            let rr = reference(&theirs, "ADD", &format!("c{k}"), &pr.path(), &ref_conf).expect_ok("reference ADD");
            assert_eq!(first_ip(&ro), first_ip(&rr), "{version}: first addresses differ");
            // The reference leaves `lo` to the runtime's loopback plugin; we bring it up (issue: `lo` up).
            let (lo, lr) = (pod_layout(&po), pod_layout(&pr));
            assert_eq!(lo["links"][1], json!({"name": "lo", "kind": null, "mtu": 65536, "up": true}));
            assert_eq!(mask_lo(lo), mask_lo(lr), "{version}: pod-side layout differs");

            // Equivalent results: same shape once MACs, sandbox paths and veth names are masked.
            let mut no = normalise(ro.clone());
            let mut nr = normalise(rr.clone());
            no["interfaces"][2]["sandbox"] = json!("<netns>");
            nr["interfaces"][2]["sandbox"] = json!("<netns>");
            assert_eq!(no, nr, "{version}: results differ\nours: {ro}\nreference: {rr}");
            our_results.push(ro);
            ref_results.push(rr);
            pods.push((po, pr));
        }
        assert_eq!(
            host_layout(&ours.ns, &ours.bridge),
            host_layout(&theirs.ns, &ours.bridge),
            "{version}: host layout differs"
        );
        let ref_files: BTreeSet<String> = std::fs::read_dir(&ref_store)
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect())
            .unwrap_or_default();
        let our_files: BTreeSet<String> = std::fs::read_dir(ours.store_dir())
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect())
            .unwrap_or_default();
        assert_eq!(our_files, ref_files, "{version}: store files differ");

        for (k, (po, pr)) in pods.iter().enumerate() {
            let mut co = our_conf.clone();
            co["prevResult"] = our_results[k].clone();
            let mut cr = ref_conf.clone();
            cr["prevResult"] = ref_results[k].clone();
            ours.cni("DEL", &format!("c{k}"), &po.path(), &co).expect_ok("our DEL");
            reference(&theirs, "DEL", &format!("c{k}"), &pr.path(), &cr).expect_ok("reference DEL");
            assert_eq!(mask_lo(pod_layout(po)), mask_lo(pod_layout(pr)), "{version}: pod layout after DEL differs");
        }
        assert_eq!(host_layout(&ours.ns, &ours.bridge), host_layout(&theirs.ns, &ours.bridge));
        assert!(ours.reserved().is_empty());
    }
}

/// Our store and the reference host-local share one directory: same lock, same files, each releases the
/// other's reservations, and concurrent ADDs from both never hand out one address twice.
#[test]
fn shares_store_with_reference_host_local() {
    let node = Node::new();
    let conf = node.conf("1.0.0", "10.91.0.0/24");
    let pod = Netns::new("p");
    assert_eq!(first_ip(&node.cni("ADD", "ours1", &pod.path(), &conf).expect_ok("our ADD")), "10.91.0.2");
    assert_eq!(first_ip(&host_local(&node, "ADD", "theirs1", &conf).expect_ok("host-local ADD")), "10.91.0.3");
    let pod2 = Netns::new("p");
    assert_eq!(first_ip(&node.cni("ADD", "ours2", &pod2.path(), &conf).expect_ok("our ADD")), "10.91.0.4");
    host_local(&node, "DEL", "ours1", &conf).expect_ok("host-local releases ours");
    assert!(!node.reserved().contains("10.91.0.2"));
    node.cni("DEL", "theirs1", "", &conf).expect_ok("we release host-local's");
    assert!(!node.reserved().contains("10.91.0.3"));
    node.cni("DEL", "ours2", &pod2.path(), &conf).expect_ok("DEL");
    node.cni("DEL", "ours1", &pod.path(), &conf).expect_ok("DEL");

    // 12 of ours and 12 host-local ADDs at once.
    let pods: Vec<Netns> = (0..12).map(|_| Netns::new("m")).collect();
    let ips: Vec<String> = std::thread::scope(|s| {
        let mut hs = Vec::new();
        for (k, p) in pods.iter().enumerate() {
            let (node, conf) = (&node, &conf);
            hs.push(
                s.spawn(move || first_ip(&node.cni("ADD", &format!("o{k}"), &p.path(), conf).expect_ok("our ADD"))),
            );
            hs.push(
                s.spawn(move || first_ip(&host_local(node, "ADD", &format!("h{k}"), conf).expect_ok("host-local ADD"))),
            );
        }
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let distinct: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), 24, "an address was handed out twice: {ips:?}");
    for (k, pod) in pods.iter().enumerate() {
        node.cni("DEL", &format!("o{k}"), &pod.path(), &conf).expect_ok("DEL");
        host_local(&node, "DEL", &format!("h{k}"), &conf).expect_ok("host-local DEL");
    }
    assert!(node.reserved().is_empty());
}

/// Removes libcni's cached results (`/var/lib/cni/results/<network>-*`) of the given networks on drop, so a
/// failing run leaves nothing behind.
struct ResultCache(Vec<String>);

impl Drop for ResultCache {
    fn drop(&mut self) {
        let Ok(rd) = std::fs::read_dir("/var/lib/cni/results") else { return };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if self.0.iter().any(|n| name.starts_with(&format!("{n}-"))) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn cnitool() -> PathBuf {
    let p = std::env::var_os("CNITOOL").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("CNITOOL_DIR").unwrap_or_else(|_| "/var/cache/causeway/bin".into())).join("cnitool")
    });
    assert!(p.exists(), "cnitool not found at {} (set CNITOOL): run tests/cni/setup.sh", p.display());
    p
}

fn run_cnitool(node: &Node, confdir: &std::path::Path, args: &[&str], cap_args: &str) -> Reply {
    let bin_dir = PathBuf::from(BIN).parent().map(|p| p.display().to_string()).unwrap_or_default();
    let tool = cnitool();
    let out = Command::new("nsenter")
        .arg(format!("--net={}", node.ns.path()))
        .arg("--")
        .arg(&tool)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("NETCONFPATH", confdir)
        .env("CNI_PATH", format!("{bin_dir}:{REF_DIR}"))
        .env("CAP_ARGS", cap_args)
        .output()
        .expect("spawn cnitool");
    Reply {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// cnitool (libcni) drives ours: ADD and DEL chained with the reference portmap plugin (so a real chained
/// plugin consumes our result), and ADD, CHECK, STATUS, GC, DEL for a 1.1.0 network of ours alone. (The
/// reference portmap 1.1.1's own CHECK is broken when both iptables families exist: it looks for its IPv4
/// rules in the IPv6 table, so CHECK is driven on the network without it.)
#[test]
fn cnitool_drives_add_check_del_status_gc() {
    let node = Node::new();
    let _cache = ResultCache(vec![node.network.clone(), format!("{}-b", node.network)]);
    let confdir = tempfile::tempdir().expect("tempdir");
    let plugin = |conf: Value| {
        let mut c = conf;
        for k in ["cniVersion", "name"] {
            c.as_object_mut().unwrap().remove(k);
        }
        c
    };
    let list = json!({"cniVersion": "1.0.0", "name": node.network,
        "plugins": [plugin(node.conf("1.0.0", "10.92.0.0/24")), {"type": "portmap", "capabilities": {"portMappings": true}}]});
    std::fs::write(confdir.path().join("10-causeway.conflist"), list.to_string()).unwrap();
    let caps = r#"{"portMappings":[{"hostPort":18080,"containerPort":80,"protocol":"tcp"}]}"#;
    let pod = Netns::new("p");

    let r = run_cnitool(&node, confdir.path(), &["add", &node.network, &pod.path()], caps).expect_ok("cnitool add");
    assert_eq!(r["cniVersion"], "1.0.0");
    assert_eq!(r["ips"][0]["address"], "10.92.0.2/24");
    assert_eq!(r["interfaces"][r["ips"][0]["interface"].as_u64().unwrap() as usize]["name"], "eth0");
    assert_eq!(pod.addrs("eth0"), vec!["10.92.0.2/24".to_string()]);
    let nat = String::from_utf8_lossy(&node.ns.exec(&["iptables-save", "-t", "nat"]).stdout).to_string();
    assert!(nat.contains("--to-destination 10.92.0.2:80"), "portmap did not get our result: {nat}");
    run_cnitool(&node, confdir.path(), &["del", &node.network, &pod.path()], caps).expect_ok("cnitool del");
    assert!(node.ns.veths().is_empty());
    assert!(node.reserved().is_empty());
    assert!(!pod.links().contains("eth0"));
    let nat = String::from_utf8_lossy(&node.ns.exec(&["iptables-save", "-t", "nat"]).stdout).to_string();
    assert!(!nat.contains("10.92.0.2:80"), "portmap rules left: {nat}");

    // A 1.1.0 network of ours alone, on its own bridge.
    let net2 = format!("{}-b", node.network);
    let mut ours2 = plugin(node.conf("1.1.0", "10.92.1.0/24"));
    ours2["bridge"] = json!(format!("{}b", node.bridge));
    let list2 = json!({"cniVersion": "1.1.0", "name": net2, "plugins": [ours2]});
    std::fs::write(confdir.path().join("20-causeway.conflist"), list2.to_string()).unwrap();
    let store2 = node.data_dir.path().join(&net2);
    let reserved2 = || -> usize {
        std::fs::read_dir(&store2)
            .map(|rd| {
                rd.flatten().filter(|e| e.file_name().to_string_lossy().parse::<std::net::IpAddr>().is_ok()).count()
            })
            .unwrap_or(0)
    };
    let pod2 = Netns::new("q");
    let r2 = run_cnitool(&node, confdir.path(), &["add", &net2, &pod2.path()], "").expect_ok("cnitool add 1.1.0");
    assert_eq!(r2["cniVersion"], "1.1.0");
    assert_eq!(r2["interfaces"][2]["mtu"], 1400);
    run_cnitool(&node, confdir.path(), &["check", &net2, &pod2.path()], "").expect_ok("cnitool check");
    pod2.ip(&["route", "del", "default"]);
    let bad = run_cnitool(&node, confdir.path(), &["check", &net2, &pod2.path()], "");
    assert!(!bad.ok && bad.stderr.contains("route 0.0.0.0/0"), "CHECK must see the missing route: {bad:?}");
    run_cnitool(&node, confdir.path(), &["status", &net2, &pod2.path()], "").expect_ok("cnitool status");
    run_cnitool(&node, confdir.path(), &["del", &net2, &pod2.path()], "").expect_ok("cnitool del 1.1.0");
    assert_eq!(reserved2(), 0);
    assert!(!pod2.links().contains("eth0"));

    // GC: a reservation without a cached attachment (as after a crash) is released by libcni's GC, which
    // passes an empty valid-attachments list here.
    run_cnitool(&node, confdir.path(), &["add", &net2, &pod2.path()], "").expect_ok("cnitool add again");
    std::fs::write(store2.join("10.92.1.200"), "crashed-container\r\neth0").unwrap();
    assert_eq!(reserved2(), 2);
    run_cnitool(&node, confdir.path(), &["gc", &net2, &pod2.path()], "").expect_ok("cnitool gc");
    assert_eq!(reserved2(), 0);
    assert!(!pod2.links().contains("eth0"), "libcni GC DELs cached attachments that are not valid");
}
