//! `bench-floor LISTEN UPSTREAM [THREADS]`: the benchmark floor. A pingora proxy that sends
//! every request, unchanged, to one fixed HTTP/1.1 upstream over pingora's connection pool: no
//! routing, no header rewriting, no logging, no metrics, system allocator. Whatever tandem's
//! router costs above this per request is ours (bench/cpu.sh). SIGINT stops it at once.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    let Some(args) = bench_floor::Args::from_env("bench-floor") else {
        return std::process::ExitCode::from(2);
    };
    bench_floor::run_floor("bench-floor", args, None)
}
