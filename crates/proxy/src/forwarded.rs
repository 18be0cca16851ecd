//! Forwarded headers: which clients may vouch for an earlier hop, and what the next hop is told.
//!
//! Only a TCP peer inside `--trusted-proxies` (the edge tier) has its `X-Forwarded-*` and
//! `Forwarded` headers kept and extended; from anyone else they are replaced, so a client cannot
//! forge its address.

use std::cell::RefCell;
use std::net::IpAddr;
use std::str::FromStr;

use http::HeaderValue;
use ipnet::IpNet;
use pingora_http::RequestHeader;

/// CIDRs whose forwarded headers are believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpNet>);

#[derive(Debug, thiserror::Error)]
#[error("invalid trusted proxy {0:?}: expected an address or CIDR such as 10.0.0.0/8")]
pub struct InvalidCidr(String);

impl FromStr for TrustedProxies {
    type Err = InvalidCidr;
    /// Comma-separated addresses or CIDRs; empty means nobody is trusted.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut nets = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let net = part
                .parse::<IpNet>()
                .or_else(|_| part.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| InvalidCidr(part.to_owned()))?;
            nets.push(net);
        }
        Ok(Self(nets))
    }
}

impl TrustedProxies {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `::ffff:1.2.3.4` → `1.2.3.4`, so v4 CIDRs match on dual-stack sockets.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What the proxy knows of the connection a request came in on.
#[derive(Clone, Copy, Debug)]
pub struct Hop {
    pub peer: IpAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
    pub port: u16,
}

pub const X_FORWARDED_FOR: &str = "x-forwarded-for";
pub const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
pub const X_FORWARDED_HOST: &str = "x-forwarded-host";
pub const X_FORWARDED_PORT: &str = "x-forwarded-port";
pub const X_REAL_IP: &str = "x-real-ip";
pub const FORWARDED: &str = "forwarded";

fn joined(req: &RequestHeader, name: &str) -> Option<String> {
    let mut out: Option<String> = None;
    for v in req.headers.get_all(name) {
        let v = v.to_str().ok()?.trim();
        if v.is_empty() {
            continue;
        }
        match &mut out {
            Some(s) => {
                s.push_str(", ");
                s.push_str(v);
            }
            None => out = Some(v.to_owned()),
        }
    }
    out
}

/// The client address as this tier sees it: from the right of the `X-Forwarded-For` chain, the
/// first address not in the trusted set (or the TCP peer when it is not trusted).
pub fn client_ip(req: &RequestHeader, peer: IpAddr, trusted: &TrustedProxies) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    // The chain reads left to right across header lines; walk it from the right.
    let lines: Vec<_> = req.headers.get_all(X_FORWARDED_FOR).into_iter().collect();
    for v in lines.into_iter().rev() {
        let Ok(v) = v.to_str() else { return peer };
        for part in v.split(',').rev() {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !trusted.contains(ip) {
                        return ip;
                    }
                }
                Err(_) => return client,
            }
        }
    }
    client
}

/// Rewrites the forwarded headers of a request about to go upstream. Returns the client address
/// after trusted-proxy handling.
pub fn apply(req: &mut RequestHeader, hop: Hop, trusted: &TrustedProxies) -> IpAddr {
    let client = client_ip(req, hop.peer, trusted);
    apply_for_client(req, hop, trusted, client);
    client
}

/// [`apply`] when the client address was already worked out (by [`client_ip`]) for this request.
///
/// Built for the common case at a low cost: each address is formatted at most once (and a
/// worker's last one is reused, since a client or an edge sends many requests), constant values
/// are static, the Host value is shared, and the `Forwarded` element is one buffer.
pub fn apply_for_client(
    req: &mut RequestHeader,
    hop: Hop,
    trusted: &TrustedProxies,
    client: IpAddr,
) {
    let trusted_peer = trusted.contains(hop.peer);
    let peer = canonical(hop.peer);
    let peer_value = ip_value(peer);

    let xff = match trusted_peer.then(|| joined(req, X_FORWARDED_FOR)).flatten() {
        Some(mut prev) => {
            prev.push_str(", ");
            prev.push_str(peer_value.to_str().unwrap_or_default());
            text_value(prev)
        }
        None => Some(peer_value.clone()),
    };
    // The Host header when it is text, else the target's authority.
    let host = match req.headers.get(http::header::HOST) {
        Some(h) if h.to_str().is_ok() => Some(h.clone()),
        _ => req
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };

    let keep = |req: &RequestHeader, name: &str| trusted_peer && req.headers.contains_key(name);
    // Names are constants and values come from parsed addresses, numbers or an already valid
    // Host header: inserting cannot fail.
    let set = |req: &mut RequestHeader, name: &'static str, v: HeaderValue| {
        let _ = req.insert_header(name, v);
    };
    if let Some(xff) = xff {
        set(req, X_FORWARDED_FOR, xff);
    }
    if !keep(req, X_FORWARDED_PROTO) {
        set(req, X_FORWARDED_PROTO, HeaderValue::from_static(hop.scheme));
    }
    if !keep(req, X_FORWARDED_HOST) {
        match &host {
            Some(h) => set(req, X_FORWARDED_HOST, h.clone()),
            None => {
                req.remove_header(X_FORWARDED_HOST);
            }
        }
    }
    if !keep(req, X_FORWARDED_PORT) {
        set(req, X_FORWARDED_PORT, port_value(hop.port));
    }
    let real_ip = if client == peer {
        peer_value.clone()
    } else {
        ip_value(client)
    };
    set(req, X_REAL_IP, real_ip);

    // RFC 7239: one element per hop.
    let host = host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()));
    // The peer as already formatted above (an address is ASCII).
    let node = peer_value.to_str().unwrap_or_default();
    let mut element = String::with_capacity(64 + host.map_or(0, str::len));
    element.push_str("for=");
    match peer {
        IpAddr::V4(_) => element.push_str(node),
        IpAddr::V6(_) => {
            element.push_str("\"[");
            element.push_str(node);
            element.push_str("]\"");
        }
    }
    element.push_str(";proto=");
    element.push_str(hop.scheme);
    if let Some(h) = host {
        element.push_str(";host=\"");
        element.push_str(h);
        element.push('"');
    }
    let forwarded = match trusted_peer.then(|| joined(req, FORWARDED)).flatten() {
        Some(mut prev) => {
            prev.push_str(", ");
            prev.push_str(&element);
            prev
        }
        None => element,
    };
    if let Some(v) = text_value(forwarded) {
        set(req, FORWARDED, v);
    }
}

/// A header value from text built here (no copy).
fn text_value(s: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(s)).ok()
}

thread_local! {
    /// The last address formatted on this worker, and its value.
    static LAST_IP: RefCell<Option<(IpAddr, HeaderValue)>> = const { RefCell::new(None) };
    /// The last listener port formatted on this worker, and its value.
    static LAST_PORT: RefCell<Option<(u16, HeaderValue)>> = const { RefCell::new(None) };
}

/// An address as a header value, formatted once per worker while it stays the same.
pub fn ip_value(ip: IpAddr) -> HeaderValue {
    LAST_IP.with_borrow_mut(|last| match last {
        Some((cached, v)) if *cached == ip => v.clone(),
        _ => {
            let v = HeaderValue::from_maybe_shared(bytes::Bytes::from(ip.to_string()))
                .unwrap_or_else(|_| HeaderValue::from_static(""));
            *last = Some((ip, v.clone()));
            v
        }
    })
}

/// A port as a header value, formatted once per worker while it stays the same.
pub fn port_value(port: u16) -> HeaderValue {
    LAST_PORT.with_borrow_mut(|last| match last {
        Some((cached, v)) if *cached == port => v.clone(),
        _ => {
            let v = HeaderValue::from(port);
            *last = Some((port, v.clone()));
            v
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&'static str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(*k, *v).unwrap();
        }
        r
    }

    fn hop(peer: &str) -> Hop {
        Hop {
            peer: peer.parse().unwrap(),
            scheme: "http",
            port: 8080,
        }
    }

    fn get<'a>(r: &'a RequestHeader, k: &str) -> &'a str {
        r.headers.get(k).unwrap().to_str().unwrap()
    }

    #[test]
    fn untrusted_peer_replaces_everything() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let mut r = req(&[
            ("host", "example.com"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil"),
            ("forwarded", "for=6.6.6.6"),
        ]);
        let client = apply(&mut r, hop("192.0.2.1"), &trusted);
        assert_eq!(client.to_string(), "192.0.2.1");
        assert_eq!(get(&r, X_FORWARDED_FOR), "192.0.2.1");
        assert_eq!(get(&r, X_FORWARDED_PROTO), "http");
        assert_eq!(get(&r, X_FORWARDED_HOST), "example.com");
        assert_eq!(get(&r, X_FORWARDED_PORT), "8080");
        assert_eq!(get(&r, X_REAL_IP), "192.0.2.1");
        assert_eq!(
            get(&r, FORWARDED),
            "for=192.0.2.1;proto=http;host=\"example.com\""
        );
    }

    #[test]
    fn trusted_peer_is_extended() {
        let trusted: TrustedProxies = "10.0.0.0/8, 127.0.0.1".parse().unwrap();
        let mut r = req(&[
            ("host", "example.com"),
            ("x-forwarded-for", "203.0.113.7, 10.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "443"),
        ]);
        let client = apply(&mut r, hop("127.0.0.1"), &trusted);
        assert_eq!(client.to_string(), "203.0.113.7");
        assert_eq!(get(&r, X_FORWARDED_FOR), "203.0.113.7, 10.1.1.1, 127.0.0.1");
        assert_eq!(get(&r, X_FORWARDED_PROTO), "https");
        assert_eq!(get(&r, X_FORWARDED_PORT), "443");
        assert_eq!(get(&r, X_REAL_IP), "203.0.113.7");
    }

    #[test]
    fn mapped_and_v6_peers_and_changing_peers() {
        let none = TrustedProxies::default();
        // A v4-mapped peer: the chain and Forwarded say v4, X-Real-IP the address as seen.
        let mut r = req(&[("host", "example.com")]);
        let client = apply(&mut r, hop("::ffff:192.0.2.1"), &none);
        assert_eq!(get(&r, X_FORWARDED_FOR), "192.0.2.1");
        assert_eq!(get(&r, X_REAL_IP), client.to_string());
        assert_eq!(get(&r, X_REAL_IP), "::ffff:192.0.2.1");
        assert_eq!(
            get(&r, FORWARDED),
            "for=192.0.2.1;proto=http;host=\"example.com\""
        );
        // A v6 peer is quoted and bracketed in Forwarded; no Host, no host parameter.
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        apply(&mut r, hop("2001:db8::1"), &none);
        assert_eq!(get(&r, X_FORWARDED_FOR), "2001:db8::1");
        assert_eq!(get(&r, FORWARDED), "for=\"[2001:db8::1]\";proto=http");
        assert!(r.headers.get(X_FORWARDED_HOST).is_none());
        // Values reused from one request to the next follow the peer and port.
        for (peer, port) in [("192.0.2.1", 80), ("192.0.2.2", 80), ("192.0.2.1", 8443)] {
            let mut r = req(&[("host", "example.com")]);
            let h = Hop { port, ..hop(peer) };
            apply(&mut r, h, &none);
            assert_eq!(get(&r, X_FORWARDED_FOR), peer);
            assert_eq!(get(&r, X_REAL_IP), peer);
            assert_eq!(get(&r, X_FORWARDED_PORT), port.to_string());
        }
    }

    #[test]
    fn parses_cidrs_and_mapped_addresses() {
        let t: TrustedProxies = "127.0.0.0/8,::1".parse().unwrap();
        assert!(t.contains("::ffff:127.0.0.2".parse().unwrap()));
        assert!(t.contains("::1".parse().unwrap()));
        assert!(!t.contains("192.0.2.1".parse().unwrap()));
        assert!("nonsense".parse::<TrustedProxies>().is_err());
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn ip() -> impl Strategy<Value = IpAddr> {
            prop_oneof![
                any::<[u8; 4]>().prop_map(IpAddr::from),
                any::<[u16; 8]>().prop_map(IpAddr::from),
            ]
        }

        proptest! {
            /// Arbitrary header bytes never panic, and an untrusted peer is always the client.
            #[test]
            fn untrusted_peer_is_the_client(xff in "[ -~]{0,80}", peer in ip()) {
                let mut r = RequestHeader::build("GET", b"/", None).unwrap();
                r.append_header(X_FORWARDED_FOR, xff.as_str()).unwrap();
                let none = TrustedProxies::default();
                prop_assert_eq!(client_ip(&r, peer, &none), peer);
                let all: TrustedProxies = "0.0.0.0/0,::/0".parse().unwrap();
                let _ = client_ip(&r, peer, &all);
            }

            /// The chain split over several header lines means the same as one line.
            #[test]
            fn header_lines_are_one_chain(
                chain in proptest::collection::vec(ip(), 1..6),
                cut in 0usize..6,
                trust in proptest::collection::vec(any::<bool>(), 6),
            ) {
                let cut = cut.min(chain.len());
                let text = |ips: &[IpAddr]| ips.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
                let mut one = RequestHeader::build("GET", b"/", None).unwrap();
                one.append_header(X_FORWARDED_FOR, text(&chain)).unwrap();
                let mut two = RequestHeader::build("GET", b"/", None).unwrap();
                for part in [&chain[..cut], &chain[cut..]] {
                    if !part.is_empty() {
                        two.append_header(X_FORWARDED_FOR, text(part)).unwrap();
                    }
                }
                // Trust the peer and a random part of the chain.
                let peer: IpAddr = "10.0.0.1".parse().unwrap();
                let trusted_list: Vec<String> = std::iter::once(peer)
                    .chain(chain.iter().zip(&trust).filter(|(_, t)| **t).map(|(i, _)| *i))
                    .map(|i| i.to_string())
                    .collect();
                let trusted: TrustedProxies = trusted_list.join(",").parse().unwrap();
                prop_assert_eq!(client_ip(&one, peer, &trusted), client_ip(&two, peer, &trusted));
            }
        }
    }
}
