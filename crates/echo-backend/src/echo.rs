//! Building the JSON description of a request, and parsing the test hooks.
//!
//! Everything here is pure (no I/O) so it can be unit-tested without a server.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use serde::Serialize;

/// Request header that delays the response by N milliseconds.
pub const DELAY_HEADER: &str = "x-echo-delay-ms";
/// Request header that sets the response status code.
pub const STATUS_HEADER: &str = "x-echo-status";
/// Response header naming the instance that answered: `<service>/<pod>`.
pub const SERVED_BY_HEADER: &str = "x-served-by";
/// Upper bound for [`DELAY_HEADER`].
pub const MAX_DELAY: Duration = Duration::from_millis(60_000);

/// The JSON body sent back for every (non-WebSocket) request.
///
/// Field order is the serialisation order.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Echo {
    pub service: String,
    pub pod: String,
    /// `Host` header, or the URI authority (HTTP/2 `:authority`); empty if neither is present.
    pub host: String,
    /// Path and query exactly as received (`*` for `OPTIONS *`).
    pub path: String,
    pub method: String,
    /// `HTTP/1.0`, `HTTP/1.1`, `HTTP/2.0`, ...
    pub proto: String,
    /// Lowercased header name → values joined with `", "` in arrival order.
    pub headers: BTreeMap<String, String>,
    /// `ip:port` of the TCP peer.
    pub remote_addr: String,
    /// Request body decoded as lossy UTF-8.
    pub body: String,
}

impl Echo {
    /// Describes a request from its head, TCP peer and (already read) body.
    pub fn new(
        service: &str,
        pod: &str,
        parts: &Parts,
        remote_addr: Option<SocketAddr>,
        body: &[u8],
    ) -> Self {
        Self {
            service: service.to_owned(),
            pod: pod.to_owned(),
            host: request_host(parts),
            path: raw_path(parts),
            method: parts.method.as_str().to_owned(),
            proto: format!("{:?}", parts.version),
            headers: join_headers(&parts.headers),
            remote_addr: remote_addr.map(|a| a.to_string()).unwrap_or_default(),
            body: String::from_utf8_lossy(body).into_owned(),
        }
    }
}

/// `Host` header if present, else the authority of the request URI (how HTTP/2 carries it).
pub fn request_host(parts: &Parts) -> String {
    if let Some(host) = parts.headers.get(header::HOST) {
        return String::from_utf8_lossy(host.as_bytes()).into_owned();
    }
    parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default()
}

/// Path with query as it appeared on the request line / `:path`, without any normalisation.
pub fn raw_path(parts: &Parts) -> String {
    match parts.uri.path_and_query() {
        Some(pq) => pq.as_str().to_owned(),
        // Authority-form (CONNECT host:port) has no path.
        None => String::new(),
    }
}

/// Collapses a header map into one string per (lowercase) name, joining repeated
/// headers with `", "` in the order they were received. Non-UTF-8 bytes are replaced
/// with U+FFFD.
pub fn join_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .keys()
        .map(|name| {
            let joined = headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()))
                .collect::<Vec<_>>()
                .join(", ");
            (name.as_str().to_owned(), joined)
        })
        .collect()
}

/// The test hooks a request asked for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Hooks {
    /// From `x-echo-delay-ms`, capped at [`MAX_DELAY`].
    pub delay: Option<Duration>,
    /// From `x-echo-status`.
    pub status: Option<StatusCode>,
}

impl Hooks {
    /// Reads the hooks from request headers. Unparsable values are ignored (no delay,
    /// status 200) rather than failing the request; statuses outside 200–599 are ignored.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let delay = text(DELAY_HEADER)
            .and_then(|v| v.parse::<u64>().ok())
            .map(|ms| Duration::from_millis(ms).min(MAX_DELAY))
            .filter(|d| !d.is_zero());
        let status = text(STATUS_HEADER)
            .and_then(|v| v.parse::<u16>().ok())
            .filter(|code| (200..=599).contains(code))
            .and_then(|code| StatusCode::from_u16(code).ok());
        Self { delay, status }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, Request, Version};

    fn parts(req: Request<()>) -> Parts {
        req.into_parts().0
    }

    #[test]
    fn repeated_headers_are_joined_in_order() {
        let mut h = HeaderMap::new();
        h.append("x-multi", HeaderValue::from_static("one"));
        h.append("x-multi", HeaderValue::from_static("two"));
        h.append("x-multi", HeaderValue::from_static("three"));
        h.insert("x-single", HeaderValue::from_static("alone"));
        let joined = join_headers(&h);
        assert_eq!(joined["x-multi"], "one, two, three");
        assert_eq!(joined["x-single"], "alone");
        assert_eq!(joined.len(), 2);
    }

    #[test]
    fn header_names_are_lowercase_and_non_utf8_is_lossy() {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::HeaderName::from_bytes(b"X-Mixed-Case").expect("valid name"),
            HeaderValue::from_bytes(b"caf\xe9").expect("valid value"),
        );
        let joined = join_headers(&h);
        assert_eq!(joined["x-mixed-case"], "caf\u{fffd}");
    }

    #[test]
    fn host_comes_from_header_then_authority() {
        let p = parts(
            Request::get("/x")
                .header("host", "example.com:8080")
                .body(())
                .expect("request"),
        );
        assert_eq!(request_host(&p), "example.com:8080");

        // HTTP/2 style: no Host header, authority in the URI.
        let p = parts(
            Request::get("https://h2.example.com/x")
                .version(Version::HTTP_2)
                .body(())
                .expect("request"),
        );
        assert_eq!(request_host(&p), "h2.example.com");

        let p = parts(Request::get("/x").body(()).expect("request"));
        assert_eq!(request_host(&p), "");
    }

    #[test]
    fn path_keeps_query_and_encoding_verbatim() {
        let p = parts(
            Request::get("/api/a%2Fb/../c?q=1&q=2&e=%20")
                .body(())
                .expect("request"),
        );
        assert_eq!(raw_path(&p), "/api/a%2Fb/../c?q=1&q=2&e=%20");
        let p = parts(
            Request::get("http://example.com/abs?x")
                .body(())
                .expect("request"),
        );
        assert_eq!(raw_path(&p), "/abs?x");
    }

    #[test]
    fn echo_json_has_all_fields_in_order() {
        let p = parts(
            Request::post("/api/example-service/items?id=7")
                .header("host", "example.com")
                .header("x-a", "1")
                .header("x-a", "2")
                .body(())
                .expect("request"),
        );
        let peer: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
        let echo = Echo::new("svc", "svc-1", &p, Some(peer), b"hello \xff");
        let json = serde_json::to_string(&echo).expect("serialise");
        assert_eq!(
            json,
            r#"{"service":"svc","pod":"svc-1","host":"example.com","path":"/api/example-service/items?id=7","method":"POST","proto":"HTTP/1.1","headers":{"host":"example.com","x-a":"1, 2"},"remote_addr":"127.0.0.1:40000","body":"hello �"}"#
        );
    }

    #[test]
    fn proto_names() {
        for (v, s) in [
            (Version::HTTP_10, "HTTP/1.0"),
            (Version::HTTP_11, "HTTP/1.1"),
            (Version::HTTP_2, "HTTP/2.0"),
        ] {
            let p = parts(Request::get("/").version(v).body(()).expect("request"));
            assert_eq!(Echo::new("s", "p", &p, None, b"").proto, s);
        }
    }

    #[test]
    fn hooks_parse_cap_and_ignore_garbage() {
        let mut h = HeaderMap::new();
        assert_eq!(Hooks::from_headers(&h), Hooks::default());

        h.insert(DELAY_HEADER, HeaderValue::from_static(" 250 "));
        h.insert(STATUS_HEADER, HeaderValue::from_static("503"));
        let hooks = Hooks::from_headers(&h);
        assert_eq!(hooks.delay, Some(Duration::from_millis(250)));
        assert_eq!(hooks.status, Some(StatusCode::SERVICE_UNAVAILABLE));

        h.insert(DELAY_HEADER, HeaderValue::from_static("999999999"));
        assert_eq!(Hooks::from_headers(&h).delay, Some(MAX_DELAY));

        h.insert(DELAY_HEADER, HeaderValue::from_static("-5"));
        h.insert(STATUS_HEADER, HeaderValue::from_static("abc"));
        assert_eq!(Hooks::from_headers(&h), Hooks::default());

        h.insert(STATUS_HEADER, HeaderValue::from_static("101"));
        assert_eq!(Hooks::from_headers(&h).status, None);
        h.insert(STATUS_HEADER, HeaderValue::from_static("600"));
        assert_eq!(Hooks::from_headers(&h).status, None);
    }
}
