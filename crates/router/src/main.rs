//! `router`: the routing tier. Routes by host and path from Ingress objects of its class, with
//! a host-less catch-all as the legacy fallback.

use std::sync::Arc;

use clap::Parser;
use k8s_sync::{Tier, TierSettings};
use router::cli::{CommonArgs, init_logging};
use router::tier;

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

    let state = tier::TierState::new(Tier::Router);
    let publisher = Arc::new(state.route_publisher());
    let settings = TierSettings {
        tier: Tier::Router,
        class: cli.ingress_class.clone(),
        controller: cli.controller_class.clone(),
        watch_without_class: c.watch_ingress_without_class,
        default_certificate: None,
    };
    tier::spawn_source(c, settings, publisher)?;

    let server = tier::new_server(c, Tier::Router);
    let proxy = state.proxy(tier::proxy_settings(c, Tier::Router));
    let mut service = tier::proxy_service(&server, "router", proxy, true);
    for addr in &cli.http_listen {
        service.add_tcp(addr);
    }
    let mut server = server;
    server.add_service(service);
    tracing::info!(listen = ?cli.http_listen, admin = %c.admin_listen, class = %cli.ingress_class, controller = %cli.controller_class,
        source = %tier::source_name(c), "router starting");
    tier::run(server, c, state);
    Ok(())
}
