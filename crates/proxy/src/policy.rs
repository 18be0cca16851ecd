//! The hook through which a tier adds its own behaviour to the shared data path (the edge's
//! HTTPS redirect with the ACME exemption, HSTS). The data path knows no tier by name.

use pingora_error::Result;
use pingora_http::ResponseHeader;

use crate::route_table::RouteTable;

/// What a policy sees of a request before it is routed.
pub struct PolicyRequest<'a> {
    /// The authority the request is for, as sent (port included).
    pub authority: &'a str,
    /// The normalised path, used for every decision.
    pub path: &'a str,
    /// Path and query as the client sent them, for redirects.
    pub target: &'a str,
    pub routes: &'a RouteTable,
}

/// An answer a policy gives instead of routing.
#[derive(Debug, PartialEq, Eq)]
pub enum LocalAnswer {
    /// A redirect: status (301, 302, 307, 308) and `Location`; `reason` goes to the access log.
    Redirect {
        status: u16,
        location: String,
        reason: &'static str,
    },
}

/// Tier-specific behaviour around routing. Every method has a neutral default.
pub trait TierPolicy: Send + Sync + 'static {
    /// Before the route lookup: answer here, or `None` to route.
    fn answer_locally(&self, _req: &PolicyRequest<'_>) -> Option<LocalAnswer> {
        None
    }

    /// On every response passed on from a backend.
    fn on_response(&self, _resp: &mut ResponseHeader) -> Result<()> {
        Ok(())
    }
}

/// No tier-specific behaviour (the router).
pub struct NoPolicy;

impl TierPolicy for NoPolicy {}
