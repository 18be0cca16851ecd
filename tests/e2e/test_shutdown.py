"""Graceful drain on SIGTERM: /readyz 503 at once, the listener keeps accepting for
--shutdown-delay then refuses new connections, in-flight requests finish within
--shutdown-grace, and the process exits.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

from e2e_lib import CurlError, backend_objects, curl, http_path, ingress, port_open, rule, wait_until

DELAY = 2.0   # --shutdown-delay
GRACE = 10.0  # --shutdown-grace


@pytest.fixture
def slow_router(env):
    slow = env.echo("slow")
    return env.router({
        "backends.yaml": backend_objects("slow", [slow]),
        "ing.yaml": ingress("slow", [rule(None, http_path("/", "slow", 80))]),
    }, ["--shutdown-delay", f"{DELAY}s", "--shutdown-grace", f"{GRACE:.0f}s"])


def start_requests(router, n, delay_ms):
    results: list = [None] * n

    def one(i):
        t0 = time.monotonic()
        try:
            results[i] = (curl(router.url(f"/inflight/{i}"), headers=[("x-echo-delay-ms", str(delay_ms))],
                               timeout=30), time.monotonic() - t0)
        except CurlError as exc:
            results[i] = (exc, time.monotonic() - t0)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results


def test_sigterm_drains_gracefully(slow_router):
    r = slow_router
    threads, results = start_requests(r, 3, 4500)
    time.sleep(0.5)  # let the requests reach the backend
    t_term = time.monotonic()
    r.proc.signal(signal.SIGTERM)

    # /readyz flips to 503 at once; /healthz stays 200 while the process runs.
    wait_until(lambda: r.admin_status("/readyz") == 503, 0.5, 0.01, desc="/readyz 503 right after SIGTERM")
    t_unready = time.monotonic() - t_term
    assert r.admin_status("/healthz") == 200

    # During the delay new connections are still accepted and served.
    resp = r.get("/during-delay")
    assert time.monotonic() - t_term < DELAY, "test too slow to probe inside the shutdown delay"
    assert resp.status == 200, resp

    # After the delay, new connections are refused (while in-flight requests still run).
    wait_until(lambda: not port_open(r.http_port, timeout=0.2), DELAY + 3, 0.02,
               desc="listener closed after the shutdown delay")
    t_closed = time.monotonic() - t_term
    assert r.proc.alive(), "process must stay up while requests are in flight"
    assert t_closed >= DELAY - 0.2, f"listener closed after {t_closed:.2f}s, before the {DELAY}s delay"
    with pytest.raises(CurlError):
        curl(r.url("/after-delay"), timeout=3)

    for t in threads:
        t.join(timeout=GRACE + 10)
    for i, (res, took) in enumerate(results):
        assert not isinstance(res, Exception), f"in-flight request {i} failed: {res}"
        assert (res.status, res.service) == (200, "slow"), f"in-flight request {i}: {res}"

    rc = r.proc.wait_exit(GRACE + 5)
    t_exit = time.monotonic() - t_term
    print(f"\n/readyz 503 after {t_unready * 1000:.0f} ms, listener closed after {t_closed:.2f}s, "
          f"in-flight done after {max(t for _, t in results) - 0.5:.2f}s, exit after {t_exit:.2f}s (rc={rc})")
    assert rc is not None, f"router did not exit within the {GRACE}s grace\n{r.describe()}"
    assert t_exit <= GRACE + 1.5
    assert rc == 0, f"graceful shutdown should exit 0, got {rc}"


def test_idle_router_exits_after_delay(slow_router):
    r = slow_router
    t_term = time.monotonic()
    r.proc.signal(signal.SIGTERM)
    wait_until(lambda: r.admin_status("/readyz") == 503, 0.5, 0.01, desc="/readyz 503 right after SIGTERM")
    rc = r.proc.wait_exit(GRACE + 5)
    took = time.monotonic() - t_term
    print(f"\nidle router exited {took:.2f}s after SIGTERM (delay {DELAY}s, grace {GRACE}s), rc={rc}")
    assert rc is not None, "router did not exit"
    assert took >= DELAY - 0.2, f"exited after {took:.2f}s, before the {DELAY}s shutdown delay"
    assert took <= GRACE + 1.5
    assert rc == 0


def test_grace_bounds_the_drain(env):
    """A request slower than the grace period does not keep the process alive."""
    slow = env.echo("slow")
    r = env.router({
        "backends.yaml": backend_objects("slow", [slow]),
        "ing.yaml": ingress("slow", [rule(None, http_path("/", "slow", 80))]),
    }, ["--shutdown-delay", "0s", "--shutdown-grace", "2s"])
    threads, results = start_requests(r, 1, 15000)
    time.sleep(0.5)
    t_term = time.monotonic()
    r.proc.signal(signal.SIGTERM)
    rc = r.proc.wait_exit(10)
    took = time.monotonic() - t_term
    print(f"\nexited {took:.2f}s after SIGTERM with a 15 s request in flight (grace 2s), rc={rc}")
    assert rc is not None and took <= 2 + 2.0, f"router must exit within the grace period, took {took:.2f}s"
    for t in threads:
        t.join(timeout=20)
    res, _ = results[0]
    assert isinstance(res, Exception) or res.status != 200, "the 15 s request cannot have completed"


def test_sigint_stops_within_seconds_every_time(env):
    """SIGINT is the fast stop (benchmarks and people at a terminal use it): it must end the
    process within a bounded time every time, also after traffic (pingora's fast shutdown could
    leave an accept loop spinning and never return)."""
    app = env.echo("app")
    manifests = {
        "backends.yaml": backend_objects("app", [app]),
        "ing.yaml": ingress("app", [rule(None, http_path("/", "app", 80))]),
    }
    took = []
    for i in range(8):
        r = env.router(manifests, ["--shutdown-delay", "5s"], name=f"sigint-{i}")
        for _ in range(5):
            assert r.get("/x").status == 200
        t0 = time.monotonic()
        r.proc.signal(signal.SIGINT)
        rc = r.proc.wait_exit(5)
        took.append(time.monotonic() - t0)
        assert rc is not None, f"round {i}: router still running 5 s after SIGINT\n{r.proc.describe()}"
    print(f"\nSIGINT → exit: max {max(took) * 1000:.0f} ms over {len(took)} rounds")
    assert max(took) < 3, took
