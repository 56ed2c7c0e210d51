//! Parsing manifests files: formats, API defaults, and one diagnostic per bad document.

use causeway_model::{ServiceTable, Severity};
use causeway_source::parse_manifests;
use causeway_translate::{Index, KubeObject, TranslateConfig, route_table, service_table};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

fn parse_ok(name: &str, text: &str) -> Vec<KubeObject> {
    let (objects, diags) = parse_manifests(name, text.as_bytes());
    assert!(diags.is_empty(), "unexpected diagnostics: {diags:#?}");
    objects
}

fn keys(objects: &[KubeObject]) -> Vec<String> {
    objects.iter().map(|o| o.key().to_string()).collect()
}

#[test]
fn service_defaults_are_filled_in() {
    let objects = parse_ok(
        "svc.yaml",
        "
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.96.0.10
  ports: [{port: 80}, {name: tls, port: 443, targetPort: https}]
---
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: edge}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.11
  sessionAffinity: ClientIP
  ports: [{port: 80, protocol: UDP}]
",
    );
    assert_eq!(keys(&objects), ["Service default/web", "Service edge/lb"]);
    let KubeObject::Service(web) = &objects[0] else { panic!("not a Service") };
    let spec = web.spec.as_ref().expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.session_affinity.as_deref(), Some("None"));
    assert_eq!(spec.internal_traffic_policy.as_deref(), Some("Cluster"));
    assert_eq!(spec.external_traffic_policy, None, "only NodePort and LoadBalancer get an external policy");
    assert_eq!(spec.cluster_ips.as_deref(), Some(&["10.96.0.10".to_owned()][..]));
    assert_eq!(spec.ip_families.as_deref(), Some(&["IPv4".to_owned()][..]));
    assert_eq!(spec.ip_family_policy.as_deref(), Some("SingleStack"));
    let ports = spec.ports.as_ref().expect("ports");
    assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
    assert_eq!(ports[0].target_port, Some(IntOrString::Int(80)));
    assert_eq!(ports[1].target_port, Some(IntOrString::String("https".into())));

    let KubeObject::Service(lb) = &objects[1] else { panic!("not a Service") };
    let spec = lb.spec.as_ref().expect("spec");
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Cluster"));
    assert_eq!(spec.allocate_load_balancer_node_ports, Some(true));
    assert_eq!(spec.ports.as_ref().expect("ports")[0].protocol.as_deref(), Some("UDP"));
    let timeout =
        spec.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref()).and_then(|c| c.timeout_seconds);
    assert_eq!(timeout, Some(10_800));
}

#[test]
fn secret_string_data_is_merged_into_data() {
    let objects = parse_ok(
        "s.yaml",
        "
apiVersion: v1
kind: Secret
metadata: {name: s}
stringData: {plain: hello}
data: {encoded: d29ybGQ=}
",
    );
    let KubeObject::Secret(s) = &objects[0] else { panic!("not a Secret") };
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
    assert_eq!(s.string_data, None);
    let data = s.data.as_ref().expect("data");
    assert_eq!(data["plain"].0, b"hello");
    assert_eq!(data["encoded"].0, b"world");
}

#[test]
fn endpoint_slice_defaults_make_nil_conditions_ready() {
    let objects = parse_ok(
        "eps.yaml",
        "
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{port: 8080}]
endpoints:
- addresses: [10.244.1.1]
- addresses: [10.244.1.2]
  conditions: {ready: false}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: empty, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
",
    );
    let KubeObject::EndpointSlice(s) = &objects[0] else { panic!("not an EndpointSlice") };
    let port = &s.ports.as_ref().expect("ports")[0];
    assert_eq!((port.name.as_deref(), port.protocol.as_deref()), (Some(""), Some("TCP")));
    let c0 = s.endpoints[0].conditions.clone().expect("conditions");
    assert_eq!((c0.ready, c0.serving, c0.terminating), (Some(true), Some(true), Some(false)));
    let c1 = s.endpoints[1].conditions.clone().expect("conditions");
    assert_eq!(c1.ready, Some(false));
    let KubeObject::EndpointSlice(empty) = &objects[1] else { panic!("not an EndpointSlice") };
    assert!(empty.endpoints.is_empty());
}

#[test]
fn namespaces_default_and_cluster_scoped_objects_have_none() {
    let objects = parse_ok(
        "mixed.yml",
        "
apiVersion: v1
kind: Node
metadata: {name: n1, namespace: ignored}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: causeway}
spec: {controller: causeway.dev/ingress-controller}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
",
    );
    assert_eq!(keys(&objects), ["Node n1", "IngressClass causeway", "ConfigMap default/cm", "Namespace shop"]);
    assert_eq!(objects[0].metadata().namespace, None);
}

#[test]
fn json_object_stream_and_list() {
    let list = r#"{"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "b"}}
    ]}
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "c"}}"#;
    assert_eq!(keys(&parse_ok("l.json", list)), ["Namespace a", "Namespace b", "Namespace c"]);
    // A List works in YAML too.
    let yaml = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: d}}\n";
    assert_eq!(keys(&parse_ok("l.yaml", yaml)), ["Namespace d"]);
}

#[test]
fn a_yaml_syntax_error_names_the_file_and_document_and_the_rest_applies() {
    let text = "
apiVersion: v1
kind: Namespace
metadata: {name: a}
---
apiVersion: v1
kind: Namespace
metadata: {name: [unclosed
---
apiVersion: v1
kind: Namespace
metadata: {name: c}
";
    let (objects, diags) = parse_manifests("broken.yaml", text.as_bytes());
    assert_eq!(keys(&objects), ["Namespace a", "Namespace c"]);
    assert_eq!(diags.len(), 1, "{diags:#?}");
    let d = &diags[0];
    assert_eq!(
        (d.severity, d.object.kind.as_str(), d.object.name.as_str(), d.field.as_str()),
        (Severity::Error, "File", "broken.yaml", "[1]")
    );
    assert!(d.message.contains("document 1"), "{}", d.message);
    // The position is the file's (line 8), not the document's.
    assert!(d.message.contains("(line 8, column 18)"), "{}", d.message);
}

#[test]
fn a_json_syntax_error_names_the_file() {
    let (objects, diags) = parse_manifests("bad.json", br#"{"apiVersion": "v1", "kind": "Namespace", "#);
    assert!(objects.is_empty());
    assert_eq!(diags.len(), 1);
    assert_eq!((diags[0].object.name.as_str(), diags[0].field.as_str()), ("bad.json", "[0]"));
}

#[test]
fn bad_documents_each_give_one_diagnostic() {
    let text = "
apiVersion: apps/v1
kind: Deployment
metadata: {name: ignored}
---
apiVersion: v1
kind: Service
metadata: {generateName: web-}
---
- just
- a list
---
kind: Service
metadata: {name: no-version}
---
apiVersion: v1
kind: Service
metadata: {name: typed, namespace: shop}
spec: {ports: [{port: eighty}]}
---
apiVersion: extensions/v1beta1
kind: Ingress
metadata: {name: old}
---
apiVersion: v1
kind: Namespace
metadata: {name: good}
";
    let (objects, diags) = parse_manifests("bad.yaml", text.as_bytes());
    assert_eq!(keys(&objects), ["Namespace good"]);
    let got: Vec<String> = diags.iter().map(|d| format!("{:?} {} {}", d.severity, d.object, d.field)).collect();
    assert_eq!(
        got,
        [
            "Warning File bad.yaml [0]",
            "Error File bad.yaml [1]",
            "Error File bad.yaml [2]",
            "Error File bad.yaml [3]",
            "Error Service shop/typed spec.ports[0].port",
            "Error File bad.yaml [5].apiVersion",
        ]
    );
    assert!(diags[4].message.contains("bad.yaml document [4]"), "{}", diags[4].message);
    assert!(diags[4].message.contains("eighty"), "{}", diags[4].message);
}

#[test]
fn a_file_that_is_not_utf8_is_one_diagnostic() {
    let (objects, diags) = parse_manifests("bin.yaml", &[0xff, 0xfe, 0x00, 0x41]);
    assert!(objects.is_empty());
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].object.name, "bin.yaml");
}

#[test]
fn a_missing_path_type_is_reported_on_the_path() {
    let text = "
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: causeway}
spec: {controller: causeway.dev/ingress-controller}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  ingressClassName: causeway
  rules:
  - host: a.example.com
    http:
      paths:
      - path: /
        backend: {service: {name: web, port: {number: 80}}}
";
    let objects = parse_ok("ing.yaml", text);
    let mut index = Index::new();
    for o in objects {
        index.apply(o);
    }
    let table = route_table(&index, &TranslateConfig::default());
    assert!(table.virtual_hosts.is_empty());
    let fields: Vec<&str> = table.diagnostics.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(fields, ["spec.rules[0].http.paths[0].pathType"]);
}

#[test]
fn defaults_make_a_minimal_service_translate() {
    let text = "
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.244.1.1]}]
";
    let mut index = Index::new();
    for o in parse_ok("svc.yaml", text) {
        index.apply(o);
    }
    let (ServiceTable { ports }, diags) = service_table(&index);
    assert!(diags.is_empty(), "{diags:#?}");
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].endpoints.len(), 1);
    assert!(ports[0].endpoints[0].ready);
}

#[test]
fn ip_pools_parse_cluster_scoped_and_typos_are_errors() {
    let (objects, diags) = parse_manifests(
        "pools.yaml",
        b"
apiVersion: causeway.dev/v1alpha1
kind: IPPool
metadata: {name: kind, namespace: ignored}
spec:
  blocks:
    - cidr: 172.18.255.200/29
    - {start: 172.18.255.210, stop: 172.18.255.219}
  autoAssign: false
---
apiVersion: causeway.dev/v1alpha1
kind: IPPool
metadata: {name: typo}
spec:
  blocks: [{cidr: 10.0.0.0/24}]
  autoassign: false
---
apiVersion: causeway.dev/v1beta1
kind: IPPool
metadata: {name: wrong-version}
spec: {blocks: []}
",
    );
    assert_eq!(keys(&objects), ["IPPool kind"]);
    let KubeObject::IpPool(pool) = &objects[0] else { panic!("not an IPPool") };
    assert_eq!(pool.metadata.namespace, None);
    assert!(!pool.spec.auto_assign);
    assert_eq!(pool.spec.blocks[1].start.as_deref(), Some("172.18.255.210"));
    assert_eq!(diags.len(), 2, "{diags:#?}");
    assert!(diags.iter().all(|d| d.severity == Severity::Error), "{diags:#?}");
    assert_eq!(diags[0].object.to_string(), "IPPool typo");
    assert!(diags[0].message.contains("autoassign"), "{}", diags[0].message);
    assert_eq!(diags[1].field, "[2].apiVersion");
}
