//! The edge's policy hook into the shared data path: on the plain-HTTP listener, hosts with TLS
//! are redirected to HTTPS except cert-manager's HTTP-01 challenge path; on the TLS listener,
//! HSTS is added when configured.

use http::header;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use proxy::{LocalAnswer, PolicyRequest, TierPolicy, normalize_host};

/// Paths cert-manager's HTTP-01 solver must reach over plain HTTP.
pub const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// The plain-HTTP listener: 308 to HTTPS for hosts listed in an edge Ingress's `spec.tls`.
pub struct HttpsRedirect {
    /// The HTTPS port written into `Location` (omitted when 443).
    pub https_port: u16,
}

impl TierPolicy for HttpsRedirect {
    fn answer_locally(&self, req: &PolicyRequest<'_>) -> Option<LocalAnswer> {
        // The path is the normalised one: `/.well-known/acme-challenge/../../x` is not exempt.
        if req.path.starts_with(ACME_CHALLENGE_PREFIX)
            || !req.routes.redirects_to_https(req.authority)
        {
            return None;
        }
        Some(LocalAnswer::Redirect {
            // 308 keeps the method and body.
            status: 308,
            location: https_location(req.authority, self.https_port, req.target),
            reason: "https_redirect",
        })
    }
}

/// The TLS listener: `Strict-Transport-Security` on every response, when configured.
pub struct TlsListener {
    /// The HSTS value (`max-age=N`), built once.
    pub hsts: Option<http::HeaderValue>,
}

impl TierPolicy for TlsListener {
    fn on_response(&self, resp: &mut ResponseHeader) -> Result<()> {
        if let Some(hsts) = &self.hsts {
            resp.insert_header(header::STRICT_TRANSPORT_SECURITY, hsts.clone())?;
        }
        Ok(())
    }
}

/// `https://host[:port]/path?query` for a request's authority and target.
pub fn https_location(authority: &str, port: u16, target: &str) -> String {
    let host = normalize_host(authority);
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.into_owned()
    };
    match port {
        443 => format!("https://{host}{target}"),
        p => format!("https://{host}:{p}{target}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_locations() {
        assert_eq!(
            https_location("Shop.Example:80", 443, "/a?b=1"),
            "https://shop.example/a?b=1"
        );
        assert_eq!(
            https_location("shop.example", 8443, "/"),
            "https://shop.example:8443/"
        );
        assert_eq!(https_location("[::1]:80", 443, "/x"), "https://[::1]/x");
    }
}
