use super::*;

fn parsed(pairs: &[(&str, &str)]) -> IngressAnnotations {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    parse(Some(&map))
}

fn nginx(name: &str) -> String {
    format!("{NGINX_PREFIX}{name}")
}

fn tandem(name: &str) -> String {
    format!("{TANDEM_PREFIX}{name}")
}

fn policy(pairs: &[(&str, &str)]) -> RoutePolicy {
    let a = parsed(pairs);
    assert!(a.problems.is_empty(), "{:?}", a.problems);
    a.policy.as_deref().cloned().unwrap_or_default()
}

/// One annotation under either prefix, expecting a problem and no policy.
fn invalid(name: &str, value: &str) {
    for key in [nginx(name), tandem(name)] {
        let a = parsed(&[(key.as_str(), value)]);
        assert_eq!(a.problems.len(), 1, "{key}={value:?}: {:?}", a.problems);
        assert!(a.problems[0].contains(&key), "{:?}", a.problems);
    }
}

#[test]
fn no_annotations_no_policy() {
    let a = parse(None);
    assert!(a.policy.is_none());
    assert!(a.ssl_redirect);
    assert!(!a.force_ssl_redirect);
    assert!(!a.use_regex);
    let a = parsed(&[("unrelated.example/x", "1"), (&nginx("unknown-thing"), "y")]);
    assert!(a.policy.is_none() && a.problems.is_empty());
}

#[test]
fn body_size() {
    for (v, want) in [
        ("8m", Some(8 << 20)),
        ("8M", Some(8 << 20)),
        ("512k", Some(512 << 10)),
        ("1g", Some(1 << 30)),
        ("1000", Some(1000)),
        ("0", None),
    ] {
        let p = policy(&[(&nginx("proxy-body-size"), v)]);
        assert_eq!(p.max_body_bytes, want, "{v}");
    }
    for v in ["", "8mb", "-1", "1.5m", "m", "99999999999999999999g", "8 m"] {
        invalid("proxy-body-size", v);
    }
}

#[test]
fn timeouts() {
    let p = policy(&[
        (&nginx("proxy-connect-timeout"), "5"),
        (&nginx("proxy-read-timeout"), "120"),
        (&tandem("proxy-send-timeout"), "30s"),
    ]);
    assert_eq!(p.connect_timeout, Some(Duration::from_secs(5)));
    assert_eq!(p.read_timeout, Some(Duration::from_secs(120)));
    assert_eq!(p.send_timeout, Some(Duration::from_secs(30)));
    for name in [
        "proxy-connect-timeout",
        "proxy-read-timeout",
        "proxy-send-timeout",
    ] {
        for v in ["0", "-5", "abc", "1.5", "100000", "5m"] {
            invalid(name, v);
        }
    }
}

#[test]
fn redirects() {
    let p = policy(&[(&nginx("permanent-redirect"), "https://example.org/new")]);
    let r = p.redirect.unwrap();
    assert_eq!(
        (r.status, r.location.to_str().unwrap()),
        (301, "https://example.org/new")
    );
    let p = policy(&[
        (&nginx("permanent-redirect"), "https://example.org/"),
        (&nginx("permanent-redirect-code"), "308"),
    ]);
    assert_eq!(p.redirect.unwrap().status, 308);
    let p = policy(&[(&nginx("temporal-redirect"), "/elsewhere")]);
    assert_eq!(p.redirect.unwrap().status, 302);
    let p = policy(&[
        (&nginx("temporal-redirect"), "http://a.example"),
        (&nginx("temporal-redirect-code"), "307"),
    ]);
    assert_eq!(p.redirect.unwrap().status, 307);
    // Permanent wins over temporal.
    let p = policy(&[
        (&nginx("temporal-redirect"), "http://t.example"),
        (&nginx("permanent-redirect"), "http://p.example"),
    ]);
    assert_eq!(p.redirect.unwrap().status, 301);
    for v in [
        "example.org",
        "ftp://example.org",
        "https://",
        "//example.org/x",
        "https://exa mple.org",
        "javascript:alert(1)",
        "https://a.example/\r\nSet-Cookie: x=1",
        "https://a.example/caf\u{e9}",
    ] {
        invalid("permanent-redirect", v);
        invalid("temporal-redirect", v);
    }
    // A bad code keeps the default status and is reported.
    let a = parsed(&[
        (&nginx("permanent-redirect"), "https://example.org/"),
        (&nginx("permanent-redirect-code"), "200"),
    ]);
    assert_eq!(a.problems.len(), 1);
    assert_eq!(a.policy.unwrap().redirect.as_ref().unwrap().status, 301);
    invalid("temporal-redirect-code", "308");
    invalid("permanent-redirect-code", "abc");
}

#[test]
fn app_root() {
    let p = policy(&[(&nginx("app-root"), "/app1")]);
    assert_eq!(p.app_root.unwrap(), "/app1");
    for v in [
        "app1",
        "/",
        "//evil.example",
        "https://x.example/app",
        "/a b",
    ] {
        invalid("app-root", v);
    }
}

#[test]
fn source_ranges() {
    let p = policy(&[(&nginx("whitelist-source-range"), "10.0.0.0/24, 172.10.0.1")]);
    let s = p.source.unwrap();
    assert!(s.permits("10.0.0.7".parse().unwrap()));
    assert!(s.permits("172.10.0.1".parse().unwrap()));
    assert!(s.permits("::ffff:10.0.0.9".parse().unwrap()));
    assert!(!s.permits("172.10.0.2".parse().unwrap()));
    assert!(!s.permits("::1".parse().unwrap()));
    // The newer spelling, and the tandem one.
    let p = policy(&[(&nginx("allowlist-source-range"), "127.0.0.1/32")]);
    assert!(p.source.unwrap().permits("127.0.0.1".parse().unwrap()));
    let p = policy(&[(&tandem("allowlist-source-range"), "::1")]);
    assert!(p.source.unwrap().permits("::1".parse().unwrap()));
    let p = policy(&[(&nginx("denylist-source-range"), "127.0.0.0/8,::1/128")]);
    let s = p.source.unwrap();
    assert!(!s.permits("127.0.0.5".parse().unwrap()));
    assert!(!s.permits("::1".parse().unwrap()));
    assert!(s.permits("10.1.1.1".parse().unwrap()));
    // Deny wins over allow.
    let p = policy(&[
        (&nginx("allowlist-source-range"), "10.0.0.0/8"),
        (&nginx("denylist-source-range"), "10.0.0.1"),
    ]);
    let s = p.source.unwrap();
    assert!(!s.permits("10.0.0.1".parse().unwrap()));
    assert!(s.permits("10.0.0.2".parse().unwrap()));
    // Invalid: reported, and nobody passes (fail closed).
    for name in [
        "whitelist-source-range",
        "allowlist-source-range",
        "denylist-source-range",
    ] {
        for v in [
            "",
            "10.0.0.0/33",
            "not-an-ip",
            "10.0.0.0/8;deny all",
            "10.0.0",
        ] {
            invalid(name, v);
            let a = parsed(&[(nginx(name).as_str(), v)]);
            let s = a.policy.unwrap().source.clone().unwrap();
            assert!(s.deny_all && !s.permits("10.0.0.1".parse().unwrap()));
            assert!(a.problems[0].contains("fail closed"), "{:?}", a.problems);
        }
    }
}

#[test]
fn cors_defaults_and_settings() {
    let p = policy(&[(&nginx("enable-cors"), "true")]);
    let c = p.cors.unwrap();
    assert_eq!(c.origins, CorsOrigins::Any);
    assert_eq!(c.allow_methods, CORS_DEFAULT_METHODS);
    assert_eq!(c.allow_headers, CORS_DEFAULT_HEADERS);
    assert!(c.allow_credentials);
    assert_eq!(c.max_age, "1728000");
    assert!(c.expose_headers.is_none());
    // With credentials, `*` echoes the origin back.
    let o = HeaderValue::from_static("https://a.example");
    assert_eq!(c.allow_origin(Some(&o)).unwrap(), o);

    let p = policy(&[
        (&nginx("enable-cors"), "true"),
        (
            &nginx("cors-allow-origin"),
            "https://origin-site.com:4443, http://*.example.org",
        ),
        (&nginx("cors-allow-methods"), "PUT, GET"),
        (
            &nginx("cors-allow-headers"),
            "X-Forwarded-For, X-app123-XPTO",
        ),
        (&nginx("cors-expose-headers"), "*, X-Custom"),
        (&nginx("cors-allow-credentials"), "false"),
        (&nginx("cors-max-age"), "600"),
    ]);
    let c = p.cors.unwrap();
    assert_eq!(c.allow_methods, "PUT, GET");
    assert_eq!(c.allow_headers, "X-Forwarded-For, X-app123-XPTO");
    assert_eq!(c.expose_headers.as_ref().unwrap(), "*, X-Custom");
    assert!(!c.allow_credentials);
    assert_eq!(c.max_age, "600");
    let allowed = |o: &'static str| c.allow_origin(Some(&HeaderValue::from_static(o))).is_some();
    assert!(allowed("https://origin-site.com:4443"));
    assert!(!allowed("https://origin-site.com"));
    assert!(!allowed("http://origin-site.com:4443"));
    assert!(allowed("http://a.example.org"));
    assert!(allowed("http://a.b.example.org"));
    assert!(!allowed("http://example.org"));
    assert!(!allowed("http://evilexample.org"));
    assert!(c.allow_origin(None).is_none());

    let p = policy(&[
        (&nginx("enable-cors"), "true"),
        (&nginx("cors-allow-origin"), "null, https://a.example"),
    ]);
    let c = p.cors.unwrap();
    let allowed = |o: &'static str| c.allow_origin(Some(&HeaderValue::from_static(o))).is_some();
    assert!(allowed("null") && allowed("https://a.example"));
    assert!(!allowed("NULL") && !allowed("https://null"));

    // Without enable-cors the settings do nothing.
    let a = parsed(&[(&nginx("cors-allow-origin"), "https://a.example")]);
    assert!(a.policy.is_none());
}

#[test]
fn cors_invalid_values() {
    let with = |name: &str, v: &str| {
        let a = parsed(&[(&nginx("enable-cors"), "true"), (&nginx(name), v)]);
        assert_eq!(a.problems.len(), 1, "{name}={v:?}: {:?}", a.problems);
        a.policy.unwrap().cors.clone().unwrap()
    };
    for v in [
        "example.org",
        "https://",
        "https://a.example:x",
        "https://a b",
    ] {
        assert_eq!(with("cors-allow-origin", v).origins, CorsOrigins::Any);
    }
    assert_eq!(
        with("cors-allow-methods", "GET;DELETE").allow_methods,
        CORS_DEFAULT_METHODS
    );
    assert_eq!(
        with("cors-allow-headers", "X-Ok, X Bad").allow_headers,
        CORS_DEFAULT_HEADERS
    );
    assert!(
        with("cors-expose-headers", "X-A\r\nX-B")
            .expose_headers
            .is_none()
    );
    assert!(with("cors-allow-credentials", "yes").allow_credentials);
    assert_eq!(with("cors-max-age", "-1").max_age, "1728000");
    invalid("enable-cors", "on");
}

#[test]
fn upstream_vhost_and_prefix() {
    let p = policy(&[
        (&nginx("upstream-vhost"), "internal.example:8080"),
        (&nginx("x-forwarded-prefix"), "/path"),
    ]);
    assert_eq!(p.upstream_host.unwrap(), "internal.example:8080");
    assert_eq!(p.forwarded_prefix.unwrap(), "/path");
    for v in ["a b", "$host", "x\r\ny", "a/b", ""] {
        invalid("upstream-vhost", v);
    }
    invalid("x-forwarded-prefix", "");
    invalid("x-forwarded-prefix", "a\u{7}b");
}

#[test]
fn response_headers() {
    let p = policy(&[(
        &tandem("response-headers"),
        "X-Frame-Options: DENY\nX-Team:  payments \n\n",
    )]);
    assert_eq!(
        p.response_headers,
        vec![
            (
                HeaderName::from_static("x-frame-options"),
                HeaderValue::from_static("DENY")
            ),
            (
                HeaderName::from_static("x-team"),
                HeaderValue::from_static("payments")
            ),
        ]
    );
    for v in [
        "no colon",
        "Bad Name: x",
        "Content-Length: 5",
        "X-A: 1\nX-A: 2",
        "",
        "X-A: \u{1}",
    ] {
        let a = parsed(&[(&tandem("response-headers"), v)]);
        assert_eq!(a.problems.len(), 1, "{v:?}");
        assert!(a.policy.is_none());
    }
    // ingress-nginx's custom-headers names a ConfigMap: not the same thing, not read.
    let a = parsed(&[(&nginx("response-headers"), "X-A: 1")]);
    assert!(a.policy.is_none());
}

#[test]
fn backend_protocol() {
    for (v, want) in [
        ("HTTP", BackendProtocol::Http1),
        ("http", BackendProtocol::Http1),
        ("GRPC", BackendProtocol::H2c),
        ("H2C", BackendProtocol::H2c),
        ("HTTPS", BackendProtocol::Https),
        ("grpcs", BackendProtocol::Grpcs),
    ] {
        assert_eq!(
            policy(&[(&nginx("backend-protocol"), v)]).backend_protocol,
            Some(want)
        );
    }
    for v in ["AUTO_HTTP", "FCGI", "SPDY", ""] {
        invalid("backend-protocol", v);
    }
    let a = parsed(&[(&nginx("backend-protocol"), "FCGI")]);
    assert!(a.problems[0].contains("not supported"));
}

#[test]
fn ssl_redirect_flags() {
    let a = parsed(&[(&nginx("ssl-redirect"), "false")]);
    assert!(!a.ssl_redirect);
    let a = parsed(&[(&tandem("ssl-redirect"), "false")]);
    assert!(!a.ssl_redirect);
    let a = parsed(&[(&nginx("force-ssl-redirect"), "true")]);
    assert!(a.force_ssl_redirect && a.ssl_redirect);
    invalid("ssl-redirect", "no");
    invalid("force-ssl-redirect", "1");
    // Edge-only flags make no route policy.
    assert!(a.policy.is_none());
}

#[test]
fn tandem_spelling_wins_and_conflict_is_reported() {
    let a = parsed(&[
        (&tandem("proxy-body-size"), "1k"),
        (&nginx("proxy-body-size"), "8m"),
    ]);
    assert_eq!(a.policy.unwrap().max_body_bytes, Some(1024));
    assert_eq!(a.problems.len(), 1);
    assert!(a.problems[0].contains("both set"), "{:?}", a.problems);
    // Same value under both: no conflict.
    let a = parsed(&[
        (&tandem("proxy-body-size"), "8m"),
        (&nginx("proxy-body-size"), "8m"),
    ]);
    assert!(a.problems.is_empty());
}

#[test]
fn invalid_annotation_leaves_the_others() {
    let a = parsed(&[
        (&nginx("proxy-body-size"), "huge"),
        (&nginx("proxy-read-timeout"), "7"),
    ]);
    assert_eq!(a.problems.len(), 1);
    let p = a.policy.unwrap();
    assert_eq!(p.max_body_bytes, None);
    assert_eq!(p.read_timeout, Some(Duration::from_secs(7)));
}

#[test]
fn over_long_value_is_refused() {
    let long = "1".repeat(MAX_VALUE_LEN + 1);
    invalid("proxy-body-size", &long);
}

#[test]
fn literal_prefixes() {
    for (re, want) in [
        ("/something(/|$)(.*)", "/something"),
        ("/api/v1/(.*)", "/api/v1"),
        ("/api/v[0-9]+/x", "/api"),
        ("/(.*)", "/"),
        ("/.*", "/"),
        ("/plain", "/plain"),
        ("/plain/", "/plain"),
        ("/a.b", "/"),
    ] {
        assert_eq!(literal_prefix(re), want, "{re}");
    }
}

#[test]
fn rewrite_with_capture_groups() {
    let a = parsed(&[
        (&nginx("rewrite-target"), "/$2"),
        (&nginx("use-regex"), "true"),
    ]);
    assert!(a.problems.is_empty(), "{:?}", a.problems);
    let (m, _, p) = a.regex_route(Some("/something(/|$)(.*)")).unwrap().unwrap();
    assert_eq!(m, PathMatch::Prefix("/something".into()));
    let r = p.unwrap().rewrite.clone().unwrap();
    assert_eq!(r.apply("/something", None).unwrap(), "/");
    assert_eq!(r.apply("/something/", None).unwrap(), "/");
    assert_eq!(r.apply("/something/new", None).unwrap(), "/new");
    assert_eq!(r.apply("/SomeThing/new", Some("a=1")).unwrap(), "/new?a=1");
    assert!(r.apply("/other", None).is_none());

    let a = parsed(&[(&nginx("rewrite-target"), "/v2/${1}x?from=old")]);
    assert!(a.use_regex, "rewrite-target implies regex paths");
    let (_, _, p) = a.regex_route(Some("/api/(.*)")).unwrap().unwrap();
    let r = p.unwrap().rewrite.clone().unwrap();
    assert_eq!(
        r.apply("/api/u", Some("q=1")).unwrap(),
        "/v2/ux?from=old&q=1"
    );
    // Without capture groups the whole path is replaced, as nginx does.
    let a = parsed(&[(&nginx("rewrite-target"), "/")]);
    let (_, _, p) = a.regex_route(Some("/foo")).unwrap().unwrap();
    let r = p.unwrap().rewrite.clone().unwrap();
    assert_eq!(r.apply("/foo/bar", None).unwrap(), "/");
}

#[test]
fn rewrite_invalid_values() {
    for v in [
        "http://x.example/$1",
        "/$host",
        "/a b",
        "/$x",
        "/${1",
        "relative",
    ] {
        invalid("rewrite-target", v);
    }
    invalid("use-regex", "yes");
    // A refused target still makes the paths regexes (they were written as such), unrewritten.
    let a = parsed(&[(&nginx("rewrite-target"), "/$host")]);
    let (m, _, p) = a.regex_route(Some("/ok/(.*)")).unwrap().unwrap();
    assert_eq!(m, PathMatch::Prefix("/ok".into()));
    assert!(p.is_none());
    // A group the path does not have is empty, as in nginx.
    let a = parsed(&[(&nginx("rewrite-target"), "/$3")]);
    let (_, _, p) = a.regex_route(Some("/x/(.*)")).unwrap().unwrap();
    assert_eq!(
        p.unwrap()
            .rewrite
            .as_ref()
            .unwrap()
            .apply("/x/y", None)
            .unwrap(),
        "/"
    );
    // A path that is no regex, a regex too big.
    assert!(a.regex_route(Some("/x/(")).unwrap().is_err());
    assert!(a.regex_route(Some("x/(.*)")).unwrap().is_err());
    let big = format!("/{}", "(a|b){1000}".repeat(20));
    assert!(a.regex_route(Some(&big)).unwrap().is_err());
    // use-regex without a rewrite: routed by the literal prefix, no rewrite.
    let a = parsed(&[(&nginx("use-regex"), "true")]);
    let (m, _, p) = a.regex_route(Some("/api/v[0-9]+/.*")).unwrap().unwrap();
    assert_eq!(m, PathMatch::Prefix("/api".into()));
    assert!(p.is_none());
    // Without regex, paths are not regexes.
    assert!(parse(None).regex_route(Some("/x")).is_none());
}
