//! tandem's TLS edge tier: certificates from `kubernetes.io/tls` Secrets chosen by SNI and
//! hot-swapped; routing and proxying are the router crate's.
#![forbid(unsafe_code)]

pub mod cert_store;
pub mod expiry;
pub mod handshake;
pub mod policy;
pub mod publish;
pub mod tls_server;

pub use cert_store::{CertError, CertSet, CertStore, ParsedCert, SniMatch};
pub use expiry::CertificateExpiry;
pub use handshake::HandshakeObserver;
pub use policy::{HttpsRedirect, TlsListener};
pub use publish::EdgePublisher;
