//! `canary` and the `canary-*` annotations (ingress-nginx's meaning): an Ingress marked
//! `canary: "true"` adds a second backend to the routes of another Ingress with the same host,
//! path and pathType, and a rule deciding per request which of the two serves it. Parsed here
//! into a [`CanaryRule`]; the data path only evaluates it.

use std::hash::{Hash, Hasher};

use http::{HeaderName, HeaderValue};

use super::{MAX_REGEX_LEN, REGEX_SIZE_LIMIT, Reader, parse_bool, parse_u64};

/// Default of `canary-weight-total` (and the smallest total ingress-nginx honours).
pub const DEFAULT_WEIGHT_TOTAL: u32 = 100;
/// Largest `canary-weight-total` accepted.
pub const MAX_WEIGHT_TOTAL: u32 = 1_000_000;

/// How the value of the `canary-by-header` header is judged.
#[derive(Clone, Debug)]
pub enum HeaderMatch {
    /// `always` → canary, `never` → main, anything else → the next rule.
    AlwaysNever,
    /// `canary-by-header-value`: this exact value → canary, anything else → the next rule.
    Value(HeaderValue),
    /// `canary-by-header-pattern`: a value the regex finds a match in → canary, anything else →
    /// the next rule. Compiled once here; matched in linear time.
    Pattern(regex::bytes::Regex),
}

impl PartialEq for HeaderMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::AlwaysNever, Self::AlwaysNever) => true,
            (Self::Value(a), Self::Value(b)) => a == b,
            (Self::Pattern(a), Self::Pattern(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}
impl Eq for HeaderMatch {}
impl Hash for HeaderMatch {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Self::AlwaysNever => {}
            Self::Value(v) => v.hash(state),
            Self::Pattern(r) => r.as_str().hash(state),
        }
    }
}

/// Which requests of a route its canary takes. Precedence: header, then cookie, then weight.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CanaryRule {
    /// `canary-by-header` and how its value is judged.
    pub header: Option<(HeaderName, HeaderMatch)>,
    /// `canary-by-cookie`: the cookie's value `always` → canary, `never` → main.
    pub cookie: Option<String>,
    /// `canary-weight` out of `canary-weight-total`: the share of the remaining requests.
    pub weight: u32,
    pub weight_total: u32,
    /// A step coprime with `weight_total`: request number `n` of the route goes to the canary
    /// when `n * step mod total < weight`, so every `total` consecutive requests decided by
    /// weight send exactly `weight` to the canary, spread over the run rather than in a block.
    pub weight_step: u32,
}

/// What a request's headers say, before the weight decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Canary,
    Main,
    /// Neither header nor cookie decided: the weight does.
    ByWeight,
}

impl CanaryRule {
    /// Judges a request by `canary-by-header` (the header's first value), then
    /// `canary-by-cookie` (`cookies`: the request's `Cookie` header values).
    pub fn verdict<'a>(
        &self,
        header: impl FnOnce(&HeaderName) -> Option<&'a HeaderValue>,
        cookies: impl Iterator<Item = &'a HeaderValue>,
    ) -> Verdict {
        if let Some((name, how)) = &self.header
            && let Some(v) = header(name)
        {
            match how {
                HeaderMatch::Value(want) if v == want => return Verdict::Canary,
                HeaderMatch::Pattern(re) if re.is_match(v.as_bytes()) => return Verdict::Canary,
                HeaderMatch::AlwaysNever if v == "always" => return Verdict::Canary,
                HeaderMatch::AlwaysNever if v == "never" => return Verdict::Main,
                _ => {}
            }
        }
        if let Some(name) = &self.cookie {
            match cookie_value(cookies, name) {
                Some(b"always") => return Verdict::Canary,
                Some(b"never") => return Verdict::Main,
                _ => {}
            }
        }
        Verdict::ByWeight
    }

    /// Whether the next request the weight decides goes to the canary; `next` gives the
    /// route's request number, asked only when the weight is neither 0 nor the whole total.
    pub fn by_weight(&self, next: impl FnOnce() -> u64) -> bool {
        if self.weight == 0 {
            return false;
        }
        if self.weight >= self.weight_total {
            return true;
        }
        let total = u64::from(self.weight_total);
        (next() % total) * u64::from(self.weight_step) % total < u64::from(self.weight)
    }
}

/// The value of the first cookie called `name` in `Cookie` headers (`a=1; b=2`), as bytes.
fn cookie_value<'a>(
    cookies: impl Iterator<Item = &'a HeaderValue>,
    name: &str,
) -> Option<&'a [u8]> {
    for header in cookies {
        for pair in header.as_bytes().split(|b| *b == b';') {
            let pair = pair.trim_ascii();
            if let Some(rest) = pair.strip_prefix(name.as_bytes())
                && let Some(value) = rest.strip_prefix(b"=")
            {
                return Some(value.trim_ascii());
            }
        }
    }
    None
}

/// Every canary annotation name (without prefix).
const NAMES: &[&str] = &[
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
    "canary-weight",
    "canary-weight-total",
];

/// Reads `canary` and the `canary-*` annotations. `None`: not a canary Ingress (canary settings
/// without `canary: "true"` are reported and ignored, as ingress-nginx refuses them).
pub(super) fn parse(a: &Reader<'_>) -> Option<CanaryRule> {
    let enabled = a.get("canary", parse_bool).unwrap_or(false);
    if !enabled {
        let set: Vec<&str> = NAMES.iter().copied().filter(|n| a.has(n)).collect();
        if !set.is_empty() {
            a.problems.borrow_mut().push(format!(
                "{} set without canary: \"true\"; ignored",
                set.join(", ")
            ));
        }
        return None;
    }
    let header_name = a.get("canary-by-header", parse_header_name);
    let value = a.get("canary-by-header-value", parse_match_value);
    let pattern = a.get("canary-by-header-pattern", parse_pattern);
    let header = match header_name {
        Some(name) => {
            let how = match (value, pattern) {
                (Some(v), Some(_)) => {
                    a.problems.borrow_mut().push(
                        "canary-by-header-value and canary-by-header-pattern are both set: the value is used, the pattern ignored"
                            .to_owned(),
                    );
                    HeaderMatch::Value(v)
                }
                (Some(v), None) => HeaderMatch::Value(v),
                (None, Some(p)) => HeaderMatch::Pattern(p),
                (None, None) => HeaderMatch::AlwaysNever,
            };
            Some((name, how))
        }
        None => {
            for n in ["canary-by-header-value", "canary-by-header-pattern"] {
                if a.has(n) && !a.has("canary-by-header") {
                    a.problems
                        .borrow_mut()
                        .push(format!("{n} set without canary-by-header; ignored"));
                }
            }
            None
        }
    };
    let cookie = a.get("canary-by-cookie", parse_cookie_name);
    let weight_total = a
        .get("canary-weight-total", |v| {
            let n = parse_u64(v, u64::from(MAX_WEIGHT_TOTAL))?;
            if n < u64::from(DEFAULT_WEIGHT_TOTAL) {
                // ingress-nginx silently uses 100 for a smaller total; say so instead.
                return Err(format!(
                    "{v:?} is below {DEFAULT_WEIGHT_TOTAL} (ingress-nginx treats it as {DEFAULT_WEIGHT_TOTAL})"
                ));
            }
            Ok(n as u32)
        })
        .unwrap_or(DEFAULT_WEIGHT_TOTAL);
    let weight = a
        .get("canary-weight", |v| {
            parse_u64(v, u64::from(weight_total))
                .map(|n| n as u32)
                .map_err(|e| format!("{e} (canary-weight-total)"))
        })
        .unwrap_or(0);
    Some(CanaryRule {
        header,
        cookie,
        weight,
        weight_total,
        weight_step: step_for(weight_total),
    })
}

/// A step near the golden ratio of `total` that shares no factor with it, so that
/// `n * step mod total` visits every slot once per `total` requests.
fn step_for(total: u32) -> u32 {
    let total = total.max(1);
    let mut step = ((u64::from(total) * 618) / 1000).max(1) as u32;
    while gcd(step, total) != 1 {
        step += 1;
    }
    step
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn parse_header_name(v: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(v.as_bytes()).map_err(|_| format!("{v:?} is not a header name"))
}

fn parse_match_value(v: &str) -> Result<HeaderValue, String> {
    if v.is_empty() {
        return Err("empty value".to_owned());
    }
    super::parse_header_value(v)
}

fn parse_pattern(v: &str) -> Result<regex::bytes::Regex, String> {
    if v.is_empty() {
        return Err("empty pattern".to_owned());
    }
    if v.len() > MAX_REGEX_LEN {
        return Err(format!("longer than {MAX_REGEX_LEN} characters"));
    }
    regex::bytes::RegexBuilder::new(v)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("{v:?} is not a regular expression tandem accepts: {e}"))
}

/// A cookie name: an RFC 6265 token.
fn parse_cookie_name(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(v.to_owned())
    } else {
        Err(format!("{v:?} is not a cookie name"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::annotations::{NGINX_PREFIX, TANDEM_PREFIX, parse as parse_all};

    fn canary(pairs: &[(&str, &str)]) -> (Option<CanaryRule>, Vec<String>) {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (format!("{NGINX_PREFIX}{k}"), (*v).to_owned()))
            .collect();
        let a = parse_all(Some(&map));
        (a.canary.map(|c| (*c).clone()), a.problems)
    }

    fn hv(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    fn verdict(
        rule: &CanaryRule,
        header: Option<&'static str>,
        cookie: Option<&'static str>,
    ) -> Verdict {
        let h = header.map(hv);
        let c: Vec<HeaderValue> = cookie.map(hv).into_iter().collect();
        rule.verdict(|_| h.as_ref(), c.iter())
    }

    #[test]
    fn not_a_canary_without_the_switch() {
        let (c, p) = canary(&[]);
        assert!(c.is_none() && p.is_empty());
        let (c, p) = canary(&[("canary", "false")]);
        assert!(c.is_none() && p.is_empty());
        let (c, p) = canary(&[("canary-weight", "10"), ("canary-by-cookie", "c")]);
        assert!(c.is_none());
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("canary-by-cookie, canary-weight set without canary"),
            "{p:?}"
        );
        let (c, p) = canary(&[("canary", "yes")]);
        assert!(c.is_none() && p.len() == 1, "{p:?}");
    }

    #[test]
    fn defaults_and_tandem_prefix() {
        let (c, p) = canary(&[("canary", "true")]);
        assert!(p.is_empty());
        let c = c.unwrap();
        assert_eq!((c.weight, c.weight_total), (0, 100));
        assert!(c.header.is_none() && c.cookie.is_none());
        let map: BTreeMap<String, String> = [
            (format!("{TANDEM_PREFIX}canary"), "true".to_owned()),
            (format!("{TANDEM_PREFIX}canary-weight"), "30".to_owned()),
        ]
        .into_iter()
        .collect();
        let a = parse_all(Some(&map));
        assert_eq!(a.canary.unwrap().weight, 30);
    }

    #[test]
    fn header_precedence_then_cookie_then_weight() {
        let (c, p) = canary(&[
            ("canary", "true"),
            ("canary-by-header", "X-Canary"),
            ("canary-by-cookie", "canary"),
        ]);
        assert!(p.is_empty(), "{p:?}");
        let c = c.unwrap();
        assert_eq!(
            verdict(&c, Some("always"), Some("canary=never")),
            Verdict::Canary
        );
        assert_eq!(
            verdict(&c, Some("never"), Some("canary=always")),
            Verdict::Main
        );
        assert_eq!(
            verdict(&c, Some("other"), Some("a=b; canary=always")),
            Verdict::Canary
        );
        assert_eq!(verdict(&c, None, Some("canary=never")), Verdict::Main);
        assert_eq!(verdict(&c, None, Some("canary=maybe")), Verdict::ByWeight);
        assert_eq!(verdict(&c, None, Some("xcanary=always")), Verdict::ByWeight);
        assert_eq!(verdict(&c, None, None), Verdict::ByWeight);
    }

    #[test]
    fn header_value_and_pattern() {
        let (c, _) = canary(&[
            ("canary", "true"),
            ("canary-by-header", "x-canary"),
            ("canary-by-header-value", "blue"),
        ]);
        let c = c.unwrap();
        assert_eq!(verdict(&c, Some("blue"), None), Verdict::Canary);
        // With a value, always/never are ordinary values.
        assert_eq!(verdict(&c, Some("always"), None), Verdict::ByWeight);
        assert_eq!(
            verdict(&c, Some("never"), Some("canary=x")),
            Verdict::ByWeight
        );
        let (c, _) = canary(&[
            ("canary", "true"),
            ("canary-by-header", "x-canary"),
            ("canary-by-header-pattern", "^(beta|gamma)-[0-9]+$"),
        ]);
        let c = c.unwrap();
        assert_eq!(verdict(&c, Some("beta-12"), None), Verdict::Canary);
        assert_eq!(verdict(&c, Some("alpha-1"), None), Verdict::ByWeight);
        let (c, p) = canary(&[
            ("canary", "true"),
            ("canary-by-header", "x-canary"),
            ("canary-by-header-value", "v"),
            ("canary-by-header-pattern", "p"),
        ]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(matches!(
            c.unwrap().header,
            Some((_, HeaderMatch::Value(_)))
        ));
    }

    #[test]
    fn invalid_values_are_reported_and_ignored() {
        for (name, value) in [
            ("canary-by-header", "bad header"),
            ("canary-by-header-pattern", "(unclosed"),
            ("canary-by-header-pattern", "a{100000}"),
            ("canary-by-cookie", "bad;cookie"),
            ("canary-weight", "-1"),
            ("canary-weight", "101"),
            ("canary-weight", "ten"),
            ("canary-weight-total", "0"),
            ("canary-weight-total", "50"),
            ("canary-weight-total", "2000000"),
        ] {
            let extra = if name == "canary-by-header-pattern" {
                vec![("canary-by-header", "x")]
            } else {
                vec![]
            };
            let mut pairs = vec![("canary", "true"), (name, value)];
            pairs.extend(extra);
            let (c, p) = canary(&pairs);
            assert_eq!(p.len(), 1, "{name}={value:?}: {p:?}");
            assert!(p[0].contains(name), "{p:?}");
            let c = c.expect("still a canary");
            assert!(c.weight <= c.weight_total);
        }
        let (_, p) = canary(&[("canary", "true"), ("canary-by-header-value", "v")]);
        assert_eq!(p.len(), 1, "{p:?}");
        // A weight above 100 is fine with a larger total.
        let (c, p) = canary(&[
            ("canary", "true"),
            ("canary-weight", "250"),
            ("canary-weight-total", "1000"),
        ]);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c.unwrap().weight, 250);
    }

    #[test]
    fn weight_is_exact_per_total_and_spread() {
        for (w, total) in [
            (0, 100),
            (30, 100),
            (100, 100),
            (1, 100),
            (333, 1000),
            (7, 150),
        ] {
            let rule = CanaryRule {
                header: None,
                cookie: None,
                weight: w,
                weight_total: total,
                weight_step: step_for(total),
            };
            for start in [0u64, 17, 1 << 40] {
                let hits = (0..u64::from(total))
                    .filter(|i| rule.by_weight(|| start + *i))
                    .count();
                assert_eq!(hits, w as usize, "w={w} total={total} start={start}");
            }
        }
        // Spread: 30 of 100 are not the first 30 in a row.
        let rule = CanaryRule {
            header: None,
            cookie: None,
            weight: 30,
            weight_total: 100,
            weight_step: step_for(100),
        };
        let first_ten = (0..10).filter(|i| rule.by_weight(|| *i)).count();
        assert!((1..=6).contains(&first_ten), "{first_ten}");
    }

    #[test]
    fn step_is_coprime() {
        for t in [1, 2, 3, 100, 150, 1000, 1024, 999_983, MAX_WEIGHT_TOTAL] {
            assert_eq!(gcd(step_for(t), t), 1, "{t}");
        }
    }
}
