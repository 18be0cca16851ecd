//! `router`: the routing tier. Routes by host and path from Ingress objects of its class, with
//! a host-less catch-all as the legacy fallback.

use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use clap::Parser;
use k8s_sync::{TierSettings, run_manifest_sync};
use pingora_core::apps::HttpServerOptions;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::listening::Service;
use pingora_proxy::ProxyServiceBuilder;
use router::admin::AdminApp;
use router::cli::{CommonArgs, init_logging};
use router::shutdown::DrainOnTerm;
use router::{Health, InFlight, ProxySettings, RoutePublisher, RouteTable, RouterProxy};

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
    #[arg(long, value_name = "NAME", default_value = "tandem-router")]
    ingress_class: String,

    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.common.log_format);
    let c = &cli.common;
    std::fs::read_dir(&c.manifests)
        .with_context(|| format!("cannot read manifest directory {}", c.manifests.display()))?;

    let routes = Arc::new(ArcSwap::from_pointee(RouteTable::default()));
    let health = Health::default();
    let in_flight = InFlight::default();

    // The watcher runs on its own thread and runtime, off the data path.
    let publisher = Arc::new(RoutePublisher::new(
        "router",
        routes.clone(),
        health.clone(),
    ));
    let settings = TierSettings {
        class: cli.ingress_class.clone(),
        watch_without_class: c.watch_ingress_without_class,
    };
    let dir = c.manifests.clone();
    std::thread::Builder::new()
        .name("k8s-sync".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start watcher runtime");
                    std::process::exit(1);
                }
            };
            if let Err(e) = rt.block_on(run_manifest_sync(dir, settings, publisher)) {
                tracing::error!(error = %e, "config source failed");
                std::process::exit(1);
            }
        })
        .context("cannot start watcher thread")?;

    let mut conf = ServerConf {
        threads: c
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        // Our shutdown watcher exits once drained; this is only the upper bound.
        grace_period_seconds: Some(c.shutdown_grace.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    conf.upgrade_sock = format!("/tmp/tandem-router-{}.sock", std::process::id());
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let proxy = RouterProxy::new(
        routes,
        ProxySettings {
            tier: "router",
            scheme: "http",
            trusted_proxies: c.trusted_proxies.clone(),
            connect_timeout: c.connect_timeout,
            read_timeout: c.upstream_read_timeout,
            write_timeout: c.upstream_write_timeout,
            upstream_idle_timeout: c.upstream_keepalive_timeout,
        },
        in_flight.clone(),
    );
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    let mut service = ProxyServiceBuilder::new(&server.configuration, proxy)
        .name("router")
        .server_options(options)
        .build();
    for addr in &cli.http_listen {
        service.add_tcp(addr);
    }
    let mut admin = Service::new("admin".to_owned(), AdminApp::new(health.clone()));
    admin.add_tcp(&c.admin_listen);
    server.add_service(service);
    server.add_service(admin);

    tracing::info!(listen = ?cli.http_listen, admin = %c.admin_listen, class = %cli.ingress_class,
        manifests = %c.manifests.display(), "router starting");
    server.run(RunArgs {
        shutdown_signal: Box::new(DrainOnTerm {
            health,
            in_flight,
            delay: c.shutdown_delay,
            grace: c.shutdown_grace,
        }),
    });
    Ok(())
}
