//! `tls-edge`: the TLS edge tier. Terminates TLS for the hosts of its Ingresses with the
//! certificates in their Secrets, redirects plain HTTP, and forwards to the backends the edge
//! Ingresses name — normally the router tier's Service.

use std::sync::Arc;

use anyhow::{Context, anyhow};
use clap::Parser;
use k8s_sync::{ObjectKey, Tier, TierSettings};
use pingora_core::listeners::tls::TlsSettings;
use router::cli::{CommonArgs, init_logging};
use router::tier;
use tls_edge::{CertSet, CertStore, EdgePublisher, HandshakeObserver, ParsedCert};

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

    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let c = &cli.common;
    init_logging(c.log_format);

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
    let state = tier::TierState::new(Tier::TlsEdge);
    let metrics = state.metrics.clone();
    let certs = Arc::new(CertStore::new(
        CertSet::new(fallback_cert.clone()),
        &metrics,
    ));
    let publisher = Arc::new(EdgePublisher::new(
        state.route_publisher(),
        metrics.clone(),
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
    tier::spawn_source(c, settings, publisher)?;

    let mut server = tier::new_server(c, Tier::TlsEdge);

    let mut https = tier::proxy_settings(c, Tier::TlsEdge);
    https.scheme = "https";
    https.hsts = cli.hsts_max_age.map(|s| format!("max-age={s}"));
    let proxy = state.proxy(https);
    let mut tls_service = tier::proxy_service(&server, "tls-edge-https", proxy, false);
    for addr in &cli.https_listen {
        let mut tls = TlsSettings::with_callbacks(Box::new(HandshakeObserver {
            metrics: metrics.clone(),
            certs: certs.clone(),
        }))
        .context("TLS settings")?;
        tls.set_cert_resolver(certs.clone());
        tls.enable_h2();
        tls_service.add_tls_with_settings(addr, None, tls);
    }

    let mut plain = tier::proxy_settings(c, Tier::TlsEdge);
    plain.redirect_to_https_port = Some(cli.redirect_https_port);
    let proxy = state.proxy(plain);
    let mut plain_service = tier::proxy_service(&server, "tls-edge-http", proxy, true);
    for addr in &cli.http_listen {
        plain_service.add_tcp(addr);
    }
    server.add_service(tls_service);
    server.add_service(plain_service);
    tracing::info!(https = ?cli.https_listen, http = ?cli.http_listen, admin = %c.admin_listen,
        class = %cli.ingress_class, controller = %cli.controller_class, source = %tier::source_name(c), "tls-edge starting");
    tier::run(server, c, state);
    Ok(())
}
