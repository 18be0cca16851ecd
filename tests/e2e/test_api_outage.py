"""API server outages: the last good config keeps serving while the API server is down, watches
resume after it comes back, and a 410 relist never makes routes flap."""

from __future__ import annotations

import contextlib
import http.client
import threading
import time

from api_support import (ROUTER_CLASS, backend_ip, cluster, fake_only, poll_served,  # noqa: F401
                         start_router)
from e2e_lib import LOOPBACK, backend_objects, http_path, ingress, ingress_class, rule, wait_until

LOAD_SECONDS = 8.0
LOAD_MAX_REQUESTS = 20_000


class LoadLoop(threading.Thread):
    """Bounded load on paths that exist throughout; every answer must be 200 from the expected service."""

    def __init__(self, port: int, targets: list[tuple[str, str]]):
        super().__init__(daemon=True)
        self.port, self.targets = port, targets
        self.ok = 0
        self.failures: list[tuple[float, str, object]] = []
        self.stop_flag = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        conn = None
        i = 0
        deadline = self.t0 + LOAD_SECONDS
        while not self.stop_flag.is_set() and time.monotonic() < deadline and i < LOAD_MAX_REQUESTS:
            path, service = self.targets[i % len(self.targets)]
            i += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=5)
                conn.request("GET", path)
                r = conn.getresponse()
                r.read()
                got = (r.getheader("x-served-by") or "").split("/", 1)[0]
                if r.status == 200 and got == service:
                    self.ok += 1
                else:
                    self.failures.append((time.monotonic() - self.t0, path, (r.status, got)))
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                self.failures.append((time.monotonic() - self.t0, path, repr(e)))
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
        with contextlib.suppress(Exception):
            conn.close()


def test_api_server_restart_and_410_under_load(env, cluster):
    fake = fake_only(cluster)
    ip = backend_ip()
    legacy, a, b = env.echo("legacy", host=ip), env.echo("svc-a", host=ip), env.echo("svc-b", host=ip)
    cluster.put(ingress_class(ROUTER_CLASS))
    cluster.put_many(backend_objects("legacy", [legacy], mode="endpoints"))
    cluster.put_many(backend_objects("svc-a", [a]))
    cluster.put_many(backend_objects("svc-b", [b]))
    cluster.put(ingress("legacy-fallback", [rule(None, http_path("/", "legacy"))]))
    cluster.put(ingress("comp-a", [rule(None, http_path("/api/a", "svc-a"))]))
    router = start_router(env, cluster)
    kinds = ["ingresses", "ingressclasses", "services", "endpointslices", "endpoints"]
    fake.wait_watches(kinds)

    load = LoadLoop(router.http_port, [("/api/a/x", "svc-a"), ("/shop", "legacy")])
    load.start()
    marks = {}
    try:
        time.sleep(1.0)
        # -- API server killed: listener and every watch stream dropped
        fake.stop()
        marks["stopped"] = time.monotonic() - load.t0
        cluster.put(ingress("during", [rule(None, http_path("/api/during", "svc-b"))]))  # changed while down
        time.sleep(2.0)
        assert router.get("/api/a/x").service == "svc-a", "last good config must keep serving"
        fake.start()
        marks["started"] = time.monotonic() - load.t0
        t_seen = poll_served(router.http_port, "/api/during/x", "svc-b", timeout=15)
        marks["during-served"] = t_seen - load.t0
        fake.wait_watches(kinds, timeout=15)
        # -- forced 410: every open watch gets ERROR 410 and resumes must relist
        lists_before = len(fake.requests(contains="/ingresses", watch=False, method="GET"))
        fake.expire_watches()
        cluster.put(ingress("after-410", [rule(None, http_path("/api/after", "svc-b"))]))
        t_seen = poll_served(router.http_port, "/api/after/x", "svc-b", timeout=15)
        marks["after-410-served"] = t_seen - load.t0
        wait_until(lambda: len(fake.requests(contains="/ingresses", watch=False, method="GET")) > lists_before,
                   10, desc="ingress relist after 410")
        # -- a deletion during the outage is picked up too
        fake.stop()
        cluster.delete("ingresses", "during")
        time.sleep(0.5)
        fake.start()
        poll_served(router.http_port, "/api/during/x", "legacy", timeout=15)
        marks["delete-after-restart"] = time.monotonic() - load.t0
    finally:
        load.join(timeout=LOAD_SECONDS + 10)
        load.stop_flag.set()
    print(f"\nAPI outage under load: {load.ok} ok, {len(load.failures)} failed; marks (s) "
          + ", ".join(f"{k} {v:.2f}" for k, v in marks.items()))
    assert load.ok > 100
    assert not load.failures, f"failed requests during API outage / 410: {load.failures[:10]}"
    assert router.proc.alive()


def test_410_relist_replaces_store_without_flap(env, cluster):
    """Objects deleted while the watch was expired disappear after the relist; the others never
    stop being served."""
    fake = fake_only(cluster)
    ip = backend_ip()
    legacy, a = env.echo("legacy", host=ip), env.echo("svc-a", host=ip)
    cluster.put(ingress_class(ROUTER_CLASS))
    cluster.put_many(backend_objects("legacy", [legacy], mode="endpoints"))
    cluster.put_many(backend_objects("svc-a", [a]))
    cluster.put(ingress("legacy-fallback", [rule(None, http_path("/", "legacy"))]))
    for i in range(20):
        cluster.put(ingress(f"keep-{i}", [rule(None, http_path(f"/keep/{i}", "svc-a"))]))
    cluster.put(ingress("gone", [rule(None, http_path("/gone", "svc-a"))]))
    router = start_router(env, cluster)
    fake.wait_watches(["ingresses"])
    load = LoadLoop(router.http_port, [(f"/keep/{i}/x", "svc-a") for i in range(20)])
    load.start()
    try:
        time.sleep(0.5)
        fake.stop()
        cluster.delete("ingresses", "gone")
        fake.expire_watches()  # history compacted while down: the resume gets 410
        time.sleep(0.5)
        fake.start()
        poll_served(router.http_port, "/gone", "legacy", timeout=15)
        time.sleep(1.0)
    finally:
        load.stop_flag.set()
        load.join(timeout=15)
    print(f"\n410 relist under load: {load.ok} ok, {len(load.failures)} failed")
    assert load.ok > 50 and not load.failures, load.failures[:10]
