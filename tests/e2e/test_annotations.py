"""Per-route annotations, under `tandem.dev/` and ingress-nginx's `nginx.ingress.kubernetes.io/`
spelling: body size (413 by Content-Length and while streaming), backend timeouts, permanent
and temporal redirects, app root, source allow/deny lists (client IP after trusted-proxy
handling), CORS (preflight answered with 204, headers on responses), upstream Host,
X-Forwarded-Prefix, response headers, backend protocol, regex rewrite with capture groups, and
on the edge ssl-redirect / force-ssl-redirect. Every invalid value is reported (log line and
`tandem_config_problems`) while the Ingress's other rules stay served.

Each case is its own Ingress with its own host `<case>.ann.test`, all on one router.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from e2e_lib import (CurlError, LOOPBACK, backend_objects, curl, free_port, http_path, ingress,
                     invalid_annotation_detail, rule, wait_until)
from edge_support import Pki, cert_secret, curl_https, edge_ingress, start_edge
from metrics_support import scrape

NGX = "nginx.ingress.kubernetes.io/"
TD = "tandem.dev/"


def host(case: str) -> str:
    return f"{case}.ann.test"


def ing(case: str, annotations: dict, *paths: dict) -> dict:
    paths = paths or (http_path("/", "app"),)
    return ingress(case, [rule(host(case), *paths)], annotations=annotations)


class SilentBackend:
    """A loopback listener that accepts connections and never reads or answers (for the send
    timeout), or, with ``accept=False``, a backlog-0 listener whose queue is filled so that new
    connects hang (for the connect timeout)."""

    def __init__(self, accept: bool = True):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((LOOPBACK, 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stop = threading.Event()
        if accept:
            self.sock.listen(16)
            self.sock.settimeout(0.2)
            self.thread = threading.Thread(target=self._accept, daemon=True)
            self.thread.start()
        else:
            self.sock.listen(0)
            self.thread = None
            # Fill the accept queue: later SYNs are dropped and connects hang.
            for _ in range(4):
                c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                c.setblocking(False)
                try:
                    c.connect((LOOPBACK, self.port))
                except BlockingIOError:
                    pass
                self.held.append(c)
            time.sleep(0.2)

    def _accept(self):
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
                c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                self.held.append(c)
            except OSError:
                continue

    def endpoint(self):
        from e2e_lib import Endpoint
        return Endpoint(LOOPBACK, self.port, True, "silent")

    def close(self):
        self.stop.set()
        for c in self.held:
            c.close()
        self.sock.close()
        if self.thread:
            self.thread.join(2)


class EarlyResponder:
    """A loopback backend that answers 200 with a chunked body as soon as it has the request
    head, then reads (and drops) the request body without ever ending its response."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _serve(self, c):
        c.settimeout(10)
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                d = c.recv(4096)
                if not d:
                    return
                buf += d
            c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            while c.recv(65536):
                pass
        except OSError:
            pass
        finally:
            c.close()

    def _run(self):
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def endpoint(self):
        from e2e_lib import Endpoint
        return Endpoint(LOOPBACK, self.port, True, "early")

    def close(self):
        self.stop.set()
        self.sock.close()
        self.thread.join(2)


def h2c_service_docs(name: str, echo) -> list[dict]:
    docs = backend_objects(name, [echo])
    docs[0]["spec"]["ports"][0]["appProtocol"] = "kubernetes.io/h2c"
    return docs


CASES = {
    # body size
    "body": {NGX + "proxy-body-size": "1k"},
    "body-unlimited": {TD + "proxy-body-size": "0"},
    "body-bad": {NGX + "proxy-body-size": "lots"},
    "body-early": {NGX + "proxy-body-size": "1k"},
    # timeouts
    "read-timeout": {NGX + "proxy-read-timeout": "1"},
    # A send timeout stops the upload; the answer is then awaited up to the read timeout.
    "send-timeout": {NGX + "proxy-send-timeout": "1", NGX + "proxy-read-timeout": "2"},
    "connect-timeout": {NGX + "proxy-connect-timeout": "1"},
    "timeout-bad": {NGX + "proxy-read-timeout": "1.5"},
    # redirects
    "perm": {NGX + "permanent-redirect": "https://new.example/landing"},
    "perm-308": {NGX + "permanent-redirect": "https://new.example/", NGX + "permanent-redirect-code": "308"},
    "temp": {TD + "temporal-redirect": "/maintenance"},
    "temp-307": {NGX + "temporal-redirect": "http://other.example/", NGX + "temporal-redirect-code": "307"},
    "redirect-bad": {NGX + "permanent-redirect": "javascript:alert(1)"},
    "app-root": {NGX + "app-root": "/app1"},
    "app-root-bad": {NGX + "app-root": "app1"},
    # source ranges (the router trusts 127.0.0.1 as a proxy: X-Forwarded-For names the client)
    "allow-ten": {NGX + "whitelist-source-range": "10.0.0.0/8"},
    "allow-local": {NGX + "allowlist-source-range": "127.0.0.1/32, ::1"},
    "deny-local": {NGX + "denylist-source-range": "127.0.0.0/8"},
    "allow-bad": {NGX + "whitelist-source-range": "10.0.0.0/33"},
    # CORS
    "cors": {NGX + "enable-cors": "true", NGX + "cors-allow-origin": "https://app.example, https://*.team.example",
             NGX + "cors-allow-methods": "GET, PUT", NGX + "cors-expose-headers": "X-Total",
             NGX + "cors-max-age": "600"},
    "cors-any": {NGX + "enable-cors": "true", NGX + "cors-allow-credentials": "false"},
    "cors-bad": {NGX + "enable-cors": "true", NGX + "cors-allow-methods": "GET;DROP"},
    # upstream request and response headers
    "vhost": {NGX + "upstream-vhost": "internal.svc.example", NGX + "x-forwarded-prefix": "/shop"},
    "vhost-bad": {NGX + "upstream-vhost": "bad host"},
    "headers": {TD + "response-headers": "X-Frame-Options: DENY\nX-Team: payments\n"},
    "headers-bad": {TD + "response-headers": "Content-Length: 5"},
    "both": {TD + "proxy-body-size": "1k", NGX + "proxy-body-size": "8m"},
    # backend protocol
    "grpc": {NGX + "backend-protocol": "GRPC"},
    "force-http": {NGX + "backend-protocol": "HTTP"},
    "proto-bad": {NGX + "backend-protocol": "FCGI"},
    # regex rewrite
    "rewrite": {NGX + "use-regex": "true", NGX + "rewrite-target": "/$2"},
    "rewrite-bad": {NGX + "rewrite-target": "/$host"},
}


@pytest.fixture(scope="module")
def backends(module_env):
    silent = SilentBackend(accept=True)
    hanging = SilentBackend(accept=False)
    early = EarlyResponder()
    yield {"app": module_env.echo("app"), "h2": module_env.echo("h2"), "silent": silent, "hanging": hanging,
           "early": early}
    early.close()
    silent.close()
    hanging.close()


@pytest.fixture(scope="module")
def router(module_env, backends):
    docs = []
    for case, ann in CASES.items():
        if case == "send-timeout":
            docs.append(ing(case, ann, http_path("/", "silent")))
        elif case == "body-early":
            docs.append(ing(case, ann, http_path("/", "early")))
        elif case == "connect-timeout":
            docs.append(ing(case, ann, http_path("/", "hanging")))
        elif case == "force-http":
            docs.append(ing(case, ann, http_path("/", "h2")))
        elif case == "rewrite":
            docs.append(ing(case, ann, http_path("/something(/|$)(.*)", "app", path_type="ImplementationSpecific"),
                            http_path("/api/v[0-9]+/(.*)", "app", path_type="ImplementationSpecific")))
        elif case == "rewrite-bad":
            docs.append(ing(case, ann, http_path("/ok/(.*)", "app", path_type="ImplementationSpecific"),
                            http_path("/broken(", "app", path_type="ImplementationSpecific")))
        else:
            docs.append(ing(case, ann))
    docs.append(ing("plain", {}))
    return module_env.router({
        "backends.yaml": backend_objects("app", [backends["app"]]) + h2c_service_docs("h2", backends["h2"])
        + backend_objects("silent", [backends["silent"].endpoint()])
        + backend_objects("hanging", [backends["hanging"].endpoint()])
        + backend_objects("early", [backends["early"].endpoint()]),
        "ingresses.yaml": docs,
    }, ["--trusted-proxies", "127.0.0.1/32"])


def get(router, case, path="/", **kw):
    return curl(router.url(path), headers=[("Host", host(case))] + list(kw.pop("headers", [])), **kw)


def served(router, case):
    r = get(router, case, "/still/served")
    assert r.status == 200 and r.json()["service"] == "app", r
    return r


# --------------------------------------------------------------------------- body size


def test_body_size_by_content_length(router):
    ok = get(router, "body", "/up", method="POST", data=b"x" * 1024)
    assert ok.status == 200 and len(ok.json()["body"]) == 1024, ok
    big = get(router, "body", "/up", method="POST", data=b"x" * 1025)
    assert big.status == 413, big
    entry = wait_until(lambda: [e for e in router.access_logs()
                                if e.get("host") == host("body") and e.get("status") == 413], 5,
                       desc="access-log line of the 413")
    assert entry[-1]["local"] == "body_too_large" and entry[-1]["upstream"] == "", entry


def test_body_size_counted_while_streaming(router):
    chunked = [("Transfer-Encoding", "chunked")]
    ok = get(router, "body", "/up", method="POST", data=b"y" * 1000, headers=chunked)
    assert ok.status == 200 and ok.json()["body"] == "y" * 1000, ok
    big = get(router, "body", "/up", method="POST", data=b"y" * 5000, headers=chunked)
    assert big.status == 413, big


def test_body_size_passed_after_the_response_started_aborts(router):
    """The backend has answered (head and a first chunk reached the client) when the chunked
    body passes the limit: no 413 can be sent any more, so the response is cut off."""
    c = socket.create_connection((LOOPBACK, router.http_port), timeout=10)
    try:
        c.sendall(f"POST /up HTTP/1.1\r\nHost: {host('body-early')}\r\nTransfer-Encoding: chunked\r\n\r\n"
                  .encode() + b"10\r\n" + b"a" * 16 + b"\r\n")
        got = b""
        while b"hello" not in got:
            d = c.recv(4096)
            assert d, got
            got += d
        assert got.startswith(b"HTTP/1.1 200"), got
        c.sendall(b"800\r\n" + b"b" * 2048 + b"\r\n")
        t = time.monotonic()
        while True:
            try:
                d = c.recv(4096)
            except ConnectionResetError:
                break
            if not d:
                break
            got += d
        took = time.monotonic() - t
    finally:
        c.close()
    assert took < 5 and not got.endswith(b"0\r\n\r\n") and b" 413 " not in got, (got, took)
    entry = wait_until(lambda: [e for e in router.access_logs() if e.get("host") == host("body-early")], 5,
                       desc="access log line of the aborted request")
    assert entry[-1]["local"] == "body_too_large" and "larger than proxy-body-size" in (entry[-1].get("error") or ""), entry


def test_body_size_zero_is_unlimited_and_invalid_is_reported(router):
    r = get(router, "body-unlimited", "/up", method="POST", data=b"z" * (3 << 20))
    assert r.status == 200 and len(r.json()["body"]) == 3 << 20, r.status
    assert "proxy-body-size" in invalid_annotation_detail(router, "body-bad")
    r = get(router, "body-bad", "/up", method="POST", data=b"z" * 4096)
    assert r.status == 200, r


# --------------------------------------------------------------------------- timeouts


def test_read_timeout(router):
    t = time.monotonic()
    r = get(router, "read-timeout", headers=[("x-echo-delay-ms", "3000")])
    took = time.monotonic() - t
    assert r.status == 504 and took < 2.5, (r, took)
    # Within the timeout: served. Without the annotation the default (60 s) applies.
    assert get(router, "read-timeout", headers=[("x-echo-delay-ms", "200")]).status == 200
    assert get(router, "plain", headers=[("x-echo-delay-ms", "1500")]).status == 200


def test_send_timeout(router):
    # The backend never reads: once the socket buffers are full, writing the body times out
    # after 1 s (the default is 60 s); the proxy then waits for an answer up to the read timeout
    # (2 s here) and answers 504.
    t = time.monotonic()
    try:
        r = get(router, "send-timeout", "/upload", method="POST", data=b"s" * (48 << 20), timeout=20)
        status = r.status
    except CurlError as e:
        status = str(e)
    took = time.monotonic() - t
    assert status == 504 and took < 8, (status, took)
    line = wait_until(lambda: [e for e in router.access_logs() if e.get("host") == host("send-timeout")], 5,
                      desc="access-log line of the send timeout")
    assert "writing body, timeout: 1s" in (line[-1].get("error") or ""), line


def test_connect_timeout(router):
    t = time.monotonic()
    r = get(router, "connect-timeout")
    took = time.monotonic() - t
    # The default is 5 s; the annotation makes it 1 s.
    assert r.status in (502, 504) and 0.8 < took < 3, (r, took)


def test_invalid_timeout_is_reported(router):
    assert "proxy-read-timeout" in invalid_annotation_detail(router, "timeout-bad")
    assert get(router, "timeout-bad", headers=[("x-echo-delay-ms", "1500")]).status == 200


# --------------------------------------------------------------------------- redirects


@pytest.mark.parametrize("case,status,location", [
    ("perm", 301, "https://new.example/landing"),
    ("perm-308", 308, "https://new.example/"),
    ("temp", 302, "/maintenance"),
    ("temp-307", 307, "http://other.example/"),
])
def test_redirects(router, case, status, location):
    r = get(router, case, "/any/path?q=1")
    assert (r.status, r.header("location")) == (status, location), r
    assert "served-by" not in {k.lower() for k, _ in r.headers}


def test_invalid_redirect_is_reported_and_route_served(router):
    assert "permanent-redirect" in invalid_annotation_detail(router, "redirect-bad")
    served(router, "redirect-bad")


def test_app_root(router):
    r = get(router, "app-root", "/")
    assert (r.status, r.header("location")) == (302, "/app1"), r
    r = get(router, "app-root", "/app1/page")
    assert r.status == 200 and r.json()["path"] == "/app1/page", r
    assert "app-root" in invalid_annotation_detail(router, "app-root-bad")
    assert get(router, "app-root-bad", "/").status == 200


# --------------------------------------------------------------------------- source ranges


def test_source_allowlist_and_denylist(router):
    assert get(router, "allow-ten").status == 403
    # The client as found through the trusted proxy (127.0.0.1) is 10.1.2.3.
    r = get(router, "allow-ten", headers=[("X-Forwarded-For", "10.1.2.3")])
    assert r.status == 200 and r.json()["service"] == "app", r
    assert get(router, "allow-local").status == 200
    assert get(router, "allow-local", headers=[("X-Forwarded-For", "192.0.2.7")]).status == 403
    assert get(router, "deny-local").status == 403
    assert get(router, "deny-local", headers=[("X-Forwarded-For", "192.0.2.7")]).status == 200


def test_invalid_allowlist_fails_closed(router):
    detail = invalid_annotation_detail(router, "allow-bad")
    assert "whitelist-source-range" in detail and "fail closed" in detail, detail
    assert get(router, "allow-bad").status == 403
    assert get(router, "allow-bad", headers=[("X-Forwarded-For", "10.0.0.1")]).status == 403


# --------------------------------------------------------------------------- CORS


def test_cors_preflight_answered_locally(router):
    r = get(router, "cors", "/api", method="OPTIONS",
            headers=[("Origin", "https://app.example"), ("Access-Control-Request-Method", "PUT")])
    assert r.status == 204, r
    assert r.header("access-control-allow-origin") == "https://app.example"
    assert r.header("access-control-allow-methods") == "GET, PUT"
    assert r.header("access-control-max-age") == "600"
    assert r.header("access-control-allow-credentials") == "true"
    assert r.header("x-served-by") is None, r
    # A wildcard subdomain origin is allowed; another origin gets no CORS headers.
    r = get(router, "cors", "/api", method="OPTIONS",
            headers=[("Origin", "https://a.team.example"), ("Access-Control-Request-Method", "GET")])
    assert r.header("access-control-allow-origin") == "https://a.team.example"
    r = get(router, "cors", "/api", method="OPTIONS",
            headers=[("Origin", "https://evil.example"), ("Access-Control-Request-Method", "GET")])
    assert r.status == 204 and r.header("access-control-allow-origin") is None, r


def test_cors_headers_on_responses(router):
    r = get(router, "cors", "/api", headers=[("Origin", "https://app.example")])
    assert r.status == 200 and r.json()["service"] == "app", r
    assert r.header("access-control-allow-origin") == "https://app.example"
    assert r.header("access-control-expose-headers") == "X-Total"
    assert "Origin" in (r.header("vary") or "")
    r = get(router, "cors-any", "/api", headers=[("Origin", "https://x.example")])
    assert r.header("access-control-allow-origin") == "*", r
    assert r.header("access-control-allow-credentials") is None
    # Not a preflight: a plain OPTIONS reaches the backend.
    r = get(router, "cors", "/api", method="OPTIONS")
    assert r.status == 200 and r.json()["method"] == "OPTIONS", r


def test_invalid_cors_value_keeps_the_default(router):
    assert "cors-allow-methods" in invalid_annotation_detail(router, "cors-bad")
    r = get(router, "cors-bad", "/", method="OPTIONS",
            headers=[("Origin", "https://x.example"), ("Access-Control-Request-Method", "GET")])
    assert r.status == 204 and r.header("access-control-allow-methods") == "GET, PUT, POST, DELETE, PATCH, OPTIONS"


# --------------------------------------------------------------------------- headers


def test_upstream_vhost_and_forwarded_prefix(router):
    got = get(router, "vhost", "/x").json()
    assert got["host"] == "internal.svc.example", got
    assert got["headers"]["x-forwarded-prefix"] == "/shop", got
    assert "upstream-vhost" in invalid_annotation_detail(router, "vhost-bad")
    got = served(router, "vhost-bad").json()
    assert got["host"] == host("vhost-bad"), got


def test_response_headers(router):
    r = get(router, "headers", "/")
    assert r.status == 200 and r.header("x-frame-options") == "DENY" and r.header("x-team") == "payments", r
    assert "Content-Length" in invalid_annotation_detail(router, "headers-bad") or "content-length" in invalid_annotation_detail(router, "headers-bad")
    r = served(router, "headers-bad")
    assert r.header("x-frame-options") is None


def test_both_spellings_tandem_wins(router):
    assert "both set" in invalid_annotation_detail(router, "both")
    assert get(router, "both", "/", method="POST", data=b"b" * 2048).status == 413


# --------------------------------------------------------------------------- backend protocol


def test_backend_protocol(router):
    got = get(router, "grpc", "/p").json()
    assert got["proto"] == "HTTP/2.0", got
    # The h2 Service's port says h2c; the annotation makes this route HTTP/1.1.
    got = get(router, "force-http", "/p").json()
    assert (got["service"], got["proto"]) == ("h2", "HTTP/1.1"), got
    assert get(router, "plain", "/p").json()["proto"] == "HTTP/1.1"
    detail = invalid_annotation_detail(router, "proto-bad")
    assert "not supported" in detail, detail
    assert served(router, "proto-bad").json()["proto"] == "HTTP/1.1"


# --------------------------------------------------------------------------- regex rewrite


@pytest.mark.parametrize("path,want", [
    ("/something", "/"),
    ("/something/", "/"),
    ("/something/new", "/new"),
    ("/something/deep/er?x=1&y=2", "/deep/er?x=1&y=2"),
    ("/something/DEEP", "/DEEP"),
    ("/api/v2/users", "/"),      # the second path's $2 is empty: it has one group
    ("/api/version/x", "/api/version/x"),  # routed by the literal prefix /api, regex unmatched
])
def test_rewrite_with_capture_groups(router, path, want):
    r = get(router, "rewrite", path)
    assert r.status == 200 and r.json()["path"] == want, r


def test_invalid_rewrite_is_reported_and_other_rules_served(router):
    assert "rewrite-target" in invalid_annotation_detail(router, "rewrite-bad")
    # The target was refused: no rewrite; the valid regex path is still routed.
    r = get(router, "rewrite-bad", "/ok/thing")
    assert r.status == 200 and r.json()["path"] == "/ok/thing", r


def test_problems_are_counted(router):
    exp = scrape(router.admin_port)
    n = exp.sum("tandem_config_problems", kind="Ingress", reason="invalid_annotation")
    bad = [c for c in CASES if c.endswith("-bad")] + ["both"]
    assert n >= len(bad), (n, bad)


# --------------------------------------------------------------------------- the edge


@pytest.fixture(scope="module")
def edge(module_env, backends):
    pki = Pki(module_env.work_dir / "pki")
    tls = pki.leaf("tls", ["tls.ann.test", "optout.ann.test", "policy.ann.test"])
    docs = [
        edge_ingress("tls", [(["tls.ann.test"], "tls-cert")], "app"),
        edge_ingress("optout", [(["optout.ann.test"], "tls-cert")], "app",
                     annotations={NGX + "ssl-redirect": "false"}),
        edge_ingress("forced", [], "app", rule_hosts=["forced.ann.test"],
                     annotations={NGX + "force-ssl-redirect": "true"}),
        edge_ingress("notls", [], "app", rule_hosts=["notls.ann.test"]),
        edge_ingress("edge-bad", [], "app", rule_hosts=["edgebad.ann.test"],
                     annotations={NGX + "force-ssl-redirect": "always"}),
        # The data-path annotations work on the edge tier too.
        edge_ingress("policy", [(["policy.ann.test"], "tls-cert")], "app",
                     annotations={TD + "response-headers": "X-Edge: yes",
                                  NGX + "denylist-source-range": "192.0.2.0/24",
                                  NGX + "upstream-vhost": "inner.example"}),
    ]
    edge = start_edge(module_env, {"backend.yaml": backend_objects("app", [backends["app"]]),
                                   "secret.yaml": [cert_secret("tls-cert", tls)],
                                   "ingress.yaml": docs},
                      ["--redirect-https-port", "{https_port}"])
    edge.ca = pki.ca_path
    return edge


def edge_get(edge, h, path="/x?y=1"):
    return curl(f"http://127.0.0.1:{edge.http_port}{path}", headers=[("Host", h)])


def test_edge_ssl_redirect_and_force(edge):
    r = edge_get(edge, "tls.ann.test")
    assert (r.status, r.header("location")) == (308, f"https://tls.ann.test:{edge.https_port}/x?y=1"), r
    assert edge_get(edge, "optout.ann.test").status == 200
    r = edge_get(edge, "forced.ann.test")
    assert (r.status, r.header("location")) == (308, f"https://forced.ann.test:{edge.https_port}/x?y=1"), r
    assert edge_get(edge, "notls.ann.test").status == 200
    assert "force-ssl-redirect" in invalid_annotation_detail(edge, "edge-bad")
    assert edge_get(edge, "edgebad.ann.test").status == 200


def test_route_policy_on_the_edge(edge):
    r = curl_https(edge, "policy.ann.test", "/p", cacert=edge.ca, http2=True)
    assert r.status == 200 and r.header("x-edge") == "yes", r
    assert r.json()["host"] == "inner.example", r.json()


# --------------------------------------------------------------------------- over h2c


def test_local_answers_and_headers_over_h2c(router):
    """The same policy answers for an HTTP/2 client (h2c, prior knowledge)."""
    r = get(router, "perm", "/x", http2=True)
    assert (r.http_version, r.status, r.header("location")) == ("2", 301, "https://new.example/landing"), r
    r = get(router, "cors", "/api", method="OPTIONS", http2=True,
            headers=[("Origin", "https://app.example"), ("Access-Control-Request-Method", "PUT")])
    assert (r.status, r.header("access-control-allow-origin")) == (204, "https://app.example"), r
    assert get(router, "deny-local", http2=True).status == 403
    r = get(router, "headers", "/", http2=True)
    assert (r.status, r.header("x-team")) == (200, "payments"), r
    r = get(router, "rewrite", "/something/h2?z=1", http2=True)
    assert r.json()["path"] == "/h2?z=1", r


# --------------------------------------------------------------------------- changes at runtime


def test_annotation_changes_are_served(router):
    """Changing or removing an annotation on a served Ingress takes effect within the reload SLA."""
    from e2e_lib import RELOAD_SLA, MEASURE_SLACK

    def header():
        r = get(router, "live", "/")
        return r.header("x-version") if r.status == 200 else f"status {r.status}"

    for value in ("1", "2", None):
        ann = {TD + "response-headers": f"X-Version: {value}"} if value else {}
        router.write("live.yaml", [ing("live", ann)])
        wait_until(lambda: header() == value, RELOAD_SLA + MEASURE_SLACK, interval=0.05,
                   desc=f"X-Version {value} served within the reload SLA")
    # A new annotation with an invalid value is reported; the Ingress stays served.
    router.write("live.yaml", [ing("live", {NGX + "proxy-read-timeout": "forever"})])
    assert "forever" in invalid_annotation_detail(router, "live")
    assert get(router, "live", "/").status == 200


def h2c_post(port: int, authority: str, body: bytes, timeout: float = 10.0) -> tuple[int | None, list]:
    """POST over h2c with the `h2` library, sending the whole body without waiting; returns the
    response status and the RST_STREAM error codes received for the stream."""
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
    status, resets, ended = None, [], False
    try:
        conn.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", authority),
                              (":path", "/up"), ("content-length", str(len(body)))])
        sock.sendall(conn.data_to_send())
        sent = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (resets or (ended and sent == len(body))):
            window = min(conn.local_flow_control_window(1), conn.max_outbound_frame_size) if sent < len(body) else 0
            if window > 0:
                chunk = body[sent:sent + window]
                sent += len(chunk)
                conn.send_data(1, chunk, end_stream=sent == len(body))
                sock.sendall(conn.data_to_send())
                sock.settimeout(0.05)
            else:
                sock.settimeout(1.0)
            try:
                data = sock.recv(65536)
            except (socket.timeout, BlockingIOError):
                continue
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    status = int(dict(ev.headers)[b":status"])
                elif isinstance(ev, h2.events.StreamEnded):
                    ended = True
                elif isinstance(ev, h2.events.StreamReset):
                    resets.append(int(ev.error_code))
            sock.sendall(conn.data_to_send())
    finally:
        sock.close()
    return status, resets


def test_body_size_over_h2c(router):
    """413 answered before the body is read: the stream is then reset with NO_ERROR (RFC 9113
    §8.1), which is how a server ends a request whose response is complete."""
    status, resets = h2c_post(router.http_port, host("body"), b"x" * 200_000)
    assert status == 413 and all(code == 0 for code in resets), (status, resets)
    status, resets = h2c_post(router.http_port, host("body"), b"x" * 1000)
    assert status == 200 and not resets, (status, resets)
