//! Which tier a process is: the TLS edge or the router. The tier decides defaults (IngressClass,
//! controller name, upstream protocol) and whether Secrets are read at all.

use std::fmt;

/// One of tandem's two tiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Routes by host and path; never reads Secrets.
    Router,
    /// Terminates TLS with certificates from Secrets and forwards, normally to the router.
    TlsEdge,
}

impl Tier {
    /// The binary's name, also the `tier` label of every metric and log line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Router => "router",
            Self::TlsEdge => "tls-edge",
        }
    }

    /// The IngressClass served unless `--ingress-class` says otherwise.
    pub const fn default_class(self) -> &'static str {
        match self {
            Self::Router => "tandem-router",
            Self::TlsEdge => "tandem-edge",
        }
    }

    /// The `spec.controller` an IngressClass must name for this tier to serve it, unless
    /// `--controller-class` says otherwise.
    pub const fn default_controller(self) -> &'static str {
        match self {
            Self::Router => "tandem.dev/router",
            Self::TlsEdge => "tandem.dev/tls-edge",
        }
    }

    /// Whether this tier terminates TLS, and so reads `kubernetes.io/tls` Secrets.
    pub const fn reads_secrets(self) -> bool {
        matches!(self, Self::TlsEdge)
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
