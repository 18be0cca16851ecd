//! The request phase of a route's annotation policy: writes the answer the policy gives instead
//! of proxying (403, redirect, 413, CORS preflight), and remembers what later phases add.

use http::header;
use k8s_sync::RoutePolicy;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::context::RequestCtx;
use super::request_id::REQUEST_ID;
use super::{SERVER_NAME, local, upstream_error};
use crate::route_policy::{self, PolicyAnswer};

/// Answers the request here when the policy says so (`true`: answered).
pub async fn answer(
    session: &mut Session,
    ctx: &mut RequestCtx,
    policy: &RoutePolicy,
) -> Result<bool> {
    let req = session.req_header();
    let path = ctx
        .normalized_path
        .as_deref()
        .unwrap_or_else(|| req.uri.path());
    let Some(answer) = route_policy::answer(policy, req, ctx.client, path) else {
        ctx.cors_origin = route_policy::cors_origin(policy, req);
        return Ok(false);
    };
    match answer {
        PolicyAnswer::Forbidden => {
            ctx.local_reason = Some("source_denied");
            local::respond(
                session,
                403,
                upstream_error::message_for(403),
                &ctx.request_id,
                false,
            )
            .await?;
        }
        PolicyAnswer::TooLarge => {
            ctx.local_reason = Some("body_too_large");
            // The body is not read: the connection is not kept.
            local::respond(
                session,
                413,
                upstream_error::message_for(413),
                &ctx.request_id,
                true,
            )
            .await?;
        }
        PolicyAnswer::Redirect {
            status,
            location,
            reason,
        } => {
            ctx.local_reason = Some(reason);
            let location = location.to_str().unwrap_or("/").to_owned();
            local::redirect(session, status, &location, &ctx.request_id).await?;
        }
        PolicyAnswer::Preflight(headers) => {
            ctx.local_reason = Some("cors_preflight");
            let mut resp = ResponseHeader::build(204, Some(4 + headers.len()))?;
            resp.insert_header(header::SERVER, SERVER_NAME)?;
            resp.insert_header(REQUEST_ID, ctx.request_id.clone())?;
            for (name, value) in headers {
                resp.append_header(name, value)?;
            }
            session.write_response_header(Box::new(resp), true).await?;
        }
    }
    Ok(true)
}
