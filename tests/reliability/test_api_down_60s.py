"""The Kubernetes API server (the fake of ``tests/fakeapi``) goes away for 60 s, then comes back.

Both tiers read the API: client -> tls-edge (HTTPS) -> router (over h2c, by the router Service's
appProtocol) -> echo, plus a loop straight at the router. During the outage the last good
config keeps serving (zero failed requests on either loop, ``/readyz`` stays 200); once the API
server is back, a new route on the router and a new certificate on the edge are served within a
few seconds (the watches resume).
"""

from __future__ import annotations

import os
import threading
import time

from api_support import (EDGE_CLASS, ROUTER_CLASS, cluster, fake_only, poll_served,  # noqa: F401
                         start_api_edge, start_router)
from e2e_lib import Endpoint, backend_objects, http_path, ingress, ingress_class, rule
from edge_support import Pki, cert_secret, curl_https, edge_ingress, peer_fingerprint, wait_fingerprint
from rel_support import Load

HOST = "outage.example.com"
OUTAGE_SECONDS = float(os.environ.get("TANDEM_API_OUTAGE_SECONDS", "60"))
RESUME_SLA = 5.0            # seconds from the first change after the restart to it being served
KINDS = ["ingresses", "ingressclasses", "services", "endpointslices", "endpoints"]


def test_api_server_down_60s_then_back(env, cluster):
    fake = fake_only(cluster)
    pki = Pki(env.work_dir / "pki")
    cert1, cert2 = pki.leaf("v1", [HOST], cn="outage v1"), pki.leaf("v2", [HOST], cn="outage v2")
    app, legacy, late = env.echo("app", "app-1"), env.echo("legacy", "l1"), env.echo("late", "late-1")

    cluster.put(ingress_class(ROUTER_CLASS))
    cluster.put_many(backend_objects("app", [app]) + backend_objects("legacy", [legacy], mode="endpoints")
                     + backend_objects("late", [late]))
    cluster.put(ingress("legacy", [rule(None, http_path("/", "legacy"))]))
    cluster.put(ingress("app", [rule(None, http_path("/app", "app"))]))
    router = start_router(env, cluster, name="router")

    cluster.put(ingress_class(EDGE_CLASS, controller="tandem.dev/tls-edge"))
    router_svc = backend_objects("tandem-router", [Endpoint("127.0.0.1", router.http_port)], mode="endpoints")
    router_svc[0]["spec"]["ports"][0]["appProtocol"] = "kubernetes.io/h2c"
    cluster.put_many(router_svc)
    cluster.put(cert_secret("outage-tls", cert1))
    cluster.put(edge_ingress("outage", [([HOST], "outage-tls")], "tandem-router"))
    edge = start_api_edge(env, cluster, name="edge")
    fake.wait_watches(KINDS, n=2)
    fake.wait_watches(["secrets"])
    wait_fingerprint(edge.https_port, HOST, cert1.fingerprint)

    bound = OUTAGE_SECONDS + 40
    direct = Load(router.http_port, [("/app/x", "app"), ("/shop", "legacy")], threads=2,
                  max_seconds=bound, max_requests=400_000).start()
    via_edge = Load(edge.https_port, [("/app/y", "app"), ("/other", "legacy")], threads=2, max_seconds=bound,
                    max_requests=400_000, tls=(HOST, pki.ca_path)).start()
    handshakes = Load(edge.https_port, [("/app/z", "app")], threads=1, max_seconds=bound,
                      max_requests=20_000, tls=(HOST, pki.ca_path), fresh=True).start()
    readyz: dict[str, set] = {"router": set(), "edge": set()}
    stop_probe = threading.Event()

    def probe_readyz():
        while not stop_probe.wait(0.25):
            readyz["router"].add(router.admin_status("/readyz"))
            readyz["edge"].add(edge.admin_status("/readyz"))

    prober = threading.Thread(target=probe_readyz, daemon=True)
    prober.start()
    marks = {}
    try:
        time.sleep(1.0)
        before = (direct.ok, via_edge.ok, handshakes.ok)
        fake.stop()
        t_down = time.monotonic()
        # changed while the API server is away: must not be seen before it is back
        cluster.put(ingress("during", [rule(None, http_path("/during", "late"))]))
        time.sleep(OUTAGE_SECONDS)
        during = (direct.ok - before[0], via_edge.ok - before[1], handshakes.ok - before[2])
        assert router.get("/during/x").service == "legacy", "a change made during the outage cannot be known"
        fake.start()
        t_up = time.monotonic()
        marks["outage"] = t_up - t_down
        # the first changes after the API server is back
        cluster.put(ingress("after", [rule(None, http_path("/after", "late"))]))
        cluster.put(cert_secret("outage-tls", cert2))
        t_change = time.monotonic()
        marks["router: new route served"] = poll_served(router.http_port, "/after/x", "late", timeout=60) - t_change
        marks["router: route made during outage served"] = (
            poll_served(router.http_port, "/during/x", "late", timeout=60) - t_change)
        wait_fingerprint(edge.https_port, HOST, cert2.fingerprint, timeout=60)
        marks["edge: new certificate served"] = time.monotonic() - t_change
        time.sleep(1.0)
    finally:
        stop_probe.set()
        for load in (direct, via_edge, handshakes):
            load.stop()
        if not fake.running:
            fake.start()
    print(f"\nAPI server down {marks['outage']:.1f} s: requests served during the outage: direct {during[0]}, "
          f"via the edge {during[1]} (keep-alive) + {during[2]} (new handshakes)")
    print(f"  direct: {direct.summary()}\n  via edge: {via_edge.summary()}\n  handshakes: {handshakes.summary()}")
    print("  after the restart: " + ", ".join(f"{k} {v:.2f} s" for k, v in marks.items() if k != "outage"))
    print(f"  /readyz answers seen: router {readyz['router']}, edge {readyz['edge']}")
    assert router.proc.alive() and edge.proc.alive()
    assert min(during) > 50, f"load did not run through the outage: {during}"
    for name, load in (("direct", direct), ("via edge", via_edge), ("handshakes", handshakes)):
        assert not load.failures, f"{name}: {len(load.failures)} failed requests: {load.failures[:10]}"
    assert readyz["router"] == {200} and readyz["edge"] == {200}, f"/readyz flipped during the outage: {readyz}"
    assert peer_fingerprint(edge.https_port, HOST) == cert2.fingerprint
    got = curl_https(edge, HOST, "/after/x", cacert=pki.ca_path)
    assert got.status == 200 and got.service == "late", f"new route through both tiers: {got}"
    slow = {k: v for k, v in marks.items() if k != "outage" and v > RESUME_SLA}
    assert not slow, (f"changes after the API server came back took longer than {RESUME_SLA} s: "
                      + ", ".join(f"{k} {v:.1f} s" for k, v in slow.items()))
