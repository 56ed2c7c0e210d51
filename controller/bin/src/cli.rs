//! Command-line flags. Names and defaults are a contract (design §4).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "causeway",
    version,
    about = "Kubernetes edge controller and proxy: Ingress, TLS/SNI, L4, never reloads."
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `run`, which is the default subcommand.
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Watch the source and serve (the default).
    Run(RunArgs),
    /// Print the compiled route table and its diagnostics as JSON, then exit.
    Routes(SourceArgs),
    /// Validate a manifests directory; exit 1 when any object has an error diagnostic.
    Check(SourceArgs),
    /// Serve the bundled demo manifests with demo backends on 127.0.0.1 (no cluster needed).
    Demo(DemoArgs),
}

/// Where objects come from and how they are translated.
#[derive(Args, Debug, Clone)]
pub struct SourceArgs {
    /// A directory of manifests (*.yaml, *.yml, *.json) to serve instead of a cluster.
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// Kubeconfig file [default: in-cluster, then $KUBECONFIG].
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The IngressClass we serve.
    #[arg(long, default_value = "causeway")]
    pub ingress_class: String,
    /// The `spec.controller` our IngressClass must carry.
    #[arg(long, default_value = "causeway.dev/ingress-controller")]
    pub controller_name: String,
    /// A `kubernetes.io/tls` Secret (`namespace/name`) served for handshakes with no or unknown SNI
    /// [default: a self-signed certificate generated at start].
    #[arg(long, value_name = "NS/NAME")]
    pub default_tls_secret: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Plain-HTTP listener.
    #[arg(long, default_value = "0.0.0.0:80")]
    pub http_addr: SocketAddr,
    /// TLS listener.
    #[arg(long, default_value = "0.0.0.0:443")]
    pub https_addr: SocketAddr,
    /// Admin listener: /metrics, /healthz, /readyz, /debug/routes.
    #[arg(long, default_value = "127.0.0.1:10254")]
    pub admin_addr: SocketAddr,
    /// Address written to Ingress status.
    #[arg(long, value_name = "IP")]
    pub publish_address: Option<IpAddr>,
    /// Service (`namespace/name`) whose addresses are written to Ingress status.
    #[arg(long, value_name = "NS/NAME")]
    pub publish_service: Option<String>,
    /// Namespace of the leader-election Lease [default: $POD_NAMESPACE, else causeway-system].
    #[arg(long, env = "POD_NAMESPACE", default_value = "causeway-system")]
    pub lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "causeway")]
    pub lease_name: String,
    /// This replica's identity in the Lease [default: $POD_NAME, else the host name and process id].
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// The node this proxy runs on (with hostNetwork). With a cluster source, renews the heartbeat Lease
    /// `causeway-proxy-<node>` in the lease namespace; the node agents then announce the addresses of
    /// `loadBalancerClass: causeway.dev/proxy` Services only from nodes with a live proxy.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Proxy worker threads, each a single-threaded runtime accepting on the shared listeners (the nginx worker
    /// model) [default: one work-stealing runtime with a thread per CPU].
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// TCP connect timeout to endpoints (a failed or timed-out connect tries another endpoint).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub upstream_connect_timeout: Duration,
    /// Time an endpoint may take to send response headers (504 after it).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub upstream_response_timeout: Duration,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Largest request body accepted (413 beyond), in bytes [default: unlimited].
    #[arg(long)]
    pub max_request_body_bytes: Option<u64>,
    /// Port put in https redirect Locations when the TLS listener is not on 443 [default: none].
    #[arg(long)]
    pub redirect_https_port: Option<u16>,
}

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Parses `250ms`, `5s`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let value: f64 = number.parse().map_err(|_| format!("{s:?} is not a duration such as 500ms, 5s or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("{s:?} is not a valid duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn defaults_follow_the_design_contract() {
        let cli = Cli::parse_from(["causeway"]);
        assert!(cli.command.is_none());
        assert_eq!(cli.run.http_addr, "0.0.0.0:80".parse().unwrap());
        assert_eq!(cli.run.https_addr, "0.0.0.0:443".parse().unwrap());
        assert_eq!(cli.run.admin_addr, "127.0.0.1:10254".parse().unwrap());
        assert_eq!(cli.run.source.ingress_class, "causeway");
        assert_eq!(cli.run.source.controller_name, "causeway.dev/ingress-controller");
    }
}
