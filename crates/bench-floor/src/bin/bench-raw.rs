//! `bench-raw LISTEN UPSTREAM [1]`: a lower bound, not a proxy anyone should run. One
//! single-threaded tokio runtime, `httparse`, and nothing else: a request header is parsed and
//! forwarded byte for byte over a pooled upstream connection, the answer (which must carry a
//! Content-Length) copied back. Requests with a body, chunked answers, upgrades, timeouts and
//! every header rule are out of scope (501 or closed connection). It shows what any tokio-based
//! HTTP/1.1 proxy pays on this machine before doing anything a proxy must do.
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Pool = Rc<RefCell<Vec<TcpStream>>>;

/// Length of the request head in `buf` once complete; `Err` for what this bound does not do.
fn request_head(buf: &[u8]) -> Result<Option<usize>, &'static [u8]> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            let has_body = req.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("transfer-encoding")
                    || (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
            });
            if has_body {
                Err(b"HTTP/1.1 501 Not Implemented\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            } else {
                Ok(Some(n))
            }
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => {
            Err(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        }
    }
}

/// Length of the whole response (head + Content-Length body) once its head is complete.
fn response_len(buf: &[u8]) -> io::Result<Option<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            let len = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .ok_or_else(|| bad("response without Content-Length"))?;
            Ok(Some(n + len))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(bad(&e.to_string())),
    }
}

async fn connection(mut down: TcpStream, upstream: SocketAddr, pool: Pool) -> io::Result<()> {
    let mut req = BytesMut::with_capacity(4096);
    let mut resp = BytesMut::with_capacity(4096);
    loop {
        let head = loop {
            match request_head(&req) {
                Ok(Some(n)) => break n,
                Ok(None) => {}
                Err(answer) => return down.write_all(answer).await,
            }
            if down.read_buf(&mut req).await? == 0 {
                return Ok(());
            }
        };
        let pooled = pool.borrow_mut().pop();
        let mut up = match pooled {
            Some(up) => up,
            None => {
                let up = TcpStream::connect(upstream).await?;
                up.set_nodelay(true)?;
                up
            }
        };
        up.write_all(&req[..head]).await?;
        req.advance(head);
        resp.clear();
        let total = loop {
            if up.read_buf(&mut resp).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if let Some(total) = response_len(&resp)? {
                break total;
            }
        };
        while resp.len() < total {
            if up.read_buf(&mut resp).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        down.write_all(&resp[..total]).await?;
        pool.borrow_mut().push(up);
    }
}

fn main() -> std::process::ExitCode {
    let Some(args) = bench_floor::Args::from_env("bench-raw") else {
        return std::process::ExitCode::from(2);
    };
    let upstream = args.upstream;
    let pool: Pool = Rc::default();
    bench_floor::serve_local("bench-raw", &args, move |down| {
        let pool = pool.clone();
        async move {
            let _ = connection(down, upstream, pool).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_head_is_complete_only_at_the_blank_line() {
        let req = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\nGET /next";
        assert_eq!(request_head(&req[..20]), Ok(None));
        assert_eq!(request_head(req), Ok(Some(28)));
    }

    #[test]
    fn requests_with_a_body_or_garbage_are_refused() {
        let post = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
        assert!(request_head(post).unwrap_err().starts_with(b"HTTP/1.1 501"));
        let chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(
            request_head(chunked)
                .unwrap_err()
                .starts_with(b"HTTP/1.1 501")
        );
        let empty = b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(request_head(empty), Ok(Some(empty.len())));
        assert!(
            request_head(b"\x00\x01 nonsense\r\n\r\n")
                .unwrap_err()
                .starts_with(b"HTTP/1.1 400")
        );
    }

    #[test]
    fn response_length_is_head_plus_content_length() {
        let resp = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(response_len(&resp[..10]).unwrap(), None);
        assert_eq!(response_len(resp).unwrap(), Some(resp.len()));
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(response_len(chunked).is_err());
    }
}
