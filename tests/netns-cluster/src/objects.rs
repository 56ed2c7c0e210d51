//! The Kubernetes objects the harness writes, built as JSON values in the shape the API server would return them
//! (defaults filled in: protocol, targetPort, clusterIPs, ipFamilies, endpoint conditions).

use std::net::Ipv4Addr;

use serde_json::{Value, json};

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// The Kubernetes spelling.
    pub fn as_k8s(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }
}

/// One Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvcPort {
    /// Port name (also the EndpointSlice port name).
    pub name: String,
    /// Protocol.
    pub proto: Proto,
    /// The Service port.
    pub port: u16,
    /// The pod port.
    pub target_port: u16,
    /// The NodePort, for `NodePort` Services.
    pub node_port: Option<u16>,
}

impl SvcPort {
    /// A TCP port named `name`.
    pub fn tcp(name: &str, port: u16, target_port: u16) -> Self {
        Self { name: name.into(), proto: Proto::Tcp, port, target_port, node_port: None }
    }

    /// A UDP port named `name`.
    pub fn udp(name: &str, port: u16, target_port: u16) -> Self {
        Self { name: name.into(), proto: Proto::Udp, port, target_port, node_port: None }
    }

    /// With a NodePort.
    pub fn node_port(mut self, p: u16) -> Self {
        self.node_port = Some(p);
        self
    }
}

/// A Service as the checks need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Svc {
    /// Name (namespace `default`).
    pub name: String,
    /// The ClusterIP (we play the API server's Service IP allocator: the address comes from 10.96.0.0/16).
    pub cluster_ip: Ipv4Addr,
    /// Ports.
    pub ports: Vec<SvcPort>,
    /// `sessionAffinity: ClientIP`.
    pub affinity: bool,
    /// `externalTrafficPolicy: Local` (NodePort Services).
    pub local: bool,
    /// `externalIPs`.
    pub external_ips: Vec<Ipv4Addr>,
    /// `type: LoadBalancer`, with this `loadBalancerClass` and these `status.loadBalancer.ingress` IPs (we play the
    /// load-balancer controller that assigned them).
    pub load_balancer: Option<LoadBalancer>,
}

/// A LoadBalancer Service's class and assigned addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancer {
    /// `spec.loadBalancerClass`.
    pub class: Option<String>,
    /// `status.loadBalancer.ingress[].ip`.
    pub ips: Vec<Ipv4Addr>,
}

impl Svc {
    /// A ClusterIP Service.
    pub fn new(name: &str, cluster_ip: Ipv4Addr, ports: Vec<SvcPort>) -> Self {
        Self {
            name: name.into(),
            cluster_ip,
            ports,
            affinity: false,
            local: false,
            external_ips: Vec::new(),
            load_balancer: None,
        }
    }

    /// The Service object.
    pub fn to_object(&self) -> Value {
        let node_port = self.ports.iter().any(|p| p.node_port.is_some());
        let ports: Vec<Value> = self
            .ports
            .iter()
            .map(|p| {
                let mut v =
                    json!({"name": p.name, "protocol": p.proto.as_k8s(), "port": p.port, "targetPort": p.target_port});
                if let Some(np) = p.node_port {
                    v["nodePort"] = json!(np);
                }
                v
            })
            .collect();
        let mut spec = json!({
            "type": if self.load_balancer.is_some() { "LoadBalancer" } else if node_port { "NodePort" } else { "ClusterIP" },
            "clusterIP": self.cluster_ip.to_string(),
            "clusterIPs": [self.cluster_ip.to_string()],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "ports": ports,
            "sessionAffinity": if self.affinity { "ClientIP" } else { "None" },
            "internalTrafficPolicy": "Cluster",
        });
        if self.affinity {
            spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 10800}});
        }
        let mut status = json!({});
        if let Some(lb) = &self.load_balancer {
            if let Some(class) = &lb.class {
                spec["loadBalancerClass"] = json!(class);
            }
            spec["allocateLoadBalancerNodePorts"] = json!(node_port);
            // No addresses: Causeway's allocator assigns them (in a cluster the leader writes the status), so the
            // harness writes no status that would clobber it.
            if !lb.ips.is_empty() {
                let ingress: Vec<Value> =
                    lb.ips.iter().map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"})).collect();
                status = json!({"loadBalancer": {"ingress": ingress}});
            }
        }
        if node_port || self.load_balancer.is_some() {
            spec["externalTrafficPolicy"] = json!(if self.local { "Local" } else { "Cluster" });
        }
        if !self.external_ips.is_empty() {
            spec["externalIPs"] = json!(self.external_ips.iter().map(ToString::to_string).collect::<Vec<_>>());
        }
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.name, "namespace": "default", "uid": format!("uid-svc-{}", self.name)},
            "spec": spec,
            "status": status,
        })
    }

    /// The EndpointSlice `{name}-1` listing `endpoints` for every port.
    pub fn slice(&self, endpoints: &[Endpoint]) -> Value {
        let ports: Vec<Value> = self
            .ports
            .iter()
            .map(|p| json!({"name": p.name, "protocol": p.proto.as_k8s(), "port": p.target_port}))
            .collect();
        let endpoints: Vec<Value> = endpoints
            .iter()
            .map(|e| {
                json!({
                    "addresses": [e.ip.to_string()],
                    "conditions": {"ready": e.ready, "serving": e.ready, "terminating": !e.ready},
                    "nodeName": e.node,
                    "targetRef": {"kind": "Pod", "namespace": "default", "name": e.pod},
                })
            })
            .collect();
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{}-1", self.name),
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": self.name, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
            },
            "addressType": "IPv4",
            "ports": ports,
            "endpoints": endpoints,
        })
    }
}

/// One endpoint of a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Pod IP.
    pub ip: Ipv4Addr,
    /// Node name.
    pub node: String,
    /// Pod name.
    pub pod: String,
    /// Ready (and serving); `false` means terminating.
    pub ready: bool,
}

/// A Node with its podCIDR and InternalIP.
pub fn node(name: &str, pod_cidr: &str, internal_ip: Ipv4Addr) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
        "status": {
            "addresses": [{"type": "InternalIP", "address": internal_ip.to_string()}, {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    })
}

/// A Namespace.
pub fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

/// Our IngressClass, marked default.
pub fn ingress_class() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": "causeway", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": "causeway.dev/ingress-controller"},
    })
}

/// One Ingress path: `host` + `path` prefix → `service`:`port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressPath {
    /// Host.
    pub host: String,
    /// Path prefix.
    pub path: String,
    /// Backend Service.
    pub service: String,
    /// Backend Service port.
    pub port: u16,
}

/// An Ingress of class `causeway` with TLS for `tls_hosts` (one Secret each) and HTTP not redirected.
pub fn ingress(name: &str, paths: &[IngressPath], tls: &[(String, String)]) -> Value {
    let mut hosts: Vec<&str> = paths.iter().map(|p| p.host.as_str()).collect();
    hosts.dedup();
    let rules: Vec<Value> = hosts
        .iter()
        .map(|h| {
            let ps: Vec<Value> = paths
                .iter()
                .filter(|p| p.host == *h)
                .map(|p| {
                    json!({"path": p.path, "pathType": "Prefix", "backend": {"service": {"name": p.service, "port": {"number": p.port}}}})
                })
                .collect();
            json!({"host": h, "http": {"paths": ps}})
        })
        .collect();
    let tls: Vec<Value> = tls.iter().map(|(host, secret)| json!({"hosts": [host], "secretName": secret})).collect();
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default", "annotations": {"causeway.dev/ssl-redirect": "false"}},
        "spec": {"ingressClassName": "causeway", "tls": tls, "rules": rules},
    })
}

/// A `kubernetes.io/tls` Secret.
pub fn tls_secret(name: &str, cert_pem: &str, key_pem: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": crate::yaml::base64(cert_pem.as_bytes()), "tls.key": crate::yaml::base64(key_pem.as_bytes())},
    })
}
