//! A route's annotation policy on the data path: answers given before proxying (403 by source
//! range, redirects, app root, 413 by `Content-Length`, CORS preflight), the upstream request's
//! changes (Host, `X-Forwarded-Prefix`, rewritten path), response headers, and the body-size
//! count for bodies without `Content-Length`. Everything here reads values parsed at
//! translation; a route without annotations never gets here.

use std::net::IpAddr;

use http::{HeaderValue, Method, header};
use k8s_sync::RoutePolicy;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};

/// An answer the route's policy gives instead of proxying.
#[derive(Debug, PartialEq, Eq)]
pub enum PolicyAnswer {
    /// The client's address is outside the allowed ranges (or inside a denied one).
    Forbidden,
    /// `permanent-redirect` / `temporal-redirect` / `app-root`.
    Redirect {
        status: u16,
        location: HeaderValue,
        reason: &'static str,
    },
    /// The declared body is larger than `proxy-body-size`.
    TooLarge,
    /// A CORS preflight, answered with 204 and these headers.
    Preflight(Vec<(header::HeaderName, HeaderValue)>),
}

/// What the policy decides for a request before it is proxied. `client` is the client address
/// after trusted-proxy handling; `path` the normalised path.
pub fn answer(
    policy: &RoutePolicy,
    req: &RequestHeader,
    client: Option<IpAddr>,
    path: &str,
) -> Option<PolicyAnswer> {
    if let Some(ranges) = &policy.source
        && !client.is_some_and(|ip| ranges.permits(ip))
    {
        return Some(PolicyAnswer::Forbidden);
    }
    if let Some(r) = &policy.redirect {
        return Some(PolicyAnswer::Redirect {
            status: r.status,
            location: r.location.clone(),
            reason: "annotation_redirect",
        });
    }
    if let Some(root) = &policy.app_root
        && path == "/"
    {
        return Some(PolicyAnswer::Redirect {
            status: 302,
            location: root.clone(),
            reason: "app_root",
        });
    }
    if let Some(max) = policy.max_body_bytes
        && declared_length(req).is_some_and(|n| n > max)
    {
        return Some(PolicyAnswer::TooLarge);
    }
    if let Some(cors) = &policy.cors
        && req.method == Method::OPTIONS
        && req
            .headers
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        let mut h = Vec::with_capacity(6);
        if let Some(origin) = cors.allow_origin(req.headers.get(header::ORIGIN)) {
            let echoed = origin != "*";
            h.push((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin));
            if cors.allow_credentials {
                h.push((
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                ));
            }
            h.push((
                header::ACCESS_CONTROL_ALLOW_METHODS,
                cors.allow_methods.clone(),
            ));
            h.push((
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                cors.allow_headers.clone(),
            ));
            h.push((header::ACCESS_CONTROL_MAX_AGE, cors.max_age.clone()));
            if echoed {
                h.push((header::VARY, HeaderValue::from_static("Origin")));
            }
        }
        return Some(PolicyAnswer::Preflight(h));
    }
    None
}

fn declared_length(req: &RequestHeader) -> Option<u64> {
    // Already checked to be one well-formed value by the request checks.
    req.headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The `Access-Control-Allow-Origin` to add to the response of an ordinary CORS request.
pub fn cors_origin(policy: &RoutePolicy, req: &RequestHeader) -> Option<HeaderValue> {
    let cors = policy.cors.as_ref()?;
    cors.allow_origin(req.headers.get(header::ORIGIN))
}

/// Counts body bytes of a request against `proxy-body-size`: an error (413, or an aborted
/// request once the response has started) when the limit is passed.
pub fn count_body(
    policy: &RoutePolicy,
    seen: &mut u64,
    chunk: Option<&bytes::Bytes>,
) -> Result<()> {
    let Some(max) = policy.max_body_bytes else {
        return Ok(());
    };
    *seen += chunk.map_or(0, |c| c.len() as u64);
    if *seen > max {
        return Err(Error::explain(
            ErrorType::HTTPStatus(413),
            "request body larger than proxy-body-size",
        ));
    }
    Ok(())
}

/// Changes to the upstream request: Host, `X-Forwarded-Prefix`, the rewritten path. `path` is
/// the path the request was routed by.
pub fn upstream_request(policy: &RoutePolicy, req: &mut RequestHeader, path: &str) -> Result<()> {
    if let Some(host) = &policy.upstream_host {
        req.insert_header(header::HOST, host.clone())?;
    }
    if let Some(prefix) = &policy.forwarded_prefix {
        req.insert_header("x-forwarded-prefix", prefix.clone())?;
    }
    if let Some(rewrite) = &policy.rewrite
        && let Some(target) = rewrite.apply(path, req.uri.query())
    {
        let uri = target
            .parse::<http::Uri>()
            .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "rewritten path", e))?;
        req.set_uri(uri);
    }
    Ok(())
}

/// Headers added to a response passed on from the backend.
pub fn response(
    policy: &RoutePolicy,
    resp: &mut ResponseHeader,
    cors_origin: Option<&HeaderValue>,
) -> Result<()> {
    if let (Some(cors), Some(origin)) = (&policy.cors, cors_origin) {
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone())?;
        if cors.allow_credentials {
            resp.insert_header(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true")?;
        }
        if let Some(expose) = &cors.expose_headers {
            resp.insert_header(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone())?;
        }
        if origin != "*" {
            resp.append_header(header::VARY, "Origin")?;
        }
    }
    for (name, value) in &policy.response_headers {
        resp.insert_header(name.clone(), value.clone())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn policy(pairs: &[(&str, &str)]) -> RoutePolicy {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (format!("nginx.ingress.kubernetes.io/{k}"), (*v).to_owned()))
            .collect();
        let a = k8s_sync::annotations::parse(Some(&map));
        assert!(a.problems.is_empty(), "{:?}", a.problems);
        a.policy.as_deref().cloned().unwrap()
    }

    fn req(method: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/x", None).unwrap();
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn order_of_answers() {
        let p = policy(&[
            ("allowlist-source-range", "10.0.0.0/8"),
            ("permanent-redirect", "https://new.example/"),
        ]);
        let r = req("GET", &[]);
        assert_eq!(
            answer(&p, &r, Some("192.0.2.1".parse().unwrap()), "/"),
            Some(PolicyAnswer::Forbidden)
        );
        assert_eq!(answer(&p, &r, None, "/"), Some(PolicyAnswer::Forbidden));
        assert!(matches!(
            answer(&p, &r, Some("10.1.2.3".parse().unwrap()), "/"),
            Some(PolicyAnswer::Redirect { status: 301, .. })
        ));
    }

    #[test]
    fn body_size_by_length_and_by_count() {
        let p = policy(&[("proxy-body-size", "1k")]);
        let big = req("POST", &[("content-length", "1025")]);
        assert_eq!(answer(&p, &big, None, "/"), Some(PolicyAnswer::TooLarge));
        let ok = req("POST", &[("content-length", "1024")]);
        assert_eq!(answer(&p, &ok, None, "/"), None);
        let mut seen = 0;
        let chunk = bytes::Bytes::from(vec![0u8; 600]);
        assert!(count_body(&p, &mut seen, Some(&chunk)).is_ok());
        assert!(count_body(&p, &mut seen, Some(&chunk)).is_err());
    }

    #[test]
    fn app_root_only_for_root() {
        let p = policy(&[("app-root", "/app")]);
        let r = req("GET", &[]);
        assert!(answer(&p, &r, None, "/").is_some());
        assert!(answer(&p, &r, None, "/other").is_none());
    }

    #[test]
    fn preflight_and_response_headers() {
        let p = policy(&[
            ("enable-cors", "true"),
            ("cors-allow-origin", "https://a.example"),
        ]);
        let pre = req(
            "OPTIONS",
            &[
                ("origin", "https://a.example"),
                ("access-control-request-method", "PUT"),
            ],
        );
        let Some(PolicyAnswer::Preflight(h)) = answer(&p, &pre, None, "/") else {
            panic!("no preflight answer");
        };
        assert!(h.iter().any(|(n, v)| *n == header::ACCESS_CONTROL_ALLOW_ORIGIN
            && v == "https://a.example"));
        // Another origin: answered, without CORS headers.
        let other = req(
            "OPTIONS",
            &[
                ("origin", "https://b.example"),
                ("access-control-request-method", "PUT"),
            ],
        );
        assert_eq!(
            answer(&p, &other, None, "/"),
            Some(PolicyAnswer::Preflight(vec![]))
        );
        // A plain OPTIONS goes to the backend.
        assert_eq!(answer(&p, &req("OPTIONS", &[]), None, "/"), None);
        let get = req("GET", &[("origin", "https://a.example")]);
        let origin = cors_origin(&p, &get);
        let mut resp = ResponseHeader::build(200, None).unwrap();
        response(&p, &mut resp, origin.as_ref()).unwrap();
        assert_eq!(
            resp.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://a.example"
        );
        assert_eq!(
            resp.headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS],
            "true"
        );
    }

    #[test]
    fn upstream_changes() {
        let map: BTreeMap<String, String> = [
            ("nginx.ingress.kubernetes.io/rewrite-target", "/$2"),
            (
                "nginx.ingress.kubernetes.io/upstream-vhost",
                "inner.example",
            ),
            ("nginx.ingress.kubernetes.io/x-forwarded-prefix", "/app"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let a = k8s_sync::annotations::parse(Some(&map));
        let (_, _, p) = a.regex_route(Some("/app(/|$)(.*)")).unwrap().unwrap();
        let p = p.unwrap();
        let mut r = RequestHeader::build("GET", b"/app/users?id=1", None).unwrap();
        upstream_request(&p, &mut r, "/app/users").unwrap();
        assert_eq!(r.uri.to_string(), "/users?id=1");
        assert_eq!(r.headers[header::HOST], "inner.example");
        assert_eq!(r.headers["x-forwarded-prefix"], "/app");
    }
}
