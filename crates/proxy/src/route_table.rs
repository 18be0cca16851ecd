//! `RouteTable`: host → path → backend, in Kubernetes Ingress semantics.
//!
//! Lookup order: rules of the exact host, then of the wildcard host matching one label, then
//! rules without host, then the default backend. Within a host an Exact match wins (it is as
//! long as the request path, so never shorter than a prefix match), else the longest element-wise
//! Prefix. This order is what makes a host-less `/` rule a true fallback.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use std::sync::atomic::AtomicU64;

use k8s_sync::{
    BackendKey, CanaryRule, Delta, IngressRef, PathMatch, Problem, ProblemReason, Route,
    RoutePolicy, RoutingConfig,
};

use prometheus::{IntCounter, IntCounterVec};

use crate::backend::{Backend, BackendRegistry};
use crate::host_map::{HostMap, normalize_host};
use crate::metrics::{Metrics, OTHER_HOST, RouteMetrics};

/// Where a matched request goes, and what to log about it.
#[derive(Debug)]
pub struct RouteTarget {
    pub backend: Arc<Backend>,
    /// `namespace/name` of the Ingress.
    pub ingress: Arc<str>,
    pub namespace: Arc<str>,
    pub ingress_name: Arc<str>,
    /// Served by the catch-all: a host-less `/` Prefix rule or the default backend.
    pub fallback: bool,
    /// Forward the path as the client wrote it instead of the normalised one.
    pub forward_raw_path: bool,
    /// The Ingress's annotation policy (`None`: none, the common case).
    pub policy: Option<Arc<RoutePolicy>>,
    pub metrics: Arc<RouteMetrics>,
    /// A canary Ingress's backend taking a share of the route's requests (`None`: the common
    /// case).
    pub canary: Option<Box<CanaryTarget>>,
}

/// The canary of a route, as the data path uses it.
#[derive(Debug)]
pub struct CanaryTarget {
    pub backend: Arc<Backend>,
    pub rule: Arc<CanaryRule>,
    /// `namespace/name` of the canary Ingress.
    pub ingress: Arc<str>,
    /// Request metrics of canary requests (labelled with the canary Ingress and Service).
    pub metrics: Arc<RouteMetrics>,
    /// Requests that went to the canary.
    pub requests: IntCounter,
    /// Requests of this route decided by weight so far: what spreads the weight exactly.
    pub weighed: WeighedCount,
}

/// A counter on a cache line of its own: every worker increments it, and it must not make the
/// read-mostly fields around it bounce between cores.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct WeighedCount(pub AtomicU64);

/// Up to this many Prefix rules, a host's table is scanned longest first instead of held in a
/// radix tree: most hosts have one to a few rules, and a tree per host costs ~1.6 KiB.
const LINEAR_PREFIXES: usize = 8;

/// A host's Prefix rules.
enum Prefixes {
    /// Longest first.
    Linear(Vec<(Box<str>, Arc<RouteTarget>)>),
    Tree(matchit::Router<Arc<RouteTarget>>),
}

impl Default for Prefixes {
    fn default() -> Self {
        Self::Linear(Vec::new())
    }
}

/// Whether a normalised Prefix rule (no trailing slash, `/` for the root) matches a path
/// element-wise: `/foo` serves `/foo`, `/foo/` and `/foo/<anything>`, not `/foobar`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return path.starts_with('/');
    }
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Path rules of one host, built from one shared list of routes and kept, by pointer, for as
/// long as that list is unchanged.
#[derive(Default)]
struct PathTable {
    source: Arc<Vec<Route>>,
    exact: HashMap<String, Arc<RouteTarget>>,
    prefix: Prefixes,
    /// Rules the table could not hold.
    problems: Vec<Problem>,
}

impl PathTable {
    /// An empty table sized for these routes.
    fn for_routes(routes: &Arc<Vec<Route>>) -> Self {
        let prefixes = routes
            .iter()
            .filter(|r| matches!(r.path, PathMatch::Prefix(_)))
            .count();
        Self {
            source: routes.clone(),
            exact: HashMap::new(),
            prefix: if prefixes <= LINEAR_PREFIXES {
                Prefixes::Linear(Vec::with_capacity(prefixes))
            } else {
                Prefixes::Tree(matchit::Router::new())
            },
            problems: Vec::new(),
        }
    }

    fn lookup(&self, path: &str) -> Option<&Arc<RouteTarget>> {
        self.exact.get(path).or_else(|| match &self.prefix {
            Prefixes::Linear(rules) => rules
                .iter()
                .find(|(p, _)| prefix_matches(p, path))
                .map(|(_, t)| t),
            Prefixes::Tree(tree) => tree.at(path).ok().map(|m| m.value),
        })
    }

    fn insert(&mut self, route: &Route, target: Arc<RouteTarget>) -> Result<(), String> {
        match (&route.path, &mut self.prefix) {
            (PathMatch::Exact(p), _) => {
                self.exact.entry(p.clone()).or_insert(target);
                Ok(())
            }
            (PathMatch::Prefix(p), Prefixes::Linear(rules)) => {
                if !rules.iter().any(|(q, _)| **q == **p) {
                    let at = rules.partition_point(|(q, _)| q.len() >= p.len());
                    rules.insert(at, (p.as_str().into(), target));
                }
                Ok(())
            }
            (PathMatch::Prefix(p), Prefixes::Tree(tree)) => {
                // Element-wise: `/foo` serves `/foo`, `/foo/` and `/foo/<anything>`. A matchit
                // catch-all never matches the empty rest, hence three entries.
                let escaped = p.replace('{', "{{").replace('}', "}}");
                let entries = if p == "/" {
                    vec!["/".to_owned(), "/{*rest}".to_owned()]
                } else {
                    vec![
                        escaped.clone(),
                        format!("{escaped}/"),
                        format!("{escaped}/{{*rest}}"),
                    ]
                };
                for e in entries {
                    tree.insert(e.as_str(), target.clone())
                        .map_err(|err| format!("path {p}: {err}"))?;
                }
                Ok(())
            }
        }
    }
}

/// A per-host fallback counter, registered on first use: most hosts never fall back, and a
/// registered series costs memory for as long as the process lives.
#[derive(Debug)]
struct LazyCounter {
    label: Box<str>,
    counter: OnceLock<IntCounter>,
}

/// The routes one tier serves. Immutable once built; published with one atomic swap.
pub struct RouteTable {
    /// Path rules per host (exact, then a one-label wildcard).
    hosts: HostMap<Arc<PathTable>>,
    hostless: Arc<PathTable>,
    default_backend: Option<Arc<RouteTarget>>,
    /// Hosts whose plain-HTTP requests the edge redirects to HTTPS.
    https_hosts: HostMap<()>,
    /// Fallback counters per configured host (`_other` else).
    fallback_by_host: HostMap<Arc<LazyCounter>>,
    fallback_requests: IntCounterVec,
    fallback_other: IntCounter,
    /// Rules the path tables could not hold, by host key.
    problems: imbl::OrdMap<String, Arc<Vec<Problem>>>,
    /// Counters for requests no rule matched.
    pub unrouted: Arc<RouteMetrics>,
}

/// Makes path tables and route targets from translated routes.
struct Builder<'a> {
    backends: &'a BackendRegistry,
    metrics: &'a Arc<Metrics>,
}

impl Builder<'_> {
    fn canary(&self, route: &Route) -> Option<Box<CanaryTarget>> {
        let (backends, metrics) = (self.backends, self.metrics);
        let c = route.canary.as_ref()?;
        Some(Box::new(CanaryTarget {
            backend: backends.get(&c.backend)?.clone(),
            rule: c.rule.clone(),
            ingress: c.ingress.to_string().into(),
            metrics: metrics.route_handles(
                &c.ingress.namespace,
                &c.ingress.name,
                &c.backend.service,
                false,
            ),
            requests: metrics.canary_requests.with_label_values(&[
                &*c.ingress.namespace,
                &*c.ingress.name,
                &*c.backend.service,
            ]),
            weighed: WeighedCount::default(),
        }))
    }

    fn target(
        &self,
        ingress: &IngressRef,
        key: &BackendKey,
        fallback: bool,
        raw: bool,
        policy: Option<&Arc<RoutePolicy>>,
        canary: Option<Box<CanaryTarget>>,
    ) -> Option<Arc<RouteTarget>> {
        Some(Arc::new(RouteTarget {
            backend: self.backends.get(key)?.clone(),
            ingress: ingress.to_string().into(),
            namespace: ingress.namespace.clone(),
            ingress_name: ingress.name.clone(),
            fallback,
            forward_raw_path: raw,
            policy: policy.cloned(),
            metrics: self.metrics.route_handles(
                &ingress.namespace,
                &ingress.name,
                &key.service,
                fallback,
            ),
            canary,
        }))
    }

    fn paths(&self, routes: &Arc<Vec<Route>>, host_less: bool) -> Arc<PathTable> {
        let mut table = PathTable::for_routes(routes);
        for route in routes.iter() {
            let fallback = host_less && route.path.is_catch_all();
            let Some(t) = self.target(
                &route.ingress,
                &route.backend,
                fallback,
                route.forward_raw_path,
                route.policy.as_ref(),
                self.canary(route),
            ) else {
                continue;
            };
            if let Err(detail) = table.insert(route, t) {
                table.problems.push(Problem {
                    kind: "Ingress",
                    namespace: route.ingress.namespace.to_string(),
                    name: route.ingress.name.to_string(),
                    reason: ProblemReason::InvalidPath,
                    detail,
                });
            }
        }
        Arc::new(table)
    }
}

impl LazyCounter {
    fn new(label: &str) -> Arc<Self> {
        Arc::new(Self {
            label: label.into(),
            counter: OnceLock::new(),
        })
    }
}

impl Builder<'_> {
    fn default_backend(&self, config: &RoutingConfig) -> Option<Arc<RouteTarget>> {
        let db = config.default_backend.as_ref()?;
        self.target(&db.ingress, &db.backend, true, false, None, None)
    }
}

impl RouteTable {
    /// Builds a table from translated config, taking backends from the registry (which must
    /// hold every backend the config names). The path table of a host whose routes are the
    /// same shared list as in `previous` is reused, not rebuilt. Rules a path table cannot
    /// hold are skipped and returned as problems.
    pub fn build(
        config: &RoutingConfig,
        backends: &BackendRegistry,
        metrics: &Arc<Metrics>,
        previous: Option<&RouteTable>,
    ) -> (Self, Vec<Problem>) {
        let b = Builder { backends, metrics };
        let mut table = RouteTable::empty(metrics);
        let hosts = config
            .exact_hosts
            .iter()
            .map(|(h, r)| (h.clone(), r))
            .chain(
                config
                    .wildcard_hosts
                    .iter()
                    .map(|(suffix, r)| (format!("*.{suffix}"), r)),
            );
        for (host, routes) in hosts {
            let kept = previous
                .and_then(|p| p.hosts.get_configured(&host))
                .filter(|t| Arc::ptr_eq(&t.source, routes))
                .cloned();
            let paths = kept.unwrap_or_else(|| b.paths(routes, false));
            table.set_problems(&host, &paths);
            table.hosts.insert_first(&host, paths);
        }
        table.hostless = previous
            .map(|p| &p.hostless)
            .filter(|t| Arc::ptr_eq(&t.source, &config.hostless))
            .cloned()
            .unwrap_or_else(|| b.paths(&config.hostless, true));
        let hostless = table.hostless.clone();
        table.set_problems("", &hostless);
        table.default_backend = b.default_backend(config);
        for h in config.known_hosts.iter() {
            let kept = previous.and_then(|p| p.fallback_by_host.get_configured(h));
            let counter = kept.cloned().unwrap_or_else(|| LazyCounter::new(h));
            table.fallback_by_host.insert_first(h, counter);
        }
        for h in config.https_redirect_hosts.iter() {
            table.https_hosts.insert_first(h, ());
        }
        let problems = table.problems();
        (table, problems)
    }

    /// The table `self` becomes when the config it was built from changes by `delta` into
    /// `config`: only the hosts the delta names are rebuilt, everything else is shared.
    pub fn apply_delta(
        &self,
        config: &RoutingConfig,
        delta: &Delta,
        backends: &BackendRegistry,
        metrics: &Arc<Metrics>,
    ) -> (Self, Vec<Problem>) {
        let b = Builder { backends, metrics };
        let mut table = RouteTable {
            hosts: self.hosts.clone(),
            hostless: self.hostless.clone(),
            default_backend: self.default_backend.clone(),
            https_hosts: self.https_hosts.clone(),
            fallback_by_host: self.fallback_by_host.clone(),
            fallback_requests: self.fallback_requests.clone(),
            fallback_other: self.fallback_other.clone(),
            problems: self.problems.clone(),
            unrouted: self.unrouted.clone(),
        };
        for host in &delta.route_hosts {
            if host.is_empty() {
                table.hostless = b.paths(&config.hostless, true);
                let hostless = table.hostless.clone();
                table.set_problems("", &hostless);
                continue;
            }
            let routes = match host.strip_prefix("*.") {
                Some(suffix) => config.wildcard_hosts.get(suffix),
                None => config.exact_hosts.get(host.as_str()),
            };
            let paths = routes.map(|r| b.paths(r, false));
            match &paths {
                Some(p) => table.set_problems(host, p),
                None => {
                    table.problems.remove(host);
                }
            }
            table.hosts.set(host, paths);
        }
        if delta.default_backend {
            table.default_backend = b.default_backend(config);
        }
        for h in &delta.known_hosts {
            let counter = config.known_hosts.contains(h).then(|| {
                self.fallback_by_host
                    .get_configured(h)
                    .cloned()
                    .unwrap_or_else(|| LazyCounter::new(h))
            });
            table.fallback_by_host.set(h, counter);
        }
        for h in &delta.https_hosts {
            let on = config.https_redirect_hosts.contains(h);
            table.https_hosts.set(h, on.then_some(()));
        }
        let problems = table.problems();
        (table, problems)
    }

    fn set_problems(&mut self, host: &str, paths: &PathTable) {
        if paths.problems.is_empty() {
            self.problems.remove(host);
        } else {
            self.problems
                .insert(host.to_owned(), Arc::new(paths.problems.clone()));
        }
    }

    fn problems(&self) -> Vec<Problem> {
        self.problems
            .values()
            .flat_map(|p| p.iter().cloned())
            .collect()
    }

    /// A table with no routes: every request is a 404.
    pub fn empty(metrics: &Arc<Metrics>) -> Self {
        Self {
            hosts: HostMap::default(),
            hostless: Arc::default(),
            default_backend: None,
            https_hosts: HostMap::default(),
            fallback_by_host: HostMap::default(),
            fallback_requests: metrics.fallback_requests.clone(),
            fallback_other: metrics.fallback_requests.with_label_values(&[OTHER_HOST]),
            problems: imbl::OrdMap::new(),
            unrouted: metrics.unrouted_handles(),
        }
    }

    /// The fallback counter for a Host header: its configured host, else `_other`.
    pub fn fallback_counter(&self, host: &str) -> &IntCounter {
        match self.fallback_by_host.get(&normalize_host(host)) {
            Some((lazy, _)) => lazy
                .counter
                .get_or_init(|| self.fallback_requests.with_label_values(&[&*lazy.label])),
            None => &self.fallback_other,
        }
    }

    /// Finds the route for a Host header (port and case ignored) and a path (no query). A host
    /// whose exact rules do not match the path still falls back to a wildcard's, then to the
    /// host-less rules.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Arc<RouteTarget>> {
        let host = normalize_host(host);
        if !host.is_empty() {
            if let Some(t) = self.hosts.get_exact(&host).and_then(|t| t.lookup(path)) {
                return Some(t);
            }
            if let Some(t) = self.hosts.get_wildcard(&host).and_then(|t| t.lookup(path)) {
                return Some(t);
            }
        }
        self.hostless.lookup(path).or(self.default_backend.as_ref())
    }

    /// Whether plain-HTTP requests for this host go to HTTPS (the host has TLS on the edge).
    pub fn redirects_to_https(&self, host: &str) -> bool {
        self.https_hosts.get(&normalize_host(host)).is_some()
    }
}

#[cfg(test)]
mod tests;
