//! Classification of failures: the status a failed request is answered with, and the kind an
//! upstream error is counted as. Pure functions of pingora's typed errors.

use pingora_error::{ErrorSource, ErrorType};

/// A failure to establish the connection: nothing was sent, so any request may be retried on
/// another endpoint.
pub fn is_connect_failure(t: &ErrorType) -> bool {
    matches!(
        t,
        ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
            | ErrorType::SocketError
            | ErrorType::BindError
    )
}

/// The status answered for a failed request; `0` when the client is gone and nothing can be
/// written.
pub fn status_for(t: &ErrorType, source: &ErrorSource) -> u16 {
    match t {
        ErrorType::HTTPStatus(code) => *code,
        _ => match source {
            ErrorSource::Upstream => match t {
                ErrorType::ReadTimedout | ErrorType::WriteTimedout => 504,
                _ => 502,
            },
            ErrorSource::Downstream => match t {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

/// The text of the page answered with a status.
pub fn message_for(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden: the client address is not allowed on this route",
        413 => "Content Too Large: the request body is larger than this route allows",
        414 => "URI Too Long",
        421 => "Misdirected Request: the certificate of this connection does not cover this host",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway: the backend could not be reached",
        503 => "Service Unavailable",
        504 => "Gateway Timeout: the backend did not answer in time",
        _ => "Error",
    }
}

/// The `kind` label of `tandem_upstream_errors_total`.
pub fn error_kind(t: &ErrorType) -> &'static str {
    match t {
        ErrorType::ConnectTimedout => "connect_timeout",
        ErrorType::ConnectRefused => "connect_refused",
        ErrorType::ConnectNoRoute => "connect_no_route",
        ErrorType::ConnectError | ErrorType::SocketError | ErrorType::BindError => "connect_error",
        ErrorType::ReadTimedout => "read_timeout",
        ErrorType::WriteTimedout => "write_timeout",
        ErrorType::ReadError | ErrorType::ConnectionClosed => "read_error",
        ErrorType::WriteError => "write_error",
        ErrorType::InvalidHTTPHeader | ErrorType::H1Error | ErrorType::H2Error => "protocol_error",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        use ErrorSource::*;
        assert_eq!(status_for(&ErrorType::HTTPStatus(503), &Upstream), 503);
        assert_eq!(status_for(&ErrorType::ConnectRefused, &Upstream), 502);
        assert_eq!(status_for(&ErrorType::ReadTimedout, &Upstream), 504);
        assert_eq!(status_for(&ErrorType::WriteTimedout, &Upstream), 504);
        assert_eq!(status_for(&ErrorType::H1Error, &Upstream), 502);
        assert_eq!(status_for(&ErrorType::ConnectionClosed, &Downstream), 0);
        assert_eq!(status_for(&ErrorType::InvalidHTTPHeader, &Downstream), 400);
        assert_eq!(status_for(&ErrorType::InternalError, &Internal), 500);
    }

    #[test]
    fn kinds_and_connect_failures() {
        assert!(is_connect_failure(&ErrorType::ConnectRefused));
        assert!(!is_connect_failure(&ErrorType::ReadTimedout));
        assert_eq!(error_kind(&ErrorType::ConnectTimedout), "connect_timeout");
        assert_eq!(error_kind(&ErrorType::H2Error), "protocol_error");
        assert_eq!(error_kind(&ErrorType::InternalError), "other");
        assert!(message_for(502).starts_with("Bad Gateway"));
    }
}
