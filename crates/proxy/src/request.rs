//! Checks and normalisation of a request before it is routed: size limits of the request head,
//! the authority (absolute-form or `:authority`, else `Host`), and the path (percent-decoding of
//! unreserved characters, dot-segment removal). Pure functions over the parsed request head;
//! the proxy answers a [`Reject`] itself.

use std::borrow::Cow;

use http::{Version, header};
use pingora_http::RequestHeader;
use pingora_http::authority::{RawTargetAuthority, raw_target_authority};

/// Whether the request target is in absolute-form (`GET http://host/path HTTP/1.1`).
pub fn is_absolute_form(req: &RequestHeader) -> bool {
    req.uri.authority().is_none() && raw_target_authority(req.raw_path()).authority().is_some()
}

/// Why a request is answered by the proxy instead of being routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("request line longer than the limit")]
    UriTooLong,
    #[error("a header field longer than the limit")]
    HeaderFieldTooLarge,
    #[error("request headers larger than the limit")]
    HeadersTooLarge,
    #[error("more header fields than the limit")]
    TooManyHeaders,
    #[error("HTTP/1.1 request without Host")]
    MissingHost,
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("invalid Host")]
    InvalidHost,
    #[error("invalid percent-encoding in the path")]
    InvalidPercentEncoding,
    #[error("path climbs above the root")]
    PathAboveRoot,
    #[error("ambiguous Content-Length")]
    AmbiguousContentLength,
}

impl Reject {
    /// The status the proxy answers with (RFC 9110 §15.5, RFC 6585 §5).
    pub fn status(self) -> u16 {
        match self {
            Self::UriTooLong => 414,
            Self::HeaderFieldTooLarge | Self::HeadersTooLarge | Self::TooManyHeaders => 431,
            _ => 400,
        }
    }

    /// Stable snake_case name, for the access log's `local` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UriTooLong => "uri_too_long",
            Self::HeaderFieldTooLarge => "header_field_too_large",
            Self::HeadersTooLarge => "headers_too_large",
            Self::TooManyHeaders => "too_many_headers",
            Self::MissingHost => "missing_host",
            Self::DuplicateHost => "duplicate_host",
            Self::InvalidHost => "invalid_host",
            Self::InvalidPercentEncoding => "invalid_percent_encoding",
            Self::PathAboveRoot => "path_above_root",
            Self::AmbiguousContentLength => "ambiguous_content_length",
        }
    }
}

/// Limits of the request head. The defaults follow nginx's `large_client_header_buffers 4 8k`
/// (one line at most 8 KiB, 32 KiB in all) and Apache's `LimitRequestFields 100`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadLimits {
    /// Method, request target and version: above this → 414.
    pub request_line: usize,
    /// One header field, name and value: above this → 431.
    pub header_field: usize,
    /// All header fields together: above this → 431.
    pub headers_total: usize,
    /// Number of header fields: above this → 431.
    pub header_count: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        Self {
            request_line: 8 * 1024,
            header_field: 8 * 1024,
            headers_total: 32 * 1024,
            header_count: 100,
        }
    }
}

/// Checks the request head against the limits.
pub fn check_limits(req: &RequestHeader, limits: &HeadLimits) -> Result<(), Reject> {
    // "GET " + target + " HTTP/1.1"
    if req.method.as_str().len() + 1 + req.raw_path().len() + 9 > limits.request_line {
        return Err(Reject::UriTooLong);
    }
    if req.headers.len() > limits.header_count {
        return Err(Reject::TooManyHeaders);
    }
    let mut total = 0;
    for (name, value) in &req.headers {
        // "name: value\r\n"
        let field = name.as_str().len() + 2 + value.len();
        if field > limits.header_field {
            return Err(Reject::HeaderFieldTooLarge);
        }
        total += field + 2;
    }
    if total > limits.headers_total {
        return Err(Reject::HeadersTooLarge);
    }
    Ok(())
}

/// The authority a request is for, as sent (port included): the request target's authority
/// when there is one — absolute-form in HTTP/1.1, which replaces `Host` (RFC 9112 §3.2.2), or
/// HTTP/2's `:authority` — else the `Host` header. Empty when an HTTP/1.0 or HTTP/2 request
/// names none.
pub fn authority(req: &RequestHeader) -> Result<&str, Reject> {
    let target = match req.uri.authority() {
        Some(a) => Some(a.as_str()),
        // The HTTP/1 parser keeps an absolute-form authority only in the raw target.
        None => match raw_target_authority(req.raw_path()) {
            RawTargetAuthority::None => None,
            RawTargetAuthority::Absolute { authority, .. } => {
                Some(std::str::from_utf8(authority).map_err(|_| Reject::InvalidHost)?)
            }
            RawTargetAuthority::AmbiguousAuthority => return Err(Reject::InvalidHost),
        },
    };
    let value = match target {
        Some(a) => a,
        None => {
            let mut hosts = req.headers.get_all(header::HOST).into_iter();
            match (hosts.next(), hosts.next()) {
                (Some(h), None) => h.to_str().map_err(|_| Reject::InvalidHost)?,
                (Some(_), Some(_)) => return Err(Reject::DuplicateHost),
                // RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without Host.
                (None, _) if req.version == Version::HTTP_11 => return Err(Reject::MissingHost),
                (None, _) => "",
            }
        }
    };
    if is_valid_authority(value) {
        Ok(value)
    } else {
        Err(Reject::InvalidHost)
    }
}

/// A request's authority kept for the rest of the request: the `Host` header's value shared
/// (the usual case, no copy), or a copy of the target's authority.
#[derive(Clone, Debug, Default)]
pub enum Authority {
    /// None named (HTTP/1.0 or HTTP/2 without one).
    #[default]
    Empty,
    /// The `Host` header's value (checked by [`authority`]: ASCII).
    Host(http::HeaderValue),
    /// From the request target (absolute-form, `:authority`).
    Target(String),
}

impl Authority {
    /// [`authority`] of the request, shared with its `Host` header when it comes from there.
    pub fn of(req: &RequestHeader) -> Result<Self, Reject> {
        let a = authority(req)?;
        Ok(match req.headers.get(header::HOST) {
            _ if a.is_empty() => Self::Empty,
            // The same bytes: the authority is the Host header itself.
            Some(h) if std::ptr::eq(h.as_bytes(), a.as_bytes()) => Self::Host(h.clone()),
            _ => Self::Target(a.to_owned()),
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Empty => "",
            // A checked authority is ASCII, so this never falls back.
            Self::Host(h) => h.to_str().unwrap_or(""),
            Self::Target(t) => t,
        }
    }
}

/// `host[:port]` where host is a registered name (letters, digits, `-._~`) or a bracketed IPv6
/// literal; anything else (spaces, commas, `/`, `@`, an unclosed `[`) is refused, as nginx does.
/// Empty is valid: a request without a host.
fn is_valid_authority(value: &str) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.is_empty()
            || !v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("v6", port),
                None => return false,
            },
        }
    } else {
        match value.split_once(':') {
            Some((host, port)) => (host, port),
            None => (value, ""),
        }
    };
    let host_ok = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
        && !host.contains("..");
    let port_ok = port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    host_ok && port_ok && (value.is_empty() || !host.is_empty())
}

/// Normalises a request path before routing: percent-encoded unreserved characters are decoded
/// (`%2e` → `.`, `%41` → `A`), other escapes keep their byte with uppercase hex (`%2f` → `%2F`,
/// so an encoded slash never becomes a separator), and dot segments are removed (RFC 3986
/// §5.2.4). A path that climbs above `/` or carries a broken or NUL escape is refused. Borrows
/// when nothing changes, which is the common case.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, Reject> {
    if !path.starts_with('/') {
        // `*` (OPTIONS) or an authority-form target: nothing to normalise.
        return Ok(Cow::Borrowed(path));
    }
    let has_escape = path.contains('%');
    if !has_escape && !has_dot_segment(path) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = match has_escape {
        true => match decode_unreserved(path)? {
            d if d == path => Cow::Borrowed(path),
            d => Cow::Owned(d),
        },
        false => Cow::Borrowed(path),
    };
    if !has_dot_segment(&decoded) {
        return Ok(decoded);
    }
    remove_dot_segments(&decoded).map(Cow::Owned)
}

fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| s == "." || s == "..")
}

fn decode_unreserved(path: &str) -> Result<String, Reject> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            // Everything else in a parsed URI is ASCII.
            out.push(char::from(bytes[i]));
            i += 1;
            continue;
        }
        let hex = |b: Option<&u8>| b.and_then(|b| char::from(*b).to_digit(16));
        let (Some(hi), Some(lo)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) else {
            return Err(Reject::InvalidPercentEncoding);
        };
        let byte = u8::try_from(hi * 16 + lo).map_err(|_| Reject::InvalidPercentEncoding)?;
        if byte == 0 {
            return Err(Reject::InvalidPercentEncoding);
        }
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(bytes[i + 1]).to_ascii_uppercase());
            out.push(char::from(bytes[i + 2]).to_ascii_uppercase());
        }
        i += 3;
    }
    Ok(out)
}

/// RFC 3986 §5.2.4 on an absolute path, except that `..` at the root is an error instead of
/// being dropped: such a request was written to escape a prefix.
fn remove_dot_segments(path: &str) -> Result<String, Reject> {
    let segments: Vec<&str> = path[1..].split('/').collect();
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *seg {
            "." => trailing_slash = last,
            ".." => {
                if out.pop().is_none() {
                    return Err(Reject::PathAboveRoot);
                }
                trailing_slash = last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut result = String::with_capacity(path.len());
    result.push('/');
    result.push_str(&out.join("/"));
    if trailing_slash && !out.is_empty() {
        result.push('/');
    }
    Ok(result)
}

/// The one `Content-Length` value to forward when the client sent several identical ones
/// (`3, 3` or the header twice); `Ok(None)` when there is nothing to collapse. Values that
/// differ never reach here: the HTTP/1 parser refuses them.
pub fn collapse_content_length(req: &RequestHeader) -> Result<Option<u64>, Reject> {
    let mut values = req.headers.get_all(header::CONTENT_LENGTH).into_iter();
    let (Some(first), second) = (values.next(), values.next()) else {
        return Ok(None);
    };
    if second.is_none() && !first.as_bytes().contains(&b',') {
        return Ok(None);
    }
    let mut seen: Option<u64> = None;
    for v in req.headers.get_all(header::CONTENT_LENGTH) {
        let v = v.to_str().map_err(|_| Reject::AmbiguousContentLength)?;
        for token in v.split(',') {
            let n: u64 = token
                .trim()
                .parse()
                .map_err(|_| Reject::AmbiguousContentLength)?;
            if seen.is_some_and(|s| s != n) {
                return Err(Reject::AmbiguousContentLength);
            }
            seen = Some(n);
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn normalizes_dot_segments_and_unreserved_escapes() {
        let ok = |p: &str| normalize_path(p).unwrap().into_owned();
        assert_eq!(ok("/api/x"), "/api/x");
        assert!(matches!(normalize_path("/api/x"), Ok(Cow::Borrowed(_))));
        assert_eq!(ok("/api/example-service/../../admin/x"), "/admin/x");
        assert_eq!(
            ok("/raw/../api/example-service/x"),
            "/api/example-service/x"
        );
        assert_eq!(ok("/a/%2e%2e/b"), "/b");
        assert_eq!(ok("/a/.%2e/b"), "/b");
        assert_eq!(ok("/a/%2E/b"), "/a/b");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a/./"), "/a/");
        assert_eq!(ok("/."), "/");
        assert_eq!(ok("/a/.."), "/");
        assert_eq!(ok("//x/./y"), "//x/y");
        assert_eq!(ok("/%41%7e"), "/A~");
        // An encoded slash stays encoded (uppercased), never a separator.
        assert_eq!(ok("/a/..%2f..%2fadmin"), "/a/..%2F..%2Fadmin");
        assert_eq!(ok("/a%2Fb/../c"), "/c");
        assert_eq!(ok("/a..b/.x/..."), "/a..b/.x/...");
        assert_eq!(ok("*"), "*");
    }

    #[test]
    fn refuses_paths_above_root_and_broken_escapes() {
        for p in [
            "/..",
            "/../x",
            "/a/../../x",
            "/%2e%2e/x",
            "/a/%2E%2E/%2e%2e/b",
        ] {
            assert_eq!(normalize_path(p), Err(Reject::PathAboveRoot), "{p}");
        }
        for p in ["/a%", "/a%2", "/a%zz", "/a%00b"] {
            assert_eq!(
                normalize_path(p),
                Err(Reject::InvalidPercentEncoding),
                "{p}"
            );
        }
    }

    #[test]
    fn authority_prefers_the_request_target_and_validates() {
        assert_eq!(
            authority(&req("/", &[("host", "a.example:8080")])),
            Ok("a.example:8080")
        );
        assert_eq!(
            authority(&req("http://b.example/h", &[("host", "a.example")])),
            Ok("b.example")
        );
        assert_eq!(
            authority(&req("/", &[("host", "[::1]:80")])),
            Ok("[::1]:80")
        );
        assert_eq!(
            authority(&req("/", &[("host", "a.example.")])),
            Ok("a.example.")
        );
        assert_eq!(authority(&req("/", &[("host", "")])), Ok(""));
        assert_eq!(authority(&req("/", &[])), Err(Reject::MissingHost));
        let mut h10 = req("/", &[]);
        h10.set_version(Version::HTTP_10);
        assert_eq!(authority(&h10), Ok(""));
        assert_eq!(
            authority(&req("/", &[("host", "a"), ("host", "a")])),
            Err(Reject::DuplicateHost)
        );
        for bad in [
            "a b", "a,b", "a/b", "[::1", "a@b", "a:80:90", "a:x", ":80", "a..b", "[zz]", "a\\b",
        ] {
            assert_eq!(
                authority(&req("/", &[("host", bad)])),
                Err(Reject::InvalidHost),
                "{bad}"
            );
        }
    }

    #[test]
    fn authority_kept_shares_the_host_header_or_copies_the_target() {
        let r = req("/", &[("host", "a.example:8080")]);
        let a = Authority::of(&r).unwrap();
        assert!(matches!(a, Authority::Host(_)), "{a:?}");
        assert_eq!(a.as_str(), "a.example:8080");
        let r = req("http://b.example/h", &[("host", "a.example")]);
        let a = Authority::of(&r).unwrap();
        assert!(matches!(a, Authority::Target(_)), "{a:?}");
        assert_eq!(a.as_str(), "b.example");
        let mut h10 = req("/", &[]);
        h10.set_version(Version::HTTP_10);
        assert!(matches!(Authority::of(&h10), Ok(Authority::Empty)));
        assert_eq!(Authority::default().as_str(), "");
        assert_eq!(
            Authority::of(&req("/", &[("host", "a b")])).map(|a| a.as_str().to_owned()),
            Err(Reject::InvalidHost)
        );
    }

    #[test]
    fn limits_map_to_414_and_431() {
        let limits = HeadLimits {
            request_line: 64,
            header_field: 32,
            headers_total: 60,
            header_count: 3,
        };
        assert_eq!(check_limits(&req("/ok", &[("a", "b")]), &limits), Ok(()));
        let long = format!("/{}", "x".repeat(64));
        assert_eq!(
            check_limits(&req(&long, &[]), &limits).map_err(Reject::status),
            Err(414)
        );
        let big = "v".repeat(40);
        assert_eq!(
            check_limits(&req("/", &[("a", &big)]), &limits),
            Err(Reject::HeaderFieldTooLarge)
        );
        let v = "v".repeat(20);
        assert_eq!(
            check_limits(&req("/", &[("a", &v), ("b", &v), ("c", &v)]), &limits),
            Err(Reject::HeadersTooLarge)
        );
        assert_eq!(
            check_limits(
                &req("/", &[("a", "1"), ("b", "1"), ("c", "1"), ("d", "1")]),
                &limits
            )
            .map_err(Reject::status),
            Err(431)
        );
    }

    #[test]
    fn content_length_duplicates_collapse_to_one() {
        assert_eq!(collapse_content_length(&req("/", &[])), Ok(None));
        assert_eq!(
            collapse_content_length(&req("/", &[("content-length", "3")])),
            Ok(None)
        );
        assert_eq!(
            collapse_content_length(&req("/", &[("content-length", "3, 3")])),
            Ok(Some(3))
        );
        assert_eq!(
            collapse_content_length(&req(
                "/",
                &[("content-length", "3"), ("content-length", "3")]
            )),
            Ok(Some(3))
        );
        assert_eq!(
            collapse_content_length(&req("/", &[("content-length", "3, 4")])),
            Err(Reject::AmbiguousContentLength)
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Paths made of segments an attacker would use.
        fn hostile_path() -> impl Strategy<Value = String> {
            let seg = prop_oneof![
                Just("a".to_owned()),
                Just("api".to_owned()),
                Just("".to_owned()),
                Just(".".to_owned()),
                Just("..".to_owned()),
                Just("%2e".to_owned()),
                Just("%2E%2e".to_owned()),
                Just(".%2e".to_owned()),
                Just("%2f".to_owned()),
                Just("..%2F..".to_owned()),
                Just("x%41y".to_owned()),
                Just("%7E".to_owned()),
                "[a-z0-9._~-]{1,4}",
            ];
            proptest::collection::vec(seg, 0..8).prop_map(|s| format!("/{}", s.join("/")))
        }

        fn dot_free(p: &str) -> bool {
            p.starts_with('/') && p.split('/').all(|s| s != "." && s != "..")
        }

        proptest! {
            /// A normalised path has no dot segment, decodes no unreserved escape twice, and
            /// normalising it again changes nothing.
            #[test]
            fn normalisation_is_dot_free_and_idempotent(p in hostile_path()) {
                if let Ok(n) = normalize_path(&p) {
                    prop_assert!(dot_free(&n), "{p} -> {n}");
                    prop_assert!(!n.contains("%2e") && !n.contains("%2E"), "{p} -> {n}");
                    let again = normalize_path(&n).unwrap();
                    prop_assert_eq!(&*again, &*n);
                    prop_assert!(matches!(again, Cow::Borrowed(_)));
                }
            }

            /// Never outside the rules: if the normalised path falls under a prefix, so does
            /// every path a dot-segment-resolving backend would derive from what is forwarded
            /// (which is the normalised path itself); and a path that escapes the root is
            /// refused rather than clamped.
            #[test]
            fn prefix_of_normalised_path_is_what_backends_see(p in hostile_path()) {
                match normalize_path(&p) {
                    Ok(n) => {
                        let backend_view = remove_dot_segments(&n).unwrap();
                        prop_assert_eq!(backend_view, n.to_string());
                    }
                    Err(e) => prop_assert!(matches!(e, Reject::PathAboveRoot | Reject::InvalidPercentEncoding)),
                }
            }

            /// Arbitrary printable bytes never panic.
            #[test]
            fn arbitrary_paths_never_panic(p in "/[ -~]{0,64}") {
                let _ = normalize_path(&p);
            }

            /// Any accepted Host is `host[:port]` without separators an upstream could read
            /// differently.
            #[test]
            fn accepted_hosts_are_plain(h in "[ -~]{0,40}") {
                let Ok(mut r) = RequestHeader::build("GET", b"/", None) else { return Ok(()) };
                if r.append_header("host", h.as_str()).is_err() {
                    return Ok(());
                }
                if let Ok(a) = authority(&r) {
                    prop_assert!(!a.bytes().any(|b| matches!(b, b' ' | b',' | b'/' | b'@' | b'?' | b'#' | b'\\')), "{a:?}");
                }
            }
        }
    }
}
