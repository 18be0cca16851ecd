//! The request id: the client's `X-Request-Id` when it is sane, else a new one; sent upstream,
//! returned to the client and logged.

use http::HeaderValue;

/// Request id header.
pub const REQUEST_ID: &str = "x-request-id";

/// The same, parsed once: looking a request's header up by it skips parsing the name.
pub(crate) const REQUEST_ID_NAME: http::HeaderName = http::HeaderName::from_static(REQUEST_ID);

/// The longest client-supplied id kept.
const MAX_LEN: usize = 200;

/// The client's id when it is 1–200 printable ASCII characters without spaces (shared, not
/// copied), else a new random one (32 hex digits, formatted without allocating but for the value).
pub fn request_id(from_client: Option<&HeaderValue>) -> HeaderValue {
    match from_client.filter(|v| is_acceptable(v.as_bytes())) {
        Some(v) => v.clone(),
        None => {
            let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
            let id = uuid::Uuid::new_v4().simple().encode_lower(&mut buf);
            // 32 hex digits are always a valid value.
            HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("-"))
        }
    }
}

fn is_acceptable(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.iter().all(u8::is_ascii_graphic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_replaces_others() {
        let v = HeaderValue::from_static("abc-123_X");
        assert_eq!(request_id(Some(&v)), "abc-123_X");
        let longest = "y".repeat(200);
        assert_eq!(
            request_id(Some(&HeaderValue::from_str(&longest).unwrap())),
            longest.as_str()
        );
        for bad in ["", "has space", "tab\there", &"x".repeat(201)] {
            let v = HeaderValue::from_str(bad).unwrap();
            let id = request_id(Some(&v));
            assert_eq!(id.len(), 32, "{bad:?} -> {id:?}");
            assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit));
            assert!(id.as_bytes().iter().all(|b| !b.is_ascii_uppercase()));
        }
        let made = request_id(None);
        assert_ne!(made, request_id(None), "new ids differ");
        assert!(request_id(Some(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap())).len() == 32);
    }
}
