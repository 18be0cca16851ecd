//! tandem's data path, shared by both tiers: a request is a fixed sequence of pingora phases
//! (`proxy`), each calling a small module — request checks and normalisation (`request`), the
//! tier's policy hook (`policy`), the route table (`route_table`, over `host_map`), endpoint
//! choice (`backend`), forwarded headers (`forwarded`), TLS authority (`tls_authority`) — and
//! the publication of translated config into it (`publish`). Metrics live in `metrics`.
#![forbid(unsafe_code)]

pub mod backend;
pub mod balance;
pub mod forwarded;
pub mod health;
pub mod host_map;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod publish;
pub mod request;
pub mod route_policy;
pub mod route_table;
pub mod same_site;
pub mod tls_authority;

pub use backend::{Backend, BackendRegistry, Pick};
pub use host_map::{HostMap, HostMatch, normalize_host};
pub use policy::{LocalAnswer, NoPolicy, PolicyRequest, TierPolicy};
pub use proxy::{InFlight, Proxy, ProxySettings, access_log};
pub use publish::{Health, RoutePublisher};
pub use route_table::{RouteTable, RouteTarget};
