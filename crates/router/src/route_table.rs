//! `RouteTable`: host → path → backend, in Kubernetes Ingress semantics.
//!
//! Lookup order: rules of the exact host, then of the wildcard host matching one label, then
//! rules without host, then the default backend. Within a host an Exact match wins (it is as
//! long as the request path, so never shorter than a prefix match), else the longest element-wise
//! Prefix. This order is what makes a host-less `/` rule a true fallback.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_sync::{BackendKey, IngressRef, PathMatch, Problem, ProblemReason, Route, RoutingConfig};

use prometheus::IntCounter;

use crate::backend::{Backend, BackendRegistry};
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
    pub metrics: Arc<RouteMetrics>,
}

/// Path rules of one host.
#[derive(Default)]
struct PathTable {
    exact: HashMap<String, Arc<RouteTarget>>,
    prefix: matchit::Router<Arc<RouteTarget>>,
}

impl PathTable {
    fn lookup(&self, path: &str) -> Option<&Arc<RouteTarget>> {
        self.exact
            .get(path)
            .or_else(|| self.prefix.at(path).ok().map(|m| m.value))
    }

    fn insert(&mut self, route: &Route, target: Arc<RouteTarget>) -> Result<(), String> {
        match &route.path {
            PathMatch::Exact(p) => {
                self.exact.entry(p.clone()).or_insert(target);
                Ok(())
            }
            PathMatch::Prefix(p) => {
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
                    self.prefix
                        .insert(e.as_str(), target.clone())
                        .map_err(|err| format!("path {p}: {err}"))?;
                }
                Ok(())
            }
        }
    }
}

/// The routes one tier serves. Immutable once built; published with one atomic swap.
pub struct RouteTable {
    exact_hosts: HashMap<String, PathTable>,
    wildcard_hosts: HashMap<String, PathTable>,
    hostless: PathTable,
    default_backend: Option<Arc<RouteTarget>>,
    /// Hosts whose plain-HTTP requests the edge redirects to HTTPS: exact, and wildcard suffixes.
    redirect_exact: HashSet<String>,
    redirect_wildcard: HashSet<String>,
    /// Fallback counters per configured host (exact, and wildcard by suffix), `_other` else.
    fallback_by_host: HashMap<String, IntCounter>,
    fallback_by_wildcard: HashMap<String, IntCounter>,
    fallback_other: IntCounter,
    /// Counters for requests no rule matched.
    pub unrouted: Arc<RouteMetrics>,
}

impl RouteTable {
    /// Builds a table from translated config, taking backends from the registry (which must
    /// hold every backend the config names). Rules the path table cannot hold are skipped and
    /// returned as problems.
    pub fn build(
        config: &RoutingConfig,
        backends: &BackendRegistry,
        metrics: &Arc<Metrics>,
    ) -> (Self, Vec<Problem>) {
        let mut problems = Vec::new();
        let mut table = RouteTable::empty(metrics);
        let target = |ingress: &IngressRef, key: &BackendKey, fallback: bool, raw: bool| {
            Some(Arc::new(RouteTarget {
                backend: backends.get(key)?.clone(),
                ingress: ingress.to_string().into(),
                namespace: ingress.namespace.as_str().into(),
                ingress_name: ingress.name.as_str().into(),
                fallback,
                forward_raw_path: raw,
                metrics: metrics.route_handles(
                    &ingress.namespace,
                    &ingress.name,
                    &key.service,
                    fallback,
                ),
            }))
        };
        let add =
            |table: &mut PathTable, route: &Route, fallback: bool, problems: &mut Vec<Problem>| {
                let Some(t) = target(
                    &route.ingress,
                    &route.backend,
                    fallback,
                    route.forward_raw_path,
                ) else {
                    return;
                };
                if let Err(detail) = table.insert(route, t) {
                    problems.push(Problem {
                        kind: "Ingress",
                        namespace: route.ingress.namespace.clone(),
                        name: route.ingress.name.clone(),
                        reason: ProblemReason::InvalidPath,
                        detail,
                    });
                }
            };
        for (host, routes) in &config.exact_hosts {
            let t = table.exact_hosts.entry(host.clone()).or_default();
            for r in routes {
                add(t, r, false, &mut problems);
            }
        }
        for (suffix, routes) in &config.wildcard_hosts {
            let t = table.wildcard_hosts.entry(suffix.clone()).or_default();
            for r in routes {
                add(t, r, false, &mut problems);
            }
        }
        for r in &config.hostless {
            add(&mut table.hostless, r, r.path.is_catch_all(), &mut problems);
        }
        if let Some(db) = &config.default_backend {
            table.default_backend = target(&db.ingress, &db.backend, true, false);
        }
        for h in &config.known_hosts {
            let counter = metrics.fallback_requests.with_label_values(&[h.as_str()]);
            match h.strip_prefix("*.") {
                Some(suffix) => table
                    .fallback_by_wildcard
                    .insert(suffix.to_owned(), counter),
                None => table.fallback_by_host.insert(h.clone(), counter),
            };
        }
        for h in &config.https_redirect_hosts {
            match h.strip_prefix("*.") {
                Some(suffix) => table.redirect_wildcard.insert(suffix.to_owned()),
                None => table.redirect_exact.insert(h.clone()),
            };
        }
        (table, problems)
    }

    /// A table with no routes: every request is a 404.
    pub fn empty(metrics: &Arc<Metrics>) -> Self {
        Self {
            exact_hosts: HashMap::new(),
            wildcard_hosts: HashMap::new(),
            hostless: PathTable::default(),
            default_backend: None,
            redirect_exact: HashSet::new(),
            redirect_wildcard: HashSet::new(),
            fallback_by_host: HashMap::new(),
            fallback_by_wildcard: HashMap::new(),
            fallback_other: metrics.fallback_requests.with_label_values(&[OTHER_HOST]),
            unrouted: metrics.unrouted_handles(),
        }
    }

    /// The fallback counter for a Host header: its configured host, else `_other`.
    pub fn fallback_counter(&self, host: &str) -> &IntCounter {
        let host = normalize_host(host);
        self.fallback_by_host
            .get(&*host)
            .or_else(|| {
                host.split_once('.')
                    .and_then(|(_, suffix)| self.fallback_by_wildcard.get(suffix))
            })
            .unwrap_or(&self.fallback_other)
    }

    /// Finds the route for a Host header (port and case ignored) and a path (no query).
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Arc<RouteTarget>> {
        let host = normalize_host(host);
        let host: &str = &host;
        if !host.is_empty() {
            if let Some(t) = self.exact_hosts.get(host).and_then(|t| t.lookup(path)) {
                return Some(t);
            }
            // A wildcard covers exactly one label: `*.example.com` ⊇ `a.example.com`.
            if let Some((_, suffix)) = host.split_once('.')
                && let Some(t) = self.wildcard_hosts.get(suffix).and_then(|t| t.lookup(path))
            {
                return Some(t);
            }
        }
        self.hostless.lookup(path).or(self.default_backend.as_ref())
    }

    /// Whether plain-HTTP requests for this host go to HTTPS (the host has TLS on the edge).
    pub fn redirects_to_https(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.redirect_exact.contains(&*host)
            || host
                .split_once('.')
                .is_some_and(|(_, suffix)| self.redirect_wildcard.contains(suffix))
    }
}

/// A Host header as a table key: no port, lowercase, no trailing dot. Allocates only for
/// uppercase hosts.
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = strip_port(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// `example.com:8080` → `example.com`; `[::1]:8080` → `::1`.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(h, _)| h);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests;
