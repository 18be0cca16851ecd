//! Annotations through the whole translation: problems, shared policies, regex routes, the
//! edge's redirect hosts.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::config::PathMatch;
use crate::object::{Object, Snapshot};
use crate::problem::ProblemReason;
use crate::tier::Tier;
use crate::translate::{TierSettings, translate};

fn snap(docs: Vec<Value>) -> Snapshot {
    let mut s = Snapshot::default();
    for d in docs {
        for o in Object::from_manifest(d).unwrap() {
            assert!(s.insert(o));
        }
    }
    s
}

fn settings(tier: Tier, class: &str) -> TierSettings {
    TierSettings {
        tier,
        class: class.into(),
        controller: match tier {
            Tier::Router => "tandem.dev/router".into(),
            _ => "tandem.dev/tls-edge".into(),
        },
        watch_without_class: false,
        default_certificate: None,
    }
}

fn ingress(
    name: &str,
    class: &str,
    annotations: Value,
    hosts_paths: &[(&str, &str)],
    tls: Value,
) -> Value {
    let rules: Vec<Value> = hosts_paths
        .iter()
        .map(|(h, p)| {
            json!({"host": h, "http": {"paths": [{"path": p, "pathType": "ImplementationSpecific",
                "backend": {"service": {"name": "s", "port": {"number": 80}}}}]}})
        })
        .collect();
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {"ingressClassName": class, "rules": rules, "tls": tls}})
}

#[test]
fn policy_shared_by_the_ingress_routes_and_problems_reported() {
    let docs = vec![
        ingress(
            "a",
            "tandem-router",
            json!({"nginx.ingress.kubernetes.io/proxy-body-size": "1k",
                   "nginx.ingress.kubernetes.io/proxy-read-timeout": "soon"}),
            &[("a.example", "/x"), ("a.example", "/y"), ("b.example", "/")],
            json!([]),
        ),
        ingress(
            "plain",
            "tandem-router",
            json!({}),
            &[("c.example", "/")],
            json!([]),
        ),
    ];
    let t = translate(&snap(docs), &settings(Tier::Router, "tandem-router"));
    let routes: Vec<_> = t
        .routes
        .exact_hosts
        .values()
        .flat_map(|v| v.iter())
        .collect();
    let a: Vec<_> = routes.iter().filter(|r| &*r.ingress.name == "a").collect();
    assert_eq!(a.len(), 3);
    let first = a[0].policy.as_ref().unwrap();
    assert_eq!(first.max_body_bytes, Some(1024));
    assert!(
        a.iter()
            .all(|r| std::sync::Arc::ptr_eq(r.policy.as_ref().unwrap(), first))
    );
    let plain = routes.iter().find(|r| &*r.ingress.name == "plain").unwrap();
    assert!(plain.policy.is_none());
    let p: Vec<_> = t
        .problems
        .iter()
        .filter(|p| p.reason == ProblemReason::InvalidAnnotation)
        .collect();
    assert_eq!(p.len(), 1, "{:?}", t.problems);
    assert_eq!(p[0].name, "a");
    assert!(
        p[0].detail.contains("proxy-read-timeout"),
        "{}",
        p[0].detail
    );
}

#[test]
fn regex_paths_routed_by_literal_prefix_and_bad_regex_reported() {
    let docs = vec![ingress(
        "re",
        "tandem-router",
        json!({"nginx.ingress.kubernetes.io/rewrite-target": "/$2"}),
        &[("r.example", "/app(/|$)(.*)"), ("r.example", "/bad(")],
        json!([]),
    )];
    let t = translate(&snap(docs), &settings(Tier::Router, "tandem-router"));
    let routes = &t.routes.exact_hosts["r.example"];
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].path, PathMatch::Prefix("/app".into()));
    let rw = routes[0].policy.as_ref().unwrap().rewrite.as_ref().unwrap();
    assert_eq!(rw.apply("/app/x", None).unwrap(), "/x");
    assert!(
        t.problems
            .iter()
            .any(|p| p.reason == ProblemReason::InvalidPath && p.detail.contains("/bad(")),
        "{:?}",
        t.problems
    );
}

#[test]
fn edge_ssl_redirect_and_force_ssl_redirect() {
    let docs = vec![
        ingress(
            "tls",
            "tandem-edge",
            json!({}),
            &[("t.example", "/")],
            json!([{"hosts": ["t.example"]}]),
        ),
        ingress(
            "optout",
            "tandem-edge",
            json!({"nginx.ingress.kubernetes.io/ssl-redirect": "false"}),
            &[("o.example", "/")],
            json!([{"hosts": ["o.example"]}]),
        ),
        ingress(
            "forced",
            "tandem-edge",
            json!({"nginx.ingress.kubernetes.io/force-ssl-redirect": "true"}),
            &[("f.example", "/"), ("*.w.example", "/")],
            json!([]),
        ),
        ingress(
            "notls",
            "tandem-edge",
            json!({}),
            &[("n.example", "/")],
            json!([]),
        ),
    ];
    let t = translate(&snap(docs), &settings(Tier::TlsEdge, "tandem-edge"));
    let want: BTreeSet<String> = ["t.example", "f.example", "*.w.example"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(
        t.routes
            .https_redirect_hosts
            .into_iter()
            .collect::<BTreeSet<_>>(),
        want
    );
}
