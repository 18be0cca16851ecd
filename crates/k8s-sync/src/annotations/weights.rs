//! Endpoint weights, set on the **Service** (Kubernetes endpoints carry none):
//! `tandem.dev/endpoint-weights` by address (`10.0.0.1=3, 10.0.0.2:8080=1, [fd00::5]:8080=2`)
//! and `tandem.dev/zone-weights` by the EndpointSlice endpoint's `zone` (`zone-a=2, zone-b=1`).
//! An endpoint's weight is its `ip:port` entry, else its IP's entry, else its zone's, else 1.
//! Parsed at translation into [`ServiceWeights`]; the resolved backend carries one integer per
//! endpoint and the proxy builds its schedule from those, never per request.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

/// Weights by endpoint address.
pub const ENDPOINT_WEIGHTS: &str = "tandem.dev/endpoint-weights";
/// Weights by EndpointSlice zone.
pub const ZONE_WEIGHTS: &str = "tandem.dev/zone-weights";
/// Highest weight (HAProxy's range is 0 to 256 too).
pub const MAX_WEIGHT: u16 = 256;
/// An endpoint named by no entry.
pub const DEFAULT_WEIGHT: u16 = 1;
/// Longest value of either annotation.
const MAX_VALUE_LEN: usize = 16 * 1024;
/// Longest zone name (a label value).
const MAX_ZONE_LEN: usize = 63;

/// The weights a Service's annotations give its endpoints. Empty (the default) when the Service
/// sets none, or only invalid ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceWeights {
    by_addr: HashMap<SocketAddr, u16>,
    by_ip: HashMap<IpAddr, u16>,
    by_zone: HashMap<String, u16>,
}

impl ServiceWeights {
    /// Reads both annotations. Each invalid one is ignored as a whole (its endpoints weigh 1)
    /// and described in the returned list, with the annotation's name.
    pub fn parse(annotations: Option<&BTreeMap<String, String>>) -> (Self, Vec<String>) {
        let mut out = Self::default();
        let mut problems = Vec::new();
        let Some(a) = annotations else {
            return (out, problems);
        };
        let mut check = |name: &str| {
            let value = a.get(name)?;
            if value.len() > MAX_VALUE_LEN {
                problems.push(format!(
                    "{name}: longer than {MAX_VALUE_LEN} bytes; annotation ignored (weights 1)"
                ));
                return None;
            }
            Some(value.as_str())
        };
        let endpoints = check(ENDPOINT_WEIGHTS).map(|v| parse_entries(v, parse_endpoint));
        let zones = check(ZONE_WEIGHTS).map(|v| parse_entries(v, parse_zone));
        match endpoints {
            Some(Ok(entries)) => {
                for (key, w) in entries {
                    match key {
                        EndpointKey::Addr(a) => drop(out.by_addr.insert(a, w)),
                        EndpointKey::Ip(ip) => drop(out.by_ip.insert(ip, w)),
                    }
                }
            }
            Some(Err(e)) => problems.push(format!(
                "{ENDPOINT_WEIGHTS}: {e}; annotation ignored (weights 1)"
            )),
            None => {}
        }
        match zones {
            Some(Ok(entries)) => out.by_zone = entries.into_iter().collect(),
            Some(Err(e)) => problems.push(format!(
                "{ZONE_WEIGHTS}: {e}; annotation ignored (weights 1)"
            )),
            None => {}
        }
        (out, problems)
    }

    /// No endpoint gets a weight other than 1.
    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty() && self.by_ip.is_empty() && self.by_zone.is_empty()
    }

    /// The weight of the endpoint at `addr` in `zone`.
    pub fn weight(&self, addr: SocketAddr, zone: Option<&str>) -> u16 {
        let ip = canonical(addr.ip());
        self.by_addr
            .get(&SocketAddr::new(ip, addr.port()))
            .or_else(|| self.by_ip.get(&ip))
            .or_else(|| zone.and_then(|z| self.by_zone.get(z)))
            .copied()
            .unwrap_or(DEFAULT_WEIGHT)
    }
}

/// What an `endpoint-weights` entry names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum EndpointKey {
    /// Every port of this IP.
    Ip(IpAddr),
    /// This IP and port.
    Addr(SocketAddr),
}

/// IPv4-mapped IPv6 addresses compare as the IPv4 address (EndpointSlices of type IPv4 never
/// hold them, but a hand-written entry might).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn parse_endpoint(key: &str) -> Result<EndpointKey, String> {
    if let Ok(ip) = key.parse::<IpAddr>() {
        return Ok(EndpointKey::Ip(canonical(ip)));
    }
    if let Some(inner) = key.strip_prefix('[').and_then(|k| k.strip_suffix(']'))
        && let Ok(ip) = inner.parse::<std::net::Ipv6Addr>()
    {
        return Ok(EndpointKey::Ip(canonical(IpAddr::V6(ip))));
    }
    match key.parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(EndpointKey::Addr(SocketAddr::new(
            canonical(a.ip()),
            a.port(),
        ))),
        Ok(_) => Err(format!("{key:?}: port 0")),
        Err(_) => Err(format!(
            "{key:?} is not an IP address, ip:port or [ipv6]:port"
        )),
    }
}

fn parse_zone(key: &str) -> Result<String, String> {
    let ok = !key.is_empty()
        && key.len() <= MAX_ZONE_LEN
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && key
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(key.to_owned())
    } else {
        Err(format!(
            "{key:?} is not a zone name (a label value: letters, digits, '-', '_', '.', at most {MAX_ZONE_LEN})"
        ))
    }
}

fn parse_weight(v: &str) -> Result<u16, String> {
    (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .then(|| v.parse::<u16>().ok())
        .flatten()
        .filter(|w| *w <= MAX_WEIGHT)
        .ok_or_else(|| format!("weight {v:?} is not a whole number from 0 to {MAX_WEIGHT}"))
}

/// `key=weight` entries separated by commas (or new lines, for a YAML block); empty entries
/// are skipped. A key given twice is an error.
fn parse_entries<K: Clone + Eq + std::hash::Hash + std::fmt::Debug>(
    value: &str,
    key: impl Fn(&str) -> Result<K, String>,
) -> Result<Vec<(K, u16)>, String> {
    let mut seen: HashMap<K, &str> = HashMap::new();
    let mut out = Vec::new();
    for entry in value.split([',', '\n']).map(str::trim) {
        if entry.is_empty() {
            continue;
        }
        let Some((k, w)) = entry.split_once('=') else {
            return Err(format!("entry {entry:?} is not key=weight"));
        };
        let (k_text, w) = (k.trim(), w.trim());
        let k = key(k_text)?;
        let w = parse_weight(w).map_err(|e| format!("entry {entry:?}: {e}"))?;
        if let Some(first) = seen.insert(k.clone(), k_text) {
            return Err(format!("{k_text:?} is given twice (first as {first:?})"));
        }
        out.push((k, w));
    }
    if out.is_empty() {
        return Err("no entries".to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(endpoints: Option<&str>, zones: Option<&str>) -> (ServiceWeights, Vec<String>) {
        let mut a = BTreeMap::new();
        if let Some(v) = endpoints {
            a.insert(ENDPOINT_WEIGHTS.to_owned(), v.to_owned());
        }
        if let Some(v) = zones {
            a.insert(ZONE_WEIGHTS.to_owned(), v.to_owned());
        }
        ServiceWeights::parse(Some(&a))
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn valid_values_and_precedence() {
        let (w, problems) = parse(
            Some("10.0.0.1=3, 10.0.0.2=1, [fd00::5]:8080=2,10.0.0.1:9090=7,\n fd00::6 = 0,"),
            Some("zone-a=2, zone-b=1, zone.c_d=256"),
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert!(!w.is_empty());
        // IP: every port.
        assert_eq!(w.weight(addr("10.0.0.1:80"), None), 3);
        assert_eq!(w.weight(addr("10.0.0.1:8080"), Some("zone-a")), 3);
        // ip:port beats the IP's entry.
        assert_eq!(w.weight(addr("10.0.0.1:9090"), None), 7);
        assert_eq!(w.weight(addr("10.0.0.2:80"), Some("zone-a")), 1);
        assert_eq!(w.weight(addr("[fd00::5]:8080"), None), 2);
        // Another port of an IP named only with a port: zone, else 1.
        assert_eq!(w.weight(addr("[fd00::5]:8081"), Some("zone-a")), 2);
        assert_eq!(w.weight(addr("[fd00::5]:8081"), None), 1);
        assert_eq!(w.weight(addr("[fd00::6]:1"), Some("zone-a")), 0);
        // Zones, then the default.
        assert_eq!(w.weight(addr("10.9.9.9:80"), Some("zone-a")), 2);
        assert_eq!(w.weight(addr("10.9.9.9:80"), Some("zone.c_d")), 256);
        assert_eq!(w.weight(addr("10.9.9.9:80"), Some("zone-x")), 1);
        assert_eq!(w.weight(addr("10.9.9.9:80"), None), 1);
        // An IPv4-mapped entry names the IPv4 endpoint; a bracketed IPv6 without port is an IP.
        let (w, problems) = parse(Some("::ffff:10.1.1.1=5, [fd00::7]=4"), None);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(w.weight(addr("10.1.1.1:80"), None), 5);
        assert_eq!(w.weight(addr("[fd00::7]:80"), None), 4);
    }

    #[test]
    fn no_annotations_is_empty() {
        let (w, problems) = ServiceWeights::parse(None);
        assert!(w.is_empty() && problems.is_empty());
        let (w, problems) = ServiceWeights::parse(Some(&BTreeMap::new()));
        assert!(w.is_empty() && problems.is_empty());
        assert_eq!(w.weight(addr("10.0.0.1:80"), Some("a")), DEFAULT_WEIGHT);
    }

    #[test]
    fn each_invalid_kind_is_reported_and_only_that_annotation_ignored() {
        for (value, expect) in [
            ("10.0.0.1", "not key=weight"),
            ("10.0.0.1=", "not a whole number"),
            ("10.0.0.1=x", "not a whole number"),
            ("10.0.0.1=-1", "not a whole number"),
            ("10.0.0.1=+1", "not a whole number"),
            ("10.0.0.1=1.5", "not a whole number"),
            ("10.0.0.1=257", "not a whole number from 0 to 256"),
            ("10.0.0.1=99999999999", "not a whole number"),
            ("10.0.0.300=1", "not an IP address"),
            ("host.example=1", "not an IP address"),
            ("[fd00::5]:99999=1", "not an IP address"),
            ("10.0.0.1:0=1", "port 0"),
            ("=1", "not an IP address"),
            ("10.0.0.1=1, 10.0.0.2=2, 10.0.0.1=3", "given twice"),
            ("10.0.0.1:80=1, 10.0.0.1:80=2", "given twice"),
            ("[fd00::5]=1, fd00::5=2", "given twice"),
            (" , ", "no entries"),
        ] {
            let (w, problems) = parse(Some(value), Some("zone-a=5"));
            assert_eq!(problems.len(), 1, "{value:?}: {problems:?}");
            assert!(
                problems[0].starts_with(ENDPOINT_WEIGHTS) && problems[0].contains(expect),
                "{value:?}: {problems:?}"
            );
            assert!(problems[0].contains("annotation ignored"), "{problems:?}");
            // The valid zone annotation still applies; no address entry does.
            assert_eq!(
                w.weight(addr("10.0.0.1:80"), Some("zone-a")),
                5,
                "{value:?}"
            );
            assert_eq!(w.weight(addr("10.0.0.1:80"), None), 1, "{value:?}");
        }
        let long = format!("{}=1", "z".repeat(64));
        for (value, expect) in [
            ("zone-a", "not key=weight"),
            ("zone-a=300", "from 0 to 256"),
            ("-zone=1", "not a zone name"),
            ("zone a=1", "not a zone name"),
            (long.as_str(), "not a zone name"),
            ("zone-a=1, zone-a=2", "given twice"),
        ] {
            let (w, problems) = parse(Some("10.0.0.1=4"), Some(value));
            assert_eq!(problems.len(), 1, "{value:?}: {problems:?}");
            assert!(
                problems[0].starts_with(ZONE_WEIGHTS) && problems[0].contains(expect),
                "{value:?}: {problems:?}"
            );
            assert_eq!(w.weight(addr("10.0.0.1:80"), Some("zone-a")), 4);
            assert_eq!(w.weight(addr("10.0.0.2:80"), Some("zone-a")), 1);
        }
        let (w, problems) = parse(Some(&"1".repeat(MAX_VALUE_LEN + 1)), None);
        assert!(
            w.is_empty() && problems[0].contains("longer than"),
            "{problems:?}"
        );
        // Both invalid: both reported, nothing weighted.
        let (w, problems) = parse(Some("x=1"), Some("y=z"));
        assert!(w.is_empty() && problems.len() == 2, "{problems:?}");
    }
}
