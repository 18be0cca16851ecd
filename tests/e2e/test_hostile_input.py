"""Hostile bytes on the wire, sent as an attacker would (raw sockets, curl --path-as-is, openssl):
each request that used to get a wrong answer gets the one RFC 9110/9112 and nginx/HAProxy give.

1. Dot segments (also `%2e`-encoded) are removed before routing, the normalised path is
   forwarded, a path above `/` is 400, `%2F` stays encoded; over HTTP/1.1, h2c (router) and h2
   (edge); `tandem.dev/normalize-path: "false"` forwards the raw path.
2. The edge's ACME exemption is judged on the normalised path.
3. HTTP/1.1 without Host → 400; absolute-form routes by its authority, which replaces Host;
   malformed or duplicate Host → 400.
4. Duplicate identical Content-Length values are forwarded as exactly one.
5. Request-line and header limits → 414 / 431, configurable.
6. SNI with a trailing dot gets the host's certificate; a request for a host the connection's
   certificate does not cover → 421.
8. A 502 says `Connection: close` and closes cleanly instead of resetting under the next request.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time

import pytest

from e2e_lib import (Endpoint, LOOPBACK, backend_objects, free_port, http_path, ingress, rule,
                     wait_until)
from edge_support import Pki, cert_secret, curl_https, edge_ingress, s_client, start_edge

EDGE_HOST = "shop.example.com"
OTHER_HOST = "other.example.com"


# --------------------------------------------------------------------------- raw HTTP


class RawResponse:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self) -> dict:
        import json
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"RawResponse({self.status}, {self.headers}, {self.body[:300]!r})"


class RawConn:
    """One TCP (or TLS) connection on which requests are written byte for byte."""

    def __init__(self, port: int, *, tls_context: ssl.SSLContext | None = None, sni: str | None = None,
                 timeout: float = 5.0):
        self.sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        if tls_context is not None:
            self.sock = tls_context.wrap_socket(self.sock, server_hostname=sni)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def response(self, head_only: bool = False) -> RawResponse:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError(f"closed before a response head; got {self.buf!r}")
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]]
        resp = RawResponse(status, headers, b"")
        length = resp.header("content-length")
        if head_only or status in (204, 304):
            return resp
        if length is not None:
            n = int(length)
            while len(self.buf) < n:
                if not self._fill():
                    raise ConnectionError("closed inside a body")
            resp.body, self.buf = self.buf[:n], self.buf[n:]
        elif (resp.header("transfer-encoding") or "").lower() == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    self._fill()
                size_line, _, self.buf = self.buf.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                while len(self.buf) < size + 2:
                    self._fill()
                body += self.buf[:size]
                self.buf = self.buf[size + 2:]
                if size == 0:
                    break
            resp.body = body
        return resp

    def closed_by_peer(self, timeout: float = 3.0) -> bool:
        """True when the server closes (EOF, not a reset) within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except socket.timeout:
            return False

    def close(self) -> None:
        self.sock.close()


def exchange(port: int, data: bytes, **kw) -> RawResponse:
    c = RawConn(port, **kw)
    try:
        c.send(data)
        return c.response()
    finally:
        c.close()


def get(path: str, host: str = "app.example", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


# --------------------------------------------------------------------------- fixtures


def routes():
    return [
        ingress("example", [rule(None, http_path("/api/example-service", "example", 80))]),
        ingress("admin", [rule(None, http_path("/admin", "admin", 80))]),
        ingress("raw", [rule(None, http_path("/raw", "raw", 80))]),
        ingress("legacy", [rule(None, http_path("/", "legacy", 80))]),
        ingress("b-host", [rule("b.example", http_path("/", "bhost", 80))]),
        ingress("verbatim", [rule(None, http_path("/verbatim", "verbatim", 80))],
                annotations={"tandem.dev/normalize-path": "false"}),
        ingress("bad-annotation", [rule(None, http_path("/bad-annotation", "verbatim", 80))],
                annotations={"tandem.dev/normalize-path": "sometimes"}),
        ingress("dead", [rule(None, http_path("/dead", "dead", 80))]),
    ]


@pytest.fixture(scope="module")
def backends(module_env):
    docs = []
    for svc in ("example", "admin", "raw", "legacy", "bhost", "verbatim"):
        docs += backend_objects(svc, [module_env.echo(svc)])
    # A Service whose only endpoint refuses connections.
    docs += backend_objects("dead", [Endpoint(LOOPBACK, free_port())])
    return docs


@pytest.fixture(scope="module")
def router(module_env, backends):
    return module_env.router({"backends.yaml": backends, "ingresses.yaml": routes()},
                             ["--trusted-proxies", "127.0.0.1/32", "--max-header-count", "50"])


@pytest.fixture(scope="module")
def pki(module_env):
    return Pki(module_env.work_dir / "pki")


@pytest.fixture(scope="module")
def edge(module_env, router, pki):
    shop = pki.leaf("shop", [EDGE_HOST])
    other = pki.leaf("other", [OTHER_HOST])
    router_svc = backend_objects("routing-ingress-controller", [Endpoint(LOOPBACK, router.http_port)],
                                 mode="endpoints")
    router_svc[0]["spec"]["ports"][0]["appProtocol"] = "kubernetes.io/h2c"
    return start_edge(module_env, {
        "router-svc.yaml": router_svc,
        "secrets.yaml": [cert_secret("shop-tls", shop), cert_secret("other-tls", other)],
        "ingress.yaml": edge_ingress("edge", [([EDGE_HOST], "shop-tls"), ([OTHER_HOST], "other-tls")],
                                     "routing-ingress-controller", 80),
    }, [], name="edge")


def tls_context(pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_path))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


# --------------------------------------------------------------------------- 1. dot segments


@pytest.mark.parametrize("path", [
    "/api/example-service/../../admin/x",
    "/api/example-service/%2e%2e/%2e%2e/admin/x",
    "/api/example-service/.%2e/%2E./admin/x",
    "/api/example-service/./../../admin/./x",
])
def test_dot_segments_cannot_escape_a_prefix(router, path):
    r = exchange(router.http_port, get(path))
    assert r.status == 200, r
    got = r.json()
    assert (got["service"], got["path"]) == ("admin", "/admin/x"), \
        f"{path} must be routed and forwarded as /admin/x, not to example-service: {got}"


def test_dot_segments_into_another_prefix_are_routed_by_the_result(router):
    got = exchange(router.http_port, get("/raw/../api/example-service/x")).json()
    assert (got["service"], got["path"]) == ("example", "/api/example-service/x"), got


@pytest.mark.parametrize("path", ["/..", "/../admin", "/api/../../admin", "/%2e%2e/admin", "/a%zz", "/a%00b"])
def test_path_above_root_or_broken_escape_is_400(router, path):
    c = RawConn(router.http_port)
    c.send(get(path))
    r = c.response()
    assert r.status == 400, (path, r)
    assert (r.header("connection") or "").lower() == "close"
    assert c.closed_by_peer(), "the connection is closed after a 400 for a malformed request"
    c.close()


def test_encoded_slash_stays_encoded(router):
    got = exchange(router.http_port, get("/api/example-service/..%2f..%2fadmin")).json()
    assert (got["service"], got["path"]) == ("example", "/api/example-service/..%2F..%2Fadmin"), got


def test_query_string_is_kept(router):
    got = exchange(router.http_port, get("/api/example-service/../../admin/q?a=../b&c=%2e")).json()
    assert (got["service"], got["path"]) == ("admin", "/admin/q?a=../b&c=%2e"), got


def test_normalization_over_h2c(router):
    out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--path-as-is", "--max-time", "5",
                          f"http://{LOOPBACK}:{router.http_port}/api/example-service/%2e%2e/%2e%2e/admin/h2"],
                         capture_output=True, timeout=15)
    import json
    got = json.loads(out.stdout)
    assert (got["service"], got["path"]) == ("admin", "/admin/h2"), got


def test_normalization_over_h2_through_the_edge(edge, pki):
    r = curl_https(edge, EDGE_HOST, "/api/example-service/../../admin/edge", cacert=pki.ca_path, http2=True,
                   extra=["--path-as-is"])
    assert r.status == 200, r
    got = r.json()
    assert (got["service"], got["path"]) == ("admin", "/admin/edge"), got
    r = curl_https(edge, EDGE_HOST, "/../admin", cacert=pki.ca_path, http2=True, extra=["--path-as-is"])
    assert r.status == 400, r


def test_normalize_path_opt_out_forwards_the_raw_path(router):
    got = exchange(router.http_port, get("/verbatim/./a/%2e/b")).json()
    assert (got["service"], got["path"]) == ("verbatim", "/verbatim/./a/%2e/b"), got
    # Routing still uses the normalised path: this does not reach the opted-out Service.
    got = exchange(router.http_port, get("/verbatim/../admin/x")).json()
    assert got["service"] == "admin", got
    # An invalid value is reported and the default (normalise) applies.
    line = router.wait_log("invalid_annotation", desc="invalid tandem.dev/normalize-path reported")
    assert "bad-annotation" in line and "sometimes" in line, line
    got = exchange(router.http_port, get("/bad-annotation/./x")).json()
    assert got["path"] == "/bad-annotation/x", got


# --------------------------------------------------------------------------- 2. ACME exemption


def test_acme_exemption_is_judged_on_the_normalised_path(edge):
    port = edge.http_port
    ok = exchange(port, get("/.well-known/acme-challenge/token", host=EDGE_HOST))
    assert ok.status == 200 and ok.json()["path"] == "/.well-known/acme-challenge/token", ok
    for path in ("/.well-known/acme-challenge/../../admin", "/.well-known/acme-challenge/%2e%2e/%2e%2e/admin"):
        r = exchange(port, get(path, host=EDGE_HOST))
        assert r.status == 308, f"{path} on an HTTPS-only host must be redirected, not served: {r}"
        assert r.header("location").startswith(f"https://{EDGE_HOST}"), r


# --------------------------------------------------------------------------- 3. Host


# Requests are at least 24 bytes long: on a listener that also speaks h2c, pingora waits for
# 24 bytes to tell an HTTP/2 preface from HTTP/1 (see the README's limits section).


def test_http11_without_host_is_400(router):
    r = exchange(router.http_port, b"GET /admin/no-host HTTP/1.1\r\n\r\n")
    assert r.status == 400, r
    # HTTP/1.0 may omit it (host-less rules).
    r = exchange(router.http_port, b"GET /admin/no-host HTTP/1.0\r\n\r\n")
    assert r.status == 200 and r.json()["service"] == "admin", r


@pytest.mark.parametrize("host_line", ["", "Host: b.example\r\n"])
def test_absolute_form_routes_by_its_authority(router, host_line):
    r = exchange(router.http_port, f"GET http://b.example/h HTTP/1.1\r\n{host_line}\r\n".encode())
    got = r.json()
    assert got["service"] == "bhost", f"absolute-form must be routed by b.example, not host-less: {got}"
    assert got["headers"]["host"] == "b.example", got
    assert got["path"] == "/h", got


def test_absolute_form_with_another_host_is_400(router):
    """RFC 9112 §3.2.2 lets the authority replace Host; pingora refuses the disagreement
    outright instead, which leaves no ambiguity to forward (documented deviation)."""
    r = exchange(router.http_port, b"GET http://b.example/h HTTP/1.1\r\nHost: a.example\r\n\r\n")
    assert r.status == 400, r


@pytest.mark.parametrize("host", ["a b.example", "a.example,b.example", "a.example/x", "[::1", "a@b.example",
                                  "a.example:80x"])
def test_malformed_host_is_400(router, host):
    r = exchange(router.http_port, f"GET /admin HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    assert r.status == 400, (host, r)


def test_duplicate_host_is_400(router):
    r = exchange(router.http_port, b"GET /admin HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n")
    assert r.status == 400, r


# --------------------------------------------------------------------------- 4. Content-Length


@pytest.mark.parametrize("cl", [["3", "3"], ["3, 3"]])
def test_duplicate_content_length_forwarded_as_one(router, cl):
    lines = "".join(f"Content-Length: {v}\r\n" for v in cl)
    r = exchange(router.http_port, f"POST /admin/cl HTTP/1.1\r\nHost: a.example\r\n{lines}\r\nabc".encode())
    assert r.status == 200, r
    got = r.json()
    assert got["headers"]["content-length"] == "3", f"upstream must see exactly one Content-Length: {got}"
    assert got["body"] == "abc"


def test_conflicting_content_length_is_400(router):
    r = exchange(router.http_port, b"POST /admin HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3\r\n"
                                   b"Content-Length: 4\r\n\r\nabcd")
    assert r.status == 400, r


# --------------------------------------------------------------------------- 5. limits


def test_huge_header_is_431_and_closes(router):
    c = RawConn(router.http_port)
    c.send(get("/admin", extra=f"X-Big: {'a' * 100_000}\r\n"))
    r = c.response()
    assert r.status == 431, r
    assert c.closed_by_peer()
    c.close()


def test_long_request_line_is_414(router):
    r = exchange(router.http_port, get("/admin/" + "a" * 9000))
    assert r.status == 414, r


def test_too_many_and_too_large_headers_are_431(router):
    many = "".join(f"X-H{i}: v\r\n" for i in range(60))   # --max-header-count 50
    assert exchange(router.http_port, get("/admin", extra=many)).status == 431
    big_total = "".join(f"X-H{i}: {'v' * 7000}\r\n" for i in range(6))   # each < 8 KiB, total > 32 KiB
    assert exchange(router.http_port, get("/admin", extra=big_total)).status == 431
    # Under the limits: served.
    fine = "".join(f"X-H{i}: {'v' * 1000}\r\n" for i in range(20))
    assert exchange(router.http_port, get("/admin", extra=fine)).status == 200


def test_limits_are_configurable(env, backends):
    r = env.router({"backends.yaml": backends, "ingresses.yaml": routes()},
                   ["--max-header-size", "200000", "--max-headers-size", "300000", "--max-request-line", "20000"],
                   name="router-big")
    assert exchange(r.http_port, get("/admin", extra=f"X-Big: {'a' * 100_000}\r\n")).status == 200
    assert exchange(r.http_port, get("/admin/" + "a" * 15000)).status == 200


# --------------------------------------------------------------------------- 6. SNI and Host


def test_sni_with_trailing_dot_gets_the_hosts_certificate(edge):
    out = s_client(edge.https_port, EDGE_HOST + ".", stdin=b"")
    assert EDGE_HOST in out.leaf["sans"], f"SNI '{EDGE_HOST}.' must get {EDGE_HOST}'s cert: {out.leaf}"


def test_host_not_covered_by_the_connection_certificate_is_421(edge, pki):
    ctx = tls_context(pki)
    c = RawConn(edge.https_port, tls_context=ctx, sni=EDGE_HOST)
    try:
        c.send(get("/admin/a", host=EDGE_HOST))
        ok = c.response()
        assert ok.status == 200, ok
        # Same connection, another host with its own certificate: misdirected.
        c.send(get("/admin/b", host=OTHER_HOST))
        r = c.response()
        assert r.status == 421, r
        # The connection stays usable for its own host.
        c.send(get("/admin/c", host=EDGE_HOST))
        assert c.response().status == 200
    finally:
        c.close()
    # On its own connection the other host is served.
    assert exchange(edge.https_port, get("/admin/d", host=OTHER_HOST), tls_context=ctx,
                    sni=OTHER_HOST).status == 200


def test_h2_connection_reuse_across_names_is_421(edge, pki):
    # curl reuses one h2 connection for both URLs only if told to connect both names to the
    # same address; the second request's :authority is not covered by the first certificate.
    out = subprocess.run(
        ["curl", "-sS", "--http2", "--cacert", str(pki.ca_path), "--max-time", "5",
         "--resolve", f"{EDGE_HOST}:{edge.https_port}:{LOOPBACK}",
         "--connect-to", f"{OTHER_HOST}:{edge.https_port}:{LOOPBACK}:{edge.https_port}",
         "-o", "/dev/null", "-w", "%{http_code} %{num_connects}\n",
         f"https://{EDGE_HOST}:{edge.https_port}/admin/1",
         "-H", f"Host: {OTHER_HOST}",
         f"https://{EDGE_HOST}:{edge.https_port}/admin/2"],
        capture_output=True, timeout=15)
    codes = out.stdout.decode().split("\n")
    assert codes[0].startswith("421") and codes[1].startswith("421"), (codes, out.stderr)


# --------------------------------------------------------------------------- 8. 502 and keep-alive


def test_502_says_close_and_closes_cleanly(router):
    """pingora drops a client connection after a failure in the proxy phase; the 502 says so
    (Connection: close) and the connection ends with a clean EOF, so no client sends its next
    request into it. The next request on a new connection is served."""
    for request in (get("/dead/x"),
                    b"POST /dead/x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 2\r\n\r\nhi"):
        c = RawConn(router.http_port)
        try:
            c.send(request)
            r = c.response()
            assert r.status == 502, r
            assert (r.header("connection") or "").lower() == "close", r
            assert c.closed_by_peer(), "a clean close (EOF), not a reset or a hang"
        finally:
            c.close()
    r = exchange(router.http_port, b"POST /admin/after HTTP/1.1\r\nHost: a.example\r\nContent-Length: 2\r\n\r\nhi")
    assert r.status == 200 and r.json()["body"] == "hi", r


def test_routed_requests_keep_the_connection(router):
    c = RawConn(router.http_port)
    try:
        for path, status in (("/admin/1", 200), ("/api/example-service/../../admin/2", 200)):
            c.send(get(path))
            assert c.response().status == status
        c.send(get("/nothing", host="b.example"))
        assert c.response().status == 200
    finally:
        c.close()


# --------------------------------------------------------------------------- forwarded headers


def test_x_forwarded_for_over_several_lines_is_one_chain(router):
    """From a trusted peer (127.0.0.1), the client is the rightmost untrusted address of the whole
    chain, also when the chain comes as several header lines (RFC 9110 §5.3)."""
    r = exchange(router.http_port, get("/admin/xff", extra="X-Forwarded-For: 192.0.2.1\r\n"
                                                         "X-Forwarded-For: 198.51.100.7\r\n"))
    h = r.json()["headers"]
    assert h["x-real-ip"] == "198.51.100.7", h
    assert h["x-forwarded-for"].replace(" ", "") == "192.0.2.1,198.51.100.7,127.0.0.1", h
