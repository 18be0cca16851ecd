//! Load-balancing annotations: `load-balance`, `upstream-hash-by`, cookie affinity
//! (`affinity: cookie`, `affinity-mode` and `session-cookie-*`) and tandem's passive outlier ejection
//! (`tandem.dev/outlier-*`). Parsed once into a [`Balance`]; the proxy only reads it.

use std::time::Duration;

use std::sync::Arc;

use http::HeaderName;

use super::{Reader, RoutePolicy};
use crate::config::PathMatch;

/// Longest `upstream-hash-by` expression.
const MAX_HASH_EXPR_LEN: usize = 256;
/// Default cookie of `affinity: cookie`, as ingress-nginx names it.
pub const DEFAULT_COOKIE_NAME: &str = "INGRESSCOOKIE";
/// Default consecutive failures that eject an endpoint.
pub const DEFAULT_OUTLIER_FAILURES: u32 = 5;
/// Default first ejection time; each re-ejection doubles it.
pub const DEFAULT_EJECTION: Duration = Duration::from_secs(10);
/// Longest ejection, however often an endpoint is re-ejected.
pub const MAX_EJECTION: Duration = Duration::from_secs(300);
/// Longest cookie lifetime accepted (ten years, in seconds).
const MAX_COOKIE_AGE: u64 = 10 * 365 * 24 * 3600;

/// How a route picks an endpoint of its backend. Affinity wins over hashing, which wins over
/// the algorithm (as in ingress-nginx); the algorithm also makes the first pick of an affinity
/// session and the pick for a request without a hash key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Balance {
    pub algorithm: Algorithm,
    pub hash_by: Option<HashKey>,
    pub affinity: Option<CookieAffinity>,
    pub outlier: Option<Outlier>,
    /// Active HTTP health checks of the route's Service port.
    pub health_check: Option<HealthCheck>,
}

/// Active health checks (`tandem.dev/health-check-*`): each endpoint of the Service port is
/// probed with `GET <path>` off the data path; a `2xx`/`3xx` answer within the timeout passes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Passes in a row that bring an unhealthy endpoint back.
    pub healthy_threshold: u32,
    /// Failures in a row that take an endpoint out.
    pub unhealthy_threshold: u32,
}

/// Defaults of the health-check settings.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;

/// `load-balance`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `round_robin`.
    #[default]
    RoundRobin,
    /// `ewma`: of two endpoints drawn at random, the one with the lower latency EWMA times
    /// (requests in flight + 1).
    Ewma,
    /// `least_request` (tandem's): of two endpoints drawn at random, the one with fewer
    /// requests in flight.
    LeastRequest,
}

/// `upstream-hash-by`: nginx variables and literal text, concatenated into the hash key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HashKey {
    pub parts: Vec<KeyPart>,
}

/// One piece of an `upstream-hash-by` key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeyPart {
    Text(String),
    /// `$remote_addr`: the client address after trusted-proxy handling.
    RemoteAddr,
    /// `$request_uri`: path and query as the client sent them.
    RequestUri,
    /// `$uri`: the normalised path.
    Uri,
    /// `$args` / `$query_string`.
    Args,
    /// `$host`: the request's host, lowercased, without port.
    Host,
    /// `$http_<name>`: a request header (`_` in the name stands for `-`), values joined.
    Header(HeaderName),
    /// `$cookie_<name>`.
    Cookie(String),
    /// `$arg_<name>`: a query argument.
    Arg(String),
}

impl HashKey {
    /// Whether the key reads the client address only (then it is never empty).
    pub fn is_remote_addr(&self) -> bool {
        self.parts == [KeyPart::RemoteAddr]
    }
}

/// `affinity-mode`: how a session's endpoint follows the backend's endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AffinityMode {
    /// `balanced` (ingress-nginx's default): the cookie holds a random key, and the session's
    /// endpoint is the key's owner on the backend's consistent-hash ring. Scaling up moves the
    /// sessions whose keys the new endpoints' ring points take (about `added / new total`).
    #[default]
    Balanced,
    /// `persistent`: the cookie names its endpoint; a session stays there while it serves.
    Persistent,
}

/// `affinity: cookie` with its `session-cookie-*` settings.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CookieAffinity {
    /// `session-cookie-name`.
    pub name: String,
    /// `session-cookie-path`; else the path of the rule (filled in per route by
    /// [`IngressAnnotations::policy_for`](super::IngressAnnotations::policy_for)), as
    /// ingress-nginx does.
    pub path: Option<String>,
    /// What follows `; Path=…` in `Set-Cookie`: `; Max-Age=…; HttpOnly…`, built here from
    /// validated values.
    pub attributes: String,
    /// `attributes` without `; SameSite=None`, for user agents that mishandle it
    /// (`session-cookie-conditional-samesite-none`); `None` unless asked with `SameSite=None`.
    pub attributes_without_samesite: Option<String>,
    /// `affinity-mode`.
    pub mode: AffinityMode,
    /// `session-cookie-change-on-failure`: when the session's endpoint fails, the request's
    /// next attempt goes to another endpoint and the cookie moves there. Off (the default, as
    /// in ingress-nginx): every attempt goes to the session's endpoint and the cookie stays.
    pub change_on_failure: bool,
}

/// Passive outlier ejection (`tandem.dev/outlier-consecutive-failures`,
/// `tandem.dev/outlier-ejection-time`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Outlier {
    /// 5xx responses or connect failures in a row that eject an endpoint.
    pub consecutive_failures: u32,
    /// First ejection time; doubled on each re-ejection, up to [`MAX_EJECTION`].
    pub ejection: Duration,
}

impl Outlier {
    /// Ejection time of the `n`th ejection in a row (1-based).
    pub fn ejection_for(&self, n: u32) -> Duration {
        let factor = 1u32 << n.saturating_sub(1).min(16);
        self.ejection
            .saturating_mul(factor)
            .min(MAX_EJECTION.max(self.ejection))
    }
}

/// The load-balancing annotations of one Ingress; `None` when none is set.
pub(super) fn parse(a: &Reader<'_>) -> Option<Balance> {
    let mut b = Balance {
        algorithm: a.get("load-balance", parse_algorithm).unwrap_or_default(),
        hash_by: a.get("upstream-hash-by", parse_hash_by),
        ..Default::default()
    };
    if let Some(true) = a.get("affinity", parse_affinity) {
        b.affinity = Some(parse_cookie(a));
    }
    let failures = a.get_tandem("outlier-consecutive-failures", |v| {
        super::parse_u64(v, 1000)
            .ok()
            .filter(|n| *n >= 1)
            .map(|n| n as u32)
            .ok_or_else(|| format!("{v:?} is not a whole number from 1 to 1000"))
    });
    let ejection = a.get_tandem("outlier-ejection-time", |v| {
        parse_duration(v, Duration::from_millis(100), MAX_EJECTION)
    });
    if failures.is_some() || ejection.is_some() {
        b.outlier = Some(Outlier {
            consecutive_failures: failures.unwrap_or(DEFAULT_OUTLIER_FAILURES),
            ejection: ejection.unwrap_or(DEFAULT_EJECTION),
        });
    }
    b.health_check = parse_health_check(a);
    (b != Balance::default()).then_some(b)
}

/// `tandem.dev/health-check-path` turns checks on; the other settings need it.
fn parse_health_check(a: &Reader<'_>) -> Option<HealthCheck> {
    const SETTINGS: [&str; 4] = [
        "health-check-interval",
        "health-check-timeout",
        "health-check-healthy-threshold",
        "health-check-unhealthy-threshold",
    ];
    let Some(path) = a.get_tandem("health-check-path", parse_check_path) else {
        if !a
            .map
            .contains_key(&format!("{}health-check-path", super::TANDEM_PREFIX))
        {
            for s in SETTINGS {
                let key = format!("{}{s}", super::TANDEM_PREFIX);
                if a.map.contains_key(&key) {
                    a.problems.borrow_mut().push(format!(
                        "{key}: set without tandem.dev/health-check-path; annotation ignored"
                    ));
                }
            }
        }
        return None;
    };
    let threshold = |v: &str| {
        super::parse_u64(v, 100)
            .ok()
            .filter(|n| *n >= 1)
            .map(|n| n as u32)
            .ok_or_else(|| format!("{v:?} is not a whole number from 1 to 100"))
    };
    let interval = a
        .get_tandem(SETTINGS[0], |v| {
            parse_duration(v, Duration::from_millis(100), Duration::from_secs(300))
        })
        .unwrap_or(DEFAULT_HEALTH_INTERVAL);
    let timeout = a
        .get_tandem(SETTINGS[1], |v| {
            parse_duration(v, Duration::from_millis(10), Duration::from_secs(60))
        })
        .unwrap_or(DEFAULT_HEALTH_TIMEOUT);
    Some(HealthCheck {
        path,
        interval,
        // A probe never outlives its round.
        timeout: timeout.min(interval),
        healthy_threshold: a
            .get_tandem(SETTINGS[2], threshold)
            .unwrap_or(DEFAULT_HEALTHY_THRESHOLD),
        unhealthy_threshold: a
            .get_tandem(SETTINGS[3], threshold)
            .unwrap_or(DEFAULT_UNHEALTHY_THRESHOLD),
    })
}

/// An origin-form target: absolute path, optional query, printable ASCII without spaces.
fn parse_check_path(v: &str) -> Result<String, String> {
    let ok = v.starts_with('/')
        && !v.starts_with("//")
        && v.len() <= 1024
        && v.bytes().all(|b| b.is_ascii_graphic())
        && !v.contains('#');
    if ok {
        Ok(v.to_owned())
    } else {
        Err(format!(
            "{v:?} is not an absolute path (with optional query)"
        ))
    }
}

fn parse_algorithm(v: &str) -> Result<Algorithm, String> {
    match v {
        "round_robin" => Ok(Algorithm::RoundRobin),
        "ewma" => Ok(Algorithm::Ewma),
        "least_request" => Ok(Algorithm::LeastRequest),
        _ => Err(format!(
            "{v:?} is not one of round_robin, ewma, least_request; round_robin is used"
        )),
    }
}

fn parse_affinity(v: &str) -> Result<bool, String> {
    match v {
        "cookie" => Ok(true),
        "" | "none" => Ok(false),
        _ => Err(format!(
            "{v:?} is not \"cookie\" (the only affinity there is)"
        )),
    }
}

/// An `upstream-hash-by` expression: `$variable`s (`${variable}` too) and literal text.
pub fn parse_hash_by(v: &str) -> Result<HashKey, String> {
    if v.len() > MAX_HASH_EXPR_LEN {
        return Err(format!("longer than {MAX_HASH_EXPR_LEN} characters"));
    }
    if v.bytes().any(|b| b.is_ascii_control()) {
        return Err(format!("{v:?} contains a control character"));
    }
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = v;
    while let Some(i) = rest.find('$') {
        text.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        let (name, after) = if let Some(braced) = rest.strip_prefix('{') {
            let end = braced
                .find('}')
                .ok_or_else(|| format!("{v:?}: unclosed ${{"))?;
            (&braced[..end], &braced[end + 1..])
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        rest = after;
        if !text.is_empty() {
            parts.push(KeyPart::Text(std::mem::take(&mut text)));
        }
        parts.push(variable(name).ok_or_else(|| {
            format!(
                "{v:?}: ${name} is not one of $remote_addr, $binary_remote_addr, $request_uri, \
                 $uri, $args, $query_string, $host, $http_<header>, $cookie_<name>, $arg_<name>"
            )
        })?);
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(KeyPart::Text(text));
    }
    if !parts.iter().any(|p| !matches!(p, KeyPart::Text(_))) {
        return Err(format!(
            "{v:?} names no variable: every request would go to one endpoint"
        ));
    }
    Ok(HashKey { parts })
}

fn variable(name: &str) -> Option<KeyPart> {
    let ok_suffix = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    Some(match name {
        "remote_addr" | "binary_remote_addr" => KeyPart::RemoteAddr,
        "request_uri" => KeyPart::RequestUri,
        "uri" | "document_uri" => KeyPart::Uri,
        "args" | "query_string" => KeyPart::Args,
        "host" => KeyPart::Host,
        _ => {
            if let Some(h) = name.strip_prefix("http_").filter(|s| ok_suffix(s)) {
                let h = h.replace('_', "-").to_ascii_lowercase();
                KeyPart::Header(HeaderName::from_bytes(h.as_bytes()).ok()?)
            } else if let Some(c) = name.strip_prefix("cookie_").filter(|s| ok_suffix(s)) {
                KeyPart::Cookie(c.to_owned())
            } else if let Some(q) = name.strip_prefix("arg_").filter(|s| ok_suffix(s)) {
                KeyPart::Arg(q.to_owned())
            } else {
                return None;
            }
        }
    })
}

/// The `session-cookie-*` annotations; an invalid one is reported and left at its default.
fn parse_cookie(a: &Reader<'_>) -> CookieAffinity {
    let name = a
        .get("session-cookie-name", parse_cookie_name)
        .unwrap_or_else(|| DEFAULT_COOKIE_NAME.to_owned());
    let path = a.get("session-cookie-path", parse_cookie_path);
    let domain = a.get("session-cookie-domain", parse_cookie_domain);
    let max_age = a.get("session-cookie-max-age", parse_cookie_age);
    let expires = a.get("session-cookie-expires", parse_cookie_age);
    let samesite = a.get("session-cookie-samesite", parse_samesite);
    let secure = a.get("session-cookie-secure", super::parse_bool);
    let conditional = a.get(
        "session-cookie-conditional-samesite-none",
        super::parse_bool,
    );
    let mode = a
        .get("affinity-mode", parse_affinity_mode)
        .unwrap_or_default();
    let change_on_failure = a
        .get("session-cookie-change-on-failure", super::parse_bool)
        .unwrap_or(false);
    let mut attributes = String::new();
    if let Some(d) = domain {
        attributes.push_str("; Domain=");
        attributes.push_str(&d);
    }
    // Browsers let Max-Age win over Expires; an Expires of N seconds is sent as Max-Age.
    if let Some(age) = max_age.or(expires) {
        attributes.push_str(&format!("; Max-Age={age}"));
    }
    attributes.push_str("; HttpOnly");
    if let Some(s) = samesite {
        attributes.push_str("; SameSite=");
        attributes.push_str(s);
    }
    // SameSite=None is only accepted on Secure cookies.
    if secure == Some(true) || samesite == Some("None") {
        attributes.push_str("; Secure");
    }
    let attributes_without_samesite = (conditional == Some(true) && samesite == Some("None"))
        .then(|| attributes.replacen("; SameSite=None", "", 1));
    CookieAffinity {
        name,
        path,
        attributes,
        attributes_without_samesite,
        mode,
        change_on_failure,
    }
}

fn parse_affinity_mode(v: &str) -> Result<AffinityMode, String> {
    match v {
        "balanced" => Ok(AffinityMode::Balanced),
        "persistent" => Ok(AffinityMode::Persistent),
        _ => Err(format!(
            "{v:?} is not one of balanced, persistent; balanced is used"
        )),
    }
}

impl super::IngressAnnotations {
    /// The policy of one rule path: the Ingress's, with the affinity cookie's default path set
    /// to the rule's path (a path that is not a valid cookie path leaves `/`).
    pub fn policy_for(&self, path: &PathMatch) -> Option<Arc<RoutePolicy>> {
        with_cookie_path(self.policy.as_ref()?, path)
    }
}

/// `policy` with its affinity cookie's default path set to `path`'s (the same `Arc` when there is
/// nothing to fill in).
pub(super) fn with_cookie_path(
    policy: &Arc<RoutePolicy>,
    path: &PathMatch,
) -> Option<Arc<RoutePolicy>> {
    let needs = policy
        .balance
        .as_ref()
        .and_then(|b| b.affinity.as_ref())
        .is_some_and(|a| a.path.is_none());
    if !needs {
        return Some(policy.clone());
    }
    let mut p = (**policy).clone();
    if let Some(a) = p.balance.as_mut().and_then(|b| b.affinity.as_mut()) {
        a.path = Some(parse_cookie_path(path.path()).unwrap_or_else(|_| "/".to_owned()));
    }
    Some(Arc::new(p))
}

/// An RFC 6265 cookie name (a token).
fn parse_cookie_name(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    if ok {
        Ok(v.to_owned())
    } else {
        Err(format!("{v:?} is not a cookie name"))
    }
}

fn parse_cookie_path(v: &str) -> Result<String, String> {
    let ok = v.starts_with('/')
        && v.len() <= 1024
        && v.bytes().all(|b| b.is_ascii_graphic() && b != b';');
    if ok {
        Ok(v.to_owned())
    } else {
        Err(format!("{v:?} is not an absolute path without ';'"))
    }
}

fn parse_cookie_domain(v: &str) -> Result<String, String> {
    let bare = v.strip_prefix('.').unwrap_or(v);
    let ok = !bare.is_empty()
        && bare.len() <= 253
        && bare
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if ok {
        Ok(v.to_ascii_lowercase())
    } else {
        Err(format!("{v:?} is not a domain name"))
    }
}

fn parse_cookie_age(v: &str) -> Result<u64, String> {
    super::parse_u64(v, MAX_COOKIE_AGE)
}

fn parse_samesite(v: &str) -> Result<&'static str, String> {
    match v.to_ascii_lowercase().as_str() {
        "none" => Ok("None"),
        "lax" => Ok("Lax"),
        "strict" => Ok("Strict"),
        _ => Err(format!("{v:?} is not one of None, Lax, Strict")),
    }
}

/// A duration: `500ms`, `10s`, `2m`, or whole seconds without unit.
pub(crate) fn parse_duration(v: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let (digits, unit) = if let Some(d) = v.strip_suffix("ms") {
        (d, Duration::from_millis(1))
    } else if let Some(d) = v.strip_suffix('s') {
        (d, Duration::from_secs(1))
    } else if let Some(d) = v.strip_suffix('m') {
        (d, Duration::from_secs(60))
    } else {
        (v, Duration::from_secs(1))
    };
    digits
        .parse::<u32>()
        .ok()
        .and_then(|n| unit.checked_mul(n))
        .filter(|d| (min..=max).contains(d))
        .ok_or_else(|| {
            format!("{v:?} is not a duration (such as 500ms, 10s, 2m) from {min:?} to {max:?}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_by_forms() {
        let k = parse_hash_by("$remote_addr").unwrap();
        assert!(k.is_remote_addr());
        let k = parse_hash_by("$http_x_user").unwrap();
        assert_eq!(
            k.parts,
            [KeyPart::Header(HeaderName::from_static("x-user"))]
        );
        let k = parse_hash_by("$cookie_session").unwrap();
        assert_eq!(k.parts, [KeyPart::Cookie("session".into())]);
        let k = parse_hash_by("${host}:$request_uri").unwrap();
        assert_eq!(
            k.parts,
            [
                KeyPart::Host,
                KeyPart::Text(":".into()),
                KeyPart::RequestUri
            ]
        );
        let k = parse_hash_by("$arg_id").unwrap();
        assert_eq!(k.parts, [KeyPart::Arg("id".into())]);
        for bad in [
            "",
            "remote_addr",
            "$upstream_addr",
            "$http_",
            "${host",
            "$server_name",
            "$",
        ] {
            assert!(parse_hash_by(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn durations() {
        let (min, max) = (Duration::from_millis(100), MAX_EJECTION);
        assert_eq!(
            parse_duration("500ms", min, max),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("10s", min, max), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m", min, max), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7", min, max), Ok(Duration::from_secs(7)));
        for bad in ["", "10h", "-1s", "1.5s", "50ms", "10m", "s"] {
            assert!(parse_duration(bad, min, max).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ejection_doubles_and_is_capped() {
        let o = Outlier {
            consecutive_failures: 5,
            ejection: Duration::from_secs(10),
        };
        assert_eq!(o.ejection_for(1), Duration::from_secs(10));
        assert_eq!(o.ejection_for(2), Duration::from_secs(20));
        assert_eq!(o.ejection_for(4), Duration::from_secs(80));
        assert_eq!(o.ejection_for(6), MAX_EJECTION);
        assert_eq!(o.ejection_for(1000), MAX_EJECTION);
    }

    fn parsed(pairs: &[(&str, &str)]) -> super::super::IngressAnnotations {
        let map = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        super::super::parse(Some(&map))
    }

    fn balance_of(pairs: &[(&str, &str)]) -> (Option<Balance>, Vec<String>) {
        let a = parsed(pairs);
        (a.policy.and_then(|p| p.balance.clone()), a.problems)
    }

    #[test]
    fn no_balance_annotations_no_policy() {
        assert!(parsed(&[]).policy.is_none());
        let (b, problems) =
            balance_of(&[("nginx.ingress.kubernetes.io/load-balance", "round_robin")]);
        assert!(
            b.is_none() && problems.is_empty(),
            "the default asks for nothing"
        );
    }

    #[test]
    fn algorithms_under_both_prefixes() {
        for key in [
            "nginx.ingress.kubernetes.io/load-balance",
            "tandem.dev/load-balance",
        ] {
            let (b, p) = balance_of(&[(key, "ewma")]);
            assert_eq!(b.unwrap().algorithm, Algorithm::Ewma, "{p:?}");
            let (b, _) = balance_of(&[(key, "least_request")]);
            assert_eq!(b.unwrap().algorithm, Algorithm::LeastRequest);
            let (b, p) =
                balance_of(&[(key, "least_conn"), ("tandem.dev/upstream-hash-by", "$uri")]);
            assert_eq!(b.unwrap().algorithm, Algorithm::RoundRobin);
            assert!(p.len() == 1 && p[0].contains(key), "{p:?}");
        }
    }

    #[test]
    fn cookie_affinity_attributes() {
        let (b, p) = balance_of(&[("nginx.ingress.kubernetes.io/affinity", "cookie")]);
        let a = b.unwrap().affinity.unwrap();
        assert!(p.is_empty());
        assert_eq!(a.name, DEFAULT_COOKIE_NAME);
        assert_eq!((a.path, a.attributes.as_str()), (None, "; HttpOnly"));
        let (b, p) = balance_of(&[
            ("nginx.ingress.kubernetes.io/affinity", "cookie"),
            ("nginx.ingress.kubernetes.io/session-cookie-name", "route"),
            ("nginx.ingress.kubernetes.io/session-cookie-path", "/app"),
            ("nginx.ingress.kubernetes.io/session-cookie-max-age", "3600"),
            ("nginx.ingress.kubernetes.io/session-cookie-expires", "60"),
            (
                "nginx.ingress.kubernetes.io/session-cookie-samesite",
                "none",
            ),
            (
                "nginx.ingress.kubernetes.io/session-cookie-domain",
                ".Example.com",
            ),
        ]);
        assert!(p.is_empty(), "{p:?}");
        let a = b.unwrap().affinity.unwrap();
        assert_eq!(a.name, "route");
        assert_eq!(a.path.as_deref(), Some("/app"));
        assert_eq!(
            a.attributes,
            "; Domain=.example.com; Max-Age=3600; HttpOnly; SameSite=None; Secure"
        );
        // Invalid settings: reported, defaults kept, affinity still on.
        let (b, p) = balance_of(&[
            ("nginx.ingress.kubernetes.io/affinity", "cookie"),
            ("nginx.ingress.kubernetes.io/session-cookie-name", "a;b"),
            (
                "nginx.ingress.kubernetes.io/session-cookie-path",
                "app; Domain=x",
            ),
            ("nginx.ingress.kubernetes.io/session-cookie-max-age", "-1"),
            (
                "nginx.ingress.kubernetes.io/session-cookie-samesite",
                "sometimes",
            ),
            ("nginx.ingress.kubernetes.io/session-cookie-secure", "yes"),
        ]);
        assert_eq!(p.len(), 5, "{p:?}");
        let a = b.unwrap().affinity.unwrap();
        assert_eq!(
            (a.name.as_str(), a.path.as_deref(), a.attributes.as_str()),
            (DEFAULT_COOKIE_NAME, None, "; HttpOnly")
        );
        let (b, p) = balance_of(&[("nginx.ingress.kubernetes.io/affinity", "ip")]);
        assert!(b.is_none() && p.len() == 1, "{p:?}");
    }

    #[test]
    fn affinity_mode_failure_and_conditional_samesite() {
        let (b, p) = balance_of(&[("tandem.dev/affinity", "cookie")]);
        assert!(p.is_empty(), "{p:?}");
        let a = b.unwrap().affinity.unwrap();
        assert_eq!(
            (a.mode, a.change_on_failure, a.attributes_without_samesite),
            (AffinityMode::Balanced, false, None),
            "ingress-nginx's defaults"
        );
        for prefix in ["nginx.ingress.kubernetes.io/", "tandem.dev/"] {
            let k = |n: &str| format!("{prefix}{n}");
            let map = [
                (k("affinity"), "cookie"),
                (k("affinity-mode"), "persistent"),
                (k("session-cookie-change-on-failure"), "true"),
                (k("session-cookie-samesite"), "None"),
                (k("session-cookie-conditional-samesite-none"), "true"),
            ];
            let pairs: Vec<(&str, &str)> = map.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            let (b, p) = balance_of(&pairs);
            assert!(p.is_empty(), "{p:?}");
            let a = b.unwrap().affinity.unwrap();
            assert_eq!(a.mode, AffinityMode::Persistent);
            assert!(a.change_on_failure);
            assert_eq!(a.attributes, "; HttpOnly; SameSite=None; Secure");
            assert_eq!(
                a.attributes_without_samesite.as_deref(),
                Some("; HttpOnly; Secure")
            );
        }
        let (b, _) = balance_of(&[
            ("nginx.ingress.kubernetes.io/affinity", "cookie"),
            ("nginx.ingress.kubernetes.io/affinity-mode", "balanced"),
            ("nginx.ingress.kubernetes.io/session-cookie-samesite", "Lax"),
            (
                "nginx.ingress.kubernetes.io/session-cookie-conditional-samesite-none",
                "true",
            ),
        ]);
        let a = b.unwrap().affinity.unwrap();
        assert_eq!(a.mode, AffinityMode::Balanced);
        assert_eq!(
            a.attributes_without_samesite, None,
            "only SameSite=None is conditional"
        );
        // Invalid values: each reported, its default kept, the rest read.
        let (b, p) = balance_of(&[
            ("nginx.ingress.kubernetes.io/affinity", "cookie"),
            ("nginx.ingress.kubernetes.io/affinity-mode", "sticky"),
            (
                "nginx.ingress.kubernetes.io/session-cookie-change-on-failure",
                "yes",
            ),
            (
                "nginx.ingress.kubernetes.io/session-cookie-samesite",
                "None",
            ),
            (
                "nginx.ingress.kubernetes.io/session-cookie-conditional-samesite-none",
                "maybe",
            ),
            ("nginx.ingress.kubernetes.io/session-cookie-name", "sid"),
        ]);
        assert_eq!(p.len(), 3, "{p:?}");
        for key in [
            "affinity-mode",
            "session-cookie-change-on-failure",
            "session-cookie-conditional-samesite-none",
        ] {
            assert!(p.iter().any(|m| m.contains(key)), "{key}: {p:?}");
        }
        let a = b.unwrap().affinity.unwrap();
        assert_eq!(
            (a.mode, a.change_on_failure, a.name.as_str()),
            (AffinityMode::Balanced, false, "sid")
        );
        assert_eq!(a.attributes, "; HttpOnly; SameSite=None; Secure");
        assert_eq!(a.attributes_without_samesite, None);
        // Without `affinity: cookie` they ask for nothing.
        let (b, p) = balance_of(&[("nginx.ingress.kubernetes.io/affinity-mode", "persistent")]);
        assert!(b.is_none() && p.is_empty(), "{p:?}");
    }

    #[test]
    fn outlier_settings() {
        let (b, p) = balance_of(&[("tandem.dev/outlier-consecutive-failures", "3")]);
        assert!(p.is_empty());
        assert_eq!(
            b.unwrap().outlier,
            Some(Outlier {
                consecutive_failures: 3,
                ejection: DEFAULT_EJECTION
            })
        );
        let (b, _) = balance_of(&[("tandem.dev/outlier-ejection-time", "2s")]);
        assert_eq!(
            b.unwrap().outlier.unwrap(),
            Outlier {
                consecutive_failures: DEFAULT_OUTLIER_FAILURES,
                ejection: Duration::from_secs(2)
            }
        );
        for (k, v) in [
            ("tandem.dev/outlier-consecutive-failures", "0"),
            ("tandem.dev/outlier-consecutive-failures", "many"),
            ("tandem.dev/outlier-ejection-time", "1h"),
        ] {
            let (b, p) = balance_of(&[(k, v)]);
            assert!(
                b.is_none() && p.len() == 1 && p[0].contains(k),
                "{k}={v}: {p:?}"
            );
        }
        // tandem's own: not read under the ingress-nginx prefix.
        let (b, _) = balance_of(&[(
            "nginx.ingress.kubernetes.io/outlier-consecutive-failures",
            "3",
        )]);
        assert!(b.is_none());
    }

    #[test]
    fn health_check_settings() {
        let (b, p) = balance_of(&[("tandem.dev/health-check-path", "/healthz")]);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(
            b.unwrap().health_check.unwrap(),
            HealthCheck {
                path: "/healthz".into(),
                interval: DEFAULT_HEALTH_INTERVAL,
                timeout: DEFAULT_HEALTH_TIMEOUT,
                healthy_threshold: DEFAULT_HEALTHY_THRESHOLD,
                unhealthy_threshold: DEFAULT_UNHEALTHY_THRESHOLD,
            }
        );
        let (b, p) = balance_of(&[
            ("tandem.dev/health-check-path", "/ready?full=1"),
            ("tandem.dev/health-check-interval", "500ms"),
            ("tandem.dev/health-check-timeout", "2s"),
            ("tandem.dev/health-check-healthy-threshold", "1"),
            ("tandem.dev/health-check-unhealthy-threshold", "2"),
        ]);
        assert!(p.is_empty(), "{p:?}");
        let h = b.unwrap().health_check.unwrap();
        assert_eq!(
            h.timeout,
            Duration::from_millis(500),
            "capped at the interval"
        );
        assert_eq!((h.healthy_threshold, h.unhealthy_threshold), (1, 2));
        for (k, v) in [
            ("tandem.dev/health-check-path", "healthz"),
            ("tandem.dev/health-check-path", "/a b"),
        ] {
            let (b, p) = balance_of(&[(k, v)]);
            assert!(b.is_none() && p.len() == 1, "{p:?}");
        }
        let (b, p) = balance_of(&[
            ("tandem.dev/health-check-path", "/h"),
            ("tandem.dev/health-check-interval", "0s"),
            ("tandem.dev/health-check-unhealthy-threshold", "0"),
        ]);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(
            b.unwrap().health_check.unwrap().interval,
            DEFAULT_HEALTH_INTERVAL
        );
        let (b, p) = balance_of(&[("tandem.dev/health-check-interval", "1s")]);
        assert!(
            b.is_none() && p.len() == 1 && p[0].contains("without"),
            "{p:?}"
        );
    }

    #[test]
    fn cookie_path_defaults_to_the_rule_path() {
        let a = parsed(&[("nginx.ingress.kubernetes.io/affinity", "cookie")]);
        let path_of = |p: &PathMatch| {
            a.policy_for(p)
                .and_then(|p| p.balance.clone())
                .and_then(|b| b.affinity)
                .and_then(|a| a.path)
        };
        assert_eq!(
            path_of(&PathMatch::Prefix("/api".into())).as_deref(),
            Some("/api")
        );
        assert_eq!(
            path_of(&PathMatch::Exact("/x/y".into())).as_deref(),
            Some("/x/y")
        );
        assert_eq!(
            path_of(&PathMatch::Prefix("/a;b".into())).as_deref(),
            Some("/")
        );
        // An explicit path stays; no affinity, the shared policy itself.
        let a = parsed(&[
            ("nginx.ingress.kubernetes.io/affinity", "cookie"),
            ("nginx.ingress.kubernetes.io/session-cookie-path", "/"),
        ]);
        let p = a.policy_for(&PathMatch::Prefix("/api".into())).unwrap();
        assert!(Arc::ptr_eq(&p, a.policy.as_ref().unwrap()));
        let a = parsed(&[("nginx.ingress.kubernetes.io/load-balance", "ewma")]);
        let p = a.policy_for(&PathMatch::Prefix("/api".into())).unwrap();
        assert!(Arc::ptr_eq(&p, a.policy.as_ref().unwrap()));
        assert!(
            parsed(&[])
                .policy_for(&PathMatch::Prefix("/".into()))
                .is_none()
        );
    }
}
