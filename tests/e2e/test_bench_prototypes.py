"""The benchmark floors and prototypes of crates/bench-floor proxy what the benchmarks send.

bench/cpu.sh compares their CPU per request with nginx and the router; a figure is only worth
something if the binary really proxied the request. Each one is started in front of a real echo
backend and checked with real requests on one keep-alive connection: the backend's answer comes
back unchanged, and a request body gets through (or, for the bodiless lower bound `bench-raw`,
is refused with 501 as documented). `bench-floor-ingress` must also send the ingress-nginx header
set it stands for, and `bench-floor-tls` must proxy over its TLS listener as over its plain one.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import ssl

import pytest

from e2e_lib import LOOPBACK, free_port, http_request, port_open, require_binary, wait_until
from edge_support import Pki, SniHTTPSConnection

# binary, takes a THREADS argument, forwards request bodies
PROTOTYPES = [
    ("bench-floor", True, True),
    ("bench-floor-mimalloc", True, True),
    ("bench-floor-ingress", True, True),
    ("bench-lean", True, True),
    ("bench-hyper", False, True),
    ("bench-raw", False, False),
]


@pytest.mark.parametrize("name,threads,bodies", PROTOTYPES, ids=[p[0] for p in PROTOTYPES])
def test_prototype_proxies_to_the_backend(env, name, threads, bodies):
    binary = require_binary(name)
    echo = env.echo("echo")
    port = free_port()
    argv = [str(binary), f"{LOOPBACK}:{port}", echo.addr] + (["1"] if threads else [])
    proc = env.spawn(name, argv)
    wait_until(lambda: port_open(port), 10, desc=f"{name} listening")

    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    for i in range(20):
        r = http_request(port, f"/bench?i={i}", host="branded-domain.example.com",
                         headers={"X-Probe": str(i)}, conn=conn)
        assert r.status == 200, (name, r.status, r.body[:200])
        seen = json.loads(r.body)
        assert seen["service"] == "echo"
        assert seen["path"] == f"/bench?i={i}"
        assert seen["host"] == "branded-domain.example.com"
        assert seen["headers"]["x-probe"] == str(i)

    r = http_request(port, "/upload", method="POST", body=b"payload-123", conn=conn)
    if bodies:
        assert r.status == 200
        seen = json.loads(r.body)
        assert seen["method"] == "POST"
        assert seen["body"] == "payload-123"
    else:
        assert r.status == 501
    conn.close()

    proc.signal(signal.SIGINT)
    assert proc.wait_exit(10) is not None, f"{name} did not stop on SIGINT"


def test_ingress_floor_sends_the_ingress_nginx_headers(env):
    """The lower bound stands for the work ingress-nginx does: its forwarded headers and request
    id reach the backend, and a client's own values of them do not."""
    binary = require_binary("bench-floor-ingress")
    echo = env.echo("echo")
    port = free_port()
    proc = env.spawn("bench-floor-ingress", [str(binary), f"{LOOPBACK}:{port}", echo.addr, "1"])
    wait_until(lambda: port_open(port), 10, desc="bench-floor-ingress listening")
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    ids = set()
    for _ in range(3):
        r = http_request(port, "/bench", host="branded-domain.example.com", conn=conn, headers={
            "X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.6", "X-Forwarded-Host": "evil.example",
            "X-Forwarded-Proto": "https", "X-Forwarded-Port": "1"})
        assert r.status == 200, r.body[:200]
        h = json.loads(r.body)["headers"]
        assert h["x-forwarded-for"] == LOOPBACK and h["x-real-ip"] == LOOPBACK, h
        assert h["x-forwarded-host"] == "branded-domain.example.com", h
        assert h["x-forwarded-port"] == str(port) and h["x-forwarded-proto"] == "http", h
        assert re.fullmatch(r"[0-9a-f]{32}", h["x-request-id"]), h
        ids.add(h["x-request-id"])
    assert len(ids) == 3, "each request gets its own id"
    conn.close()
    proc.signal(signal.SIGINT)
    assert proc.wait_exit(10) is not None


def test_tls_floor_proxies_over_tls_and_plain(env):
    binary = require_binary("bench-floor-tls")
    echo = env.echo("echo")
    pki = Pki(env.work_dir / "pki")
    host = "branded-domain.example.com"
    cert = pki.leaf("floor", [host])
    crt, key = env.work_dir / "floor.crt", env.work_dir / "floor.key"
    crt.write_text(cert.cert_pem)
    key.write_text(cert.key_pem)
    tls_port, plain_port = free_port(), free_port()
    proc = env.spawn("bench-floor-tls", [str(binary), f"{LOOPBACK}:{tls_port}", f"{LOOPBACK}:{plain_port}",
                                         echo.addr, str(crt), str(key)])
    wait_until(lambda: port_open(tls_port) and port_open(plain_port), 10, desc="bench-floor-tls listening")

    ctx = ssl.create_default_context(cafile=pki.ca_path)
    conn = SniHTTPSConnection(host, tls_port, ctx)
    for i in range(10):
        status, body = conn.get(f"/bench?i={i}")
        assert status == 200, body[:200]
        seen = json.loads(body)
        assert seen["service"] == "echo" and seen["path"] == f"/bench?i={i}"
    assert conn.peer_fingerprint() == cert.fingerprint
    conn.close()
    r = http_request(plain_port, "/plain", host=host)
    assert r.status == 200 and json.loads(r.body)["path"] == "/plain"
    proc.signal(signal.SIGINT)
    assert proc.wait_exit(10) is not None
