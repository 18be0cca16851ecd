//! `bench-floor-mimalloc LISTEN UPSTREAM [THREADS]`: `bench-floor` with the allocator the tiers
//! use (mimalloc), to separate the allocator's share from pingora-proxy's own.
#![forbid(unsafe_code)]

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let Some(args) = bench_floor::Args::from_env("bench-floor-mimalloc") else {
        return std::process::ExitCode::from(2);
    };
    bench_floor::run_floor("bench-floor-mimalloc", args, None)
}
