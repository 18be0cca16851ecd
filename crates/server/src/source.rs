//! The config source on its own thread and runtime, off the data path: the manifest directory,
//! else the Kubernetes API (with the status writer and Events).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use k8s_sync::events::spawn_event_reporter;
use k8s_sync::status::{PublishAddresses, StatusConfig, run_status_writer, status_channel};
use k8s_sync::{
    ApiOptions, ConfigSink, ObjectKey, SyncObserver, TierSettings, run_api_sync, run_manifest_sync,
};

use crate::cli::CommonArgs;

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
                    crate::cli::flush_logs();
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
                crate::cli::flush_logs();
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
        crate::cli::flush_logs();
        std::process::exit(1);
    }
}

/// The config source, for the start-up log line.
pub fn source_name(c: &CommonArgs) -> String {
    c.manifests
        .as_ref()
        .map_or_else(|| "kubernetes-api".to_owned(), |m| m.display().to_string())
}
