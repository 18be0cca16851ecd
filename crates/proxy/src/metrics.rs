//! Prometheus metrics under the `tandem_` prefix, with `tier` as a label.
//!
//! Label values come only from configuration (namespace, Ingress, Service, configured host),
//! never from the request: an unknown Host header is counted as `_other`, so a hostile client
//! cannot explode cardinality. A route's series are created on its first request and cached in
//! the route, so later requests only increment atomics.

use std::sync::{Arc, OnceLock};

use k8s_sync::Tier;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Host label for a Host header no configuration names.
pub const OTHER_HOST: &str = "_other";

/// Request-duration buckets in seconds: sub-millisecond proxying up to slow backends.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const CONNECT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// Every metric of one tier.
pub struct Metrics {
    pub tier: Tier,
    registry: Registry,
    pub requests: IntCounterVec,
    pub canary_requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub fallback_requests: IntCounterVec,
    pub upstream_connect: HistogramVec,
    pub upstream_retries: IntCounterVec,
    pub upstream_errors: IntCounterVec,
    pub requests_in_flight: IntGauge,
    /// Log lines dropped because the writer queue was full.
    pub log_lines_dropped: IntCounter,
    pub config_rebuilds: IntCounterVec,
    pub config_last_success: Gauge,
    pub config_objects: IntGaugeVec,
    pub config_problems: IntGaugeVec,
    pub config_routes: IntGauge,
    pub ready_endpoints: IntGaugeVec,
    /// Passive outlier ejections, per backend Service (never per endpoint address).
    pub endpoint_ejections: IntCounterVec,
    pub ejected_endpoints: IntGaugeVec,
    /// Endpoints failing their active health checks, per backend Service.
    pub unhealthy_endpoints: IntGaugeVec,
    pub tls_client_hellos: IntCounterVec,
    pub tls_handshakes: IntCounterVec,
}

fn counter(reg: &Registry, name: &str, help: &str, labels: &[&str], tier: &str) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help).const_label("tier", tier), labels)
        .expect("static metric definition");
    reg.register(Box::new(v.clone()))
        .expect("unique metric name");
    v
}

fn gauge_vec(reg: &Registry, name: &str, help: &str, labels: &[&str], tier: &str) -> IntGaugeVec {
    let v = IntGaugeVec::new(Opts::new(name, help).const_label("tier", tier), labels)
        .expect("static metric definition");
    reg.register(Box::new(v.clone()))
        .expect("unique metric name");
    v
}

fn histogram(
    reg: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
    tier: &str,
) -> HistogramVec {
    let v = HistogramVec::new(
        HistogramOpts::new(name, help)
            .const_label("tier", tier)
            .buckets(buckets.to_vec()),
        labels,
    )
    .expect("static metric definition");
    reg.register(Box::new(v.clone()))
        .expect("unique metric name");
    v
}

impl Metrics {
    // Metric definitions are static; a failure here is a programming error caught by tests.
    #[allow(clippy::expect_used)]
    pub fn new(tier: Tier) -> Arc<Self> {
        let r = Registry::new();
        let t = tier.as_str();
        let requests_in_flight = IntGauge::with_opts(
            Opts::new(
                "tandem_requests_in_flight",
                "Requests being served now (WebSocket sessions included).",
            )
            .const_label("tier", t),
        )
        .expect("static metric definition");
        r.register(Box::new(requests_in_flight.clone()))
            .expect("unique metric name");
        let log_lines_dropped = IntCounter::with_opts(
            Opts::new(
                "tandem_log_lines_dropped_total",
                "Log lines (access log included) dropped because the writer queue was full.",
            )
            .const_label("tier", t),
        )
        .expect("static metric definition");
        r.register(Box::new(log_lines_dropped.clone()))
            .expect("unique metric name");
        let config_last_success = Gauge::with_opts(
            Opts::new(
                "tandem_config_last_success_timestamp_seconds",
                "Unix time of the last configuration published.",
            )
            .const_label("tier", t),
        )
        .expect("static metric definition");
        r.register(Box::new(config_last_success.clone()))
            .expect("unique metric name");
        let config_routes = IntGauge::with_opts(
            Opts::new(
                "tandem_config_routes",
                "Path rules (and default backend) in the published route table.",
            )
            .const_label("tier", t),
        )
        .expect("static metric definition");
        r.register(Box::new(config_routes.clone()))
            .expect("unique metric name");
        Arc::new(Self {
            tier,
            requests: counter(
                &r,
                "tandem_requests_total",
                "Requests by the Ingress and Service that served them, status class and whether the legacy fallback served them.",
                &[
                    "namespace",
                    "ingress",
                    "service",
                    "status_class",
                    "fallback",
                ],
                t,
            ),
            canary_requests: counter(
                &r,
                "tandem_canary_requests_total",
                "Requests a canary Ingress's backend took from its main route, per canary Ingress and Service.",
                &["namespace", "ingress", "service"],
                t,
            ),
            request_duration: histogram(
                &r,
                "tandem_request_duration_seconds",
                "Time from request start to the end of the response, per Ingress and Service.",
                &["namespace", "ingress", "service"],
                DURATION_BUCKETS,
                t,
            ),
            fallback_requests: counter(
                &r,
                "tandem_fallback_requests_total",
                "Requests served by the legacy fallback (host-less `/` rule or defaultBackend), per configured host: the migration's progress bar.",
                &["host"],
                t,
            ),
            upstream_connect: histogram(
                &r,
                "tandem_upstream_connect_duration_seconds",
                "Time to obtain a connection to a backend endpoint (new or pooled).",
                &["namespace", "service"],
                CONNECT_BUCKETS,
                t,
            ),
            upstream_retries: counter(
                &r,
                "tandem_upstream_retries_total",
                "Requests retried on another endpoint after a failure.",
                &["namespace", "service"],
                t,
            ),
            upstream_errors: counter(
                &r,
                "tandem_upstream_errors_total",
                "Backend failures by kind (connect_refused, connect_timeout, read_timeout, ...).",
                &["namespace", "service", "kind"],
                t,
            ),
            requests_in_flight,
            log_lines_dropped,
            config_rebuilds: counter(
                &r,
                "tandem_config_rebuilds_total",
                "Configuration rebuilds by result: ok, or partial when some objects were rejected.",
                &["result"],
                t,
            ),
            config_last_success,
            config_objects: gauge_vec(
                &r,
                "tandem_config_objects",
                "Objects in the source, by kind.",
                &["kind"],
                t,
            ),
            config_problems: gauge_vec(
                &r,
                "tandem_config_problems",
                "Rejected objects or rules in the current configuration, by kind and reason.",
                &["kind", "reason"],
                t,
            ),
            config_routes,
            ready_endpoints: gauge_vec(
                &r,
                "tandem_backend_ready_endpoints",
                "Ready endpoints per backend (Service port).",
                &["namespace", "service", "port"],
                t,
            ),
            endpoint_ejections: counter(
                &r,
                "tandem_endpoint_ejections_total",
                "Endpoints taken out of rotation after consecutive failures (outlier ejection), per Service.",
                &["namespace", "service"],
                t,
            ),
            ejected_endpoints: gauge_vec(
                &r,
                "tandem_endpoints_ejected",
                "Endpoints out of rotation now after consecutive failures, per Service.",
                &["namespace", "service"],
                t,
            ),
            unhealthy_endpoints: gauge_vec(
                &r,
                "tandem_endpoints_unhealthy",
                "Endpoints out of rotation now because they fail their active health checks, per Service.",
                &["namespace", "service"],
                t,
            ),
            tls_client_hellos: counter(
                &r,
                "tandem_tls_client_hellos_total",
                "TLS ClientHello messages by the certificate chosen (exact, wildcard, default) and ALPN offered (h2, http1); a TLS 1.3 HelloRetryRequest makes two for one handshake.",
                &["certificate", "alpn"],
                t,
            ),
            tls_handshakes: counter(
                &r,
                "tandem_tls_handshakes_total",
                "Completed TLS handshakes by protocol version; failed handshakes = client hellos - completed (less HelloRetryRequests).",
                &["result", "version"],
                t,
            ),
            registry: r,
        })
    }

    /// Brings the dropped-log-lines counter up to the writer's own count (at scrape time).
    pub fn sync_log_lines_dropped(&self, dropped: u64) {
        let seen = self.log_lines_dropped.get();
        if dropped > seen {
            self.log_lines_dropped.inc_by(dropped - seen);
        }
    }

    /// Adds a collector whose series are made at scrape time from state kept elsewhere (e.g.
    /// the edge's certificate expiry, read from the published certificate set).
    pub fn register_collector(&self, collector: Box<dyn prometheus::core::Collector>) {
        if let Err(e) = self.registry.register(collector) {
            tracing::error!(error = %e, "cannot register a metrics collector");
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        buf
    }

    /// Per-request metric handles of one route. Series are created on a route's first request
    /// (so idle routes add no series) and cached, so later requests only touch atomics.
    pub fn route_handles(
        self: &Arc<Self>,
        namespace: &Arc<str>,
        ingress: &Arc<str>,
        service: &Arc<str>,
        fallback: bool,
    ) -> Arc<RouteMetrics> {
        Arc::new(RouteMetrics {
            metrics: self.clone(),
            // Shared with the route's Ingress and backend keys: no copies per route.
            labels: [namespace.clone(), ingress.clone(), service.clone()],
            fallback: if fallback { "true" } else { "false" },
            by_status_class: Default::default(),
            duration: OnceLock::new(),
            connect: OnceLock::new(),
            retries: OnceLock::new(),
        })
    }

    /// Handles for requests no route matched.
    pub fn unrouted_handles(self: &Arc<Self>) -> Arc<RouteMetrics> {
        let none: Arc<str> = Arc::from("");
        self.route_handles(&none, &none, &none, false)
    }
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Lazily resolved metric handles of one route.
pub struct RouteMetrics {
    metrics: Arc<Metrics>,
    /// namespace, ingress, service.
    labels: [Arc<str>; 3],
    /// The `fallback` label.
    fallback: &'static str,
    by_status_class: [OnceLock<IntCounter>; 5],
    duration: OnceLock<Histogram>,
    connect: OnceLock<Histogram>,
    retries: OnceLock<IntCounter>,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("labels", &self.labels)
            .finish()
    }
}

impl RouteMetrics {
    /// Counts a finished request by status class.
    pub fn count(&self, status: u16) {
        // Status 0: the client went away before a response was written; counted as 4xx, as
        // nginx logs it (499), so client aborts do not inflate the backend error rate.
        let i = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            0 | 400..=499 => 3,
            _ => 4,
        };
        let [ns, ing, svc] = &self.labels;
        self.by_status_class[i]
            .get_or_init(|| {
                self.metrics.requests.with_label_values(&[
                    ns,
                    ing,
                    svc,
                    STATUS_CLASSES[i],
                    self.fallback,
                ])
            })
            .inc();
    }

    pub fn observe_duration(&self, seconds: f64) {
        let [ns, ing, svc] = &self.labels;
        self.duration
            .get_or_init(|| {
                self.metrics
                    .request_duration
                    .with_label_values(&[ns, ing, svc])
            })
            .observe(seconds);
    }

    pub fn observe_connect(&self, seconds: f64) {
        let [ns, _, svc] = &self.labels;
        self.connect
            .get_or_init(|| self.metrics.upstream_connect.with_label_values(&[ns, svc]))
            .observe(seconds);
    }

    pub fn count_retry(&self) {
        let [ns, _, svc] = &self.labels;
        self.retries
            .get_or_init(|| self.metrics.upstream_retries.with_label_values(&[ns, svc]))
            .inc();
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("tier", &self.tier)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_encodes_with_tier_label() {
        let m = Metrics::new(Tier::Router);
        let h = m.route_handles(&"ns".into(), &"ing".into(), &"svc".into(), true);
        h.count(204);
        h.count(503);
        m.fallback_requests.with_label_values(&[OTHER_HOST]).inc();
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(text.contains(r#"tandem_requests_total{fallback="true",ingress="ing",namespace="ns",service="svc",status_class="2xx",tier="router"} 1"#), "{text}");
        assert!(text.contains(r#"status_class="5xx",tier="router"} 1"#));
        assert!(text.contains(r#"tandem_fallback_requests_total{host="_other",tier="router"} 1"#));
    }
}
