"""WebSocket upgrades to a backend that also has pooled keep-alive HTTP/1.1 connections.

Found by the route-churn test: a WebSocket opened right after ordinary requests to the same
backend was sometimes answered ``101`` and then closed by the router before a single frame
(access log: status 101, bytes 0). Each round here makes two plain GETs to the backend (so the
router's upstream pool holds a connection to it), then upgrades a raw socket and checks that a
masked text frame is echoed back. Bounded: 400 rounds or 15 s. Without the GETs, or with them
going to another backend, no upgrade broke in 1,500 rounds; with them, 1-2 % did.
"""

from __future__ import annotations

import base64
import os
import socket
import time

from e2e_lib import LOOPBACK, backend_objects, http_path, ingress, rule

ROUNDS = 400
MAX_SECONDS = 15.0


def masked_text_frame(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def upgrade_and_echo(port: int, path: str) -> tuple[bool, str]:
    """(ok, what happened): upgrade, then one frame must come back unchanged."""
    with socket.create_connection((LOOPBACK, port), timeout=5) as s:
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET {path} HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                return False, f"closed before the response head ended: {buf[:200]!r}"
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if not status.startswith(b"HTTP/1.1 101"):
            return False, f"no upgrade: {status!r}"
        s.settimeout(0.005)
        try:
            early = s.recv(4096)
            state = "EOF right after the 101, before any frame was sent" if not early else f"unexpected {early!r}"
            if not early:
                return False, state
        except socket.timeout:
            pass
        s.settimeout(5)
        s.sendall(masked_text_frame("ping"))
        got = rest
        while len(got) < 6:
            chunk = s.recv(4096)
            if not chunk:
                return False, f"EOF after our frame (got {got!r})"
            got += chunk
        return (got == b"\x81\x04ping"), f"echo {got!r}"


def test_websocket_upgrade_after_pooled_requests(env):
    app = env.echo("app", "app-1")
    router = env.router({
        "backend.yaml": backend_objects("app", [app]),
        "ingress.yaml": ingress("app", [rule(None, http_path("/", "app", 80))]),
    })
    failures: list[str] = []
    rounds = 0
    t0 = time.monotonic()
    while rounds < ROUNDS and time.monotonic() - t0 < MAX_SECONDS:
        rounds += 1
        assert router.get("/plain/1").status == 200
        assert router.get("/plain/2").status == 200
        ok, what = upgrade_and_echo(router.http_port, "/ws/chat")
        if not ok:
            failures.append(f"round {rounds}: {what}")
    elapsed = time.monotonic() - t0
    broken = [e for e in router.access_logs() if e.get("status") == 101 and e.get("bytes") == 0]
    print(f"\nWebSocket after pooled keep-alive requests: {rounds} upgrades in {elapsed:.1f} s, "
          f"{len(failures)} failed; access-log lines with status 101 and 0 bytes: {len(broken)}")
    assert rounds >= 100
    assert not failures, f"{len(failures)} of {rounds} upgrades broken: {failures[:5]}"
