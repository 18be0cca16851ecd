//! Counts completed TLS handshakes by protocol version (pingora calls this after each one).

use std::any::Any;
use std::sync::Arc;

use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use router::metrics::Metrics;

pub struct HandshakeMetrics(pub Arc<Metrics>);

#[async_trait::async_trait]
impl TlsAccept for HandshakeMetrics {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let version = tls.version().unwrap_or("unknown");
        self.0
            .tls_handshakes
            .with_label_values(&["ok", version])
            .inc();
        None
    }
}
