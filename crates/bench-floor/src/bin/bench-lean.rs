//! `bench-lean LISTEN UPSTREAM [THREADS]`: the lean-path prototype (`bench_floor::Lean`):
//! HTTP/1.1 proxying on pingora-core's session and pool APIs without pingora-proxy, mimalloc.
#![forbid(unsafe_code)]

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let Some(args) = bench_floor::Args::from_env("bench-lean") else {
        return std::process::ExitCode::from(2);
    };
    bench_floor::run_lean("bench-lean", args);
    std::process::ExitCode::SUCCESS
}
