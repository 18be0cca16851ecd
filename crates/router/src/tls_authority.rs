//! What a TLS connection is authoritative for: the SNI the client asked for and the DNS names of
//! the certificate it was given. A TLS listener attaches one to each connection when the
//! handshake completes; a request on that connection for a host the certificate does not cover
//! (HTTP/2 connection reuse across names, or SNI ≠ Host) is answered 421 Misdirected Request
//! (RFC 9110 §15.5.20), so the client retries on a connection of its own.

use std::sync::Arc;

use crate::route_table::normalize_host;

/// Attached to a TLS connection's digest by the listener's handshake callback.
#[derive(Debug)]
pub struct TlsAuthority {
    /// The SNI, lowercased, without trailing dot; `None` when the client sent none.
    pub sni: Option<Box<str>>,
    /// DNS names of the certificate served (lowercase; wildcards as `*.suffix`).
    pub cert_names: Arc<[Box<str>]>,
}

impl TlsAuthority {
    pub fn new(sni: Option<&str>, cert_names: Arc<[Box<str>]>) -> Self {
        Self {
            sni: sni
                .map(|s| normalize_host(s).into_owned().into_boxed_str())
                .filter(|s| !s.is_empty()),
            cert_names,
        }
    }

    /// Whether a request for `authority` (a Host value: port and case ignored) does not belong
    /// on this connection. A connection without SNI, or a request without host, is never
    /// misdirected: there is nothing to compare.
    pub fn is_misdirected(&self, authority: &str) -> bool {
        let Some(sni) = &self.sni else {
            return false;
        };
        let host = normalize_host(authority);
        if host.is_empty() || *host == **sni {
            return false;
        }
        !self.cert_names.iter().any(|name| name_covers(name, &host))
    }
}

/// A certificate name covers a host: equal, or a `*.suffix` wildcard covering exactly one label.
pub fn name_covers(name: &str, host: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => name == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Arc<[Box<str>]> {
        n.iter().map(|s| Box::from(*s)).collect()
    }

    #[test]
    fn misdirected_only_when_host_differs_from_sni_and_is_not_covered() {
        let a = TlsAuthority::new(Some("A.example."), names(&["a.example", "*.shop.example"]));
        assert_eq!(a.sni.as_deref(), Some("a.example"));
        assert!(!a.is_misdirected("a.example:443"));
        assert!(!a.is_misdirected("A.EXAMPLE"));
        assert!(
            !a.is_misdirected("x.shop.example"),
            "covered by the wildcard"
        );
        assert!(a.is_misdirected("b.example"));
        assert!(
            a.is_misdirected("x.y.shop.example"),
            "a wildcard covers one label"
        );
        assert!(!a.is_misdirected(""), "no host: nothing to compare");
        let no_sni = TlsAuthority::new(None, names(&["a.example"]));
        assert!(!no_sni.is_misdirected("b.example"));
        // SNI of a host the edge has no certificate for: the default certificate was served.
        let unknown = TlsAuthority::new(Some("c.example"), names(&["tandem-default.invalid"]));
        assert!(!unknown.is_misdirected("c.example"));
        assert!(unknown.is_misdirected("a.example"));
    }
}
