//! Process plumbing shared by the tier binaries: the watcher thread, the pingora server, the
//! admin listener and graceful shutdown.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use k8s_sync::{ConfigSink, TierSettings, run_manifest_sync};
use pingora_core::apps::HttpServerOptions;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::listening::Service;
use pingora_proxy::{HttpProxy, ProxyServiceBuilder};

use crate::admin::AdminApp;
use crate::cli::{CommonArgs, UpstreamProtocol};
use crate::metrics::Metrics;
use crate::proxy::{InFlight, ProxySettings, RouterProxy};
use crate::publish::Health;
use crate::shutdown::DrainOnTerm;

/// Runs the manifest-directory watcher on its own thread and runtime, off the data path. The
/// process exits if the source cannot start.
pub fn spawn_manifest_watcher(
    dir: PathBuf,
    settings: TierSettings,
    sink: Arc<dyn ConfigSink>,
) -> io::Result<()> {
    std::fs::read_dir(&dir).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot read manifest directory {}: {e}", dir.display()),
        )
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("k8s-sync".into())
        .spawn(move || {
            if let Err(e) = rt.block_on(run_manifest_sync(dir, settings, sink)) {
                tracing::error!(error = %e, "config source failed");
                std::process::exit(1);
            }
        })?;
    Ok(())
}

/// A pingora server configured from the common flags.
pub fn new_server(c: &CommonArgs, tier: &str) -> Server {
    let mut conf = ServerConf {
        threads: c
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        // The shutdown watcher exits once drained; this is only the upper bound.
        grace_period_seconds: Some(c.shutdown_grace.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    conf.upgrade_sock = format!("/tmp/tandem-{tier}-{}.sock", std::process::id());
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    server
}

/// Proxy settings from the common flags; the caller adjusts scheme, redirect and HSTS.
pub fn proxy_settings(c: &CommonArgs, tier: &'static str) -> ProxySettings {
    ProxySettings {
        tier,
        scheme: "http",
        trusted_proxies: c.trusted_proxies.clone(),
        connect_timeout: c.connect_timeout,
        read_timeout: c.upstream_read_timeout,
        write_timeout: c.upstream_write_timeout,
        upstream_idle_timeout: c.upstream_keepalive_timeout,
        redirect_to_https_port: None,
        hsts: None,
        upstream_h2c: matches!(c.upstream_protocol, UpstreamProtocol::H2c),
        access_log: !c.no_access_log,
        request_metrics: !c.no_request_metrics,
    }
}

/// A proxy service (listeners still to be added). `h2c` allows HTTP/2 with prior knowledge on
/// plain listeners.
pub fn proxy_service(
    server: &Server,
    name: &str,
    proxy: RouterProxy,
    h2c: bool,
) -> pingora_core::services::listening::Service<HttpProxy<RouterProxy>> {
    let mut options = HttpServerOptions::default();
    options.h2c = h2c;
    ProxyServiceBuilder::new(&server.configuration, proxy)
        .name(name)
        .server_options(options)
        .build()
}

/// Adds the admin listener and runs until shutdown.
pub fn run(
    mut server: Server,
    c: &CommonArgs,
    health: Health,
    in_flight: InFlight,
    metrics: Arc<Metrics>,
) {
    let mut admin = Service::new("admin".to_owned(), AdminApp::new(health.clone(), metrics));
    admin.add_tcp(&c.admin_listen);
    server.add_service(admin);
    server.run(RunArgs {
        shutdown_signal: Box::new(DrainOnTerm {
            health,
            in_flight,
            delay: c.shutdown_delay,
            grace: c.shutdown_grace,
        }),
    });
}
