//! tandem's routing tier: host/path routing from Ingress objects with a legacy fallback.
#![forbid(unsafe_code)]

pub mod admin;
pub mod backend;
pub mod cli;
pub mod forwarded;
pub mod metrics;
pub mod proxy;
pub mod publish;
pub mod request;
pub mod route_table;
pub mod shutdown;
pub mod tier;
pub mod tls_authority;

pub use backend::{Backend, BackendRegistry, Pick};

// Both tier binaries link this crate. The data path allocates small, short-lived buffers per
// request; mimalloc measured faster than the system allocator for this (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
pub use proxy::{InFlight, ProxySettings, RouterProxy};
pub use publish::{Health, RoutePublisher};
pub use route_table::{RouteTable, RouteTarget};
