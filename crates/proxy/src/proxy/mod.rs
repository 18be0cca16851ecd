//! The data path: a pingora `ProxyHttp` whose phases each call a small module — request checks
//! (`crate::request`), the tier's policy hook, one `load()` of the published route table,
//! endpoint choice, forwarded headers, local responses, error classification and the access log.

pub mod access_log;
mod annotated;
mod canary;
mod context;
mod in_flight;
mod lb;
mod local;
mod request_id;
mod upstream_error;
mod upstream_tls;

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::header;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use k8s_sync::{BackendProtocol, Tier};

pub use context::RequestCtx;
pub use in_flight::{InFlight, InFlightGuard};
pub use request_id::{REQUEST_ID, request_id};

use crate::backend::Pick;
use crate::forwarded::{self, Hop, TrustedProxies};
use crate::metrics::Metrics;
use crate::policy::{LocalAnswer, PolicyRequest, TierPolicy};
use crate::request::{self, Authority, HeadLimits, Reject};
use crate::route_policy;
use crate::route_table::RouteTable;
use crate::tls_authority::TlsAuthority;

/// Connection-pool group of upgrade requests (WebSocket): never shared with plain requests.
const UPGRADE_POOL: u64 = 1;

/// The `Server` header on every response this tier writes or passes on without one.
pub const SERVER_NAME: &str = "tandem";

/// Settings of the proxy that do not change with config.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// For logs.
    pub tier: Tier,
    /// Scheme clients used to reach this listener (`http` or `https`).
    pub scheme: &'static str,
    pub trusted_proxies: TrustedProxies,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    /// How long an idle pooled upstream connection is kept.
    pub upstream_idle_timeout: Duration,
    /// `--upstream-protocol`: one protocol for every backend instead of each Service port's
    /// `appProtocol`. WebSocket upgrades always use HTTP/1.1.
    pub upstream_protocol: Option<BackendProtocol>,
    /// Write one access-log line per request.
    pub access_log: bool,
    /// Count requests in Prometheus metrics.
    pub request_metrics: bool,
    /// Size limits of the request head (414 / 431 above them).
    pub head_limits: HeadLimits,
}

/// The proxy of one listener: shared route table, settings and the tier's policy.
pub struct Proxy {
    routes: Arc<ArcSwap<RouteTable>>,
    settings: ProxySettings,
    policy: Arc<dyn TierPolicy>,
    in_flight: InFlight,
    metrics: Arc<Metrics>,
}

impl Proxy {
    pub fn new(
        routes: Arc<ArcSwap<RouteTable>>,
        settings: ProxySettings,
        policy: Arc<dyn TierPolicy>,
        in_flight: InFlight,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            routes,
            settings,
            policy,
            in_flight,
            metrics,
        }
    }

    fn count_upstream_error(&self, ctx: &RequestCtx, e: &Error) {
        if !self.settings.request_metrics {
            return;
        }
        let ns = ctx.route.as_ref().map_or("", |r| &*r.namespace);
        let svc = ctx.backend().map_or("", |b| &*b.service);
        self.metrics
            .upstream_errors
            .with_label_values(&[ns, svc, upstream_error::error_kind(e.etype())])
            .inc();
    }
}

/// Checks the request head and finds its authority and normalised path (`None`: unchanged).
fn check_request(
    req: &RequestHeader,
    limits: &HeadLimits,
) -> std::result::Result<(Authority, Option<String>), Reject> {
    request::check_limits(req, limits)?;
    let authority = Authority::of(req)?;
    let path = match request::normalize_path(req.uri.path())? {
        Cow::Borrowed(_) => None,
        Cow::Owned(p) => Some(p),
    };
    request::collapse_content_length(req)?;
    Ok((authority, path))
}

/// A request on a TLS connection whose certificate does not cover its host.
fn misdirected(session: &Session, authority: &str) -> bool {
    session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|tls| tls.extension.get::<TlsAuthority>())
        .is_some_and(|a| a.is_misdirected(authority))
}

fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// Replaces the path of the upstream request target (keeping the query) and, for an
/// absolute-form target, turns it into origin-form.
fn rewrite_target(req: &mut RequestHeader, path: Option<&str>, origin_form: bool) -> Result<()> {
    let mut parts = req.uri.clone().into_parts();
    let path = path.unwrap_or_else(|| req.uri.path());
    let path_and_query = match req.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "normalised path", e))?,
    );
    if origin_form {
        parts.scheme = None;
        parts.authority = None;
    }
    let uri = http::Uri::from_parts(parts)
        .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "normalised target", e))?;
    req.set_uri(uri);
    Ok(())
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.in_flight.enter())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.request_id = request_id::request_id(
            session
                .req_header()
                .headers
                .get(&request_id::REQUEST_ID_NAME),
        );
        // The client as this tier sees it, also for requests answered here (404, 503, redirect).
        ctx.client = peer_ip(session).map(|peer| {
            forwarded::client_ip(session.req_header(), peer, &self.settings.trusted_proxies)
        });
        match check_request(session.req_header(), &self.settings.head_limits) {
            Ok((authority, path)) => {
                ctx.authority = authority;
                ctx.normalized_path = path;
            }
            Err(reject) => {
                ctx.local_reason = Some(reject.as_str());
                let status = reject.status();
                let message = upstream_error::message_for(status);
                local::respond(session, status, message, &ctx.request_id, true).await?;
                return Ok(true);
            }
        }
        if misdirected(session, ctx.authority.as_str()) {
            ctx.local_reason = Some("misdirected");
            let message = upstream_error::message_for(421);
            local::respond(session, 421, message, &ctx.request_id, false).await?;
            return Ok(true);
        }
        let (route, answer) = {
            let table = self.routes.load();
            let req = session.req_header();
            let path = ctx
                .normalized_path
                .as_deref()
                .unwrap_or_else(|| req.uri.path());
            let host = ctx.authority.as_str();
            let answer = self.policy.answer_locally(&PolicyRequest {
                authority: host,
                path,
                target: req.uri.path_and_query().map_or("/", |p| p.as_str()),
                routes: &table,
            });
            let route = table.lookup(host, path).cloned();
            if self.settings.request_metrics {
                ctx.metrics = Some(
                    route
                        .as_ref()
                        .map_or_else(|| table.unrouted.clone(), |r| r.metrics.clone()),
                );
                if route.as_ref().is_some_and(|r| r.fallback) && answer.is_none() {
                    ctx.fallback_counter = Some(table.fallback_counter(host).clone());
                }
            }
            (route, answer)
        };
        if let Some(LocalAnswer::Redirect {
            status,
            location,
            reason,
        }) = answer
        {
            ctx.local_reason = Some(reason);
            ctx.route = route;
            local::redirect(session, status, &location, &ctx.request_id).await?;
            return Ok(true);
        }
        let Some(route) = route else {
            ctx.local_reason = Some("no_route");
            let message = "Not Found: no Ingress rule matches this host and path";
            local::respond(session, 404, message, &ctx.request_id, false).await?;
            return Ok(true);
        };
        if let Some(policy) = &route.policy
            && annotated::answer(session, ctx, policy).await?
        {
            ctx.route = Some(route);
            return Ok(true);
        }
        if let Some(c) = &route.canary
            && canary::choose(c, session.req_header())
        {
            ctx.canary = true;
            c.requests.inc();
            if self.settings.request_metrics {
                ctx.metrics = Some(c.metrics.clone());
            }
        } else if !route.backend.has_endpoints() {
            ctx.local_reason = Some("no_endpoints");
            ctx.route = Some(route);
            let message = "Service Unavailable: the backend has no ready endpoint";
            local::respond(session, 503, message, &ctx.request_id, false).await?;
            return Ok(true);
        }
        ctx.route = Some(route);
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let no_route = || Error::explain(ErrorType::InternalError, "no route selected");
        let route = ctx.route.as_ref().ok_or_else(no_route)?;
        let backend = ctx.backend().ok_or_else(no_route)?;
        // The main route's policy picks among the endpoints of the backend serving the request
        // (its canary's, when the canary takes it), as it sets the rest of the upstream request.
        let pick = match route.policy.as_ref().filter(|p| p.balance.is_some()) {
            Some(policy) => {
                let (backend, policy) = (backend.clone(), policy.clone());
                lb::pick(session.req_header(), ctx, &backend, &policy)
            }
            None => backend.pick(&ctx.tried),
        };
        let route = ctx.route.as_ref().ok_or_else(no_route)?;
        let backend = ctx.backend().ok_or_else(no_route)?;
        let addr = match pick {
            Pick::Endpoint(a) => a,
            Pick::NoEndpoints => {
                return Err(Error::explain(
                    ErrorType::HTTPStatus(503),
                    "no ready endpoint",
                ));
            }
            Pick::Exhausted => {
                return Err(Error::explain(
                    ErrorType::HTTPStatus(502),
                    "every endpoint failed",
                ));
            }
        };
        let policy = route.policy.as_deref();
        let s = &self.settings;
        // The route's `backend-protocol` annotation, else the flag, else the port's appProtocol.
        let protocol = policy
            .and_then(|p| p.backend_protocol)
            .or(s.upstream_protocol)
            .unwrap_or_else(|| backend.protocol());
        let mut peer = match protocol {
            BackendProtocol::Https | BackendProtocol::Grpcs => {
                let default_tls = k8s_sync::UpstreamTls::default();
                let tls = policy
                    .and_then(|p| p.upstream_tls.as_ref())
                    .unwrap_or(&default_tls);
                let upstream_host = policy
                    .and_then(|p| p.upstream_host.as_ref())
                    .and_then(|h| h.to_str().ok());
                let sni =
                    upstream_tls::server_name(tls, upstream_host, ctx.authority.as_str(), addr);
                // A WebSocket upgrade is HTTP/1.1 whatever the route speaks.
                let h2 = protocol == BackendProtocol::Grpcs && !session.is_upgrade_req();
                upstream_tls::peer(addr, sni, tls, h2)
            }
            _ => HttpPeer::new(addr, false, String::new()),
        };
        ctx.tried.push(addr);
        ctx.upstream = Some(addr);
        ctx.attempt_started = Some(Instant::now());
        let o = &mut peer.options;
        o.connection_timeout = policy
            .and_then(|p| p.connect_timeout)
            .or(Some(s.connect_timeout));
        o.read_timeout = policy.and_then(|p| p.read_timeout).or(Some(s.read_timeout));
        o.write_timeout = policy
            .and_then(|p| p.send_timeout)
            .or(Some(s.write_timeout));
        o.idle_timeout = Some(s.upstream_idle_timeout);
        if session.is_upgrade_req() {
            // An upgrade takes a connection of its own: handing it a pooled keep-alive
            // connection let some WebSockets close right after their 101 (3 in 1,000 after
            // plain requests to the same backend).
            peer.group_key = UPGRADE_POOL;
        } else if matches!(protocol, BackendProtocol::H2c | BackendProtocol::Grpcs) {
            peer.options.set_http_version(2, 2);
            // Multiplex: pingora's default of one stream per connection would make h2c a
            // slower HTTP/1.1.
            peer.options.max_h2_streams = 100;
        }
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing was sent yet, so any method may go to another endpoint.
        let untried = ctx
            .backend()
            .is_some_and(|b| ctx.tried.len() < b.endpoint_count());
        tracing::warn!(tier = self.settings.tier.as_str(), upstream = %peer, error = %e, retry = untried, "upstream connect failed");
        self.count_upstream_error(ctx, &e);
        lb::on_failure(ctx, true);
        if untried {
            e.set_retry(true);
            if let Some(m) = &ctx.metrics {
                m.count_retry();
            }
        }
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let now = Instant::now();
        ctx.connected = Some(now);
        if let (Some(m), Some(start)) = (&ctx.metrics, ctx.attempt_started) {
            m.observe_connect((now - start).as_secs_f64());
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut pingora_http::RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // ctx.client was resolved from the same headers in request_filter.
        if let (Some(peer), Some(client)) = (peer_ip(session), ctx.client) {
            let port = session
                .server_addr()
                .and_then(|a| a.as_inet())
                .map_or(0, |a| a.port());
            let hop = Hop {
                peer,
                scheme: self.settings.scheme,
                port,
            };
            forwarded::apply_for_client(
                upstream_request,
                hop,
                &self.settings.trusted_proxies,
                client,
            );
        }
        upstream_request.insert_header(REQUEST_ID, ctx.request_id.clone())?;
        if let Some(n) = request::collapse_content_length(upstream_request)
            .map_err(|e| Error::explain(ErrorType::InvalidHTTPHeader, e.to_string()))?
        {
            // Forward exactly one Content-Length, never the client's ambiguity.
            upstream_request.insert_header(header::CONTENT_LENGTH, n.to_string())?;
        }
        let forward_raw = ctx.route.as_ref().is_some_and(|r| r.forward_raw_path);
        let path = ctx.normalized_path.as_deref().filter(|_| !forward_raw);
        let absolute_form = request::is_absolute_form(upstream_request);
        if path.is_some() || absolute_form {
            rewrite_target(upstream_request, path, absolute_form)?;
        }
        if absolute_form {
            // RFC 9112 §3.2.2: the target's authority replaces Host.
            upstream_request.insert_header(header::HOST, ctx.authority.as_str())?;
        }
        if let Some(policy) = ctx.route.as_ref().and_then(|r| r.policy.as_deref()) {
            let req = session.req_header();
            let path = ctx
                .normalized_path
                .as_deref()
                .unwrap_or_else(|| req.uri.path());
            route_policy::upstream_request(policy, upstream_request, path)?;
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(policy) = ctx.route.as_ref().and_then(|r| r.policy.as_deref())
            && let Err(e) = route_policy::count_body(policy, &mut ctx.body_bytes, body.as_ref())
        {
            ctx.local_reason = Some("body_too_large");
            return Err(e);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream_response.insert_header(REQUEST_ID, ctx.request_id.clone())?;
        if let Some(policy) = ctx.route.as_ref().and_then(|r| r.policy.as_deref()) {
            route_policy::response(policy, upstream_response, ctx.cors_origin.as_ref())?;
        }
        if ctx.lb.is_some() {
            lb::on_response(ctx, session.req_header(), upstream_response)?;
        }
        // pingora writes `Date` (cached once a second) on every response.
        if !upstream_response.headers.contains_key(header::SERVER) {
            upstream_response
                .insert_header(header::SERVER, http::HeaderValue::from_static(SERVER_NAME))?;
        }
        self.policy.on_response(upstream_response)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        // Connect failures were counted in fail_to_connect, once per attempt.
        if e.esource() == &ErrorSource::Upstream && !upstream_error::is_connect_failure(e.etype()) {
            self.count_upstream_error(ctx, e);
        }
        let code = upstream_error::status_for(e.etype(), e.esource());
        // pingora does not keep a client connection after a failure in the proxy phase, so the
        // page closes it: a client never sends its next request into a connection about to be
        // dropped. Only a response not yet started can be replaced by an error page.
        if code > 0 && session.response_written().is_none() {
            let message = upstream_error::message_for(code);
            if let Err(err) = local::respond(session, code, message, &ctx.request_id, true).await {
                tracing::debug!(error = %err, "could not write error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let duration = ctx.started.elapsed();
        if e.is_some_and(|e| e.esource() == &ErrorSource::Upstream) {
            lb::on_failure(ctx, false);
        }
        // requests_total last: once a request is counted, its other series are updated too.
        if let Some(c) = &ctx.fallback_counter {
            c.inc();
        }
        if let Some(m) = &ctx.metrics {
            m.observe_duration(duration.as_secs_f64());
            m.count(status);
        }
        if !self.settings.access_log {
            return;
        }
        let req = session.req_header();
        let record = Box::new(access_log::AccessRecord {
            time: std::time::SystemTime::now(),
            tier: self.settings.tier.as_str(),
            // The request is over: what it no longer needs moves into the record.
            request_id: std::mem::replace(&mut ctx.request_id, http::HeaderValue::from_static("")),
            client: ctx.client.or_else(|| peer_ip(session)),
            method: req.method.clone(),
            host: std::mem::take(&mut ctx.authority),
            path: req
                .uri
                .path_and_query()
                .map_or("", |p| p.as_str())
                .to_owned(),
            proto: req.version,
            status,
            bytes: session.body_bytes_sent(),
            upstream: ctx.upstream,
            attempts: ctx.tried.len(),
            route: ctx.route.take(),
            canary: ctx.canary,
            local: ctx.local_reason,
            upstream_connect_ms: ctx
                .connected
                .map(|c| (c - ctx.started).as_secs_f64() * 1000.0),
            duration_ms: duration.as_secs_f64() * 1000.0,
            error: e.map(|e| e.to_string()),
        });
        record.submit();
    }
}
