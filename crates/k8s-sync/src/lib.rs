//! The one shared watcher of tandem.
//!
//! Data flows one way: a **source** (`source::api`, `source::manifest`) keeps a [`Snapshot`] of
//! typed objects and feeds the **pipeline**, where [`translate`] turns the snapshot plus the
//! tier's settings into an immutable [`Translation`] (routes, endpoints and the problems found),
//! observers (status, Events) see it and a [`ConfigSink`] publishes it to the data path with one
//! atomic swap.
#![forbid(unsafe_code)]

pub mod annotations;
pub mod config;
pub mod events;
pub mod object;
pub mod pipeline;
pub mod problem;
pub mod sorted_vec;
pub mod source;
pub mod status;
pub mod tier;
pub mod translate;

pub use annotations::{CanaryRule, RoutePolicy, UpstreamTls, Verdict};
pub use config::{
    BackendKey, BackendProtocol, Canary, DefaultBackend, EndpointSet, IngressRef, PathMatch,
    ResolvedBackend, Route, RoutingConfig, ServicePortRef, TlsBinding, TlsHostBinding, TlsSecret,
};
pub use object::{Kind, Object, ObjectKey, Snapshot};
pub use pipeline::{ConfigSink, SyncObserver};
pub use problem::{Problem, ProblemReason};
pub use source::api::{ApiOptions, run_api_sync};
pub use source::manifest::{FileProblem, ManifestDir, run_manifest_sync};
pub use tier::Tier;
pub use translate::{Delta, TierSettings, Translation, translate};
