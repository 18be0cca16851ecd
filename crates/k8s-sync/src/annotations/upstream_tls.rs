//! TLS to the backend: `backend-protocol: HTTPS | GRPCS` and the `proxy-ssl-*` annotations
//! (ingress-nginx's meaning, with the differences documented in docs/annotations.md).

use super::Reader;

/// How a route's TLS connections to its backend are made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    /// `proxy-ssl-name`: the name sent as SNI and verified; `None`: the `Host` sent upstream.
    pub name: Option<String>,
    /// `proxy-ssl-server-name: on`: send SNI (always sent when `verify` is on).
    pub server_name: bool,
    /// `proxy-ssl-verify: on`: verify the backend's certificate chain and name against the
    /// trust store tandem was started with (off by default, as in ingress-nginx).
    pub verify: bool,
}

impl UpstreamTls {
    /// Whether the handshake names the server (SNI): needed to verify its name.
    pub fn sends_sni(&self) -> bool {
        self.server_name || self.verify
    }
}

/// `proxy-ssl-*` settings tandem does not take; set, they are reported and ignored.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "proxy-ssl-secret",
        "the router reads no Secrets; to verify backends, give tandem a CA bundle (SSL_CERT_FILE) and set proxy-ssl-verify: \"on\"; client certificates are not supported",
    ),
    (
        "proxy-ssl-verify-depth",
        "the chain is verified to a trusted root whatever its depth",
    ),
    ("proxy-ssl-ciphers", "rustls' safe defaults are used"),
    ("proxy-ssl-protocols", "TLS 1.2 and 1.3 are used"),
];

/// Reads the `proxy-ssl-*` annotations. `tls`: whether `backend-protocol` asks for TLS; when it
/// does not, set `proxy-ssl-*` annotations are reported as having no effect.
pub(super) fn parse(a: &Reader<'_>, tls: bool) -> Option<UpstreamTls> {
    for (name, why) in UNSUPPORTED {
        if a.has(name) {
            a.problems
                .borrow_mut()
                .push(format!("{name} is not supported ({why}); ignored"));
        }
    }
    if !tls {
        let set: Vec<&str> = [
            "proxy-ssl-name",
            "proxy-ssl-server-name",
            "proxy-ssl-verify",
        ]
        .into_iter()
        .filter(|n| a.has(n))
        .collect();
        if !set.is_empty() {
            a.problems.borrow_mut().push(format!(
                "{} set without backend-protocol HTTPS or GRPCS; no effect",
                set.join(", ")
            ));
        }
        return None;
    }
    Some(UpstreamTls {
        name: a.get("proxy-ssl-name", parse_server_name),
        server_name: a
            .get("proxy-ssl-server-name", parse_on_off)
            .unwrap_or(false),
        verify: a.get("proxy-ssl-verify", parse_on_off).unwrap_or(false),
    })
}

fn parse_on_off(v: &str) -> Result<bool, String> {
    match v {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{v:?} is not \"on\" or \"off\"")),
    }
}

/// A DNS name (no port, no wildcard): what SNI and certificate names hold.
fn parse_server_name(v: &str) -> Result<String, String> {
    let lower = v.to_ascii_lowercase();
    let ok = !lower.is_empty()
        && lower.len() <= 253
        && lower.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(lower)
    } else {
        Err(format!("{v:?} is not a DNS name"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::annotations::{NGINX_PREFIX, parse as parse_all};
    use crate::config::BackendProtocol;

    fn parsed(
        pairs: &[(&str, &str)],
    ) -> (Option<UpstreamTls>, Option<BackendProtocol>, Vec<String>) {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (format!("{NGINX_PREFIX}{k}"), (*v).to_owned()))
            .collect();
        let a = parse_all(Some(&map));
        let p = a.policy.as_deref().cloned().unwrap_or_default();
        (p.upstream_tls, p.backend_protocol, a.problems)
    }

    #[test]
    fn https_and_grpcs_default_to_no_sni_no_verify() {
        for (v, want) in [
            ("HTTPS", BackendProtocol::Https),
            ("https", BackendProtocol::Https),
            ("GRPCS", BackendProtocol::Grpcs),
        ] {
            let (tls, proto, problems) = parsed(&[("backend-protocol", v)]);
            assert!(problems.is_empty(), "{problems:?}");
            assert_eq!(proto, Some(want));
            let tls = tls.unwrap();
            assert_eq!(tls, UpstreamTls::default());
            assert!(!tls.sends_sni());
        }
    }

    #[test]
    fn name_server_name_verify() {
        let (tls, _, problems) = parsed(&[
            ("backend-protocol", "HTTPS"),
            ("proxy-ssl-name", "Backend.Example"),
            ("proxy-ssl-server-name", "on"),
            ("proxy-ssl-verify", "off"),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        let tls = tls.unwrap();
        assert_eq!(tls.name.as_deref(), Some("backend.example"));
        assert!(tls.server_name && !tls.verify && tls.sends_sni());
        let (tls, _, _) = parsed(&[("backend-protocol", "HTTPS"), ("proxy-ssl-verify", "on")]);
        assert!(tls.unwrap().sends_sni());
    }

    #[test]
    fn invalid_and_unsupported_are_reported() {
        for (name, value) in [
            ("proxy-ssl-name", "not a name"),
            ("proxy-ssl-name", "host:443"),
            ("proxy-ssl-name", "*.example.com"),
            ("proxy-ssl-server-name", "true"),
            ("proxy-ssl-verify", "yes"),
            ("proxy-ssl-secret", "default/ca"),
            ("proxy-ssl-verify-depth", "2"),
            ("proxy-ssl-ciphers", "HIGH"),
            ("proxy-ssl-protocols", "TLSv1.3"),
        ] {
            let (tls, proto, problems) = parsed(&[("backend-protocol", "HTTPS"), (name, value)]);
            assert_eq!(problems.len(), 1, "{name}={value}: {problems:?}");
            assert!(problems[0].contains(name), "{problems:?}");
            assert_eq!(proto, Some(BackendProtocol::Https));
            assert_eq!(tls.unwrap(), UpstreamTls::default());
        }
        let (tls, _, problems) = parsed(&[("proxy-ssl-verify", "on")]);
        assert!(tls.is_none());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("without backend-protocol"),
            "{problems:?}"
        );
    }
}
