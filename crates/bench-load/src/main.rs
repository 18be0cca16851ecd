//! A fixed-rate HTTP/1.1 load generator for `bench/`: CONNS keep-alive connections, each on its
//! own thread, send GET requests on a fixed schedule so that all of them together send RATE
//! requests per second for SECONDS seconds (open loop: a slow answer delays only its own
//! connection's next request, and a request sent more than 1 ms after its slot is counted as
//! late, so a proxy that cannot keep up shows as late requests, not as a lower rate). Latency =
//! from writing the request to reading the last byte of the answer, in microseconds.
//!
//! Usage: `bench-load ADDR RATE SECONDS CONNS [HOST] [PATH]`; prints one line of `key=value`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A request sent later than this after its slot is late.
const LATE: Duration = Duration::from_millis(1);

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    late: u64,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        bail!("usage: bench-load ADDR RATE SECONDS CONNS [HOST] [PATH]");
    }
    let addr: SocketAddr = args[0].parse().context("ADDR")?;
    let rate: f64 = args[1].parse().context("RATE")?;
    let seconds: f64 = args[2].parse().context("SECONDS")?;
    let conns: usize = args[3].parse().context("CONNS")?;
    let host = args.get(4).map_or("bench.example", String::as_str);
    let path = args.get(5).map_or("/bench", String::as_str);
    if !(rate > 0.0 && seconds > 0.0 && conns > 0) {
        bail!("RATE, SECONDS and CONNS must be positive");
    }
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: bench-load\r\n\r\n");
    let period = Duration::from_secs_f64(conns as f64 / rate);
    let start = Instant::now() + Duration::from_millis(100);
    let end = start + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..conns)
        .map(|i| {
            let request = request.clone().into_bytes();
            let first = start + Duration::from_secs_f64(i as f64 / rate);
            thread::spawn(move || connection(addr, &request, first, end, period))
        })
        .collect();
    let mut all = Tally::default();
    for w in workers {
        let t = w
            .join()
            .map_err(|_| anyhow::anyhow!("a connection thread panicked"))?;
        all.latencies_us.extend(t.latencies_us);
        all.errors += t.errors;
        all.late += t.late;
    }
    let lat = &mut all.latencies_us;
    lat.sort_unstable();
    let q = |p: f64| -> u32 {
        if lat.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * lat.len() as f64).ceil() as usize;
        lat[rank.clamp(1, lat.len()) - 1]
    };
    println!(
        "requests={} errors={} late={} rate={:.1} seconds={seconds} conns={conns} p50_us={} p90_us={} p99_us={} p999_us={} max_us={}",
        lat.len(),
        all.errors,
        all.late,
        lat.len() as f64 / seconds,
        q(50.0),
        q(90.0),
        q(99.0),
        q(99.9),
        lat.last().copied().unwrap_or(0)
    );
    Ok(())
}

/// One keep-alive connection sending at `first`, `first + period`, … until `end`.
fn connection(
    addr: SocketAddr,
    request: &[u8],
    first: Instant,
    end: Instant,
    period: Duration,
) -> Tally {
    let mut tally = Tally::default();
    let mut stream: Option<TcpStream> = None;
    let mut buf = vec![0u8; 64 * 1024];
    let mut slot = first;
    while slot < end {
        let now = Instant::now();
        if slot > now {
            thread::sleep(slot - now);
        }
        let sent = Instant::now();
        if sent.duration_since(slot) > LATE {
            tally.late += 1;
        }
        slot += period;
        let s = match stream.take() {
            Some(s) => s,
            None => match TcpStream::connect(addr) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    s
                }
                Err(_) => {
                    tally.errors += 1;
                    continue;
                }
            },
        };
        match exchange(&s, request, &mut buf) {
            Ok(status) if (200..400).contains(&status) => {
                let us = sent.elapsed().as_micros();
                tally
                    .latencies_us
                    .push(u32::try_from(us).unwrap_or(u32::MAX));
                stream = Some(s);
            }
            Ok(_) => {
                tally.errors += 1;
                stream = Some(s);
            }
            Err(_) => tally.errors += 1,
        }
    }
    tally
}

/// Writes one request and reads its whole answer (Content-Length or chunked); the status.
fn exchange(mut s: &TcpStream, request: &[u8], buf: &mut [u8]) -> std::io::Result<u16> {
    s.write_all(request)?;
    let mut have = 0;
    let head_end = loop {
        let n = s.read(&mut buf[have..])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        have += n;
        if let Some(i) = find(&buf[..have], b"\r\n\r\n") {
            break i + 4;
        }
        if have == buf.len() {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    };
    let head = &buf[..head_end];
    let status = head
        .get(9..12)
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    if let Some(len) = header(&text, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        let mut left = (head_end + len).saturating_sub(have);
        while left > 0 {
            let cap = left.min(buf.len());
            let n = s.read(&mut buf[..cap])?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            left -= n;
        }
    } else if header(&text, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        // Small bodies only: read until the last chunk's terminator.
        let mut tail: Vec<u8> = buf[head_end..have].to_vec();
        while !tail.ends_with(b"0\r\n\r\n") {
            let n = s.read(buf)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            tail.extend_from_slice(&buf[..n]);
        }
    }
    Ok(status)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A header's value in a lowercased head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A loopback server answering each request with a fixed response, for the parser.
    fn serve(response: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(response).is_err() {
                    break;
                }
            }
        });
        addr
    }

    #[test]
    fn reads_content_length_and_chunked_answers_on_one_connection() {
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut buf = vec![0u8; 1024];
        let a = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        let s = TcpStream::connect(a).unwrap();
        for _ in 0..3 {
            assert_eq!(exchange(&s, req, &mut buf).unwrap(), 200);
        }
        let b = serve(b"HTTP/1.1 503 x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n");
        let s = TcpStream::connect(b).unwrap();
        for _ in 0..2 {
            assert_eq!(exchange(&s, req, &mut buf).unwrap(), 503);
        }
    }

    #[test]
    fn sends_at_the_rate_asked() {
        let a = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let start = Instant::now();
        // 200 requests per second for 0.5 s on one connection: 100 requests.
        let t = connection(
            a,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            start,
            start + Duration::from_millis(500),
            Duration::from_millis(5),
        );
        assert_eq!(t.latencies_us.len(), 100);
        assert_eq!(t.errors, 0);
    }
}
