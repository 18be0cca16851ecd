"""Proxy behaviour: requests pass unchanged (method, Host, path+query, headers, body),
hop-by-hop headers are dropped, X-Forwarded-* depend on --trusted-proxies, every response
carries Date and Server, h2c with prior knowledge, WebSocket upgrades.
"""

from __future__ import annotations

import email.utils
import json
import socket

import pytest
from websockets.sync.client import connect as ws_connect

from e2e_lib import LOOPBACK, backend_objects, dead_endpoint, h2c_multiplex, http_path, ingress, rule


@pytest.fixture(scope="module")
def manifests(module_env):
    e = module_env
    docs = backend_objects("echo", [e.echo("echo", "echo-1")])
    docs += backend_objects("ws", [e.echo("ws", "ws-1")])
    docs += backend_objects("dead", [dead_endpoint()])
    docs += backend_objects("unready", [e.echo("unready").endpoint(False)])
    ings = [ingress("proxy", [
        rule(None,
             http_path("/echo", "echo", 80),
             http_path("/ws", "ws", 80),
             http_path("/dead", "dead", 80),
             http_path("/unready", "unready", 80)),
        rule("ws.test", http_path("/", "ws", 80)),
        rule("echo.test", http_path("/", "echo", 80)),
    ])]
    return {"backends.yaml": docs, "ingress.yaml": ings}


@pytest.fixture(scope="module")
def router(module_env, manifests):
    """Loopback is NOT trusted (10.0.0.0/8 only)."""
    return module_env.router(manifests, ["--trusted-proxies", "10.0.0.0/8"], name="untrusting")


@pytest.fixture(scope="module")
def trusting_router(module_env, manifests):
    """Loopback IS trusted, as the TLS edge in front of the router would be."""
    return module_env.router(manifests, ["--trusted-proxies", "192.168.0.0/16,127.0.0.1/32"], name="trusting")


# --------------------------------------------------------------------------- pass-through


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_request_passes_unchanged(router, method):
    path = "/echo/a%20b/c;p=1/%2F?x=1&y=%2Fz&flag&x=2"
    body = None if method in ("GET", "DELETE", "OPTIONS") else f"payload for {method} \u00e9".encode()
    r = router.curl(path, host="echo.test", method=method, data=body, headers=[
        ("X-Custom", "some value, with comma"),
        ("X-Multi", "a"),
        ("X-Multi", "b"),
        ("Content-Type", "application/x-test"),
        ("Cookie", "a=1; b=2"),
        ("Authorization", "Bearer token"),
    ])
    assert r.status == 200, r
    got = r.json()
    assert got["method"] == method
    assert got["path"] == path, "path and query must be forwarded byte for byte"
    assert got["host"] == "echo.test"
    h = got["headers"]
    assert h.get("x-custom") == "some value, with comma"
    assert h.get("x-multi") == "a, b"
    assert h.get("cookie") == "a=1; b=2"
    assert h.get("authorization") == "Bearer token"
    assert h.get("user-agent", "").startswith("curl/")
    if body is not None:
        assert h.get("content-type") == "application/x-test"
        assert got["body"] == body.decode()


def test_large_and_chunked_bodies(router):
    big = ("0123456789abcdef" * 64 * 1024).encode()  # 1 MiB
    r = router.curl("/echo/big", data=big, method="POST")
    assert r.status == 200, r
    assert r.json()["body"] == big.decode()
    r = router.curl("/echo/chunked", data=b"chunked-body-" * 1000, method="POST",
                    headers=[("Transfer-Encoding", "chunked")])
    assert r.status == 200, r
    assert r.json()["body"] == "chunked-body-" * 1000


def test_backend_status_and_headers_pass_back(router):
    for code in (201, 204, 301, 404, 418, 500, 503):
        r = router.curl("/echo/status", headers=[("x-echo-status", str(code))])
        assert r.status == code, f"backend status {code} must reach the client unchanged: {r}"
        assert r.served_by == "echo/echo-1"


def test_slow_backend_within_read_timeout(router):
    r = router.curl("/echo/slow", headers=[("x-echo-delay-ms", "1500")])
    assert (r.status, r.service) == (200, "echo")


def test_upstream_read_timeout(module_env, manifests):
    """A backend that stalls longer than --upstream-read-timeout gets a 504, in about that time."""
    import time
    r = module_env.router(manifests, ["--upstream-read-timeout", "1s"], name="short-timeout")
    t0 = time.monotonic()
    resp = r.curl("/echo/stall", headers=[("x-echo-delay-ms", "5000")])
    took = time.monotonic() - t0
    assert resp.status == 504, resp
    assert 0.8 <= took <= 3.5, f"504 after {took:.2f}s with a 1s read timeout"
    assert resp.has_header("Date") and resp.has_header("Server")
    assert r.curl("/echo/quick", headers=[("x-echo-delay-ms", "200")]).status == 200


# --------------------------------------------------------------------------- hop-by-hop


def test_hop_by_hop_headers_removed(router):
    r = router.curl("/echo/hop", headers=[
        ("Connection", "close, X-Foo"),
        ("X-Foo", "must-not-pass"),
        ("Keep-Alive", "timeout=5, max=100"),
        ("Proxy-Connection", "keep-alive"),
        ("X-Bar", "must-pass"),
    ])
    assert r.status == 200, r
    h = r.json()["headers"]
    assert "x-foo" not in h, f"a header named in Connection must not be forwarded: {h}"
    assert "keep-alive" not in h, f"Keep-Alive is hop-by-hop: {h}"
    assert "x-foo" not in h.get("connection", "").lower(), h
    assert h.get("x-bar") == "must-pass"


def test_hop_by_hop_on_keepalive_connection(router):
    """The same over a raw keep-alive connection: two requests, both cleaned."""
    with socket.create_connection((LOOPBACK, router.http_port), timeout=10) as s:
        f = s.makefile("rb")
        for i in range(2):
            s.sendall((f"GET /echo/raw{i} HTTP/1.1\r\nHost: echo.test\r\nConnection: keep-alive, X-Secret\r\n"
                       f"X-Secret: s{i}\r\nKeep-Alive: timeout=9\r\nX-Ok: {i}\r\n\r\n").encode())
            status = f.readline()
            assert b" 200 " in status, status
            length = None
            chunked = False
            while True:
                line = f.readline()
                if line in (b"\r\n", b""):
                    break
                k, _, v = line.decode().partition(":")
                if k.strip().lower() == "content-length":
                    length = int(v.strip())
                if k.strip().lower() == "transfer-encoding" and "chunked" in v.lower():
                    chunked = True
            if chunked:
                body = b""
                while True:
                    size = int(f.readline().strip(), 16)
                    if size == 0:
                        f.readline()
                        break
                    body += f.read(size)
                    f.readline()
            else:
                assert length is not None
                body = f.read(length)
            h = json.loads(body)["headers"]
            assert "x-secret" not in h and "keep-alive" not in h, h
            assert h.get("x-ok") == str(i)


# --------------------------------------------------------------------------- X-Forwarded-*


SPOOFED = [("X-Forwarded-For", "1.2.3.4, 5.6.7.8"), ("X-Forwarded-Proto", "https"),
           ("X-Forwarded-Host", "branded.example.com"), ("X-Forwarded-Port", "443")]


def test_forwarded_headers_from_untrusted_client_are_replaced(router):
    r = router.curl("/echo/xff", host="echo.test", headers=SPOOFED)
    h = r.json()["headers"]
    assert h.get("x-forwarded-for") == "127.0.0.1", h
    assert h.get("x-forwarded-proto") == "http", h
    assert h.get("x-forwarded-host") == "echo.test", h
    assert h.get("x-forwarded-port") == str(router.http_port), h


def test_forwarded_headers_set_when_absent(router, trusting_router):
    for rt in (router, trusting_router):
        h = rt.curl("/echo/xff", host="echo.test").json()["headers"]
        assert h.get("x-forwarded-for") == "127.0.0.1", (rt.name, h)
        assert h.get("x-forwarded-proto") == "http", (rt.name, h)
        assert h.get("x-forwarded-host") == "echo.test", (rt.name, h)
        assert h.get("x-forwarded-port") == str(rt.http_port), (rt.name, h)


def test_forwarded_headers_from_trusted_client_are_kept(trusting_router):
    r = trusting_router.curl("/echo/xff", host="echo.test", headers=SPOOFED)
    h = r.json()["headers"]
    assert h.get("x-forwarded-for") == "1.2.3.4, 5.6.7.8, 127.0.0.1", h
    assert h.get("x-forwarded-proto") == "https", h
    assert h.get("x-forwarded-host") == "branded.example.com", h
    assert h.get("x-forwarded-port") == "443", h


def test_trusted_proxy_given_as_plain_address(module_env, manifests):
    r = module_env.router(manifests, ["--trusted-proxies", "127.0.0.1"], name="trusting-address")
    h = r.curl("/echo/xff", headers=[("X-Forwarded-For", "9.9.9.9")]).json()["headers"]
    assert h.get("x-forwarded-for") == "9.9.9.9, 127.0.0.1", h


def test_forwarded_for_multiple_header_lines_from_trusted_client(trusting_router):
    r = trusting_router.curl("/echo/xff", headers=[("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "2.2.2.2")])
    assert r.json()["headers"].get("x-forwarded-for") == "1.1.1.1, 2.2.2.2, 127.0.0.1"


# --------------------------------------------------------------------------- Date / Server


@pytest.mark.parametrize("path,status", [("/echo/x", 200), ("/nowhere", 404), ("/unready", 503), ("/dead", 502)])
@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2c"])
def test_date_and_server_headers(router, path, status, http2):
    r = router.curl(path, http2=http2)
    assert r.status == status, r
    assert r.has_header("Server"), f"no Server header on {status}: {r.headers}"
    date = r.header("Date")
    assert date, f"no Date header on {status}: {r.headers}"
    assert email.utils.parsedate_to_datetime(date) is not None
    if not http2:
        assert len(r.header_all("Date")) == 1, f"duplicate Date headers: {r.headers}"
        assert len(r.header_all("Server")) == 1, f"duplicate Server headers: {r.headers}"


# --------------------------------------------------------------------------- h2c


def test_h2c_prior_knowledge(router):
    r = router.curl("/echo/h2?q=1", host="echo.test", http2=True, headers=[("X-H2", "yes")])
    assert r.http_version == "2", r
    assert (r.status, r.service) == (200, "echo"), r
    got = r.json()
    assert got["path"] == "/echo/h2?q=1"
    assert got["host"] == "echo.test"
    assert got["headers"].get("x-h2") == "yes"
    r = router.curl("/echo/h2post", http2=True, method="POST", data=b"h2 body " * 5000)
    assert r.status == 200 and r.json()["body"] == "h2 body " * 5000


def test_h2c_many_streams_on_one_connection(router):
    """Ten concurrent streams on one h2c connection, each answered with its own request."""
    paths = [f"/echo/stream/{i}?n={i}" for i in range(10)]
    results = h2c_multiplex(router.http_port, paths, authority="echo.test")
    for path, res in results.items():
        assert res["status_200"], f"{path}: no ':status: 200' ({res})"
        got = json.loads(res["body"])
        assert got["path"] == path and got["host"] == "echo.test", got


# --------------------------------------------------------------------------- WebSocket


def test_websocket_echo(router):
    with ws_connect(f"ws://{LOOPBACK}:{router.http_port}/ws/chat?room=1", open_timeout=10, close_timeout=5) as ws:
        for i in range(20):
            ws.send(f"message {i}")
            assert ws.recv(timeout=10) == f"message {i}"
        ws.send(b"\x00\x01binary\xff")
        assert ws.recv(timeout=10) == b"\x00\x01binary\xff"
        big = "x" * 200_000
        ws.send(big)
        assert ws.recv(timeout=10) == big


def test_websocket_routed_by_host(router):
    sock = socket.create_connection((LOOPBACK, router.http_port), timeout=10)
    with ws_connect("ws://ws.test/socket", sock=sock, open_timeout=10, close_timeout=5) as ws:
        ws.send("via host rule")
        assert ws.recv(timeout=10) == "via host rule"


def test_websocket_to_unknown_path_is_rejected(router):
    from websockets.exceptions import InvalidStatus
    with pytest.raises(InvalidStatus) as exc:
        with ws_connect(f"ws://{LOOPBACK}:{router.http_port}/no-such-route", open_timeout=10):
            pass
    assert exc.value.response.status_code == 404
