use std::sync::Arc;

use super::*;
use k8s_sync::{BackendKey, DefaultBackend, EndpointSet, ResolvedBackend, ServicePortRef};

fn key(svc: &str) -> BackendKey {
    BackendKey {
        namespace: "default".into(),
        service: svc.into(),
        port: ServicePortRef::Number(80),
    }
}

fn route(path: PathMatch, svc: &str) -> Route {
    Route {
        path,
        implementation_specific: false,
        forward_raw_path: false,
        backend: key(svc),
        ingress: IngressRef {
            namespace: "default".into(),
            name: format!("ing-{svc}").into(),
        },
        policy: None,
        canary: None,
    }
}

fn prefix(p: &str) -> PathMatch {
    PathMatch::Prefix(p.into())
}
fn exact(p: &str) -> PathMatch {
    PathMatch::Exact(p.into())
}

fn table(config: &RoutingConfig) -> RouteTable {
    let mut eps = EndpointSet::default();
    for k in config.backends() {
        eps.0.insert(
            k.clone(),
            ResolvedBackend {
                addrs: vec!["127.0.0.1:1".parse().unwrap()],
                ..ResolvedBackend::default()
            },
        );
    }
    let mut reg = BackendRegistry::default();
    reg.sync(&eps);
    let (t, problems) = RouteTable::build(
        config,
        &reg,
        &crate::metrics::Metrics::new(k8s_sync::Tier::Router),
        None,
    );
    assert!(problems.is_empty(), "{problems:?}");
    t
}

fn served(t: &RouteTable, host: &str, path: &str) -> Option<String> {
    t.lookup(host, path)
        .map(|r| r.backend.key.service.to_string())
}

/// The examples table of the Kubernetes Ingress documentation ("Examples" under "Path types").
#[test]
fn kubernetes_docs_path_examples() {
    type Case = (&'static [(&'static str, bool)], &'static str, Option<usize>);
    // (paths as (path, is_prefix), request, index of the matching path or None)
    let cases: &[Case] = &[
        (&[("/", true)], "/", Some(0)),
        (&[("/", true)], "/anything", Some(0)),
        (&[("/foo", false)], "/foo", Some(0)),
        (&[("/foo", false)], "/bar", None),
        (&[("/foo", false)], "/foo/", None),
        (&[("/foo/", false)], "/foo", None),
        (&[("/foo", true)], "/foo", Some(0)),
        (&[("/foo", true)], "/foo/", Some(0)),
        (&[("/foo/", true)], "/foo", Some(0)),
        (&[("/foo/", true)], "/foo/", Some(0)),
        (&[("/aaa/bb", true)], "/aaa/bbb", None),
        (&[("/aaa/bbb", true)], "/aaa/bbb", Some(0)),
        (&[("/aaa/bbb/", true)], "/aaa/bbb", Some(0)),
        (&[("/aaa/bbb", true)], "/aaa/bbb/", Some(0)),
        (&[("/aaa/bbb", true)], "/aaa/bbb/ccc", Some(0)),
        (&[("/aaa/bbb", true)], "/aaa/bbbxyz", None),
        (&[("/", true), ("/aaa", true)], "/aaa/ccc", Some(1)),
        (
            &[("/", true), ("/aaa", true), ("/aaa/bbb", true)],
            "/aaa/bbb",
            Some(2),
        ),
        (
            &[("/", true), ("/aaa", true), ("/aaa/bbb", true)],
            "/ccc",
            Some(0),
        ),
        (&[("/aaa", true)], "/ccc", None),
        (&[("/", true), ("/aaa", false)], "/aaa/ccc", Some(0)),
        (&[("/aaa", true)], "/aaa/ccc", Some(0)),
        (
            &[("/", true), ("/aaa", true), ("/aaa/bbb", true)],
            "/aaa/bbbxyz",
            Some(1),
        ),
        (&[("/foo", true)], "/FOO", None),
    ];
    for (paths, request, want) in cases {
        let mut cfg = RoutingConfig::default();
        for (i, (p, is_prefix)) in paths.iter().enumerate() {
            let m = if *is_prefix { prefix(p) } else { exact(p) };
            let m = match m {
                PathMatch::Prefix(p) => {
                    let t = p.trim_end_matches('/');
                    prefix(if t.is_empty() { "/" } else { t })
                }
                e => e,
            };
            Arc::make_mut(cfg.exact_hosts.entry("h".into()).or_default())
                .push(route(m, &format!("s{i}")));
        }
        let got = served(&table(&cfg), "h", request);
        assert_eq!(
            got,
            want.map(|i| format!("s{i}")),
            "paths {paths:?} request {request}"
        );
    }
}

#[test]
fn exact_beats_prefix_at_equal_length_and_longest_prefix_wins() {
    let cfg = RoutingConfig {
        hostless: Arc::new(vec![
            route(prefix("/foo"), "prefix"),
            route(exact("/foo"), "exact"),
            route(prefix("/foo/bar"), "longer"),
            route(prefix("/"), "root"),
        ]),
        ..Default::default()
    };
    let t = table(&cfg);
    assert_eq!(served(&t, "", "/foo").as_deref(), Some("exact"));
    assert_eq!(served(&t, "", "/foo/").as_deref(), Some("prefix"));
    assert_eq!(served(&t, "", "/foo/x").as_deref(), Some("prefix"));
    assert_eq!(served(&t, "", "/foo/bar/baz").as_deref(), Some("longer"));
    assert_eq!(served(&t, "", "/foo/barn").as_deref(), Some("prefix"));
    assert_eq!(served(&t, "", "/fo").as_deref(), Some("root"));
    assert!(t.lookup("", "/").unwrap().fallback);
    assert!(!t.lookup("", "/foo").unwrap().fallback);
}

#[test]
fn host_order_exact_then_wildcard_then_hostless_then_default() {
    let mut cfg = RoutingConfig::default();
    cfg.exact_hosts.insert(
        "a.example.com".into(),
        Arc::new(vec![route(prefix("/exact"), "exact")]),
    );
    cfg.wildcard_hosts.insert(
        "example.com".into(),
        Arc::new(vec![
            route(prefix("/wild"), "wild"),
            route(prefix("/exact"), "wild-exact"),
        ]),
    );
    cfg.hostless = Arc::new(vec![route(prefix("/any"), "hostless")]);
    cfg.default_backend = Some(DefaultBackend {
        backend: key("default"),
        ingress: IngressRef {
            namespace: "default".into(),
            name: "db".into(),
        },
    });
    let t = table(&cfg);
    assert_eq!(
        served(&t, "a.example.com", "/exact/1").as_deref(),
        Some("exact")
    );
    assert_eq!(
        served(&t, "A.Example.COM:8443", "/exact").as_deref(),
        Some("exact")
    );
    assert_eq!(
        served(&t, "b.example.com", "/exact").as_deref(),
        Some("wild-exact")
    );
    assert_eq!(
        served(&t, "a.example.com", "/wild").as_deref(),
        Some("wild")
    );
    // One label only.
    assert_eq!(
        served(&t, "x.a.example.com", "/wild").as_deref(),
        Some("default")
    );
    assert_eq!(
        served(&t, "example.com", "/wild").as_deref(),
        Some("default")
    );
    assert_eq!(
        served(&t, "a.example.com", "/any").as_deref(),
        Some("hostless")
    );
    assert_eq!(
        served(&t, "unknown", "/nothing").as_deref(),
        Some("default")
    );
    assert!(t.lookup("unknown", "/nothing").unwrap().fallback);
}

#[test]
fn braces_in_paths_are_literal() {
    let cfg = RoutingConfig {
        hostless: Arc::new(vec![route(prefix("/{id}"), "brace")]),
        ..Default::default()
    };
    let t = table(&cfg);
    assert_eq!(served(&t, "", "/{id}/x").as_deref(), Some("brace"));
    assert_eq!(served(&t, "", "/42"), None);
}

#[test]
fn strips_ports_from_hosts() {
    let n = |h| crate::host_map::normalize_host(h).into_owned();
    assert_eq!(n("example.com:80"), "example.com");
    assert_eq!(n("[::1]:80"), "::1");
    assert_eq!(n("::1"), "::1");
    assert_eq!(n("example.com"), "example.com");
}

#[test]
fn https_redirect_hosts_match_exact_and_one_label_wildcards() {
    let mut cfg = RoutingConfig::default();
    cfg.https_redirect_hosts.insert("brand.example".into());
    cfg.https_redirect_hosts.insert("*.wild.example".into());
    let t = table(&cfg);
    assert!(t.redirects_to_https("Brand.Example:80"));
    assert!(t.redirects_to_https("a.wild.example"));
    assert!(!t.redirects_to_https("a.b.wild.example"));
    assert!(!t.redirects_to_https("other.example"));
}

#[test]
fn fallback_counters_are_labelled_by_configured_host_only() {
    let m = crate::metrics::Metrics::new(k8s_sync::Tier::Router);
    let mut cfg = RoutingConfig::default();
    cfg.known_hosts.insert("shop.example".into());
    cfg.known_hosts.insert("*.brand.example".into());
    let (t, _) = RouteTable::build(&cfg, &BackendRegistry::default(), &m, None);
    t.fallback_counter("Shop.Example:80").inc();
    t.fallback_counter("a.brand.example").inc();
    t.fallback_counter("random-attacker-host.test").inc();
    let text = String::from_utf8(m.encode()).unwrap();
    assert!(text.contains(r#"host="shop.example""#));
    assert!(text.contains(r#"host="*.brand.example""#));
    assert!(text.contains(r#"host="_other""#));
    assert!(!text.contains("random-attacker"));
}

#[test]
fn canary_target_carries_its_backend_and_rule() {
    let rule = {
        let map = [
            ("tandem.dev/canary", "true"),
            ("tandem.dev/canary-weight", "30"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        k8s_sync::annotations::parse(Some(&map)).canary.unwrap()
    };
    let mut with_canary = route(prefix("/api"), "stable");
    with_canary.canary = Some(Arc::new(k8s_sync::Canary {
        backend: key("beta"),
        ingress: IngressRef {
            namespace: "default".into(),
            name: "beta-canary".into(),
        },
        rule,
    }));
    let config = RoutingConfig {
        exact_hosts: [(
            "h.example".to_owned(),
            Arc::new(vec![with_canary, route(prefix("/other"), "stable")]),
        )]
        .into_iter()
        .collect(),
        ..RoutingConfig::default()
    };
    let t = table(&config);
    let api = t.lookup("h.example", "/api/x").unwrap();
    assert_eq!(&*api.backend.key.service, "stable");
    let c = api.canary.as_ref().expect("canary target");
    assert_eq!(&*c.backend.key.service, "beta");
    assert_eq!(&*c.ingress, "default/beta-canary");
    assert_eq!(c.rule.weight, 30);
    assert!(t.lookup("h.example", "/other").unwrap().canary.is_none());
}

#[test]
fn a_table_updated_by_delta_serves_like_one_built_whole() {
    use k8s_sync::{Object, Snapshot, TierSettings, Translation, translate::Translator};
    let settings = TierSettings {
        tier: k8s_sync::Tier::Router,
        class: "c".into(),
        controller: "tandem.dev/router".into(),
        watch_without_class: true,
        default_certificate: None,
    };
    let ingress = |name: &str, host: Option<&str>, path: &str, svc: &str| {
        let mut rule = serde_json::json!({"http": {"paths": [{"path": path, "pathType": "Prefix",
            "backend": {"service": {"name": svc, "port": {"number": 80}}}}]}});
        if let Some(h) = host {
            rule["host"] = h.into();
        }
        Object::from_manifest(serde_json::json!({"apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress", "metadata": {"name": name}, "spec": {"rules": [rule]}}))
        .unwrap()
        .remove(0)
    };
    let metrics = crate::metrics::Metrics::new(k8s_sync::Tier::Router);
    let registry = |t: &Translation| {
        let mut eps = t.endpoints.clone();
        for k in t.routes.backends() {
            eps.0.insert(k.clone(), ResolvedBackend::default());
        }
        let mut reg = BackendRegistry::default();
        reg.sync(&eps);
        reg
    };
    let mut snap = Snapshot::default();
    for i in 0..20 {
        snap.upsert(ingress(
            &format!("i{i}"),
            Some(&format!("h{i}.example")),
            "/",
            "a",
        ));
    }
    snap.upsert(ingress("w", Some("*.wild.example"), "/w", "a"));
    let mut tr = Translator::new(settings.clone());
    let t0 = tr.update(&mut snap);
    let (mut table, _) = RouteTable::build(&t0.routes, &registry(&t0), &metrics, None);
    // Add, change, remove hosts, a wildcard and the host-less rules, step by step.
    type Step<'a> = Box<dyn Fn(&mut Snapshot) + 'a>;
    let steps: Vec<Step> = vec![
        Box::new(|s| s.upsert(ingress("new", Some("new.example"), "/n", "b"))),
        Box::new(|s| s.upsert(ingress("i3", Some("h3.example"), "/moved", "b"))),
        Box::new(|s| {
            s.remove(
                k8s_sync::Kind::Ingress,
                &k8s_sync::ObjectKey::new("default", "i4"),
            );
        }),
        Box::new(|s| s.upsert(ingress("w", Some("*.wild.example"), "/x", "b"))),
        Box::new(|s| s.upsert(ingress("fallback", None, "/", "legacy"))),
    ];
    for step in steps {
        step(&mut snap);
        let t = tr.update(&mut snap);
        let delta = t
            .delta
            .clone()
            .expect("an incremental translation has a delta");
        let reg = registry(&t);
        let (updated, _) = table.apply_delta(&t.routes, &delta, &reg, &metrics);
        let (whole, _) = RouteTable::build(&t.routes, &reg, &metrics, None);
        for host in [
            "h1.example",
            "h3.example",
            "h4.example",
            "new.example",
            "a.wild.example",
            "other.example",
        ] {
            for path in ["/", "/n", "/moved/x", "/w", "/x"] {
                assert_eq!(
                    served(&updated, host, path),
                    served(&whole, host, path),
                    "{host}{path}"
                );
            }
        }
        table = updated;
    }
    assert_eq!(served(&table, "h4.example", "/"), Some("legacy".into()));
    assert_eq!(served(&table, "h3.example", "/moved/x"), Some("b".into()));
}

#[test]
fn linear_and_tree_prefix_tables_agree() {
    let paths = [
        "/", "/a", "/a/b", "/a/b/c", "/ab", "/b", "/b/c", "/c", "/c/d/e", "/d", "/{x}", "/e",
    ];
    let config = |n: usize| {
        let mut cfg = RoutingConfig::default();
        let routes: Vec<Route> = paths[..n]
            .iter()
            .map(|p| route(prefix(p), &format!("s{}", p.replace('/', "_"))))
            .collect();
        cfg.exact_hosts.insert("h".into(), Arc::new(routes));
        cfg
    };
    let tree = table(&config(paths.len()));
    assert!(paths.len() > LINEAR_PREFIXES);
    let probes = [
        "/", "/a", "/a/", "/a/x", "/a/b", "/a/bc", "/a/b/c/d", "/ab", "/abc", "/b/c/", "/c/d",
        "/c/d/e/f", "/d", "/dd", "/{x}/y", "/e", "/zzz",
    ];
    let svc = |t: Option<&Arc<RouteTarget>>| t.map(|t| t.backend.key.service.clone());
    for n in 1..=LINEAR_PREFIXES {
        // The same rules in a linear table and in a tree.
        let linear = table(&config(n));
        let pt = linear.hosts.get_exact("h").expect("host");
        let Prefixes::Linear(rules) = &pt.prefix else {
            panic!("{n} rules should be scanned linearly");
        };
        let mut tree_pt = PathTable {
            source: pt.source.clone(),
            prefix: Prefixes::Tree(matchit::Router::new()),
            ..PathTable::default()
        };
        for route in pt.source.iter() {
            let (_, target) = rules
                .iter()
                .find(|(p, _)| **p == *route.path.path())
                .expect("rule");
            tree_pt.insert(route, target.clone()).expect("insert");
        }
        for probe in probes {
            assert_eq!(
                svc(pt.lookup(probe)),
                svc(tree_pt.lookup(probe)),
                "{n} {probe}"
            );
        }
    }
    // The linear table with the first eight rules answers like the tree where only those
    // eight can match.
    let linear = table(&config(LINEAR_PREFIXES));
    for probe in ["/a/b/c/d", "/ab", "/b/c", "/c/x", "/"] {
        assert_eq!(
            served(&linear, "h", probe),
            served(&tree, "h", probe),
            "{probe}"
        );
    }
    assert_eq!(served(&tree, "h", "/{x}/y"), Some("s_{x}".into()));
    assert_eq!(served(&tree, "h", "/a/bc"), Some("s_a".into()));
    assert_eq!(served(&linear, "h", "/a/bc"), Some("s_a".into()));
}
