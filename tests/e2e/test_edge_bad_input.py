"""TLS edge, bad input: a broken Secret (malformed PEM, key not matching, missing field), a
missing Secret, a cross-namespace secretName are logged (naming the Secret and the Ingress,
never key material) and the host keeps its last good certificate, or gets the default if it
never had one. Expired certificates are served, and logged.
"""

from __future__ import annotations

import json
import time

import pytest

from e2e_lib import backend_objects
from edge_support import (SELF_SIGNED_CN, Pki, assert_no_key_material, cert_secret, curl_https,
                          edge_ingress, log_mark, peer_fingerprint, s_client, start_edge, tls_secret,
                          wait_fingerprint, wait_log_all)

HOST = "shop.example.com"
SECRET = "shop-tls"
INGRESS = "shop-edge"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def good(pki):
    return pki.leaf("good", [HOST], cn=HOST)


@pytest.fixture(scope="module")
def other(pki):
    """Another valid certificate for the same host (different serial and key)."""
    return pki.leaf("other", [HOST], cn=HOST, key_type="rsa-pkcs8")


@pytest.fixture(scope="module")
def default_cert(pki):
    return pki.leaf("default", ["default.example.com"])


def base_manifests(env, *, secret_doc=None, ingress_doc=None, extra=None):
    echo = env.echo("echo")
    m = {"backend.yaml": backend_objects("echo", [echo]),
         "ingress.yaml": ingress_doc or edge_ingress(INGRESS, [([HOST], SECRET)], "echo")}
    if secret_doc is not None:
        m["secret.yaml"] = secret_doc
    m.update(extra or {})
    return m


def served(edge, sni=HOST):
    r = s_client(edge.https_port, sni)
    assert r.handshake_ok, r.out[-1500:]
    return r.leaf


def assert_warned(line: str):
    entry = json.loads(line)
    assert entry.get("level") in ("WARN", "ERROR"), line


def truncate_pem(pem: str) -> str:
    lines = pem.strip().splitlines()
    body = lines[1:-1]
    return "\n".join([lines[0], *body[: len(body) // 2], lines[-1]]) + "\n"


BROKEN = {
    # name -> function(good, other) -> (cert_pem, key_pem) or None for "drop tls.key"
    "cert_not_pem": lambda g, o: ("this is not a certificate\n", g.key_pem),
    "cert_truncated_der": lambda g, o: (truncate_pem(g.cert_pem), g.key_pem),
    "cert_no_end_line": lambda g, o: (g.cert_pem.replace("-----END CERTIFICATE-----", ""), g.key_pem),
    "key_garbage_body": lambda g, o: (g.cert_pem, "-----BEGIN PRIVATE KEY-----\nAAAAbm90IGEga2V5\n-----END PRIVATE KEY-----\n"),
    "key_not_matching_cert": lambda g, o: (g.cert_pem, o.key_pem),
    "key_empty": lambda g, o: (g.cert_pem, ""),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_broken_secret_keeps_last_good_cert(env, good, other, pki, kind):
    edge = start_edge(env, base_manifests(env, secret_doc=cert_secret(SECRET, good)))
    assert served(edge)["serial"] == good.serial
    cert_pem, key_pem = BROKEN[kind](good, other)
    mark = log_mark(edge)
    t0 = edge.write("secret.yaml", tls_secret(SECRET, cert_pem, key_pem))
    line = wait_log_all(edge, SECRET, INGRESS, since=mark)
    logged = time.monotonic() - t0
    assert_warned(line)
    # The broken version was processed (logged); new handshakes still get the old certificate.
    for _ in range(5):
        leaf = served(edge)
        assert leaf["serial"] == good.serial, f"{kind}: served {leaf} instead of the last good cert"
    r = curl_https(edge, HOST, "/still-ok", cacert=pki.ca_path)
    assert r.status == 200, r
    # A good Secret again is picked up.
    edge.write("secret.yaml", cert_secret(SECRET, other))
    wait_fingerprint(edge.https_port, HOST, other.fingerprint, timeout=5)
    assert_no_key_material(edge.log_text(), [good, other])
    print(f"\n[{kind}] rejected and logged after {logged * 1000:.0f} ms: {json.loads(line).get('message')}"
          f" / {json.loads(line).get('error') or json.loads(line).get('detail')}")


def test_missing_secret_keeps_last_good_cert(env, good, other):
    edge = start_edge(env, base_manifests(env, secret_doc=cert_secret(SECRET, good)))
    assert served(edge)["serial"] == good.serial
    mark = log_mark(edge)
    edge.delete("secret.yaml")
    line = wait_log_all(edge, SECRET, INGRESS, since=mark)
    assert_warned(line)
    assert "not found" in line, line
    for _ in range(5):
        assert served(edge)["serial"] == good.serial
    # it comes back (new material): served again
    edge.write("secret.yaml", cert_secret(SECRET, other))
    wait_fingerprint(edge.https_port, HOST, other.fingerprint, timeout=5)


def test_secret_of_wrong_type_keeps_last_good_cert(env, good, other):
    edge = start_edge(env, base_manifests(env, secret_doc=cert_secret(SECRET, good)))
    mark = log_mark(edge)
    edge.write("secret.yaml", cert_secret(SECRET, other, type_="Opaque"))
    line = wait_log_all(edge, SECRET, INGRESS, since=mark)
    assert_warned(line)
    for _ in range(3):
        assert served(edge)["serial"] == good.serial


@pytest.mark.parametrize("kind", ["malformed", "missing", "mismatched"])
def test_never_good_host_gets_default(env, good, other, default_cert, kind):
    if kind == "malformed":
        doc = tls_secret(SECRET, "garbage\n", good.key_pem)
    elif kind == "mismatched":
        doc = tls_secret(SECRET, good.cert_pem, other.key_pem)
    else:
        doc = None
    extra = {"default.yaml": cert_secret("fallback-tls", default_cert)}
    m = base_manifests(env, secret_doc=doc, extra=extra)
    edge = start_edge(env, m, name="edge-selfsigned")
    line = wait_log_all(edge, SECRET, INGRESS)
    assert_warned(line)
    assert served(edge)["cn"] == SELF_SIGNED_CN
    edge2 = start_edge(env, m, ["--default-certificate", "default/fallback-tls"], name="edge-default")
    wait_log_all(edge2, SECRET, INGRESS)
    assert served(edge2)["serial"] == default_cert.serial
    assert_no_key_material(edge.log_text() + edge2.log_text(), [good, other, default_cert])


def test_cross_namespace_secret_is_not_used(env, good):
    """secretName `other/shop-tls` (a Secret that exists in namespace `other`) is refused."""
    ing = edge_ingress(INGRESS, [([HOST], f"other/{SECRET}")], "echo")
    m = base_manifests(env, ingress_doc=ing,
                       extra={"other.yaml": cert_secret(SECRET, good, namespace="other")})
    edge = start_edge(env, m)
    line = wait_log_all(edge, f"other/{SECRET}", INGRESS)
    assert_warned(line)
    assert served(edge)["cn"] == SELF_SIGNED_CN, "a Secret of another namespace must never be served"


def test_cross_namespace_edit_keeps_last_good_cert(env, good):
    """An Ingress whose secretName is edited to a cross-namespace one: logged, and the host
    keeps its last good certificate (like any other bad input)."""
    edge = start_edge(env, base_manifests(env, secret_doc=cert_secret(SECRET, good),
                                          extra={"other.yaml": cert_secret(SECRET, good, namespace="other")}))
    assert served(edge)["serial"] == good.serial
    mark = log_mark(edge)
    edge.write("ingress.yaml", edge_ingress(INGRESS, [([HOST], f"other/{SECRET}")], "echo"))
    line = wait_log_all(edge, f"other/{SECRET}", INGRESS, since=mark)
    assert_warned(line)
    time.sleep(0.2)  # let the publish that follows the log line land
    leaf = served(edge)
    assert leaf["serial"] == good.serial, \
        f"after a cross-namespace secretName the host lost its last good certificate: served {leaf['cn']}"


def test_expired_cert_is_served_and_logged(env, pki):
    expired = pki.leaf("expired", [HOST], cn=HOST, expired=True)
    edge = start_edge(env, base_manifests(env, secret_doc=cert_secret(SECRET, expired)))
    line = wait_log_all(edge, SECRET, INGRESS, "expired")
    assert_warned(line)
    leaf = served(edge)
    assert leaf["serial"] == expired.serial and leaf["not_after"].endswith("2020 GMT"), leaf
    r = curl_https(edge, HOST, cacert=pki.ca_path, check=False)
    assert r.status == -60 and b"expired" in r.body, r  # served, and curl sees it is expired
    ok = curl_https(edge, HOST, "/exp", cacert=pki.ca_path, extra=["-k"])
    assert ok.status == 200, ok
    assert_no_key_material(edge.log_text(), [expired])
    print(f"\n[expired] served serial {leaf['serial']} notAfter {leaf['not_after']}; log: {json.loads(line)['message']}")


def test_key_never_logged_under_all_bad_inputs(env, pki, good, other):
    """One edge, every kind of bad input in turn; the whole log holds no key material."""
    keys = [good, other]
    edge = start_edge(env, base_manifests(env, secret_doc=cert_secret(SECRET, good)), ["--log-format", "text"])
    for kind, make in BROKEN.items():
        cert_pem, key_pem = make(good, other)
        mark = log_mark(edge)
        edge.write("secret.yaml", tls_secret(SECRET, cert_pem, key_pem))
        wait_log_all(edge, SECRET, since=mark)
    lines = other.key_pem.strip().splitlines()
    corrupted_key = "\n".join([lines[0], "!" + lines[1][1:], *lines[2:]]) + "\n"
    unterminated_key = "\n".join(lines[:-1]) + "\n"
    for cert_pem, key_pem in (
        (other.key_pem, good.cert_pem),          # a key in the cert field, a cert in the key field
        (unterminated_key, good.key_pem),        # key PEM without its END line, as tls.crt
        (good.cert_pem, corrupted_key),          # bad base64 inside the key body
        (good.cert_pem, unterminated_key),       # key without its END line
    ):
        mark = log_mark(edge)
        edge.write("secret.yaml", tls_secret(SECRET, cert_pem, key_pem))
        wait_log_all(edge, SECRET, since=mark)
    assert peer_fingerprint(edge.https_port, HOST) == good.fingerprint
    text = edge.log_text()
    assert_no_key_material(text, keys, where="text-format logs")


def test_missing_default_certificate_secret_falls_back_to_self_signed(env, good):
    edge = start_edge(env, base_manifests(env, secret_doc=cert_secret(SECRET, good)),
                      ["--default-certificate", "default/no-such-secret"])
    line = wait_log_all(edge, "no-such-secret")
    assert_warned(line)
    assert served(edge, None)["cn"] == SELF_SIGNED_CN
    assert served(edge)["serial"] == good.serial


def test_secret_in_another_namespace_is_not_found(env, good):
    """An Ingress in namespace team-a naming `shop-tls` only gets team-a/shop-tls, never the
    default/shop-tls that exists."""
    ing = edge_ingress(INGRESS, [([HOST], SECRET)], "echo", namespace="team-a")
    m = base_manifests(env, ingress_doc=ing, secret_doc=cert_secret(SECRET, good))
    m["team-a-backend.yaml"] = backend_objects("echo", [env.echo("echo-a")], namespace="team-a")
    edge = start_edge(env, m)
    line = wait_log_all(edge, f"team-a/{SECRET}", INGRESS)
    assert_warned(line)
    assert served(edge)["cn"] == SELF_SIGNED_CN


def test_unparsable_yaml_keeps_last_good_cert(env, good):
    edge = start_edge(env, base_manifests(env, secret_doc=cert_secret(SECRET, good)))
    mark = log_mark(edge)
    edge.write("secret.yaml", "apiVersion: v1\nkind: Secret\nmetadata: {name: shop-tls\n  data: [unterminated\n")
    wait_log_all(edge, "secret.yaml", since=mark)
    time.sleep(0.2)
    for _ in range(3):
        assert served(edge)["serial"] == good.serial
