//! The data-path side of balancing annotations: what a pick reads from the request, and what a
//! response or failure teaches the endpoint's state (latency EWMA, outlier ejection, the
//! affinity cookie). Only routes with a `Balance` get here.

use std::sync::Arc;

use http::{HeaderValue, header};
use k8s_sync::RoutePolicy;
use k8s_sync::annotations::balance::{Algorithm, Balance};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};

use super::RequestCtx;
use super::context::LbAttempt;
use crate::backend::{Backend, Pick, PickInput};
use crate::balance::{self, KeySource};
use crate::same_site;

/// The hash key and affinity cookie of a request, as far as the route asks for them.
pub(super) fn pick_input(b: &Balance, src: &KeySource<'_>) -> PickInput {
    match (&b.affinity, &b.hash_by) {
        (Some(a), _) => PickInput {
            hash: None,
            cookie: balance::cookie(src.req, &a.name).and_then(balance::parse_cookie_value),
        },
        (None, Some(key)) => PickInput {
            hash: balance::hash_key(key, src),
            cookie: None,
        },
        (None, None) => PickInput::default(),
    }
}

/// The endpoint of `backend` for one attempt of a request whose route's `policy` has balancing
/// annotations.
pub(super) fn pick(
    req: &RequestHeader,
    ctx: &mut RequestCtx,
    backend: &Arc<Backend>,
    policy: &Arc<RoutePolicy>,
) -> Pick {
    let Some(balance) = policy.balance.as_ref() else {
        return backend.pick(&ctx.tried);
    };
    let path = ctx
        .normalized_path
        .as_deref()
        .unwrap_or_else(|| req.uri.path());
    let src = KeySource {
        req,
        client: ctx.client,
        authority: ctx.authority.as_str(),
        path,
    };
    let input = pick_input(balance, &src);
    match backend.pick_balanced(balance, input, &ctx.tried) {
        Ok(picked) => {
            ctx.set_cookie = picked.set_cookie;
            let counted = matches!(balance.algorithm, Algorithm::Ewma | Algorithm::LeastRequest);
            let addr = picked.state.addr;
            ctx.lb = Some(LbAttempt {
                backend: backend.clone(),
                policy: policy.clone(),
                _in_flight: counted.then(|| Backend::track(&picked.state)),
                state: picked.state,
                recorded: false,
            });
            Pick::Endpoint(addr)
        }
        Err(pick) => pick,
    }
}

/// A failed attempt (connection, or an upstream error before or during the response): counted
/// once for outlier ejection.
pub(super) fn on_failure(ctx: &mut RequestCtx, connect: bool) {
    let Some(lb) = ctx.lb.as_mut() else {
        return;
    };
    if lb.recorded {
        return;
    }
    lb.recorded = true;
    let outlier = lb.policy.balance.as_ref().and_then(|b| b.outlier.as_ref());
    lb.backend.record_failure(&lb.state, outlier, connect);
}

/// The response head from the endpoint: its latency, its status for outlier ejection, and the
/// affinity cookie when the request was (re)pinned (`req` is read for its `User-Agent` only
/// when the route's `SameSite=None` is conditional).
pub(super) fn on_response(
    ctx: &mut RequestCtx,
    req: &RequestHeader,
    resp: &mut ResponseHeader,
) -> Result<()> {
    let Some(lb) = ctx.lb.as_mut() else {
        return Ok(());
    };
    let Some(balance) = lb.policy.balance.as_ref() else {
        return Ok(());
    };
    if let Some(started) = ctx.attempt_started {
        lb.state.observe_latency(started.elapsed());
    }
    lb.recorded = true;
    if resp.status.as_u16() >= 500 {
        lb.backend
            .record_failure(&lb.state, balance.outlier.as_ref(), false);
    } else {
        Backend::record_success(&lb.state);
    }
    if let (Some(affinity), Some(id)) = (&balance.affinity, ctx.set_cookie) {
        let value = balance::cookie_value(id);
        let path = affinity.path.as_deref().unwrap_or("/");
        let attributes = match &affinity.attributes_without_samesite {
            Some(without)
                if req
                    .headers
                    .get(header::USER_AGENT)
                    .is_some_and(|ua| same_site::rejects_none(ua.as_bytes())) =>
            {
                without
            }
            _ => &affinity.attributes,
        };
        let mut cookie =
            Vec::with_capacity(affinity.name.len() + 24 + path.len() + attributes.len());
        cookie.extend_from_slice(affinity.name.as_bytes());
        cookie.push(b'=');
        cookie.extend_from_slice(&value);
        cookie.extend_from_slice(b"; Path=");
        cookie.extend_from_slice(path.as_bytes());
        cookie.extend_from_slice(attributes.as_bytes());
        let v = HeaderValue::from_bytes(&cookie)
            .map_err(|e| Error::because(ErrorType::InternalError, "affinity cookie", e))?;
        resp.append_header(header::SET_COOKIE, v)?;
    }
    Ok(())
}
