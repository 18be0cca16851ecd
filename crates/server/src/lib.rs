//! Process plumbing shared by the tier binaries: common flags (`cli`), the config source thread
//! (`source`), the pingora server with the admin listener (`admin`) and graceful shutdown
//! (`shutdown`). The binaries only wire these together.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod shutdown;
pub mod source;

use std::sync::Arc;

use arc_swap::ArcSwap;
use k8s_sync::{BackendProtocol, Tier};
use pingora_core::apps::HttpServerOptions;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::listening::Service;
use pingora_proxy::{HttpProxy, ProxyServiceBuilder};
use proxy::metrics::Metrics;
use proxy::request::HeadLimits;
use proxy::{Health, InFlight, Proxy, ProxySettings, RoutePublisher, RouteTable, TierPolicy};

use crate::admin::AdminApp;
use crate::cli::{CommonArgs, UpstreamProtocol};
use crate::shutdown::DrainOnTerm;

pub use source::{source_name, spawn_source};

/// A pingora server configured from the common flags.
pub fn new_server(c: &CommonArgs, tier: Tier) -> Server {
    let mut conf = ServerConf {
        threads: c
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        // The shutdown watcher exits once drained; this is only the upper bound.
        grace_period_seconds: Some(c.shutdown_grace.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        // One single-threaded runtime per worker, like nginx workers: measured ~20% more
        // requests/s than work stealing on 2 cores (fewer cross-thread wake-ups).
        work_stealing: false,
        ..ServerConf::default()
    };
    // Under $TMPDIR (default /tmp): the only path tandem writes to, an emptyDir in the chart.
    conf.upgrade_sock = std::env::temp_dir()
        .join(format!("tandem-{tier}-{}.sock", std::process::id()))
        .to_string_lossy()
        .into_owned();
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    server
}

/// Proxy settings from the common flags; a TLS listener sets `scheme` to `https`.
pub fn proxy_settings(c: &CommonArgs, tier: Tier) -> ProxySettings {
    ProxySettings {
        tier,
        scheme: "http",
        trusted_proxies: c.trusted_proxies.clone(),
        connect_timeout: c.connect_timeout,
        read_timeout: c.upstream_read_timeout,
        write_timeout: c.upstream_write_timeout,
        upstream_idle_timeout: c.upstream_keepalive_timeout,
        upstream_protocol: c.upstream_protocol.map(|p| match p {
            UpstreamProtocol::Http1 => BackendProtocol::Http1,
            UpstreamProtocol::H2c => BackendProtocol::H2c,
        }),
        access_log: !c.no_access_log,
        request_metrics: !c.no_request_metrics,
        head_limits: HeadLimits {
            request_line: c.max_request_line,
            header_field: c.max_header_size,
            headers_total: c.max_headers_size,
            header_count: c.max_header_count,
        },
    }
}

/// A proxy service (listeners still to be added). `h2c` allows HTTP/2 with prior knowledge on
/// plain listeners.
pub fn proxy_service(
    server: &Server,
    name: &str,
    proxy: Proxy,
    h2c: bool,
) -> Service<HttpProxy<Proxy>> {
    let mut options = HttpServerOptions::default();
    options.h2c = h2c;
    ProxyServiceBuilder::new(&server.configuration, proxy)
        .name(name)
        .server_options(options)
        .build()
}

/// The HTTP proxy app of a listener that does its own transport (the edge's TLS listeners wrap
/// it): what [`proxy_service`] hosts, without the service; HTTP/2 only by ALPN.
pub fn proxy_app(server: &Server, proxy: Proxy) -> HttpProxy<Proxy> {
    pingora_proxy::http_proxy(&server.configuration, proxy)
}

/// What every tier shares between its watcher, its proxies, admin and shutdown.
pub struct TierState {
    pub tier: Tier,
    pub metrics: Arc<Metrics>,
    pub routes: Arc<ArcSwap<RouteTable>>,
    pub health: Health,
    pub in_flight: InFlight,
}

impl TierState {
    pub fn new(tier: Tier) -> Self {
        let metrics = Metrics::new(tier);
        Self {
            tier,
            routes: Arc::new(ArcSwap::from_pointee(RouteTable::empty(&metrics))),
            health: Health::default(),
            in_flight: InFlight::new(metrics.requests_in_flight.clone()),
            metrics,
        }
    }

    /// The sink that publishes this tier's routes.
    pub fn route_publisher(&self) -> RoutePublisher {
        RoutePublisher::new(
            self.routes.clone(),
            self.health.clone(),
            self.metrics.clone(),
        )
    }

    /// A proxy over this tier's routes, with the tier's policy for this listener.
    pub fn proxy(&self, settings: ProxySettings, policy: Arc<dyn TierPolicy>) -> Proxy {
        Proxy::new(
            self.routes.clone(),
            settings,
            policy,
            self.in_flight.clone(),
            self.metrics.clone(),
        )
    }
}

/// Adds the admin listener and runs until shutdown.
pub fn run(mut server: Server, c: &CommonArgs, state: TierState) {
    let TierState {
        health,
        in_flight,
        metrics,
        ..
    } = state;
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
    cli::flush_logs();
}
