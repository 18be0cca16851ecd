"""Host matching: exact (case-insensitive, port ignored), wildcard of exactly one label,
exact beats wildcard, and the lookup order exact host → wildcard host → host-less rules.
"""

from __future__ import annotations

import pytest

from e2e_lib import backend_objects, http_path, ingress, rule

SERVICES = ["exact", "wild", "hostless", "deep", "other-exact"]


@pytest.fixture(scope="module")
def router(module_env):
    docs = []
    for s in SERVICES:
        docs += backend_objects(s, [module_env.echo(s)])
    ings = [
        ingress("exact", [rule("foo.example.com", http_path("/", "exact", 80))]),
        ingress("wild", [rule("*.example.com", http_path("/", "wild", 80))]),
        # exact host with only /api: other paths fall through to the wildcard's rules
        ingress("partial", [rule("api.example.com", http_path("/api", "other-exact", 80))]),
        # wildcard with only /w: other paths of a matching host fall to host-less rules
        ingress("wild-partial", [rule("*.shop.test", http_path("/w", "wild", 80))]),
        ingress("deep", [rule("*.b.example.com", http_path("/", "deep", 80))]),
        ingress("hostless", [rule(None, http_path("/hostless", "hostless", 80))]),
    ]
    return module_env.router({"backends.yaml": docs, "ingresses.yaml": ings})


@pytest.mark.parametrize("host,path,want", [
    # exact, case-insensitive, port ignored
    ("foo.example.com", "/", "exact"),
    ("FOO.Example.COM", "/x", "exact"),
    ("foo.example.com:8080", "/x", "exact"),
    ("Foo.Example.Com:80", "/", "exact"),
    # wildcard: exactly one label
    ("a.example.com", "/", "wild"),
    ("BAR.example.com", "/y", "wild"),
    ("bar.example.com:9999", "/y", "wild"),
    ("a.b.example.com", "/", "deep"),           # two labels: *.example.com does not match, *.b.example.com does
    ("x.y.b.example.com", "/", None),           # nothing matches three labels
    ("example.com", "/", None),                 # the bare suffix does not match the wildcard
    ("example.com", "/hostless/1", "hostless"),
    ("aexample.com", "/", None),
    # exact beats wildcard; exact host's rules first, then the wildcard's
    ("api.example.com", "/api/v1", "other-exact"),
    ("api.example.com", "/other", "wild"),
    # wildcard host's rules, then host-less rules
    ("x.shop.test", "/w/1", "wild"),
    ("x.shop.test", "/hostless", "hostless"),
    ("x.shop.test", "/nothing", None),
    # unknown host → host-less rules only
    ("unknown.test", "/hostless/a", "hostless"),
    ("unknown.test", "/", None),
    # exact host rules beat host-less rules even for the host-less path
    ("foo.example.com", "/hostless", "exact"),
])
def test_host_matching(router, host, path, want):
    r = router.curl(path, host=host)
    if want is None:
        assert r.status == 404, f"Host {host} {path}: expected 404, got {r}"
    else:
        assert (r.status, r.service) == (200, want), f"Host {host} {path}: expected {want}, got {r}"
        assert r.json()["host"] == host, "the Host header must reach the backend unchanged"


def test_no_host_header_uses_hostless_rules(router):
    """HTTP/1.0 without Host: only host-less rules can match."""
    r = router.curl("/hostless/x", extra=["--http1.0", "-H", "Host:"])
    assert (r.status, r.service) == (200, "hostless"), r


def test_host_over_http2_authority(router):
    for host, want in (("foo.example.com", "exact"), ("q.example.com", "wild"), ("a.b.example.com", "deep")):
        r = router.curl("/", host=host, http2=True)
        assert r.http_version == "2"
        assert (r.status, r.service) == (200, want), f"h2 :authority {host}: {r}"
