//! Ingress v1 semantics: one named table test per rule (YAML in, rendered table and diagnostics out).

mod common;

use causeway_model::{Diagnostic, HostPattern, ObjectRef, Severity};
use causeway_translate::{TranslateConfig, route_table};
use common::{CLASS, assert_text, index, render_diags, render_routes, service};

fn check(yaml: &str, routes: &str, diags: &str) {
    check_with(&TranslateConfig::default(), yaml, routes, diags);
}

#[track_caller]
fn check_with(config: &TranslateConfig, yaml: &str, routes: &str, diags: &str) {
    let table = route_table(&index(yaml), config);
    assert_text(&render_routes(&table), routes);
    assert_text(&render_diags(&table.diagnostics), diags);
}

fn ingress(name: &str, body: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}}}\nspec:\n  ingressClassName: causeway\n{body}"
    )
}

const CERT: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJmYWtlCi0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K";
const KEY: &str = "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCk1JSUVmYWtlCi0tLS0tRU5EIFBSSVZBVEUgS0VZLS0tLS0K";

fn tls_secret(name: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/tls\ndata: {{tls.crt: {CERT}, tls.key: {KEY}}}\n"
    )
}

#[test]
fn hosts_exact_wildcard_and_any_are_lowercased_vhosts() {
    let yaml = format!(
        "{CLASS}{}{}",
        service("web", &["10.244.1.5"]),
        ingress(
            "hosts",
            "  rules:
  - host: Foo.Example.COM
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
  - host: '*.example.com'
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
  - http: {paths: [{path: /any, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
"
        )
    );
    check(
        &yaml,
        "
        host *
          Prefix /any -> default/web:80 [10.244.1.5:8080] (default/hosts)
        host foo.example.com
          Prefix / -> default/web:80 [10.244.1.5:8080] (default/hosts)
        host *.example.com
          Prefix / -> default/web:80 [10.244.1.5:8080] (default/hosts)
        ",
        "",
    );
}

#[test]
fn invalid_hosts_are_diagnosed_and_their_rule_left_out() {
    let yaml = format!(
        "{CLASS}{}{}",
        service("web", &["10.244.1.5"]),
        ingress(
            "bad-hosts",
            "  rules:
  - host: 10.0.0.1
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
  - host: 'foo.*.com'
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
  - host: 'a_b.example.com:80'
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
  - host: ok.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
"
        )
    );
    check(
        &yaml,
        "
        host ok.example.com
          Prefix / -> default/web:80 [10.244.1.5:8080] (default/bad-hosts)
        ",
        "
        Error Ingress default/bad-hosts spec.rules[0].host
        Error Ingress default/bad-hosts spec.rules[1].host
        Error Ingress default/bad-hosts spec.rules[2].host
        ",
    );
}

#[test]
fn path_types_exact_prefix_and_implementation_specific() {
    let yaml = format!(
        "{CLASS}{}{}",
        service("web", &["10.244.1.5"]),
        ingress(
            "paths",
            "  rules:
  - host: a.example.com
    http:
      paths:
      - {path: /exact, pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /foo/, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /impl, pathType: ImplementationSpecific, backend: {service: {name: web, port: {number: 80}}}}
      - {pathType: ImplementationSpecific, backend: {service: {name: web, port: {number: 80}}}}
"
        )
    );
    check(
        &yaml,
        "
        host a.example.com
          Exact /exact -> default/web:80 [10.244.1.5:8080] (default/paths)
          Prefix / -> default/web:80 [10.244.1.5:8080] (default/paths)
          Prefix /foo -> default/web:80 [10.244.1.5:8080] (default/paths)
          Prefix /impl -> default/web:80 [10.244.1.5:8080] (default/paths)
        ",
        "",
    );
}

#[test]
fn malformed_paths_are_diagnosed_and_left_out() {
    let yaml = format!(
        "{CLASS}{}{}",
        service("web", &["10.244.1.5"]),
        ingress(
            "bad-paths",
            "  rules:
  - host: a.example.com
    http:
      paths:
      - {path: relative, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /r, pathType: Regex, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /missing, pathType: '', backend: {service: {name: web, port: {number: 80}}}}
      - {path: '/a/../b', pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /res, pathType: Prefix, backend: {resource: {apiGroup: k8s.example.com, kind: Bucket, name: b}}}
      - {path: /ok, pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}
"
        )
    );
    check(
        &yaml,
        "
        host a.example.com
          Exact /ok -> default/web:80 [10.244.1.5:8080] (default/bad-paths)
        ",
        "
        Error Ingress default/bad-paths spec.rules[0].http.paths[0].path
        Error Ingress default/bad-paths spec.rules[0].http.paths[1].pathType
        Error Ingress default/bad-paths spec.rules[0].http.paths[2].pathType
        Error Ingress default/bad-paths spec.rules[0].http.paths[3].path
        Error Ingress default/bad-paths spec.rules[0].http.paths[4].backend.service
        ",
    );
}

#[test]
fn ingresses_for_one_host_are_merged() {
    let yaml = format!(
        "{CLASS}{}{}{}{}",
        service("api", &["10.244.1.5"]),
        service("web", &["10.244.2.7"]),
        ingress(
            "api",
            "  rules:
  - host: shop.example.com
    http: {paths: [{path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}]}
"
        ),
        ingress(
            "web",
            "  rules:
  - host: shop.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}]}
"
        )
    );
    check(
        &yaml,
        "
        host shop.example.com
          Prefix / -> default/web:80 [10.244.2.7:8080] (default/web)
          Prefix /api -> default/api:80 [10.244.1.5:8080] (default/api)
        ",
        "",
    );
}

#[test]
fn conflicting_paths_oldest_ingress_wins_with_a_warning() {
    // `zz-old` sorts last by name but is the oldest by creationTimestamp; `a-new` and `b-new` share a timestamp,
    // so namespace/name decides between them.
    let rule = "  rules:
  - host: a.example.com
    http: {paths: [{path: /x/, pathType: Prefix, backend: {service: {name: SVC, port: {number: 80}}}}]}
";
    let with_ts = |name: &str, ts: &str, svc: &str| {
        ingress(name, &rule.replace("SVC", svc)).replace(
            &format!("metadata: {{name: {name}}}"),
            &format!("metadata: {{name: {name}, creationTimestamp: '{ts}'}}"),
        )
    };
    let yaml = format!(
        "{CLASS}{}{}{}{}{}",
        service("one", &["10.244.1.1"]),
        service("two", &["10.244.1.2"]),
        with_ts("b-new", "2026-02-01T00:00:00Z", "two"),
        with_ts("a-new", "2026-02-01T00:00:00Z", "two"),
        with_ts("zz-old", "2026-01-01T00:00:00Z", "one"),
    );
    let table = route_table(&index(&yaml), &TranslateConfig::default());
    assert_text(
        &render_routes(&table),
        "
        host a.example.com
          Prefix /x -> default/one:80 [10.244.1.1:8080] (default/zz-old)
        ",
    );
    assert_text(
        &render_diags(&table.diagnostics),
        "
        Warning Ingress default/a-new spec.rules[0].http.paths[0]
        Warning Ingress default/b-new spec.rules[0].http.paths[0]
        ",
    );
    assert!(table.diagnostics[0].message.contains("older Ingress default/zz-old"), "{}", table.diagnostics[0]);
}

#[test]
fn default_backend_serves_unmatched_paths_and_the_oldest_serves_unmatched_hosts() {
    let yaml = format!(
        "{CLASS}{}{}{}{}",
        service("fallback", &["10.244.9.9"]),
        service("web", &["10.244.2.7"]),
        ingress(
            "first",
            "  defaultBackend: {service: {name: fallback, port: {number: 80}}}
  rules:
  - host: a.example.com
    http: {paths: [{path: /app, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
  - host: b.example.com
"
        ),
        ingress(
            "second",
            "  defaultBackend: {service: {name: web, port: {number: 80}}}
  rules:
  - host: c.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: fallback, port: {number: 80}}}}]}
  - host: d.example.com
"
        )
    );
    check(
        &yaml,
        "
        host a.example.com
          Prefix / -> default/fallback:80 [10.244.9.9:8080] (default/first)
          Prefix /app -> default/web:80 [10.244.2.7:8080] (default/first)
        host b.example.com
          Prefix / -> default/fallback:80 [10.244.9.9:8080] (default/first)
        host c.example.com
          Prefix / -> default/fallback:80 [10.244.9.9:8080] (default/second)
        host d.example.com
          Prefix / -> default/web:80 [10.244.2.7:8080] (default/second)
        default Prefix / -> default/fallback:80 [10.244.9.9:8080] (default/first)
        ",
        "
        Warning Ingress default/second spec.defaultBackend
        ",
    );
}

#[test]
fn backends_resolve_port_by_number_and_by_name() {
    let yaml = format!(
        "{CLASS}{}{}",
        service("web", &["10.244.1.5", "10.244.1.6"]),
        ingress(
            "ports",
            "  rules:
  - host: a.example.com
    http:
      paths:
      - {path: /n, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /s, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
"
        )
    );
    check(
        &yaml,
        "
        host a.example.com
          Prefix /n -> default/web:80 [10.244.1.5:8080 10.244.1.6:8080] (default/ports)
          Prefix /s -> default/web:80 [10.244.1.5:8080 10.244.1.6:8080] (default/ports)
        ",
        "",
    );
}

#[test]
fn missing_service_port_or_endpoints_route_to_503_with_a_diagnostic() {
    let yaml = format!(
        "{CLASS}{}{}{}",
        service("web", &["10.244.1.5"]),
        service("empty", &[]),
        ingress(
            "broken",
            "  rules:
  - host: a.example.com
    http:
      paths:
      - {path: /nosvc, pathType: Prefix, backend: {service: {name: nope, port: {number: 80}}}}
      - {path: /noport, pathType: Prefix, backend: {service: {name: web, port: {number: 81}}}}
      - {path: /noname, pathType: Prefix, backend: {service: {name: web, port: {name: grpc}}}}
      - {path: /noeps, pathType: Prefix, backend: {service: {name: empty, port: {number: 80}}}}
"
        )
    );
    check(
        &yaml,
        "
        host a.example.com
          Prefix /noeps -> default/empty:80 [] (default/broken)
          Prefix /noname -> default/web:0 [] (default/broken)
          Prefix /noport -> default/web:81 [] (default/broken)
          Prefix /nosvc -> default/nope:80 [] (default/broken)
        ",
        "
        Error Ingress default/broken spec.rules[0].http.paths[0].backend.service.name
        Error Ingress default/broken spec.rules[0].http.paths[1].backend.service.port.number
        Error Ingress default/broken spec.rules[0].http.paths[2].backend.service.port.name
        Warning Ingress default/broken spec.rules[0].http.paths[3].backend.service
        ",
    );
}

#[test]
fn endpoints_merge_all_slices_and_fall_back_to_serving_terminating() {
    let yaml = format!(
        "{CLASS}---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec: {{clusterIP: 10.96.0.10, ports: [{{name: http, port: 80, protocol: TCP}}, {{name: admin, port: 9000, protocol: TCP}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-a, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}, {{name: admin, port: 9090, protocol: TCP}}]
endpoints:
- {{addresses: [10.244.1.1], conditions: {{ready: true}}}}
- {{addresses: [10.244.1.2], conditions: {{ready: false, serving: true, terminating: true}}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-b, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv6
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
- {{addresses: ['fd00::3']}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: draining, labels: {{kubernetes.io/service-name: draining}}}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
- {{addresses: [10.244.5.1], conditions: {{ready: false, serving: true, terminating: true}}}}
- {{addresses: [10.244.5.2], conditions: {{ready: false, serving: false, terminating: true}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: draining}}
spec: {{clusterIP: 10.96.0.11, ports: [{{name: http, port: 80, protocol: TCP}}]}}
{}",
        ingress(
            "eps",
            "  rules:
  - host: a.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /admin, pathType: Prefix, backend: {service: {name: web, port: {name: admin}}}}
      - {path: /drain, pathType: Prefix, backend: {service: {name: draining, port: {number: 80}}}}
"
        )
    );
    check(
        &yaml,
        "
        host a.example.com
          Prefix / -> default/web:80 [10.244.1.1:8080 [fd00::3]:8080] (default/eps)
          Prefix /admin -> default/web:9000 [10.244.1.1:9090] (default/eps)
          Prefix /drain -> default/draining:80 [10.244.5.1:8080] (default/eps)
        ",
        "",
    );
}

#[test]
fn ingress_class_selection() {
    let other_class = "
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec: {controller: k8s.io/ingress-nginx}
";
    let rule = |host: &str| {
        format!(
            "  rules:
  - host: {host}
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}
"
        )
    };
    let unclassed = |name: &str, host: &str| ingress(name, &rule(host)).replace("  ingressClassName: causeway\n", "");
    let yaml = format!(
        "{CLASS}{other_class}{}{}{}{}{}{}",
        service("web", &["10.244.1.5"]),
        ingress("ours", &rule("ours.example.com")),
        ingress("theirs", &rule("theirs.example.com")).replace("ingressClassName: causeway", "ingressClassName: nginx"),
        unclassed("no-class", "none.example.com"),
        unclassed("legacy-ours", "legacy.example.com").replace(
            "metadata: {name: legacy-ours}",
            "metadata: {name: legacy-ours, annotations: {kubernetes.io/ingress.class: causeway}}"
        ),
        unclassed("legacy-theirs", "legacy-theirs.example.com").replace(
            "metadata: {name: legacy-theirs}",
            "metadata: {name: legacy-theirs, annotations: {kubernetes.io/ingress.class: nginx}}"
        ),
    );
    // Our class is not the default: the class-less Ingress is not ours.
    check(
        &yaml,
        "
        host legacy.example.com
          Prefix / -> default/web:80 [10.244.1.5:8080] (default/legacy-ours)
        host ours.example.com
          Prefix / -> default/web:80 [10.244.1.5:8080] (default/ours)
        ",
        "Warning Ingress default/no-class spec.ingressClassName",
    );
    // Another controller's class is the default: the class-less Ingress is theirs, silently.
    let theirs_default = yaml.replace(
        "metadata: {name: nginx}",
        "metadata: {name: nginx, annotations: {ingressclass.kubernetes.io/is-default-class: 'true'}}",
    );
    check(
        &theirs_default,
        "
        host legacy.example.com
          Prefix / -> default/web:80 [10.244.1.5:8080] (default/legacy-ours)
        host ours.example.com
          Prefix / -> default/web:80 [10.244.1.5:8080] (default/ours)
        ",
        "",
    );
    // Marked as the default class: the class-less Ingress becomes ours.
    let default_class = yaml.replace(
        "metadata: {name: causeway}",
        "metadata: {name: causeway, annotations: {ingressclass.kubernetes.io/is-default-class: 'true'}}",
    );
    check(
        &default_class,
        "
        host legacy.example.com
          Prefix / -> default/web:80 [10.244.1.5:8080] (default/legacy-ours)
        host none.example.com
          Prefix / -> default/web:80 [10.244.1.5:8080] (default/no-class)
        host ours.example.com
          Prefix / -> default/web:80 [10.244.1.5:8080] (default/ours)
        ",
        "",
    );
    // Our class name but another controller: not ours, with a warning; a missing IngressClass is an error.
    let wrong_controller = yaml.replace("controller: causeway.dev/ingress-controller", "controller: example.com/other");
    check(
        &wrong_controller,
        "
        host legacy.example.com
          Prefix / -> default/web:80 [10.244.1.5:8080] (default/legacy-ours)
        ",
        "Warning Ingress default/no-class spec.ingressClassName\nWarning Ingress default/ours spec.ingressClassName",
    );
    let no_class = yaml.replace(CLASS, "");
    check(
        &no_class,
        "
        host legacy.example.com
          Prefix / -> default/web:80 [10.244.1.5:8080] (default/legacy-ours)
        ",
        "Warning Ingress default/no-class spec.ingressClassName\nError Ingress default/ours spec.ingressClassName",
    );
    // Flags change the class we serve.
    let config = TranslateConfig {
        ingress_class: "nginx".into(),
        controller_name: "k8s.io/ingress-nginx".into(),
        ..TranslateConfig::default()
    };
    check_with(
        &config,
        &yaml,
        "
        host legacy-theirs.example.com
          Prefix / -> default/web:80 [10.244.1.5:8080] (default/legacy-theirs)
        host theirs.example.com
          Prefix / -> default/web:80 [10.244.1.5:8080] (default/theirs)
        ",
        "Warning Ingress default/no-class spec.ingressClassName",
    );
}

#[test]
fn tls_hosts_get_certificates_and_redirects() {
    let yaml = format!(
        "{CLASS}{}{}{}{}",
        service("web", &["10.244.1.5"]),
        tls_secret("shop-tls"),
        ingress(
            "shop",
            "  tls:
  - hosts: [shop.example.com, '*.apps.example.com']
    secretName: shop-tls
  rules:
  - host: shop.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
  - host: x.apps.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
  - host: plain.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
"
        ),
        ingress(
            "no-redirect",
            "  tls:
  - secretName: shop-tls
  rules:
  - host: opt-out.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
"
        )
        .replace(
            "metadata: {name: no-redirect}",
            "metadata: {name: no-redirect, annotations: {causeway.dev/ssl-redirect: 'false'}}"
        ),
    );
    check(
        &yaml,
        "
        host opt-out.example.com
          Prefix / -> default/web:80 [10.244.1.5:8080] (default/no-redirect)
        host plain.example.com
          Prefix / -> default/web:80 [10.244.1.5:8080] (default/shop)
        host shop.example.com
          Prefix / -> default/web:80 [10.244.1.5:8080] (default/shop) redirect
        host x.apps.example.com
          Prefix / -> default/web:80 [10.244.1.5:8080] (default/shop) redirect
        cert default/shop-tls: opt-out.example.com shop.example.com *.apps.example.com
        ",
        "",
    );
    let table = route_table(&index(&yaml), &TranslateConfig::default());
    assert!(table.certificates[0].key_pem.contains("BEGIN PRIVATE KEY"));
    assert!(table.certificates[0].cert_pem.contains("BEGIN CERTIFICATE"));
}

#[test]
fn broken_tls_secrets_fall_back_to_the_default_certificate() {
    let rule = |host: &str| {
        format!(
            "  - host: {host}\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}\n"
        )
    };
    let yaml = format!(
        "{CLASS}{}{}
---
apiVersion: v1
kind: Secret
metadata: {{name: no-crt}}
type: kubernetes.io/tls
data: {{tls.key: {KEY}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: opaque}}
type: Opaque
data: {{tls.crt: {CERT}, tls.key: {KEY}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: garbage}}
type: kubernetes.io/tls
data: {{tls.crt: bm90IGEgY2VydGlmaWNhdGU=, tls.key: {KEY}}}
{}",
        service("web", &["10.244.1.5"]),
        tls_secret("default-cert").replace("namespace: default", ""),
        ingress(
            "tls",
            &format!(
                "  tls:
  - {{hosts: [a.example.com], secretName: no-crt}}
  - {{hosts: [b.example.com], secretName: opaque}}
  - {{hosts: [c.example.com], secretName: garbage}}
  - {{hosts: [d.example.com], secretName: missing}}
  - {{hosts: ['bad host'], secretName: default-cert}}
  rules:
{}{}{}{}",
                rule("a.example.com"),
                rule("b.example.com"),
                rule("c.example.com"),
                rule("d.example.com")
            )
        )
    );
    let config = TranslateConfig {
        default_tls_secret: Some(("default".into(), "default-cert".into())),
        ..TranslateConfig::default()
    };
    check_with(
        &config,
        &yaml,
        "
        host a.example.com
          Prefix / -> default/web:80 [10.244.1.5:8080] (default/tls) redirect
        host b.example.com
          Prefix / -> default/web:80 [10.244.1.5:8080] (default/tls) redirect
        host c.example.com
          Prefix / -> default/web:80 [10.244.1.5:8080] (default/tls) redirect
        host d.example.com
          Prefix / -> default/web:80 [10.244.1.5:8080] (default/tls) redirect
        default-cert default/default-cert
        ",
        r#"
        Error Secret default/no-crt data["tls.crt"]
        Error Secret default/opaque type
        Error Secret default/garbage data["tls.crt"]
        Error Ingress default/tls spec.tls[3].secretName
        Error Ingress default/tls spec.tls[4].hosts[0]
        "#,
    );
    // A missing --default-tls-secret is an error and leaves the default certificate to the proxy.
    let config =
        TranslateConfig { default_tls_secret: Some(("default".into(), "nope".into())), ..TranslateConfig::default() };
    let table = route_table(&index(&yaml), &config);
    assert!(table.default_certificate.is_none());
    assert!(table.diagnostics.iter().any(|d| d.object == ObjectRef::new("Secret", "default", "nope")));
}

#[test]
fn tls_host_conflicts_oldest_ingress_wins() {
    let yaml = format!(
        "{CLASS}{}{}{}{}{}",
        service("web", &["10.244.1.5"]),
        tls_secret("first"),
        tls_secret("second"),
        ingress(
            "a",
            "  tls: [{hosts: [x.example.com], secretName: first}]
  rules: [{host: x.example.com, http: {paths: [{path: /a, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
"
        ),
        ingress(
            "b",
            "  tls: [{hosts: [x.example.com], secretName: second}]
  rules: [{host: x.example.com, http: {paths: [{path: /b, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
"
        )
    );
    check(
        &yaml,
        "
        host x.example.com
          Prefix /a -> default/web:80 [10.244.1.5:8080] (default/a) redirect
          Prefix /b -> default/web:80 [10.244.1.5:8080] (default/b) redirect
        cert default/first: x.example.com
        ",
        "Warning Ingress default/b spec.tls[0].hosts[0]",
    );
}

#[test]
fn l4_listeners_for_proxy_class_load_balancers() {
    let yaml = "
apiVersion: v1
kind: Service
metadata: {name: dns}
spec:
  type: LoadBalancer
  loadBalancerClass: causeway.dev/proxy
  clusterIP: 10.96.0.53
  ports:
  - {name: dns-udp, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
  - {name: sctp, port: 99, protocol: SCTP}
status:
  loadBalancer: {ingress: [{ip: 172.18.255.200}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: dns-1, labels: {kubernetes.io/service-name: dns}}
addressType: IPv4
ports: [{name: dns-udp, port: 5353, protocol: UDP}, {name: dns-tcp, port: 5354, protocol: TCP}]
endpoints: [{addresses: [10.244.1.9], conditions: {ready: true}}]
---
apiVersion: v1
kind: Service
metadata: {name: pending}
spec:
  type: LoadBalancer
  loadBalancerClass: causeway.dev/proxy
  clusterIP: 10.96.0.54
  ports: [{port: 80, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: other-lb}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.55
  ports: [{port: 80, protocol: TCP}]
status:
  loadBalancer: {ingress: [{ip: 172.18.255.201}]}
";
    check(
        yaml,
        "
        l4 Tcp 172.18.255.200:53 -> default/dns:53 [10.244.1.9:5354]
        l4 Udp 172.18.255.200:53 -> default/dns:53 [10.244.1.9:5353]
        ",
        "
        Error Service default/dns spec.ports[2].protocol
        Warning Service default/pending status.loadBalancer.ingress
        ",
    );
}

#[test]
fn source_diagnostics_come_first() {
    let mut idx = index(CLASS);
    let d = Diagnostic::error(ObjectRef::new("File", "", "broken.yaml"), "[1]", "invalid YAML");
    idx.set_source_diagnostics("manifests:/m", vec![d.clone()]);
    let table = route_table(&idx, &TranslateConfig::default());
    assert_eq!(table.diagnostics, vec![d]);
    assert_eq!(table.diagnostics[0].severity, Severity::Error);
}

#[test]
fn table_serialises_to_json_without_keys() {
    let yaml = format!(
        "{CLASS}{}{}{}",
        service("web", &["10.244.1.5"]),
        tls_secret("t"),
        ingress(
            "j",
            "  tls: [{hosts: [j.example.com], secretName: t}]
  rules: [{host: j.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
"
        )
    );
    let table = route_table(&index(&yaml), &TranslateConfig::default());
    let json = serde_json::to_value(&table).expect("serialises");
    assert_eq!(json["virtual_hosts"][0]["host"], "j.example.com");
    assert_eq!(json["virtual_hosts"][0]["routes"][0]["ssl_redirect"], true);
    assert!(!json.to_string().contains("PRIVATE KEY"));
    assert_eq!(table.virtual_hosts[0].host, "j.example.com".parse::<HostPattern>().expect("host"));
}

#[test]
fn owned_ingresses_are_those_of_our_class_even_without_valid_rules() {
    let bad_rule = "  rules:
  - host: bad_host!
    http: {paths: [{path: nope, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
";
    let good_rule = "  rules:
  - host: ok.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
";
    let yaml = format!(
        "{CLASS}{}{}{}{}",
        service("web", &["10.244.1.5"]),
        ingress("broken", bad_rule),
        ingress("fine", good_rule),
        ingress("theirs", good_rule).replace("ingressClassName: causeway", "ingressClassName: nginx"),
    );
    let owned = causeway_translate::owned_ingresses(&index(&yaml), &TranslateConfig::default());
    let names: Vec<String> = owned.iter().map(|k| format!("{}/{}", k.namespace, k.name)).collect();
    assert_eq!(names, ["default/broken", "default/fine"]);
}
