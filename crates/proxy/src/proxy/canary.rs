//! Whether a request of a route with a canary goes to the canary: once per request, before
//! endpoint choice. No allocation, no lock: header lookups, a cookie scan and, when the weight
//! decides, one atomic increment of the route's counter.

use std::sync::atomic::Ordering;

use http::header;
use pingora_http::RequestHeader;

use k8s_sync::Verdict;

use crate::route_table::CanaryTarget;

/// `true`: the canary serves the request. A canary with no ready endpoint serves nothing (the
/// main route does), as in ingress-nginx.
pub(super) fn choose(canary: &CanaryTarget, req: &RequestHeader) -> bool {
    if !canary.backend.has_endpoints() {
        return false;
    }
    let rule = &canary.rule;
    match rule.verdict(
        |name| req.headers.get(name),
        req.headers.get_all(header::COOKIE).iter(),
    ) {
        Verdict::Canary => true,
        Verdict::Main => false,
        Verdict::ByWeight => rule.by_weight(|| canary.weighed.0.fetch_add(1, Ordering::Relaxed)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use k8s_sync::{BackendKey, BackendProtocol, ResolvedBackend, ServicePortRef};

    use super::*;
    use crate::backend::Backend;
    use crate::metrics::Metrics;

    fn target(annotations: &[(&str, &str)], endpoints: bool) -> CanaryTarget {
        let mut map: BTreeMap<String, String> = annotations
            .iter()
            .map(|(k, v)| (format!("tandem.dev/{k}"), (*v).to_owned()))
            .collect();
        map.insert("tandem.dev/canary".into(), "true".into());
        let rule = k8s_sync::annotations::parse(Some(&map)).canary.unwrap();
        let key = BackendKey {
            namespace: "ns".into(),
            service: "beta".into(),
            port: ServicePortRef::Number(80),
        };
        let resolved = ResolvedBackend {
            addrs: if endpoints {
                vec!["127.0.0.1:1".parse().unwrap()]
            } else {
                vec![]
            },
            protocol: BackendProtocol::Http1,
            ..ResolvedBackend::default()
        };
        let metrics = Metrics::new(k8s_sync::Tier::Router);
        CanaryTarget {
            backend: Arc::new(Backend::new(key, &resolved)),
            rule,
            ingress: "ns/c".into(),
            metrics: metrics.route_handles(&"ns".into(), &"c".into(), &"beta".into(), false),
            requests: metrics
                .canary_requests
                .with_label_values(&["ns", "c", "beta"]),
            weighed: Default::default(),
        }
    }

    fn req(headers: &[(&'static str, &'static str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(*k, *v).unwrap();
        }
        r
    }

    #[test]
    fn header_cookie_weight() {
        let c = target(
            &[
                ("canary-by-header", "x-canary"),
                ("canary-by-cookie", "canary"),
                ("canary-weight", "0"),
            ],
            true,
        );
        assert!(choose(&c, &req(&[("x-canary", "always")])));
        assert!(!choose(
            &c,
            &req(&[("x-canary", "never"), ("cookie", "canary=always")])
        ));
        assert!(choose(
            &c,
            &req(&[("cookie", "a=1"), ("cookie", "canary=always")])
        ));
        assert!(!choose(&c, &req(&[])));
        assert_eq!(
            c.weighed.0.load(Ordering::Relaxed),
            0,
            "weight 0 needs no counter"
        );
    }

    #[test]
    fn weight_thirty_of_hundred() {
        let c = target(&[("canary-weight", "30")], true);
        let r = req(&[]);
        let n = (0..1000).filter(|_| choose(&c, &r)).count();
        assert_eq!(n, 300);
        let all = target(&[("canary-weight", "100")], true);
        assert!((0..50).all(|_| choose(&all, &r)));
    }

    #[test]
    fn no_endpoints_no_canary() {
        let c = target(&[("canary-weight", "100")], false);
        assert!(!choose(&c, &req(&[])));
    }
}
