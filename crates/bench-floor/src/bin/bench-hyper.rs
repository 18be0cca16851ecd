//! `bench-hyper LISTEN UPSTREAM [1]`: the same one-upstream proxy on hyper's HTTP/1.1 server and
//! client connections (one single-threaded tokio runtime, mimalloc), bodies streamed through,
//! upstream connections pooled. A data point for "a well-kept HTTP/1.1 engine instead of
//! pingora-core's" (BENCHMARKS.md, "Below pingora's floor"); not a proxy to run: no timeouts, no
//! header rules, no upgrades.
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Pool = Rc<RefCell<Vec<SendRequest<Incoming>>>>;

#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error("upstream connect: {0}")]
    Connect(#[from] io::Error),
    #[error("upstream: {0}")]
    Http(#[from] hyper::Error),
}

async fn upstream(pool: &Pool, addr: SocketAddr) -> Result<SendRequest<Incoming>, ForwardError> {
    loop {
        let pooled = pool.borrow_mut().pop();
        match pooled {
            Some(sender) if sender.is_ready() => return Ok(sender),
            Some(_) => continue, // closed or busy: dropped
            None => break,
        }
    }
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn forward(
    req: Request<Incoming>,
    pool: Pool,
    addr: SocketAddr,
) -> Result<Response<Incoming>, ForwardError> {
    let mut sender = upstream(&pool, addr).await?;
    let resp = sender.send_request(req).await?;
    // Ready again once this response's body has been read; `upstream` skips it until then.
    pool.borrow_mut().push(sender);
    Ok(resp)
}

fn main() -> std::process::ExitCode {
    let Some(args) = bench_floor::Args::from_env("bench-hyper") else {
        return std::process::ExitCode::from(2);
    };
    let upstream = args.upstream;
    let pool: Pool = Rc::default();
    bench_floor::serve_local("bench-hyper", &args, move |down| {
        let pool = pool.clone();
        let service = service_fn(move |req| forward(req, pool.clone(), upstream));
        async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(down), service)
                .await;
        }
    })
}
