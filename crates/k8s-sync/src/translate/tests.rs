use super::*;
use crate::object::Object;
use serde_json::{Value, json};

fn snap(docs: Vec<Value>) -> Snapshot {
    let mut s = Snapshot::default();
    for d in docs {
        for o in Object::from_manifest(d).unwrap() {
            assert!(s.insert(o));
        }
    }
    s
}

fn settings() -> TierSettings {
    TierSettings {
        tier: Tier::Router,
        class: "tandem-router".into(),
        controller: "tandem.dev/router".into(),
        watch_without_class: false,
        default_certificate: None,
    }
}

fn ingress(name: &str, class: Option<&str>, created: Option<&str>, spec: Value) -> Value {
    let mut spec = spec;
    if let Some(c) = class {
        spec["ingressClassName"] = json!(c);
    }
    let mut meta = json!({"name": name, "namespace": "default"});
    if let Some(t) = created {
        meta["creationTimestamp"] = json!(t);
    }
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec})
}

fn rule(host: Option<&str>, path: &str, path_type: &str, svc: &str, port: Value) -> Value {
    let mut r = json!({"http": {"paths": [{"path": path, "pathType": path_type,
        "backend": {"service": {"name": svc, "port": port}}}]}});
    if let Some(h) = host {
        r["host"] = json!(h);
    }
    r
}

fn service(name: &str, ports: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": ports}})
}

fn key(svc: &str, port: ServicePortRef) -> BackendKey {
    BackendKey {
        namespace: "default".into(),
        service: svc.into(),
        port,
    }
}

#[test]
fn filters_by_class_name_annotation_and_default_class() {
    let r = json!({"rules": [rule(None, "/", "Prefix", "s", json!({"number": 80}))]});
    let mut legacy = ingress("legacy", None, None, r.clone());
    legacy["metadata"]["annotations"] = json!({"kubernetes.io/ingress.class": "tandem-router"});
    let docs = vec![
        ingress("mine", Some("tandem-router"), None, r.clone()),
        ingress("other", Some("nginx"), None, r.clone()),
        ingress("unclassed", None, None, r.clone()),
        legacy,
    ];
    let t = translate(&snap(docs.clone()), &settings());
    let served: BTreeSet<_> = t
        .routes
        .hostless
        .iter()
        .map(|r| r.ingress.name.clone())
        .collect();
    // "mine" and "legacy" both claim host-less "/": the first by name wins, the other conflicts.
    assert_eq!(served.len(), 1);
    assert!(
        t.problems
            .iter()
            .any(|p| p.reason == ProblemReason::PathConflict)
    );
    assert!(
        !t.problems
            .iter()
            .any(|p| p.name == "other" || p.name == "unclassed")
    );

    // Unclassed Ingresses are served when our IngressClass is the default.
    let mut docs2 = vec![ingress("unclassed", None, None, r.clone())];
    docs2.push(json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "tandem-router", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": "tandem.dev/router"}}));
    let t = translate(&snap(docs2), &settings());
    assert_eq!(t.routes.hostless.len(), 1);

    let t = translate(
        &snap(vec![ingress("unclassed", None, None, r)]),
        &TierSettings {
            watch_without_class: true,
            ..settings()
        },
    );
    assert_eq!(t.routes.hostless.len(), 1);
}

#[test]
fn hosts_are_lowercased_and_wildcards_keyed_by_suffix() {
    let docs = vec![ingress(
        "a",
        Some("tandem-router"),
        None,
        json!({"rules": [
            rule(Some("Foo.Example.COM"), "/", "Prefix", "s", json!({"number": 80})),
            rule(Some("*.example.com"), "/", "Prefix", "s", json!({"number": 80})),
            rule(Some("bad_host!"), "/", "Prefix", "s", json!({"number": 80})),
            rule(Some("a.*.example.com"), "/", "Prefix", "s", json!({"number": 80})),
        ]}),
    )];
    let t = translate(&snap(docs), &settings());
    assert!(t.routes.exact_hosts.contains_key("foo.example.com"));
    assert!(t.routes.wildcard_hosts.contains_key("example.com"));
    let bad: Vec<_> = t
        .problems
        .iter()
        .filter(|p| p.reason == ProblemReason::InvalidHost)
        .collect();
    assert_eq!(bad.len(), 2, "{bad:?}");
}

#[test]
fn paths_are_validated_and_prefixes_normalized() {
    let docs = vec![ingress(
        "a",
        Some("tandem-router"),
        None,
        json!({"rules": [{"http": {"paths": [
            {"path": "/foo/", "pathType": "Prefix", "backend": {"service": {"name": "s", "port": {"number": 80}}}},
            {"path": "/foo/", "pathType": "Exact", "backend": {"service": {"name": "s", "port": {"number": 80}}}},
            {"path": "/impl", "pathType": "ImplementationSpecific", "backend": {"service": {"name": "s", "port": {"number": 80}}}},
            {"path": "nope", "pathType": "Prefix", "backend": {"service": {"name": "s", "port": {"number": 80}}}},
            {"path": "/x", "pathType": "Regex", "backend": {"service": {"name": "s", "port": {"number": 80}}}},
            {"path": "/r", "pathType": "Prefix", "backend": {"resource": {"kind": "Bucket", "name": "b"}}},
            {"path": "/np", "pathType": "Prefix", "backend": {"service": {"name": "s"}}},
        ]}}]}),
    )];
    let t = translate(&snap(docs), &settings());
    let paths: Vec<_> = t.routes.hostless.iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        vec![
            PathMatch::Prefix("/foo".into()),
            PathMatch::Exact("/foo/".into()),
            PathMatch::Prefix("/impl".into())
        ]
    );
    assert!(t.routes.hostless[2].implementation_specific);
    let reasons: BTreeSet<_> = t.problems.iter().map(|p| p.reason).collect();
    for r in [
        ProblemReason::InvalidPath,
        ProblemReason::InvalidPathType,
        ProblemReason::ResourceBackend,
        ProblemReason::InvalidBackend,
        ProblemReason::ServiceNotFound,
    ] {
        assert!(reasons.contains(&r), "missing {r:?} in {:?}", t.problems);
    }
}

#[test]
fn oldest_ingress_wins_conflicts_and_others_merge() {
    let newer = ingress(
        "a-newer",
        Some("tandem-router"),
        Some("2026-02-01T00:00:00Z"),
        json!({"rules": [
            rule(Some("h.example"), "/api", "Prefix", "new", json!({"number": 80})),
            rule(Some("h.example"), "/extra", "Prefix", "new", json!({"number": 80})),
        ]}),
    );
    let older = ingress(
        "z-older",
        Some("tandem-router"),
        Some("2026-01-01T00:00:00Z"),
        json!({"rules": [rule(Some("h.example"), "/api/", "Prefix", "old", json!({"number": 80}))]}),
    );
    let t = translate(&snap(vec![newer, older]), &settings());
    let routes = &t.routes.exact_hosts["h.example"];
    assert_eq!(routes.len(), 2);
    let api = routes.iter().find(|r| r.path.path() == "/api").unwrap();
    assert_eq!(&*api.ingress.name, "z-older");
    let conflict: Vec<_> = t
        .problems
        .iter()
        .filter(|p| p.reason == ProblemReason::PathConflict)
        .collect();
    assert_eq!(conflict.len(), 1);
    assert_eq!(conflict[0].name, "a-newer");
    assert!(conflict[0].detail.contains("default/z-older"));
}

fn canary(name: &str, created: &str, annotations: Value, spec: Value) -> Value {
    let mut doc = ingress(name, Some("tandem-router"), Some(created), spec);
    let mut a = annotations;
    a["nginx.ingress.kubernetes.io/canary"] = json!("true");
    doc["metadata"]["annotations"] = a;
    doc
}

#[test]
fn canary_attaches_to_the_main_route_and_never_competes() {
    let main = ingress(
        "main",
        Some("tandem-router"),
        Some("2026-02-01T00:00:00Z"),
        json!({"rules": [
            rule(Some("h.example"), "/api", "Prefix", "stable", json!({"number": 80})),
            rule(Some("h.example"), "/exact", "Exact", "stable", json!({"number": 80})),
            rule(None, "/", "Prefix", "legacy", json!({"number": 80})),
        ]}),
    );
    // Older than the main Ingress: still a canary, not the owner of the path.
    let c1 = canary(
        "c1",
        "2026-01-01T00:00:00Z",
        json!({"nginx.ingress.kubernetes.io/canary-weight": "30"}),
        json!({"rules": [
            rule(Some("h.example"), "/api/", "Prefix", "beta", json!({"number": 80})),
            // pathType differs from the main route's: no main route.
            rule(Some("h.example"), "/exact", "Prefix", "beta", json!({"number": 80})),
            rule(Some("other.example"), "/", "Prefix", "beta", json!({"number": 80})),
            rule(None, "/", "Prefix", "beta", json!({"number": 80})),
        ],
        "tls": [{"hosts": ["h.example"], "secretName": "s"}],
        "defaultBackend": {"service": {"name": "beta", "port": {"number": 80}}}}),
    );
    let c2 = canary(
        "c2",
        "2026-03-01T00:00:00Z",
        json!({"nginx.ingress.kubernetes.io/canary-by-header": "x-c2"}),
        json!({"rules": [
            rule(Some("h.example"), "/api", "Prefix", "gamma", json!({"number": 80})),
            rule(None, "/", "Prefix", "legacy", json!({"number": 80})),
        ]}),
    );
    let t = translate(&snap(vec![main, c1, c2]), &settings());
    let routes = &t.routes.exact_hosts["h.example"];
    assert_eq!(routes.len(), 2, "canaries add no route: {routes:?}");
    let api = routes.iter().find(|r| r.path.path() == "/api").unwrap();
    assert_eq!(&*api.ingress.name, "main");
    assert_eq!(&*api.backend.service, "stable");
    let c = api.canary.as_ref().expect("canary attached");
    assert_eq!((&*c.ingress.name, &*c.backend.service), ("c1", "beta"));
    assert_eq!(c.rule.weight, 30);
    assert!(api.policy.is_none());
    let exact = routes.iter().find(|r| r.path.path() == "/exact").unwrap();
    assert!(exact.canary.is_none());
    assert_eq!(
        t.routes.hostless[0]
            .canary
            .as_ref()
            .unwrap()
            .ingress
            .name
            .as_ref(),
        "c1"
    );
    assert!(!t.routes.exact_hosts.contains_key("other.example"));
    assert!(t.routes.default_backend.is_none());
    // The canary backend is resolved like any other.
    assert!(t.routes.backends().any(|b| &*b.service == "beta"));
    assert!(t.endpoints.0.keys().any(|b| &*b.service == "beta"));
    let by = |reason| -> Vec<(&str, &str)> {
        t.problems
            .iter()
            .filter(|p| p.reason == reason)
            .map(|p| (p.name.as_str(), p.detail.as_str()))
            .collect()
    };
    assert!(
        by(ProblemReason::PathConflict).is_empty(),
        "{:?}",
        t.problems
    );
    let without = by(ProblemReason::CanaryWithoutMain);
    assert_eq!(without.len(), 3, "{without:?}");
    assert!(
        without
            .iter()
            .any(|(_, d)| d.contains("path /exact (Prefix)"))
    );
    assert!(without.iter().any(|(_, d)| d.contains("other.example")));
    assert!(without.iter().any(|(_, d)| d.contains("defaultBackend")));
    let conflicts = by(ProblemReason::CanaryConflict);
    assert_eq!(conflicts.len(), 2, "{conflicts:?}");
    assert!(conflicts.iter().all(|(n, _)| *n == "c2"));
    assert!(
        conflicts
            .iter()
            .any(|(_, d)| d.contains("already has a canary from older Ingress default/c1"))
    );
    assert!(conflicts.iter().any(|(_, d)| d.contains("own backend")));
}

#[test]
fn canary_of_a_regex_path_is_keyed_like_its_main() {
    let mut main = ingress(
        "main",
        Some("tandem-router"),
        Some("2026-02-01T00:00:00Z"),
        json!({"rules": [rule(Some("h.example"), "/api(/|$)(.*)", "ImplementationSpecific", "stable", json!({"number": 80}))]}),
    );
    main["metadata"]["annotations"] = json!({"nginx.ingress.kubernetes.io/rewrite-target": "/$2"});
    let c = canary(
        "c",
        "2026-02-02T00:00:00Z",
        json!({"nginx.ingress.kubernetes.io/use-regex": "true",
               "nginx.ingress.kubernetes.io/rewrite-target": "/ignored/$2",
               "nginx.ingress.kubernetes.io/canary-weight": "100"}),
        json!({"rules": [rule(Some("h.example"), "/api(/|$)(.*)", "ImplementationSpecific", "beta", json!({"number": 80}))]}),
    );
    let t = translate(&snap(vec![main, c]), &settings());
    let r = &t.routes.exact_hosts["h.example"][0];
    assert_eq!(&*r.canary.as_ref().unwrap().backend.service, "beta");
    // The main route's rewrite applies to canary requests too; the canary's own is ignored.
    let rw = r.policy.as_ref().unwrap().rewrite.as_ref().unwrap();
    assert_eq!(rw.apply("/api/x", None).as_deref(), Some("/x"));
    // Only the missing Services, each blamed on the Ingress naming it.
    let names: Vec<_> = t
        .problems
        .iter()
        .map(|p| (p.name.as_str(), p.reason))
        .collect();
    assert_eq!(
        names,
        [
            ("c", ProblemReason::ServiceNotFound),
            ("main", ProblemReason::ServiceNotFound)
        ]
    );
}

#[test]
fn edge_ignores_a_canary_ingress_tls() {
    let main = ingress(
        "main",
        Some("tandem-router"),
        Some("2026-02-01T00:00:00Z"),
        json!({"rules": [rule(Some("h.example"), "/", "Prefix", "stable", json!({"number": 80}))]}),
    );
    let c = canary(
        "c",
        "2026-02-02T00:00:00Z",
        json!({}),
        json!({"rules": [rule(Some("h.example"), "/", "Prefix", "beta", json!({"number": 80}))],
            "tls": [{"hosts": ["h.example"], "secretName": "s"}]}),
    );
    let mut s = settings();
    s.tier = Tier::TlsEdge;
    let t = translate(&snap(vec![main, c]), &s);
    assert!(t.routes.tls.is_empty());
    assert!(t.routes.https_redirect_hosts.is_empty());
    assert!(t.routes.exact_hosts["h.example"][0].canary.is_some());
}

#[test]
fn default_backend_oldest_wins() {
    let db =
        |svc: &str| json!({"defaultBackend": {"service": {"name": svc, "port": {"number": 80}}}});
    let docs = vec![
        ingress(
            "b",
            Some("tandem-router"),
            Some("2026-01-02T00:00:00Z"),
            db("two"),
        ),
        ingress(
            "a",
            Some("tandem-router"),
            Some("2026-01-03T00:00:00Z"),
            db("three"),
        ),
        ingress(
            "c",
            Some("tandem-router"),
            Some("2026-01-01T00:00:00Z"),
            db("one"),
        ),
    ];
    let t = translate(&snap(docs), &settings());
    assert_eq!(
        t.routes
            .default_backend
            .as_ref()
            .unwrap()
            .backend
            .service
            .as_ref(),
        "one"
    );
    assert_eq!(
        t.problems
            .iter()
            .filter(|p| p.reason == ProblemReason::DefaultBackendConflict)
            .count(),
        2
    );
}

#[test]
fn resolves_named_and_numbered_ports_through_endpoint_slices() {
    let docs = vec![
        ingress(
            "a",
            Some("tandem-router"),
            None,
            json!({"rules": [
                rule(None, "/named", "Prefix", "svc", json!({"name": "api"})),
                rule(None, "/number", "Prefix", "svc", json!({"number": 81})),
                rule(None, "/missing-port", "Prefix", "svc", json!({"number": 99})),
            ]}),
        ),
        service(
            "svc",
            json!([{"name": "api", "port": 80, "targetPort": 8080}, {"name": "admin", "port": 81}]),
        ),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "svc-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "svc"}},
        "addressType": "IPv4",
        "ports": [{"name": "api", "port": 8080}, {"name": "admin", "port": 9090}],
        "endpoints": [
            {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
            {"addresses": ["10.0.0.2"]},
            {"addresses": ["10.0.0.3"], "conditions": {"ready": false}},
            {"addresses": ["10.0.0.4"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["10.0.0.5"], "conditions": {"ready": false, "serving": false, "terminating": true}}
        ]}),
    ];
    let t = translate(&snap(docs), &settings());
    let api = t
        .endpoints
        .get(&key("svc", ServicePortRef::Name("api".into())));
    // Terminating but serving: draining (no new sessions), not ready; not serving: gone.
    assert_eq!(
        t.endpoints.0[&key("svc", ServicePortRef::Name("api".into()))].draining,
        ["10.0.0.4:8080".parse().unwrap()]
    );
    assert_eq!(
        api,
        &[
            "10.0.0.1:8080".parse().unwrap(),
            "10.0.0.2:8080".parse().unwrap()
        ][..]
    );
    let admin = t.endpoints.get(&key("svc", ServicePortRef::Number(81)));
    assert_eq!(
        admin,
        &[
            "10.0.0.1:9090".parse().unwrap(),
            "10.0.0.2:9090".parse().unwrap()
        ][..]
    );
    assert!(
        t.endpoints
            .get(&key("svc", ServicePortRef::Number(99)))
            .is_empty()
    );
    assert!(
        t.problems
            .iter()
            .any(|p| p.reason == ProblemReason::ServicePortNotFound)
    );
    // The route of a broken backend stays (it answers 503 rather than falling through).
    assert_eq!(t.routes.hostless.len(), 3);
}

#[test]
fn selector_less_service_uses_hand_written_endpoints() {
    let docs = vec![
        ingress(
            "legacy-fallback",
            Some("tandem-router"),
            None,
            json!({"rules": [rule(None, "/", "Prefix", "legacy", json!({"name": "http"}))]}),
        ),
        service(
            "legacy",
            json!([{"name": "http", "port": 80, "targetPort": 8080}]),
        ),
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "legacy", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": "10.34.145.199"}, {"ip": "10.34.145.200"}],
                         "notReadyAddresses": [{"ip": "10.34.145.201"}],
                         "ports": [{"name": "http", "port": 8080}]}]}),
    ];
    let t = translate(&snap(docs), &settings());
    let eps = t
        .endpoints
        .get(&key("legacy", ServicePortRef::Name("http".into())));
    assert_eq!(eps.len(), 2);
    assert!(t.routes.hostless[0].path.is_catch_all());
    assert!(t.problems.is_empty(), "{:?}", t.problems);
}

#[test]
fn translation_is_deterministic() {
    let docs = vec![
        ingress(
            "x",
            Some("tandem-router"),
            None,
            json!({"rules": [rule(Some("a.example"), "/", "Prefix", "s", json!({"number": 80}))]}),
        ),
        ingress(
            "y",
            Some("tandem-router"),
            None,
            json!({"rules": [rule(Some("a.example"), "/", "Prefix", "t", json!({"number": 80}))]}),
        ),
    ];
    let s = snap(docs);
    let a = translate(&s, &settings());
    let b = translate(&s, &settings());
    assert_eq!(a.routes, b.routes);
    assert_eq!(a.problems, b.problems);
    assert_eq!(
        a.routes.exact_hosts["a.example"][0].ingress.name.as_ref(),
        "x"
    );
}

fn edge() -> TierSettings {
    TierSettings {
        tier: Tier::TlsEdge,
        class: "tandem-edge".into(),
        controller: "tandem.dev/tls-edge".into(),
        watch_without_class: false,
        default_certificate: None,
    }
}

fn tls_secret_doc(name: &str, ty: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": ty,
        "metadata": {"name": name, "namespace": "default"},
        "stringData": {"tls.crt": "CERT", "tls.key": "KEY"}})
}

#[test]
fn edge_resolves_tls_secrets_and_reports_bad_references() {
    let mut opt_out = ingress(
        "opt-out",
        Some("tandem-edge"),
        None,
        json!({"tls": [{"hosts": ["plain.example"], "secretName": "good"}],
               "rules": [rule(Some("plain.example"), "/", "Prefix", "router", json!({"number": 80}))]}),
    );
    opt_out["metadata"]["annotations"] = json!({"tandem.dev/ssl-redirect": "false"});
    let docs = vec![
        ingress(
            "brand",
            Some("tandem-edge"),
            None,
            json!({"tls": [
                    {"hosts": ["Brand.Example"], "secretName": "good"},
                    {"hosts": ["*.wild.example"], "secretName": "missing"},
                    {"hosts": ["x.example"], "secretName": "other-ns/good"},
                    {"hosts": ["y.example"], "secretName": "opaque"}
                ],
                "rules": [rule(Some("brand.example"), "/", "Prefix", "router", json!({"number": 80}))]}),
        ),
        opt_out,
        tls_secret_doc("good", "kubernetes.io/tls"),
        tls_secret_doc("opaque", "Opaque"),
    ];
    let t = translate(&snap(docs.clone()), &edge());
    let good = ObjectKey::new("default", "good");
    assert_eq!(t.tls_secrets[&good].cert_pem, b"CERT");
    assert_eq!(t.tls_secrets.len(), 1);
    assert!(
        t.routes.tls["brand.example"]
            .iter()
            .any(|b| b.secret == good)
    );
    assert!(t.routes.https_redirect_hosts.contains("brand.example"));
    assert!(t.routes.https_redirect_hosts.contains("*.wild.example"));
    assert!(!t.routes.https_redirect_hosts.contains("plain.example"));
    let reasons: BTreeSet<_> = t.problems.iter().map(|p| p.reason).collect();
    for r in [
        ProblemReason::SecretNotFound,
        ProblemReason::CrossNamespaceSecret,
        ProblemReason::SecretInvalid,
    ] {
        assert!(reasons.contains(&r), "missing {r:?}: {:?}", t.problems);
    }
    // Key material never appears in problems or debug output.
    assert!(!format!("{:?} {:?}", t.problems, t.tls_secrets).contains("KEY\""));
    // The router tier does not look at TLS at all.
    let r = translate(
        &snap(docs),
        &TierSettings {
            class: "tandem-edge".into(),
            ..settings()
        },
    );
    assert!(r.tls_secrets.is_empty() && r.routes.tls.is_empty());
}

fn ingress_class(name: &str, controller: &str, default: bool) -> Value {
    let mut c = json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": name}, "spec": {"controller": controller}});
    if default {
        c["metadata"]["annotations"] =
            json!({"ingressclass.kubernetes.io/is-default-class": "true"});
    }
    c
}

#[test]
fn class_naming_another_controller_is_not_served_and_reported() {
    let r = json!({"rules": [rule(None, "/a", "Prefix", "s", json!({"number": 80}))]});
    let mine = ingress("mine", Some("tandem-router"), None, r.clone());
    let unclassed = ingress("unclassed", None, None, r.clone());

    // Our class name, but it belongs to another controller: nothing served, each Ingress told.
    let t = translate(
        &snap(vec![
            ingress_class("tandem-router", "k8s.io/ingress-nginx", true),
            mine.clone(),
            unclassed.clone(),
        ]),
        &settings(),
    );
    assert_eq!(t.routes.route_count(), 0);
    assert!(t.served_ingresses.is_empty());
    let mismatch: Vec<_> = t
        .problems
        .iter()
        .filter(|p| p.reason == ProblemReason::ClassControllerMismatch)
        .collect();
    assert_eq!(mismatch.len(), 1, "{:?}", t.problems);
    assert_eq!(mismatch[0].name, "mine");
    assert!(mismatch[0].detail.contains("k8s.io/ingress-nginx"));

    // Our controller: served; no IngressClass object at all: served by name.
    let ours = snap(vec![
        ingress_class("tandem-router", "tandem.dev/router", false),
        mine.clone(),
    ]);
    assert_eq!(translate(&ours, &settings()).routes.route_count(), 1);
    assert_eq!(
        translate(&snap(vec![mine]), &settings())
            .routes
            .route_count(),
        1
    );
}

#[test]
fn backend_protocol_follows_app_protocol() {
    let docs = vec![
        ingress(
            "i",
            Some("tandem-router"),
            None,
            json!({"rules": [{"http": {"paths": [
                {"path": "/h2c", "pathType": "Prefix", "backend": {"service": {"name": "svc", "port": {"name": "grpc"}}}},
                {"path": "/h1", "pathType": "Prefix", "backend": {"service": {"name": "svc", "port": {"name": "web"}}}},
                {"path": "/tls", "pathType": "Prefix", "backend": {"service": {"name": "svc", "port": {"name": "tls"}}}}
            ]}}]}),
        ),
        service(
            "svc",
            json!([
                {"name": "grpc", "port": 81, "appProtocol": "kubernetes.io/h2c"},
                {"name": "web", "port": 80, "appProtocol": "http"},
                {"name": "tls", "port": 443, "appProtocol": "https"}
            ]),
        ),
    ];
    let t = translate(&snap(docs), &settings());
    let protocol =
        |port: &str| t.endpoints.0[&key("svc", ServicePortRef::Name(port.into()))].protocol;
    assert_eq!(protocol("grpc"), BackendProtocol::H2c);
    assert_eq!(protocol("web"), BackendProtocol::Http1);
    // Unknown: spoken as HTTP/1.1 and reported.
    assert_eq!(protocol("tls"), BackendProtocol::Http1);
    let unsupported: Vec<_> = t
        .problems
        .iter()
        .filter(|p| p.reason == ProblemReason::UnsupportedAppProtocol)
        .collect();
    assert_eq!(unsupported.len(), 1, "{:?}", t.problems);
    assert!(unsupported[0].detail.contains("\"https\""));
}

fn weighted_service(annotations: Value) -> Value {
    let mut svc = service("w", json!([{"name": "http", "port": 80}]));
    svc["metadata"]["annotations"] = annotations;
    svc
}

fn zoned_slice(endpoints: &[(&str, Option<&str>, bool)]) -> Value {
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|(ip, zone, ready)| {
            let mut e = json!({"addresses": [ip], "conditions": {"ready": ready, "serving": true}});
            if let Some(z) = zone {
                e["zone"] = json!(z);
            }
            e
        })
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "w-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "w"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}], "endpoints": eps})
}

fn weighted_ingress() -> Value {
    ingress(
        "wi",
        Some("tandem-router"),
        None,
        json!({"rules": [rule(None, "/", "Prefix", "w", json!({"number": 80}))]}),
    )
}

#[test]
fn endpoint_weights_follow_address_then_zone_then_default() {
    let docs = vec![
        weighted_ingress(),
        weighted_service(json!({
            "tandem.dev/endpoint-weights": "10.0.0.1=3, 10.0.0.2:8080=0, 10.0.0.9=7",
            "tandem.dev/zone-weights": "zone-a=2, zone-b=5",
        })),
        zoned_slice(&[
            ("10.0.0.3", Some("zone-b"), true),
            ("10.0.0.1", Some("zone-b"), true),
            ("10.0.0.2", Some("zone-a"), true),
            ("10.0.0.4", Some("zone-a"), true),
            ("10.0.0.5", None, true),
            // Draining: weighted too (its weight counts on the hash ring).
            ("10.0.0.9", Some("zone-a"), false),
        ]),
    ];
    let t = translate(&snap(docs), &settings());
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    let b = &t.endpoints.0[&key("w", ServicePortRef::Number(80))];
    let ready: Vec<String> = b.addrs.iter().map(|a| a.ip().to_string()).collect();
    assert_eq!(
        ready,
        ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]
    );
    assert_eq!(b.draining, vec!["10.0.0.9:8080".parse().unwrap()]);
    // ready (sorted), then draining.
    assert_eq!(b.weights, vec![3, 0, 5, 2, 1, 7]);
}

#[test]
fn equal_weights_resolve_to_none_and_legacy_endpoints_take_address_weights() {
    // Every endpoint named with the same weight: no weights at all (plain round robin).
    let docs = vec![
        weighted_ingress(),
        weighted_service(json!({"tandem.dev/zone-weights": "zone-a=4"})),
        zoned_slice(&[
            ("10.0.0.1", Some("zone-a"), true),
            ("10.0.0.2", Some("zone-a"), true),
        ]),
    ];
    let t = translate(&snap(docs), &settings());
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    let b = &t.endpoints.0[&key("w", ServicePortRef::Number(80))];
    assert_eq!((b.addrs.len(), b.weights.len()), (2, 0));

    // A selector-less Service with v1 Endpoints (no zones): by address.
    let mut svc = service("w", json!([{"name": "http", "port": 80}]));
    svc["metadata"]["annotations"] =
        json!({"tandem.dev/endpoint-weights": "192.0.2.1=2", "tandem.dev/zone-weights": "z=9"});
    let eps = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "w", "namespace": "default"},
        "subsets": [{"addresses": [{"ip": "192.0.2.1"}, {"ip": "192.0.2.2"}],
                     "ports": [{"name": "http", "port": 9000}]}]});
    let t = translate(&snap(vec![weighted_ingress(), svc, eps]), &settings());
    let b = &t.endpoints.0[&key("w", ServicePortRef::Number(80))];
    assert_eq!(b.weights, vec![2, 1]);
}

#[test]
fn invalid_weights_are_reported_on_the_service_and_ignored() {
    let docs = vec![
        weighted_ingress(),
        weighted_service(json!({
            "tandem.dev/endpoint-weights": "10.0.0.1=3, 10.0.0.2=300",
            "tandem.dev/zone-weights": "zone-a=2",
        })),
        zoned_slice(&[("10.0.0.1", Some("zone-a"), true), ("10.0.0.2", None, true)]),
    ];
    let t = translate(&snap(docs), &settings());
    assert_eq!(t.problems.len(), 1, "{:?}", t.problems);
    let p = &t.problems[0];
    assert_eq!(
        (p.kind, p.namespace.as_str(), p.name.as_str(), p.reason),
        ("Service", "default", "w", ProblemReason::InvalidAnnotation)
    );
    assert!(
        p.detail.contains("tandem.dev/endpoint-weights") && p.detail.contains("\"300\""),
        "{}",
        p.detail
    );
    // The endpoint entries are ignored, the zone entries still count; the route is served.
    let b = &t.endpoints.0[&key("w", ServicePortRef::Number(80))];
    assert_eq!(b.weights, vec![2, 1]);
    assert_eq!(t.routes.route_count(), 1);
}

#[test]
fn all_ready_weights_zero_are_reported_and_read_as_one() {
    let docs = vec![
        weighted_ingress(),
        weighted_service(
            json!({"tandem.dev/endpoint-weights": "10.0.0.1=0, 10.0.0.2=0, 10.0.0.3=4"}),
        ),
        zoned_slice(&[
            ("10.0.0.1", None, true),
            ("10.0.0.2", None, true),
            ("10.0.0.3", None, false),
        ]),
    ];
    let t = translate(&snap(docs), &settings());
    assert_eq!(t.problems.len(), 1, "{:?}", t.problems);
    assert_eq!(t.problems[0].reason, ProblemReason::AllWeightsZero);
    assert_eq!(t.problems[0].kind, "Service");
    let b = &t.endpoints.0[&key("w", ServicePortRef::Number(80))];
    assert_eq!(b.weights, vec![1, 1, 4]);
}

#[test]
fn a_service_annotation_change_re_resolves_its_backends_incrementally() {
    let mut snapshot = snap(vec![
        weighted_ingress(),
        weighted_service(json!({})),
        zoned_slice(&[("10.0.0.1", None, true), ("10.0.0.2", None, true)]),
    ]);
    let mut translator = Translator::new(settings());
    let k = key("w", ServicePortRef::Number(80));
    let t = translator.update(&mut snapshot);
    assert!(t.endpoints.0[&k].weights.is_empty());
    for (value, weights, problems) in [
        ("10.0.0.1=3", vec![3, 1], 0),
        ("10.0.0.1=3, 10.0.0.2=2", vec![3, 2], 0),
        ("10.0.0.1=x", vec![], 1),
        ("10.0.0.2=0", vec![1, 0], 0),
    ] {
        for o in Object::from_manifest(weighted_service(
            json!({"tandem.dev/endpoint-weights": value}),
        ))
        .unwrap()
        {
            snapshot.upsert(o);
        }
        let t = translator.update(&mut snapshot);
        assert_eq!(t.endpoints.0[&k].weights, weights, "{value}");
        assert_eq!(t.problems.len(), problems, "{value}: {:?}", t.problems);
        let delta = t.delta.as_ref().expect("an incremental translation");
        assert!(delta.backends.contains(&k), "{value}: {delta:?}");
        let full = translate(&snapshot, &settings());
        assert_eq!(full.endpoints, t.endpoints);
        assert_eq!(full.problems, t.problems);
    }
}

mod incremental_equals_full {
    use super::*;
    use crate::object::Kind;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        PutIngress {
            name: usize,
            ns: usize,
            class: usize,
            created: Option<u8>,
            rules: Vec<(usize, usize, usize, usize)>,
            tls: Option<(usize, usize)>,
            default_backend: Option<usize>,
            annotation: usize,
            canary: usize,
        },
        DeleteIngress {
            name: usize,
            ns: usize,
        },
        /// A Service (name, namespace, weight annotations: none, by address, by zone and
        /// address, all ready at 0, invalid).
        PutService(usize, usize, usize),
        DeleteService(usize, usize),
        PutSecret(usize, usize, u8),
        /// An EndpointSlice (name, namespace, service it belongs to, ready address count).
        PutSlice(usize, usize, usize, u8),
        DeleteSlice(usize, usize),
        DeleteSecret(usize, usize),
        PutClass(usize),
        DeleteClass,
    }

    const HOSTS: [Option<&str>; 4] = [
        None,
        Some("a.example"),
        Some("B.example"),
        Some("*.example"),
    ];
    const PATHS: [&str; 4] = ["/", "/a", "/a/b", "no-slash"];
    const TYPES: [&str; 3] = ["Prefix", "Exact", "ImplementationSpecific"];
    const NS: [&str; 2] = ["default", "other"];

    fn op() -> impl Strategy<Value = Op> {
        let rule = (0..4usize, 0..4usize, 0..3usize, 0..3usize);
        prop_oneof![
            6 => (0..4usize, 0..2usize, 0..3usize, proptest::option::of(0u8..3),
                  proptest::collection::vec(rule, 0..4), proptest::option::of((0..4usize, 0..3usize)),
                  proptest::option::of(0..3usize), (0..3usize, 0..4usize))
                .prop_map(|(name, ns, class, created, rules, tls, default_backend, (annotation, canary))| Op::PutIngress {
                    name, ns, class, created, rules, tls, default_backend, annotation, canary,
                }),
            2 => (0..4usize, 0..2usize).prop_map(|(name, ns)| Op::DeleteIngress { name, ns }),
            1 => (0..3usize, 0..2usize, 0..5usize).prop_map(|(s, ns, w)| Op::PutService(s, ns, w)),
            1 => (0..3usize, 0..2usize).prop_map(|(s, ns)| Op::DeleteService(s, ns)),
            1 => (0..3usize, 0..2usize, 0u8..3).prop_map(|(s, ns, v)| Op::PutSecret(s, ns, v)),
            1 => (0..3usize, 0..2usize, 0..3usize, 0u8..5).prop_map(|(n, ns, s, a)| Op::PutSlice(n, ns, s, a)),
            1 => (0..3usize, 0..2usize).prop_map(|(n, ns)| Op::DeleteSlice(n, ns)),
            1 => (0..3usize, 0..2usize).prop_map(|(s, ns)| Op::DeleteSecret(s, ns)),
            1 => (0..3usize).prop_map(Op::PutClass),
            1 => Just(Op::DeleteClass),
        ]
    }

    fn apply(snapshot: &mut Snapshot, op: &Op) {
        match op {
            Op::PutIngress {
                name,
                ns,
                class,
                created,
                rules,
                tls,
                default_backend,
                annotation,
                canary,
            } => {
                let rules: Vec<Value> = rules
                    .iter()
                    .map(|(h, p, t, s)| {
                        rule(
                            HOSTS[*h],
                            PATHS[*p],
                            TYPES[*t],
                            &format!("svc{s}"),
                            json!({"number": 80}),
                        )
                    })
                    .collect();
                let mut spec = json!({"rules": rules});
                if let Some((h, secret)) = tls {
                    let host = HOSTS[*h].unwrap_or("c.example");
                    spec["tls"] = json!([{"hosts": [host], "secretName": format!("tls{secret}")}]);
                }
                if let Some(s) = default_backend {
                    spec["defaultBackend"] =
                        json!({"service": {"name": format!("svc{s}"), "port": {"number": 80}}});
                }
                let class = [Some("tandem-router"), Some("nginx"), None][*class];
                let created = created.map(|c| format!("2024-01-0{}T00:00:00Z", c + 1));
                let mut doc = ingress(&format!("i{name}"), class, created.as_deref(), spec);
                doc["metadata"]["namespace"] = json!(NS[*ns]);
                let value = ["true", "false", "maybe"][*annotation];
                let mut annotations =
                    json!({"tandem.dev/normalize-path": value, "tandem.dev/ssl-redirect": value});
                // Half the Ingresses are canaries (one with an invalid weight, one with a
                // setting but no switch).
                match canary {
                    0 => {}
                    1 => {
                        annotations["nginx.ingress.kubernetes.io/canary"] = json!("true");
                        annotations["nginx.ingress.kubernetes.io/canary-weight"] = json!("30");
                    }
                    2 => {
                        annotations["tandem.dev/canary"] = json!("true");
                        annotations["tandem.dev/canary-weight"] = json!("300");
                    }
                    _ => {
                        annotations["tandem.dev/canary-by-header"] = json!("x-canary");
                    }
                }
                doc["metadata"]["annotations"] = annotations;
                for o in Object::from_manifest(doc).unwrap() {
                    snapshot.upsert(o);
                }
            }
            Op::DeleteIngress { name, ns } => {
                snapshot.remove(Kind::Ingress, &ObjectKey::new(NS[*ns], format!("i{name}")));
            }
            Op::PutService(s, ns, w) => {
                let mut doc = service(
                    &format!("svc{s}"),
                    json!([{"port": 80, "appProtocol": if *s == 2 { "https" } else { "http" }}]),
                );
                doc["metadata"]["namespace"] = json!(NS[*ns]);
                doc["metadata"]["annotations"] = match w {
                    0 => json!({}),
                    1 => json!({"tandem.dev/endpoint-weights": "10.0.0.0=3, 10.0.1.2:8080=0"}),
                    2 => json!({"tandem.dev/zone-weights": "zone-a=2",
                                "tandem.dev/endpoint-weights": "10.0.2.0=5"}),
                    3 => json!({"tandem.dev/zone-weights": "zone-a=0, zone-b=0"}),
                    _ => json!({"tandem.dev/zone-weights": "zone-a=999"}),
                };
                for o in Object::from_manifest(doc).unwrap() {
                    snapshot.upsert(o);
                }
            }
            Op::DeleteService(s, ns) => {
                snapshot.remove(Kind::Service, &ObjectKey::new(NS[*ns], format!("svc{s}")));
            }
            Op::PutSecret(s, ns, v) => {
                let doc = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                    "metadata": {"name": format!("tls{s}"), "namespace": NS[*ns]},
                    "stringData": {"tls.crt": format!("cert-{v}"), "tls.key": if *v == 2 { String::new() } else { format!("key-{v}") }}});
                for o in Object::from_manifest(doc).unwrap() {
                    snapshot.upsert(o);
                }
            }
            Op::PutSlice(n, ns, svc, count) => {
                let endpoints: Vec<Value> = (0..*count)
                    .map(|i| json!({"addresses": [format!("10.0.{n}.{i}")], "conditions": {"ready": i != 1},
                                    "zone": if i % 2 == 0 { "zone-a" } else { "zone-b" }}))
                    .collect();
                let doc = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": format!("slice{n}"), "namespace": NS[*ns],
                                 "labels": {"kubernetes.io/service-name": format!("svc{svc}")}},
                    "addressType": "IPv4", "ports": [{"port": 8080}], "endpoints": endpoints});
                for o in Object::from_manifest(doc).unwrap() {
                    snapshot.upsert(o);
                }
            }
            Op::DeleteSlice(n, ns) => {
                snapshot.remove(
                    Kind::EndpointSlice,
                    &ObjectKey::new(NS[*ns], format!("slice{n}")),
                );
            }
            Op::DeleteSecret(s, ns) => {
                snapshot.remove(Kind::Secret, &ObjectKey::new(NS[*ns], format!("tls{s}")));
            }
            Op::PutClass(c) => {
                let controller = [
                    "tandem.dev/tls-edge",
                    "k8s.io/ingress-nginx",
                    "tandem.dev/tls-edge",
                ][*c];
                let doc = json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                    "metadata": {"name": "tandem-router", "annotations": {"ingressclass.kubernetes.io/is-default-class": if *c == 2 { "true" } else { "false" }}},
                    "spec": {"controller": controller}});
                for o in Object::from_manifest(doc).unwrap() {
                    snapshot.upsert(o);
                }
            }
            Op::DeleteClass => {
                snapshot.remove(Kind::IngressClass, &ObjectKey::new("", "tandem-router"));
            }
        }
    }

    fn assert_same(a: &Translation, b: &Translation) -> Result<(), TestCaseError> {
        prop_assert_eq!(&a.routes, &b.routes);
        prop_assert_eq!(&a.endpoints, &b.endpoints);
        prop_assert_eq!(&a.tls_secrets, &b.tls_secrets);
        prop_assert_eq!(&a.problems, &b.problems);
        prop_assert_eq!(&a.served_ingresses, &b.served_ingresses);
        Ok(())
    }

    /// Everything that differs between two successive translations is named in the delta, so
    /// a sink applying only the delta ends up with the new translation.
    fn assert_delta_covers(
        prev: &Translation,
        now: &Translation,
        delta: &crate::Delta,
    ) -> Result<(), TestCaseError> {
        let (a, b) = (&prev.routes, &now.routes);
        for (map_a, map_b, prefix) in [
            (&a.exact_hosts, &b.exact_hosts, ""),
            (&a.wildcard_hosts, &b.wildcard_hosts, "*."),
        ] {
            for h in map_a.keys().chain(map_b.keys()) {
                if map_a.get(h) != map_b.get(h) {
                    prop_assert!(
                        delta.route_hosts.contains(&format!("{prefix}{h}")),
                        "host {prefix}{h} not in {delta:?}"
                    );
                }
            }
        }
        if a.hostless != b.hostless {
            prop_assert!(delta.route_hosts.contains(""));
        }
        prop_assert!(a.default_backend == b.default_backend || delta.default_backend);
        for h in a.known_hosts.iter().chain(b.known_hosts.iter()) {
            if a.known_hosts.contains(h) != b.known_hosts.contains(h) {
                prop_assert!(delta.known_hosts.contains(h));
            }
        }
        for h in a.tls.keys().chain(b.tls.keys()) {
            if a.tls.get(h) != b.tls.get(h) {
                prop_assert!(delta.tls_hosts.contains(h), "tls host {h} not in {delta:?}");
            }
        }
        for h in a
            .https_redirect_hosts
            .iter()
            .chain(b.https_redirect_hosts.iter())
        {
            if a.https_redirect_hosts.contains(h) != b.https_redirect_hosts.contains(h) {
                prop_assert!(
                    delta.https_hosts.contains(h),
                    "https host {h} not in {delta:?}"
                );
            }
        }
        for k in prev.tls_secrets.keys().chain(now.tls_secrets.keys()) {
            if prev.tls_secrets.get(k) != now.tls_secrets.get(k) {
                prop_assert!(delta.secrets.contains(k), "secret {k} not in {delta:?}");
            }
        }
        for k in prev.endpoints.0.keys().chain(now.endpoints.0.keys()) {
            if prev.endpoints.0.get(k) != now.endpoints.0.get(k) {
                prop_assert!(delta.backends.contains(k), "backend {k} not in {delta:?}");
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// A translator fed a random sequence of adds, updates and deletes always gives what a
        /// full translation of the same objects gives (router and edge settings), also when its
        /// snapshot keeps only the class and hosts of other classes' Ingresses.
        #[test]
        fn random_change_sequences(ops in proptest::collection::vec(op(), 1..40), edge_tier in any::<bool>()) {
            let settings = TierSettings {
                tier: if edge_tier { Tier::TlsEdge } else { Tier::Router },
                class: "tandem-router".into(),
                controller: "tandem.dev/tls-edge".into(),
                watch_without_class: false,
                default_certificate: edge_tier.then(|| ObjectKey::new("default", "tls0")),
            };
            // The translator reads a snapshot that keeps other classes' Ingresses lean, the
            // full translation one that keeps them whole: the results must not differ.
            let mut snapshot = Snapshot::default();
            let mut lean = Snapshot::for_class(&settings.class);
            let mut translator = Translator::new(settings.clone());
            let mut previous: Option<Translation> = None;
            for op in &ops {
                apply(&mut snapshot, op);
                apply(&mut lean, op);
                let incremental = translator.update(&mut lean);
                let full = translate(&snapshot, &settings);
                assert_same(&incremental, &full)?;
                if let (Some(prev), Some(delta)) = (&previous, &incremental.delta) {
                    assert_delta_covers(prev, &incremental, delta)?;
                }
                previous = Some(incremental);
            }
        }
    }
}
