//! The data path: a pingora `ProxyHttp` that does one `load()` of the published route table per
//! request, picks an endpoint round-robin, retries connect failures on another endpoint, and
//! writes one access-log line per request.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use prometheus::{IntCounter, IntGauge};

use k8s_sync::{BackendProtocol, Tier};

use crate::backend::Pick;
use crate::forwarded::{self, Hop, TrustedProxies};
use crate::metrics::{Metrics, RouteMetrics};
use crate::request::{self, HeadLimits, Reject};
use crate::route_table::{RouteTable, RouteTarget};
use crate::tls_authority::TlsAuthority;

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
    /// Plain-HTTP listener of the edge: redirect hosts that have TLS to HTTPS on this port.
    pub redirect_to_https_port: Option<u16>,
    /// `Strict-Transport-Security` value added to responses (HTTPS listeners only).
    pub hsts: Option<String>,
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

/// Request id header: taken from the client when sane, else made; sent upstream and back.
pub const REQUEST_ID: &str = "x-request-id";

/// Paths cert-manager's HTTP-01 solver must reach over plain HTTP.
const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Requests being served right now; shutdown waits for this to reach zero.
#[derive(Clone, Debug)]
pub struct InFlight {
    count: Arc<AtomicUsize>,
    gauge: IntGauge,
}

impl InFlight {
    pub fn new(gauge: IntGauge) -> Self {
        Self {
            count: Arc::default(),
            gauge,
        }
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    fn enter(&self) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        self.gauge.inc();
        InFlightGuard(self.clone())
    }
}

pub struct InFlightGuard(InFlight);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.gauge.dec();
    }
}

/// The routing proxy.
pub struct RouterProxy {
    routes: Arc<ArcSwap<RouteTable>>,
    settings: ProxySettings,
    in_flight: InFlight,
    metrics: Arc<Metrics>,
}

impl RouterProxy {
    pub fn new(
        routes: Arc<ArcSwap<RouteTable>>,
        settings: ProxySettings,
        in_flight: InFlight,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            routes,
            settings,
            in_flight,
            metrics,
        }
    }

    fn count_upstream_error(&self, ctx: &RequestCtx, e: &Error) {
        if !self.settings.request_metrics {
            return;
        }
        let kind = match e.etype() {
            ErrorType::ConnectTimedout => "connect_timeout",
            ErrorType::ConnectRefused => "connect_refused",
            ErrorType::ConnectNoRoute => "connect_no_route",
            ErrorType::ConnectError | ErrorType::SocketError | ErrorType::BindError => {
                "connect_error"
            }
            ErrorType::ReadTimedout => "read_timeout",
            ErrorType::WriteTimedout => "write_timeout",
            ErrorType::ReadError | ErrorType::ConnectionClosed => "read_error",
            ErrorType::WriteError => "write_error",
            ErrorType::InvalidHTTPHeader | ErrorType::H1Error | ErrorType::H2Error => {
                "protocol_error"
            }
            _ => "other",
        };
        let (ns, svc) = ctx
            .route
            .as_ref()
            .map_or(("", ""), |r| (&*r.namespace, &*r.backend.service));
        self.metrics
            .upstream_errors
            .with_label_values(&[ns, svc, kind])
            .inc();
    }
}

/// Per-request state.
pub struct RequestCtx {
    route: Option<Arc<RouteTarget>>,
    /// Metrics of the route, or of unrouted requests.
    metrics: Option<Arc<RouteMetrics>>,
    /// Fallback counter of the request's configured host, when the fallback serves it.
    fallback_counter: Option<IntCounter>,
    request_id: String,
    attempt_started: Option<Instant>,
    tried: Vec<SocketAddr>,
    upstream: Option<SocketAddr>,
    client: Option<IpAddr>,
    started: Instant,
    connected: Option<Instant>,
    /// Why the proxy answered itself, if it did.
    local_reason: Option<&'static str>,
    /// The authority the request is for, as sent (absolute-form / `:authority`, else `Host`).
    authority: String,
    /// The normalised path, when it differs from the one the client sent.
    normalized_path: Option<String>,
    _in_flight: InFlightGuard,
}

fn http_date() -> String {
    httpdate::fmt_http_date(SystemTime::now())
}

/// Writes a small plain-text response generated by the proxy itself; the connection stays
/// open for the next request.
async fn respond(
    session: &mut Session,
    status: u16,
    message: &str,
    request_id: &str,
) -> Result<()> {
    respond_then(session, status, message, request_id, false).await
}

/// Writes a small plain-text response; with `close`, says `Connection: close` and does not
/// keep the connection (for requests whose framing or remaining bytes cannot be trusted).
async fn respond_then(
    session: &mut Session,
    status: u16,
    message: &str,
    request_id: &str,
    close: bool,
) -> Result<()> {
    let body = Bytes::from(format!("{status} {message}\n"));
    let mut resp = ResponseHeader::build(status, Some(6))?;
    if close {
        session.set_keepalive(None);
        resp.insert_header(header::CONNECTION, "close")?;
    }
    resp.insert_header(header::SERVER, SERVER_NAME)?;
    resp.insert_header(header::DATE, http_date())?;
    resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header(header::CACHE_CONTROL, "no-store")?;
    resp.insert_header(REQUEST_ID, request_id)?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// 308 (method and body kept) to the same host and path on HTTPS.
async fn redirect_to_https(
    session: &mut Session,
    port: u16,
    authority: &str,
    request_id: &str,
) -> Result<()> {
    let req = session.req_header();
    let host = crate::route_table::normalize_host(authority);
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.into_owned()
    };
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let location = match port {
        443 => format!("https://{host}{path}"),
        p => format!("https://{host}:{p}{path}"),
    };
    let mut resp = ResponseHeader::build(308, Some(5))?;
    resp.insert_header(header::SERVER, SERVER_NAME)?;
    resp.insert_header(header::DATE, http_date())?;
    resp.insert_header(header::LOCATION, location)?;
    resp.insert_header(header::CONTENT_LENGTH, "0")?;
    resp.insert_header(REQUEST_ID, request_id)?;
    session.write_response_header(Box::new(resp), true).await
}

/// The client's `X-Request-Id` when it is short printable ASCII, else a new UUID.
fn request_id(session: &Session) -> String {
    session
        .req_header()
        .headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned)
}

/// Checks the request head and finds its authority and normalised path (`None`: unchanged).
fn check_request(
    req: &RequestHeader,
    limits: &HeadLimits,
) -> std::result::Result<(String, Option<String>), Reject> {
    request::check_limits(req, limits)?;
    let authority = request::authority(req)?.to_owned();
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

fn reject_message(reject: Reject) -> &'static str {
    match reject.status() {
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        _ => "Bad Request",
    }
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
impl ProxyHttp for RouterProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            route: None,
            metrics: None,
            fallback_counter: None,
            request_id: String::new(),
            attempt_started: None,
            tried: Vec::new(),
            upstream: None,
            client: None,
            started: Instant::now(),
            connected: None,
            local_reason: None,
            authority: String::new(),
            normalized_path: None,
            _in_flight: self.in_flight.enter(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.request_id = request_id(session);
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
                respond_then(
                    session,
                    reject.status(),
                    reject_message(reject),
                    &ctx.request_id,
                    true,
                )
                .await?;
                return Ok(true);
            }
        }
        if misdirected(session, &ctx.authority) {
            ctx.local_reason = Some("misdirected");
            respond(
                session,
                421,
                "Misdirected Request: the certificate of this connection does not cover this host",
                &ctx.request_id,
            )
            .await?;
            return Ok(true);
        }
        let (route, redirect) = {
            let table = self.routes.load();
            let path = ctx
                .normalized_path
                .as_deref()
                .unwrap_or_else(|| session.req_header().uri.path());
            let host = ctx.authority.as_str();
            let redirect = self.settings.redirect_to_https_port.is_some()
                && !path.starts_with(ACME_CHALLENGE_PREFIX)
                && table.redirects_to_https(host);
            let route = table.lookup(host, path).cloned();
            if self.settings.request_metrics {
                ctx.metrics = Some(
                    route
                        .as_ref()
                        .map_or_else(|| table.unrouted.clone(), |r| r.metrics.clone()),
                );
                if route.as_ref().is_some_and(|r| r.fallback) && !redirect {
                    ctx.fallback_counter = Some(table.fallback_counter(host).clone());
                }
            }
            (route, redirect)
        };
        if redirect && let Some(port) = self.settings.redirect_to_https_port {
            ctx.local_reason = Some("https_redirect");
            ctx.route = route;
            redirect_to_https(session, port, &ctx.authority, &ctx.request_id).await?;
            return Ok(true);
        }
        let Some(route) = route else {
            ctx.local_reason = Some("no_route");
            respond(
                session,
                404,
                "Not Found: no Ingress rule matches this host and path",
                &ctx.request_id,
            )
            .await?;
            return Ok(true);
        };
        if !route.backend.has_endpoints() {
            ctx.local_reason = Some("no_endpoints");
            ctx.route = Some(route);
            respond(
                session,
                503,
                "Service Unavailable: the backend has no ready endpoint",
                &ctx.request_id,
            )
            .await?;
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
        let route = ctx
            .route
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route selected"))?;
        let addr = match route.backend.pick(&ctx.tried) {
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
        ctx.tried.push(addr);
        ctx.upstream = Some(addr);
        ctx.attempt_started = Some(Instant::now());
        let mut peer = HttpPeer::new(addr, false, String::new());
        let o = &mut peer.options;
        o.connection_timeout = Some(self.settings.connect_timeout);
        o.read_timeout = Some(self.settings.read_timeout);
        o.write_timeout = Some(self.settings.write_timeout);
        o.idle_timeout = Some(self.settings.upstream_idle_timeout);
        let protocol = self
            .settings
            .upstream_protocol
            .unwrap_or_else(|| route.backend.protocol());
        if protocol == BackendProtocol::H2c && !session.is_upgrade_req() {
            o.set_http_version(2, 2);
            // Multiplex: pingora's default of one stream per connection would make h2c a
            // slower HTTP/1.1.
            o.max_h2_streams = 100;
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
            .route
            .as_ref()
            .is_some_and(|r| ctx.tried.len() < r.backend.endpoint_count());
        tracing::warn!(tier = self.settings.tier.as_str(), upstream = %peer, error = %e, retry = untried, "upstream connect failed");
        self.count_upstream_error(ctx, &e);
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
        upstream_request.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
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
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream_response.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        if !upstream_response.headers.contains_key(header::DATE) {
            upstream_response.insert_header(header::DATE, http_date())?;
        }
        if !upstream_response.headers.contains_key(header::SERVER) {
            upstream_response.insert_header(header::SERVER, SERVER_NAME)?;
        }
        if let Some(hsts) = &self.settings.hsts {
            upstream_response.insert_header(header::STRICT_TRANSPORT_SECURITY, hsts.as_str())?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        // Connect failures were counted in fail_to_connect, once per attempt.
        let connect_failure = matches!(
            e.etype(),
            ErrorType::ConnectTimedout
                | ErrorType::ConnectRefused
                | ErrorType::ConnectNoRoute
                | ErrorType::ConnectError
                | ErrorType::SocketError
                | ErrorType::BindError
        );
        if e.esource() == &ErrorSource::Upstream && !connect_failure {
            self.count_upstream_error(ctx, e);
        }
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                ErrorSource::Upstream => match e.etype() {
                    ErrorType::ReadTimedout | ErrorType::WriteTimedout => 504,
                    _ => 502,
                },
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        // pingora does not keep a client connection after a failure in the proxy phase, so the
        // error page says `Connection: close` and the connection ends cleanly: a client never
        // sends its next request into a connection about to be dropped.
        // Only a response not yet started can be replaced by an error page.
        if code > 0 && session.response_written().is_none() {
            let message = match code {
                502 => "Bad Gateway: the backend could not be reached",
                503 => "Service Unavailable",
                504 => "Gateway Timeout: the backend did not answer in time",
                400 => "Bad Request",
                _ => "Error",
            };
            if let Err(err) = respond_then(session, code, message, &ctx.request_id, true).await {
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
        // requests_total last: once a request is counted, its other series are updated too.
        if let Some(c) = &ctx.fallback_counter {
            c.inc();
        }
        if let Some(m) = &ctx.metrics {
            m.observe_duration(ctx.started.elapsed().as_secs_f64());
            m.count(status);
        }
        if !self.settings.access_log {
            return;
        }
        let req = session.req_header();
        let client = ctx.client.or_else(|| peer_ip(session));
        let route = ctx.route.as_deref();
        let duration = ctx.started.elapsed();
        tracing::info!(
            target: "tandem::access",
            tier = self.settings.tier.as_str(),
            request_id = ctx.request_id.as_str(),
            client = client.map(|c| c.to_string()).unwrap_or_default(),
            method = req.method.as_str(),
            host = ctx.authority.as_str(),
            path = req.uri.path_and_query().map_or("", |p| p.as_str()),
            proto = ?req.version,
            status,
            bytes = session.body_bytes_sent(),
            upstream = ctx.upstream.map(|u| u.to_string()).unwrap_or_default(),
            attempts = ctx.tried.len(),
            ingress = route.map_or("", |r| &*r.ingress),
            service = route.map_or("", |r| &*r.backend.service),
            backend = route.map_or("", |r| &*r.backend.label),
            fallback = route.is_some_and(|r| r.fallback),
            local = ctx.local_reason.unwrap_or(""),
            upstream_connect_ms = ctx.connected.map(|c| (c - ctx.started).as_secs_f64() * 1000.0),
            duration_ms = duration.as_secs_f64() * 1000.0,
            error = e.map(|e| e.to_string()),
            "request"
        );
    }
}
