//! `bench-floor-ingress LISTEN UPSTREAM [THREADS]`: the pingora-proxy floor (with the tiers'
//! allocator) plus the per-request work no ingress-nginx-compatible proxy can skip — a lower
//! bound for the router on pingora-proxy (see `bench_floor::IngressFloor`).
#![forbid(unsafe_code)]

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let Some(args) = bench_floor::Args::from_env("bench-floor-ingress") else {
        return std::process::ExitCode::from(2);
    };
    bench_floor::run_ingress_floor("bench-floor-ingress", args)
}
