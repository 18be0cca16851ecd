//! `router`: the routing tier. Routes by host and path from Ingress objects of its class, with
//! a host-less catch-all as the legacy fallback.

#![forbid(unsafe_code)]

use std::sync::Arc;

use clap::Parser;
use k8s_sync::{Tier, TierSettings};
use server::cli::{CommonArgs, init_logging};

// The data path allocates small, short-lived buffers per request; mimalloc measured faster than
// the system allocator for this (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "router",
    version,
    about = "tandem routing tier: host/path routing from Ingress objects, with a legacy fallback."
)]
struct Cli {
    /// Address to serve HTTP/1.1 and h2c (prior knowledge) on; repeat for several.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    http_listen: Vec<String>,

    /// IngressClass this router serves (spec.ingressClassName or the kubernetes.io/ingress.class
    /// annotation).
    #[arg(long, value_name = "NAME", default_value = Tier::Router.default_class())]
    ingress_class: String,

    /// Controller name (spec.controller) the IngressClass must carry for this router to serve
    /// it; an IngressClass of our name naming another controller is not served.
    #[arg(long, value_name = "NAME", default_value = Tier::Router.default_controller())]
    controller_class: String,

    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let c = &cli.common;
    init_logging(c.log_format);

    let state = server::TierState::new(Tier::Router);
    let publisher = Arc::new(state.route_publisher());
    let settings = TierSettings {
        tier: Tier::Router,
        class: cli.ingress_class.clone(),
        controller: cli.controller_class.clone(),
        watch_without_class: c.watch_ingress_without_class,
        default_certificate: None,
    };
    server::spawn_source(c, settings, publisher)?;

    let mut pingora = server::new_server(c, Tier::Router);
    let proxy = state.proxy(
        server::proxy_settings(c, Tier::Router),
        Arc::new(proxy::NoPolicy),
    );
    let mut service = server::proxy_service(&pingora, "router", proxy, true);
    for addr in &cli.http_listen {
        service.add_tcp(addr);
    }
    pingora.add_service(service);
    tracing::info!(listen = ?cli.http_listen, admin = %c.admin_listen, class = %cli.ingress_class, controller = %cli.controller_class,
        source = %server::source_name(c), "router starting");
    server::run(pingora, c, state);
    Ok(())
}
