"""The benchmark floors and prototypes of crates/bench-floor proxy what the benchmarks send.

bench/cpu.sh compares their CPU per request with nginx and the router; a figure is only worth
something if the binary really proxied the request. Each one is started in front of a real echo
backend and checked with real requests on one keep-alive connection: the backend's answer comes
back unchanged, and a request body gets through (or, for the bodiless lower bound `bench-raw`,
is refused with 501 as documented).
"""

from __future__ import annotations

import http.client
import json
import signal

import pytest

from e2e_lib import LOOPBACK, free_port, http_request, port_open, require_binary, wait_until

# binary, takes a THREADS argument, forwards request bodies
PROTOTYPES = [
    ("bench-floor", True, True),
    ("bench-floor-mimalloc", True, True),
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
