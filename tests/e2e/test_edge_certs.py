"""TLS edge: the right certificate per SNI (exact, one-label wildcard, --default-certificate,
self-signed default, no SNI), every key type/encoding a Secret may hold, real clients verifying
with our CA, TLS 1.2 and 1.3, ALPN h2 / http/1.1, session resumption.
"""

from __future__ import annotations

import re
import time

import pytest

from e2e_lib import backend_objects
from edge_support import (SELF_SIGNED_CN, SELF_SIGNED_SAN, Pki, assert_no_key_material, cert_secret,
                          curl_https, edge_ingress, s_client, start_edge)

# key type -> (host, "Peer signature type" openssl 3.0 s_client prints for TLS 1.3, lowercased)
KEY_CASES = {
    "ec": ("ec-pkcs8.example.com", "ecdsa"),
    "ec-sec1": ("ec-sec1.example.com", "ecdsa"),
    "ec384": ("ec384.example.com", "ecdsa"),
    "rsa-pkcs1": ("rsa-pkcs1.example.com", "rsa-pss"),
    "rsa-pkcs8": ("rsa-pkcs8.example.com", "rsa-pss"),
    "ed25519": ("ed25519.example.com", "ed25519"),
}


@pytest.fixture(scope="module")
def pki(module_env):
    return Pki(module_env.work_dir / "pki")


@pytest.fixture(scope="module")
def certs(pki):
    c = {
        "exact": pki.leaf("exact", ["exact.example.com"]),
        "wild": pki.leaf("wild", ["*.wild.example.com"], cn="wildcard.wild.example.com"),
        "exactwild": pki.leaf("exactwild", ["special.wild.example.com"]),
        "default": pki.leaf("default", ["default.example.com"], cn="default.example.com"),
    }
    for kt, (host, _) in KEY_CASES.items():
        c[kt] = pki.leaf(f"key-{kt}", [host], key_type=kt)
    return c


@pytest.fixture(scope="module")
def manifests(module_env, certs):
    echo = module_env.echo("echo", "echo-1")
    secrets = [
        cert_secret("exact-tls", certs["exact"], encoding="stringData"),
        cert_secret("wild-tls", certs["wild"], encoding="data"),
        cert_secret("exactwild-tls", certs["exactwild"]),
        cert_secret("default-tls", certs["default"]),
    ]
    tls = [(["exact.example.com"], "exact-tls"),
           (["*.wild.example.com"], "wild-tls"),
           (["special.wild.example.com"], "exactwild-tls")]
    for i, (kt, (host, _)) in enumerate(KEY_CASES.items()):
        # alternate the two encodings a Secret can use
        secrets.append(cert_secret(f"{kt}-tls", certs[kt], encoding="data" if i % 2 else "stringData"))
        tls.append(([host], f"{kt}-tls"))
    return {
        "backend.yaml": backend_objects("echo", [echo]),
        "secrets.yaml": secrets,
        "ingress.yaml": edge_ingress("edge", tls, "echo", 80),
    }


@pytest.fixture(scope="module")
def edge(module_env, manifests):
    """No --default-certificate: the self-signed default."""
    return start_edge(module_env, manifests, name="edge-selfsigned")


@pytest.fixture(scope="module")
def edge_default(module_env, manifests):
    return start_edge(module_env, manifests, ["--default-certificate", "default/default-tls"],
                      name="edge-default")


def leaf_of(port, sni, *extra):
    r = s_client(port, sni, *extra)
    assert r.handshake_ok, f"handshake failed for SNI {sni!r}:\n{r.out[-1500:]}"
    return r.leaf


def assert_is(leaf, cert):
    assert leaf["serial"] == cert.serial and leaf["fingerprint"] == cert.fingerprint, \
        f"served {leaf['cn']} (serial {leaf['serial']}), wanted {cert.cn} (serial {cert.serial})"
    assert leaf["cn"] == cert.cn
    assert leaf["sans"] == cert.hosts


def assert_self_signed(leaf):
    assert leaf["cn"] == SELF_SIGNED_CN, leaf
    assert leaf["sans"] == [SELF_SIGNED_SAN], leaf


# --------------------------------------------------------------------------- SNI selection


def test_exact_host(edge, certs):
    assert_is(leaf_of(edge.https_port, "exact.example.com"), certs["exact"])


def test_exact_host_is_case_insensitive(edge, certs):
    assert_is(leaf_of(edge.https_port, "Exact.EXAMPLE.com"), certs["exact"])


@pytest.mark.parametrize("sni", ["foo.wild.example.com", "bar-1.wild.example.com"])
def test_wildcard_one_label(edge, certs, sni):
    assert_is(leaf_of(edge.https_port, sni), certs["wild"])


def test_exact_beats_wildcard(edge, certs):
    assert_is(leaf_of(edge.https_port, "special.wild.example.com"), certs["exactwild"])


@pytest.mark.parametrize("sni", ["a.b.wild.example.com", "wild.example.com", "unknown.example.org"])
def test_wildcard_covers_one_label_only_else_self_signed_default(edge, sni):
    assert_self_signed(leaf_of(edge.https_port, sni))


def test_no_sni_gets_self_signed_default(edge):
    assert_self_signed(leaf_of(edge.https_port, None))


def test_default_certificate_flag(edge_default, certs):
    port = edge_default.https_port
    assert_is(leaf_of(port, "unknown.example.org"), certs["default"])
    assert_is(leaf_of(port, "a.b.wild.example.com"), certs["default"])
    assert_is(leaf_of(port, None), certs["default"])
    # configured hosts still get their own
    assert_is(leaf_of(port, "exact.example.com"), certs["exact"])
    assert_is(leaf_of(port, "foo.wild.example.com"), certs["wild"])


def test_curl_verifies_with_our_ca(edge, pki):
    for host in ("exact.example.com", "foo.wild.example.com", "special.wild.example.com"):
        r = curl_https(edge, host, "/hello?x=1", cacert=pki.ca_path)
        assert r.status == 200, r
        assert r.json()["host"] == f"{host}:{edge.https_port}"
        assert r.json()["path"] == "/hello?x=1"
    # the self-signed default does not verify (curl exit 60), i.e. really not our CA's
    bad = curl_https(edge, "unknown.example.org", cacert=pki.ca_path, check=False)
    assert bad.status == -60, bad


# --------------------------------------------------------------------------- key types


@pytest.mark.parametrize("key_type", list(KEY_CASES))
def test_key_types(edge, certs, pki, key_type):
    host, sigalg = KEY_CASES[key_type]
    r = s_client(edge.https_port, host, "-tls1_3")
    assert r.handshake_ok, r.out[-1500:]
    assert_is(r.leaf, certs[key_type])
    m = re.search(r"^Peer signature type: (\S+)", r.out, re.M)
    assert m and m.group(1).lower() == sigalg, f"signature type {m and m.group(1)} != {sigalg}"
    # TLS 1.2 with the same key
    r12 = s_client(edge.https_port, host, "-tls1_2")
    assert r12.handshake_ok and r12.protocol == "TLSv1.2", r12.out[-1500:]
    assert_is(r12.leaf, certs[key_type])
    resp = curl_https(edge, host, "/k", cacert=pki.ca_path)
    assert resp.status == 200 and resp.json()["service"] == "echo", resp
    print(f"\n[key {key_type}] served for {host}: serial {r.leaf['serial']} sig {m.group(1)} (1.3) ok, 1.2 ok")


# --------------------------------------------------------------------------- protocol versions, ALPN


@pytest.mark.parametrize("flag,proto", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_tls_versions(edge, certs, pki, flag, proto):
    r = s_client(edge.https_port, "exact.example.com", flag)
    assert r.handshake_ok, r.out[-1500:]
    assert r.protocol == proto
    assert_is(r.leaf, certs["exact"])
    curl_flag = ["--tlsv1.2", "--tls-max", "1.2"] if proto == "TLSv1.2" else ["--tlsv1.3"]
    resp = curl_https(edge, "exact.example.com", cacert=pki.ca_path, extra=curl_flag + ["-v"])
    assert resp.status == 200, resp


def test_old_tls_versions_refused(edge):
    r = s_client(edge.https_port, "exact.example.com", "-tls1_1")
    assert not r.handshake_ok, f"TLS 1.1 must be refused:\n{r.out[-1500:]}"


@pytest.mark.parametrize("offer,expect", [("h2", "h2"), ("http/1.1", "http/1.1"),
                                          ("h2,http/1.1", "h2"), ("http/1.1,h2", "h2")])
def test_alpn(edge, offer, expect):
    r = s_client(edge.https_port, "exact.example.com", "-alpn", offer)
    assert r.handshake_ok, r.out[-1500:]
    assert r.alpn == expect, f"offered {offer}: ALPN {r.alpn}"


def test_no_alpn_is_http1(edge, pki):
    r = s_client(edge.https_port, "exact.example.com")
    assert r.handshake_ok and r.alpn is None
    resp = curl_https(edge, "exact.example.com", cacert=pki.ca_path, extra=["--no-alpn"])
    assert resp.status == 200 and resp.http_version == "1.1", resp


def test_curl_http2_and_http1(edge, pki):
    h2 = curl_https(edge, "exact.example.com", "/v", cacert=pki.ca_path, http2=True)
    h1 = curl_https(edge, "exact.example.com", "/v", cacert=pki.ca_path, http2=False)
    assert h2.status == 200 and h2.http_version == "2", h2
    assert h1.status == 200 and h1.http_version == "1.1", h1


# --------------------------------------------------------------------------- resumption


@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
def test_session_resumption(edge, certs, tmp_path, flag):
    sess = tmp_path / f"sess{flag}.pem"
    # A full request makes s_client read the TLS 1.3 NewSessionTicket before it exits.
    req = b"GET / HTTP/1.1\r\nHost: exact.example.com\r\nConnection: close\r\n\r\n"
    first = s_client(edge.https_port, "exact.example.com", flag, "-sess_out", str(sess), "-ign_eof", stdin=req)
    assert first.handshake_ok and re.search(r"^New, TLSv", first.out, re.M), first.out[-1500:]
    assert "HTTP/1.1 200" in first.out
    assert sess.exists() and sess.stat().st_size > 0, "no session saved"
    t0 = time.monotonic()
    second = s_client(edge.https_port, "exact.example.com", flag, "-sess_in", str(sess), "-ign_eof", stdin=req)
    dt = time.monotonic() - t0
    assert re.search(r"^Reused, TLSv", second.out, re.M), f"session not resumed ({flag}):\n{second.out[-2000:]}"
    assert "HTTP/1.1 200" in second.out, "resumed session must still serve the request"
    print(f"\n[resumption {flag}] Reused ok (s_client run {dt * 1000:.0f} ms)")


def test_reconnect_reuses(edge):
    r = s_client(edge.https_port, "exact.example.com", "-tls1_2", "-reconnect")
    reused = len(re.findall(r"^Reused, TLSv", r.out, re.M))
    assert reused >= 5, f"-reconnect: {reused} reused handshakes\n{r.out[-2000:]}"


def test_no_key_material_in_logs(edge, edge_default, certs):
    # run last in this module: after all handshakes above
    assert_no_key_material(edge.log_text() + edge_default.log_text(), certs.values())
