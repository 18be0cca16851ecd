//! `tls-edge`: the TLS edge tier. Terminates TLS for the hosts of its Ingresses with the
//! certificates in their Secrets, redirects plain HTTP, and forwards to the backends the edge
//! Ingresses name — normally the router tier's Service.

#![forbid(unsafe_code)]

use std::sync::Arc;

use anyhow::{Context, anyhow};
use clap::Parser;
use k8s_sync::{ObjectKey, Tier, TierSettings};
use pingora_core::services::listening::Service;
use server::cli::{CommonArgs, init_logging};
use tls_edge::tls_server::{self, Resumption, TlsTerminator};
use tls_edge::{
    CertSet, CertStore, EdgePublisher, HandshakeObserver, HttpsRedirect, ParsedCert, TlsListener,
};

// The data path allocates small, short-lived buffers per request; mimalloc measured faster than
// the system allocator for this (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "tls-edge",
    version,
    about = "tandem TLS edge tier: TLS for branded domains from Secrets, forwarding to the router tier."
)]
struct Cli {
    /// Address to serve HTTPS (TLS 1.2/1.3, ALPN h2 and http/1.1) on; repeat for several.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8443")]
    https_listen: Vec<String>,

    /// Address to serve plain HTTP on: hosts with TLS are redirected (308) to HTTPS, except
    /// /.well-known/acme-challenge/; repeat for several.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    http_listen: Vec<String>,

    /// HTTPS port written into redirects (omitted from the URL when 443).
    #[arg(long, value_name = "PORT", default_value_t = 443)]
    redirect_https_port: u16,

    /// IngressClass this edge serves.
    #[arg(long, value_name = "NAME", default_value = Tier::TlsEdge.default_class())]
    ingress_class: String,

    /// Controller name (spec.controller) the IngressClass must carry for this edge to serve
    /// it; an IngressClass of our name naming another controller is not served.
    #[arg(long, value_name = "NAME", default_value = Tier::TlsEdge.default_controller())]
    controller_class: String,

    /// NAMESPACE/NAME of a kubernetes.io/tls Secret served when no host matches the SNI (or
    /// there is none); without it a self-signed certificate made at start-up is served.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    default_certificate: Option<String>,

    /// Add `Strict-Transport-Security: max-age=N` to HTTPS responses.
    #[arg(long, value_name = "SECONDS")]
    hsts_max_age: Option<u64>,

    /// Issue TLS session tickets (stateless resumption, TLS 1.2 and 1.3). Their keys are made
    /// at random in memory, per process, and rotated every 6 hours; replicas do not share them.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    tls_session_tickets: bool,

    /// Sessions kept in memory for stateful resumption (TLS 1.2 session IDs; TLS 1.3 when
    /// tickets are off); 0 keeps none.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    tls_session_cache_size: usize,

    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let c = &cli.common;
    init_logging(c.log_format);
    tls_server::install_default_provider();

    let default_secret = cli
        .default_certificate
        .as_deref()
        .map(|s| {
            s.split_once('/')
                .map(|(ns, name)| ObjectKey::new(ns, name))
                .ok_or_else(|| anyhow!("--default-certificate must be NAMESPACE/NAME, got {s:?}"))
        })
        .transpose()?;
    let fallback_cert = Arc::new(
        ParsedCert::self_signed().context("cannot make the self-signed default certificate")?,
    );
    let state = server::TierState::new(Tier::TlsEdge);
    let metrics = state.metrics.clone();
    let certs = Arc::new(CertStore::new(
        CertSet::new(fallback_cert.clone()),
        &metrics,
    ));
    metrics.register_collector(Box::new(
        tls_edge::CertificateExpiry::new(certs.clone(), Tier::TlsEdge)
            .context("certificate expiry metric")?,
    ));
    let publisher = Arc::new(EdgePublisher::new(
        state.route_publisher(),
        certs.clone(),
        fallback_cert,
        default_secret.clone(),
    ));
    let settings = TierSettings {
        tier: Tier::TlsEdge,
        class: cli.ingress_class.clone(),
        controller: cli.controller_class.clone(),
        watch_without_class: c.watch_ingress_without_class,
        default_certificate: default_secret,
    };
    server::spawn_source(c, settings, publisher)?;

    let mut pingora = server::new_server(c, Tier::TlsEdge);

    let mut https = server::proxy_settings(c, Tier::TlsEdge);
    https.scheme = "https";
    let hsts = cli
        .hsts_max_age
        .map(|s| http::HeaderValue::try_from(format!("max-age={s}")))
        .transpose()
        .context("--hsts-max-age")?;
    let proxy = state.proxy(https, Arc::new(TlsListener { hsts }));
    let resumption = Resumption {
        tickets: cli.tls_session_tickets,
        cache_size: cli.tls_session_cache_size,
    };
    // One configuration for every HTTPS listener: one ticket key set and one session cache.
    let tls_config = Arc::new(tls_server::server_config(certs.clone(), resumption)?);
    let acceptor = tls_server::acceptor(
        tls_config,
        Box::new(HandshakeObserver {
            metrics: metrics.clone(),
            certs: certs.clone(),
        }),
    )?;
    let mut tls_service = Service::new(
        "tls-edge-https".to_owned(),
        TlsTerminator::new(acceptor, server::proxy_app(&pingora, proxy)),
    );
    for addr in &cli.https_listen {
        tls_service.add_tcp(addr);
    }

    let plain = server::proxy_settings(c, Tier::TlsEdge);
    let redirect = HttpsRedirect {
        https_port: cli.redirect_https_port,
    };
    let proxy = state.proxy(plain, Arc::new(redirect));
    let mut plain_service = server::proxy_service(&pingora, "tls-edge-http", proxy, true);
    for addr in &cli.http_listen {
        plain_service.add_tcp(addr);
    }
    pingora.add_service(tls_service);
    pingora.add_service(plain_service);
    tracing::info!(https = ?cli.https_listen, http = ?cli.http_listen, admin = %c.admin_listen,
        tls_provider = tls_server::PROVIDER_NAME, tls_session_tickets = resumption.tickets,
        tls_session_cache_size = resumption.cache_size,
        class = %cli.ingress_class, controller = %cli.controller_class, source = %server::source_name(c), "tls-edge starting");
    server::run(pingora, c, state);
    Ok(())
}
