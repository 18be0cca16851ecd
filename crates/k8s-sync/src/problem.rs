//! Problems found while translating: the object, a reason category (a fixed set, usable as a
//! metric label) and a human-readable detail.

use std::fmt;

/// Why an object, or part of one, was not used as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProblemReason {
    InvalidHost,
    InvalidPath,
    InvalidPathType,
    InvalidBackend,
    ResourceBackend,
    PathConflict,
    DefaultBackendConflict,
    ServiceNotFound,
    ServicePortNotFound,
    UnsupportedService,
    DuplicateObject,
    SecretNotFound,
    SecretInvalid,
    CrossNamespaceSecret,
    CertificateInvalid,
    CertificateExpired,
    ClassControllerMismatch,
    UnsupportedAppProtocol,
    InvalidAnnotation,
    /// A canary Ingress rule with no main route of the same host, path and pathType.
    CanaryWithoutMain,
    /// A second canary for a route that has one (the oldest canary wins).
    CanaryConflict,
    /// A manifest file (kind `ManifestFile`, name = its path) or a directory entry that could
    /// not be read; the file's last good objects stay in force.
    ManifestRejected,
    /// Every ready endpoint of a Service port has weight 0 (then all are weighted 1).
    AllWeightsZero,
}

impl ProblemReason {
    /// Stable snake_case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidHost => "invalid_host",
            Self::InvalidPath => "invalid_path",
            Self::InvalidPathType => "invalid_path_type",
            Self::InvalidBackend => "invalid_backend",
            Self::ResourceBackend => "resource_backend",
            Self::PathConflict => "path_conflict",
            Self::DefaultBackendConflict => "default_backend_conflict",
            Self::ServiceNotFound => "service_not_found",
            Self::ServicePortNotFound => "service_port_not_found",
            Self::UnsupportedService => "unsupported_service",
            Self::DuplicateObject => "duplicate_object",
            Self::SecretNotFound => "secret_not_found",
            Self::SecretInvalid => "secret_invalid",
            Self::CrossNamespaceSecret => "cross_namespace_secret",
            Self::CertificateInvalid => "certificate_invalid",
            Self::CertificateExpired => "certificate_expired",
            Self::ClassControllerMismatch => "class_controller_mismatch",
            Self::UnsupportedAppProtocol => "unsupported_app_protocol",
            Self::InvalidAnnotation => "invalid_annotation",
            Self::CanaryWithoutMain => "canary_without_main",
            Self::CanaryConflict => "canary_conflict",
            Self::ManifestRejected => "manifest_rejected",
            Self::AllWeightsZero => "all_weights_zero",
        }
    }
}

/// One problem with one object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Problem {
    /// Object kind, e.g. `Ingress`.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub reason: ProblemReason,
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{}: {}: {}",
            self.kind,
            self.namespace,
            self.name,
            self.reason.as_str(),
            self.detail
        )
    }
}
