//! `echo-backend`: a tiny HTTP/1.1 + h2c + WebSocket backend for tandem's examples,
//! tests and benchmarks. Every request is answered with a JSON description of itself.
#![forbid(unsafe_code)]

mod echo;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::body::{Body, Bytes};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts as _, Request, State};
use axum::handler::Handler as _;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, Version, header};
use axum::response::{IntoResponse as _, Response};
use axum::serve::ListenerExt as _;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::echo::{Echo, Hooks, SERVED_BY_HEADER};

/// Largest request body that is read and echoed back.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// How long in-flight requests get to finish after SIGTERM/SIGINT before the process exits.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(800);

const AFTER_HELP: &str = "\
Protocols:
  HTTP/1.1 and cleartext HTTP/2 with prior knowledge (h2c) are served on the same port.
  WebSocket: a request with `Upgrade: websocket` (or an HTTP/2 extended CONNECT with
  :protocol websocket) is upgraded; every text/binary message is echoed back unchanged and
  pings are answered with pongs. On shutdown open sockets get a close frame (1001).

Response:
  Every other request (any method, any path) gets status 200, content-type application/json:
    {\"service\", \"pod\", \"host\" (Host header or :authority), \"path\" (raw path + query as
     received), \"method\", \"proto\" (\"HTTP/1.1\", \"HTTP/2.0\", ...), \"headers\" (lowercase
     name -> values joined with \", \"), \"remote_addr\" (TCP peer ip:port),
     \"body\" (request body as lossy UTF-8, at most 16 MiB)}
  and the header `x-served-by: <service>/<pod>`.

Test hooks (flags, for every request): --delay-ms N, --status NNN.
Test hooks (request headers, overriding the flags):
  x-echo-delay-ms: N    wait N milliseconds before responding (capped at 60000)
  x-echo-status: NNN    respond with status NNN (200-599; other values are ignored)

Signals:
  SIGTERM/SIGINT stop accepting connections, give in-flight requests up to 0.8 s, then exit.

Example:
  echo-backend --listen 127.0.0.1:18081 --service example-service
  curl -s -H 'x-echo-status: 503' http://127.0.0.1:18081/api/example-service/";

/// Answers every HTTP request with JSON describing it, and echoes WebSocket messages.
#[derive(Debug, Parser)]
#[command(name = "echo-backend", version, after_help = AFTER_HELP)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:18080 or [::]:8080 (port 0 picks a free port;
    /// the bound address is printed on stderr).
    #[arg(long, value_name = "ADDR")]
    listen: String,
    /// Service name reported in the JSON body and in `x-served-by`.
    #[arg(long, value_name = "NAME")]
    service: String,
    /// Pod name reported in the JSON body and in `x-served-by` [default: <service>-<pid>].
    #[arg(long, value_name = "NAME")]
    pod: Option<String>,
    /// Delay every response by N milliseconds (a slow backend); `x-echo-delay-ms` overrides it.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    delay_ms: u64,
    /// Answer every request with this status (a failing backend); `x-echo-status` overrides it.
    #[arg(long, value_name = "NNN", default_value_t = 200, value_parser = clap::value_parser!(u16).range(200..=599))]
    status: u16,
}

/// Behaviour of every request unless its test-hook headers say otherwise.
#[derive(Clone, Copy, Debug)]
struct Defaults {
    delay: Duration,
    status: StatusCode,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            status: StatusCode::OK,
        }
    }
}

#[derive(Debug)]
struct AppState {
    service: String,
    pod: String,
    served_by: HeaderValue,
    shutdown: watch::Receiver<bool>,
    defaults: Defaults,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pod = args
        .pod
        .unwrap_or_else(|| format!("{}-{}", args.service, std::process::id()));

    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let defaults = Defaults {
        delay: Duration::from_millis(args.delay_ms),
        status: StatusCode::from_u16(args.status).context("--status")?,
    };
    let mut server = tokio::spawn(serve(
        listener,
        args.service.clone(),
        pod,
        shutdown_rx,
        defaults,
    )?);
    eprintln!("echo-backend {} listening on {local}", args.service);

    tokio::select! {
        joined = &mut server => {
            joined.context("server task failed")??;
            anyhow::bail!("server stopped unexpectedly");
        }
        sig = shutdown_signal() => {
            let sig = sig?;
            eprintln!("echo-backend {} received {sig}, shutting down", args.service);
        }
    }
    shutdown_tx.send_replace(true);
    // Every holder of a shutdown receiver (the server with its in-flight requests, each
    // WebSocket session) drops it when done, so `closed()` means "fully drained". Whatever
    // is still running after the grace period (long x-echo-delay-ms waits) is dropped.
    if tokio::time::timeout(SHUTDOWN_GRACE, shutdown_tx.closed())
        .await
        .is_err()
    {
        eprintln!(
            "echo-backend {}: in-flight requests still running after {SHUTDOWN_GRACE:?}, exiting anyway",
            args.service
        );
    }
    Ok(())
}

/// Builds the server future. It resolves once `shutdown` turns true and every in-flight
/// HTTP request has finished (upgraded WebSockets are not waited for).
fn serve(
    listener: TcpListener,
    service: String,
    pod: String,
    shutdown: watch::Receiver<bool>,
    defaults: Defaults,
) -> anyhow::Result<impl Future<Output = std::io::Result<()>> + Send + 'static> {
    let served_by = HeaderValue::from_str(&format!("{service}/{pod}"))
        .context("--service and --pod must be usable in an HTTP header value")?;
    let state = Arc::new(AppState {
        service,
        pod,
        served_by,
        shutdown: shutdown.clone(),
        defaults,
    });
    let app = handle
        .with_state(state)
        .into_make_service_with_connect_info::<SocketAddr>();
    let listener = listener.tap_io(|tcp| {
        // Best effort: latency matters more than packet count for a test backend.
        let _ = tcp.set_nodelay(true);
    });
    let mut shutdown = shutdown;
    Ok(axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            // An error means the sender is gone, which also means "stop".
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .into_future())
}

/// Resolves with the name of the first SIGTERM or SIGINT received.
async fn shutdown_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// The single handler for every request.
async fn handle(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let (mut parts, body) = req.into_parts();

    let mut response = if wants_websocket(&parts) {
        upgrade_websocket(&state, &mut parts).await
    } else {
        echo_http(&state, &parts, remote, body).await
    };
    response
        .headers_mut()
        .insert(SERVED_BY_HEADER, state.served_by.clone());
    response
}

/// `Upgrade: websocket` on HTTP/1.x, or extended CONNECT with `:protocol websocket` on HTTP/2.
fn wants_websocket(parts: &Parts) -> bool {
    match parts.version {
        Version::HTTP_2 => {
            parts.method == Method::CONNECT
                && parts
                    .extensions
                    .get::<hyper::ext::Protocol>()
                    .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
        }
        _ => parts.headers.get_all(header::UPGRADE).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
            })
        }),
    }
}

async fn upgrade_websocket(state: &AppState, parts: &mut Parts) -> Response {
    match WebSocketUpgrade::from_request_parts(parts, &()).await {
        Ok(ws) => {
            let shutdown = state.shutdown.clone();
            ws.on_upgrade(move |socket| echo_socket(socket, shutdown))
        }
        // An invalid handshake (missing key, wrong version, ...) gets axum's 4xx explanation.
        Err(rejection) => rejection.into_response(),
    }
}

/// Echoes text and binary messages until the peer closes or the server shuts down.
/// Pings are answered by the WebSocket library itself.
async fn echo_socket(mut socket: WebSocket, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                    if socket.send(msg).await.is_err() {
                        return;
                    }
                }
                // Ping/Pong are handled by tungstenite; after a Close the next recv flushes
                // the close reply and then yields None.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_))) => {}
                Some(Err(_)) | None => return,
            },
            // (The watch::Ref is dropped inside the block: it is not Send.)
            () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
                let _ = socket
                    .send(Message::Close(Some(CloseFrame {
                        code: 1001,
                        reason: "echo-backend shutting down".into(),
                    })))
                    .await;
                return;
            }
        }
    }
}

async fn echo_http(
    state: &AppState,
    parts: &Parts,
    remote: Option<SocketAddr>,
    body: Body,
) -> Response {
    let declared_len = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("echo-backend: request body larger than {MAX_BODY_BYTES} bytes\n"),
        );
    }
    let body: Bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(err) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!(
                    "echo-backend: cannot read request body (limit {MAX_BODY_BYTES} bytes): {err}\n"
                ),
            );
        }
    };

    let hooks = Hooks::from_headers(&parts.headers);
    let echo = Echo::new(&state.service, &state.pod, parts, remote, &body);
    let delay = hooks.delay.unwrap_or(state.defaults.delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let status = hooks.status.unwrap_or(state.defaults.status);
    match serde_json::to_vec(&echo) {
        Ok(json) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json,
        )
            .into_response(),
        Err(err) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("echo-backend: cannot serialise response: {err}\n"),
        ),
    }
}

fn plain(status: StatusCode, text: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    async fn start() -> (SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = watch::channel(false);
        let fut = serve(
            listener,
            "svc".into(),
            "svc-0".into(),
            rx,
            Defaults::default(),
        )
        .expect("serve");
        let task = tokio::spawn(async move {
            fut.await.expect("server");
        });
        (addr, tx, task)
    }

    async fn raw_request(addr: SocketAddr, request: &str) -> String {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(request.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out))
            .await
            .expect("server closes the connection")
            .expect("read");
        String::from_utf8(out).expect("utf8")
    }

    fn split(response: &str) -> (&str, serde_json::Value) {
        let (head, body) = response.split_once("\r\n\r\n").expect("head/body");
        (head, serde_json::from_str(body).expect("json body"))
    }

    #[tokio::test]
    async fn http11_request_is_echoed() {
        let (addr, stop, task) = start().await;
        let resp = raw_request(
            addr,
            "POST /api/x%2Fy?a=1&b= HTTP/1.1\r\nHost: example.com\r\nX-Dup: a\r\nX-Dup: b\r\n\
             Content-Length: 5\r\nx-echo-status: 418\r\nConnection: close\r\n\r\nhello",
        )
        .await;
        let (head, json) = split(&resp);
        assert!(head.starts_with("HTTP/1.1 418 "), "{head}");
        let head_lc = head.to_ascii_lowercase();
        assert!(head_lc.contains("x-served-by: svc/svc-0"), "{head}");
        assert!(head_lc.contains("content-type: application/json"), "{head}");
        assert_eq!(json["service"], "svc");
        assert_eq!(json["pod"], "svc-0");
        assert_eq!(json["host"], "example.com");
        assert_eq!(json["path"], "/api/x%2Fy?a=1&b=");
        assert_eq!(json["method"], "POST");
        assert_eq!(json["proto"], "HTTP/1.1");
        assert_eq!(json["headers"]["x-dup"], "a, b");
        assert_eq!(json["body"], "hello");
        let peer: SocketAddr = json["remote_addr"]
            .as_str()
            .expect("remote_addr string")
            .parse()
            .expect("remote_addr is ip:port");
        assert!(peer.ip().is_loopback());

        stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("server stops promptly")
            .expect("server task");
    }

    #[tokio::test]
    async fn delay_hook_delays() {
        let (addr, _stop, _task) = start().await;
        let started = std::time::Instant::now();
        let resp = raw_request(
            addr,
            "GET / HTTP/1.1\r\nHost: h\r\nx-echo-delay-ms: 200\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(resp.starts_with("HTTP/1.1 200 "), "{resp}");
    }

    #[tokio::test]
    async fn bad_websocket_handshake_is_rejected_not_echoed() {
        let (addr, _stop, _task) = start().await;
        let resp = raw_request(
            addr,
            "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade, close\r\nUpgrade: websocket\r\n\r\n",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 400 "), "{resp}");
    }

    #[tokio::test]
    async fn websocket_handshake_switches_protocols() {
        let (addr, _stop, _task) = start().await;
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(
            b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .expect("write");
        let mut buf = vec![0u8; 1024];
        let n = tcp.read(&mut buf).await.expect("read");
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");

        // A masked text frame "hi" comes back unmasked and unchanged.
        let mask = [1u8, 2, 3, 4];
        let payload: Vec<u8> = b"hi"
            .iter()
            .zip(mask.iter().cycle())
            .map(|(b, m)| b ^ m)
            .collect();
        let mut frame = vec![0x81, 0x80 | 2];
        frame.extend_from_slice(&mask);
        frame.extend_from_slice(&payload);
        tcp.write_all(&frame).await.expect("write frame");
        let mut reply = [0u8; 4];
        tcp.read_exact(&mut reply).await.expect("read frame");
        assert_eq!(reply, [0x81, 2, b'h', b'i']);
    }
}
