"""SIGTERM to one of two router replicas behind the edge, under load.

client (HTTPS) -> tls-edge -> router Service with two endpoints (two router processes on their
own loopback ports) -> echo. One router gets SIGTERM (``--shutdown-delay 2s --shutdown-grace
10s``): it fails ``/readyz`` at once, keeps serving through the delay, then closes its listener
and drains. As Kubernetes would, its endpoint is marked not ready (``ready: false, serving:
false, terminating: true``) in the router Service's EndpointSlice 1 s after the signal, inside
the delay. Idempotent GETs through the edge must see zero failures. Run with the router Service
port's ``appProtocol: kubernetes.io/h2c`` (multiplexed h2c, as the chart sets it) and without
(pooled HTTP/1.1).
"""

from __future__ import annotations

import signal
import time

import pytest

from e2e_lib import Endpoint, backend_objects, endpoint_slice, http_path, ingress, rule, service, wait_until
from edge_support import Pki, cert_secret, edge_ingress, start_edge
from rel_support import Load

HOST = "replicas.example.com"
DELAY, GRACE = 2.0, 10.0
UNREADY_AFTER = 1.0          # seconds after SIGTERM the endpoint goes not ready
LOAD_MAX_SECONDS = 25.0
LOAD_MAX_REQUESTS = 100_000


def router_service(routers, app_protocol, terminating=()):
    """The router tier's Service (selector, port 80 "http") and one EndpointSlice per replica."""
    svc = service("tandem-router", [("http", 80)])
    if app_protocol:
        svc["spec"]["ports"][0]["appProtocol"] = app_protocol
    docs = [svc]
    for i, r in enumerate(routers):
        sl = endpoint_slice(f"tandem-router-{i}", "tandem-router",
                            [Endpoint("127.0.0.1", r.http_port, True, r.name)], [("http", r.http_port)])
        if r in terminating:
            sl["endpoints"][0]["conditions"] = {"ready": False, "serving": False, "terminating": True}
        docs.append(sl)
    return docs


@pytest.mark.parametrize("app_protocol,unready", [("kubernetes.io/h2c", True), (None, True),
                                                  ("kubernetes.io/h2c", False), (None, False)],
                         ids=["h2c", "http1", "h2c-endpoint-kept", "http1-endpoint-kept"])
def test_sigterm_one_router_replica_behind_the_edge(env, app_protocol, unready):
    """``unready=False``: the endpoint is never taken out (an endpoint update that has not reached
    the edge yet): after the delay the edge meets a closed listener and connections closed by the
    drain, and must retry those idempotent GETs on the other replica."""
    pki = Pki(env.work_dir / "pki")
    cert = pki.leaf("replicas", [HOST])
    app = env.echo("app", "app-1")
    routes = {"backend.yaml": backend_objects("app", [app]),
              "ingress.yaml": ingress("routes", [rule(None, http_path("/", "app", 80))])}
    args = ["--shutdown-delay", f"{DELAY:.0f}s", "--shutdown-grace", f"{GRACE:.0f}s"]
    dying = env.router(routes, args, name="router-a")
    staying = env.router(routes, args, name="router-b")
    edge = start_edge(env, {
        "router-svc.yaml": router_service([dying, staying], app_protocol),
        "secret.yaml": cert_secret("replicas-tls", cert),
        "ingress.yaml": edge_ingress("replicas", [([HOST], "replicas-tls")], "tandem-router", 80),
    })

    tls = (HOST, pki.ca_path)
    keepalive = Load(edge.https_port, [("/ka", "app"), ("/ka/2?x=1", "app")], threads=3,
                     max_seconds=LOAD_MAX_SECONDS, max_requests=LOAD_MAX_REQUESTS, tls=tls).start()
    fresh = Load(edge.https_port, [("/fresh", "app")], threads=1, max_seconds=LOAD_MAX_SECONDS,
                 max_requests=LOAD_MAX_REQUESTS // 10, tls=tls, fresh=True).start()
    marks = {}
    try:
        # both replicas must be carrying traffic before one is stopped
        wait_until(lambda: len(dying.access_logs()) > 50 and len(staying.access_logs()) > 50, 15,
                   desc="both router replicas serving through the edge")
        served_before = (len(dying.access_logs()), len(staying.access_logs()))
        t_term = time.monotonic()
        dying.proc.signal(signal.SIGTERM)
        if unready:
            time.sleep(UNREADY_AFTER)
            edge.write("router-svc.yaml", router_service([dying, staying], app_protocol, terminating=[dying]))
            marks["endpoint not ready"] = time.monotonic() - t_term
        rc = dying.proc.wait_exit(DELAY + GRACE + 5)
        marks["exit"] = time.monotonic() - t_term
        time.sleep(1.5)  # load on the remaining replica only
    finally:
        keepalive.stop()
        fresh.stop()
    dying_total = len(dying.access_logs())
    dying_after_unready = dying_total - served_before[0]
    unready_at = f"+{marks['endpoint not ready']:.2f} s" if unready else "never"
    print(f"\n[{app_protocol or 'http1'}] SIGTERM to router-a: endpoint not ready {unready_at}, "
          f"exit rc={rc} at +{marks['exit']:.2f} s")
    print(f"  keep-alive: {keepalive.summary()}\n  new handshakes: {fresh.summary()}")
    print(f"  router-a served {dying_total} requests ({dying_after_unready} after SIGTERM), "
          f"router-b {len(staying.access_logs())}")
    if keepalive.failures or fresh.failures:
        problems = [line[:400] for line in edge.proc.log_lines()
                    if '"level":"WARN"' in line or '"level":"ERROR"' in line]
        print("  edge log (warnings/errors):\n    " + "\n    ".join(problems[-20:]))
    assert rc == 0, f"router-a exit code {rc}\n{dying.describe()}"
    assert staying.proc.alive() and edge.proc.alive()
    failures = keepalive.failures + fresh.failures
    assert not failures, f"{len(failures)} failed requests through the edge: {failures[:10]}"
    assert keepalive.ok > 200 and fresh.ok > 20
