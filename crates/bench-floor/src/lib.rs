//! Benchmark floors and the prototypes that measure what lies below pingora-proxy's floor
//! (bench/cpu.sh, bench/instructions.sh; the decision they informed is in BENCHMARKS.md,
//! "Below pingora's floor"). None of this is part of tandem's data path:
//!
//! - [`Floor`]: a bare pingora-proxy `ProxyHttp` to one fixed upstream (`bench-floor`, and
//!   `bench-floor-mimalloc`: the same with the allocator the tiers use).
//! - [`Lean`]: the same proxying written directly on pingora-core's HTTP/1.1 session and
//!   connection-pool APIs, one request at a time in one task, without pingora-proxy's
//!   duplex machinery (`bench-lean`).
//! - `bench-hyper` and `bench-raw` (own binaries over [`serve_local`]): the same proxy on hyper's
//!   HTTP/1.1 connections, and tokio + `httparse` only as a lower bound of what a tokio-based
//!   proxy costs here.
#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora_core::connectors::http::v1::Connector;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::listening::Service;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session, http_proxy_service};
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

/// Runs [`Floor`] until SIGINT.
pub fn run_floor(name: &str, args: Args) {
    let mut server = server(name, args.threads);
    let mut service = http_proxy_service(
        &server.configuration,
        Floor {
            upstream: args.upstream,
        },
    );
    service.add_tcp(&args.listen);
    server.add_service(service);
    server.run_forever();
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
