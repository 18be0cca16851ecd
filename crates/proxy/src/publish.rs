//! Publication of translated config to the data path: the route table is rebuilt only when
//! routes change and published with one atomic swap; endpoint changes update backends in place.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use k8s_sync::{ConfigSink, Delta, RoutingConfig, Tier, Translation};

use crate::backend::BackendRegistry;
use crate::health::{HealthByHost, HealthCheckers};
use crate::metrics::Metrics;
use crate::route_table::RouteTable;

/// Readiness and drain state, shared by the publisher, the admin endpoint and shutdown.
#[derive(Clone, Debug, Default)]
pub struct Health {
    loaded: Arc<AtomicBool>,
    draining: Arc<AtomicBool>,
}

impl Health {
    /// Ready once the first full load is published, until shutdown starts.
    pub fn is_ready(&self) -> bool {
        self.loaded.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

struct PublisherState {
    backends: BackendRegistry,
    last_routes: Option<RoutingConfig>,
    /// Rules the last route-table build rejected; still problems while those routes stand.
    build_problems: Vec<k8s_sync::Problem>,
    /// Active health checks of the backends whose routes ask for them.
    checkers: HealthCheckers,
    /// The health checks routes ask for, per host.
    health_checks: HealthByHost,
}

/// The router's [`ConfigSink`].
pub struct RoutePublisher {
    tier: Tier,
    routes: Arc<ArcSwap<RouteTable>>,
    state: Mutex<PublisherState>,
    health: Health,
    metrics: Arc<Metrics>,
}

impl RoutePublisher {
    pub fn new(routes: Arc<ArcSwap<RouteTable>>, health: Health, metrics: Arc<Metrics>) -> Self {
        let backends = BackendRegistry::with_metrics(metrics.clone());
        Self {
            tier: metrics.tier,
            metrics,
            routes,
            state: Mutex::new(PublisherState {
                backends,
                last_routes: None,
                build_problems: Vec::new(),
                checkers: HealthCheckers::default(),
                health_checks: HealthByHost::default(),
            }),
            health,
        }
    }
}

impl RoutePublisher {
    /// Config metrics: rebuild result, objects, problems, ready endpoints (with a delta, only
    /// of the backends it names).
    fn record(
        &self,
        t: &Translation,
        delta: Option<&Delta>,
        backends: &BackendRegistry,
        build_problems: &[k8s_sync::Problem],
    ) {
        let m = &self.metrics;
        let result = if t.problems.is_empty() && build_problems.is_empty() {
            "ok"
        } else {
            "partial"
        };
        m.config_rebuilds.with_label_values(&[result]).inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        m.config_last_success.set(now);
        for (kind, n) in &t.object_counts {
            m.config_objects.with_label_values(&[kind]).set(*n as i64);
        }
        m.config_problems.reset();
        for p in t.problems.iter().chain(build_problems) {
            m.config_problems
                .with_label_values(&[p.kind, p.reason.as_str()])
                .inc();
        }
        if delta.is_none_or(|d| !d.route_hosts.is_empty() || d.default_backend) {
            m.config_routes.set(t.routes.route_count() as i64);
        }
        let set = |key: &k8s_sync::BackendKey, n: Option<usize>| {
            let port = key.port.to_string();
            let labels = [&*key.namespace, &*key.service, port.as_str()];
            match n {
                Some(n) => m.ready_endpoints.with_label_values(&labels).set(n as i64),
                None => {
                    let _ = m.ready_endpoints.remove_label_values(&labels);
                }
            }
        };
        match delta {
            Some(d) => {
                for key in &d.backends {
                    set(key, backends.get(key).map(|b| b.endpoint_count()));
                }
            }
            None => {
                m.ready_endpoints.reset();
                for b in backends.iter() {
                    set(&b.key, Some(b.endpoint_count()));
                }
            }
        }
    }
}

impl ConfigSink for RoutePublisher {
    fn apply(&self, translation: Translation) {
        let started = Instant::now();
        // Only the watcher task publishes; a poisoned lock still holds consistent data.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // A delta is relative to the translation applied last: usable once one was.
        let delta = translation
            .delta
            .as_ref()
            .filter(|_| state.last_routes.is_some());
        match delta {
            Some(d) => state
                .backends
                .sync_keys(&translation.endpoints, &d.backends),
            None => state.backends.sync(&translation.endpoints),
        }
        let routes_changed = match delta {
            Some(d) => {
                !d.route_hosts.is_empty()
                    || d.default_backend
                    || !d.known_hosts.is_empty()
                    || !d.https_hosts.is_empty()
            }
            None => state.last_routes.as_ref() != Some(&translation.routes),
        };
        let table = routes_changed.then(|| {
            let current = self.routes.load();
            let (table, problems) = match delta {
                Some(d) => current.apply_delta(&translation.routes, d, &state.backends, &self.metrics),
                None => RouteTable::build(
                    &translation.routes,
                    &state.backends,
                    &self.metrics,
                    Some(&current),
                ),
            };
            for p in problems.iter().filter(|p| !state.build_problems.contains(p)) {
                tracing::warn!(tier = self.tier.as_str(), kind = p.kind, namespace = %p.namespace, name = %p.name,
                    reason = p.reason.as_str(), detail = %p.detail, "rule rejected");
            }
            state.build_problems = problems;
            table
        });
        if table.is_some() {
            // Backends are only added or replaced along with routes.
            let PublisherState {
                checkers,
                backends,
                health_checks,
                ..
            } = &mut *state;
            match delta {
                Some(d) => health_checks.update(&translation.routes, &d.route_hosts),
                None => health_checks.rebuild(&translation.routes),
            }
            checkers.sync(health_checks.wanted(), backends);
        }
        self.record(&translation, delta, &state.backends, &state.build_problems);
        match table {
            Some(table) => {
                self.routes.store(Arc::new(table));
                state.last_routes = Some(translation.routes);
                tracing::info!(
                    tier = self.tier.as_str(),
                    took_us = started.elapsed().as_micros() as u64,
                    "route table published"
                );
            }
            None => tracing::info!(
                tier = self.tier.as_str(),
                "endpoints updated; routes unchanged"
            ),
        }
        self.health.loaded.store(true, Ordering::Release);
    }
}
