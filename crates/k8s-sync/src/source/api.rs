//! The Kubernetes API source: one watch per kind (kube-runtime watchers) feeding one snapshot.
//!
//! A relist (first list, or after a 410 Gone) is buffered per kind and replaces that kind only
//! once complete, so routes never flap to empty. Nothing is published until every kind has
//! completed its first list, which is what `/readyz` waits for. Bursts of events are coalesced
//! into one rebuild; when the API server is unreachable the watchers back off and retry while
//! the last good config keeps serving.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt, stream::BoxStream};
use k8s_openapi::api::core::v1::{Endpoints, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::WatchStreamExt;
use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::object::{Kind, Object, ObjectKey, Snapshot};
use crate::pipeline::{ConfigSink, Rebuilder, SyncObserver};
use crate::translate::TierSettings;

/// What to watch.
#[derive(Clone, Debug, Default)]
pub struct ApiOptions {
    /// Limit namespaced kinds to one namespace (IngressClasses are cluster-scoped).
    pub namespace: Option<String>,
    /// Watch `kubernetes.io/tls` Secrets (the edge tier only; the router needs no Secrets).
    pub watch_secrets: bool,
}

enum Change {
    Init(Kind),
    InitApply(Kind, Object),
    InitDone(Kind),
    Apply(Object),
    Delete(Kind, ObjectKey),
    Error(Kind, String),
}

fn key_of<K: Resource>(o: &K) -> ObjectKey {
    let m = o.meta();
    ObjectKey::new(
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

fn watch_kind<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: Kind,
    wrap: fn(K) -> Object,
) -> BoxStream<'static, Change>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let to_obj = move |o: K| {
        let mut obj = wrap(o);
        obj.trim();
        obj
    };
    watcher::watcher(api, config)
        .backoff(watch_backoff())
        .map(move |res| match res {
            Ok(Event::Init) => Change::Init(kind),
            Ok(Event::InitApply(o)) => Change::InitApply(kind, to_obj(o)),
            Ok(Event::InitDone) => Change::InitDone(kind),
            Ok(Event::Apply(o)) => Change::Apply(to_obj(o)),
            Ok(Event::Delete(o)) => Change::Delete(kind, key_of(&o)),
            Err(e) => Change::Error(kind, e.to_string()),
        })
        .boxed()
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// One merged stream of every kind's changes.
fn watch_all(
    client: &Client,
    opts: &ApiOptions,
) -> (impl Stream<Item = Change> + use<>, Vec<Kind>) {
    let ns = opts.namespace.as_deref();
    let cfg = watcher::Config::default;
    let mut streams = vec![
        watch_kind(
            Api::<IngressClass>::all(client.clone()),
            cfg(),
            Kind::IngressClass,
            |o| Object::IngressClass(Box::new(o)),
        ),
        watch_kind(api::<Ingress>(client, ns), cfg(), Kind::Ingress, |o| {
            Object::Ingress(Box::new(o))
        }),
        watch_kind(api::<Service>(client, ns), cfg(), Kind::Service, |o| {
            Object::Service(Box::new(o))
        }),
        watch_kind(
            api::<EndpointSlice>(client, ns),
            cfg(),
            Kind::EndpointSlice,
            |o| Object::EndpointSlice(Box::new(o)),
        ),
        watch_kind(api::<Endpoints>(client, ns), cfg(), Kind::Endpoints, |o| {
            Object::Endpoints(Box::new(o))
        }),
    ];
    let mut kinds = vec![
        Kind::IngressClass,
        Kind::Ingress,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Endpoints,
    ];
    if opts.watch_secrets {
        streams.push(watch_kind(
            api::<Secret>(client, ns),
            cfg().fields("type=kubernetes.io/tls"),
            Kind::Secret,
            |o| Object::Secret(Box::new(o)),
        ));
        kinds.push(Kind::Secret);
    }
    (futures::stream::select_all(streams), kinds)
}

/// Retry delays of a failed watch: 0.5 s doubling to 2 s, plus up to as much jitter, reset
/// after a minute of health, so changes resume within a few seconds of an API server coming
/// back. client-go (and so ingress-nginx) caps at 30 s, which left changes unserved for up to
/// half a minute; a retry is one request per watched kind.
fn watch_backoff() -> ResetTimerBackoff<watcher::ExponentialBackoff> {
    let builder = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(2))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(builder.into(), Duration::from_secs(60))
}

/// Events arriving within this window after the first one are folded into one rebuild (a
/// rebuild now costs in proportion to what changed, so the window can be short).
const COALESCE: Duration = Duration::from_millis(10);

/// Watches the API until the task is dropped.
pub async fn run_api_sync(
    client: Client,
    opts: ApiOptions,
    settings: TierSettings,
    sink: Arc<dyn ConfigSink>,
    observers: Vec<Box<dyn SyncObserver>>,
) {
    let (mut changes, kinds) = watch_all(&client, &opts);
    let mut snapshot = Snapshot::for_class(&settings.class);
    let mut rebuilder = Rebuilder::new(settings, sink, observers);
    // Relists in progress: a kind's buffer replaces it only once complete.
    let mut relisting: BTreeMap<Kind, Vec<Object>> = BTreeMap::new();
    let mut listed: BTreeMap<Kind, bool> = kinds.iter().map(|k| (*k, false)).collect();
    let mut rebuild_at: Option<tokio::time::Instant> = None;
    let mut last_errors: BTreeMap<Kind, String> = BTreeMap::new();
    let started = Instant::now();
    let mut first_published = false;

    loop {
        let all_listed = listed.values().all(|v| *v);
        let change = match rebuild_at.filter(|_| all_listed) {
            Some(at) => tokio::select! {
                c = changes.next() => c,
                _ = tokio::time::sleep_until(at) => {
                    rebuild_at = None;
                    rebuilder.rebuild(&mut snapshot);
                    if !first_published {
                        first_published = true;
                        tracing::info!(took_ms = started.elapsed().as_millis() as u64,
                            "initial lists complete; first config published");
                    }
                    continue;
                }
            },
            None => changes.next().await,
        };
        let Some(change) = change else {
            tracing::error!("watch streams ended");
            return;
        };
        let dirty = match change {
            Change::Init(kind) => {
                relisting.insert(kind, Vec::new());
                false
            }
            Change::InitApply(kind, obj) => {
                relisting.entry(kind).or_default().push(obj);
                false
            }
            Change::InitDone(kind) => {
                let objects = relisting.remove(&kind).unwrap_or_default();
                tracing::info!(
                    kind = kind.as_str(),
                    objects = objects.len(),
                    "list complete"
                );
                snapshot.replace_kind(kind, objects);
                listed.insert(kind, true);
                last_errors.remove(&kind);
                true
            }
            Change::Apply(obj) => {
                snapshot.upsert(obj);
                true
            }
            Change::Delete(kind, key) => snapshot.remove(kind, &key),
            Change::Error(kind, error) => {
                // Logged once per distinct error; the watcher retries with backoff.
                if last_errors.get(&kind) != Some(&error) {
                    tracing::warn!(kind = kind.as_str(), %error,
                        "watch failed; retrying with backoff, last good config keeps serving");
                    last_errors.insert(kind, error);
                }
                false
            }
        };
        if dirty && rebuild_at.is_none() {
            rebuild_at = Some(tokio::time::Instant::now() + COALESCE);
        }
    }
}
