//! Snapshot + tier settings → validated routing config, endpoints and problems. A pure function:
//! no I/O, no clock, deterministic for a given input.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use crate::config::{
    BackendKey, BackendProtocol, DefaultBackend, EndpointSet, IngressRef, PathMatch,
    ResolvedBackend, Route, RoutingConfig, ServicePortRef, TlsBinding, TlsSecret,
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
    /// PEM material of the Secrets named by `routes.tls` that exist and are well-formed.
    pub tls_secrets: BTreeMap<ObjectKey, TlsSecret>,
    /// Sorted, deduplicated.
    pub problems: Vec<Problem>,
    /// Objects in the source by kind.
    pub object_counts: Vec<(&'static str, usize)>,
    /// Ingresses of this tier's class: the ones whose status the leader writes.
    pub served_ingresses: Vec<ObjectKey>,
}

/// Translates a snapshot into the config one tier serves.
pub fn translate(snapshot: &Snapshot, settings: &TierSettings) -> Translation {
    let mut problems = BTreeSet::new();
    let our_class = snapshot
        .ingress_classes
        .get(&ObjectKey::new("", settings.class.as_str()));
    // An IngressClass of our name that names another controller is someone else's: serve none
    // of its Ingresses. Without an IngressClass object the name alone decides (manifest
    // directories and the legacy annotation often come without one).
    let foreign_controller = our_class
        .map(|c| {
            c.spec
                .as_ref()
                .and_then(|s| s.controller.as_deref())
                .unwrap_or("")
        })
        .filter(|c| *c != settings.controller);
    let serve_unclassed = settings.watch_without_class
        || (foreign_controller.is_none()
            && our_class
                .and_then(|c| c.metadata.annotations.as_ref())
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true"));

    let mut ingresses: Vec<(&ObjectKey, &Ingress)> = Vec::new();
    for (key, ing) in &snapshot.ingresses {
        match class_of(ing) {
            None if serve_unclassed => ingresses.push((key, ing)),
            Some(c) if c == settings.class => match foreign_controller {
                None => ingresses.push((key, ing)),
                Some(other) => {
                    problems.insert(Problem {
                        kind: "Ingress",
                        namespace: key.namespace.clone(),
                        name: key.name.clone(),
                        reason: ProblemReason::ClassControllerMismatch,
                        detail: format!(
                            "IngressClass {} names controller {other:?}, not {:?}: not served",
                            settings.class, settings.controller
                        ),
                    });
                }
            },
            _ => {}
        }
    }
    // Oldest first: on conflict the oldest Ingress keeps the rule (creationTimestamp, then
    // namespace/name), as other controllers do.
    ingresses.sort_by(|(ka, a), (kb, b)| {
        let ta = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let tb = b.metadata.creation_timestamp.as_ref().map(|t| t.0);
        // Objects without a timestamp (hand-written manifests) sort after dated ones.
        match (ta, tb) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
        .then_with(|| ka.cmp(kb))
    });

    let served_ingresses = ingresses.iter().map(|(k, _)| (*k).clone()).collect();
    let mut routes = RoutingConfig::default();
    let mut tls_secrets = BTreeMap::new();
    // Hosts with TLS, and whether every Ingress naming them keeps the redirect on.
    let mut redirect: BTreeMap<String, bool> = BTreeMap::new();
    // Hosts an Ingress redirects with `force-ssl-redirect`, TLS or not.
    let mut forced: BTreeSet<String> = BTreeSet::new();
    // (host or "" for host-less, path match) → the Ingress that owns it.
    let mut owners: HashMap<(String, PathMatch), IngressRef> = HashMap::new();

    for (key, ing) in ingresses {
        let source = IngressRef {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        };
        let problem = |reason, detail: String| Problem {
            kind: "Ingress",
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            reason,
            detail,
        };
        let Some(spec) = ing.spec.as_ref() else {
            continue;
        };
        let ann = crate::annotations::parse(ing.metadata.annotations.as_ref());
        for detail in &ann.problems {
            problems.insert(problem(ProblemReason::InvalidAnnotation, detail.clone()));
        }
        let forward_raw_path = match annotation(ing, NORMALIZE_PATH_ANNOTATION) {
            None | Some("true") => false,
            Some("false") => true,
            Some(other) => {
                problems.insert(problem(
                    ProblemReason::InvalidAnnotation,
                    format!(
                        "{NORMALIZE_PATH_ANNOTATION}: {other:?} is not \"true\" or \"false\"; paths are normalised"
                    ),
                ));
                false
            }
        };
        if settings.tier.reads_secrets() {
            let redirect_on = ann.ssl_redirect;
            if ann.force_ssl_redirect {
                let rule_hosts = spec
                    .rules
                    .iter()
                    .flatten()
                    .filter_map(|r| r.host.as_deref());
                forced.extend(rule_hosts.filter_map(|h| normalize_host(h.trim()).ok()));
            }
            for tls in spec.tls.iter().flatten() {
                let mut hosts = Vec::new();
                for h in tls.hosts.iter().flatten() {
                    match normalize_host(h.trim()) {
                        Ok(h) => hosts.push(h),
                        Err(detail) => {
                            problems.insert(problem(
                                ProblemReason::InvalidHost,
                                format!("tls: {detail}"),
                            ));
                        }
                    }
                }
                for h in &hosts {
                    let on = redirect.entry(h.clone()).or_insert(true);
                    *on &= redirect_on;
                }
                let Some(secret_name) = tls.secret_name.as_deref().filter(|n| !n.is_empty()) else {
                    // No Secret: these hosts get the default certificate.
                    continue;
                };
                let secret_key = ObjectKey::new(key.namespace.as_str(), secret_name);
                if secret_name.contains('/') {
                    problems.insert(problem(
                        ProblemReason::CrossNamespaceSecret,
                        format!("tls secretName {secret_name:?}: Secrets are only read from the Ingress's own namespace"),
                    ));
                    // Still bound (to a name no Secret can have), so the hosts keep their last
                    // good certificate rather than dropping to the default.
                } else {
                    match tls_secret(snapshot, &secret_key) {
                        Ok(material) => {
                            tls_secrets.insert(secret_key.clone(), material);
                        }
                        Err((reason, detail)) => {
                            problems.insert(problem(reason, detail));
                        }
                    }
                }
                routes.tls.push(TlsBinding {
                    hosts,
                    secret: secret_key,
                    ingress: source.clone(),
                });
            }
        }
        if let Some(db) = &spec.default_backend {
            match backend_key(&key.namespace, db) {
                Ok(backend) => match &routes.default_backend {
                    Some(existing) => {
                        problems.insert(problem(
                            ProblemReason::DefaultBackendConflict,
                            format!(
                                "defaultBackend already set by older Ingress {}",
                                existing.ingress
                            ),
                        ));
                    }
                    None => {
                        routes.default_backend = Some(DefaultBackend {
                            backend,
                            ingress: source.clone(),
                        })
                    }
                },
                Err((reason, detail)) => {
                    problems.insert(problem(reason, format!("defaultBackend: {detail}")));
                }
            }
        }
        for rule in spec.rules.iter().flatten() {
            let host = match rule.host.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(h) => match normalize_host(h) {
                    Ok(h) => Some(h),
                    Err(detail) => {
                        problems.insert(problem(ProblemReason::InvalidHost, detail));
                        continue;
                    }
                },
            };
            let Some(http) = &rule.http else { continue };
            for p in &http.paths {
                let shown_host = host.as_deref().unwrap_or("*");
                let routed = ann.regex_route(p.path.as_deref()).unwrap_or_else(|| {
                    let m = path_match(p.path.as_deref(), &p.path_type)?;
                    Ok((m.0, m.1, ann.policy.clone()))
                });
                let (path, implementation_specific, policy) = match routed {
                    Ok(m) => m,
                    Err((reason, detail)) => {
                        problems.insert(problem(reason, format!("host {shown_host}: {detail}")));
                        continue;
                    }
                };
                let backend = match backend_key(&key.namespace, &p.backend) {
                    Ok(b) => b,
                    Err((reason, detail)) => {
                        problems.insert(problem(
                            reason,
                            format!("host {shown_host} path {}: {detail}", path.path()),
                        ));
                        continue;
                    }
                };
                let owner_key = (host.clone().unwrap_or_default(), path.clone());
                if let Some(owner) = owners.get(&owner_key) {
                    if *owner != source {
                        problems.insert(problem(
                            ProblemReason::PathConflict,
                            format!(
                                "host {shown_host} path {} ({}) is already served by older Ingress {owner}",
                                path.path(),
                                path_kind(&path)
                            ),
                        ));
                    } else {
                        problems.insert(problem(
                            ProblemReason::PathConflict,
                            format!(
                                "host {shown_host} path {} ({}) appears twice; the first wins",
                                path.path(),
                                path_kind(&path)
                            ),
                        ));
                    }
                    continue;
                }
                owners.insert(owner_key, source.clone());
                let route = Route {
                    path,
                    implementation_specific,
                    forward_raw_path,
                    backend,
                    ingress: source.clone(),
                    policy,
                };
                match &host {
                    None => routes.hostless.push(route),
                    Some(h) => match h.strip_prefix("*.") {
                        Some(suffix) => routes
                            .wildcard_hosts
                            .entry(suffix.to_owned())
                            .or_default()
                            .push(route),
                        None => routes.exact_hosts.entry(h.clone()).or_default().push(route),
                    },
                }
            }
        }
    }

    if let Some(key) = settings
        .default_certificate
        .as_ref()
        .filter(|_| settings.tier.reads_secrets())
    {
        match tls_secret(snapshot, key) {
            Ok(material) => {
                tls_secrets.insert(key.clone(), material);
            }
            Err((reason, detail)) => {
                problems.insert(Problem {
                    kind: "Secret",
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                    reason,
                    detail: format!("--default-certificate: {detail}"),
                });
            }
        }
    }
    routes.https_redirect_hosts = redirect
        .into_iter()
        .filter_map(|(h, on)| on.then_some(h))
        .chain(forced)
        .collect();
    routes.known_hosts = known_hosts(snapshot);
    let endpoints = resolve_endpoints(snapshot, &routes, &mut problems);
    Translation {
        routes,
        endpoints,
        tls_secrets,
        problems: problems.into_iter().collect(),
        object_counts: snapshot.counts().to_vec(),
        served_ingresses,
    }
}

fn known_hosts(snapshot: &Snapshot) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for ing in snapshot.ingresses.values() {
        let Some(spec) = &ing.spec else { continue };
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
        for h in rule_hosts.chain(tls_hosts) {
            if let Ok(h) = normalize_host(h.trim()) {
                out.insert(h);
            }
        }
    }
    out
}

/// Reads a `kubernetes.io/tls` Secret's PEM material (`data`, or `stringData` as hand-written
/// manifests carry it).
fn tls_secret(snapshot: &Snapshot, key: &ObjectKey) -> Result<TlsSecret, Reject> {
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
    let field = |name: &str| -> Option<Vec<u8>> {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(name))
            .map(|b| b.0.clone())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(name))
                    .map(|s| s.as_bytes().to_vec())
            })
            .filter(|b| !b.is_empty())
    };
    match (field("tls.crt"), field("tls.key")) {
        (Some(cert_pem), Some(key_pem)) => Ok(TlsSecret { cert_pem, key_pem }),
        _ => Err((
            ProblemReason::SecretInvalid,
            format!("Secret {key} lacks tls.crt or tls.key"),
        )),
    }
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

type Reject = (ProblemReason, String);

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

fn backend_key(namespace: &str, backend: &IngressBackend) -> Result<BackendKey, Reject> {
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
        namespace: namespace.to_owned(),
        service: svc.name.clone(),
        port,
    })
}

/// Resolves every backend the routes name to ready endpoint addresses. A backend that cannot be
/// resolved keeps its routes (they answer 503, as a missing Service does elsewhere) and is
/// reported against the Ingress that names it first.
fn resolve_endpoints(
    snapshot: &Snapshot,
    routes: &RoutingConfig,
    problems: &mut BTreeSet<Problem>,
) -> EndpointSet {
    // Which Ingress to blame for a broken backend: the first that names it.
    let mut named_by: BTreeMap<&BackendKey, &IngressRef> = BTreeMap::new();
    for route in routes
        .exact_hosts
        .values()
        .chain(routes.wildcard_hosts.values())
        .flatten()
        .chain(routes.hostless.iter())
    {
        named_by.entry(&route.backend).or_insert(&route.ingress);
    }
    if let Some(db) = &routes.default_backend {
        named_by.entry(&db.backend).or_insert(&db.ingress);
    }

    let mut slices_by_service: HashMap<(&str, &str), Vec<_>> = HashMap::new();
    for (key, slice) in &snapshot.endpoint_slices {
        if let Some(svc) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        {
            slices_by_service
                .entry((key.namespace.as_str(), svc.as_str()))
                .or_default()
                .push(slice);
        }
    }

    let mut out = BTreeMap::new();
    for (backend, ingress) in named_by {
        let problem = |reason, detail: String| Problem {
            kind: "Ingress",
            namespace: ingress.namespace.clone(),
            name: ingress.name.clone(),
            reason,
            detail,
        };
        let svc_key = ObjectKey::new(backend.namespace.as_str(), backend.service.as_str());
        let Some(service) = snapshot.services.get(&svc_key) else {
            problems.insert(problem(
                ProblemReason::ServiceNotFound,
                format!("Service {svc_key} not found"),
            ));
            out.insert(backend.clone(), ResolvedBackend::default());
            continue;
        };
        if service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
            problems.insert(problem(
                ProblemReason::UnsupportedService,
                format!(
                    "Service {svc_key} is of type ExternalName, which tandem does not route to"
                ),
            ));
            out.insert(backend.clone(), ResolvedBackend::default());
            continue;
        }
        let Some(port) = find_service_port(service, &backend.port) else {
            problems.insert(problem(
                ProblemReason::ServicePortNotFound,
                format!("Service {svc_key} has no port {}", backend.port),
            ));
            out.insert(backend.clone(), ResolvedBackend::default());
            continue;
        };
        let single_port = service
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .is_some_and(|p| p.len() == 1);
        let port_name = port.name.as_deref().unwrap_or("");
        let protocol = BackendProtocol::from_app_protocol(port.app_protocol.as_deref())
            .unwrap_or_else(|| {
                problems.insert(problem(
                    ProblemReason::UnsupportedAppProtocol,
                    format!(
                        "Service {svc_key} port {} has appProtocol {:?}, which tandem does not speak; using HTTP/1.1",
                        backend.port,
                        port.app_protocol.as_deref().unwrap_or("")
                    ),
                ));
                BackendProtocol::Http1
            });
        let mut addrs = Vec::new();
        let slices = slices_by_service
            .get(&(backend.namespace.as_str(), backend.service.as_str()))
            .filter(|s| !s.is_empty());
        if let Some(slices) = slices {
            for slice in slices {
                let ports = slice.ports.as_deref().unwrap_or(&[]);
                let Some(p) = matching_port(ports, |p| p.name.as_deref(), port_name, single_port)
                    .and_then(|p| p.port)
                else {
                    continue;
                };
                for ep in slice.endpoints.iter().flatten() {
                    // A missing `ready` means ready, per the EndpointSlice API.
                    let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    if !ready {
                        continue;
                    }
                    push_addrs(&mut addrs, ep.addresses.iter().map(String::as_str), p);
                }
            }
        } else if let Some(eps) = snapshot.endpoints.get(&svc_key) {
            // Selector-less Services with hand-written Endpoints: the legacy fallback's case.
            for subset in eps.subsets.iter().flatten() {
                let ports = subset.ports.as_deref().unwrap_or(&[]);
                let Some(p) = matching_port(ports, |p| p.name.as_deref(), port_name, single_port)
                    .map(|p| p.port)
                else {
                    continue;
                };
                let ips = subset.addresses.iter().flatten().map(|a| a.ip.as_str());
                push_addrs(&mut addrs, ips, p);
            }
        }
        addrs.sort();
        addrs.dedup();
        out.insert(backend.clone(), ResolvedBackend { addrs, protocol });
    }
    EndpointSet(out)
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

fn push_addrs<'a>(out: &mut Vec<SocketAddr>, ips: impl Iterator<Item = &'a str>, port: i32) {
    let Ok(port) = u16::try_from(port) else {
        return;
    };
    for ip in ips {
        if let Ok(ip) = ip.parse::<IpAddr>() {
            out.push(SocketAddr::new(ip, port));
        }
    }
}

#[cfg(test)]
mod tests;
