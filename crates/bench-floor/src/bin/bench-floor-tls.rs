//! `bench-floor-tls TLS_LISTEN PLAIN_LISTEN UPSTREAM CERT KEY`: the pingora-proxy floor (with
//! the tiers' allocator, one worker) behind pingora's own rustls listener with its defaults, and
//! the same on a plain listener — a lower bound for a new TLS connection and a TLS keep-alive
//! request on pingora (bench/tls.sh).
#![forbid(unsafe_code)]

use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [tls, plain, upstream, cert, key] = args.as_slice() else {
        eprintln!("usage: bench-floor-tls TLS_LISTEN PLAIN_LISTEN UPSTREAM CERT KEY");
        return ExitCode::from(2);
    };
    let Ok(upstream) = upstream.parse() else {
        eprintln!("bench-floor-tls: UPSTREAM must be an address such as 127.0.0.1:8080");
        return ExitCode::from(2);
    };
    let floor = bench_floor::Args {
        listen: plain.clone(),
        upstream,
        threads: 1,
    };
    let tls = bench_floor::TlsListen {
        addr: tls,
        cert,
        key,
    };
    bench_floor::run_floor("bench-floor-tls", floor, Some(tls))
}
