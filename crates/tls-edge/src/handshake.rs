//! After each TLS handshake (pingora calls this): counts it by protocol version and attaches
//! to the connection what it is authoritative for, so a request for a host its certificate does
//! not cover is answered 421.

use std::any::Any;
use std::sync::Arc;

use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use router::metrics::Metrics;
use router::tls_authority::TlsAuthority;

use crate::cert_store::CertStore;

pub struct HandshakeObserver {
    pub metrics: Arc<Metrics>,
    pub certs: Arc<CertStore>,
}

#[async_trait::async_trait]
impl TlsAccept for HandshakeObserver {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let version = tls.version().unwrap_or("unknown");
        self.metrics
            .tls_handshakes
            .with_label_values(&["ok", version])
            .inc();
        let sni = tls.server_name();
        Some(Arc::new(TlsAuthority::new(sni, self.certs.names_for(sni))))
    }
}
