//! Benchmark floors and the prototypes that measure what lies below pingora-proxy's floor
//! (bench/cpu.sh, bench/instructions.sh; the decision they informed is in BENCHMARKS.md,
//! "Below pingora's floor"). None of this is part of tandem's data path:
//!
//! - [`Floor`]: a bare pingora-proxy `ProxyHttp` to one fixed upstream (`bench-floor`, and
//!   `bench-floor-mimalloc`: the same with the allocator the tiers use).
//! - [`IngressFloor`]: the floor plus the per-request work no ingress-nginx-compatible proxy can
//!   skip, done through pingora's own API — the forwarded headers and request id ingress-nginx
//!   sends, and upstream timeouts (`bench-floor-ingress`): a lower bound for the router on
//!   pingora-proxy.
//! - `bench-floor-tls`: the floor behind pingora's own rustls listener with its defaults, a lower
//!   bound for a TLS connection and a TLS request on pingora.
//! - [`Lean`]: the same proxying written directly on pingora-core's HTTP/1.1 session and
//!   connection-pool APIs, one request at a time in one task, without pingora-proxy's
//!   duplex machinery (`bench-lean`).
//! - `bench-hyper` and `bench-raw` (own binaries over [`serve_local`]): the same proxy on hyper's
//!   HTTP/1.1 connections, and tokio + `httparse` only as a lower bound of what a tokio-based
//!   proxy costs here.
#![forbid(unsafe_code)]

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora_core::connectors::http::v1::Connector;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::listening::Service;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;
use pingora_proxy::{ProxyHttp, Session, http_proxy_service};
use proxy::forwarded;
use proxy::proxy::request_id;
use tokio::net::{TcpListener, TcpStream};

/// Command line shared by the floors and prototypes: `LISTEN UPSTREAM [THREADS]` (one thread
/// only for those without pingora).
pub struct Args {
    pub listen: String,
    pub upstream: SocketAddr,
    pub threads: usize,
}

impl Args {
    /// Parses the command line; `None` (after printing usage) when it does not fit.
    pub fn from_env(name: &str) -> Option<Args> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let usage = || eprintln!("usage: {name} LISTEN UPSTREAM [THREADS]");
        let (Some(listen), Some(upstream)) = (args.first(), args.get(1)) else {
            usage();
            return None;
        };
        let Ok(upstream) = upstream.parse() else {
            usage();
            return None;
        };
        let threads = match args.get(2).map(|t| t.parse()) {
            None => 1,
            Some(Ok(t)) => t,
            Some(Err(_)) => {
                usage();
                return None;
            }
        };
        Some(Args {
            listen: listen.clone(),
            upstream,
            threads,
        })
    }
}

/// A pingora server with the tiers' runtime choice (one single-threaded runtime per worker), so
/// the comparison is about per-request work, not the scheduler.
fn server(name: &str, threads: usize) -> Server {
    let conf = ServerConf {
        threads,
        work_stealing: false,
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: std::env::temp_dir()
            .join(format!("{name}-{}.sock", std::process::id()))
            .to_string_lossy()
            .into_owned(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    server
}

/// Bare pingora-proxy: every request, unchanged, to one upstream over pingora's pool.
pub struct Floor {
    pub upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora_core::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

/// A TLS listener: address, certificate and key (PEM files).
pub struct TlsListen<'a> {
    pub addr: &'a str,
    pub cert: &'a str,
    pub key: &'a str,
}

/// Serves `proxy` with pingora-proxy on `args.listen` (plain HTTP) and, when given, on a TLS
/// listener of pingora's own (rustls, its defaults) until SIGINT.
fn run_proxy<P>(name: &str, args: &Args, proxy: P, tls: Option<TlsListen<'_>>) -> ExitCode
where
    P: ProxyHttp + Send + Sync + 'static,
    P::CTX: Send + Sync,
{
    let mut server = server(name, args.threads);
    let mut service = http_proxy_service(&server.configuration, proxy);
    service.add_tcp(&args.listen);
    if let Some(tls) = tls
        && let Err(e) = service.add_tls(tls.addr, tls.cert, tls.key)
    {
        eprintln!("{name}: TLS listener {}: {e}", tls.addr);
        return ExitCode::FAILURE;
    }
    server.add_service(service);
    server.run_forever();
}

/// Runs [`Floor`] until SIGINT, also behind TLS when `tls` is given.
pub fn run_floor(name: &str, args: Args, tls: Option<TlsListen<'_>>) -> ExitCode {
    let floor = Floor {
        upstream: args.upstream,
    };
    run_proxy(name, &args, floor, tls)
}

/// The timeouts the router sets on every upstream attempt by default (connect 5 s, each read and
/// write 60 s, idle pooled connections 60 s), as ingress-nginx sets `proxy_*_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// [`Floor`] plus the per-request work an ingress-nginx-compatible proxy cannot skip, written
/// the cheapest way pingora-proxy's API allows: upstream timeouts, and the headers ingress-nginx
/// sends upstream — `X-Request-ID` (new), `X-Real-IP`, `X-Forwarded-For`, `X-Forwarded-Host`,
/// `X-Forwarded-Port`, `X-Forwarded-Proto` — with every value that can be made once made once.
/// No routing, no metrics, no log, no checks: a lower bound for the router, not a proxy to ship.
pub struct IngressFloor {
    pub upstream: SocketAddr,
}

/// Sets the ingress-nginx header set on `req` (the client is `peer`, the listener's port
/// `port`, plain HTTP).
pub fn set_ingress_headers(
    req: &mut RequestHeader,
    peer: IpAddr,
    port: u16,
) -> pingora_core::Result<()> {
    // tandem's own value makers: a new random id (32 hex digits, like ingress-nginx's
    // `$req_id`), and address and port formatted once per worker while they stay the same.
    let peer = forwarded::ip_value(peer);
    let host = req.headers.get(http::header::HOST).cloned();
    req.insert_header("x-request-id", request_id(None))?;
    req.insert_header("x-real-ip", peer.clone())?;
    req.insert_header("x-forwarded-for", peer)?;
    match host {
        Some(h) => req.insert_header("x-forwarded-host", h)?,
        None => {
            req.remove_header("x-forwarded-host");
        }
    }
    req.insert_header("x-forwarded-port", forwarded::port_value(port))?;
    req.insert_header("x-forwarded-proto", http::HeaderValue::from_static("http"))
}

#[async_trait]
impl ProxyHttp for IngressFloor {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora_core::Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        let o = &mut peer.options;
        o.connection_timeout = Some(CONNECT_TIMEOUT);
        o.read_timeout = Some(IO_TIMEOUT);
        o.write_timeout = Some(IO_TIMEOUT);
        o.idle_timeout = Some(IO_TIMEOUT);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut (),
    ) -> pingora_core::Result<()> {
        let inet = |a: Option<&pingora_core::protocols::l4::socket::SocketAddr>| {
            a.and_then(|a| a.as_inet()).copied()
        };
        let (Some(client), Some(server)) =
            (inet(session.client_addr()), inet(session.server_addr()))
        else {
            return Ok(());
        };
        set_ingress_headers(upstream_request, client.ip(), server.port())
    }
}

/// Runs [`IngressFloor`] until SIGINT.
pub fn run_ingress_floor(name: &str, args: Args) -> ExitCode {
    let floor = IngressFloor {
        upstream: args.upstream,
    };
    run_proxy(name, &args, floor, None)
}

/// The lean prototype: one HTTP/1.1 request at a time on pingora-core's server session, the
/// upstream from pingora-core's connection pool, header → body → response in sequence in the
/// connection's own task (no second task, channels or `select!` between the two halves).
/// Upgrades and HTTP/2 are out of its scope (a real path would hand those to pingora-proxy).
pub struct Lean {
    peer: HttpPeer,
    connector: Connector,
}

impl Lean {
    pub fn new(upstream: SocketAddr) -> Lean {
        Lean {
            peer: HttpPeer::new(upstream, false, String::new()),
            connector: Connector::new(None),
        }
    }

    /// Proxies one request; `None` when the downstream connection cannot be reused.
    async fn proxy(&self, session: &mut ServerSession) -> Option<()> {
        let (mut upstream, _reused) = self.connector.get_http_session(&self.peer).await.ok()?;
        upstream
            .write_request_header(Box::new(session.req_header().clone()))
            .await
            .ok()?;
        while let Some(chunk) = session.read_request_body().await.ok()? {
            upstream.write_body(&chunk).await.ok()?;
        }
        upstream.finish_body().await.ok()?;
        upstream.read_response().await.ok()?;
        let header = upstream.resp_header()?.clone();
        session.write_response_header(Box::new(header)).await.ok()?;
        while let Some(chunk) = upstream.read_body_bytes().await.ok()? {
            session.write_response_body(chunk, false).await.ok()?;
        }
        self.connector
            .release_http_session(upstream, &self.peer, None)
            .await;
        Some(())
    }
}

#[async_trait]
impl HttpServerApp for Lean {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        _shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !session.read_request().await.ok()? {
            return None;
        }
        self.proxy(&mut session).await?;
        let settings = HttpPersistentSettings::for_session(&session);
        let reusable = session.finish().await.ok()??;
        Some(ReusedHttpStream::from_reusable_stream(reusable, settings))
    }
}

/// Runs [`Lean`] until SIGINT.
pub fn run_lean(name: &str, args: Args) {
    let mut server = server(name, args.threads);
    let mut service = Service::new(name.to_string(), Lean::new(args.upstream));
    service.add_tcp(&args.listen);
    server.add_service(service);
    server.run_forever();
}

/// For the prototypes without pingora (`bench-hyper`, `bench-raw`): one single-threaded tokio
/// runtime (the tiers' runtime shape) that hands every accepted connection, with `TCP_NODELAY`,
/// to `connection` in a local task (`!Send` state is fine) until SIGINT.
pub fn serve_local<F, Fut>(name: &str, args: &Args, mut connection: F) -> ExitCode
where
    F: FnMut(TcpStream) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    if args.threads != 1 {
        eprintln!("{name}: runs one thread only");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    let served = local.block_on(&runtime, async move {
        let listener = TcpListener::bind(args.listen.as_str()).await?;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (down, _) = accepted?;
                    down.set_nodelay(true)?;
                    tokio::task::spawn_local(connection(down));
                }
                _ = tokio::signal::ctrl_c() => return std::io::Result::Ok(()),
            }
        }
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingress_headers_replace_what_the_client_sent() {
        let mut req = RequestHeader::build("GET", b"/x", None).unwrap();
        req.insert_header("Host", "a.example").unwrap();
        req.insert_header("X-Forwarded-For", "6.6.6.6").unwrap();
        req.insert_header("X-Real-IP", "6.6.6.6").unwrap();
        let peer: IpAddr = "10.1.2.3".parse().unwrap();
        set_ingress_headers(&mut req, peer, 8080).unwrap();
        let h = &req.headers;
        assert_eq!(h["x-real-ip"], "10.1.2.3");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-host"], "a.example");
        assert_eq!(h["x-forwarded-port"], "8080");
        assert_eq!(h["x-forwarded-proto"], "http");
        let id = h["x-request-id"].as_bytes().to_vec();
        assert_eq!(id.len(), 32);
        assert!(id.iter().all(u8::is_ascii_hexdigit));
        // The cached values follow a change of client and port.
        set_ingress_headers(&mut req, "::1".parse().unwrap(), 80).unwrap();
        assert_eq!(req.headers["x-real-ip"], "::1");
        assert_eq!(req.headers["x-forwarded-port"], "80");
        assert_ne!(req.headers["x-request-id"].as_bytes(), &id[..]);
    }

    #[test]
    fn no_host_no_forwarded_host() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("X-Forwarded-Host", "evil.example")
            .unwrap();
        set_ingress_headers(&mut req, "10.0.0.1".parse().unwrap(), 80).unwrap();
        assert!(req.headers.get("x-forwarded-host").is_none());
    }
}
