//! `bench-floor LISTEN UPSTREAM [THREADS]`: the benchmark floor. A pingora proxy that sends
//! every request, unchanged, to one fixed HTTP/1.1 upstream over pingora's connection pool: no
//! routing, no header rewriting, no logging, no metrics, system allocator. Whatever tandem's
//! router costs above this per request is ours (bench/cpu.sh). SIGINT stops it at once.
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora_core::server::Server;
use pingora_core::server::configuration::ServerConf;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session, http_proxy_service};

struct Floor {
    upstream: SocketAddr,
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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, upstream) = match (args.first(), args.get(1)) {
        (Some(l), Some(u)) => (l.clone(), u.parse().expect("UPSTREAM must be IP:PORT")),
        _ => {
            eprintln!("usage: bench-floor LISTEN UPSTREAM [THREADS]");
            std::process::exit(2);
        }
    };
    let threads = args
        .get(2)
        .map_or(1, |t| t.parse().expect("THREADS must be a number"));
    // The same runtime choice as the tandem tiers (one single-threaded runtime per worker), so
    // the comparison is about per-request work, not the scheduler.
    let conf = ServerConf {
        threads,
        work_stealing: false,
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: std::env::temp_dir()
            .join(format!("bench-floor-{}.sock", std::process::id()))
            .to_string_lossy()
            .into_owned(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = http_proxy_service(&server.configuration, Floor { upstream });
    service.add_tcp(&listen);
    server.add_service(service);
    server.run_forever();
}
