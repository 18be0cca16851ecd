//! Per-request state, carried through the phases.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use prometheus::IntCounter;

use super::in_flight::InFlightGuard;
use k8s_sync::RoutePolicy;

use crate::backend::{Backend, EndpointState, InFlightOn};
use crate::metrics::RouteMetrics;
use crate::route_table::RouteTarget;

pub struct RequestCtx {
    pub(crate) route: Option<Arc<RouteTarget>>,
    /// The route's canary serves this request.
    pub(crate) canary: bool,
    /// Metrics of the route, or of unrouted requests.
    pub(crate) metrics: Option<Arc<RouteMetrics>>,
    /// Fallback counter of the request's configured host, when the fallback serves it.
    pub(crate) fallback_counter: Option<IntCounter>,
    pub(crate) request_id: http::HeaderValue,
    pub(crate) attempt_started: Option<Instant>,
    /// Endpoints tried, in order (inline: a request rarely tries more than two).
    pub(crate) tried: smallvec::SmallVec<[SocketAddr; 2]>,
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) client: Option<IpAddr>,
    pub(crate) started: Instant,
    pub(crate) connected: Option<Instant>,
    /// Why the proxy answered itself, if it did.
    pub(crate) local_reason: Option<&'static str>,
    /// The authority the request is for, as sent (absolute-form / `:authority`, else `Host`).
    pub(crate) authority: crate::request::Authority,
    /// The normalised path, when it differs from the one the client sent.
    pub(crate) normalized_path: Option<String>,
    /// `Access-Control-Allow-Origin` for the response, when the route's CORS allows the origin.
    pub(crate) cors_origin: Option<http::HeaderValue>,
    /// Request body bytes seen, when the route limits the body size.
    pub(crate) body_bytes: u64,
    /// The endpoint of the current attempt, for routes with balancing annotations.
    pub(crate) lb: Option<LbAttempt>,
    /// The value the affinity cookie is to be set to (an endpoint id, or a `balanced` ring key).
    pub(crate) set_cookie: Option<u64>,
    pub(crate) _in_flight: InFlightGuard,
}

/// One attempt of a request on a route with balancing annotations.
pub(crate) struct LbAttempt {
    /// The backend picked from and the policy that picked (not looked up again later).
    pub(crate) backend: Arc<Backend>,
    pub(crate) policy: Arc<RoutePolicy>,
    pub(crate) state: Arc<EndpointState>,
    /// Counts the request in flight on the endpoint (EWMA and least-request only).
    pub(crate) _in_flight: Option<InFlightOn>,
    /// Success or failure already counted for outlier ejection.
    pub(crate) recorded: bool,
}

impl RequestCtx {
    pub(crate) fn new(in_flight: InFlightGuard) -> Self {
        Self {
            route: None,
            canary: false,
            metrics: None,
            fallback_counter: None,
            request_id: http::HeaderValue::from_static(""),
            attempt_started: None,
            tried: smallvec::SmallVec::new(),
            upstream: None,
            client: None,
            started: Instant::now(),
            connected: None,
            local_reason: None,
            authority: crate::request::Authority::Empty,
            normalized_path: None,
            cors_origin: None,
            body_bytes: 0,
            lb: None,
            set_cookie: None,
            _in_flight: in_flight,
        }
    }

    /// The backend serving the request: the route's, or its canary's.
    pub(crate) fn backend(&self) -> Option<&Arc<Backend>> {
        let route = self.route.as_ref()?;
        Some(match &route.canary {
            Some(c) if self.canary => &c.backend,
            _ => &route.backend,
        })
    }
}
