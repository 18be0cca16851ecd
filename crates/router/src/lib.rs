//! tandem's routing tier: host/path routing from Ingress objects with a legacy fallback.
#![forbid(unsafe_code)]

pub mod admin;
pub mod backend;
pub mod cli;
pub mod forwarded;
pub mod metrics;
pub mod proxy;
pub mod publish;
pub mod route_table;
pub mod shutdown;
pub mod tier;

pub use backend::{Backend, BackendRegistry, Pick};
pub use proxy::{InFlight, ProxySettings, RouterProxy};
pub use publish::{Health, RoutePublisher};
pub use route_table::{RouteTable, RouteTarget};
