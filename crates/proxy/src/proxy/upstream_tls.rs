//! TLS to backends (`backend-protocol: HTTPS | GRPCS`): SNI, verification and ALPN of the
//! upstream peer, from the route's [`UpstreamTls`] settings.
//!
//! pingora's rustls connector builds its certificate verifier from a trust store even when
//! verification is skipped, and fails when that store is empty — which it is in an image with
//! no system CA bundle. An unverified connection therefore carries a placeholder trust anchor
//! (a self-signed certificate whose key was discarded when it was made): it lets the verifier
//! be built and trusts nothing, since verification is off for that peer anyway. A verified
//! connection uses the trust store tandem started with (the system's, or `SSL_CERT_FILE`).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use pingora_core::protocols::ALPN;
use pingora_core::protocols::tls::CaType;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::utils::tls::WrappedX509;
use x509_parser::prelude::{FromDer, X509Certificate};

use k8s_sync::UpstreamTls;

use crate::host_map::normalize_host;

/// DER of the placeholder trust anchor (see the module documentation).
const PLACEHOLDER_ANCHOR: &[u8] = include_bytes!("placeholder_anchor.der");

fn placeholder_anchor() -> Option<Arc<CaType>> {
    static ANCHOR: OnceLock<Option<Arc<CaType>>> = OnceLock::new();
    ANCHOR
        .get_or_init(|| {
            let cert =
                WrappedX509::try_new(PLACEHOLDER_ANCHOR.to_vec(), |raw| x509_der(raw)).ok()?;
            Some(Arc::from(vec![cert]))
        })
        .clone()
}

fn x509_der(raw: &[u8]) -> Result<X509Certificate<'_>, ()> {
    X509Certificate::from_der(raw)
        .map(|(_, c)| c)
        .map_err(|_| ())
}

/// The name sent as SNI (and verified): `proxy-ssl-name`, else the `Host` sent upstream. When
/// no SNI is wanted, the endpoint's IP address: rustls never sends an address as SNI.
pub(crate) fn server_name(
    tls: &UpstreamTls,
    upstream_host: Option<&str>,
    authority: &str,
    addr: SocketAddr,
) -> String {
    if !tls.sends_sni() {
        return addr.ip().to_string();
    }
    match &tls.name {
        Some(name) => name.clone(),
        None => normalize_host(upstream_host.unwrap_or(authority)).into_owned(),
    }
}

/// A TLS peer for an endpoint. `h2`: HTTP/2 only (ALPN `h2`, GRPCS); else HTTP/1.1.
pub(crate) fn peer(addr: SocketAddr, sni: String, tls: &UpstreamTls, h2: bool) -> HttpPeer {
    let mut peer = HttpPeer::new(addr, true, sni);
    let o = &mut peer.options;
    o.verify_cert = tls.verify;
    o.verify_hostname = tls.verify;
    if !tls.verify {
        o.ca = placeholder_anchor();
    }
    o.alpn = if h2 { ALPN::H2 } else { ALPN::H1 };
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_anchor_parses() {
        let a = placeholder_anchor().expect("the embedded certificate parses");
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn sni_choice() {
        let addr: SocketAddr = "10.1.2.3:8443".parse().unwrap();
        let off = UpstreamTls::default();
        assert_eq!(server_name(&off, None, "app.example:80", addr), "10.1.2.3");
        let on = UpstreamTls {
            server_name: true,
            ..Default::default()
        };
        assert_eq!(
            server_name(&on, None, "App.Example:80", addr),
            "app.example"
        );
        assert_eq!(
            server_name(&on, Some("vhost.example"), "app.example", addr),
            "vhost.example"
        );
        let named = UpstreamTls {
            name: Some("backend.internal".into()),
            verify: true,
            ..Default::default()
        };
        assert_eq!(
            server_name(&named, None, "app.example", addr),
            "backend.internal"
        );
        let p = peer(addr, "x".into(), &named, true);
        assert!(p.options.verify_cert && p.options.ca.is_none());
        let p = peer(addr, "x".into(), &off, false);
        assert!(!p.options.verify_cert && p.options.ca.is_some());
    }
}
