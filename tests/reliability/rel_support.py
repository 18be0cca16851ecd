"""Small helpers shared by the reliability tests (load loops bounded in time and count, an RSS
sampler). Everything else comes from ``tests/e2e`` (``e2e_lib``, ``edge_support``,
``api_support``)."""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from collections import Counter
from typing import Callable

from api_support import percentile, rss_kib
from e2e_lib import LOOPBACK
from edge_support import SniHTTPSConnection, client_context


def fmt_ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (f"p50 {percentile(values, 50) * 1000:.0f} ms, p99 {percentile(values, 99) * 1000:.0f} ms, "
            f"max {max(values) * 1000:.0f} ms (n={len(values)})")


class Load:
    """``threads`` client threads sending GETs to ``targets`` until ``stop()``, ``max_seconds`` or
    ``max_requests`` (whichever first).

    ``targets``: [(path, expected ``service`` or ``service/pod`` of the echo-backend)]; a request
    fails unless the answer is 200 from that backend. ``tls=(sni, cafile)`` speaks HTTPS with SNI
    and Host = sni; ``fresh=True`` opens a new connection (a full TLS handshake) per request, else
    keep-alive connections are reused (re-opened only after ``Connection: close`` or an error,
    which is itself counted as a failure). ``on_conn(conn)`` sees each new connection (e.g. to
    record the certificate of the handshake).
    """

    def __init__(self, port: int, targets: list[tuple[str, str]], *, threads: int = 3,
                 max_seconds: float = 10.0, max_requests: int = 20_000, tls: tuple[str, str] | None = None,
                 fresh: bool = False, host: str | None = None, on_conn: Callable | None = None,
                 timeout: float = 10.0):
        self.port, self.targets = port, targets
        self.max_seconds, self.max_requests = max_seconds, max_requests
        self.tls, self.fresh, self.host, self.on_conn, self.timeout = tls, fresh, host, on_conn, timeout
        self.ctx = client_context(tls[1]) if tls else None
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.count = 0
        self.ok = 0
        self.connections = 0
        self.failures: list[str] = []
        self.served: Counter = Counter()
        self.t0 = 0.0
        self.elapsed = 0.0
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _take(self) -> bool:
        with self.lock:
            if self.stop_event.is_set() or self.count >= self.max_requests \
                    or time.monotonic() - self.t0 > self.max_seconds:
                return False
            self.count += 1
            return True

    def _fail(self, msg: str) -> None:
        with self.lock:
            self.failures.append(f"t+{time.monotonic() - self.t0:.3f}s {msg}")

    def _connect(self):
        if self.tls:
            conn = SniHTTPSConnection(self.tls[0], self.port, self.ctx, timeout=self.timeout)
        else:
            conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=self.timeout)
        conn.connect()
        with self.lock:
            self.connections += 1
        if self.on_conn:
            self.on_conn(conn)
        return conn

    def _run(self, i: int) -> None:
        conn = None
        n = i
        while self._take():
            path, want = self.targets[n % len(self.targets)]
            n += 1
            try:
                if conn is None:
                    conn = self._connect()
                conn.request("GET", path, headers={"Host": self.host} if self.host else {})
                resp = conn.getresponse()
                resp.read()
                sb = resp.getheader("x-served-by") or ""
                if resp.status != 200 or (sb != want and sb.split("/", 1)[0] != want):
                    self._fail(f"{path}: status {resp.status} served by {sb!r}, expected {want}")
                else:
                    with self.lock:
                        self.ok += 1
                        self.served[sb] += 1
                if self.fresh or (resp.getheader("connection") or "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as exc:  # noqa: BLE001 - every error is a failed request
                self._fail(f"{path}: {type(exc).__name__}: {exc}")
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
        with contextlib.suppress(Exception):
            conn.close()

    def start(self) -> "Load":
        self.t0 = time.monotonic()
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=self.timeout + 10)
        self.elapsed = time.monotonic() - self.t0

    def join(self) -> None:
        """Wait for the natural end (time or count bound) without stopping early."""
        for t in self.threads:
            t.join(timeout=self.max_seconds + self.timeout + 10)
        self.elapsed = time.monotonic() - self.t0

    def summary(self) -> str:
        return (f"{self.count} requests ({self.ok} ok, {len(self.failures)} failed) on {self.connections} "
                f"connections in {self.elapsed:.1f} s")


class RssSampler(threading.Thread):
    """Samples VmRSS (KiB) of ``pid`` every ``interval`` s; ``peak_kib``, ``last_kib``."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.stop_event = threading.Event()
        self.first_kib = rss_kib(pid)["VmRSS"]
        self.peak_kib = self.first_kib
        self.last_kib = self.first_kib

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                v = rss_kib(self.pid)["VmRSS"]
            except (OSError, KeyError):
                return
            self.last_kib = v
            self.peak_kib = max(self.peak_kib, v)
            time.sleep(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)
