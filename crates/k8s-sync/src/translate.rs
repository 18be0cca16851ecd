//! Snapshot + tier settings → validated routing config, endpoints and problems. A pure function:
//! no I/O, no clock, deterministic for a given input.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use crate::annotations::weights::ServiceWeights;
use crate::config::{
    BackendKey, BackendProtocol, Canary, EndpointSet, IngressRef, PathMatch, ResolvedBackend,
    Route, RoutingConfig, ServicePortRef, TlsBinding, TlsSecret,
};
use crate::object::{ObjectKey, Snapshot};
use crate::problem::{Problem, ProblemReason};
use crate::tier::Tier;

/// Legacy annotation that predates `spec.ingressClassName`.
pub const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Marks an IngressClass as the cluster default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What one tier serves.
#[derive(Clone, Debug)]
pub struct TierSettings {
    pub tier: Tier,
    /// IngressClass name this tier serves.
    pub class: String,
    /// The `spec.controller` our IngressClass must name; an IngressClass of our name that names
    /// another controller belongs to someone else and is not served.
    pub controller: String,
    /// Serve Ingresses without any class, even when our IngressClass is not the default.
    pub watch_without_class: bool,
    /// `--default-certificate`: a TLS Secret served when no host matches (edge tier).
    pub default_certificate: Option<ObjectKey>,
}

/// Per-Ingress opt-out of the plain-HTTP → HTTPS redirect on the edge tier.
pub const SSL_REDIRECT_ANNOTATION: &str = "tandem.dev/ssl-redirect";
/// Per-Ingress opt-out of forwarding the normalised path: `"false"` sends the path upstream as
/// the client wrote it (routing still uses the normalised path), for backends that need it.
pub const NORMALIZE_PATH_ANNOTATION: &str = "tandem.dev/normalize-path";

fn annotation<'a>(ing: &'a Ingress, name: &str) -> Option<&'a str> {
    ing.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(name))
        .map(String::as_str)
}

/// The result of one translation.
#[derive(Clone, Debug, Default)]
pub struct Translation {
    pub routes: RoutingConfig,
    pub endpoints: EndpointSet,
    /// PEM material of the Secrets named by `routes.tls` that exist and are well-formed; shared
    /// between translations while a Secret is unchanged.
    pub tls_secrets: imbl::OrdMap<ObjectKey, Arc<TlsSecret>>,
    /// Sorted, deduplicated.
    pub problems: Vec<Problem>,
    /// Objects in the source by kind.
    pub object_counts: Vec<(&'static str, usize)>,
    /// Ingresses of this tier's class: the ones whose status the leader writes.
    pub served_ingresses: imbl::OrdSet<ObjectKey>,
    /// What changed since the previous translation of the same [`Translator`] (`None`:
    /// anything may have, e.g. the first one): a sink that applied that one can apply only this.
    pub delta: Option<Delta>,
}

/// What one translation changed relative to the one before it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// Host keys whose routes changed: `""` for the host-less rules, `*.suffix` for wildcards.
    pub route_hosts: BTreeSet<String>,
    /// The default backend changed.
    pub default_backend: bool,
    /// Hosts added to or removed from `known_hosts`.
    pub known_hosts: BTreeSet<String>,
    /// Backends added, removed, or whose endpoints or protocol changed.
    pub backends: BTreeSet<BackendKey>,
    /// Ingresses (of any class) added, changed or removed.
    pub ingresses: BTreeSet<ObjectKey>,
    /// Hosts whose TLS bindings changed.
    pub tls_hosts: BTreeSet<String>,
    /// Hosts that started or stopped being redirected to HTTPS.
    pub https_hosts: BTreeSet<String>,
    /// Secrets whose material, problems or binding may have changed.
    pub secrets: BTreeSet<ObjectKey>,
}

/// Translates a snapshot into the config one tier serves, from scratch. A long-lived
/// [`Translator`] gives the same result for the same snapshot, re-translating only what changed.
pub fn translate(snapshot: &Snapshot, settings: &TierSettings) -> Translation {
    Translator::new(settings.clone()).translate_all(snapshot)
}

/// When an Ingress was made, for "oldest wins": creationTimestamp (objects without one — hand-
/// written manifests — after dated ones), then namespace/name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Age {
    undated: bool,
    created: Option<k8s_openapi::jiff::Timestamp>,
    key: ObjectKey,
}

impl Age {
    fn of(key: &ObjectKey, ing: &Ingress) -> Self {
        let created = ing.metadata.creation_timestamp.as_ref().map(|t| t.0);
        Self {
            undated: created.is_none(),
            created,
            key: key.clone(),
        }
    }
}

/// What one served Ingress contributes, judged on its own (no other object consulted).
#[derive(Debug)]
pub(crate) struct IngressOut {
    pub(crate) age: Age,
    pub(crate) source: IngressRef,
    /// Valid rules in declaration order, by host key: `""` host-less, `host`, or `*.suffix`.
    pub(crate) rules: Vec<(String, Route)>,
    pub(crate) default_backend: Option<BackendKey>,
    /// `spec.tls` entries with a Secret name (edge tier only).
    pub(crate) tls: Vec<TlsBinding>,
    /// Hosts of every `spec.tls` entry (with or without Secret), and with `force-ssl-redirect`
    /// the rule hosts: the hosts whose redirect to HTTPS this Ingress decides on.
    pub(crate) tls_hosts: Vec<String>,
    pub(crate) redirect_on: bool,
    /// `canary: "true"`: the rules are canaries of other Ingresses' routes, never routes.
    pub(crate) canary: Option<Arc<crate::annotations::CanaryRule>>,
    /// Problems of this Ingress alone (invalid host, path, backend, annotation, …).
    pub(crate) problems: Vec<Problem>,
}

impl IngressOut {
    /// The hosts this Ingress binds to a Secret, each once.
    pub(crate) fn tls_host_keys(&self) -> BTreeSet<&str> {
        self.tls
            .iter()
            .flat_map(|b| b.hosts.iter().map(String::as_str))
            .collect()
    }

    /// The hosts whose HTTPS redirect this Ingress has a say in, each once.
    pub(crate) fn redirect_host_keys(&self) -> BTreeSet<&str> {
        self.tls_hosts.iter().map(String::as_str).collect()
    }

    /// The host keys this Ingress has rules for, each once.
    pub(crate) fn host_keys(&self) -> BTreeSet<&str> {
        self.rules.iter().map(|(h, _)| h.as_str()).collect()
    }
}

fn ingress_problem(key: &ObjectKey, reason: ProblemReason, detail: String) -> Problem {
    Problem {
        kind: "Ingress",
        namespace: key.namespace.to_string(),
        name: key.name.to_string(),
        reason,
        detail,
    }
}

/// Parses one served Ingress.
pub(crate) fn parse_ingress(key: &ObjectKey, ing: &Ingress, settings: &TierSettings) -> IngressOut {
    let source = IngressRef {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    };
    let mut out = IngressOut {
        age: Age::of(key, ing),
        source: source.clone(),
        rules: Vec::new(),
        default_backend: None,
        tls: Vec::new(),
        tls_hosts: Vec::new(),
        redirect_on: true,
        canary: None,
        problems: Vec::new(),
    };
    let problem = |reason, detail: String| ingress_problem(key, reason, detail);
    let Some(spec) = ing.spec.as_ref() else {
        return out;
    };
    let ann = crate::annotations::parse(ing.metadata.annotations.as_ref());
    for detail in &ann.problems {
        out.problems
            .push(problem(ProblemReason::InvalidAnnotation, detail.clone()));
    }
    // A canary Ingress contributes only its rules' backends, as canaries (ingress-nginx ignores
    // its TLS, default backend and other annotations: its requests take the main route's).
    out.canary = ann.canary.clone();
    let canary = out.canary.is_some();
    let forward_raw_path = match annotation(ing, NORMALIZE_PATH_ANNOTATION) {
        None | Some("true") => false,
        Some("false") => true,
        Some(other) => {
            out.problems.push(problem(
                ProblemReason::InvalidAnnotation,
                format!(
                    "{NORMALIZE_PATH_ANNOTATION}: {other:?} is not \"true\" or \"false\"; paths are normalised"
                ),
            ));
            false
        }
    };
    if settings.tier.reads_secrets() && !canary {
        out.redirect_on = ann.ssl_redirect;
        if ann.force_ssl_redirect {
            let rule_hosts = spec
                .rules
                .iter()
                .flatten()
                .filter_map(|r| r.host.as_deref());
            out.tls_hosts
                .extend(rule_hosts.filter_map(|h| normalize_host(h.trim()).ok()));
        }
        for tls in spec.tls.iter().flatten() {
            let mut hosts = Vec::new();
            for h in tls.hosts.iter().flatten() {
                match normalize_host(h.trim()) {
                    Ok(h) => hosts.push(h),
                    Err(detail) => {
                        out.problems.push(problem(
                            ProblemReason::InvalidHost,
                            format!("tls: {detail}"),
                        ));
                    }
                }
            }
            out.tls_hosts.extend(hosts.iter().cloned());
            let Some(secret_name) = tls.secret_name.as_deref().filter(|n| !n.is_empty()) else {
                // No Secret: these hosts get the default certificate.
                continue;
            };
            if secret_name.contains('/') {
                out.problems.push(problem(
                    ProblemReason::CrossNamespaceSecret,
                    format!("tls secretName {secret_name:?}: Secrets are only read from the Ingress's own namespace"),
                ));
                // Still bound (to a name no Secret can have), so the hosts keep their last
                // good certificate rather than dropping to the default.
            }
            out.tls.push(TlsBinding {
                hosts,
                secret: ObjectKey::new(key.namespace.clone(), secret_name),
                ingress: source.clone(),
            });
        }
    }
    if canary && spec.default_backend.is_some() {
        out.problems.push(problem(
            ProblemReason::CanaryWithoutMain,
            "defaultBackend of a canary Ingress is not supported; ignored".to_owned(),
        ));
    } else if let Some(db) = &spec.default_backend {
        match backend_key(&key.namespace, db) {
            Ok(backend) => out.default_backend = Some(backend),
            Err((reason, detail)) => {
                out.problems
                    .push(problem(reason, format!("defaultBackend: {detail}")));
            }
        }
    }
    for rule in spec.rules.iter().flatten() {
        let host = match rule.host.as_deref().map(str::trim) {
            None | Some("") => String::new(),
            Some(h) => match normalize_host(h) {
                Ok(h) => h,
                Err(detail) => {
                    out.problems
                        .push(problem(ProblemReason::InvalidHost, detail));
                    continue;
                }
            },
        };
        let Some(http) = &rule.http else { continue };
        let shown_host = if host.is_empty() { "*" } else { host.as_str() };
        for p in &http.paths {
            let routed = ann.regex_route(p.path.as_deref()).unwrap_or_else(|| {
                let m = path_match(p.path.as_deref(), &p.path_type)?;
                let policy = ann.policy_for(&m.0);
                Ok((m.0, m.1, policy))
            });
            let (path, implementation_specific, policy) = match routed {
                Ok(m) => m,
                Err((reason, detail)) => {
                    out.problems
                        .push(problem(reason, format!("host {shown_host}: {detail}")));
                    continue;
                }
            };
            let backend = match backend_key(&key.namespace, &p.backend) {
                Ok(b) => b,
                Err((reason, detail)) => {
                    out.problems.push(problem(
                        reason,
                        format!("host {shown_host} path {}: {detail}", path.path()),
                    ));
                    continue;
                }
            };
            out.rules.push((
                host.clone(),
                Route {
                    path,
                    implementation_specific,
                    forward_raw_path,
                    backend,
                    ingress: source.clone(),
                    policy: if canary { None } else { policy },
                    canary: None,
                },
            ));
        }
    }
    // Kept for as long as the Ingress is unchanged: no spare capacity.
    out.rules.shrink_to_fit();
    out.tls.shrink_to_fit();
    out.tls_hosts.shrink_to_fit();
    out.problems.shrink_to_fit();
    out
}

/// The routes of one host key from the Ingresses that have rules for it, oldest first: the
/// first claim of a host + path + pathType wins, every later one is reported. Then canary
/// Ingresses, oldest first, attach to the route of the same path: one canary per route; a canary
/// with no such route, or a second one, is reported and not served.
pub(crate) fn merge_host<'a>(
    host_key: &str,
    contributors: impl Iterator<Item = &'a IngressOut> + Clone,
) -> (Vec<Route>, Vec<Problem>) {
    let shown_host = if host_key.is_empty() { "*" } else { host_key };
    let mut routes: Vec<Route> = Vec::new();
    let mut owners: HashMap<&PathMatch, (&IngressRef, usize)> = HashMap::new();
    let mut problems = Vec::new();
    let rules_of = |ing: &'a IngressOut| {
        ing.rules
            .iter()
            .filter(move |(h, _)| h == host_key)
            .map(|(_, r)| r)
    };
    for ing in contributors.clone().filter(|i| i.canary.is_none()) {
        for route in rules_of(ing) {
            if let Some((owner, _)) = owners.get(&route.path) {
                let detail = if **owner != ing.source {
                    format!(
                        "host {shown_host} path {} ({}) is already served by older Ingress {owner}",
                        route.path.path(),
                        path_kind(&route.path)
                    )
                } else {
                    format!(
                        "host {shown_host} path {} ({}) appears twice; the first wins",
                        route.path.path(),
                        path_kind(&route.path)
                    )
                };
                problems.push(ingress_problem(
                    &ing.age.key,
                    ProblemReason::PathConflict,
                    detail,
                ));
                continue;
            }
            owners.insert(&route.path, (&ing.source, routes.len()));
            routes.push(route.clone());
        }
    }
    for ing in contributors {
        let Some(rule) = &ing.canary else { continue };
        for c in rules_of(ing) {
            let at = format!(
                "host {shown_host} path {} ({})",
                c.path.path(),
                path_kind(&c.path)
            );
            let Some((owner, i)) = owners.get(&c.path) else {
                problems.push(ingress_problem(
                    &ing.age.key,
                    ProblemReason::CanaryWithoutMain,
                    format!("canary for {at}: no Ingress serves that host, path and pathType; not served"),
                ));
                continue;
            };
            let main = &mut routes[*i];
            if main.backend == c.backend {
                problems.push(ingress_problem(
                    &ing.age.key,
                    ProblemReason::CanaryConflict,
                    format!(
                        "canary for {at} names the main route's own backend {}; not served",
                        c.backend
                    ),
                ));
                continue;
            }
            if let Some(existing) = &main.canary {
                let detail = if existing.ingress == ing.source {
                    format!("canary for {at} appears twice; the first wins")
                } else {
                    format!(
                        "{at} of Ingress {owner} already has a canary from older Ingress {}",
                        existing.ingress
                    )
                };
                problems.push(ingress_problem(
                    &ing.age.key,
                    ProblemReason::CanaryConflict,
                    detail,
                ));
                continue;
            }
            main.canary = Some(Arc::new(Canary {
                backend: c.backend.clone(),
                ingress: ing.source.clone(),
                rule: rule.clone(),
            }));
        }
    }
    // Kept (shared) until the host changes: no spare capacity.
    routes.shrink_to_fit();
    (routes, problems)
}

/// Every host an Ingress names (rules or TLS), lowercased, each once.
pub(crate) fn hosts_named(ing: &Ingress) -> BTreeSet<String> {
    let Some(spec) = &ing.spec else {
        return BTreeSet::new();
    };
    let rule_hosts = spec
        .rules
        .iter()
        .flatten()
        .filter_map(|r| r.host.as_deref());
    let tls_hosts = spec
        .tls
        .iter()
        .flatten()
        .flat_map(|t| t.hosts.iter().flatten())
        .map(String::as_str);
    rule_hosts
        .chain(tls_hosts)
        .filter_map(|h| normalize_host(h.trim()).ok())
        .collect()
}

/// Reads a `kubernetes.io/tls` Secret's PEM material (`data`, or `stringData` as hand-written
/// manifests carry it).
/// (`tls.crt`, `tls.key`), borrowed from the snapshot: copied only when they changed.
pub(crate) fn tls_secret(snapshot: &Snapshot, key: &ObjectKey) -> Result<Arc<TlsSecret>, Reject> {
    let Some(secret) = snapshot.secrets.get(key) else {
        return Err((
            ProblemReason::SecretNotFound,
            format!("tls Secret {key} not found"),
        ));
    };
    if let Some(t) = secret.type_.as_deref()
        && t != "kubernetes.io/tls"
    {
        return Err((
            ProblemReason::SecretInvalid,
            format!("Secret {key} is of type {t}, not kubernetes.io/tls"),
        ));
    }
    snapshot.tls_material(key).cloned().ok_or_else(|| {
        (
            ProblemReason::SecretInvalid,
            format!("Secret {key} lacks tls.crt or tls.key"),
        )
    })
}

/// The class an Ingress asks for: `spec.ingressClassName`, else the legacy annotation.
pub fn class_of(ing: &Ingress) -> Option<&str> {
    ing.spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref())
        .or_else(|| {
            ing.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(CLASS_ANNOTATION))
                .map(String::as_str)
        })
        .filter(|c| !c.is_empty())
}

/// Lowercases a host and checks its form: DNS labels, optionally one leading `*.`.
fn normalize_host(host: &str) -> Result<String, String> {
    let lower = host.to_ascii_lowercase();
    let rest = lower.strip_prefix("*.").unwrap_or(&lower);
    let valid = !rest.is_empty()
        && rest.len() <= 253
        && rest.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if valid {
        Ok(lower)
    } else {
        Err(format!(
            "host {host:?} is not a DNS name or a wildcard of the form *.example.com"
        ))
    }
}

pub(crate) type Reject = (ProblemReason, String);

fn path_match(path: Option<&str>, path_type: &str) -> Result<(PathMatch, bool), Reject> {
    let path = match (path, path_type) {
        (None | Some(""), "ImplementationSpecific") => "/",
        (None | Some(""), _) => {
            return Err((
                ProblemReason::InvalidPath,
                format!("path is required for pathType {path_type}"),
            ));
        }
        (Some(p), _) => p,
    };
    if !path.starts_with('/') {
        return Err((
            ProblemReason::InvalidPath,
            format!("path {path:?} must start with /"),
        ));
    }
    if path
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#')
    {
        return Err((
            ProblemReason::InvalidPath,
            format!("path {path:?} contains a character not allowed in a path"),
        ));
    }
    match path_type {
        "Exact" => Ok((PathMatch::Exact(path.to_owned()), false)),
        "Prefix" => Ok((PathMatch::Prefix(normalize_prefix(path)), false)),
        // Served as Prefix; documented in the README.
        "ImplementationSpecific" => Ok((PathMatch::Prefix(normalize_prefix(path)), true)),
        other => Err((
            ProblemReason::InvalidPathType,
            format!("pathType {other:?} is not Exact, Prefix or ImplementationSpecific"),
        )),
    }
}

/// `/foo/` and `/foo` are the same Prefix; `/` stays `/`.
fn normalize_prefix(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    }
}

fn path_kind(p: &PathMatch) -> &'static str {
    match p {
        PathMatch::Exact(_) => "Exact",
        PathMatch::Prefix(_) => "Prefix",
    }
}

fn backend_key(namespace: &Arc<str>, backend: &IngressBackend) -> Result<BackendKey, Reject> {
    if backend.resource.is_some() {
        return Err((
            ProblemReason::ResourceBackend,
            "resource backends are not supported; use a Service".to_owned(),
        ));
    }
    let Some(svc) = &backend.service else {
        return Err((
            ProblemReason::InvalidBackend,
            "backend names no Service".to_owned(),
        ));
    };
    let port = match &svc.port {
        Some(p) => match (&p.name, p.number) {
            (Some(name), _) if !name.is_empty() => ServicePortRef::Name(name.clone()),
            (_, Some(n)) if n > 0 => ServicePortRef::Number(n),
            _ => {
                return Err((
                    ProblemReason::InvalidBackend,
                    format!("backend Service {} names no port", svc.name),
                ));
            }
        },
        None => {
            return Err((
                ProblemReason::InvalidBackend,
                format!("backend Service {} names no port", svc.name),
            ));
        }
    };
    if svc.name.is_empty() {
        return Err((
            ProblemReason::InvalidBackend,
            "backend Service has no name".to_owned(),
        ));
    }
    Ok(BackendKey {
        namespace: namespace.clone(),
        service: svc.name.as_str().into(),
        port,
    })
}

/// The EndpointSlices of each Service (`(namespace, service name)`), by the
/// `kubernetes.io/service-name` label.
pub(crate) fn service_of_slice(key: &ObjectKey, slice: &EndpointSlice) -> Option<(String, String)> {
    slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .map(|svc| (key.namespace.to_string(), svc.clone()))
}

/// Resolves one backend to its ready (and draining) endpoint addresses and their weights, given
/// the EndpointSlices of its Service. A backend that cannot be resolved keeps its routes (they
/// answer 503, as a missing Service does elsewhere) and is reported against `ingress`, an
/// Ingress that names it; invalid weight annotations are reported against the Service.
pub(crate) fn resolve_backend<'a>(
    snapshot: &Snapshot,
    backend: &BackendKey,
    ingress: &IngressRef,
    slices: impl Iterator<Item = &'a EndpointSlice>,
    problems: &mut Vec<Problem>,
) -> ResolvedBackend {
    let problem = |reason, detail: String| Problem {
        kind: "Ingress",
        namespace: ingress.namespace.to_string(),
        name: ingress.name.to_string(),
        reason,
        detail,
    };
    let svc_key = ObjectKey::new(backend.namespace.clone(), backend.service.clone());
    let Some(service) = snapshot.services.get(&svc_key) else {
        problems.push(problem(
            ProblemReason::ServiceNotFound,
            format!("Service {svc_key} not found"),
        ));
        return ResolvedBackend::default();
    };
    if service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        problems.push(problem(
            ProblemReason::UnsupportedService,
            format!("Service {svc_key} is of type ExternalName, which tandem does not route to"),
        ));
        return ResolvedBackend::default();
    }
    let Some(port) = find_service_port(service, &backend.port) else {
        problems.push(problem(
            ProblemReason::ServicePortNotFound,
            format!("Service {svc_key} has no port {}", backend.port),
        ));
        return ResolvedBackend::default();
    };
    let single_port = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .is_some_and(|p| p.len() == 1);
    let port_name = port.name.as_deref().unwrap_or("");
    let protocol = BackendProtocol::from_app_protocol(port.app_protocol.as_deref())
        .unwrap_or_else(|| {
            problems.push(problem(
                ProblemReason::UnsupportedAppProtocol,
                format!(
                    "Service {svc_key} port {} has appProtocol {:?}, which tandem does not speak; using HTTP/1.1",
                    backend.port,
                    port.app_protocol.as_deref().unwrap_or("")
                ),
            ));
            BackendProtocol::Http1
        });
    let mut addrs: Vec<(SocketAddr, Option<&str>)> = Vec::new();
    let mut draining: Vec<(SocketAddr, Option<&str>)> = Vec::new();
    let mut slices = slices.peekable();
    if slices.peek().is_some() {
        for slice in slices {
            let ports = slice.ports.as_deref().unwrap_or(&[]);
            let Some(p) = matching_port(ports, |p| p.name.as_deref(), port_name, single_port)
                .and_then(|p| p.port)
            else {
                continue;
            };
            for ep in slice.endpoints.iter().flatten() {
                // A missing `ready` means ready, per the EndpointSlice API.
                let c = ep.conditions.as_ref();
                let ready = c.and_then(|c| c.ready).unwrap_or(true);
                // `serving` (ready regardless of termination) set: draining, not gone.
                let serving = c.and_then(|c| c.serving).unwrap_or(false);
                let list = match (ready, serving) {
                    (true, _) => &mut addrs,
                    (false, true) => &mut draining,
                    (false, false) => continue,
                };
                let ips = ep.addresses.iter().map(String::as_str);
                push_addrs(list, ips, p, ep.zone.as_deref());
            }
        }
    } else if let Some(eps) = snapshot.endpoints.get(&svc_key) {
        // Selector-less Services with hand-written Endpoints: the legacy fallback's case.
        for subset in eps.subsets.iter().flatten() {
            let ports = subset.ports.as_deref().unwrap_or(&[]);
            let Some(p) =
                matching_port(ports, |p| p.name.as_deref(), port_name, single_port).map(|p| p.port)
            else {
                continue;
            };
            let ips = subset.addresses.iter().flatten().map(|a| a.ip.as_str());
            push_addrs(&mut addrs, ips, p, None);
        }
    }
    // Stable: an address in several slices keeps the zone of the first.
    for list in [&mut addrs, &mut draining] {
        list.sort_by_key(|(a, _)| *a);
        list.dedup_by_key(|(a, _)| *a);
    }
    // An address ready in one slice and draining in another (a slice lagging behind) is ready.
    draining.retain(|(a, _)| addrs.binary_search_by_key(a, |(x, _)| *x).is_err());
    let weights = endpoint_weights(
        service,
        &svc_key,
        &backend.port,
        &addrs,
        &draining,
        problems,
    );
    ResolvedBackend {
        addrs: addrs.into_iter().map(|(a, _)| a).collect(),
        protocol,
        draining: draining.into_iter().map(|(a, _)| a).collect(),
        weights,
    }
}

/// The weights of a backend's endpoints (ready, then draining) from its Service's
/// annotations; empty when they are all equal. Invalid annotations and all-zero ready weights
/// are reported against the Service.
fn endpoint_weights(
    service: &Service,
    svc_key: &ObjectKey,
    port: &ServicePortRef,
    ready: &[(SocketAddr, Option<&str>)],
    draining: &[(SocketAddr, Option<&str>)],
    problems: &mut Vec<Problem>,
) -> Vec<u16> {
    let problem = |reason, detail: String| Problem {
        kind: "Service",
        namespace: svc_key.namespace.to_string(),
        name: svc_key.name.to_string(),
        reason,
        detail,
    };
    let (weights, invalid) = ServiceWeights::parse(service.metadata.annotations.as_ref());
    problems.extend(
        invalid
            .into_iter()
            .map(|d| problem(ProblemReason::InvalidAnnotation, d)),
    );
    if weights.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<u16> = ready
        .iter()
        .chain(draining)
        .map(|(a, zone)| weights.weight(*a, *zone))
        .collect();
    let n = ready.len();
    if n > 0 && out[..n].iter().all(|w| *w == 0) {
        problems.push(problem(
            ProblemReason::AllWeightsZero,
            format!(
                "every ready endpoint of port {port} has weight 0; all are weighted 1 (weights never empty a backend)"
            ),
        ));
        out[..n].fill(1);
    }
    if out.windows(2).all(|w| w[0] == w[1]) {
        return Vec::new();
    }
    out
}

/// The endpoint port behind a Service port: the one of the same name, or the only one when the
/// Service has a single port too (both sides may leave it unnamed).
fn matching_port<'a, P>(
    ports: &'a [P],
    name: impl Fn(&P) -> Option<&str>,
    wanted: &str,
    single_service_port: bool,
) -> Option<&'a P> {
    ports
        .iter()
        .find(|p| name(p).unwrap_or("") == wanted)
        .or_else(|| (single_service_port && ports.len() == 1).then(|| &ports[0]))
}

fn find_service_port<'a>(service: &'a Service, port: &ServicePortRef) -> Option<&'a ServicePort> {
    let ports = service.spec.as_ref()?.ports.as_ref()?;
    ports.iter().find(|p| match port {
        ServicePortRef::Number(n) => p.port == *n,
        ServicePortRef::Name(name) => p.name.as_deref() == Some(name.as_str()),
    })
}

fn push_addrs<'a, 'z>(
    out: &mut Vec<(SocketAddr, Option<&'z str>)>,
    ips: impl Iterator<Item = &'a str>,
    port: i32,
    zone: Option<&'z str>,
) {
    let Ok(port) = u16::try_from(port) else {
        return;
    };
    for ip in ips {
        if let Ok(ip) = ip.parse::<IpAddr>() {
            out.push((SocketAddr::new(ip, port), zone));
        }
    }
}

mod incremental;
pub use incremental::Translator;

#[cfg(test)]
mod tests;
