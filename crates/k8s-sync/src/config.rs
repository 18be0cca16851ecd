//! The validated, immutable configuration a tier serves from. Built by [`crate::translate`] off the
//! hot path; the data path only reads it.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// The Ingress a route came from, as `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IngressRef {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl fmt::Display for IngressRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A Service port as an Ingress names it: by number or by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServicePortRef {
    Number(i32),
    Name(String),
}

impl fmt::Display for ServicePortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Name(s) => f.write_str(s),
        }
    }
}

/// One backend: a Service port in a namespace. Endpoints are resolved per key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    pub namespace: Arc<str>,
    pub service: Arc<str>,
    pub port: ServicePortRef,
}

impl fmt::Display for BackendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.service, self.port)
    }
}

/// How a rule's path matches a request path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathMatch {
    /// The request path equals this, case-sensitively.
    Exact(String),
    /// Element-wise prefix. Stored without trailing slash (`/` for the root).
    Prefix(String),
}

impl PathMatch {
    pub fn path(&self) -> &str {
        match self {
            Self::Exact(p) | Self::Prefix(p) => p,
        }
    }

    /// A host-less `/` Prefix rule: the catch-all that makes a legacy fallback.
    pub fn is_catch_all(&self) -> bool {
        matches!(self, Self::Prefix(p) if p == "/")
    }
}

/// One path rule of one host (or of no host).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    pub path: PathMatch,
    /// `pathType: ImplementationSpecific`, which tandem serves as Prefix.
    pub implementation_specific: bool,
    /// `tandem.dev/normalize-path: "false"`: forward the path as the client wrote it.
    pub forward_raw_path: bool,
    pub backend: BackendKey,
    pub ingress: IngressRef,
    /// What the Ingress's annotations ask of this route (`None`: nothing).
    pub policy: Option<std::sync::Arc<crate::annotations::RoutePolicy>>,
    /// A canary Ingress's backend taking a share of this route's requests.
    pub canary: Option<Arc<Canary>>,
}

/// The canary of a route: another Ingress (`canary: "true"`, same host, path and pathType)
/// whose backend takes the requests its rule picks. Its requests keep the main route's policy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Canary {
    pub backend: BackendKey,
    pub ingress: IngressRef,
    pub rule: Arc<crate::annotations::CanaryRule>,
}

/// The `spec.defaultBackend` that won.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DefaultBackend {
    pub backend: BackendKey,
    pub ingress: IngressRef,
}

/// Routes by host, in the order a request is matched: exact host, wildcard host, no host,
/// default backend.
///
/// The maps are persistent (`imbl`): a new config shares every untouched part with the last
/// one, so making it and cloning it cost in proportion to what changed. Each host's rules are
/// shared (`Arc`) between successive configs while the host is unchanged, so a publisher can
/// tell an untouched host by pointer and keep what it built for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutingConfig {
    /// Exact hosts, lowercased.
    pub exact_hosts: imbl::OrdMap<String, Arc<Vec<Route>>>,
    /// Wildcard hosts by the suffix after `*.`, lowercased (`*.example.com` → `example.com`).
    pub wildcard_hosts: imbl::OrdMap<String, Arc<Vec<Route>>>,
    /// Rules without host.
    pub hostless: Arc<Vec<Route>>,
    pub default_backend: Option<DefaultBackend>,
    /// TLS (edge tier only; empty for the router): per host (exact, or `*.suffix`), the Secrets
    /// bound to it, oldest Ingress first: the first good one serves it.
    pub tls: imbl::OrdMap<String, Arc<Vec<TlsHostBinding>>>,
    /// Hosts (exact, or `*.suffix`) whose plain-HTTP requests are redirected to HTTPS.
    pub https_redirect_hosts: imbl::OrdSet<String>,
    /// Every host any Ingress in the source names (rules or TLS, any class), lowercased: the only
    /// values a per-host metric label may take.
    pub known_hosts: imbl::OrdSet<String>,
}

/// One `spec.tls` entry that resolved to a Secret in the Ingress's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TlsBinding {
    /// Lowercased; wildcards keep their `*.` prefix.
    pub hosts: Vec<String>,
    /// `namespace/name` of the `kubernetes.io/tls` Secret.
    pub secret: crate::object::ObjectKey,
    pub ingress: IngressRef,
}

/// One Secret bound to a host, and the Ingress that binds it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TlsHostBinding {
    pub secret: crate::object::ObjectKey,
    pub ingress: IngressRef,
}

/// The PEM material of one TLS Secret, as found; parsing is the edge tier's job.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsSecret {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for TlsSecret {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSecret")
            .field("cert_pem_len", &self.cert_pem.len())
            .field("key_pem_len", &self.key_pem.len())
            .finish()
    }
}

impl RoutingConfig {
    /// Every backend a route, its canary or the default backend names.
    pub fn backends(&self) -> impl Iterator<Item = &BackendKey> {
        self.exact_hosts
            .values()
            .chain(self.wildcard_hosts.values())
            .flat_map(|r| r.iter())
            .chain(self.hostless.iter())
            .flat_map(|r| std::iter::once(&r.backend).chain(r.canary.iter().map(|c| &c.backend)))
            .chain(self.default_backend.iter().map(|d| &d.backend))
    }

    pub fn route_count(&self) -> usize {
        self.exact_hosts.values().map(|r| r.len()).sum::<usize>()
            + self.wildcard_hosts.values().map(|r| r.len()).sum::<usize>()
            + self.hostless.len()
            + usize::from(self.default_backend.is_some())
    }
}

/// How a backend is spoken to, from its Service port's `appProtocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BackendProtocol {
    /// HTTP/1.1 over pooled keep-alive connections: the default, and what any
    /// `appProtocol` other than h2c means.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge over plain TCP (`appProtocol: kubernetes.io/h2c`),
    /// multiplexed. WebSocket upgrades still use HTTP/1.1.
    H2c,
    /// HTTP/1.1 over TLS (`backend-protocol: HTTPS` only).
    Https,
    /// HTTP/2 over TLS, ALPN `h2` (`backend-protocol: GRPCS` only).
    Grpcs,
}

impl BackendProtocol {
    /// The `appProtocol` value (Kubernetes' standard names) that selects h2c.
    pub const H2C_APP_PROTOCOL: &'static str = "kubernetes.io/h2c";

    /// The protocol an `appProtocol` value asks for, or `None` for a value tandem does not
    /// speak (then HTTP/1.1 is used and the value is reported).
    pub fn from_app_protocol(app_protocol: Option<&str>) -> Option<Self> {
        match app_protocol.map(str::trim) {
            None | Some("") => Some(Self::Http1),
            Some(p) if p.eq_ignore_ascii_case(Self::H2C_APP_PROTOCOL) => Some(Self::H2c),
            // Plain HTTP/1.1 and WebSocket (which starts as HTTP/1.1).
            Some(p)
                if ["http", "kubernetes.io/http", "kubernetes.io/ws"]
                    .iter()
                    .any(|v| p.eq_ignore_ascii_case(v)) =>
            {
                Some(Self::Http1)
            }
            Some(_) => None,
        }
    }
}

/// One backend as resolved: its ready endpoints and the protocol its Service port speaks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvedBackend {
    pub addrs: Vec<SocketAddr>,
    pub protocol: BackendProtocol,
    /// Endpoints still serving but not ready (terminating, or failing readiness while still
    /// serving): no new sessions, but requests pinned to them (affinity cookie, hash key) keep
    /// going there. Never in `addrs`.
    pub draining: Vec<SocketAddr>,
    /// The weight of each endpoint, those of `addrs` then those of `draining` (0 to 256, from
    /// the Service's `tandem.dev/endpoint-weights` / `zone-weights`), or empty when they are all
    /// equal (no weights set: the common case). Not all 0 over `addrs`: such weights are
    /// reported and read as 1.
    pub weights: Vec<u16>,
}

/// Ready endpoints per backend. Churns far more often than routes, so it is published apart.
/// Persistent: a new set shares every unchanged backend with the last one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointSet(pub imbl::OrdMap<BackendKey, ResolvedBackend>);

impl EndpointSet {
    pub fn get(&self, key: &BackendKey) -> &[SocketAddr] {
        self.0.get(key).map_or(&[], |b| b.addrs.as_slice())
    }
}
