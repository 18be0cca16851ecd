"""TLS to backends: `backend-protocol: HTTPS` (HTTP/1.1 over TLS) and `GRPCS` (HTTP/2 over TLS,
ALPN h2), with ingress-nginx's `proxy-ssl-*` annotations: no SNI and no verification by
default; `proxy-ssl-server-name: on` sends the upstream Host (or `proxy-ssl-name`) as SNI;
`proxy-ssl-verify: on` verifies chain and name against the trust store the router started with
(`SSL_CERT_FILE` here). A router whose trust store is empty (as in the FROM-scratch image)
still reaches unverified backends. Invalid and unsupported values are reported and the route is
served.

The backends are a loopback TLS listener written here: it records the SNI of each connection
and answers HTTP/1.1 (http.server) or, when ALPN picked h2, HTTP/2 (the `h2` library), with
JSON describing what it saw.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler

import h2.config
import h2.connection
import h2.events
import pytest

from e2e_lib import (LOOPBACK, Endpoint, backend_objects, http_path, ingress, invalid_annotation_detail, rule,
                     wait_until)
from edge_support import Pki

NGX = "nginx.ingress.kubernetes.io/"
TD = "tandem.dev/"
BACKEND_NAME = "backend.internal"


def host(case: str) -> str:
    return f"{case}.tls.test"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = json.dumps({"proto": self.request_version, "alpn": self.connection.selected_alpn_protocol(),
                           "sni": getattr(self.connection, "sni", None), "host": self.headers.get("Host"),
                           "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class TlsBackend:
    """A loopback TLS backend answering HTTP/1.1, or HTTP/2 when ALPN selects h2."""

    def __init__(self, cert_path: str, key_path: str, alpn: list[str]):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert_path, key_path)
        self.ctx.set_alpn_protocols(alpn)
        self.ctx.sni_callback = self._sni
        self.handshakes = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(32)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @staticmethod
    def _sni(sslsock, name, _ctx):
        sslsock.sni = name

    def _accept(self):
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, raw):
        raw.settimeout(10)
        try:
            s = self.ctx.wrap_socket(raw, server_side=True)
        except OSError:
            raw.close()
            return
        self.handshakes += 1
        try:
            if s.selected_alpn_protocol() == "h2":
                self._serve_h2(s)
            else:
                _Handler(s, ("127.0.0.1", 0), None)
        except OSError:
            pass
        finally:
            s.close()

    def _serve_h2(self, s):
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        s.sendall(conn.data_to_send())
        heads: dict[int, dict] = {}
        while True:
            data = s.recv(65535)
            if not data:
                return
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    heads[ev.stream_id] = dict(ev.headers)
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    h = heads.pop(ev.stream_id, {})
                    body = json.dumps({"proto": "HTTP/2", "alpn": "h2", "sni": getattr(s, "sni", None),
                                       "host": h.get(":authority"), "path": h.get(":path")}).encode()
                    conn.send_headers(ev.stream_id, [(":status", "200"), ("content-type", "application/json"),
                                                     ("content-length", str(len(body)))])
                    conn.send_data(ev.stream_id, body, end_stream=True)
            s.sendall(conn.data_to_send())

    def endpoint(self) -> Endpoint:
        return Endpoint(LOOPBACK, self.port, True, "tls")

    def close(self):
        self.stop.set()
        self.sock.close()
        self.thread.join(2)


CASES = {
    "https": {NGX + "backend-protocol": "HTTPS"},
    "sni": {NGX + "backend-protocol": "HTTPS", NGX + "proxy-ssl-server-name": "on"},
    "name": {NGX + "backend-protocol": "HTTPS", NGX + "proxy-ssl-server-name": "on",
             NGX + "proxy-ssl-name": BACKEND_NAME},
    "vhost": {NGX + "backend-protocol": "HTTPS", NGX + "proxy-ssl-server-name": "on",
              NGX + "upstream-vhost": "vhost.internal"},
    "verify": {NGX + "backend-protocol": "HTTPS", NGX + "proxy-ssl-verify": "on", NGX + "proxy-ssl-name": BACKEND_NAME},
    "verify-wrong-name": {NGX + "backend-protocol": "HTTPS", NGX + "proxy-ssl-verify": "on",
                          NGX + "proxy-ssl-name": "other.internal"},
    "grpcs": {NGX + "backend-protocol": "GRPCS"},
    "grpcs-name": {TD + "backend-protocol": "GRPCS", TD + "proxy-ssl-server-name": "on", TD + "proxy-ssl-name": BACKEND_NAME},
    # invalid or unsupported: reported, the route served as if unset
    "bad-verify": {NGX + "backend-protocol": "HTTPS", NGX + "proxy-ssl-verify": "yes"},
    "bad-name": {NGX + "backend-protocol": "HTTPS", NGX + "proxy-ssl-server-name": "on",
                 NGX + "proxy-ssl-name": "bad name"},
    "bad-server-name": {NGX + "backend-protocol": "HTTPS", NGX + "proxy-ssl-server-name": "true"},
    "bad-secret": {NGX + "backend-protocol": "HTTPS", NGX + "proxy-ssl-secret": "default/backend-ca"},
    "bad-proto": {NGX + "backend-protocol": "HTTPX"},
    "no-proto": {NGX + "proxy-ssl-verify": "on"},
}
PLAIN = {"bad-proto", "no-proto"}


@pytest.fixture(scope="module")
def pki(module_env):
    pki = Pki(module_env.work_dir / "backend-pki", ca_cn="tandem e2e backend CA")
    pki.leaf("backend", [BACKEND_NAME])
    d = module_env.work_dir / "backend-pki" / "backend"
    return pki, str(d / "tls.crt"), str(d / "tls.key")


@pytest.fixture(scope="module")
def backends(module_env, pki):
    _, crt, key = pki
    https = TlsBackend(crt, key, ["http/1.1"])
    h2tls = TlsBackend(crt, key, ["h2"])
    yield {"https": https, "h2tls": h2tls, "plain": module_env.echo("plain")}
    https.close()
    h2tls.close()


def manifests(backends) -> dict:
    docs = []
    for case, ann in CASES.items():
        svc = "plain" if case in PLAIN else ("h2tls" if "grpcs" in case else "https")
        docs.append(ingress(case, [rule(host(case), http_path("/", svc))], annotations=ann))
    return {
        "backends.yaml": backend_objects("https", [backends["https"].endpoint()])
        + backend_objects("h2tls", [backends["h2tls"].endpoint()]) + backend_objects("plain", [backends["plain"]]),
        "ingresses.yaml": docs,
    }


def start_router(module_env, backends, cert_file: str, name: str):
    """A router whose trust store is `cert_file` (SSL_CERT_FILE) alone (SSL_CERT_DIR: empty)."""
    empty_dir = module_env.work_dir / "empty-cert-dir"
    empty_dir.mkdir(exist_ok=True)
    trust = {"SSL_CERT_FILE": cert_file, "SSL_CERT_DIR": str(empty_dir)}
    saved = {k: os.environ.get(k) for k in trust}
    os.environ.update(trust)
    try:
        return module_env.router(manifests(backends), name=name)
    finally:
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def router(module_env, backends, pki):
    ca, _, _ = pki
    return start_router(module_env, backends, ca.ca_path, "router-ca")


@pytest.fixture(scope="module")
def bare_router(module_env, backends):
    """No trust anchor at all, as in the image."""
    empty = module_env.work_dir / "empty-bundle.pem"
    empty.write_text("")
    return start_router(module_env, backends, str(empty), "router-bare")


def get(router, case: str, path: str = "/"):
    return router.get(path, host=host(case), timeout=10)


def seen(router, case: str, path: str = "/p") -> dict:
    r = get(router, case, path)
    assert r.status == 200, (case, r)
    return r.json()


def test_https_without_sni_or_verification(router):
    got = seen(router, "https", "/p?q=1")
    assert got["proto"] == "HTTP/1.1" and got["path"] == "/p?q=1", got
    assert got["sni"] is None, got
    assert got["host"] == host("https"), got


def test_server_name_sends_the_upstream_host(router):
    assert seen(router, "sni")["sni"] == host("sni")
    got = seen(router, "vhost")
    assert (got["sni"], got["host"]) == ("vhost.internal", "vhost.internal"), got


def test_proxy_ssl_name_is_the_sni(router):
    got = seen(router, "name")
    assert got["sni"] == BACKEND_NAME and got["host"] == host("name"), got


def test_verify_on_checks_chain_and_name(router):
    got = seen(router, "verify")
    assert got["sni"] == BACKEND_NAME, got
    bad = get(router, "verify-wrong-name")
    assert bad.status == 502, bad
    entry = wait_until(lambda: [e for e in router.access_logs() if e.get("host") == host("verify-wrong-name")] or None)
    assert entry[-1]["status"] == 502 and entry[-1].get("error"), entry[-1]


def test_grpcs_is_h2_over_tls(router):
    got = seen(router, "grpcs", "/svc.Echo/Call")
    assert (got["proto"], got["alpn"], got["path"]) == ("HTTP/2", "h2", "/svc.Echo/Call"), got
    assert got["sni"] is None, got
    got = seen(router, "grpcs-name")
    assert (got["proto"], got["sni"]) == ("HTTP/2", BACKEND_NAME), got


def test_connections_are_pooled(router, backends):
    """20 requests reuse a few pooled TLS connections rather than making one each. A few, not
    one: each of the router's worker threads can open its own, and a connection the backend
    has not yet marked reusable may be passed over (seen: 1 to 4)."""
    before = backends["https"].handshakes
    for _ in range(20):
        seen(router, "name")
    assert backends["https"].handshakes - before <= 5, backends["https"].handshakes - before


def test_empty_trust_store_still_reaches_unverified_backends(bare_router):
    assert seen(bare_router, "https")["proto"] == "HTTP/1.1"
    assert seen(bare_router, "name")["sni"] == BACKEND_NAME
    assert seen(bare_router, "grpcs")["proto"] == "HTTP/2"
    # nothing to verify against: verification fails closed
    assert get(bare_router, "verify").status == 502


@pytest.mark.parametrize("case,needle", [
    ("bad-verify", "proxy-ssl-verify"),
    ("bad-name", "proxy-ssl-name"),
    ("bad-server-name", "proxy-ssl-server-name"),
    ("bad-secret", "proxy-ssl-secret is not supported"),
    ("bad-proto", "backend-protocol"),
    ("no-proto", "without backend-protocol"),
])
def test_invalid_values_are_reported_and_the_route_served(router, case, needle):
    assert needle in invalid_annotation_detail(router, case)
    r = get(router, case, "/still")
    assert r.status == 200, r
    got = r.json()
    if case in PLAIN:
        assert r.service == "plain", r
    else:
        # the refused setting is off: TLS, no SNI (bad-name still asks for SNI: the Host)
        assert got["proto"] == "HTTP/1.1", got
        assert got["sni"] == (host(case) if case == "bad-name" else None), got
