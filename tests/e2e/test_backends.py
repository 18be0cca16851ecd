"""Backends: Service port by number or by name, EndpointSlices vs hand-written v1 Endpoints
(selector-less Services), readiness, 404/503/502, retry of a connect failure on another
endpoint, round-robin.
"""

from __future__ import annotations

from collections import Counter

import pytest

from e2e_lib import (LOOPBACK, Endpoint, backend_objects, dead_endpoint, endpoint_slice, free_port, http_path,
                     ingress, rule, service)


@pytest.fixture(scope="module")
def setup(module_env):
    e = module_env
    docs: list = []
    paths: list = []

    def route(path, svc, port, ns="default"):
        paths.append((ns, http_path(path, svc, port)))

    # Service with two named ports, one endpoint listening on both (two echo processes).
    m_http, m_admin = e.echo("multi-http"), e.echo("multi-admin")
    docs += [service("multi", [("http", 80), ("admin", 81)]),
             endpoint_slice("multi-abc", "multi", [Endpoint(LOOPBACK, 0)],
                            [("http", m_http.port), ("admin", m_admin.port)])]
    # (a slice's ports apply to every address of the slice; Endpoint.port is unused here)
    route("/num80", "multi", 80)
    route("/num81", "multi", 81)
    route("/name-http", "multi", "http")
    route("/name-admin", "multi", "admin")
    route("/num-unknown", "multi", 99)
    route("/name-unknown", "multi", "nope")

    # Service with a single unnamed port.
    single = e.echo("single")
    docs += [service("single", [(None, 8080)]),
             endpoint_slice("single-1", "single", [single.endpoint()], [(None, single.port)])]
    route("/single", "single", 8080)

    # Selector-less Service + hand-written v1 Endpoints (the legacy pattern).
    legacy = e.echo("legacy", "legacy-1")
    docs += backend_objects("legacy", [legacy], mode="endpoints")
    route("/legacy-by-name", "legacy", "http")
    route("/legacy-by-number", "legacy", 80)

    # v1 Endpoints with a not-ready address: never used.
    lr, lnr = e.echo("legacy-mixed", "ready"), e.echo("legacy-mixed", "not-ready")
    docs += backend_objects("legacy-mixed", [lr.endpoint(True), lnr.endpoint(False)], mode="endpoints")
    route("/legacy-mixed", "legacy-mixed", "http")

    # EndpointSlice with a ready and a not-ready endpoint: only the ready one is used.
    sr, snr = e.echo("slice-mixed", "ready"), e.echo("slice-mixed", "not-ready")
    docs += backend_objects("slice-mixed", [sr.endpoint(True), snr.endpoint(False)])
    route("/slice-mixed", "slice-mixed", "http")

    # `ready` condition absent: Kubernetes says consumers should treat unknown as ready.
    su = e.echo("ready-unset")
    docs += backend_objects("ready-unset", [su.endpoint(None)])
    route("/ready-unset", "ready-unset", "http")

    # No ready endpoint at all → 503 (three flavours).
    nr = e.echo("no-ready")
    docs += backend_objects("no-ready", [nr.endpoint(False)])
    route("/no-ready", "no-ready", "http")
    docs += [service("no-slice")]
    route("/no-slice", "no-slice", 80)
    docs += [service("empty-endpoints", selector=False),
             {"apiVersion": "v1", "kind": "Endpoints",
              "metadata": {"name": "empty-endpoints", "namespace": "default"}, "subsets": []}]
    route("/empty-endpoints", "empty-endpoints", 80)

    # Only a dead endpoint → 502.
    docs += backend_objects("dead", [dead_endpoint()])
    route("/dead", "dead", "http")
    docs += backend_objects("dead-legacy", [dead_endpoint()], mode="endpoints")
    route("/dead-legacy", "dead-legacy", "http")

    # One dead + one live endpoint → every request 200 (connect failure retried elsewhere).
    live = e.echo("retry", "live")
    docs += backend_objects("retry", [dead_endpoint(), live])
    route("/retry", "retry", "http")
    docs += backend_objects("retry-legacy", [dead_endpoint(), e.echo("retry-legacy", "live")], mode="endpoints")
    route("/retry-legacy", "retry-legacy", "http")

    # Round-robin over three pods (three slices, one per port).
    rr = [e.echo("rr", f"rr-{c}") for c in "abc"]
    docs += backend_objects("rr", rr)
    route("/rr", "rr", "http")
    # ... and over two addresses of one slice (127.0.0.2/127.0.0.3, same port).
    port = free_port("127.0.0.2")
    ips = [e.echo("rr-ips", f"ip-{ip}", host=ip, port=port) for ip in ("127.0.0.2", "127.0.0.3")]
    docs += backend_objects("rr-ips", ips)
    assert len([d for d in docs if d["kind"] == "EndpointSlice" and d["metadata"]["name"].startswith("rr-ips")]) == 1
    route("/rr-ips", "rr-ips", "http")

    # Namespaces: an Ingress only sees Services of its own namespace.
    app_default, app_team = e.echo("app", "default-ns"), e.echo("app", "team-ns")
    docs += backend_objects("app", [app_default])
    docs += backend_objects("app", [app_team], namespace="team")
    docs += backend_objects("only-default", [e.echo("only-default")])
    route("/app-default", "app", "http")
    route("/app-team", "app", "http", ns="team")
    route("/cross-namespace", "only-default", "http", ns="team")

    by_ns: dict[str, list] = {}
    for ns, p in paths:
        by_ns.setdefault(ns, []).append(p)
    ings = [ingress(f"backends-{ns}", [rule(None, *ps)], namespace=ns) for ns, ps in by_ns.items()]
    return e.router({"services.yaml": docs, "ingresses.yaml": ings}), {
        "legacy": legacy, "rr": rr, "ips": ips}


def get(router, path):
    return router.curl(path)


@pytest.mark.parametrize("path,served_by", [
    ("/num80", "multi-http"),
    ("/num81", "multi-admin"),
    ("/name-http", "multi-http"),
    ("/name-admin", "multi-admin"),
    ("/single", "single"),
    ("/legacy-by-name", "legacy"),
    ("/legacy-by-number", "legacy"),
    ("/ready-unset", "ready-unset"),
    ("/app-default", "app"),
])
def test_service_port_resolution(setup, path, served_by):
    router, _ = setup
    r = get(router, path)
    assert (r.status, r.service) == (200, served_by), f"{path}: {r}"


def test_unknown_service_port_is_not_served(setup):
    router, _ = setup
    for path in ("/num-unknown", "/name-unknown"):
        r = get(router, path)
        assert r.status in (404, 503), f"{path} names a port the Service does not have: {r}"


@pytest.mark.parametrize("path,pod", [("/legacy-mixed", "ready"), ("/slice-mixed", "ready")])
def test_not_ready_endpoints_are_not_used(setup, path, pod):
    router, _ = setup
    pods = Counter(get(router, path).pod for _ in range(8))
    assert pods == Counter({pod: 8}), f"{path}: not-ready endpoints must not get traffic: {pods}"


def test_namespaces(setup):
    router, _ = setup
    r = get(router, "/app-team")
    assert (r.status, r.served_by) == (200, "app/team-ns"), r
    r = get(router, "/app-default")
    assert (r.status, r.served_by) == (200, "app/default-ns"), r
    r = get(router, "/cross-namespace")
    assert r.status in (404, 503) and r.served_by is None, \
        f"an Ingress must not reach a Service of another namespace: {r}"


def test_no_rule_is_404(setup):
    router, _ = setup
    assert get(router, "/nothing-here").status == 404


@pytest.mark.parametrize("path", ["/no-ready", "/no-slice", "/empty-endpoints"])
def test_no_ready_endpoint_is_503(setup, path):
    router, _ = setup
    r = get(router, path)
    assert r.status == 503, f"{path}: {r}"


@pytest.mark.parametrize("path", ["/dead", "/dead-legacy"])
def test_all_attempts_failed_is_502(setup, path):
    router, _ = setup
    r = get(router, path)
    assert r.status == 502, f"{path}: {r}"


@pytest.mark.parametrize("path,served_by", [("/retry", "retry/live"), ("/retry-legacy", "retry-legacy/live")])
def test_connect_failure_is_retried_on_another_endpoint(setup, path, served_by):
    router, _ = setup
    results = [get(router, path) for _ in range(20)]
    bad = [r for r in results if (r.status, r.served_by) != (200, served_by)]
    assert not bad, f"{len(bad)}/20 requests to {path} not served by the live endpoint: {bad[:3]}"


def _assert_round_robin(seq, pods):
    counts = Counter(seq)
    assert set(counts) == set(pods), f"every ready endpoint must get traffic: {counts}"
    assert max(counts.values()) - min(counts.values()) <= 1, f"uneven distribution {counts} of {seq}"
    repeats = [i for i in range(1, len(seq)) if seq[i] == seq[i - 1]]
    assert not repeats, f"round-robin must not pick the same endpoint twice in a row: {seq}"


def test_round_robin_across_slices(setup):
    router, info = setup
    seq = [get(router, "/rr").pod for _ in range(12)]
    _assert_round_robin(seq, [b.pod for b in info["rr"]])


def test_round_robin_within_one_slice(setup):
    router, info = setup
    seq = [get(router, "/rr-ips").pod for _ in range(8)]
    _assert_round_robin(seq, [b.pod for b in info["ips"]])


def test_round_robin_on_keepalive_connection(setup):
    """One client connection must still be balanced per request, not pinned to an endpoint."""
    import http.client
    router, info = setup
    conn = http.client.HTTPConnection(LOOPBACK, router.http_port, timeout=10)
    try:
        seq = []
        for _ in range(9):
            conn.request("GET", "/rr")
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
            seq.append(resp.getheader("x-served-by").split("/", 1)[1])
    finally:
        conn.close()
    _assert_round_robin(seq, [b.pod for b in info["rr"]])
