//! `CertStore`: a rustls certificate resolver over an atomically swapped [`CertSet`]. All PEM
//! parsing and key loading happens when a set is built (in the watcher); a handshake does one
//! `load()` and a hash lookup.

use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus::IntCounter;
use proxy::metrics::Metrics;
use proxy::{HostMap, HostMatch, normalize_host};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a Secret's certificate could not be used. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("tls.crt holds no PEM certificate")]
    NoCertificate,
    #[error("tls.crt is not valid PEM: {0}")]
    CertificatePem(String),
    #[error("tls.key holds no PEM private key (PKCS#1, PKCS#8 or SEC1)")]
    NoKey,
    #[error("tls.key is of an unsupported key type: {0}")]
    UnsupportedKey(String),
    #[error("tls.key does not match the certificate in tls.crt")]
    KeyMismatch,
    #[error("certificate cannot be parsed: {0}")]
    Certificate(String),
}

/// A certificate chain with its key, ready to serve, its validity period and the DNS names it
/// is valid for.
#[derive(Debug)]
pub struct ParsedCert {
    pub key: Arc<CertifiedKey>,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// DNS names of the leaf (subjectAltName, else the common name), lowercase.
    pub names: Arc<[Box<str>]>,
    /// The Secret it came from (`None`: made or loaded by tandem itself).
    pub secret: Option<k8s_sync::ObjectKey>,
}

impl ParsedCert {
    /// Parses PEM material as found in a `kubernetes.io/tls` Secret.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, CertError> {
        let certs = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertError::CertificatePem(e.to_string()))?;
        let Some(leaf) = certs.first() else {
            return Err(CertError::NoCertificate);
        };
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| CertError::Certificate(e.to_string()))?;
        let validity = parsed.validity();
        let (not_before, not_after) = (
            validity.not_before.timestamp(),
            validity.not_after.timestamp(),
        );
        let mut names: Vec<Box<str>> = match parsed.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        Some(d.to_ascii_lowercase().into_boxed_str())
                    }
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        if names.is_empty() {
            names.extend(
                parsed
                    .subject()
                    .iter_common_name()
                    .filter_map(|cn| cn.as_str().ok())
                    .map(|cn| cn.to_ascii_lowercase().into_boxed_str()),
            );
        }
        // Any PEM key form rustls knows: PKCS#1 RSA, PKCS#8, SEC1 EC.
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| CertError::NoKey)?;
        let signing = crate::tls_server::backend::sign::any_supported_type(&key)
            .map_err(|e| CertError::UnsupportedKey(e.to_string()))?;
        let certified = CertifiedKey::new(certs, signing);
        match certified.keys_match() {
            Ok(()) => {}
            // rustls cannot tell for some key types; the handshake would fail loudly then.
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(_) => return Err(CertError::KeyMismatch),
        }
        Ok(Self {
            key: Arc::new(certified),
            not_before,
            not_after,
            names: names.into(),
            secret: None,
        })
    }

    /// A self-signed certificate for when no default is configured, like other controllers'
    /// "fake certificate".
    pub fn self_signed() -> Result<Self, CertError> {
        let cert = rcgen::generate_simple_self_signed(vec!["tandem-default.invalid".to_owned()])
            .map_err(|e| CertError::Certificate(e.to_string()))?;
        Self::from_pem(
            cert.cert.pem().as_bytes(),
            cert.signing_key.serialize_pem().as_bytes(),
        )
    }

    /// Whether `now` (unix seconds) lies outside the validity period.
    pub fn is_out_of_validity(&self, now: i64) -> bool {
        now < self.not_before || now > self.not_after
    }
}

/// Which certificate serves which SNI: exact host, then a one-label wildcard, then the default.
/// Persistent: a clone shares every host with the original.
#[derive(Clone, Debug)]
pub struct CertSet {
    hosts: HostMap<Arc<ParsedCert>>,
    default: Arc<ParsedCert>,
}

impl CertSet {
    pub fn new(default: Arc<ParsedCert>) -> Self {
        Self {
            hosts: HostMap::default(),
            default,
        }
    }

    /// Adds a host (lowercase; `*.suffix` for a wildcard). The first certificate added for a
    /// host stays.
    pub fn insert(&mut self, host: &str, cert: Arc<ParsedCert>) {
        self.hosts.insert_first(host, cert);
    }

    /// Sets (or with `None` removes) a host's certificate.
    pub fn set(&mut self, host: &str, cert: Option<Arc<ParsedCert>>) {
        self.hosts.set(host, cert);
    }

    /// The certificate served when no host matches.
    pub fn set_default(&mut self, default: Arc<ParsedCert>) {
        self.default = default;
    }

    /// Every host with its certificate (`*.suffix` for a wildcard).
    pub fn hosts(&self) -> impl Iterator<Item = (std::borrow::Cow<'_, str>, &Arc<ParsedCert>)> {
        self.hosts.entries()
    }

    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// The certificate for an SNI name; the default when there is none or nothing matches.
    pub fn select(&self, sni: Option<&str>) -> &Arc<ParsedCert> {
        self.select_with_kind(sni).0
    }

    /// The certificate and how it was chosen: `exact`, `wildcard` or `default`. The SNI is
    /// compared like a Host header: case-insensitively and without a trailing dot.
    pub fn select_with_kind(&self, sni: Option<&str>) -> (&Arc<ParsedCert>, SniMatch) {
        let found = sni.map(normalize_host).and_then(|sni| self.hosts.get(&sni));
        match found {
            Some((cert, HostMatch::Exact)) => (cert, SniMatch::Exact),
            Some((cert, HostMatch::Wildcard)) => (cert, SniMatch::Wildcard),
            None => (&self.default, SniMatch::Default),
        }
    }
}

/// How a certificate was chosen for a ClientHello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SniMatch {
    Exact,
    Wildcard,
    Default,
}

/// The resolver handed to the TLS listener.
#[derive(Debug)]
pub struct CertStore {
    set: ArcSwap<CertSet>,
    /// ClientHello counters by [SniMatch] × ALPN offered (h2, http1), resolved once.
    hellos: [[IntCounter; 2]; 3],
}

impl CertStore {
    pub fn new(initial: CertSet, metrics: &Metrics) -> Self {
        let c = |cert: &str, alpn: &str| metrics.tls_client_hellos.with_label_values(&[cert, alpn]);
        Self {
            set: ArcSwap::from_pointee(initial),
            hellos: [
                [c("exact", "h2"), c("exact", "http1")],
                [c("wildcard", "h2"), c("wildcard", "http1")],
                [c("default", "h2"), c("default", "http1")],
            ],
        }
    }

    /// The set published now.
    pub fn current(&self) -> Arc<CertSet> {
        self.set.load_full()
    }

    /// Publishes a new set; handshakes from now on use it, established connections are untouched.
    pub fn publish(&self, set: CertSet) {
        self.set.store(Arc::new(set));
    }

    /// The DNS names of the certificate an SNI gets now.
    pub fn names_for(&self, sni: Option<&str>) -> Arc<[Box<str>]> {
        self.set.load().select(sni).names.clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.set.load();
        let (cert, how) = set.select_with_kind(hello.server_name());
        let h2 = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == b"h2"));
        self.hellos[how as usize][usize::from(!h2)].inc();
        Some(cert.key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_pair(names: &[&str]) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    #[test]
    fn parses_pem_and_rejects_bad_material() {
        let (cert, key) = pem_pair(&["a.example"]);
        let p = ParsedCert::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        assert!(p.not_after > p.not_before);
        assert!(matches!(
            ParsedCert::from_pem(b"garbage", key.as_bytes()),
            Err(CertError::NoCertificate)
        ));
        assert!(matches!(
            ParsedCert::from_pem(cert.as_bytes(), b"garbage"),
            Err(CertError::NoKey)
        ));
        let (_, other_key) = pem_pair(&["b.example"]);
        assert!(matches!(
            ParsedCert::from_pem(cert.as_bytes(), other_key.as_bytes()),
            Err(CertError::KeyMismatch)
        ));
        // Errors never echo key material.
        let err = ParsedCert::from_pem(
            cert.as_bytes(),
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("AAAA"), "{err}");
    }

    #[test]
    fn resolver_counts_hellos_by_match_kind() {
        let m = Metrics::new(k8s_sync::Tier::Router);
        let (c, k) = pem_pair(&["default"]);
        let cert = Arc::new(ParsedCert::from_pem(c.as_bytes(), k.as_bytes()).unwrap());
        let store = CertStore::new(CertSet::new(cert), &m);
        store.hellos[SniMatch::Default as usize][1].inc();
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(text.contains(r#"tandem_tls_client_hellos_total{alpn="http1",certificate="default",tier="router"} 1"#), "{text}");
    }

    #[test]
    fn selects_exact_then_wildcard_then_default() {
        let key = |n: &str| {
            let (c, k) = pem_pair(&[n]);
            Arc::new(ParsedCert::from_pem(c.as_bytes(), k.as_bytes()).unwrap())
        };
        let (exact, wild, default) = (key("a.example"), key("*.example"), key("default"));
        let mut set = CertSet::new(default.clone());
        set.insert("a.example", exact.clone());
        set.insert("*.example", wild.clone());
        assert!(Arc::ptr_eq(set.select(Some("A.Example")), &exact));
        assert!(Arc::ptr_eq(set.select(Some("b.example")), &wild));
        assert!(Arc::ptr_eq(set.select(Some("c.b.example")), &default));
        assert!(Arc::ptr_eq(set.select(None), &default));
        assert!(
            Arc::ptr_eq(set.select(Some("a.example.")), &exact),
            "a trailing dot names the same host"
        );
        assert_eq!(&*exact.names, &[Box::from("a.example")]);
        assert_eq!(set.host_count(), 2);
    }
}
