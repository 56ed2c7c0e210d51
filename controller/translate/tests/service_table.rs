//! Services, EndpointSlices and Nodes to the node agent's tables: one named test per rule.

mod common;

use causeway_model::{EndpointInfo, NodeTable, ServicePort, ServiceTable, TrafficPolicy};
use causeway_translate::{node_table, service_ports_of, service_table};
use common::{assert_text, index, render_diags};

fn endpoint(e: &EndpointInfo) -> String {
    let mut flags = Vec::new();
    if e.ready {
        flags.push("ready");
    }
    if e.serving {
        flags.push("serving");
    }
    if e.terminating {
        flags.push("terminating");
    }
    let node = e.node_name.as_deref().map(|n| format!(" @{n}")).unwrap_or_default();
    let zone = e.zone.as_deref().map(|z| format!(" zone={z}")).unwrap_or_default();
    format!("{} {}{node}{zone} {}", e.ip, e.port, flags.join(","))
}

fn port(p: &ServicePort) -> String {
    let mut line = format!(
        "{} {:?} {:?}:{}",
        p.name,
        p.name.protocol,
        p.cluster_ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
        p.port
    );
    if let Some(np) = p.node_port {
        line += &format!(" nodePort={np}");
    }
    if !p.external_ips.is_empty() {
        line += &format!(" external={:?}", p.external_ips.iter().map(ToString::to_string).collect::<Vec<_>>());
    }
    if !p.load_balancer_ips.is_empty() {
        line += &format!(" lb={:?}", p.load_balancer_ips.iter().map(ToString::to_string).collect::<Vec<_>>());
    }
    if !p.load_balancer_source_ranges.is_empty() {
        line += &format!(" ranges={:?}", p.load_balancer_source_ranges);
    }
    if let Some(t) = p.session_affinity_timeout {
        line += &format!(" affinity={t}");
    }
    if p.external_traffic_policy == TrafficPolicy::Local {
        line += " etp=Local";
    }
    if p.internal_traffic_policy == TrafficPolicy::Local {
        line += " itp=Local";
    }
    if let Some(h) = p.health_check_node_port {
        line += &format!(" hc={h}");
    }
    let mut out = vec![line];
    out.extend(p.endpoints.iter().map(|e| format!("  {}", endpoint(e))));
    out.join("\n")
}

fn render(t: &ServiceTable) -> String {
    t.ports.iter().map(port).collect::<Vec<_>>().join("\n")
}

#[track_caller]
fn check(yaml: &str, table: &str, diags: &str) {
    let idx = index(yaml);
    let (t, d) = service_table(&idx);
    assert_text(&render(&t), table);
    assert_text(&render_diags(&d), diags);
    // Per-Service recomputation gives the same ports.
    for svc in idx.services() {
        let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
        let name = svc.metadata.name.as_deref().unwrap_or_default();
        let (ports, _) = service_ports_of(&idx, ns, name);
        let whole: Vec<&ServicePort> =
            t.ports.iter().filter(|p| p.name.namespace == ns && p.name.name == name).collect();
        assert_eq!(ports.iter().collect::<Vec<_>>(), whole, "{ns}/{name}");
    }
}

#[test]
fn slices_are_merged_and_matched_to_ports_by_name_and_protocol() {
    check(
        "
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.96.0.10
  ports:
  - {name: http, port: 80, protocol: TCP}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-a, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}, {name: dns, port: 5353, protocol: UDP}]
endpoints:
- {addresses: [10.244.2.7], nodeName: node-b, zone: z1, conditions: {ready: true}}
- {addresses: [10.244.1.5], nodeName: node-a, conditions: {ready: false, serving: true, terminating: true}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-b, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}, {name: http, port: 9999, protocol: UDP}]
endpoints:
# The same IP:port as in web-a, terminating there: the non-terminating copy replaces it.
- {addresses: [10.244.1.5], nodeName: node-a, conditions: {ready: true, serving: true, terminating: false}}
- {addresses: [10.244.3.1, 10.244.3.2]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: unlabelled}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [{addresses: [10.244.9.9]}]
",
        "
        default/web:dns Udp [\"10.96.0.10\"]:53
          10.244.1.5 5353 @node-a serving,terminating
          10.244.2.7 5353 @node-b zone=z1 ready,serving
        default/web:http Tcp [\"10.96.0.10\"]:80
          10.244.1.5 8080 @node-a ready,serving
          10.244.2.7 8080 @node-b zone=z1 ready,serving
          10.244.3.1 8080 ready,serving
        ",
        "",
    );
}

#[test]
fn headless_external_name_and_other_proxies_are_skipped_silently() {
    check(
        "
apiVersion: v1
kind: Service
metadata: {name: headless}
spec: {clusterIP: None, ports: [{port: 80, protocol: TCP}]}
---
apiVersion: v1
kind: Service
metadata: {name: ext}
spec: {type: ExternalName, externalName: example.com}
---
apiVersion: v1
kind: Service
metadata: {name: other, labels: {service.kubernetes.io/service-proxy-name: foo}}
spec: {clusterIP: 10.96.0.12, ports: [{port: 80, protocol: TCP}]}
---
apiVersion: v1
kind: Service
metadata: {name: kept}
spec: {clusterIP: 10.96.0.13, ports: [{port: 80, protocol: TCP}]}
",
        "default/kept Tcp [\"10.96.0.13\"]:80",
        "",
    );
}

#[test]
fn invalid_or_missing_cluster_ips_skip_the_service_with_a_diagnostic() {
    check(
        "
apiVersion: v1
kind: Service
metadata: {name: bad-ip}
spec: {clusterIP: 10.96.0.300, ports: [{port: 80, protocol: TCP}]}
---
apiVersion: v1
kind: Service
metadata: {name: bad-second}
spec: {clusterIP: 10.96.0.14, clusterIPs: [10.96.0.14, 'fd00::zz'], ports: [{port: 80, protocol: TCP}]}
---
apiVersion: v1
kind: Service
metadata: {name: unallocated}
spec: {ports: [{port: 80, protocol: TCP}]}
",
        "",
        "
        Error Service default/bad-ip spec.clusterIP
        Error Service default/bad-second spec.clusterIPs[1]
        Warning Service default/unallocated spec.clusterIP
        ",
    );
}

#[test]
fn ports_out_of_range_or_of_unknown_protocol_are_skipped() {
    check(
        "
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  ports:
  - {name: big, port: 70000, protocol: TCP}
  - {name: icmp, port: 1, protocol: ICMP}
  - {name: badnp, port: 81, protocol: TCP, nodePort: 99999}
  - {name: ok, port: 80, protocol: TCP, nodePort: 30080}
  - {name: ok, port: 82, protocol: TCP}
",
        "
        default/web:badnp Tcp [\"10.96.0.10\"]:81
        default/web:ok Tcp [\"10.96.0.10\"]:80 nodePort=30080
        ",
        "
        Error Service default/web spec.ports[0].port
        Error Service default/web spec.ports[1].protocol
        Error Service default/web spec.ports[2].nodePort
        Error Service default/web spec.ports[4].name
        ",
    );
}

#[test]
fn slices_of_another_family_or_fqdn_are_skipped_with_a_diagnostic() {
    check(
        "
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {clusterIP: 10.96.0.10, ports: [{port: 80, protocol: TCP}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-v6, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
ports: [{name: '', port: 8080, protocol: TCP}]
endpoints: [{addresses: ['fd00::1']}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-fqdn, labels: {kubernetes.io/service-name: web}}
addressType: FQDN
ports: [{name: '', port: 8080, protocol: TCP}]
endpoints: [{addresses: [pod.example.com]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-v4, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: '', port: 8080, protocol: TCP}]
endpoints:
- {addresses: [10.244.1.1]}
- {addresses: ['fd00::2']}
- {addresses: [not-an-ip]}
",
        "
        default/web Tcp [\"10.96.0.10\"]:80
          10.244.1.1 8080 ready,serving
        ",
        "
        Warning EndpointSlice default/web-fqdn addressType
        Error EndpointSlice default/web-v4 endpoints[1].addresses[0]
        Error EndpointSlice default/web-v4 endpoints[2].addresses[0]
        Warning EndpointSlice default/web-v6 addressType
        ",
    );
}

#[test]
fn dual_stack_services_take_both_families() {
    check(
        "
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {clusterIP: 10.96.0.10, clusterIPs: [10.96.0.10, 'fd00:96::10'], ports: [{port: 80, protocol: TCP}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-v6, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
ports: [{port: 8080, protocol: TCP}]
endpoints: [{addresses: ['fd00::1']}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-v4, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{port: 8080, protocol: TCP}]
endpoints: [{addresses: [10.244.1.1]}]
",
        "
        default/web Tcp [\"10.96.0.10\", \"fd00:96::10\"]:80
          10.244.1.1 8080 ready,serving
          fd00::1 8080 ready,serving
        ",
        "",
    );
}

#[test]
fn load_balancer_ips_come_from_status_except_for_the_proxy_class() {
    check(
        "
apiVersion: v1
kind: Service
metadata: {name: lb}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.20
  externalIPs: [192.0.2.1, nope]
  loadBalancerSourceRanges: [10.0.0.0/8, 172.18.0.1/24, bogus]
  externalTrafficPolicy: Local
  healthCheckNodePort: 32000
  ports: [{port: 80, protocol: TCP, nodePort: 30080}]
status:
  loadBalancer:
    ingress:
    - {ip: 172.18.255.200}
    - {ip: 172.18.255.201, ipMode: Proxy}
    - {hostname: lb.example.com}
---
apiVersion: v1
kind: Service
metadata: {name: proxied}
spec:
  type: LoadBalancer
  loadBalancerClass: causeway.dev/proxy
  clusterIP: 10.96.0.21
  ports: [{port: 80, protocol: TCP, nodePort: 30081}]
status:
  loadBalancer: {ingress: [{ip: 172.18.255.202}]}
",
        "
        default/lb Tcp [\"10.96.0.20\"]:80 nodePort=30080 external=[\"192.0.2.1\"] lb=[\"172.18.255.200\"] ranges=[\"10.0.0.0/8\", \"172.18.0.0/24\"] etp=Local hc=32000
        default/proxied Tcp [\"10.96.0.21\"]:80 nodePort=30081
        ",
        "
        Error Service default/lb spec.externalIPs[1]
        Error Service default/lb spec.loadBalancerSourceRanges[2]
        ",
    );
}

#[test]
fn session_affinity_and_traffic_policies() {
    check(
        "
apiVersion: v1
kind: Service
metadata: {name: sticky}
spec:
  clusterIP: 10.96.0.30
  sessionAffinity: ClientIP
  internalTrafficPolicy: Local
  # Only meaningful for NodePort and LoadBalancer: ignored here.
  externalTrafficPolicy: Local
  ports: [{port: 80, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: timed}
spec:
  clusterIP: 10.96.0.31
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
  ports: [{port: 80, protocol: TCP}]
",
        "
        default/sticky Tcp [\"10.96.0.30\"]:80 affinity=10800 itp=Local
        default/timed Tcp [\"10.96.0.31\"]:80 affinity=60
        ",
        "",
    );
}

fn render_nodes(t: &NodeTable) -> String {
    t.nodes
        .iter()
        .map(|n| {
            format!(
                "{} {:?} {:?} ready={} labels={}",
                n.name,
                n.pod_cidrs,
                n.internal_ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
                n.ready,
                n.labels.len()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn nodes_need_a_pod_cidr_and_an_internal_ip() {
    let yaml = "
apiVersion: v1
kind: Node
metadata: {name: node-a, labels: {topology.kubernetes.io/zone: z1}}
spec: {podCIDR: 10.244.0.0/24, podCIDRs: [10.244.0.0/24, 'fd00:244::/64']}
status:
  addresses: [{type: Hostname, address: node-a}, {type: InternalIP, address: 172.18.0.2}]
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
spec: {podCIDR: 10.244.1.0/24}
status:
  addresses: [{type: InternalIP, address: 172.18.0.3}]
  conditions: [{type: Ready, status: 'False'}]
---
apiVersion: v1
kind: Node
metadata: {name: no-cidr}
status: {addresses: [{type: InternalIP, address: 172.18.0.4}]}
---
apiVersion: v1
kind: Node
metadata: {name: host-bits}
spec: {podCIDR: 10.244.3.1/24}
status: {addresses: [{type: InternalIP, address: 172.18.0.5}]}
---
apiVersion: v1
kind: Node
metadata: {name: no-ip}
spec: {podCIDR: 10.244.4.0/24}
status: {addresses: [{type: ExternalIP, address: 203.0.113.1}, {type: InternalIP, address: bad}]}
";
    let (t, d) = node_table(&index(yaml));
    assert_text(
        &render_nodes(&t),
        r#"
        node-a ["10.244.0.0/24", "fd00:244::/64"] ["172.18.0.2"] ready=true labels=1
        node-b ["10.244.1.0/24"] ["172.18.0.3"] ready=false labels=0
        "#,
    );
    assert_text(
        &render_diags(&d),
        "
        Error Node host-bits spec.podCIDR
        Error Node no-cidr spec.podCIDR
        Error Node no-ip status.addresses[1].address
        ",
    );
}
