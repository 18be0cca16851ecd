//! The access log: one record per request. The worker only captures the raw fields (moving what
//! the finished request no longer needs, copying the path) and hands the record to a sink; the
//! log-writer thread formats it as the same JSON line the `tracing` JSON formatter writes
//! (`timestamp`, `level`, `message`, the fields in order, `target`), escaping with `serde_json`.
//! Without a sink (text format, tests) the record goes through `tracing`.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use http::{Method, Version};

use crate::route_table::RouteTarget;

/// Where records go instead of `tracing` (the log-writer thread's queue).
pub trait AccessLogSink: Send + Sync + 'static {
    fn send(&self, record: Box<AccessRecord>);
}

static SINK: OnceLock<Box<dyn AccessLogSink>> = OnceLock::new();

/// Installs the process's sink (once; `false` if one was already installed). Records are then
/// formatted by [`AccessRecord::write_json`] wherever the sink does it.
pub fn set_sink(sink: Box<dyn AccessLogSink>) -> bool {
    SINK.set(sink).is_ok()
}

/// One finished request, as logged.
#[derive(Debug)]
pub struct AccessRecord {
    pub(crate) time: SystemTime,
    pub(crate) tier: &'static str,
    pub(crate) request_id: http::HeaderValue,
    pub(crate) client: Option<IpAddr>,
    pub(crate) method: Method,
    pub(crate) host: crate::request::Authority,
    /// Path and query as the client sent them.
    pub(crate) path: String,
    pub(crate) proto: Version,
    pub(crate) status: u16,
    pub(crate) bytes: usize,
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) attempts: usize,
    /// The route (ingress, fallback) and whether its canary served (service, backend).
    pub(crate) route: Option<Arc<RouteTarget>>,
    pub(crate) canary: bool,
    pub(crate) local: Option<&'static str>,
    pub(crate) upstream_connect_ms: Option<f64>,
    pub(crate) duration_ms: f64,
    pub(crate) error: Option<String>,
}

impl AccessRecord {
    /// Sends the record to the sink, or logs it through `tracing` when there is none.
    pub(crate) fn submit(self: Box<Self>) {
        match SINK.get() {
            Some(sink) => sink.send(self),
            None => self.emit_tracing(),
        }
    }

    fn names(&self) -> (&str, &str, &str) {
        let Some(route) = self.route.as_deref() else {
            return ("", "", "");
        };
        let backend = match &route.canary {
            Some(c) if self.canary => &c.backend,
            _ => &route.backend,
        };
        (&route.ingress, &backend.service, &backend.label)
    }

    /// The line through `tracing` (its formatter and filters decide).
    pub fn emit_tracing(&self) {
        let (ingress, service, backend) = self.names();
        tracing::info!(
            target: "tandem::access",
            tier = self.tier,
            request_id = self.request_id.to_str().unwrap_or(""),
            client = self.client.map(|c| c.to_string()).unwrap_or_default(),
            method = self.method.as_str(),
            host = self.host.as_str(),
            path = self.path.as_str(),
            proto = ?self.proto,
            status = self.status,
            bytes = self.bytes,
            upstream = self.upstream.map(|u| u.to_string()).unwrap_or_default(),
            attempts = self.attempts,
            ingress,
            service,
            backend,
            fallback = self.route.as_ref().is_some_and(|r| r.fallback),
            canary = self.canary,
            local = self.local.unwrap_or(""),
            upstream_connect_ms = self.upstream_connect_ms,
            duration_ms = self.duration_ms,
            error = self.error.as_deref(),
            "request"
        );
    }

    /// Appends the JSON line (with its newline) the `tracing` JSON formatter (flattened, no
    /// spans) would write for [`Self::emit_tracing`]; numbers and addresses without `fmt`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let (ingress, service, backend) = self.names();
        out.extend_from_slice(b"{\"timestamp\":\"");
        write_timestamp(out, self.time);
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"tier\":");
        json_str(out, self.tier);
        out.extend_from_slice(b",\"request_id\":");
        json_str(out, self.request_id.to_str().unwrap_or(""));
        out.extend_from_slice(b",\"client\":\"");
        if let Some(c) = self.client {
            // Addresses never need escaping.
            write_ip(out, c);
        }
        out.extend_from_slice(b"\",\"method\":");
        json_str(out, self.method.as_str());
        out.extend_from_slice(b",\"host\":");
        json_str(out, self.host.as_str());
        out.extend_from_slice(b",\"path\":");
        json_str(out, &self.path);
        out.extend_from_slice(b",\"proto\":\"");
        out.extend_from_slice(version_str(self.proto).as_bytes());
        out.extend_from_slice(b"\",\"status\":");
        write_int(out, u64::from(self.status));
        out.extend_from_slice(b",\"bytes\":");
        write_int(out, self.bytes as u64);
        out.extend_from_slice(b",\"upstream\":\"");
        if let Some(u) = self.upstream {
            match u {
                SocketAddr::V4(v4) => {
                    write_ip(out, IpAddr::V4(*v4.ip()));
                    out.push(b':');
                    write_int(out, u64::from(v4.port()));
                }
                // `[addr%scope]:port`, as Display writes it: rare enough for `fmt`.
                SocketAddr::V6(v6) => {
                    let _ = write!(out, "{v6}");
                }
            }
        }
        out.extend_from_slice(b"\",\"attempts\":");
        write_int(out, self.attempts as u64);
        out.extend_from_slice(b",\"ingress\":");
        json_str(out, ingress);
        out.extend_from_slice(b",\"service\":");
        json_str(out, service);
        out.extend_from_slice(b",\"backend\":");
        json_str(out, backend);
        let fallback = self.route.as_ref().is_some_and(|r| r.fallback);
        out.extend_from_slice(b",\"fallback\":");
        out.extend_from_slice(if fallback { b"true" } else { b"false" });
        out.extend_from_slice(b",\"canary\":");
        out.extend_from_slice(if self.canary { b"true" } else { b"false" });
        out.extend_from_slice(b",\"local\":");
        json_str(out, self.local.unwrap_or(""));
        if let Some(ms) = self.upstream_connect_ms {
            out.extend_from_slice(b",\"upstream_connect_ms\":");
            json_f64(out, ms);
        }
        out.extend_from_slice(b",\"duration_ms\":");
        json_f64(out, self.duration_ms);
        if let Some(e) = &self.error {
            out.extend_from_slice(b",\"error\":");
            json_str(out, e);
        }
        out.extend_from_slice(b",\"target\":\"tandem::access\"}\n");
    }
}

/// A JSON string, escaped exactly as the `tracing` JSON formatter does (it uses `serde_json`).
fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A float as `serde_json` writes it (shortest round-trip form; not finite: `null`).
fn json_f64(out: &mut Vec<u8>, v: f64) {
    let _ = serde_json::to_writer(&mut *out, &v);
}

fn write_int(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// An address as `Display` writes it (IPv4 by hand, IPv6 through `fmt`).
fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            write_int(out, u64::from(a));
            for o in [b, c, d] {
                out.push(b'.');
                write_int(out, u64::from(o));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// `Debug` of the version, which is what the `tracing` line shows.
fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        // Versions are a closed set in practice; an unknown one is shown as `Debug` would.
        _ => "HTTP/?",
    }
}

/// `n` in decimal, zero-padded to `width` digits (at least).
fn write_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n).as_bytes();
    out.extend(std::iter::repeat_n(
        b'0',
        width.saturating_sub(digits.len()),
    ));
    out.extend_from_slice(digits);
}

/// RFC 3339 UTC with microseconds, as `tracing-subscriber`'s default timer writes it.
fn write_timestamp(out: &mut Vec<u8>, t: SystemTime) {
    let (secs, micros) = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => (d.as_secs(), d.subsec_micros()),
        // Before 1970: not a clock this proxy runs on.
        Err(_) => (0, 0),
    };
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    write_padded(out, u64::try_from(year).unwrap_or(0), 4);
    out.push(b'-');
    write_padded(out, u64::from(month), 2);
    out.push(b'-');
    write_padded(out, u64::from(day), 2);
    out.push(b'T');
    write_padded(out, rem / 3600, 2);
    out.push(b':');
    write_padded(out, rem / 60 % 60, 2);
    out.push(b':');
    write_padded(out, rem % 60, 2);
    out.push(b'.');
    write_padded(out, u64::from(micros), 6);
    out.push(b'Z');
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar (the
/// well-known era-based conversion: 400-year eras of 146,097 days, years starting in March).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365, from March 1
    let mp = (5 * doy + 2) / 153; // 0..=11, March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are in range by construction.
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Collects what the `tracing` JSON formatter writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn via_tracing(record: &AccessRecord) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || record.emit_tracing());
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    fn direct(record: &AccessRecord) -> String {
        let mut out = Vec::new();
        record.write_json(&mut out);
        String::from_utf8(out).unwrap()
    }

    /// The timestamp differs (taken at different moments); everything else must be identical.
    fn without_timestamp(line: &str) -> String {
        let rest = line
            .strip_prefix("{\"timestamp\":\"")
            .and_then(|r| r.split_once('"'))
            .map(|(_, r)| r)
            .unwrap();
        rest.to_owned()
    }

    fn record() -> AccessRecord {
        AccessRecord {
            time: SystemTime::now(),
            tier: "router",
            request_id: http::HeaderValue::from_static("0123456789abcdef0123456789abcdef"),
            client: Some("192.0.2.7".parse().unwrap()),
            method: Method::GET,
            host: crate::request::Authority::Target("shop.example.com:8080".to_owned()),
            path: "/api/orders?id=7&x=%2F".to_owned(),
            proto: Version::HTTP_11,
            status: 200,
            bytes: 1234,
            upstream: Some("127.0.0.1:9000".parse().unwrap()),
            attempts: 1,
            route: None,
            canary: false,
            local: None,
            upstream_connect_ms: Some(0.123_456_789),
            duration_ms: 1.5,
            error: None,
        }
    }

    #[test]
    fn same_line_as_the_tracing_formatter() {
        let mut cases = vec![record()];
        let mut r = record();
        // User-controlled fields with everything JSON must escape, and non-ASCII.
        r.path = "/\"q\"\\\u{1}\n\t\u{7f}/é/€/\u{1F600}?a=</script>".to_owned();
        r.host = crate::request::Authority::Target("h\"x".to_owned());
        r.request_id = http::HeaderValue::from_static("id\\\"");
        r.method = Method::from_bytes(b"PURGE").unwrap();
        r.client = Some("2001:db8::1".parse().unwrap());
        r.upstream = Some("[2001:db8::2]:443".parse().unwrap());
        r.proto = Version::HTTP_2;
        r.status = 0;
        r.upstream_connect_ms = None;
        r.duration_ms = 0.0;
        r.error = Some("Upstream ConnectRefused \"x\"\ncontext".to_owned());
        r.local = Some("no_route");
        r.canary = true;
        cases.push(r);
        let mut r = record();
        r.client = None;
        r.upstream = None;
        r.duration_ms = 123_456.000_1;
        r.upstream_connect_ms = Some(1e-7);
        r.proto = Version::HTTP_10;
        cases.push(r);
        for r in &cases {
            let ours = direct(r);
            let theirs = via_tracing(r);
            assert_eq!(without_timestamp(&ours), without_timestamp(&theirs));
            let v: serde_json::Value = serde_json::from_str(&ours).unwrap();
            assert_eq!(v["path"].as_str(), Some(r.path.as_str()));
        }
    }

    #[test]
    fn versions_and_addresses_as_display_writes_them() {
        for v in [
            Version::HTTP_09,
            Version::HTTP_10,
            Version::HTTP_11,
            Version::HTTP_2,
            Version::HTTP_3,
        ] {
            assert_eq!(version_str(v), format!("{v:?}"));
        }
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.12.1",
            "::1",
            "::ffff:1.2.3.4",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            write_ip(&mut out, ip);
            assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
    }

    #[test]
    fn timestamps_match_the_tracing_timer() {
        use tracing_subscriber::fmt::time::{FormatTime, SystemTime as Timer};
        // Dates around leap days, century rules, the epoch and the last 4-digit year.
        for (secs, want) in [
            (0u64, "1970-01-01T00:00:00"),
            (951_782_400, "2000-02-29T00:00:00"),
            (951_868_799, "2000-02-29T23:59:59"),
            (4_107_542_400, "2100-03-01T00:00:00"),
            (1_709_251_199, "2024-02-29T23:59:59"),
            (1_764_950_400, "2025-12-05T16:00:00"),
            (253_402_300_799, "9999-12-31T23:59:59"),
        ] {
            let t = SystemTime::UNIX_EPOCH + Duration::new(secs, 123_456_789);
            let mut ours = Vec::new();
            write_timestamp(&mut ours, t);
            assert_eq!(String::from_utf8(ours).unwrap(), format!("{want}.123456Z"));
        }
        // And against the formatter's own reading of the clock, taken between two of ours: the
        // same format sorts by time.
        let stamp = |t: SystemTime| {
            let mut out = Vec::new();
            write_timestamp(&mut out, t);
            String::from_utf8(out).unwrap()
        };
        let before = stamp(SystemTime::now());
        let mut theirs = String::new();
        Timer
            .format_time(&mut tracing_subscriber::fmt::format::Writer::new(
                &mut theirs,
            ))
            .unwrap();
        let after = stamp(SystemTime::now());
        assert!(
            before <= theirs && theirs <= after,
            "{before} {theirs} {after}"
        );
        assert_eq!(before.len(), theirs.len());
    }
}
