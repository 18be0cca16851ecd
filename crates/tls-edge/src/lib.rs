//! tandem's TLS edge tier: certificates from `kubernetes.io/tls` Secrets chosen by SNI and
//! hot-swapped; routing and proxying are the router crate's.
#![forbid(unsafe_code)]

pub mod cert_store;
pub mod handshake;
pub mod publish;

pub use cert_store::{CertError, CertSet, CertStore, ParsedCert, SniMatch};
pub use handshake::HandshakeObserver;
pub use publish::EdgePublisher;
