"""TLS edge, plain-HTTP listener: hosts with TLS get 308 to https (port from
--redirect-https-port, omitted when 443; path and query kept), except ACME HTTP-01 challenge
paths, which are routed normally; `tandem.dev/ssl-redirect: "false"` opts out; HSTS with
--hsts-max-age on HTTPS responses only.
"""

from __future__ import annotations

import pytest

from e2e_lib import backend_objects, curl
from edge_support import Pki, cert_secret, curl_https, edge_ingress, start_edge

HSTS = 31536000


@pytest.fixture(scope="module")
def pki(module_env):
    return Pki(module_env.work_dir / "pki")


@pytest.fixture(scope="module")
def manifests(module_env, pki):
    echo = module_env.echo("echo", "echo-1")
    shop = pki.leaf("shop", ["shop.example.com"])
    plain = pki.leaf("plain", ["plain.example.com"])
    wild = pki.leaf("wild", ["*.wild.example.com"])
    return {
        "backend.yaml": backend_objects("echo", [echo]),
        "secrets.yaml": [cert_secret("shop-tls", shop), cert_secret("plain-tls", plain),
                         cert_secret("wild-tls", wild)],
        "ingress.yaml": [
            edge_ingress("shop", [(["shop.example.com"], "shop-tls")], "echo"),
            edge_ingress("wild", [(["*.wild.example.com"], "wild-tls")], "echo"),
            edge_ingress("plain", [(["plain.example.com"], "plain-tls")], "echo",
                         annotations={"tandem.dev/ssl-redirect": "false"}),
            # a host the edge routes without TLS: plain HTTP is served, no redirect
            edge_ingress("notls", [], "echo", rule_hosts=["notls.example.com"]),
        ],
    }


@pytest.fixture(scope="module")
def edge(module_env, manifests):
    """Redirects name the edge's own HTTPS port; HSTS on."""
    return start_edge(module_env, manifests, ["--redirect-https-port", "{https_port}", "--hsts-max-age", str(HSTS)],
                      name="edge-hsts")


@pytest.fixture(scope="module")
def edge443(module_env, manifests):
    """Defaults: redirect port 443 (omitted from Location), no HSTS."""
    return start_edge(module_env, manifests, name="edge-443")


def plain_get(edge, host, path, **kw):
    return curl(f"http://127.0.0.1:{edge.http_port}{path}", headers=[("Host", host)], **kw)


@pytest.mark.parametrize("path", ["/", "/some/path", "/a%20b/c?x=1&y=%2F&x=2", "/p?q"])
def test_redirect_308_keeps_path_and_query(edge, path):
    r = plain_get(edge, "shop.example.com", path)
    assert r.status == 308, r
    assert r.header("location") == f"https://shop.example.com:{edge.https_port}{path}"
    print(f"\n[redirect] http://shop.example.com{path} -> {r.header('location')}")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD"])
def test_redirect_any_method(edge, method):
    r = plain_get(edge, "shop.example.com", "/form?id=1", method=method,
                  data=b"x=1" if method in ("POST", "PUT") else None,
                  extra=["-I"] if method == "HEAD" else [])
    assert r.status == 308, r
    assert r.header("location") == f"https://shop.example.com:{edge.https_port}/form?id=1"


def test_redirect_drops_client_port_and_case(edge):
    r = plain_get(edge, "Shop.Example.COM:8080", "/x")
    assert r.status == 308, r
    assert r.header("location") == f"https://shop.example.com:{edge.https_port}/x"


def test_redirect_wildcard_tls_host(edge):
    r = plain_get(edge, "foo.wild.example.com", "/w?z=9")
    assert r.status == 308, r
    assert r.header("location") == f"https://foo.wild.example.com:{edge.https_port}/w?z=9"


def test_redirect_port_443_is_omitted(edge443):
    r = plain_get(edge443, "shop.example.com", "/p?q=1")
    assert r.status == 308, r
    assert r.header("location") == "https://shop.example.com/p?q=1"


def test_following_the_redirect_reaches_the_backend_over_tls(edge, pki):
    r = curl(f"http://shop.example.com:{edge.http_port}/follow?me=1",
             extra=["-L", "--cacert", pki.ca_path,
                    "--resolve", f"shop.example.com:{edge.http_port}:127.0.0.1",
                    "--resolve", f"shop.example.com:{edge.https_port}:127.0.0.1"])
    assert r.status == 200, r
    got = r.json()
    assert got["path"] == "/follow?me=1"
    assert got["headers"]["x-forwarded-proto"] == "https"


@pytest.mark.parametrize("path", ["/.well-known/acme-challenge/tok3n-ABC_123",
                                  "/.well-known/acme-challenge/tok3n?x=1"])
def test_acme_challenge_is_routed_not_redirected(edge, path):
    r = plain_get(edge, "shop.example.com", path)
    assert r.status == 200, r
    got = r.json()
    assert got["service"] == "echo" and got["path"] == path
    assert got["headers"].get("x-forwarded-proto") == "http", got["headers"]
    assert r.header("strict-transport-security") is None, "HSTS must not be sent over plain HTTP"


@pytest.mark.parametrize("path", ["/.well-known/other", "/.well-known/acme-challengeX/t", "/x/.well-known/acme-challenge/t"])
def test_only_the_acme_prefix_is_exempt(edge, path):
    r = plain_get(edge, "shop.example.com", path)
    assert r.status == 308, r


def test_opt_out_annotation(edge, pki):
    r = plain_get(edge, "plain.example.com", "/no-redirect?a=1")
    assert r.status == 200, r
    assert r.json()["path"] == "/no-redirect?a=1"
    assert r.header("strict-transport-security") is None
    # TLS still served for it
    s = curl_https(edge, "plain.example.com", "/tls", cacert=pki.ca_path)
    assert s.status == 200 and s.json()["headers"]["x-forwarded-proto"] == "https", s


def test_host_without_tls_is_not_redirected(edge):
    r = plain_get(edge, "notls.example.com", "/x")
    assert r.status == 200, r
    assert r.json()["host"] == "notls.example.com"


def test_unknown_host_is_404_not_redirect(edge):
    r = plain_get(edge, "nobody.example.org", "/x")
    assert r.status == 404, r
    assert r.header("location") is None


@pytest.mark.parametrize("http2", [False, True])
def test_hsts_on_https(edge, pki, http2):
    r = curl_https(edge, "shop.example.com", "/h", cacert=pki.ca_path, http2=http2)
    assert r.status == 200, r
    assert r.http_version == ("2" if http2 else "1.1")
    assert r.header("strict-transport-security") == f"max-age={HSTS}"
    print(f"\n[hsts] HTTP/{r.http_version}: Strict-Transport-Security: {r.header('strict-transport-security')}")


def test_no_hsts_on_redirect_or_without_flag(edge, edge443, pki):
    assert plain_get(edge, "shop.example.com", "/").header("strict-transport-security") is None
    r = curl_https(edge443, "shop.example.com", "/h", cacert=pki.ca_path)
    assert r.status == 200 and r.header("strict-transport-security") is None, r
