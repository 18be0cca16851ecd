//! Process plumbing shared by the tier binaries: the watcher thread, the pingora server, the
//! admin listener and graceful shutdown.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use k8s_sync::events::spawn_event_reporter;
use k8s_sync::status::{PublishAddresses, StatusConfig, run_status_writer, status_channel};
use k8s_sync::{
    ApiOptions, BackendProtocol, ConfigSink, ObjectKey, SyncObserver, Tier, TierSettings,
    run_api_sync, run_manifest_sync,
};
use pingora_core::apps::HttpServerOptions;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::listening::Service;
use pingora_proxy::{HttpProxy, ProxyServiceBuilder};

use crate::admin::AdminApp;
use crate::cli::{CommonArgs, UpstreamProtocol};
use crate::metrics::Metrics;
use crate::proxy::{InFlight, ProxySettings, RouterProxy};
use crate::publish::{Health, RoutePublisher};
use crate::request::HeadLimits;
use crate::route_table::RouteTable;
use crate::shutdown::DrainOnTerm;
use arc_swap::ArcSwap;

/// Starts the config source — the manifest directory, else the Kubernetes API — on its own
/// thread and runtime, off the data path. The process exits if the source cannot start.
pub fn spawn_source(
    c: &CommonArgs,
    settings: TierSettings,
    sink: Arc<dyn ConfigSink>,
) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if let Some(dir) = c.manifests.clone() {
        std::fs::read_dir(&dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot read manifest directory {}: {e}", dir.display()),
            )
        })?;
        std::thread::Builder::new()
            .name("k8s-sync".into())
            .spawn(move || {
                if let Err(e) = rt.block_on(run_manifest_sync(dir, settings, sink)) {
                    tracing::error!(error = %e, "config source failed");
                    std::process::exit(1);
                }
            })?;
        return Ok(());
    }
    let api = ApiSetup::from_args(c, &settings)?;
    std::thread::Builder::new()
        .name("k8s-sync".into())
        .spawn(move || rt.block_on(api.run(settings, sink)))?;
    Ok(())
}

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

/// Proxy settings from the common flags; the caller adjusts scheme, redirect and HSTS.
pub fn proxy_settings(c: &CommonArgs, tier: Tier) -> ProxySettings {
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

    /// A proxy over this tier's routes.
    pub fn proxy(&self, settings: ProxySettings) -> RouterProxy {
        RouterProxy::new(
            self.routes.clone(),
            settings,
            self.in_flight.clone(),
            self.metrics.clone(),
        )
    }
}

/// The config source, for the start-up log line.
pub fn source_name(c: &CommonArgs) -> String {
    c.manifests
        .as_ref()
        .map_or_else(|| "kubernetes-api".to_owned(), |m| m.display().to_string())
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
}

/// Everything the API source needs, checked before the server starts.
struct ApiSetup {
    kubeconfig: Option<PathBuf>,
    options: ApiOptions,
    status: Option<StatusConfig>,
    /// Reports Events as this controller.
    controller: String,
    identity: String,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl ApiSetup {
    fn from_args(c: &CommonArgs, settings: &TierSettings) -> io::Result<Self> {
        let tier = settings.tier;
        let identity = c.pod_name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "tandem".to_owned());
            format!("{host}-{}", std::process::id())
        });
        let publish = match (&c.publish_service, &c.publish_status_address) {
            (Some(svc), _) => {
                let (ns, name) = svc.split_once('/').ok_or_else(|| {
                    invalid(format!(
                        "--publish-service must be NAMESPACE/NAME, got {svc:?}"
                    ))
                })?;
                Some(PublishAddresses::Service(ObjectKey::new(ns, name)))
            }
            (None, Some(addrs)) => Some(PublishAddresses::Static(
                addrs
                    .split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )),
            (None, None) => None,
        };
        let status = publish.map(|publish| StatusConfig {
            lease_namespace: c
                .election_namespace
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
            lease_name: c
                .election_id
                .clone()
                .unwrap_or_else(|| format!("tandem-{tier}-{}", settings.class)),
            identity: identity.clone(),
            lease_duration: c.lease_duration,
            renew_interval: c.lease_renew_interval,
            publish,
        });
        Ok(Self {
            kubeconfig: c.kubeconfig.clone(),
            options: ApiOptions {
                namespace: c.watch_namespace.clone(),
                watch_secrets: tier.reads_secrets(),
            },
            status,
            controller: settings.controller.clone(),
            identity,
        })
    }

    async fn client(&self) -> Result<kube::Client, String> {
        let config = match &self.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
                kube::Config::from_custom_kubeconfig(
                    kc,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .map_err(|e| format!("invalid kubeconfig {}: {e}", path.display()))?
            }
            None => kube::Config::infer()
                .await
                .map_err(|e| format!("no Kubernetes config (in-cluster, KUBECONFIG): {e}"))?,
        };
        kube::Client::try_from(config).map_err(|e| format!("cannot build API client: {e}"))
    }

    async fn run(self, settings: TierSettings, sink: Arc<dyn ConfigSink>) {
        let client = match self.client().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "config source failed");
                std::process::exit(1);
            }
        };
        let mut observers: Vec<Box<dyn SyncObserver>> = vec![Box::new(spawn_event_reporter(
            client.clone(),
            self.controller.clone(),
            self.identity.clone(),
        ))];
        if let Some(status) = self.status {
            let (observer, view) = status_channel(status.publish.clone());
            observers.push(Box::new(observer));
            tokio::spawn(run_status_writer(client.clone(), status, view));
        }
        tracing::info!(namespace = ?self.options.namespace, secrets = self.options.watch_secrets,
            "watching the Kubernetes API");
        run_api_sync(client, self.options, settings, sink, observers).await;
        tracing::error!("API source stopped");
        std::process::exit(1);
    }
}
