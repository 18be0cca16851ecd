"""Path matching: the Kubernetes documentation's examples table, plus a few edge cases.

https://kubernetes.io/docs/concepts/services-networking/ingress/#examples

Each case gets its own host ``case-N.paths.test`` and its own Ingress; rule j of a case
points at Service ``r{j}`` (an echo-backend that reports service ``r{j}``), so the
response tells which rule won. ``None`` as expectation means "no rule matches" → 404
(this router has no host-less rules and no defaultBackend).
"""

from __future__ import annotations

import pytest

from e2e_lib import backend_objects, http_path, ingress, rule

P, E, I = "Prefix", "Exact", "ImplementationSpecific"

# (rules as [(path, pathType)], request path, index of winning rule or None)
CASES = [
    # -- the documentation's table
    ([("/", P)], "/", 0),
    ([("/", P)], "/anything/at/all", 0),
    ([("/foo", E)], "/foo", 0),
    ([("/foo", E)], "/bar", None),
    ([("/foo", E)], "/foo/", None),
    ([("/foo/", E)], "/foo", None),
    ([("/foo", P)], "/foo", 0),
    ([("/foo", P)], "/foo/", 0),
    ([("/foo/", P)], "/foo", 0),
    ([("/foo/", P)], "/foo/", 0),
    ([("/aaa/bb", P)], "/aaa/bbb", None),
    ([("/aaa/bbb", P)], "/aaa/bbb", 0),
    ([("/aaa/bbb/", P)], "/aaa/bbb", 0),          # ignores trailing slash in the rule
    ([("/aaa/bbb", P)], "/aaa/bbb/", 0),          # matches trailing slash in the request
    ([("/aaa/bbb", P)], "/aaa/bbb/ccc", 0),       # matches subpath
    ([("/aaa/bbb", P)], "/aaa/bbbxyz", None),     # not a string prefix match
    ([("/", P), ("/aaa", P)], "/aaa/ccc", 1),     # longest match
    ([("/", P), ("/aaa", P), ("/aaa/bbb", P)], "/aaa/bbb", 2),
    ([("/", P), ("/aaa", P), ("/aaa/bbb", P)], "/aaa/bbb/ccc", 2),
    ([("/", P), ("/aaa", P), ("/aaa/bbb", P)], "/ccc", 0),
    ([("/aaa", P)], "/ccc", None),
    ([("/foo", P), ("/foo", E)], "/foo", 1),      # Exact preferred at equal length
    ([("/foo", E), ("/foo", P)], "/foo", 0),      # ... whatever the declaration order
    ([("/foo", P), ("/foo", E)], "/foo/", 0),     # Exact does not match /foo/, Prefix does
    # -- longest match across types
    ([("/aaa", E), ("/aaa/bbb", P)], "/aaa/bbb", 1),
    ([("/aaa", P), ("/aaa/bbb", E)], "/aaa/bbb", 1),
    ([("/aaa", P), ("/aaa/bbb", E)], "/aaa/bbb/c", 0),
    ([("/aaa/bbb", P), ("/aaa", P)], "/aaa/bbb/x", 0),  # declaration order irrelevant
    # -- ImplementationSpecific acts as Prefix
    ([("/impl", I)], "/impl", 0),
    ([("/impl", I)], "/impl/x/y", 0),
    ([("/impl", I)], "/implx", None),
    ([("/", P), ("/impl", I)], "/impl/deep", 1),
    # -- case sensitivity
    ([("/Foo", P)], "/foo", None),
    ([("/Foo", P)], "/Foo/bar", 0),
    ([("/foo", E)], "/FOO", None),
    # -- query string is not part of matching
    ([("/foo", E)], "/foo?x=1&y=/bar", 0),
    ([("/aaa/bbb", P)], "/aaa/bbbxyz?q=/aaa/bbb", None),
    ([("/", P), ("/q", P)], "/q?redirect=/other", 1),
    # -- several trailing/inner segments
    ([("/a/b/c", P)], "/a/b/c/d/e/f", 0),
    ([("/a/b/c", P)], "/a/b", None),
]

N_BACKENDS = max(len(rules) for rules, _, _ in CASES)


def host_of(i: int) -> str:
    return f"case-{i}.paths.test"


@pytest.fixture(scope="module")
def router(module_env):
    backends = [module_env.echo(f"r{j}") for j in range(N_BACKENDS)]
    docs = []
    for j, b in enumerate(backends):
        docs += backend_objects(f"r{j}", [b])
    ingresses = []
    for i, (rules, _, _) in enumerate(CASES):
        paths = [http_path(p, f"r{j}", "http", t) for j, (p, t) in enumerate(rules)]
        ingresses.append(ingress(f"case-{i}", [rule(host_of(i), *paths)]))
    return module_env.router({"backends.yaml": docs, "ingresses.yaml": ingresses})


def _id(case):
    rules, req, want = case
    rs = ",".join(f"{t[0]}:{p}" for p, t in rules)
    return f"[{rs}]{req}->{'404' if want is None else 'r%d' % want}"


@pytest.mark.parametrize("idx", range(len(CASES)), ids=[_id(c) for c in CASES])
def test_path_matching(router, idx):
    rules, request_path, want = CASES[idx]
    r = router.curl(request_path, host=host_of(idx))
    if want is None:
        assert r.status == 404, f"{request_path} should match none of {rules}, got {r}"
        return
    assert r.status == 200, f"{request_path} should match {rules[want]}, got {r}"
    assert r.service == f"r{want}", f"{request_path} should be served by rule {rules[want]}, got {r}"
    # The path and query reach the backend unchanged.
    assert r.json()["path"] == request_path


def test_path_matching_over_http2(router):
    """The same table lookup over h2c (prior knowledge); :authority carries the host."""
    for idx in (16, 18, 21, 15):
        rules, request_path, want = CASES[idx]
        r = router.curl(request_path, host=host_of(idx), http2=True)
        assert r.http_version == "2", r
        if want is None:
            assert r.status == 404, r
        else:
            assert (r.status, r.service) == (200, f"r{want}"), r
