"""The access log: one JSON line per request on stdout (target ``tandem::access``), its fields
for routed, fallback, unrouted and no-endpoint requests, the request id round trip
(client → upstream → response → log), the client address after trusted-proxy handling,
``--log-format text``, ``--no-access-log``, and credentials never reaching any log line.
"""

from __future__ import annotations

import http.client
import json
import re

import pytest

from e2e_lib import LOOPBACK, backend_objects, curl, http_path, ingress, rule, wait_until
from metrics_support import access_lines, json_lines, stdout_access_lines, wait_access_line, wait_metric

HEX32 = re.compile(r"^[0-9a-f]{32}$")
FIELDS = {"tier", "request_id", "client", "method", "host", "path", "proto", "status", "bytes", "upstream",
          "attempts", "ingress", "service", "backend", "fallback", "canary", "local", "duration_ms"}


def manifests(legacy, component) -> dict:
    return {
        "legacy.yaml": [*backend_objects("legacy", [legacy], mode="endpoints"),
                        ingress("legacy-fallback", [rule(None, http_path("/", "legacy", 80))])],
        "component.yaml": [*backend_objects("component", [component], namespace="team-a"),
                           ingress("shop", [rule("shop.example.com", http_path("/api", "component", 80))],
                                   namespace="team-a")],
        "empty.yaml": [*backend_objects("empty", []),
                       ingress("empty", [rule("empty.example.com", http_path("/", "empty", 80))])],
    }


@pytest.fixture
def setup(env):
    legacy = env.echo("legacy", "legacy-1")
    component = env.echo("component", "component-1")
    return env, legacy, component


def only_line(proc, path: str) -> dict:
    """The single access line of ``path`` (exactly one line per request)."""
    wait_access_line(proc, path=path)
    lines = [e for e in access_lines(proc) if e.get("path") == path]
    assert len(lines) == 1, f"{len(lines)} access lines for {path}: {lines}"
    return lines[0]


def test_routed_request_fields(setup):
    env, legacy, component = setup
    r = env.router(manifests(legacy, component))
    resp = r.get("/api/orders?id=7&x=%2F", host="shop.example.com", headers={"User-Agent": "t/1"})
    assert resp.status == 200 and resp.service == "component"
    line = only_line(r.proc, "/api/orders?id=7&x=%2F")
    missing = FIELDS - line.keys()
    assert not missing, f"access line lacks {missing}: {line}"
    assert line["target"] == "tandem::access" and line["message"] == "request"
    assert line["level"] == "INFO" and line["timestamp"]
    assert line["tier"] == "router"
    assert line["client"] == "127.0.0.1"
    assert line["method"] == "GET"
    assert line["host"] == "shop.example.com"
    assert line["proto"] == "HTTP/1.1"
    assert line["status"] == 200
    assert line["bytes"] == len(resp.body)
    assert line["upstream"] == component.addr
    assert line["attempts"] == 1
    assert line["ingress"] == "team-a/shop"
    assert line["service"] == "component"
    assert line["backend"] == "team-a/component:80"
    assert line["fallback"] is False
    assert line["canary"] is False
    assert line["local"] == ""
    assert isinstance(line["upstream_connect_ms"], (int, float)) and line["upstream_connect_ms"] >= 0
    assert isinstance(line["duration_ms"], (int, float))
    assert line["duration_ms"] >= line["upstream_connect_ms"]
    assert line.get("error") in (None, "")
    assert HEX32.match(line["request_id"])
    # the line went to stdout
    assert [e["request_id"] for e in stdout_access_lines(r.proc)] == [line["request_id"]]


def test_fallback_404_and_503_fields(setup):
    env, legacy, component = setup
    r = env.router(manifests(legacy, component))
    # fallback
    assert r.get("/shop/cart", host="brand.example.com").service == "legacy"
    fb = only_line(r.proc, "/shop/cart")
    assert (fb["status"], fb["fallback"], fb["ingress"], fb["service"], fb["backend"], fb["local"]) == \
        (200, True, "default/legacy-fallback", "legacy", "default/legacy:80", "")
    assert fb["upstream"] == legacy.addr and fb["host"] == "brand.example.com"
    # no endpoints → 503 answered by the proxy itself
    assert r.get("/e", host="empty.example.com").status == 503
    ne = only_line(r.proc, "/e")
    assert (ne["status"], ne["local"], ne["ingress"], ne["service"], ne["upstream"], ne["attempts"]) == \
        (503, "no_endpoints", "default/empty", "empty", "", 0)
    assert ne["fallback"] is False


def test_unrouted_404_fields(env):
    component = env.echo("component", "component-1")
    r = env.router({"app.yaml": [*backend_objects("component", [component]),
                                 ingress("app", [rule("app.example.com", http_path("/app", "component", 80))])]})
    resp = r.get("/nowhere?q=1", host="nobody.example.org", method="DELETE")
    assert resp.status == 404
    line = only_line(r.proc, "/nowhere?q=1")
    assert not (FIELDS - line.keys()), line
    assert (line["status"], line["local"], line["method"], line["host"]) == (404, "no_route", "DELETE",
                                                                            "nobody.example.org")
    assert (line["ingress"], line["service"], line["backend"], line["upstream"], line["attempts"]) == \
        ("", "", "", "", 0)
    assert line["fallback"] is False
    assert resp.header("x-request-id") == line["request_id"]
    assert line["bytes"] == len(resp.body)


def test_h2c_proto_field(setup):
    env, legacy, component = setup
    r = env.router(manifests(legacy, component))
    resp = curl(r.url("/api/h2"), headers=[("Host", "shop.example.com")], http2=True)
    assert resp.status == 200 and resp.http_version == "2"
    assert only_line(r.proc, "/api/h2")["proto"] == "HTTP/2.0"


# --------------------------------------------------------------------------- request id


def test_request_id_from_client_round_trip(setup):
    env, legacy, component = setup
    r = env.router(manifests(legacy, component))
    rid = "trace-abc.123_XYZ:~!"
    resp = r.get("/api/rid", host="shop.example.com", headers={"X-Request-Id": rid})
    assert resp.status == 200
    assert resp.json()["headers"].get("x-request-id") == rid, "upstream must see the client's id"
    assert resp.header_all("x-request-id") == [rid], "response carries exactly the id"
    assert only_line(r.proc, "/api/rid")["request_id"] == rid


def test_request_id_generated_when_absent(setup):
    env, legacy, component = setup
    r = env.router(manifests(legacy, component))
    ids = set()
    for i in range(3):
        resp = r.get(f"/api/gen{i}", host="shop.example.com")
        rid = resp.header("x-request-id")
        assert rid and HEX32.match(rid), rid
        assert resp.json()["headers"].get("x-request-id") == rid
        assert only_line(r.proc, f"/api/gen{i}")["request_id"] == rid
        ids.add(rid)
    assert len(ids) == 3, "every request gets its own id"
    # also on answers the proxy makes itself
    resp = r.get("/e", host="empty.example.com")
    assert resp.status == 503 and HEX32.match(resp.header("x-request-id") or "")
    assert only_line(r.proc, "/e")["request_id"] == resp.header("x-request-id")


@pytest.mark.parametrize("bad", ["x" * 201, "has space", "tab\there", "caf\u00e9".encode().decode("latin-1")],
                         ids=["too-long", "space", "tab", "non-ascii"])
def test_request_id_replaced_when_unacceptable(setup, bad):
    env, legacy, component = setup
    r = env.router(manifests(legacy, component))
    resp = r.get("/api/bad", host="shop.example.com", headers={"X-Request-Id": bad})
    assert resp.status == 200
    rid = resp.header("x-request-id")
    assert rid and HEX32.match(rid), f"unacceptable id must be replaced, got {rid!r}"
    assert resp.json()["headers"].get("x-request-id") == rid
    assert only_line(r.proc, "/api/bad")["request_id"] == rid


def test_request_id_200_chars_kept(setup):
    env, legacy, component = setup
    r = env.router(manifests(legacy, component))
    rid = "a" * 200
    resp = r.get("/api/long", host="shop.example.com", headers={"X-Request-Id": rid})
    assert resp.header("x-request-id") == rid
    assert resp.json()["headers"].get("x-request-id") == rid
    assert only_line(r.proc, "/api/long")["request_id"] == rid


# --------------------------------------------------------------------------- client address


def test_client_after_trusted_proxy_handling(setup):
    env, legacy, component = setup
    r = env.router(manifests(legacy, component), args=["--trusted-proxies", "127.0.0.1/32"])
    xff = {"X-Forwarded-For": "203.0.113.7"}
    # from the trusted peer 127.0.0.1: the forwarded client is believed
    resp = r.get("/api/trusted", host="shop.example.com", headers=xff)
    assert resp.json()["headers"].get("x-real-ip") == "203.0.113.7"
    assert only_line(r.proc, "/api/trusted")["client"] == "203.0.113.7"
    # from an untrusted peer (127.0.0.2): the header is replaced and the peer is the client
    resp = curl(r.url("/api/untrusted"), headers=[("Host", "shop.example.com"), *xff.items()],
                extra=["--interface", "127.0.0.2"])
    assert resp.status == 200
    assert resp.json()["headers"].get("x-forwarded-for") == "127.0.0.2"
    assert only_line(r.proc, "/api/untrusted")["client"] == "127.0.0.2"


def test_client_after_trusted_proxy_handling_on_local_answers(setup):
    """404 and 503 answered by the proxy itself: the logged client must be the same as for a
    proxied request from the same trusted peer (the forwarded client, not the edge's address)."""
    env, legacy, component = setup
    comp_only = {k: v for k, v in manifests(legacy, component).items() if k != "legacy.yaml"}
    r = env.router(comp_only, args=["--trusted-proxies", "127.0.0.1/32"])
    xff = {"X-Forwarded-For": "203.0.113.9"}
    assert r.get("/nothing", host="nobody.example.org", headers=xff).status == 404
    assert r.get("/e", host="empty.example.com", headers=xff).status == 503
    assert only_line(r.proc, "/nothing")["client"] == "203.0.113.9"
    assert only_line(r.proc, "/e")["client"] == "203.0.113.9"


def test_client_untrusted_by_default(setup):
    env, legacy, component = setup
    r = env.router(manifests(legacy, component))
    resp = r.get("/api/spoof", host="shop.example.com", headers={"X-Forwarded-For": "198.51.100.1"})
    assert resp.json()["headers"].get("x-forwarded-for") == "127.0.0.1"
    assert only_line(r.proc, "/api/spoof")["client"] == "127.0.0.1"


# --------------------------------------------------------------------------- formats and switches


def test_text_format_is_readable_not_json(setup):
    env, legacy, component = setup
    r = env.router(manifests(legacy, component), args=["--log-format", "text"])
    rid = "text-format-id-1"
    assert r.get("/api/text?a=1", host="shop.example.com", headers={"X-Request-Id": rid}).status == 200

    def line():
        for l in r.proc.log_lines():
            if rid in l:
                return l
        return None

    text = wait_until(line, 5, desc="text access line")
    with pytest.raises(ValueError):
        json.loads(text)
    assert not text.lstrip().startswith("{")
    assert "tandem::access" in text and "request" in text
    for needle in ("/api/text?a=1", "200", "shop.example.com", "team-a/shop", "GET"):
        assert needle in text, f"{needle!r} missing from text line: {text}"
    assert json_lines(r.proc.log_text()) == [], "--log-format text must not emit JSON lines"


def test_no_access_log(setup):
    env, legacy, component = setup
    r = env.router(manifests(legacy, component), args=["--no-access-log"])
    for i in range(3):
        assert r.get(f"/api/quiet{i}", host="shop.example.com").status == 200
    assert r.get("/zzz", host="brand.example.com").status == 200
    # the event log still works (proves we are reading the right stream)...
    r.wait_log(r"config rebuilt")
    # ...and a request line would have appeared by now (metrics are updated in the same phase)
    wait_metric(r.admin_port, "tandem_requests_total", 4)
    assert access_lines(r.proc) == []
    assert "/api/quiet" not in r.log_text()


def test_credentials_never_logged(setup):
    env, legacy, component = setup
    r = env.router(manifests(legacy, component), args=["--trusted-proxies", "127.0.0.1/32"])
    secret_headers = {"Authorization": "Bearer SECRET123", "Cookie": "session=COOKIEVAL456; other=COOKIEVAL789",
                      "Proxy-Authorization": "Basic PROXYSECRET000"}
    r.get("/api/a", host="shop.example.com", headers=secret_headers)            # routed
    r.get("/x", host="brand.example.com", headers=secret_headers)               # fallback
    r.get("/e", host="empty.example.com", headers=secret_headers)               # 503
    curl(r.url("/api/h2"), headers=[("Host", "shop.example.com"), *secret_headers.items()], http2=True)
    r.get("/api/b", host="shop.example.com", method="POST", body=b"x" * 10,
          headers={**secret_headers, "Expect": "nothing"})                        # odd request
    wait_until(lambda: len(access_lines(r.proc)) == 5, 5, desc="5 access lines")
    text = r.log_text()
    for needle in ("SECRET123", "COOKIEVAL456", "COOKIEVAL789", "PROXYSECRET000"):
        assert needle not in text, f"{needle} leaked into the logs"


def test_credentials_never_logged_text_format(setup):
    env, legacy, component = setup
    r = env.router(manifests(legacy, component), args=["--log-format", "text"])
    r.get("/api/a", host="shop.example.com", headers={"Authorization": "Bearer SECRET123",
                                                     "Cookie": "session=COOKIEVAL456"})
    r.get("/nothing", host="empty.example.com", headers={"Authorization": "Bearer SECRET123"})
    wait_until(lambda: sum("tandem::access" in l for l in r.proc.log_lines()) == 2, 5, desc="2 text lines")
    assert "SECRET123" not in r.log_text() and "COOKIEVAL456" not in r.log_text()


def test_one_line_per_request_with_keepalive(setup):
    env, legacy, component = setup
    r = env.router(manifests(legacy, component))
    conn = http.client.HTTPConnection(LOOPBACK, r.http_port, timeout=5)
    try:
        for i in range(5):
            assert r.get(f"/api/ka{i}", host="shop.example.com", conn=conn).status == 200
    finally:
        conn.close()
    wait_until(lambda: len(access_lines(r.proc)) == 5, 5, desc="5 access lines")
    assert sorted(e["path"] for e in access_lines(r.proc)) == [f"/api/ka{i}" for i in range(5)]
