"""1,000 route changes under a request loop (router, manifest directory).

Keep-alive client threads request routes that never change while change workers add, repoint
and delete Ingress files for *other* paths and rewrite the EndpointSlices behind them. Every
change is polled until it is served (change -> served latency); stable routes must see zero
failed requests, and a WebSocket opened before the churn must still echo after it.
"""

from __future__ import annotations

import http.client
import threading
import time

from websockets.sync.client import connect as ws_connect

from api_support import percentile
from e2e_lib import LOOPBACK, MEASURE_SLACK, RELOAD_SLA, backend_objects, http_path, ingress, rule
from rel_support import Load, fmt_ms

CHANGES = 1000
WORKERS = 6                 # change workers, each owning one path /churn/<k>
CHURN_MAX_SECONDS = 50.0    # the 1,000 changes must be done by then
CHANGE_TIMEOUT = 5.0        # one change must be served within this (else: failure)
LOAD_THREADS = 3
LOAD_MAX_REQUESTS = 300_000

STABLE = [("/stable/a/x", "svc-a/a1"), ("/stable/b/y?q=1", "svc-b/b1"), ("/anything/else", "legacy/l1"),
          ("/stable/a", "svc-a/a1")]


def churn_ingress(k: int, service: str) -> dict:
    return ingress(f"churn-{k}", [rule(None, http_path(f"/churn/{k}", service, 80))])


class ChurnWorker(threading.Thread):
    """Cycles its path through 5 changes, each one only after the previous one was served:
    add (-> svc-c) / repoint to ep-k (EndpointSlice -> d1) / endpoints ep-k -> e1 / endpoints
    ep-k -> d1 / delete (-> legacy catch-all). Every step changes the answer, so "served" is
    unambiguous; an answer that is neither the old nor the new one is recorded as a flap."""

    def __init__(self, k, router, echos, budget):
        super().__init__(daemon=True)
        self.k, self.router, self.echos, self.budget = k, router, echos, budget
        self.latencies: list[float] = []
        self.kinds: dict[str, int] = {}
        self.failures: list[str] = []
        self.flaps: list[str] = []
        self.state = echos["legacy"].served_by
        self.step = 0

    def _change(self):
        r, k, e = self.router, self.k, self.echos
        step = self.step % 5
        self.step += 1
        if step == 0:
            return "add ingress", r.write(f"churn-{k}.yaml", churn_ingress(k, "svc-c")), e["c"].served_by
        if step == 1:
            return "repoint ingress", r.write(f"churn-{k}.yaml", churn_ingress(k, f"ep-{k}")), e["d"].served_by
        if step == 2:
            return ("endpoints", r.write(f"ep-{k}.yaml", backend_objects(f"ep-{k}", [e["e"]])),
                    e["e"].served_by)
        if step == 3:
            return ("endpoints", r.write(f"ep-{k}.yaml", backend_objects(f"ep-{k}", [e["d"]])),
                    e["d"].served_by)
        return "delete ingress", r.delete(f"churn-{k}.yaml"), e["legacy"].served_by

    def run(self):
        path = f"/churn/{self.k}/x"
        conn = http.client.HTTPConnection(LOOPBACK, self.router.http_port, timeout=5)
        try:
            while self.budget.take():
                kind, t_change, want = self._change()
                old = self.state
                deadline = t_change + CHANGE_TIMEOUT
                while True:
                    try:
                        conn.request("GET", path)
                        resp = conn.getresponse()
                        resp.read()
                        got = f"{resp.status} {resp.getheader('x-served-by') or ''}"
                    except (OSError, http.client.HTTPException) as exc:
                        got = repr(exc)
                        conn.close()
                        conn = http.client.HTTPConnection(LOOPBACK, self.router.http_port, timeout=5)
                    now = time.monotonic()
                    if got == f"200 {want}":
                        self.latencies.append(now - t_change)
                        self.kinds[kind] = self.kinds.get(kind, 0) + 1
                        self.state = want
                        break
                    if got != f"200 {old}":
                        self.flaps.append(f"{path} {kind}: got {got!r}, old {old!r}, new {want!r}")
                    if now > deadline:
                        self.failures.append(f"{path} {kind} -> {want} not served within {CHANGE_TIMEOUT}s "
                                             f"(last answer {got!r})")
                        self.budget.abort()
                        return
                    time.sleep(0.005)
        finally:
            conn.close()


class Budget:
    def __init__(self, n: int, max_seconds: float):
        self.left, self.deadline = n, time.monotonic() + max_seconds
        self.lock = threading.Lock()
        self.aborted = False

    def take(self) -> bool:
        with self.lock:
            if self.aborted or self.left <= 0 or time.monotonic() > self.deadline:
                return False
            self.left -= 1
            return True

    def abort(self):
        with self.lock:
            self.aborted = True


def test_1000_route_changes_under_load(env):
    echos = {"a": env.echo("svc-a", "a1"), "b": env.echo("svc-b", "b1"), "legacy": env.echo("legacy", "l1"),
             "c": env.echo("svc-c", "c1"), "d": env.echo("svc-d", "d1"), "e": env.echo("svc-e", "e1")}
    manifests = {
        "backends.yaml": backend_objects("svc-a", [echos["a"]]) + backend_objects("svc-b", [echos["b"]])
        + backend_objects("svc-c", [echos["c"]]) + backend_objects("legacy", [echos["legacy"]], mode="endpoints"),
        "00-legacy.yaml": ingress("legacy", [rule(None, http_path("/", "legacy", 80))]),
        "stable.yaml": ingress("stable", [rule(None, http_path("/stable/a", "svc-a", 80),
                                                http_path("/stable/b", "svc-b", 80))]),
    }
    for k in range(WORKERS):
        manifests[f"ep-{k}.yaml"] = backend_objects(f"ep-{k}", [echos["d"]])
    router = env.router(manifests)
    for path, want in STABLE:
        assert router.get(path).served_by == want, path

    with ws_connect(f"ws://{LOOPBACK}:{router.http_port}/stable/a/ws", open_timeout=10, close_timeout=5) as ws:
        ws.send("before the churn")
        assert ws.recv(timeout=10) == "before the churn"

        load = Load(router.http_port, STABLE, threads=LOAD_THREADS, max_seconds=CHURN_MAX_SECONDS + 10,
                    max_requests=LOAD_MAX_REQUESTS).start()
        budget = Budget(CHANGES, CHURN_MAX_SECONDS)
        workers = [ChurnWorker(k, router, echos, budget) for k in range(WORKERS)]
        t0 = time.monotonic()
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=CHURN_MAX_SECONDS + CHANGE_TIMEOUT + 10)
        churn_s = time.monotonic() - t0
        time.sleep(0.3)  # a little load after the last change
        load.stop()

        for i in range(5):
            ws.send(f"after the churn {i}")
            assert ws.recv(timeout=10) == f"after the churn {i}", "WebSocket opened before the churn must still echo"

    lat = [x for w in workers for x in w.latencies]
    failures = [f for w in workers for f in w.failures]
    flaps = [f for w in workers for f in w.flaps]
    kinds: dict[str, int] = {}
    for w in workers:
        for kd, n in w.kinds.items():
            kinds[kd] = kinds.get(kd, 0) + n
    print(f"\nroute churn: {len(lat)} changes served in {churn_s:.1f} s ({len(lat) / churn_s:.0f}/s; {kinds}); "
          f"change -> served {fmt_ms(lat)}")
    print(f"stable routes: {load.summary()}, {load.count / load.elapsed:.0f} req/s; answers {dict(load.served)}")
    print(f"WebSocket opened before the churn: open and echoing after {len(lat)} changes")
    assert router.proc.alive()
    assert not failures, failures[:5]
    assert not load.failures, f"{len(load.failures)} failed requests on stable routes: {load.failures[:10]}"
    assert len(lat) == CHANGES, f"only {len(lat)} of {CHANGES} changes done within {CHURN_MAX_SECONDS}s"
    assert not flaps, f"{len(flaps)} answers that were neither the old nor the new state: {flaps[:10]}"
    assert load.ok > 1000
    assert percentile(lat, 50) <= RELOAD_SLA, f"median change -> served above the SLA: {fmt_ms(lat)}"
    assert percentile(lat, 99) <= RELOAD_SLA + MEASURE_SLACK, f"p99 change -> served above the SLA: {fmt_ms(lat)}"
