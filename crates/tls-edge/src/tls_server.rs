//! The edge's TLS server configuration and the listener app that terminates TLS with it.
//!
//! pingora's rustls listener builds its `ServerConfig` itself and offers no way to set session
//! resumption, so the HTTPS listeners are plain TCP listeners whose app ([`TlsTerminator`])
//! runs the handshake with our own `ServerConfig` (through pingora's acceptor, so the
//! handshake-complete callback, the stream type and the digests are pingora's) and then hands
//! the TLS stream to the HTTP proxy app, as pingora's listener would.
//!
//! Resumption, on by default:
//! * stateless session tickets (TLS 1.2 tickets, TLS 1.3 PSK tickets) sealed with keys the
//!   crypto provider's `Ticketer` makes at random and rotates every 6 hours (a ticket stays
//!   valid until the key after next replaces its key: at most 12 hours, the lifetime the
//!   tickets announce). The keys live in this process's memory only: replicas (and a process
//!   after a restart or upgrade) do not share them, so a resumption against another replica
//!   is a full handshake;
//! * a bounded in-memory session cache for stateful resumption (TLS 1.2 session IDs from
//!   clients that do not take tickets; TLS 1.3 when tickets are off).
//!
//! Both take a lock inside rustls (the ticket key set, the cache) once or twice per handshake,
//! never per request. No 0-RTT data is accepted.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::TlsAcceptCallbacks;
use pingora_core::listeners::tls::{Acceptor, TlsSettings};
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, Stream};
use pingora_core::server::ShutdownWatch;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{NoServerSessionStorage, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::version::{TLS12, TLS13};

#[cfg(feature = "aws-lc-rs")]
pub use rustls::crypto::aws_lc_rs as backend;
#[cfg(not(feature = "aws-lc-rs"))]
pub use rustls::crypto::ring as backend;

/// The crypto provider this build uses for handshakes, records, tickets and keys.
pub const PROVIDER_NAME: &str = if cfg!(feature = "aws-lc-rs") {
    "aws-lc-rs"
} else {
    "ring"
};

/// How long a client gets to complete the handshake (what pingora's own TLS listener allows).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// The crypto provider of this build.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(backend::default_provider())
}

/// Makes this build's provider the process default, so that everything else using rustls in
/// the process (pingora's upstream TLS, the API client) uses the same one. Call before any TLS
/// is set up; a later call is a no-op.
pub fn install_default_provider() {
    let _ = backend::default_provider().install_default();
}

/// Session resumption settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resumption {
    /// Issue stateless session tickets (keys rotated in memory).
    pub tickets: bool,
    /// Sessions kept for stateful resumption; 0 keeps none.
    pub cache_size: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("TLS server configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS listener settings: {0}")]
    Pingora(String),
}

/// The server configuration of the HTTPS listeners: TLS 1.2 and 1.3, ALPN h2 then http/1.1,
/// certificates from `resolver`, resumption as `resumption` says.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    resumption: Resumption,
) -> Result<ServerConfig, TlsConfigError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&TLS13, &TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = if resumption.cache_size > 0 {
        ServerSessionMemoryCache::new(resumption.cache_size)
    } else {
        Arc::new(NoServerSessionStorage {})
    };
    if resumption.tickets {
        config.ticketer = backend::Ticketer::new()?;
    }
    if !resumption.tickets && resumption.cache_size == 0 {
        // Nothing to resume with: do not send TLS 1.3 tickets that could never be redeemed.
        config.send_tls13_tickets = 0;
    }
    Ok(config)
}

/// The TLS acceptor of the HTTPS listeners: `config` for the handshake, `callbacks` after it.
pub fn acceptor(
    config: Arc<ServerConfig>,
    callbacks: TlsAcceptCallbacks,
) -> Result<Acceptor, TlsConfigError> {
    // The settings' own config is replaced; they are only the way to attach the callbacks.
    let mut settings = TlsSettings::with_callbacks(callbacks)
        .map_err(|e| TlsConfigError::Pingora(e.to_string()))?;
    settings.set_cert_resolver(config.cert_resolver.clone());
    let mut acceptor = settings.build();
    acceptor.acceptor = config.into();
    Ok(acceptor)
}

/// A listener app that terminates TLS on each accepted TCP connection and serves the TLS
/// stream with `app` (requests on a keep-alive connection included).
pub struct TlsTerminator<A> {
    acceptor: Acceptor,
    app: Arc<A>,
}

impl<A> TlsTerminator<A> {
    pub fn new(acceptor: Acceptor, app: A) -> Self {
        Self {
            acceptor,
            app: Arc::new(app),
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for TlsTerminator<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // The TCP listeners hand over pingora's L4 stream, boxed.
        let any: Box<dyn Any> = stream.into_any();
        let Ok(l4) = any.downcast::<L4Stream>() else {
            tracing::error!("TLS listener got a stream that is not TCP; closed");
            return None;
        };
        let peer = l4.get_socket_digest().and_then(|d| d.peer_addr().cloned());
        let tls =
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.tls_handshake(*l4)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(?peer, error = %e, "TLS handshake failed");
                    return None;
                }
                Err(_) => {
                    tracing::debug!(?peer, "TLS handshake timed out");
                    return None;
                }
            };
        let mut next: Option<Stream> = Some(Box::new(tls));
        while let Some(stream) = next {
            next = self.app.process_new(stream, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert_store::ParsedCert;
    use rustls::server::ClientHello;
    use rustls::sign::CertifiedKey;

    #[derive(Debug)]
    struct One(Arc<CertifiedKey>);

    impl ResolvesServerCert for One {
        fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    fn resolver() -> Arc<dyn ResolvesServerCert> {
        Arc::new(One(ParsedCert::self_signed().unwrap().key))
    }

    #[test]
    fn resumption_is_on_by_default_and_can_be_turned_off() {
        let on = server_config(
            resolver(),
            Resumption {
                tickets: true,
                cache_size: 16,
            },
        )
        .unwrap();
        assert!(on.ticketer.enabled());
        assert!(on.session_storage.can_cache());
        assert_eq!(
            on.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(on.send_tls13_tickets > 0);
        assert_eq!(on.max_early_data_size, 0, "no 0-RTT data");

        let cache_only = server_config(
            resolver(),
            Resumption {
                tickets: false,
                cache_size: 16,
            },
        )
        .unwrap();
        assert!(!cache_only.ticketer.enabled());
        assert!(cache_only.session_storage.can_cache());
        assert!(
            cache_only.send_tls13_tickets > 0,
            "stateful TLS 1.3 resumption"
        );

        let none = server_config(
            resolver(),
            Resumption {
                tickets: false,
                cache_size: 0,
            },
        )
        .unwrap();
        assert!(!none.ticketer.enabled());
        assert!(!none.session_storage.can_cache());
        assert_eq!(none.send_tls13_tickets, 0);
    }

    #[test]
    fn tickets_announce_twelve_hours() {
        let c = server_config(
            resolver(),
            Resumption {
                tickets: true,
                cache_size: 0,
            },
        )
        .unwrap();
        assert_eq!(c.ticketer.lifetime(), 12 * 60 * 60);
    }
}
