//! `HostMap<T>`: the one implementation of "exact host, then a wildcard covering one label",
//! shared by the route table, the HTTPS-redirect hosts, the per-host fallback counters and the
//! edge's certificate store.

use std::borrow::Cow;

/// Values by host: exact names, and `*.suffix` wildcards that cover exactly one more label
/// (`*.example.com` covers `a.example.com`, not `a.b.example.com` nor `example.com`).
///
/// Persistent (`imbl`): a clone shares everything with the original, so a new table that
/// differs in a few hosts costs those hosts, not the whole map.
#[derive(Clone, Debug)]
pub struct HostMap<T: Clone> {
    exact: imbl::HashMap<Box<str>, T>,
    wildcard: imbl::HashMap<Box<str>, T>,
}

impl<T: Clone> Default for HostMap<T> {
    fn default() -> Self {
        Self {
            exact: imbl::HashMap::new(),
            wildcard: imbl::HashMap::new(),
        }
    }
}

/// How a host was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostMatch {
    Exact,
    Wildcard,
}

impl<T: Clone> HostMap<T> {
    fn side(&mut self, host: &str) -> (&mut imbl::HashMap<Box<str>, T>, Box<str>) {
        match host.strip_prefix("*.") {
            Some(suffix) => (&mut self.wildcard, suffix.into()),
            None => (&mut self.exact, host.into()),
        }
    }

    /// Adds a host unless it is there already: the first value stays.
    pub fn insert_first(&mut self, host: &str, value: T) {
        let (map, key) = self.side(host);
        map.entry(key).or_insert(value);
    }

    /// Sets (or with `None` removes) a configured host's value: lowercase, `*.suffix` for a
    /// wildcard.
    pub fn set(&mut self, host: &str, value: Option<T>) {
        let (map, key) = self.side(host);
        match value {
            Some(v) => {
                map.insert(key, v);
            }
            None => {
                map.remove(&key);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry of a configured host (`*.suffix` for a wildcard), as inserted.
    pub fn get_configured(&self, host: &str) -> Option<&T> {
        match host.strip_prefix("*.") {
            Some(suffix) => self.wildcard.get(suffix),
            None => self.exact.get(host),
        }
    }

    /// Every configured host (`*.suffix` for a wildcard) with its value, exact hosts first.
    pub fn entries(&self) -> impl Iterator<Item = (Cow<'_, str>, &T)> {
        let exact = self.exact.iter().map(|(h, v)| (Cow::Borrowed(&**h), v));
        let wildcard = (self.wildcard.iter()).map(|(s, v)| (Cow::Owned(format!("*.{s}")), v));
        exact.chain(wildcard)
    }

    /// Every value, exact hosts first.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.exact.values().chain(self.wildcard.values())
    }

    /// The exact entry of a normalised host.
    pub fn get_exact(&self, host: &str) -> Option<&T> {
        self.exact.get(host)
    }

    /// The wildcard entry covering a normalised host.
    pub fn get_wildcard(&self, host: &str) -> Option<&T> {
        host.split_once('.')
            .filter(|(label, _)| !label.is_empty())
            .and_then(|(_, suffix)| self.wildcard.get(suffix))
    }

    /// Exact, then wildcard, for a normalised host.
    pub fn get(&self, host: &str) -> Option<(&T, HostMatch)> {
        self.get_exact(host)
            .map(|v| (v, HostMatch::Exact))
            .or_else(|| self.get_wildcard(host).map(|v| (v, HostMatch::Wildcard)))
    }
}

/// A Host header or SNI as a table key: no port, lowercase, no trailing dot. Allocates only
/// for uppercase hosts.
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = strip_port(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// `example.com:8080` → `example.com`; `[::1]:8080` → `::1`.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(h, _)| h);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_then_one_label_wildcard() {
        let mut m = HostMap::default();
        m.insert_first("a.example", 1);
        m.insert_first("*.example", 2);
        m.insert_first("a.example", 3);
        assert_eq!(m.get("a.example"), Some((&1, HostMatch::Exact)));
        assert_eq!(m.get("b.example"), Some((&2, HostMatch::Wildcard)));
        assert_eq!(m.get("c.b.example"), None);
        assert_eq!(m.get("example"), None);
        assert_eq!(m.get(".example"), None);
        assert_eq!(m.len(), 2);
        let mut entries: Vec<(String, i32)> =
            m.entries().map(|(h, v)| (h.into_owned(), *v)).collect();
        entries.sort();
        assert_eq!(
            entries,
            [("*.example".to_owned(), 2), ("a.example".to_owned(), 1)]
        );
    }

    #[test]
    fn hosts_normalise() {
        assert_eq!(normalize_host("A.Example.:8080"), "a.example");
        assert_eq!(normalize_host("[::1]:80"), "::1");
        assert_eq!(normalize_host("::1"), "::1");
        assert!(matches!(normalize_host("a.example"), Cow::Borrowed(_)));
    }
}
