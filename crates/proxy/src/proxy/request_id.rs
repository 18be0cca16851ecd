//! The request id: the client's `X-Request-Id` when it is sane, else a new one; sent upstream,
//! returned to the client and logged.

/// Request id header.
pub const REQUEST_ID: &str = "x-request-id";

/// The longest client-supplied id kept.
const MAX_LEN: usize = 200;

/// The client's id when it is 1–200 printable ASCII characters without spaces, else a new
/// random one (32 hex digits).
pub fn request_id(from_client: Option<&http::HeaderValue>) -> String {
    from_client
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_acceptable(v))
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned)
}

fn is_acceptable(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn keeps_sane_ids_and_replaces_others() {
        let v = HeaderValue::from_static("abc-123_X");
        assert_eq!(request_id(Some(&v)), "abc-123_X");
        for bad in ["", "has space", &"x".repeat(201)] {
            let v = HeaderValue::from_str(bad).unwrap();
            let id = request_id(Some(&v));
            assert_eq!(id.len(), 32, "{bad:?} -> {id}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        let made = request_id(None);
        assert_ne!(made, request_id(None), "new ids differ");
        assert!(request_id(Some(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap())).len() == 32);
    }
}
