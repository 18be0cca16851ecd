"""Prometheus metrics of both tiers, checked after real traffic through the real binaries.

Every assertion is an exact value (or an exact relation between two counters) read from a
parsed ``/metrics`` scrape of the admin port: request counts per Ingress/Service/status
class/fallback, the legacy-fallback share per configured host (the migration's progress
bar) with an unknown Host folded into ``_other``, unrouted 404s, 503 without endpoints,
connect failures, retries and timeouts by kind, configuration rebuilds and problems, ready
endpoints, and on the TLS edge ClientHellos by certificate kind and ALPN, handshakes by TLS
version and certificate expiry.
"""

from __future__ import annotations

import calendar
import subprocess
import threading
import time
import uuid

import pytest

from e2e_lib import (Endpoint, backend_objects, backend_ref, dead_endpoint, h2c_multiplex, http_path, ingress,
                     rule, wait_until)
from edge_support import Pki, cert_secret, curl_https, edge_ingress, s_client, start_edge
from metrics_support import (access_lines, assert_histogram_consistent, scrape, wait_access_line,
                             wait_metric)

REQ = "tandem_requests_total"
FALLBACK = "tandem_fallback_requests_total"
ERRORS = "tandem_upstream_errors_total"
RETRIES = "tandem_upstream_retries_total"
READY = "tandem_backend_ready_endpoints"
REBUILDS = "tandem_config_rebuilds_total"
PROBLEMS = "tandem_config_problems"
HELLOS = "tandem_tls_client_hellos_total"
HANDSHAKES = "tandem_tls_handshakes_total"
NOT_AFTER = "tandem_certificate_not_after_timestamp_seconds"

UNROUTED = {"namespace": "", "ingress": "", "service": ""}


def migration_manifests(legacy, component) -> dict:
    """The migration story: a host-less `/` legacy fallback (selector-less Service + hand-written
    Endpoints) in `default`, a migrated component in `team-a` for `shop.example.com/api`, and a
    configured brand host that only claims `/brand-api` (everything else of it is fallback)."""
    return {
        "legacy.yaml": [
            *backend_objects("legacy", [legacy], mode="endpoints"),
            ingress("legacy-fallback", [rule(None, http_path("/", "legacy", 80))]),
        ],
        "component.yaml": [
            *backend_objects("component", [component], namespace="team-a"),
            ingress("shop", [rule("shop.example.com", http_path("/api", "component", 80))], namespace="team-a"),
            ingress("brand", [rule("brand.example.com", http_path("/brand-api", "component", 80)),
                              rule("*.wild.example.com", http_path("/brand-api", "component", 80))],
                    namespace="team-a"),
        ],
    }


def route_labels(namespace: str, ingress_name: str, service: str, status_class: str, fallback: bool) -> dict:
    return {"namespace": namespace, "ingress": ingress_name, "service": service,
            "status_class": status_class, "fallback": "true" if fallback else "false"}


# --------------------------------------------------------------------------- router: requests


def test_requests_total_per_route_status_class_and_fallback(env):
    legacy = env.echo("legacy", "legacy-1")
    component = env.echo("component", "component-1")
    r = env.router(migration_manifests(legacy, component))

    base = scrape(r.admin_port)
    for s in base.select(REQ):
        assert s.value == 0, f"counter not zero before traffic: {s}"
    assert base.value("tandem_requests_in_flight") == 0
    assert all(s.labels.get("tier") == "router" for s in base.samples), "every series carries tier=router"

    for _ in range(3):
        assert r.get("/api/orders?id=7", host="shop.example.com").service == "component"
    resp = r.get("/api/missing", host="shop.example.com", headers={"x-echo-status": "404"})
    assert (resp.status, resp.service) == (404, "component")
    resp = r.get("/api/broken", host="shop.example.com", headers={"x-echo-status": "503"})
    assert (resp.status, resp.service) == (503, "component")
    resp = r.get("/api/moved", host="shop.example.com", headers={"x-echo-status": "301"})
    assert resp.status == 301
    for _ in range(2):
        assert r.get("/cart", host="brand.example.com").service == "legacy"
    assert r.get("/brand-api/x", host="brand.example.com").service == "component"

    exp = wait_metric(r.admin_port, REQ, 9)
    shop = lambda cls: exp.value(REQ, **route_labels("team-a", "shop", "component", cls, False))  # noqa: E731
    assert (shop("1xx"), shop("2xx"), shop("3xx"), shop("4xx"), shop("5xx")) == (0, 3, 1, 1, 1)
    assert exp.value(REQ, **route_labels("default", "legacy-fallback", "legacy", "2xx", True)) == 2
    assert exp.value(REQ, **route_labels("team-a", "brand", "component", "2xx", False)) == 1
    assert exp.sum(REQ, fallback="true") == 2
    assert exp.sum(REQ, **UNROUTED) == 0

    # the histogram counts exactly the requests of its route
    assert exp.value("tandem_request_duration_seconds_count", namespace="team-a", ingress="shop",
                     service="component") == 6
    assert exp.value("tandem_request_duration_seconds_count", namespace="default",
                     ingress="legacy-fallback", service="legacy") == 2
    assert_histogram_consistent(exp, "tandem_request_duration_seconds")
    assert_histogram_consistent(exp, "tandem_upstream_connect_duration_seconds")
    assert exp.value("tandem_upstream_connect_duration_seconds_count", namespace="team-a",
                     service="component") == 7, "one connect observation per proxied request"
    # a request leaves "in flight" when its context is dropped, just after the response
    wait_until(lambda: scrape(r.admin_port).value("tandem_requests_in_flight") == 0, 3,
               desc="0 in flight")
    assert exp.sum(ERRORS) == 0 and exp.sum(RETRIES) == 0


def test_fallback_per_configured_host_and_other(env):
    legacy = env.echo("legacy", "legacy-1")
    component = env.echo("component", "component-1")
    r = env.router(migration_manifests(legacy, component))

    random_host = f"rnd-{uuid.uuid4().hex[:16]}.attacker.invalid"
    for _ in range(3):
        assert r.get("/shop/cart", host="brand.example.com").service == "legacy"
    assert r.get("/home", host="BRAND.example.com:8080").service == "legacy"  # case and port ignored
    assert r.get("/home", host="a.wild.example.com").service == "legacy"       # wildcard host
    assert r.get("/anything", host="shop.example.com").service == "legacy"     # configured host, no match
    for _ in range(2):
        assert r.get(f"/{random_host}/x?h={random_host}", host=random_host).service == "legacy"
    assert r.get("/api/orders", host="shop.example.com").service == "component"  # not fallback

    wait_metric(r.admin_port, FALLBACK, 8)
    # the last (non-fallback) request is counted in its logging phase, just after the response
    exp = wait_metric(r.admin_port, REQ, 9)
    assert exp.value(FALLBACK, host="brand.example.com") == 4
    assert exp.value(FALLBACK, host="*.wild.example.com") == 1
    assert exp.value(FALLBACK, host="shop.example.com") == 1
    assert exp.value(FALLBACK, host="_other") == 2
    hosts = exp.label_values(FALLBACK, "host")
    assert hosts <= {"brand.example.com", "*.wild.example.com", "shop.example.com", "_other"}, hosts
    assert random_host not in exp.text, "a client-chosen Host must never become a label value"
    assert "attacker" not in exp.text
    # fallback requests are also in requests_total{fallback="true"} of the fallback Ingress
    assert exp.value(REQ, **route_labels("default", "legacy-fallback", "legacy", "2xx", True)) == 8
    assert exp.value(REQ, **route_labels("team-a", "shop", "component", "2xx", False)) == 1


def test_fallback_host_label_comes_from_any_ingress_class(env):
    """A host named only by an Ingress of another class (the edge's branded domains) is a
    configured host too: the router's progress bar must show it, not `_other`."""
    legacy = env.echo("legacy", "legacy-1")
    edge_only = ingress("brand-edge", [rule("edge-only.example.com", http_path("/", "router", 80))],
                        class_name="tandem-edge")
    edge_only["spec"]["tls"] = [{"hosts": ["tls-only.example.com"], "secretName": "tls-only"}]
    r = env.router({"legacy.yaml": [*backend_objects("legacy", [legacy], mode="endpoints"),
                                    ingress("legacy-fallback", [rule(None, http_path("/", "legacy", 80))])],
                    "edge.yaml": edge_only})
    assert r.get("/x", host="edge-only.example.com").service == "legacy"
    assert r.get("/x", host="tls-only.example.com").service == "legacy"
    exp = wait_metric(r.admin_port, FALLBACK, 2)
    assert exp.value(FALLBACK, host="edge-only.example.com") == 1
    assert exp.value(FALLBACK, host="tls-only.example.com") == 1
    assert exp.value(FALLBACK, host="_other") == 0


def test_default_backend_counts_as_fallback(env):
    legacy = env.echo("legacy", "legacy-1")
    component = env.echo("component", "component-1")
    r = env.router({"all.yaml": [
        *backend_objects("legacy", [legacy], mode="endpoints"),
        *backend_objects("component", [component]),
        ingress("catch-all", default_backend=backend_ref("legacy", 80)),
        ingress("app", [rule("app.example.com", http_path("/app", "component", 80))]),
    ]})
    assert r.get("/other", host="app.example.com").service == "legacy"
    assert r.get("/other", host="unknown.example.org").service == "legacy"
    wait_metric(r.admin_port, FALLBACK, 2)
    exp = wait_metric(r.admin_port, REQ, 2, fallback="true")
    assert exp.value(FALLBACK, host="app.example.com") == 1
    assert exp.value(FALLBACK, host="_other") == 1
    assert exp.value(REQ, **route_labels("default", "catch-all", "legacy", "2xx", True)) == 2


def test_unrouted_404(env):
    component = env.echo("component", "component-1")
    r = env.router({"app.yaml": [*backend_objects("component", [component]),
                                 ingress("app", [rule("app.example.com", http_path("/app", "component", 80))])]})
    assert r.get("/nothing", host="app.example.com").status == 404
    assert r.get("/app", host="other.example.com").status == 404
    exp = wait_metric(r.admin_port, REQ, 2)
    assert exp.value(REQ, status_class="4xx", fallback="false", **UNROUTED) == 2
    assert exp.sum(REQ, ingress="app") == 0
    assert exp.sum(FALLBACK) == 0, "a 404 is not the legacy fallback"
    assert exp.value("tandem_request_duration_seconds_count", **UNROUTED) == 2


def test_no_endpoints_503(env):
    r = env.router({"app.yaml": [*backend_objects("empty", []),
                                 ingress("app", [rule("app.example.com", http_path("/", "empty", 80))])]})
    resp = r.get("/x", host="app.example.com")
    assert resp.status == 503
    exp = wait_metric(r.admin_port, REQ, 1)
    assert exp.value(REQ, **route_labels("default", "app", "empty", "5xx", False)) == 1
    assert exp.value(READY, namespace="default", service="empty", port="80") == 0
    assert exp.sum(ERRORS) == 0, "no endpoint was tried, so no upstream error"
    assert exp.value("tandem_upstream_connect_duration_seconds_count", namespace="default", service="empty") == 0


def test_dead_endpoint_is_retried_and_counted(env):
    live = env.echo("pair", "pair-live")
    dead = dead_endpoint()
    r = env.router({"pair.yaml": [*backend_objects("pair", [live.endpoint(), dead]),
                                  ingress("pair", [rule("pair.example.com", http_path("/", "pair", 80))])]})
    exp = scrape(r.admin_port)
    assert exp.value(READY, namespace="default", service="pair", port="80") == 2
    n = 6
    for i in range(n):
        resp = r.get(f"/r{i}", host="pair.example.com")
        assert (resp.status, resp.pod) == (200, "pair-live"), resp
    exp = wait_metric(r.admin_port, REQ, n)
    assert exp.value(REQ, **route_labels("default", "pair", "pair", "2xx", False)) == n
    lines = [wait_access_line(r.proc, path=f"/r{i}") for i in range(n)]
    retried = sum(1 for e in lines if e["attempts"] == 2)
    assert retried >= 1, f"round-robin over two endpoints never picked the dead one: {lines}"
    assert all(e["attempts"] in (1, 2) for e in lines)
    assert exp.value(RETRIES, namespace="default", service="pair") == retried
    assert exp.value(ERRORS, namespace="default", service="pair", kind="connect_refused") == retried
    assert exp.sum(ERRORS) == retried


def test_all_endpoints_dead_502_counts_each_failed_connect_once(env):
    d1, d2 = dead_endpoint(), dead_endpoint()
    r = env.router({"dead.yaml": [*backend_objects("gone", [d1, d2]),
                                  ingress("gone", [rule("gone.example.com", http_path("/", "gone", 80))])]})
    resp = r.get("/x", host="gone.example.com")
    assert resp.status == 502
    exp = wait_metric(r.admin_port, REQ, 1)
    assert exp.value(REQ, **route_labels("default", "gone", "gone", "5xx", False)) == 1
    line = wait_access_line(r.proc, path="/x")
    assert line["attempts"] == 2 and line["status"] == 502
    assert exp.value(RETRIES, namespace="default", service="gone") == 1, "one retry: endpoint 1 -> endpoint 2"
    # two connection attempts were refused: exactly two errors, not one per attempt plus one per request
    assert exp.value(ERRORS, namespace="default", service="gone", kind="connect_refused") == 2, \
        exp.select(ERRORS)


def test_single_dead_endpoint_502_one_error(env):
    r = env.router({"dead.yaml": [*backend_objects("gone", [dead_endpoint()]),
                                  ingress("gone", [rule("gone.example.com", http_path("/", "gone", 80))])]})
    assert r.get("/x", host="gone.example.com").status == 502
    exp = wait_metric(r.admin_port, REQ, 1)
    assert exp.value(RETRIES, namespace="default", service="gone") == 0
    assert exp.value(ERRORS, namespace="default", service="gone", kind="connect_refused") == 1, \
        exp.select(ERRORS)


def test_read_timeout_504_by_kind(env):
    slow = env.echo("slow", "slow-1")
    r = env.router({"slow.yaml": [*backend_objects("slow", [slow]),
                                  ingress("slow", [rule("slow.example.com", http_path("/", "slow", 80))])]},
                   args=["--upstream-read-timeout", "300ms"])
    resp = r.get("/x", host="slow.example.com", headers={"x-echo-delay-ms": "3000"})
    assert resp.status == 504
    exp = wait_metric(r.admin_port, REQ, 1)
    assert exp.value(REQ, **route_labels("default", "slow", "slow", "5xx", False)) == 1
    assert exp.value(ERRORS, namespace="default", service="slow", kind="read_timeout") == 1, exp.select(ERRORS)
    assert exp.value(RETRIES, namespace="default", service="slow") == 0, "a GET already sent is not retried here"


def test_no_request_metrics_flag(env):
    component = env.echo("component", "component-1")
    r = env.router({"app.yaml": [*backend_objects("component", [component]),
                                 ingress("app", [rule(None, http_path("/", "component", 80))])]},
                   args=["--no-request-metrics"])
    for _ in range(3):
        assert r.get("/x").status == 200
    wait_access_line(r.proc, path="/x")
    exp = scrape(r.admin_port)
    assert exp.sum(REQ) == 0 and exp.sum(FALLBACK) == 0
    assert exp.sum("tandem_request_duration_seconds_count") == 0
    # configuration metrics stay
    assert exp.sum(REBUILDS) >= 1
    assert exp.value(READY, namespace="default", service="component", port="80") == 1


def test_h2c_streams_counted_each(env):
    component = env.echo("component", "component-1")
    r = env.router({"app.yaml": [*backend_objects("component", [component]),
                                 ingress("app", [rule(None, http_path("/", "component", 80))])]})
    paths = [f"/s{i}" for i in range(5)]
    res = h2c_multiplex(r.http_port, paths)
    assert all(v["status_200"] for v in res.values()), res
    exp = wait_metric(r.admin_port, REQ, 5)
    assert exp.value(REQ, **route_labels("default", "app", "component", "2xx", True)) == 5
    assert exp.value(FALLBACK, host="_other") == 5


def test_in_flight_and_aborted_request(env):
    slow = env.echo("slow", "slow-1")
    r = env.router({"slow.yaml": [*backend_objects("slow", [slow]),
                                  ingress("slow", [rule("slow.example.com", http_path("/", "slow", 80))])]})
    done = threading.Event()

    def slow_request():
        try:
            r.get("/held", host="slow.example.com", headers={"x-echo-delay-ms": "1500"}, timeout=5)
        finally:
            done.set()

    t = threading.Thread(target=slow_request, daemon=True)
    t.start()
    wait_until(lambda: scrape(r.admin_port).value("tandem_requests_in_flight") == 1, 3, desc="1 in flight")
    assert done.wait(5)
    t.join(5)
    wait_until(lambda: scrape(r.admin_port).value("tandem_requests_in_flight") == 0, 3, desc="0 in flight")
    # a client that gives up before the backend answers: the request ends, in_flight returns to 0
    with pytest.raises(OSError):
        r.get("/abandoned", host="slow.example.com", headers={"x-echo-delay-ms": "1000"}, timeout=0.2)
    line = wait_access_line(r.proc, path="/abandoned", timeout=5)
    exp = wait_until(lambda: (x := scrape(r.admin_port)).value("tandem_requests_in_flight") == 0 and x, 3,
                     desc="0 in flight after abort")
    assert exp.sum(REQ, ingress="slow") == 2
    assert exp.value(REQ, **route_labels("default", "slow", "slow", "2xx", False)) == 1 + (line["status"] == 200)


# --------------------------------------------------------------------------- router: configuration


def test_config_rebuilds_problems_and_ready_endpoints(env):
    e1 = env.echo("app", "app-1")
    e2 = env.echo("app", "app-2")
    r = env.router({"app.yaml": [*backend_objects("app", [e1]),
                                 ingress("app", [rule("app.example.com", http_path("/", "app", 80))])]})
    exp0 = scrape(r.admin_port)
    assert exp0.value(REBUILDS, result="ok") >= 1 and exp0.value(REBUILDS, result="partial") == 0
    assert exp0.sum(PROBLEMS) == 0, exp0.select(PROBLEMS)
    assert exp0.value(READY, namespace="default", service="app", port="80") == 1
    assert exp0.value("tandem_config_objects", kind="Ingress") == 1
    assert exp0.value("tandem_config_objects", kind="Service") == 1
    assert exp0.value("tandem_config_objects", kind="EndpointSlice") == 1
    assert exp0.value("tandem_config_routes") == 1
    ts0 = exp0.value("tandem_config_last_success_timestamp_seconds")
    assert abs(ts0 - time.time()) < 120, f"last success timestamp {ts0} is not unix time now"

    # no change, no rebuild: the 1 s poll must not republish an unchanged directory
    time.sleep(2.5)
    assert scrape(r.admin_port).sum(REBUILDS) == exp0.sum(REBUILDS), "rebuilds without any change"

    # a file change: one more endpoint → a rebuild, and the gauge follows
    r.write("app.yaml", [*backend_objects("app", [e1, e2]),
                         ingress("app", [rule("app.example.com", http_path("/", "app", 80))])])
    exp1 = wait_until(lambda: (x := scrape(r.admin_port)).value(READY, namespace="default", service="app",
                                                                  port="80") == 2 and x, 5,
                      desc="ready endpoints 2")
    assert exp1.value(REBUILDS, result="ok") > exp0.value(REBUILDS, result="ok")
    assert exp1.value("tandem_config_last_success_timestamp_seconds") > ts0

    # a broken Ingress: missing Service and an invalid path → problems by reason, rebuild partial
    r.write("broken.yaml", ingress("broken", [rule("broken.example.com",
                                                   http_path("/ok", "no-such-service", 80),
                                                   http_path("relative-path", "app", 80))]))
    exp2 = wait_until(lambda: (x := scrape(r.admin_port)).value(REBUILDS, result="partial") >= 1 and x, 5,
                      desc="a partial rebuild")
    assert exp2.value(PROBLEMS, kind="Ingress", reason="service_not_found") == 1, exp2.select(PROBLEMS)
    assert exp2.value(PROBLEMS, kind="Ingress", reason="invalid_path") == 1, exp2.select(PROBLEMS)
    assert exp2.sum(PROBLEMS) == 2, exp2.select(PROBLEMS)
    assert exp2.value("tandem_config_objects", kind="Ingress") == 2
    # the good route is untouched
    assert r.get("/", host="app.example.com").status == 200

    # endpoints-only change while the broken Ingress is still there: problems must not vanish
    r.write("app.yaml", [*backend_objects("app", [e1]),
                         ingress("app", [rule("app.example.com", http_path("/", "app", 80))])])
    exp3 = wait_until(lambda: (x := scrape(r.admin_port)).value(READY, namespace="default", service="app",
                                                                  port="80") == 1 and x, 5,
                      desc="ready endpoints back to 1")
    assert exp3.value(PROBLEMS, kind="Ingress", reason="service_not_found") == 1, exp3.select(PROBLEMS)
    assert exp3.value(PROBLEMS, kind="Ingress", reason="invalid_path") == 1, exp3.select(PROBLEMS)

    # fixing it: problems gone, an ok rebuild
    ok_before = exp3.value(REBUILDS, result="ok")
    r.delete("broken.yaml")
    exp4 = wait_until(lambda: (x := scrape(r.admin_port)).sum(PROBLEMS) == 0 and x, 5, desc="problems cleared")
    assert exp4.value(REBUILDS, result="ok") > ok_before
    assert exp4.value("tandem_config_objects", kind="Ingress") == 1


def test_ready_endpoints_for_hand_written_endpoints(env):
    legacy = env.echo("legacy", "legacy-1")
    eps = [legacy.endpoint(), Endpoint("127.0.0.1", 1, True, "x"), Endpoint("127.0.0.1", 2, False, "y")]
    r = env.router({"legacy.yaml": [*backend_objects("legacy", eps, mode="endpoints", service_port=8080),
                                    ingress("legacy", [rule(None, http_path("/", "legacy", 8080))])]})
    exp = scrape(r.admin_port)
    # v1 Endpoints: one subset per target port; notReadyAddresses are not ready
    assert exp.value(READY, namespace="default", service="legacy", port="8080") == 2, exp.select(READY)


# --------------------------------------------------------------------------- tls-edge


def openssl_not_after(cert_pem: str) -> int:
    out = subprocess.run(["openssl", "x509", "-noout", "-enddate"], input=cert_pem.encode(),
                         capture_output=True, check=True).stdout.decode().strip()
    # notAfter=Dec 21 06:10:00 2026 GMT
    return calendar.timegm(time.strptime(out.split("=", 1)[1], "%b %d %H:%M:%S %Y %Z"))


@pytest.fixture
def edge_setup(env, tmp_path):
    pki = Pki(tmp_path / "pki")
    certs = {
        "exact": pki.leaf("exact", ["exact.example.com"], days=40),
        "wild": pki.leaf("wild", ["*.wild.example.com"], days=50),
        "default": pki.leaf("default", ["default.example.com"], days=60),
    }
    echo = env.echo("front", "front-1")
    manifests = {
        "backend.yaml": backend_objects("front", [echo]),
        "secrets.yaml": [cert_secret("exact-tls", certs["exact"]), cert_secret("wild-tls", certs["wild"]),
                         cert_secret("default-tls", certs["default"])],
        "edge.yaml": edge_ingress("brands", [(["exact.example.com"], "exact-tls"),
                                             (["*.wild.example.com"], "wild-tls")], "front", 80),
    }
    edge = start_edge(env, manifests, ["--default-certificate", "default/default-tls"])
    return pki, certs, edge


def test_edge_tls_hellos_handshakes_and_expiry(edge_setup):
    pki, certs, edge = edge_setup
    exp0 = scrape(edge.admin_port)
    assert all(s.labels.get("tier") == "tls-edge" for s in exp0.samples)
    assert exp0.sum(HELLOS) == 0 and exp0.sum(HANDSHAKES) == 0

    # certificate expiry per Secret and host equals the certificate's notAfter
    for secret, host, cert in (("exact-tls", "exact.example.com", certs["exact"]),
                               ("wild-tls", "*.wild.example.com", certs["wild"])):
        got = exp0.value(NOT_AFTER, None, namespace="default", secret=secret, host=host)
        assert got == openssl_not_after(cert.cert_pem), (secret, host, exp0.select(NOT_AFTER))
    assert exp0.label_values(NOT_AFTER, "host") == {"exact.example.com", "*.wild.example.com"}

    ca = pki.ca_path
    # exact cert, HTTP/1.1 only offered, TLS 1.3
    r = curl_https(edge, "exact.example.com", "/a", cacert=ca)
    assert (r.status, r.service) == (200, "front")
    # wildcard cert, h2 offered
    r = curl_https(edge, "x.wild.example.com", "/b", cacert=ca, http2=True)
    assert (r.status, r.http_version) == (200, "2")
    # TLS 1.2, exact cert
    r = curl_https(edge, "exact.example.com", "/c", cacert=ca, extra=["--tlsv1.2", "--tls-max", "1.2"])
    assert r.status == 200
    # unknown SNI → default certificate (no ALPN offered by s_client → http1)
    sc = s_client(edge.https_port, "unknown.example.org", stdin=b"")
    assert sc.handshake_ok, sc.out[-1500:]
    # a handshake the client aborts: wrong CA → curl rejects the server certificate
    other_ca = Pki(pki.dir / "other-ca", ca_cn="not our CA")
    r = curl_https(edge, "exact.example.com", "/d", cacert=other_ca.ca_path, check=False,
                   extra=["--tlsv1.2", "--tls-max", "1.2"])
    assert r.status < 0, "curl must fail verification against another CA"

    exp = wait_metric(edge.admin_port, HELLOS, 5)
    assert exp.value(HELLOS, certificate="exact", alpn="http1") == 3, exp.select(HELLOS)
    assert exp.value(HELLOS, certificate="wildcard", alpn="h2") == 1, exp.select(HELLOS)
    assert exp.value(HELLOS, certificate="default", alpn="http1") == 1, exp.select(HELLOS)
    assert exp.value(HELLOS, certificate="wildcard", alpn="http1") == 0
    assert exp.value(HELLOS, certificate="exact", alpn="h2") == 0

    versions = exp.label_values(HANDSHAKES, "version")
    assert exp.label_values(HANDSHAKES, "result") == {"ok"}
    v12 = [v for v in versions if "1.2" in v or "1_2" in v]
    v13 = [v for v in versions if "1.3" in v or "1_3" in v]
    assert len(v12) == 1 and len(v13) == 1, f"one series per version, got {versions}"
    assert exp.value(HANDSHAKES, result="ok", version=v12[0]) == 1, exp.select(HANDSHAKES)
    assert exp.value(HANDSHAKES, result="ok", version=v13[0]) == 3, exp.select(HANDSHAKES)
    assert exp.sum(HELLOS) - exp.sum(HANDSHAKES) == 1, "failed handshakes = hellos - ok"

    # edge requests are counted in the edge's own requests_total, with tier="tls-edge"
    assert exp.value(REQ, **route_labels("default", "brands", "front", "2xx", False)) == 3
    assert exp.sum(FALLBACK) == 0


def test_edge_hello_retry_request_counts_two_hellos_one_handshake(edge_setup):
    """A TLS 1.3 client whose first key share the server does not support gets a
    HelloRetryRequest and sends a second ClientHello on the same connection. rustls asks the
    certificate resolver once per ClientHello, so this is documented: two hellos, one completed
    handshake (the metric's help text says a HelloRetryRequest adds a hello)."""
    pki, certs, edge = edge_setup
    sc = s_client(edge.https_port, "exact.example.com", "-tls1_3", "-groups", "ffdhe2048:X25519")
    assert sc.handshake_ok and sc.protocol == "TLSv1.3", sc.out[-1500:]
    exp = wait_metric(edge.admin_port, HANDSHAKES, 1)
    assert (exp.sum(HELLOS), exp.sum(HANDSHAKES)) == (2, 1), \
        f"{exp.select(HELLOS)} {exp.select(HANDSHAKES)}"


def test_edge_config_problems_and_expired_certificate(env, tmp_path):
    pki = Pki(tmp_path / "pki")
    good = pki.leaf("good", ["good.example.com"])
    old = pki.leaf("old", ["old.example.com"], expired=True)
    echo = env.echo("front", "front-1")
    edge = start_edge(env, {
        "backend.yaml": backend_objects("front", [echo]),
        "secrets.yaml": [cert_secret("good-tls", good), cert_secret("old-tls", old)],
        "edge.yaml": edge_ingress("brands", [(["good.example.com"], "good-tls"), (["old.example.com"], "old-tls"),
                                             (["missing.example.com"], "missing-tls")], "front", 80),
    })
    exp = scrape(edge.admin_port)
    reasons = exp.label_values(PROBLEMS, "reason")
    assert exp.sum(PROBLEMS, reason="secret_not_found") == 1, exp.select(PROBLEMS)
    assert exp.value(REBUILDS, result="ok") == 0 and exp.value(REBUILDS, result="partial") >= 1, \
        (reasons, exp.select(REBUILDS))
    # the expired certificate is served and its expiry is in the past
    na = exp.value(NOT_AFTER, None, namespace="default", secret="old-tls", host="old.example.com")
    assert na == openssl_not_after(old.cert_pem) and na < time.time()
    assert exp.value(NOT_AFTER, None, namespace="default", secret="good-tls", host="good.example.com") == \
        openssl_not_after(good.cert_pem)
    assert exp.label_values(NOT_AFTER, "host") == {"good.example.com", "old.example.com"}


def test_edge_rejected_certificate_is_a_config_problem(edge_setup):
    """A Secret whose key does not match its certificate is rejected (the host keeps its last
    good certificate). That must be visible in tandem_config_problems, not only in a log line:
    it is what an operator alerts on before the old certificate expires."""
    pki, certs, edge = edge_setup
    before = scrape(edge.admin_port)
    other = pki.leaf("other", ["other.example.com"])
    bad = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
           "metadata": {"name": "exact-tls", "namespace": "default"},
           "stringData": {"tls.crt": pki.leaf("exact-2", ["exact.example.com"]).cert_pem, "tls.key": other.key_pem}}
    edge.write("secrets.yaml", [bad, cert_secret("wild-tls", certs["wild"]), cert_secret("default-tls", certs["default"])])
    edge.wait_log(r"certificate rejected")
    exp = wait_until(lambda: (x := scrape(edge.admin_port)).sum(REBUILDS) > before.sum(REBUILDS) and x, 5,
                     desc="a rebuild after the Secret change")
    # the last good certificate is still served and its expiry still exported
    assert exp.value(NOT_AFTER, None, namespace="default", secret="exact-tls", host="exact.example.com") == \
        openssl_not_after(certs["exact"].cert_pem)
    assert exp.sum(PROBLEMS) >= 1, f"rejected certificate not in tandem_config_problems: {exp.select(PROBLEMS)}"
    assert exp.value(REBUILDS, result="partial") >= 1, exp.select(REBUILDS)


def test_edge_renewed_certificate_updates_not_after(edge_setup):
    pki, certs, edge = edge_setup
    renewed = pki.leaf("exact-renewed", ["exact.example.com"], days=90)
    edge.write("secrets.yaml", [cert_secret("exact-tls", renewed), cert_secret("wild-tls", certs["wild"]),
                                cert_secret("default-tls", certs["default"])])
    want = openssl_not_after(renewed.cert_pem)
    assert want != openssl_not_after(certs["exact"].cert_pem)
    wait_until(lambda: scrape(edge.admin_port).value(NOT_AFTER, None, namespace="default", secret="exact-tls",
                                                     host="exact.example.com") == want,
               5, desc="not_after of the renewed certificate")
    # removing the host from the edge Ingress removes its expiry series
    edge.write("edge.yaml", edge_ingress("brands", [(["*.wild.example.com"], "wild-tls")], "front", 80))
    wait_until(lambda: scrape(edge.admin_port).label_values(NOT_AFTER, "host") == {"*.wild.example.com"},
               5, desc="expiry series of exact.example.com gone")


def test_edge_access_log_and_request_id_through_both_tiers(env, tmp_path):
    """edge → router → component: both tiers count the request, each under its own tier label,
    and the request id made by the edge reaches the component and both access logs."""
    pki = Pki(tmp_path / "pki")
    cert = pki.leaf("brand", ["branded.example.com"])
    component = env.echo("component", "component-1")
    router = env.router({"app.yaml": [*backend_objects("component", [component]),
                                      ingress("comp", [rule(None, http_path("/api", "component", 80))])]},
                        args=["--trusted-proxies", "127.0.0.1/32"])
    edge = start_edge(env, {
        "router.yaml": backend_objects("router", [Endpoint("127.0.0.1", router.http_port, True, "router-0")]),
        "secret.yaml": cert_secret("brand-tls", cert),
        "edge.yaml": edge_ingress("brand", [(["branded.example.com"], "brand-tls")], "router", 80),
    })
    r = curl_https(edge, "branded.example.com", "/api/orders", cacert=pki.ca_path)
    assert (r.status, r.service) == (200, "component")
    rid = r.header("x-request-id")
    assert rid and len(rid) == 32
    assert r.json()["headers"].get("x-request-id") == rid
    e_line = wait_access_line(edge.proc, path="/api/orders")
    r_line = wait_access_line(router.proc, path="/api/orders")
    assert e_line["request_id"] == r_line["request_id"] == rid
    assert e_line["tier"] == "tls-edge" and r_line["tier"] == "router"
    assert r_line["client"] == "127.0.0.1"
    ex = wait_metric(edge.admin_port, REQ, 1)
    rx = wait_metric(router.admin_port, REQ, 1)
    assert ex.value(REQ, **route_labels("default", "brand", "router", "2xx", False)) == 1
    assert rx.value(REQ, **route_labels("default", "comp", "component", "2xx", False)) == 1
    assert len(access_lines(edge.proc)) == 1 and len(access_lines(router.proc)) == 1
