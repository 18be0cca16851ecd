//! Per-Ingress annotations → a typed [`RoutePolicy`], parsed once at translation. Each annotation
//! is read under `tandem.dev/` and, where the meaning is the same, under ingress-nginx's
//! `nginx.ingress.kubernetes.io/` so manifests migrate unchanged. When both spellings are set
//! with different values, `tandem.dev/` wins and the conflict is reported. An invalid value is
//! reported and that one annotation is ignored (the source-range annotations fail closed: the
//! Ingress's routes answer 403 to everyone); the rest of the Ingress is served.
//!
//! Nothing here is ever turned into configuration text: every value becomes a number, a
//! duration, a CIDR, a validated header, a status code or a compiled regex.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::config::{BackendProtocol, PathMatch};
use crate::problem::ProblemReason;

mod canary;
mod upstream_tls;

pub use canary::{CanaryRule, HeaderMatch, Verdict};
pub use upstream_tls::UpstreamTls;
pub mod balance;
pub mod weights;
pub use balance::Balance;

/// A regex path as routed: its Prefix, `implementation_specific` (always true: regex paths are
/// ingress-nginx's implementation-specific meaning) and its policy.
pub type RegexRoute = (PathMatch, bool, Option<Arc<RoutePolicy>>);

/// tandem's annotation prefix.
pub const TANDEM_PREFIX: &str = "tandem.dev/";
/// ingress-nginx's annotation prefix, accepted for the annotations whose meaning tandem keeps.
pub const NGINX_PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// Longest value an annotation may have (the API server allows 256 KiB for all of them).
const MAX_VALUE_LEN: usize = 16 * 1024;
/// Longest timeout an annotation may set.
const MAX_TIMEOUT_SECS: u64 = 24 * 3600;
/// Compiled-size limit of one path regex (the `regex` crate matches in linear time; this bounds
/// its memory).
const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Longest path regex accepted.
const MAX_REGEX_LEN: usize = 1024;

/// The CORS defaults of ingress-nginx.
const CORS_DEFAULT_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
const CORS_DEFAULT_HEADERS: &str = "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization";
const CORS_DEFAULT_MAX_AGE: u64 = 1_728_000;

/// What the annotations of one Ingress ask of the routes it defines. Shared by its routes
/// through one `Arc` (a regex path gets its own copy carrying its compiled regex).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RoutePolicy {
    /// `proxy-body-size`: largest request body in bytes; `None` = no limit.
    pub max_body_bytes: Option<u64>,
    /// `proxy-connect-timeout` / `proxy-read-timeout` / `proxy-send-timeout`.
    pub connect_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub send_timeout: Option<Duration>,
    /// `permanent-redirect` / `temporal-redirect`: answered instead of proxying.
    pub redirect: Option<Redirect>,
    /// `app-root`: a request for `/` is redirected (302) here.
    pub app_root: Option<HeaderValue>,
    /// `allowlist-source-range` / `denylist-source-range`.
    pub source: Option<SourceRanges>,
    /// `enable-cors` and the `cors-*` settings.
    pub cors: Option<Cors>,
    /// `upstream-vhost`: the `Host` sent upstream.
    pub upstream_host: Option<HeaderValue>,
    /// `x-forwarded-prefix`: the `X-Forwarded-Prefix` sent upstream.
    pub forwarded_prefix: Option<HeaderValue>,
    /// `tandem.dev/response-headers`: set on every response passed on from the backend.
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// `backend-protocol`: overrides the Service port's `appProtocol`.
    pub backend_protocol: Option<BackendProtocol>,
    /// `rewrite-target`: the path sent upstream, built from the route's path regex.
    pub rewrite: Option<Rewrite>,
    /// `backend-protocol: HTTPS | GRPCS` with the `proxy-ssl-*` settings.
    pub upstream_tls: Option<UpstreamTls>,
    /// `load-balance`, `upstream-hash-by`, cookie affinity, outlier ejection.
    pub balance: Option<Balance>,
}

impl RoutePolicy {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A redirect answered for every request of the route.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Redirect {
    pub status: u16,
    pub location: HeaderValue,
}

/// Client source ranges: the client IP is the one found after trusted-proxy handling.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceRanges {
    /// Only these may pass (`None`: everyone not denied).
    pub allow: Option<Vec<IpNet>>,
    pub deny: Vec<IpNet>,
    /// A source-range annotation was invalid: nobody passes (fail closed).
    pub deny_all: bool,
}

impl SourceRanges {
    pub fn permits(&self, ip: std::net::IpAddr) -> bool {
        // An IPv4-mapped IPv6 client is its IPv4 address.
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        !self.deny_all
            && !self.deny.iter().any(|n| n.contains(&ip))
            && self
                .allow
                .as_ref()
                .is_none_or(|a| a.iter().any(|n| n.contains(&ip)))
    }
}

/// Which origins CORS allows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CorsOrigins {
    /// `*`: any origin (echoed back when credentials are allowed, as browsers require).
    Any,
    /// Listed origins, lowercased; a `*.` host label matches one or more labels.
    List(Vec<CorsOrigin>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CorsOrigin {
    /// `scheme://`
    pub scheme: String,
    /// Host with an optional leading `*.`, lowercased.
    pub host: String,
    /// `:port`, or empty.
    pub port: String,
}

impl CorsOrigin {
    fn matches(&self, origin: &str) -> bool {
        if self.scheme.is_empty() {
            return origin == self.host;
        }
        let origin = origin.to_ascii_lowercase();
        let Some(rest) = origin.strip_prefix(self.scheme.as_str()) else {
            return false;
        };
        let Some(host) = rest.strip_suffix(self.port.as_str()) else {
            return false;
        };
        if host.contains(':') && !host.starts_with('[') {
            return false;
        }
        match self.host.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .and_then(|h| h.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty()),
            None => host == self.host,
        }
    }
}

/// CORS, as ingress-nginx's `enable-cors` does it: preflight `OPTIONS` answered with 204, the
/// `Access-Control-*` headers added to responses.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cors {
    pub origins: CorsOrigins,
    pub allow_methods: HeaderValue,
    pub allow_headers: HeaderValue,
    pub expose_headers: Option<HeaderValue>,
    pub allow_credentials: bool,
    pub max_age: HeaderValue,
}

impl Cors {
    /// The `Access-Control-Allow-Origin` for a request's `Origin`, or `None` when that origin
    /// is not allowed (or the request has none).
    pub fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match (&self.origins, origin) {
            (CorsOrigins::Any, Some(o)) if self.allow_credentials => Some(o.clone()),
            (CorsOrigins::Any, _) => Some(HeaderValue::from_static("*")),
            (CorsOrigins::List(list), Some(o)) => {
                let s = o.to_str().ok()?;
                list.iter().any(|c| c.matches(s)).then(|| o.clone())
            }
            (CorsOrigins::List(_), None) => None,
        }
    }
}

/// `rewrite-target` with the route's path as a regex (ingress-nginx's `use-regex` semantics:
/// case-insensitive, anchored at the start; the whole path is replaced by the target with
/// `$1`… expanded — a group the regex lacks or that did not take part is empty, as in nginx —
/// and the query string is kept).
#[derive(Clone, Debug)]
pub struct Rewrite {
    pub regex: regex::Regex,
    pub target: Vec<TargetPart>,
}

impl PartialEq for Rewrite {
    fn eq(&self, other: &Self) -> bool {
        self.regex.as_str() == other.regex.as_str() && self.target == other.target
    }
}
impl Eq for Rewrite {}
impl Hash for Rewrite {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.regex.as_str().hash(state);
        self.target.hash(state);
    }
}

/// A piece of a rewrite target: text, or a capture group of the path regex.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TargetPart {
    Text(String),
    Group(usize),
}

impl Rewrite {
    /// The rewritten path-and-query for a request path and query, or `None` when the regex does
    /// not match the path (then the request is proxied unchanged).
    pub fn apply(&self, path: &str, query: Option<&str>) -> Option<String> {
        let caps = self.regex.captures(path)?;
        let mut out = String::with_capacity(path.len() + 16);
        for part in &self.target {
            match part {
                TargetPart::Text(t) => out.push_str(t),
                TargetPart::Group(i) => {
                    out.push_str(caps.get(*i).map_or("", |m| m.as_str()));
                }
            }
        }
        if !out.starts_with('/') {
            out.insert(0, '/');
        }
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            // nginx keeps the client's arguments, after the target's own.
            out.push(if out.contains('?') { '&' } else { '?' });
            out.push_str(q);
        }
        Some(out)
    }
}

/// The annotations of one Ingress, parsed.
#[derive(Debug, Default)]
pub struct IngressAnnotations {
    /// `None` when no annotation asks for anything: such routes pay nothing.
    pub policy: Option<Arc<RoutePolicy>>,
    /// `ssl-redirect: "false"` turns the edge's HTTPS redirect off for this Ingress's TLS hosts.
    pub ssl_redirect: bool,
    /// `force-ssl-redirect: "true"`: the edge redirects this Ingress's rule hosts to HTTPS even
    /// without a `spec.tls` entry.
    pub force_ssl_redirect: bool,
    /// `use-regex` (or `rewrite-target`, which implies it): paths are regexes.
    pub use_regex: bool,
    /// `canary: "true"`: the Ingress's rules add a canary to other Ingresses' routes.
    pub canary: Option<Arc<CanaryRule>>,
    rewrite_target: Option<Vec<TargetPart>>,
    /// One line per invalid or conflicting annotation.
    pub problems: Vec<String>,
}

/// Parses the annotations of one Ingress.
pub fn parse(annotations: Option<&BTreeMap<String, String>>) -> IngressAnnotations {
    let empty = BTreeMap::new();
    let a = Reader {
        map: annotations.unwrap_or(&empty),
        problems: Default::default(),
    };
    let mut out = IngressAnnotations {
        ssl_redirect: true,
        ..Default::default()
    };
    let mut p = RoutePolicy::default();
    let a = &a;

    p.max_body_bytes = a.get("proxy-body-size", parse_size).flatten();
    p.connect_timeout = a.get("proxy-connect-timeout", parse_timeout);
    p.read_timeout = a.get("proxy-read-timeout", parse_timeout);
    p.send_timeout = a.get("proxy-send-timeout", parse_timeout);

    let permanent = a.get("permanent-redirect", parse_url);
    let temporal = a.get("temporal-redirect", parse_url);
    let permanent_code = a.get("permanent-redirect-code", |v| parse_code(v, 300..=308));
    let temporal_code = a.get("temporal-redirect-code", |v| parse_code(v, 300..=307));
    // ingress-nginx: a permanent redirect wins over a temporal one.
    p.redirect = match (permanent, temporal) {
        (Some(location), _) => Some(Redirect {
            status: permanent_code.unwrap_or(301),
            location,
        }),
        (None, Some(location)) => Some(Redirect {
            status: temporal_code.unwrap_or(302),
            location,
        }),
        (None, None) => None,
    };
    p.app_root = a.get("app-root", parse_app_root);

    let allow = a
        .get_any(
            &["allowlist-source-range", "whitelist-source-range"],
            parse_cidrs,
        )
        .map(|r| r.map(Some));
    let deny = a.get_any(&["denylist-source-range"], parse_cidrs);
    if allow.is_some() || deny.is_some() {
        let mut s = SourceRanges::default();
        match allow {
            Some(Ok(list)) => s.allow = list,
            Some(Err(())) => s.deny_all = true,
            None => {}
        }
        match deny {
            Some(Ok(list)) => s.deny = list,
            Some(Err(())) => s.deny_all = true,
            None => {}
        }
        if s.deny_all {
            for line in a.problems.borrow_mut().iter_mut() {
                if line.contains("-source-range:") {
                    *line = line.replace(
                        "annotation ignored",
                        "the Ingress's routes answer 403 to every client (fail closed)",
                    );
                }
            }
        }
        p.source = Some(s);
    }

    if a.get("enable-cors", parse_bool) == Some(true) {
        p.cors = Some(Cors {
            origins: a
                .get("cors-allow-origin", parse_origins)
                .unwrap_or(CorsOrigins::Any),
            allow_methods: a
                .get("cors-allow-methods", |v| {
                    parse_token_list(v, |c| c.is_ascii_alphabetic(), "methods")
                })
                .unwrap_or(HeaderValue::from_static(CORS_DEFAULT_METHODS)),
            allow_headers: a
                .get("cors-allow-headers", |v| {
                    parse_token_list(
                        v,
                        |c| c.is_ascii_alphanumeric() || c == '_' || c == '-',
                        "header names",
                    )
                })
                .unwrap_or(HeaderValue::from_static(CORS_DEFAULT_HEADERS)),
            expose_headers: a.get("cors-expose-headers", |v| {
                parse_token_list(
                    v,
                    |c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '*',
                    "header names",
                )
            }),
            allow_credentials: a.get("cors-allow-credentials", parse_bool).unwrap_or(true),
            max_age: HeaderValue::from(
                a.get("cors-max-age", |v| parse_u64(v, u64::from(u32::MAX)))
                    .unwrap_or(CORS_DEFAULT_MAX_AGE),
            ),
        });
    }

    p.upstream_host = a.get("upstream-vhost", parse_vhost);
    p.forwarded_prefix = a.get("x-forwarded-prefix", parse_header_value);
    p.response_headers = a
        .get_tandem("response-headers", parse_response_headers)
        .unwrap_or_default();
    p.backend_protocol = a.get("backend-protocol", parse_backend_protocol);
    let tls = matches!(
        p.backend_protocol,
        Some(BackendProtocol::Https | BackendProtocol::Grpcs)
    );
    p.upstream_tls = upstream_tls::parse(a, tls);
    out.canary = canary::parse(a).map(Arc::new);
    p.balance = balance::parse(a);

    out.ssl_redirect = a.get("ssl-redirect", parse_bool).unwrap_or(true);
    out.force_ssl_redirect = a.get("force-ssl-redirect", parse_bool).unwrap_or(false);
    let use_regex = a.get("use-regex", parse_bool).unwrap_or(false);
    let has_rewrite = a.has("rewrite-target");
    out.rewrite_target = a.get("rewrite-target", parse_rewrite_target);
    // ingress-nginx: rewrite-target makes the paths regexes too (even when its value is refused,
    // the paths were written as regexes).
    out.use_regex = use_regex || has_rewrite;

    out.problems = a.problems.take();
    out.policy = (!p.is_empty()).then(|| Arc::new(p));
    out
}

impl IngressAnnotations {
    /// The path match and policy of one rule path. With `use-regex`, the path is a regex: it is
    /// compiled here (case-insensitive, anchored at the start, size-limited) and the rule is
    /// routed as a Prefix of its literal leading part (cut back to a whole segment); a request
    /// the regex does not match is not rewritten. `None`: not a regex path (route it as usual).
    /// A regex path is reported as [`ProblemReason::InvalidPath`] when it does not compile.
    pub fn regex_route(
        &self,
        path: Option<&str>,
    ) -> Option<Result<RegexRoute, (ProblemReason, String)>> {
        if !self.use_regex {
            return None;
        }
        let path = path.filter(|p| !p.is_empty()).unwrap_or("/");
        Some(
            self.compile_regex_route(path)
                .map(|(m, policy)| (m, true, policy))
                .map_err(|d| (ProblemReason::InvalidPath, d)),
        )
    }

    fn compile_regex_route(
        &self,
        path: &str,
    ) -> Result<(PathMatch, Option<Arc<RoutePolicy>>), String> {
        if !path.starts_with('/') {
            return Err(format!("regex path {path:?} must start with /"));
        }
        if path.len() > MAX_REGEX_LEN {
            return Err(format!(
                "regex path is longer than {MAX_REGEX_LEN} characters"
            ));
        }
        let regex = regex::RegexBuilder::new(&format!("^(?:{path})"))
            .case_insensitive(true)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| format!("regex path {path:?}: {e}"))?;
        let policy = match &self.rewrite_target {
            Some(target) => {
                let mut p = self.policy.as_deref().cloned().unwrap_or_default();
                p.rewrite = Some(Rewrite {
                    regex,
                    target: target.clone(),
                });
                Some(Arc::new(p))
            }
            None => self.policy.clone(),
        };
        let prefix = PathMatch::Prefix(literal_prefix(path));
        let policy = policy.and_then(|p| balance::with_cookie_path(&p, &prefix));
        Ok((prefix, policy))
    }
}

/// The leading part of a regex path with no regex syntax in it, cut back to a whole segment:
/// `/api/v1(/|$)(.*)` → `/api/v1`, `/api/v[0-9]+/x` → `/api`, `/(.*)` → `/`.
fn literal_prefix(path: &str) -> String {
    const META: &[char] = &[
        '\\', '.', '+', '*', '?', '(', ')', '|', '[', ']', '{', '}', '^', '$',
    ];
    let cut = path.find(META).unwrap_or(path.len());
    let literal = &path[..cut];
    let rest = &path[cut..];
    // The literal part is a whole segment when what follows it starts a new one or ends.
    let whole = rest.is_empty()
        || rest.starts_with('/')
        || rest.starts_with("(/|$)")
        || rest.starts_with("(/.*)?");
    let literal = if whole {
        literal
    } else {
        &literal[..literal.rfind('/').unwrap_or(0)]
    };
    let trimmed = literal.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// Reads annotations under both prefixes and collects problems.
struct Reader<'a> {
    map: &'a BTreeMap<String, String>,
    problems: std::cell::RefCell<Vec<String>>,
}

impl Reader<'_> {
    /// The value of `tandem.dev/<name>`, else `nginx.ingress.kubernetes.io/<name>`, parsed; an
    /// invalid value is reported and yields `None`.
    fn get<T>(&self, name: &str, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        self.get_any(&[name], parse).and_then(Result::ok)
    }

    fn has(&self, name: &str) -> bool {
        [TANDEM_PREFIX, NGINX_PREFIX]
            .iter()
            .any(|p| self.map.contains_key(&format!("{p}{name}")))
    }

    /// Like `get`, for annotations only tandem spells.
    fn get_tandem<T>(&self, name: &str, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        let key = format!("{TANDEM_PREFIX}{name}");
        let v = self.map.get(&key)?;
        self.check(&key, v, &parse).ok()
    }

    /// The first of several synonymous names that is set (tandem spelling of each first).
    fn get_any<T>(
        &self,
        names: &[&str],
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<Result<T, ()>> {
        let tandem = names.iter().find_map(|n| {
            let k = format!("{TANDEM_PREFIX}{n}");
            self.map.get(&k).map(|v| (k, v))
        });
        let nginx = names.iter().find_map(|n| {
            let k = format!("{NGINX_PREFIX}{n}");
            self.map.get(&k).map(|v| (k, v))
        });
        if let (Some((tk, tv)), Some((nk, nv))) = (&tandem, &nginx)
            && tv.trim() != nv.trim()
        {
            self.problems.borrow_mut().push(format!(
                "{tk} and {nk} are both set, to different values: {tk} wins"
            ));
        }
        let (key, value) = tandem.or(nginx)?;
        Some(self.check(&key, value, &parse))
    }

    fn check<T>(
        &self,
        key: &str,
        value: &str,
        parse: &impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ()> {
        let result = if value.len() > MAX_VALUE_LEN {
            Err(format!("longer than {MAX_VALUE_LEN} bytes"))
        } else {
            parse(value.trim())
        };
        result.map_err(|detail| {
            self.problems
                .borrow_mut()
                .push(format!("{key}: {detail}; annotation ignored"));
        })
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "true" | "True" | "TRUE" => Ok(true),
        "false" | "False" | "FALSE" => Ok(false),
        _ => Err(format!("{v:?} is not \"true\" or \"false\"")),
    }
}

fn parse_u64(v: &str, max: u64) -> Result<u64, String> {
    v.parse::<u64>()
        .ok()
        .filter(|n| *n <= max)
        .ok_or_else(|| format!("{v:?} is not a whole number from 0 to {max}"))
}

/// nginx size syntax: a number, optionally with `k`, `m` or `g` (either case). `0` = no limit.
fn parse_size(v: &str) -> Result<Option<u64>, String> {
    let (digits, mult) = match v.as_bytes().last() {
        Some(b'k' | b'K') => (&v[..v.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&v[..v.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    let n = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse::<u64>().ok())
        .flatten()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{v:?} is not a size such as 1048576, 512k, 8m or 1g"))?;
    Ok((n > 0).then_some(n))
}

/// Whole seconds, as ingress-nginx takes them (a trailing `s` is accepted).
fn parse_timeout(v: &str) -> Result<Duration, String> {
    let digits = v.strip_suffix('s').unwrap_or(v);
    digits
        .parse::<u64>()
        .ok()
        .filter(|n| (1..=MAX_TIMEOUT_SECS).contains(n))
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{v:?} is not a number of seconds from 1 to {MAX_TIMEOUT_SECS}"))
}

fn parse_code(v: &str, range: std::ops::RangeInclusive<u16>) -> Result<u16, String> {
    v.parse::<u16>()
        .ok()
        .filter(|c| range.contains(c))
        .ok_or_else(|| {
            format!(
                "{v:?} is not a redirect status from {} to {}",
                range.start(),
                range.end()
            )
        })
}

/// An absolute `http(s)://` URL or an absolute path, usable as `Location` as is.
fn parse_url(v: &str) -> Result<HeaderValue, String> {
    let lower = v.to_ascii_lowercase();
    let ok = if let Some(rest) = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
    {
        !rest.is_empty() && !rest.starts_with('/') && v.parse::<http::Uri>().is_ok()
    } else {
        v.starts_with('/') && !v.starts_with("//") && v.parse::<http::Uri>().is_ok()
    };
    if !ok
        || !v.is_ascii()
        || v.bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(format!(
            "{v:?} is not an absolute http(s) URL or an absolute path"
        ));
    }
    HeaderValue::from_str(v).map_err(|_| format!("{v:?} is not a valid Location"))
}

fn parse_app_root(v: &str) -> Result<HeaderValue, String> {
    // ingress-nginx takes a path; a full URL is refused there too.
    if !v.starts_with('/') || v.starts_with("//") || v == "/" {
        return Err(format!("{v:?} is not an absolute path other than /"));
    }
    parse_url(v)
}

fn parse_cidrs(v: &str) -> Result<Vec<IpNet>, String> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let net = item
            .parse::<IpNet>()
            .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| format!("{item:?} is not a CIDR or an IP address"))?;
        out.push(net.trunc());
    }
    if out.is_empty() {
        return Err("no CIDR listed".to_owned());
    }
    Ok(out)
}

fn parse_origins(v: &str) -> Result<CorsOrigins, String> {
    let mut list = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if item == "*" {
            return Ok(CorsOrigins::Any);
        }
        if item == "null" {
            // The opaque origin browsers send from sandboxed frames and file: pages.
            list.push(CorsOrigin {
                scheme: String::new(),
                host: "null".to_owned(),
                port: String::new(),
            });
            continue;
        }
        let bad = || format!("origin {item:?} is not of the form scheme://host[:port]");
        let lower = item.to_ascii_lowercase();
        let (scheme, rest) = lower.split_once("://").ok_or_else(bad)?;
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
        {
            return Err(bad());
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                (h, format!(":{p}"))
            }
            Some(_) => return Err(bad()),
            None => (rest, String::new()),
        };
        let bare = host.strip_prefix("*.").unwrap_or(host);
        if bare.is_empty()
            || !bare
                .split('.')
                .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        {
            return Err(bad());
        }
        list.push(CorsOrigin {
            scheme: format!("{scheme}://"),
            host: host.to_owned(),
            port,
        });
    }
    if list.is_empty() {
        return Err("no origin listed".to_owned());
    }
    Ok(CorsOrigins::List(list))
}

fn parse_token_list(v: &str, ok: impl Fn(char) -> bool, what: &str) -> Result<HeaderValue, String> {
    let items: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() || items.iter().any(|i| !i.chars().all(&ok)) {
        return Err(format!("{v:?} is not a comma-separated list of {what}"));
    }
    HeaderValue::from_str(&items.join(", ")).map_err(|e| e.to_string())
}

fn parse_vhost(v: &str) -> Result<HeaderValue, String> {
    let ok = !v.is_empty()
        && v.len() <= 261
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
    if !ok {
        return Err(format!("{v:?} is not a host name (with optional :port)"));
    }
    HeaderValue::from_str(v).map_err(|e| e.to_string())
}

fn parse_header_value(v: &str) -> Result<HeaderValue, String> {
    if v.is_empty() || v.bytes().any(|b| b.is_ascii_control()) {
        return Err(format!("{v:?} is not a header value"));
    }
    HeaderValue::from_str(v).map_err(|_| format!("{v:?} is not a header value"))
}

/// Headers the proxy owns: never set from an annotation.
const RESERVED_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "transfer-encoding",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "date",
    "x-request-id",
];

/// One `Name: value` per line (a YAML block scalar, `|`).
fn parse_response_headers(v: &str) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let mut out: Vec<(HeaderName, HeaderValue)> = Vec::new();
    for line in v.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("line {line:?} is not \"Name: value\""))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("{:?} is not a header name", name.trim()))?;
        if RESERVED_RESPONSE_HEADERS.contains(&name.as_str()) {
            return Err(format!("header {name} is set by the proxy itself"));
        }
        let value = parse_header_value(value.trim())?;
        if out.iter().any(|(n, _)| *n == name) {
            return Err(format!("header {name} is listed twice"));
        }
        out.push((name, value));
    }
    if out.is_empty() {
        return Err("no header listed".to_owned());
    }
    if out.len() > 64 {
        return Err("more than 64 headers".to_owned());
    }
    Ok(out)
}

fn parse_backend_protocol(v: &str) -> Result<BackendProtocol, String> {
    match v.to_ascii_uppercase().as_str() {
        "HTTP" => Ok(BackendProtocol::Http1),
        "GRPC" | "H2C" => Ok(BackendProtocol::H2c),
        "HTTPS" => Ok(BackendProtocol::Https),
        "GRPCS" => Ok(BackendProtocol::Grpcs),
        "AUTO_HTTP" | "FCGI" => Err(format!(
            "{v:?} is not supported; the Service port's appProtocol is used"
        )),
        _ => Err(format!("{v:?} is not one of HTTP, HTTPS, GRPC, GRPCS, H2C")),
    }
}

/// A rewrite target: an absolute path (with optional query) in which `$1`…`$9` name capture
/// groups. No other `$` is allowed: nothing else is substituted.
fn parse_rewrite_target(v: &str) -> Result<Vec<TargetPart>, String> {
    if !v.starts_with('/') && !v.starts_with('$') {
        return Err(format!(
            "{v:?} is not a path (full URLs, as nginx redirects them, are not supported)"
        ));
    }
    if v.bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'#')
    {
        return Err(format!("{v:?} contains a character not allowed in a path"));
    }
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            text.push(c);
            continue;
        }
        let braced = chars.peek() == Some(&'{');
        if braced {
            chars.next();
        }
        let Some(d) = chars.next().and_then(|d| d.to_digit(10)) else {
            return Err(format!(
                "{v:?}: only $1 to $9 (capture groups of the path) may follow $"
            ));
        };
        if braced && chars.next() != Some('}') {
            return Err(format!("{v:?}: unclosed ${{"));
        }
        if !text.is_empty() {
            parts.push(TargetPart::Text(std::mem::take(&mut text)));
        }
        parts.push(TargetPart::Group(d as usize));
    }
    if !text.is_empty() {
        parts.push(TargetPart::Text(text));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod translate_tests;
