//! User agents that mishandle `SameSite=None`, for `session-cookie-conditional-samesite-none`:
//! the affinity cookie leaves the attribute out for them. The rules are those of the Chromium
//! project's list of incompatible clients: WebKit on iOS 12 and on macOS 10.14 (Safari and
//! embedded browsers) treats `SameSite=None` as `Strict`; Chrome/Chromium 51 to 66 and UC
//! Browser before 12.13.2 reject cookies that carry it. Plain byte scans, no allocation; only
//! read when a route asks for it.

/// Whether the client with this `User-Agent` mishandles `SameSite=None`.
pub fn rejects_none(ua: &[u8]) -> bool {
    has_webkit_same_site_bug(ua) || drops_unknown_same_site(ua)
}

fn has_webkit_same_site_bug(ua: &[u8]) -> bool {
    ios_major(ua) == Some(12)
        || (macos_version(ua) == Some((10, 14)) && (is_safari(ua) || is_mac_embedded(ua)))
}

fn drops_unknown_same_site(ua: &[u8]) -> bool {
    if find(ua, b"UCBrowser/").is_some() {
        // A UC Browser whose version cannot be read counts as an old one.
        return uc_version(ua).is_none_or(|v| v < (12, 13, 2));
    }
    is_chromium(ua) && chromium_major(ua).is_some_and(|v| (51..=66).contains(&v))
}

/// The first position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The last position of `needle` in `hay`.
fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// The decimal number `s` starts with and its length in bytes (`None`: no digit).
fn number(s: &[u8]) -> Option<(u32, usize)> {
    let len = s.iter().take_while(|b| b.is_ascii_digit()).count();
    let n = s[..len].iter().fold(0u32, |n, b| {
        n.saturating_mul(10).saturating_add(u32::from(b - b'0'))
    });
    (len > 0).then_some((n, len))
}

/// The bytes after `open` up to the last `) AppleWebKit/` (the platform part of a WebKit UA).
fn platform<'u>(ua: &'u [u8], open: &[u8]) -> Option<&'u [u8]> {
    let start = find(ua, open)? + open.len();
    let rest = &ua[start..];
    Some(&rest[..rfind(rest, b") AppleWebKit/")?])
}

/// The last `<marker><digit>…` in `s`: the bytes from the digit on.
fn last_version<'s>(s: &'s [u8], marker: &[u8]) -> Option<&'s [u8]> {
    let mut end = s.len();
    while let Some(i) = rfind(&s[..end], marker) {
        let v = &s[i + marker.len()..];
        if v.first().is_some_and(u8::is_ascii_digit) {
            return Some(v);
        }
        end = i + marker.len() - 1;
    }
    None
}

/// The iOS major version of `(iP…; CPU … OS 12_1 …) AppleWebKit/`.
fn ios_major(ua: &[u8]) -> Option<u32> {
    let p = platform(ua, b"(iP")?;
    let cpu = find(p, b"; CPU ").filter(|i| *i > 0)?;
    number(last_version(&p[cpu + 6..], b"OS ")?).map(|(n, _)| n)
}

/// The macOS version of `(Macintosh; … Mac OS X 10_14_6 …) AppleWebKit/`.
fn macos_version(ua: &[u8]) -> Option<(u32, u32)> {
    let p = platform(ua, b"(Macintosh;")?;
    let v = last_version(p, b"Mac OS X ")?;
    let (major, len) = number(v)?;
    let (minor, _) = number(v[len..].strip_prefix(b"_")?)?;
    Some((major, minor))
}

/// `Version/… Safari/`, not Chromium-based.
fn is_safari(ua: &[u8]) -> bool {
    let Some(v) = find(ua, b"Version/") else {
        return false;
    };
    find(&ua[v + 8..], b" Safari/").is_some() && !is_chromium(ua)
}

/// A macOS app's WebKit view: exactly
/// `Mozilla/<v> (Macintosh; … Mac OS X <v>) AppleWebKit/<v> (KHTML, like Gecko)`.
fn is_mac_embedded(ua: &[u8]) -> bool {
    let dotted = |s: &[u8]| !s.is_empty() && s.iter().all(|b| b.is_ascii_digit() || *b == b'.');
    let Some(head) = ua.strip_suffix(b" (KHTML, like Gecko)".as_slice()) else {
        return false;
    };
    let Some(wk) = rfind(head, b") AppleWebKit/") else {
        return false;
    };
    if !dotted(&head[wk + 14..]) {
        return false;
    }
    let head = &head[..wk];
    let Some(rest) = head.strip_prefix(b"Mozilla/".as_slice()) else {
        return false;
    };
    let Some(sp) = find(rest, b" (Macintosh;") else {
        return false;
    };
    let Some(os) = rfind(head, b"Mac OS X ") else {
        return false;
    };
    let os_version = &head[os + 9..];
    dotted(&rest[..sp])
        && os + 9 > 8 + sp + 12
        && !os_version.is_empty()
        && os_version.iter().all(|b| b.is_ascii_digit() || *b == b'_')
}

fn is_chromium(ua: &[u8]) -> bool {
    find(ua, b"Chrome").is_some() || find(ua, b"Chromium").is_some()
}

/// The major version of the first `Chrom<x>/<n>[.n…] ` (`Chrome/66.0.3359.181 `).
fn chromium_major(ua: &[u8]) -> Option<u32> {
    let mut from = 0;
    while let Some(i) = find(&ua[from..], b"Chrom") {
        let start = from + i + 5;
        from = start;
        let name = ua[start..]
            .iter()
            .take_while(|b| **b != b' ' && **b != b'/')
            .count();
        if name == 0 || ua.get(start + name) != Some(&b'/') {
            continue;
        }
        let v = &ua[start + name + 1..];
        let Some((major, len)) = number(v) else {
            continue;
        };
        let tail = v[len..]
            .iter()
            .take_while(|b| b.is_ascii_digit() || **b == b'.')
            .count();
        if v.get(len + tail) == Some(&b' ') {
            return Some(major);
        }
    }
    None
}

/// `UCBrowser/<major>.<minor>.<build>[.n…] `.
fn uc_version(ua: &[u8]) -> Option<(u32, u32, u32)> {
    let v = &ua[find(ua, b"UCBrowser/")? + 10..];
    let (major, a) = number(v)?;
    let v = v[a..].strip_prefix(b".")?;
    let (minor, b) = number(v)?;
    let v = v[b..].strip_prefix(b".")?;
    let (build, c) = number(v)?;
    let tail = v[c..]
        .iter()
        .take_while(|b| b.is_ascii_digit() || **b == b'.')
        .count();
    (v.get(c + tail) == Some(&b' ')).then_some((major, minor, build))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clients the rules name, one or more per rule.
    const INCOMPATIBLE: &[&str] = &[
        // iOS 12: Safari, Chrome (CriOS), an in-app WebView, iPad.
        "Mozilla/5.0 (iPhone; CPU iPhone OS 12_1_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/12.0 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 12_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/76.0.3809.123 Mobile/15E148 Safari/605.1",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 12_3_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
        "Mozilla/5.0 (iPad; CPU OS 12_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/12.1 Mobile/15E148 Safari/604.1",
        // macOS 10.14: Safari and an embedded browser.
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/12.1.2 Safari/605.1.15",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/12.0 Safari/605.1.15",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_6) AppleWebKit/605.1.15 (KHTML, like Gecko)",
        // Chrome and Chromium 51 to 66.
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/51.0.2704.103 Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/60.0.3112.113 Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/66.0.3359.181 Safari/537.36",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Ubuntu Chromium/63.0.3239.84 Chrome/63.0.3239.84 Safari/537.36",
        "Mozilla/5.0 (Linux; Android 8.0.0; SM-G930F) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/65.0.3325.109 Mobile Safari/537.36",
        // UC Browser before 12.13.2 (whatever Chrome it names).
        "Mozilla/5.0 (Linux; U; Android 8.1.0; en-US; Nexus 6P Build/OPM7.181205.001) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/57.0.2987.108 UCBrowser/12.11.1.1197 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; U; Android 9; en-US; SM-A505F) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/78.0.3904.108 UCBrowser/12.13.1.1189 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; U; Android 7.0; en-US) AppleWebKit/534.30 (KHTML, like Gecko) Version/4.0 UCBrowser/11.4.5.1005 U3/0.8.0 Mobile Safari/534.30",
    ];

    /// Near misses: the next or previous version, another platform, no `User-Agent` at all.
    const COMPATIBLE: &[&str] = &[
        "",
        "curl/8.5.0",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 13_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.0.4 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 11_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/11.0 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/14.0.3 Safari/605.1.15",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_13_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/12.1.2 Safari/605.1.15",
        // Chrome on macOS 10.14 is not Safari.
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_6) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/79.0.3945.130 Safari/537.36",
        // Firefox on macOS 10.14 is not WebKit.
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.14; rv:68.0) Gecko/20100101 Firefox/68.0",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/50.0.2661.102 Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/67.0.3396.99 Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91",
        "Mozilla/5.0 (Linux; U; Android 9; en-US; SM-A505F) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/57.0.2987.108 UCBrowser/12.13.2.1208 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; U; Android 10; en-US; SM-G960F) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/78.0.3904.108 UCBrowser/13.4.0.1306 Mobile Safari/537.36",
        "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
        // Version-like text that is not the version (no space after it, no digits).
        "Mozilla/5.0 (X11; Linux x86_64) Chrome/60",
        "Mozilla/5.0 (iPhone; CPU iPhone OS like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    ];

    #[test]
    fn incompatible_clients_are_recognised() {
        for ua in INCOMPATIBLE {
            assert!(rejects_none(ua.as_bytes()), "{ua}");
        }
    }

    #[test]
    fn other_clients_keep_same_site_none() {
        for ua in COMPATIBLE {
            assert!(!rejects_none(ua.as_bytes()), "{ua}");
        }
    }

    #[test]
    fn version_readers() {
        let ios = INCOMPATIBLE[0].as_bytes();
        assert_eq!(ios_major(ios), Some(12));
        assert_eq!(ios_major(INCOMPATIBLE[3].as_bytes()), Some(12));
        assert_eq!(macos_version(INCOMPATIBLE[4].as_bytes()), Some((10, 14)));
        assert_eq!(macos_version(COMPATIBLE[4].as_bytes()), Some((10, 15)));
        assert_eq!(chromium_major(INCOMPATIBLE[10].as_bytes()), Some(63));
        assert_eq!(chromium_major(COMPATIBLE[10].as_bytes()), Some(120));
        assert_eq!(uc_version(INCOMPATIBLE[12].as_bytes()), Some((12, 11, 1)));
        assert!(is_mac_embedded(INCOMPATIBLE[6].as_bytes()));
        assert!(!is_mac_embedded(INCOMPATIBLE[4].as_bytes()));
        assert!(is_safari(INCOMPATIBLE[4].as_bytes()));
        assert!(!is_safari(COMPATIBLE[6].as_bytes()));
        assert_eq!(number(b"4294967296999"), Some((u32::MAX, 13)));
    }
}
