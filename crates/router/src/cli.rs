//! Flags and process set-up shared by the tier binaries.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::forwarded::TrustedProxies;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// Human-readable lines.
    Text,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with pooled keep-alive connections.
    Http1,
    /// HTTP/2 with prior knowledge over plain TCP, multiplexed (WebSocket upgrades still use
    /// HTTP/1.1).
    H2c,
}

fn duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// Flags every tier has.
#[derive(Args, Clone, Debug)]
pub struct CommonArgs {
    /// Directory of Kubernetes manifests (multi-document YAML/JSON) to serve from, re-read on
    /// change. Without it the Kubernetes API is watched (in-cluster config, KUBECONFIG or
    /// --kubeconfig).
    #[arg(long, value_name = "DIR", env = "TANDEM_MANIFESTS")]
    pub manifests: Option<PathBuf>,

    /// Kubeconfig file for the API source (default: in-cluster config, then KUBECONFIG).
    #[arg(long, value_name = "PATH", conflicts_with = "manifests")]
    pub kubeconfig: Option<PathBuf>,

    /// Watch namespaced objects in this namespace only (default: all namespaces).
    #[arg(long, value_name = "NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// NAMESPACE/NAME of the Service fronting this tier: its spec.externalIPs (else its
    /// status.loadBalancer.ingress) become the Ingresses' status addresses.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub publish_service: Option<String>,

    /// Comma-separated addresses (IPs or hostnames) written into Ingress status instead of a
    /// publish Service's.
    #[arg(long, value_name = "ADDRS", conflicts_with = "publish_service")]
    pub publish_status_address: Option<String>,

    /// Name of the coordination.k8s.io/v1 Lease electing the replica that writes status
    /// (default: tandem-<tier>-<ingress class>).
    #[arg(long, value_name = "NAME")]
    pub election_id: Option<String>,

    /// Namespace of the election Lease (default: $POD_NAMESPACE, else "default").
    #[arg(long, value_name = "NAMESPACE", env = "POD_NAMESPACE")]
    pub election_namespace: Option<String>,

    /// This replica's identity in the election (default: $POD_NAME, else hostname-pid).
    #[arg(long, value_name = "NAME", env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// How long a Lease holds without renewal before another replica may take it.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = duration)]
    pub lease_duration: Duration,

    /// How often the Lease is renewed (and taken when free).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = duration)]
    pub lease_renew_interval: Duration,

    /// Address of the admin listener: /healthz, /readyz and /metrics.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:10254")]
    pub admin_listen: String,

    /// Serve Ingresses with no class too, even if our IngressClass is not the cluster default
    /// (annotation ingressclass.kubernetes.io/is-default-class: "true").
    #[arg(long)]
    pub watch_ingress_without_class: bool,

    /// Comma-separated CIDRs (or addresses) whose X-Forwarded-*/Forwarded headers are trusted,
    /// normally the edge tier's pod network. From anyone else they are replaced.
    #[arg(long, value_name = "CIDRS", default_value = "")]
    pub trusted_proxies: TrustedProxies,

    /// Timeout for connecting to a backend endpoint; on expiry another endpoint is tried.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = duration)]
    pub connect_timeout: Duration,

    /// Timeout for each read from a backend (a response that stalls this long fails with 504).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    pub upstream_read_timeout: Duration,

    /// Timeout for each write to a backend.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    pub upstream_write_timeout: Duration,

    /// How long an idle keep-alive connection to a backend stays in the pool.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    pub upstream_keepalive_timeout: Duration,

    /// After SIGTERM, /readyz fails at once but listeners keep accepting this long, so load
    /// balancers and kube-proxy stop sending before connections are refused.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = duration)]
    pub shutdown_delay: Duration,

    /// After the shutdown delay, how long in-flight requests get to finish.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration)]
    pub shutdown_grace: Duration,

    /// Do not write access-log lines (events are still logged).
    #[arg(long)]
    pub no_access_log: bool,

    /// Do not count per-request metrics (config, endpoint and TLS metrics stay).
    #[arg(long)]
    pub no_request_metrics: bool,

    /// Protocol spoken to backends (default: http1 on the router; h2c on the edge, whose backend
    /// is normally the router — measured faster, see BENCHMARKS.md; set http1 when an edge
    /// Ingress names a backend that does not speak h2c).
    #[arg(long, value_enum)]
    pub upstream_protocol: Option<UpstreamProtocol>,

    /// Longest request line (method, target, version) in bytes; longer → 414.
    #[arg(long, value_name = "BYTES", default_value_t = 8192)]
    pub max_request_line: usize,

    /// Longest single request header field (name and value) in bytes; longer → 431.
    #[arg(long, value_name = "BYTES", default_value_t = 8192)]
    pub max_header_size: usize,

    /// Largest total size of the request header fields in bytes; larger → 431.
    #[arg(long, value_name = "BYTES", default_value_t = 32768)]
    pub max_headers_size: usize,

    /// Most request header fields; more → 431.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_header_count: usize,

    /// Worker threads of the data path (default: number of CPUs).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Log format.
    #[arg(long, value_enum, default_value = "json")]
    pub log_format: LogFormat,
}

/// Installs the tracing subscriber (RUST_LOG filters; default `info`).
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
    }
}
