//! Responses the proxy writes itself: small plain-text pages (404, 503, 400, …) and redirects.

use bytes::Bytes;
use http::{HeaderValue, header};
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::SERVER_NAME;
use super::request_id::REQUEST_ID;

/// Writes a small plain-text page. With `close`, the connection is not kept (pingora then says
/// `Connection: close`): for requests whose framing or remaining bytes cannot be trusted, and
/// after a failed proxy attempt.
pub async fn respond(
    session: &mut Session,
    status: u16,
    message: &str,
    request_id: &HeaderValue,
    close: bool,
) -> Result<()> {
    let body = Bytes::from(format!("{status} {message}\n"));
    let mut resp = ResponseHeader::build(status, Some(5))?;
    if close {
        session.set_keepalive(None);
    }
    resp.insert_header(header::SERVER, SERVER_NAME)?;
    resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(header::CACHE_CONTROL, "no-store")?;
    resp.insert_header(REQUEST_ID, request_id.clone())?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Writes a redirect without body.
pub async fn redirect(
    session: &mut Session,
    status: u16,
    location: &str,
    request_id: &HeaderValue,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(header::SERVER, SERVER_NAME)?;
    resp.insert_header(header::LOCATION, location)?;
    resp.insert_header(header::CONTENT_LENGTH, 0)?;
    resp.insert_header(REQUEST_ID, request_id.clone())?;
    session.write_response_header(Box::new(resp), true).await
}
