//! The pure parts of load balancing: a hash that is stable across processes and versions (hash
//! keys and affinity cookies must map alike on every replica and after an upgrade), the
//! consistent-hash ring, the smooth weighted round-robin schedule, hash keys read from a
//! request, affinity cookie values, and the EWMA.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::header;
use k8s_sync::annotations::balance::{HashKey, KeyPart};
use pingora_http::RequestHeader;

/// Points per endpoint on the ring: enough that each endpoint's share is within a few percent
/// of 1/N, so a membership change moves close to 1/N of the keys.
const VNODES: u32 = 160;

/// FNV-1a 64, finished with a 64-bit mixer (FNV alone spreads short keys poorly).
#[derive(Clone, Copy)]
pub struct StableHasher(u64);

impl Default for StableHasher {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl StableHasher {
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_lower(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write(&[b.to_ascii_lowercase()]);
        }
    }

    pub fn finish(&self) -> u64 {
        mix(self.0)
    }
}

/// The murmur3 64-bit finalizer.
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// An endpoint's stable id: the hash of its `ip:port` text. Names it on the ring and in
/// affinity cookies (which so never carry the address itself).
pub fn endpoint_id(addr: SocketAddr) -> u64 {
    let mut h = StableHasher::default();
    h.write(addr.to_string().as_bytes());
    h.finish()
}

/// Most points on a weighted ring (16 bytes each), unless the endpoints at [`VNODES`] each take
/// more.
const MAX_RING_POINTS: u64 = 65_536;
/// Longest weighted round-robin schedule, unless there are more endpoints than that.
pub const MAX_SCHEDULE: u64 = 4096;

/// A consistent-hash ring: [`VNODES`] points per endpoint (per unit of weight, weights divided
/// by their greatest common divisor), sorted. Adding or removing one of N endpoints moves only
/// the keys of its own points (about 1/N of them).
#[derive(Debug, Default)]
pub struct Ring {
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// The ring of endpoints with these ids; a point's value is the index into `ids`.
    pub fn build(ids: &[u64]) -> Self {
        Self::with_points(ids.iter().map(|id| (*id, VNODES)))
    }

    /// The ring of endpoints with these ids and weights (same length): points in proportion to
    /// the weight, none for weight 0. Equal weights give the ring of [`Ring::build`].
    pub fn build_weighted(ids: &[u64], weights: &[u16]) -> Self {
        let points = ring_points(weights);
        Self::with_points(ids.iter().copied().zip(points))
    }

    fn with_points(endpoints: impl Iterator<Item = (u64, u32)>) -> Self {
        let mut points = Vec::new();
        for (i, (id, n)) in endpoints.enumerate() {
            let Ok(i) = u32::try_from(i) else { break };
            // An endpoint's first points are the same whatever its weight, so a weight change
            // moves only the keys of the points added or removed.
            for v in 0..n {
                points.push((mix(id ^ mix(u64::from(v) + 1)), i));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    /// Endpoint indices in ring order from `key` on (with repeats, each point once).
    pub fn walk(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|(p, _)| *p < key);
        let (before, after) = self.points.split_at(start);
        after.iter().chain(before).map(|(_, i)| *i as usize)
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Weights divided by their greatest common divisor; when the sum exceeds `cap`, scaled down
/// to about `cap` in all (a weight above 0 keeps at least 1).
fn reduced(weights: &[u16], cap: u64) -> Vec<u64> {
    let g = weights.iter().map(|w| u64::from(*w)).fold(0, gcd).max(1);
    let w: Vec<u64> = weights.iter().map(|x| u64::from(*x) / g).collect();
    let sum: u64 = w.iter().sum();
    if sum <= cap {
        return w;
    }
    w.iter()
        .map(|x| match x {
            0 => 0,
            x => ((x * cap + sum / 2) / sum).max(1),
        })
        .collect()
}

/// Ring points per endpoint: [`VNODES`] per unit of reduced weight, at most about
/// [`MAX_RING_POINTS`] in all (or `VNODES` per endpoint, when there are that many).
fn ring_points(weights: &[u16]) -> Vec<u32> {
    let units = reduced(weights, u64::MAX / u64::from(VNODES));
    let cap = MAX_RING_POINTS.max(u64::from(VNODES) * weights.len() as u64);
    let total: u64 = units.iter().map(|u| u * u64::from(VNODES)).sum();
    units
        .iter()
        .map(|u| {
            let p = u * u64::from(VNODES);
            let p = if total > cap && p > 0 {
                (p * cap / total).max(1)
            } else {
                p
            };
            u32::try_from(p).unwrap_or(u32::MAX)
        })
        .collect()
}

/// The smooth weighted round-robin order of endpoints (indices into `weights`), as nginx
/// interleaves them: each turn every endpoint gains its weight, the one with the most is
/// picked and gives up the sum. One cycle holds each endpoint exactly its (reduced) weight
/// times, spread out rather than in runs; weight 0 never appears. Weights are divided by their
/// greatest common divisor and the cycle is at most about [`MAX_SCHEDULE`] long (or one turn
/// per endpoint). Built once per endpoint change, off the data path: O(cycle × endpoints).
pub fn smooth_schedule(weights: &[u16]) -> Vec<u32> {
    let w: Vec<i64> = reduced(weights, MAX_SCHEDULE.max(weights.len() as u64))
        .into_iter()
        .map(|x| i64::try_from(x).unwrap_or(i64::MAX))
        .collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best: Option<usize> = None;
        for (i, wi) in w.iter().enumerate() {
            if *wi == 0 {
                continue;
            }
            current[i] += wi;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let Some(b) = best else { break };
        current[b] -= total;
        let Ok(b) = u32::try_from(b) else { break };
        out.push(b);
    }
    out
}

/// What a request offers a hash key: the client address after trusted-proxy handling, the
/// authority as sent and the normalised path.
pub struct KeySource<'a> {
    pub req: &'a RequestHeader,
    pub client: Option<IpAddr>,
    pub authority: &'a str,
    pub path: &'a str,
}

/// The request's hash key, or `None` when every variable of the expression is empty (then the
/// route's algorithm picks, rather than sending all such requests to one endpoint).
pub fn hash_key(key: &HashKey, src: &KeySource<'_>) -> Option<u64> {
    let mut h = StableHasher::default();
    let mut any = false;
    for part in &key.parts {
        let before = h.0;
        match part {
            KeyPart::Text(t) => {
                h.write(t.as_bytes());
                continue;
            }
            KeyPart::RemoteAddr => match src.client {
                Some(IpAddr::V4(v4)) => h.write(&v4.octets()),
                Some(IpAddr::V6(v6)) => h.write(&v6.octets()),
                None => {}
            },
            KeyPart::RequestUri => h.write(
                src.req
                    .uri
                    .path_and_query()
                    .map_or(b"/", |p| p.as_str().as_bytes()),
            ),
            KeyPart::Uri => h.write(src.path.as_bytes()),
            KeyPart::Args => h.write(src.req.uri.query().unwrap_or("").as_bytes()),
            KeyPart::Host => h.write_lower(strip_port(src.authority).as_bytes()),
            KeyPart::Header(name) => {
                for (i, v) in src.req.headers.get_all(name).iter().enumerate() {
                    if i > 0 {
                        h.write(b", ");
                    }
                    h.write(v.as_bytes());
                }
            }
            KeyPart::Cookie(name) => h.write(cookie(src.req, name).unwrap_or("").as_bytes()),
            KeyPart::Arg(name) => {
                h.write(
                    query_arg(src.req.uri.query(), name)
                        .unwrap_or("")
                        .as_bytes(),
                );
            }
        }
        // A variable that wrote nothing was empty (FNV changes its state on every byte).
        any |= h.0 != before;
    }
    any.then(|| h.finish())
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority, |i| &authority[..=i]);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// The value of cookie `name` in the request's `Cookie` headers (HTTP/2 may split them).
pub fn cookie<'r>(req: &'r RequestHeader, name: &str) -> Option<&'r str> {
    req.headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n.trim() == name).then(|| v.trim().trim_matches('"'))
        })
}

fn query_arg<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// The affinity cookie value naming an endpoint: its id in 16 hex digits.
pub fn cookie_value(id: u64) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((id >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// The endpoint id in an affinity cookie, or `None` for a value tandem did not write.
pub fn parse_cookie_value(v: &str) -> Option<u64> {
    (v.len() == 16 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(v, 16).ok())
        .flatten()
}

/// Time constant of the latency EWMA: a sample's weight halves in about 7 s (ingress-nginx and
/// Finagle use 10 s too).
pub const EWMA_TAU: Duration = Duration::from_secs(10);

/// The EWMA `ewma` (taken `elapsed` ago) decayed to now, with `sample` folded in when given.
pub fn ewma(ewma: f64, elapsed: Duration, sample: Option<f64>) -> f64 {
    let w = (-elapsed.as_secs_f64() / EWMA_TAU.as_secs_f64()).exp();
    ewma * w + sample.unwrap_or(0.0) * (1.0 - w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| endpoint_id(SocketAddr::from(([10, 0, 0, i as u8 + 1], 8080))))
            .collect()
    }

    fn owner(ring: &Ring, ids: &[u64], key: u64) -> u64 {
        ids[ring.walk(key).next().unwrap()]
    }

    #[test]
    fn ring_moves_about_one_nth_of_keys_on_membership_change() {
        let keys: Vec<u64> = (0..10_000u64)
            .map(|k| {
                let mut h = StableHasher::default();
                h.write(format!("user-{k}").as_bytes());
                h.finish()
            })
            .collect();
        let ten = ids(10);
        let eleven = ids(11);
        let (r10, r11) = (Ring::build(&ten), Ring::build(&eleven));
        let moved = keys
            .iter()
            .filter(|k| owner(&r10, &ten, **k) != owner(&r11, &eleven, **k))
            .count();
        // Only keys taken by the new endpoint move: 1/11 expected.
        let frac = moved as f64 / keys.len() as f64;
        assert!(frac > 0.05 && frac < 1.3 / 10.0, "moved {frac}");
        let to_new = keys
            .iter()
            .filter(|k| owner(&r10, &ten, **k) != owner(&r11, &eleven, **k))
            .all(|k| owner(&r11, &eleven, *k) == eleven[10]);
        assert!(to_new, "a key moved between two old endpoints");
        // Removing one of ten moves only that endpoint's keys.
        let nine = &ten[1..];
        let r9 = Ring::build(nine);
        for k in &keys {
            let before = owner(&r10, &ten, *k);
            if before != ten[0] {
                assert_eq!(owner(&r9, nine, *k), before);
            }
        }
        // Shares are even enough.
        let mut counts = std::collections::HashMap::new();
        for k in &keys {
            *counts.entry(owner(&r10, &ten, *k)).or_insert(0usize) += 1;
        }
        assert!(
            counts.values().all(|c| (700..1300).contains(c)),
            "{counts:?}"
        );
    }

    #[test]
    fn ring_walk_visits_every_endpoint() {
        let ids = ids(5);
        let ring = Ring::build(&ids);
        let mut seen: Vec<usize> = ring.walk(12345).collect();
        assert_eq!(seen.len(), 5 * VNODES as usize);
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        assert_eq!(Ring::build(&[]).walk(1).count(), 0);
    }

    fn cycle_counts(schedule: &[u32], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for i in schedule {
            c[*i as usize] += 1;
        }
        c
    }

    /// The longest run of one endpoint in the schedule, wrapping around (it repeats).
    fn longest_run(schedule: &[u32]) -> usize {
        let twice: Vec<u32> = schedule.iter().chain(schedule).copied().collect();
        let mut best = 0;
        let mut run = 0;
        for (i, x) in twice.iter().enumerate() {
            run = if i > 0 && twice[i - 1] == *x {
                run + 1
            } else {
                1
            };
            best = best.max(run);
        }
        best.min(schedule.len())
    }

    #[test]
    fn smooth_schedule_counts_exactly_and_interleaves() {
        let s = smooth_schedule(&[3, 1]);
        assert_eq!(s.len(), 4);
        assert_eq!(cycle_counts(&s, 2), vec![3, 1]);
        assert_eq!(longest_run(&s), 3, "{s:?}");
        let s = smooth_schedule(&[5, 3, 2]);
        assert_eq!(s.len(), 10);
        assert_eq!(cycle_counts(&s, 3), vec![5, 3, 2]);
        // nginx's interleaving: never two of the heaviest in a row more than ceil(5/5)+1.
        assert!(longest_run(&s) <= 2, "{s:?}");
        assert_eq!(s, vec![0, 1, 2, 0, 0, 1, 0, 2, 1, 0]);
        // Reduced by the gcd: 6:2 is 3:1.
        assert_eq!(smooth_schedule(&[6, 2]), smooth_schedule(&[3, 1]));
        // Weight 0 never appears.
        let s = smooth_schedule(&[2, 0, 1]);
        assert_eq!(cycle_counts(&s, 3), vec![2, 0, 1]);
        // All 0 (never given by translation): an empty schedule.
        assert!(smooth_schedule(&[0, 0]).is_empty());
        assert_eq!(smooth_schedule(&[7]), vec![0]);
        assert!(smooth_schedule(&[]).is_empty());
        // Spread: 10:1:1 puts the light ones apart (a blocked order would run the heavy one
        // 10 times); nginx's interleaving gives runs of 4 and 3, which the cycle's wrap-around
        // joins into 7.
        let s = smooth_schedule(&[10, 1, 1]);
        assert_eq!(cycle_counts(&s, 3), vec![10, 1, 1]);
        assert!(longest_run(&s) <= 7, "{s:?}");
        assert!(s.windows(2).all(|w| w[0] == 0 || w[1] == 0), "{s:?}");
        // One heavy and four light endpoints: the light ones never meet, the heavy one runs
        // at most 4 times (wrap-around included; 2 is even).
        let s = smooth_schedule(&[8, 1, 1, 1, 1]);
        assert_eq!(cycle_counts(&s, 5), vec![8, 1, 1, 1, 1]);
        assert!(s.windows(2).all(|w| w[0] == 0 || w[1] == 0), "{s:?}");
        assert!(longest_run(&s) <= 4, "{s:?}");
    }

    #[test]
    fn smooth_schedule_is_capped() {
        // 256:255:…: the sum would be 32,640; scaled to about 4096, shares kept within 1 %.
        let weights: Vec<u16> = (1..=256).rev().collect();
        let s = smooth_schedule(&weights);
        assert!(
            s.len() <= MAX_SCHEDULE as usize + weights.len(),
            "{}",
            s.len()
        );
        let c = cycle_counts(&s, weights.len());
        assert!(c.iter().all(|n| *n >= 1), "an endpoint above 0 vanished");
        let share = c[0] as f64 / s.len() as f64;
        let want = 256.0 / 32_896.0;
        assert!((share - want).abs() / want < 0.05, "{share} vs {want}");
        // More endpoints than the cap: each at least once.
        let many = [1u16, 2].repeat(3000);
        let s = smooth_schedule(&many);
        assert!(cycle_counts(&s, many.len()).iter().all(|n| *n >= 1));
    }

    #[test]
    fn ring_points_follow_weights() {
        let ids = ids(3);
        // Equal weights: exactly the unweighted ring.
        let plain = Ring::build(&ids);
        let same = Ring::build_weighted(&ids, &[4, 4, 4]);
        assert_eq!(plain.points, same.points);
        // 3:1:0: points in proportion, none for weight 0.
        let ring = Ring::build_weighted(&ids, &[3, 1, 0]);
        let mut per = [0usize; 3];
        for (_, i) in &ring.points {
            per[*i as usize] += 1;
        }
        assert_eq!(per, [3 * VNODES as usize, VNODES as usize, 0]);
        assert!(ring.walk(5).all(|i| i != 2));
        // Keys follow the weights (within a few percent).
        let mut owners = [0usize; 3];
        for k in 0..20_000u64 {
            owners[ring.walk(mix(k)).next().unwrap()] += 1;
        }
        let share = owners[0] as f64 / 20_000.0;
        assert!((share - 0.75).abs() < 0.04, "{owners:?}");
        // The lighter endpoint's points are its unweighted ones: raising a weight moves keys
        // only to that endpoint.
        let before = Ring::build_weighted(&ids, &[1, 1, 1]);
        let after = Ring::build_weighted(&ids, &[2, 1, 1]);
        for k in 0..5_000u64 {
            let (b, a) = (
                before.walk(mix(k)).next().unwrap(),
                after.walk(mix(k)).next().unwrap(),
            );
            assert!(a == b || a == 0, "key {k} moved from {b} to {a}");
        }
        // Capped: 256:1 over many endpoints stays near MAX_RING_POINTS.
        let many = self::ids(200);
        let mut w = vec![1u16; 200];
        w[0] = 256;
        let ring = Ring::build_weighted(&many, &w);
        assert!(
            ring.points.len() as u64 <= MAX_RING_POINTS + 200,
            "{}",
            ring.points.len()
        );
        assert!((0..200).all(|i| ring.points.iter().any(|(_, x)| *x == i)));
    }

    #[test]
    fn stable_hash_is_fixed() {
        // Cookies written by one version must be read by the next: the values are pinned.
        let id = endpoint_id("10.0.0.1:8080".parse().unwrap());
        assert_eq!(id, endpoint_id("10.0.0.1:8080".parse().unwrap()));
        assert_ne!(id, endpoint_id("10.0.0.1:8081".parse().unwrap()));
        let mut h = StableHasher::default();
        h.write(b"");
        assert_eq!(h.finish(), mix(0xcbf2_9ce4_8422_2325));
    }

    #[test]
    fn cookie_values_round_trip() {
        for id in [0u64, 1, u64::MAX, 0x0123_4567_89ab_cdef] {
            let v = cookie_value(id);
            let s = std::str::from_utf8(&v).unwrap();
            assert_eq!(parse_cookie_value(s), Some(id));
        }
        for bad in [
            "",
            "xyz",
            "0123456789abcdeg",
            "0123456789abcdef0",
            "+123456789abcdef",
        ] {
            assert_eq!(parse_cookie_value(bad), None, "{bad:?}");
        }
    }

    fn req(headers: &[(&str, &str)], uri: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", uri.as_bytes(), None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn cookies_are_found_across_headers() {
        let r = req(
            &[("cookie", "a=1; INGRESSCOOKIE=abc"), ("cookie", "b=\"2\"")],
            "/",
        );
        assert_eq!(cookie(&r, "INGRESSCOOKIE"), Some("abc"));
        assert_eq!(cookie(&r, "b"), Some("2"));
        assert_eq!(cookie(&r, "c"), None);
        assert_eq!(cookie(&r, "INGRESS"), None);
    }

    #[test]
    fn hash_keys() {
        let k = k8s_sync::annotations::balance::parse_hash_by;
        let r = req(&[("x-user", "alice"), ("cookie", "s=1")], "/p?id=7&x=1");
        let src = |r| KeySource {
            req: r,
            client: Some("192.0.2.1".parse().unwrap()),
            authority: "Example.com:8080",
            path: "/p",
        };
        let user = hash_key(&k("$http_x_user").unwrap(), &src(&r));
        assert!(user.is_some());
        let r2 = req(&[("x-user", "alice")], "/other");
        assert_eq!(user, hash_key(&k("$http_x_user").unwrap(), &src(&r2)));
        let r3 = req(&[("x-user", "bob")], "/p");
        assert_ne!(user, hash_key(&k("$http_x_user").unwrap(), &src(&r3)));
        // Absent: no key, the algorithm picks.
        let bare = req(&[], "/p");
        assert_eq!(hash_key(&k("$http_x_user").unwrap(), &src(&bare)), None);
        assert_eq!(hash_key(&k("$cookie_s").unwrap(), &src(&bare)), None);
        assert!(hash_key(&k("$cookie_s").unwrap(), &src(&r)).is_some());
        assert!(hash_key(&k("$remote_addr").unwrap(), &src(&bare)).is_some());
        let q = req(&[], "/q?id=7");
        assert_eq!(
            hash_key(&k("$arg_id").unwrap(), &src(&r)),
            hash_key(&k("$arg_id").unwrap(), &src(&q)),
        );
        // $host ignores case and port.
        let mut other = src(&bare);
        other.authority = "example.COM";
        assert_eq!(
            hash_key(&k("$host").unwrap(), &src(&bare)),
            hash_key(&k("$host").unwrap(), &other)
        );
        assert_ne!(
            hash_key(&k("$request_uri").unwrap(), &src(&r)),
            hash_key(&k("$request_uri").unwrap(), &src(&bare))
        );
    }

    #[test]
    fn ewma_decays_toward_samples() {
        let ms = |x: f64| x * 1e6;
        // No time passed: the old value stands.
        assert_eq!(ewma(ms(50.0), Duration::ZERO, Some(ms(1.0))), ms(50.0));
        // One time constant: 1/e of the old value is left.
        let v = ewma(ms(50.0), EWMA_TAU, Some(ms(1.0)));
        let expected = ms(50.0) / std::f64::consts::E + ms(1.0) * (1.0 - 1.0 / std::f64::consts::E);
        assert!((v - expected).abs() < 1.0, "{v} vs {expected}");
        // Decay alone (at pick time) goes toward zero, so an idle slow endpoint is tried again.
        assert!(ewma(ms(50.0), EWMA_TAU * 5, None) < ms(0.5));
        // Many samples converge.
        let mut v = ms(50.0);
        for _ in 0..1000 {
            v = ewma(v, Duration::from_millis(100), Some(ms(2.0)));
        }
        assert!((v - ms(2.0)).abs() < ms(0.01), "{v}");
    }
}
