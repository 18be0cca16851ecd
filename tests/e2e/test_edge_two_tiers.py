"""Both tiers chained: client (127.0.0.2) -> tls-edge (HTTPS) -> router (trusting only
127.0.0.1/32, i.e. the edge) -> echo-backend. The client address survives both hops, forged
forwarding headers from the client are not trusted, HTTP/2 from the client and WebSocket over
wss work; the same with the edge speaking h2c to the router, forced by flag or, with default
flags, chosen by the router Service port's appProtocol.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import time

import pytest
from websockets.sync.client import connect as ws_connect

from e2e_lib import Endpoint, backend_objects, http_path, ingress, rule, wait_until
from edge_support import (Pki, SniHTTPSConnection, cert_secret, client_context, curl_https, edge_ingress,
                          peer_fingerprint, start_edge, wait_fingerprint)

HOST = "shop.example.com"
CLIENT = "127.0.0.2"     # the client's own loopback address, distinct from the edge's 127.0.0.1
EDGE_ADDR = "127.0.0.1"


@pytest.fixture(scope="module")
def pki(module_env):
    return Pki(module_env.work_dir / "pki")


@pytest.fixture(scope="module")
def shop_cert(pki):
    return pki.leaf("shop", [HOST])


@pytest.fixture(scope="module")
def router(module_env):
    app = module_env.echo("app", "app-1")
    return module_env.router({
        "backend.yaml": backend_objects("app", [app]),
        "ingress.yaml": ingress("routes", [rule(None, http_path("/", "app", 80))]),
    }, ["--trusted-proxies", "127.0.0.1/32"], name="router")


def edge_manifests(router, cert, app_protocol=None):
    # The router tier's Service: no selector, hand-written Endpoints -> the router's port.
    router_svc = backend_objects("routing-ingress-controller",
                                 [Endpoint("127.0.0.1", router.http_port)], mode="endpoints")
    if app_protocol:
        router_svc[0]["spec"]["ports"][0]["appProtocol"] = app_protocol
    return {
        "router-svc.yaml": router_svc,
        "secret.yaml": cert_secret("shop-tls", cert),
        "ingress.yaml": edge_ingress("shop", [([HOST], "shop-tls")], "routing-ingress-controller", 80),
    }


# "http1"/"h2c": forced with --upstream-protocol. "default-*": default flags, the protocol comes
# from the router Service port's appProtocol (kubernetes.io/h2c, as the Helm chart sets it, or
# none: an ordinary HTTP/1.1 backend).
@pytest.fixture(scope="module", params=["http1", "h2c", "default-h2c", "default-http1"])
def edge(request, module_env, router, shop_cert):
    if request.param.startswith("default-"):
        app_protocol = "kubernetes.io/h2c" if request.param == "default-h2c" else None
        return start_edge(module_env, edge_manifests(router, shop_cert, app_protocol), [],
                          name=f"edge-{request.param}")
    return start_edge(module_env, edge_manifests(router, shop_cert),
                      ["--upstream-protocol", request.param], name=f"edge-{request.param}")


def get(edge, pki, path="/", **kw):
    r = curl_https(edge, HOST, path, cacert=pki.ca_path, interface=CLIENT, **kw)
    assert r.status == 200, r
    return r, r.json()


def xff_list(value):
    return [p.strip() for p in value.split(",")]


def test_client_address_survives_both_hops(edge, pki, router):
    # The router is shared by every edge variant: only a line logged after this request counts
    # (access-log lines are written by a writer thread, a few milliseconds later).
    def logged():
        return [e for e in router.access_logs() if e.get("path") == "/who?am=i" and e.get("client") == CLIENT]
    before = len(logged())
    r, got = get(edge, pki, "/who?am=i")
    h = got["headers"]
    print(f"\n[{edge.name}] echo saw x-forwarded-for={h.get('x-forwarded-for')!r} x-real-ip={h.get('x-real-ip')!r} "
          f"forwarded={h.get('forwarded')!r} xfp={h.get('x-forwarded-proto')!r} xfh={h.get('x-forwarded-host')!r} "
          f"xfport={h.get('x-forwarded-port')!r}")
    assert got["service"] == "app" and got["path"] == "/who?am=i"
    xff = xff_list(h["x-forwarded-for"])
    assert xff[0] == CLIENT, f"first X-Forwarded-For entry must be the client: {xff}"
    assert xff == [CLIENT, EDGE_ADDR], f"client, then the edge (appended by the router): {xff}"
    assert h["x-real-ip"] == CLIENT
    assert h["x-forwarded-proto"] == "https"
    assert h["x-forwarded-host"] in (HOST, f"{HOST}:{edge.https_port}"), h["x-forwarded-host"]
    assert h["x-forwarded-port"] == str(edge.https_port)
    fwd = h["forwarded"].lower()
    assert f"for={CLIENT}" in fwd and "proto=https" in fwd, fwd
    assert fwd.index(f"for={CLIENT}") < fwd.index(f"for={EDGE_ADDR}") if f"for={EDGE_ADDR}" in fwd else True
    assert got["host"] == f"{HOST}:{edge.https_port}", "Host must pass through both tiers unchanged"
    assert got["proto"] == "HTTP/1.1"
    # the router's access log names the real client too
    entry = wait_until(lambda: logged()[before:], 5, desc="router access log with client 127.0.0.2")[-1]
    # the hop edge -> router really uses the configured protocol
    want = "HTTP/2.0" if edge.name.endswith("h2c") else "HTTP/1.1"
    assert entry.get("proto") == want, f"edge -> router hop spoke {entry.get('proto')}, expected {want}"


def test_forged_forwarding_headers_not_trusted(edge, pki):
    forged = {
        "X-Forwarded-For": "6.6.6.6",
        "X-Real-IP": "6.6.6.6",
        "Forwarded": "for=6.6.6.6;proto=http;host=evil.example",
        "X-Forwarded-Proto": "http",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Port": "1",
    }
    _, got = get(edge, pki, "/forged", headers=forged)
    h = got["headers"]
    print(f"\n[{edge.name}] forged from client -> echo saw xff={h.get('x-forwarded-for')!r} "
          f"x-real-ip={h.get('x-real-ip')!r} forwarded={h.get('forwarded')!r}")
    assert h["x-real-ip"] == CLIENT, f"x-real-ip must be the client, not the forged 6.6.6.6: {h['x-real-ip']}"
    assert xff_list(h["x-forwarded-for"])[0] == CLIENT
    assert "6.6.6.6" not in h["x-forwarded-for"]
    assert "6.6.6.6" not in h.get("forwarded", "") and "evil.example" not in h.get("forwarded", "")
    assert h["x-forwarded-proto"] == "https"
    assert "evil.example" not in h["x-forwarded-host"]
    assert h["x-forwarded-port"] == str(edge.https_port)


def test_http2_from_client(edge, pki):
    r, got = get(edge, pki, "/h2?x=1", http2=True, method="POST", data=b"hello over h2")
    assert r.http_version == "2", r
    assert got["method"] == "POST" and got["path"] == "/h2?x=1" and got["body"] == "hello over h2"
    assert got["proto"] == "HTTP/1.1", "router -> backend stays HTTP/1.1"
    assert got["headers"]["x-real-ip"] == CLIENT
    assert got["headers"]["x-forwarded-proto"] == "https"


def test_many_requests_one_h2_connection(edge, pki):
    """Several URLs in one curl run share one HTTP/2 connection through both tiers."""
    n = 20
    urls = [f"https://{HOST}:{edge.https_port}/multi/{i}" for i in range(n)]
    proc = subprocess.run(["curl", "-sS", "--http2", "--cacert", pki.ca_path, "--interface", CLIENT,
                           "--resolve", f"{HOST}:{edge.https_port}:127.0.0.1", "--max-time", "30",
                           "-w", "%{http_version} %{http_code} %{num_connects}\\n",
                           *[a for u in urls for a in ("-o", "/dev/null", u)]],
                          capture_output=True, timeout=40)
    lines = proc.stdout.decode().split()
    assert proc.returncode == 0, proc.stderr
    triples = [lines[i:i + 3] for i in range(0, len(lines), 3)]
    assert len(triples) == n and all(t[0] == "2" and t[1] == "200" for t in triples), triples
    assert sum(int(t[2]) for t in triples) == 1, f"expected one TLS connection for {n} requests: {triples}"


def ws_open(edge, pki, path):
    sock = socket.create_connection(("127.0.0.1", edge.https_port), timeout=10, source_address=(CLIENT, 0))
    return ws_connect(f"wss://{HOST}:{edge.https_port}{path}", sock=sock, ssl=client_context(pki.ca_path),
                      server_hostname=HOST, open_timeout=10, close_timeout=5)


def test_websocket_over_wss_through_both_tiers(edge, pki):
    t0 = time.monotonic()
    rtts = []
    with ws_open(edge, pki, "/ws/chat?room=1") as ws:
        opened = time.monotonic() - t0
        for i in range(30):
            t = time.monotonic()
            ws.send(f"message {i}")
            assert ws.recv(timeout=10) == f"message {i}"
            rtts.append(time.monotonic() - t)
        ws.send(b"\x00\x01binary\xff")
        assert ws.recv(timeout=10) == b"\x00\x01binary\xff"
        big = "x" * 200_000
        ws.send(big)
        assert ws.recv(timeout=10) == big
    print(f"\n[{edge.name}] wss through both tiers: open {opened * 1000:.0f} ms, "
          f"echo rtt median {statistics.median(rtts) * 1000:.2f} ms max {max(rtts) * 1000:.2f} ms")


def test_latency_figures(edge, pki):
    """Not an SLA: prints the two-hop request latency over keep-alive TLS."""
    conn = SniHTTPSConnection(HOST, edge.https_port, client_context(pki.ca_path), source=CLIENT, timeout=10)
    times = []
    deadline = time.monotonic() + 3
    for _ in range(200):
        if time.monotonic() > deadline:
            break
        t = time.monotonic()
        status, body = conn.get("/lat")
        times.append(time.monotonic() - t)
        assert status == 200 and json.loads(body)["headers"]["x-real-ip"] == CLIENT
    conn.close()
    times.sort()
    print(f"\n[{edge.name}] keep-alive request via edge+router: n={len(times)} median {statistics.median(times) * 1000:.2f} ms "
          f"p95 {times[int(len(times) * 0.95)] * 1000:.2f} ms")
    assert len(times) >= 20


def test_websocket_survives_certificate_swap(env, router, pki, shop_cert):
    """A long-lived wss connection keeps working while the edge's certificate is replaced."""
    edge = start_edge(env, edge_manifests(router, shop_cert), name="edge-swap")
    new = pki.leaf("shop-renewed", [HOST], cn="shop renewed")
    with ws_open(edge, pki, "/ws/long") as ws:
        ws.send("before")
        assert ws.recv(timeout=10) == "before"
        edge.write("secret.yaml", cert_secret("shop-tls", new))
        took = wait_fingerprint(edge.https_port, HOST, new.fingerprint, timeout=5)
        for i in range(10):
            ws.send(f"after {i}")
            assert ws.recv(timeout=10) == f"after {i}"
    assert peer_fingerprint(edge.https_port, HOST) == new.fingerprint
    r = curl_https(edge, HOST, "/renewed", cacert=pki.ca_path, interface=CLIENT)
    assert r.status == 200
    print(f"\n[wss + swap] renewed cert served after {took * 1000:.0f} ms; WebSocket kept working")


def test_edge_trusts_xff_only_from_its_trusted_proxies(env, pki, shop_cert):
    """Edge (straight to an echo-backend, so its own headers are seen) with --trusted-proxies
    127.0.0.2/32: a forwarded chain from 127.0.0.2 (a trusted L7 proxy in front) is kept and
    appended to; the same headers from 127.0.0.3 are replaced by its address."""
    echo = env.echo("direct")
    edge = start_edge(env, {
        "backend.yaml": backend_objects("direct", [echo]),
        "secret.yaml": cert_secret("shop-tls", shop_cert),
        "ingress.yaml": edge_ingress("shop", [([HOST], "shop-tls")], "direct", 80),
    }, ["--trusted-proxies", "127.0.0.2/32"], name="edge-trusting")
    forged = {"X-Forwarded-For": "6.6.6.6"}
    trusted = curl_https(edge, HOST, "/t", cacert=pki.ca_path, interface="127.0.0.2", headers=forged).json()["headers"]
    untrusted = curl_https(edge, HOST, "/u", cacert=pki.ca_path, interface="127.0.0.3", headers=forged).json()["headers"]
    print(f"\n[edge trusted-proxies] from 127.0.0.2: xff={trusted['x-forwarded-for']!r} real={trusted['x-real-ip']!r}; "
          f"from 127.0.0.3: xff={untrusted['x-forwarded-for']!r} real={untrusted['x-real-ip']!r}")
    assert xff_list(trusted["x-forwarded-for"]) == ["6.6.6.6", "127.0.0.2"]
    assert trusted["x-real-ip"] == "6.6.6.6"
    assert xff_list(untrusted["x-forwarded-for"]) == ["127.0.0.3"]
    assert untrusted["x-real-ip"] == "127.0.0.3"
    assert trusted["x-forwarded-proto"] == untrusted["x-forwarded-proto"] == "https"


def test_default_flags_reach_an_http1_only_backend(module_env, pki, shop_cert):
    """With default flags the edge speaks HTTP/1.1 to a backend whose Service port has no
    appProtocol: a backend that knows nothing of HTTP/2 (Python's http.server) answers."""
    import http.server
    import threading

    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            seen.append(self.request_version)
            body = b"plain http/1.1 backend\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        edge = start_edge(module_env, {
            "svc.yaml": backend_objects("plain", [Endpoint("127.0.0.1", server.server_address[1])]),
            "secret.yaml": cert_secret("shop-tls", shop_cert),
            "ingress.yaml": edge_ingress("plain", [([HOST], "shop-tls")], "plain", 80),
        }, [], name="edge-plain-backend")
        for _ in range(3):
            r = curl_https(edge, HOST, "/plain", cacert=pki.ca_path)
            assert r.status == 200, r
            assert r.body == b"plain http/1.1 backend\n"
        assert seen and set(seen) == {"HTTP/1.1"}, seen
    finally:
        server.shutdown()
        server.server_close()
