//! The one shared watcher of tandem.
//!
//! Data flows one way: a **source** (manifest directory today, the Kubernetes API later) keeps a
//! [`Snapshot`] of typed objects; [`translate`] turns a snapshot plus the tier's settings into an
//! immutable [`Translation`] (routes, endpoints and the problems found); a [`ConfigSink`] publishes
//! it to the data path with one atomic swap.
#![forbid(unsafe_code)]

pub mod annotations;
pub mod api;
pub mod config;
pub mod events;
mod flow_depth;
pub mod manifest;
pub mod object;
pub mod problem;
pub mod status;
pub mod sync;
pub mod tier;
pub mod translate;

pub use annotations::RoutePolicy;
pub use api::{ApiOptions, SyncObserver, run_api_sync};
pub use config::{
    BackendKey, BackendProtocol, DefaultBackend, EndpointSet, IngressRef, PathMatch,
    ResolvedBackend, Route, RoutingConfig, ServicePortRef, TlsBinding, TlsSecret,
};
pub use manifest::{FileProblem, ManifestDir};
pub use object::{Kind, Object, ObjectKey, Snapshot};
pub use problem::{Problem, ProblemReason};
pub use sync::{ConfigSink, run_manifest_sync};
pub use tier::Tier;
pub use translate::{TierSettings, Translation, translate};
