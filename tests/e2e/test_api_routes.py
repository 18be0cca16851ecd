"""Routes from the Kubernetes API: watch events change what is served, readiness waits for
every initial list, --watch-namespace scopes the watches."""

from __future__ import annotations

import time

from api_support import (ROUTER_CLASS, backend_ip, cluster, fake_only, poll_served,  # noqa: F401
                         start_router)
from e2e_lib import (MEASURE_SLACK, RELOAD_SLA, backend_objects, endpoints_v1, http_path,
                     ingress, ingress_class, rule, wait_until)

SLA = RELOAD_SLA + MEASURE_SLACK


def base_objects(cluster, env, *, legacy_pods=1):
    """IngressClass, a legacy fallback (selector-less Service + v1 Endpoints) and its Ingress."""
    ip = backend_ip()
    legacy = [env.echo("legacy", f"legacy-{i}", host=ip) for i in range(legacy_pods)]
    cluster.put(ingress_class(ROUTER_CLASS))
    cluster.put_many(backend_objects("legacy", legacy[:1], mode="endpoints", namespace=cluster.ns))
    cluster.put(ingress("legacy-fallback", [rule(None, http_path("/", "legacy"))], namespace=cluster.ns))
    return legacy


def test_routes_follow_watch_events(env, cluster):
    ip = backend_ip()
    legacy = base_objects(cluster, env, legacy_pods=2)
    a, b = env.echo("svc-a", host=ip), env.echo("svc-b", host=ip)
    cluster.put_many(backend_objects("svc-a", [a], namespace=cluster.ns))
    cluster.put_many(backend_objects("svc-b", [b], namespace=cluster.ns))
    router = start_router(env, cluster)
    assert router.get("/anything").service == "legacy"

    figures = {}
    # add an Ingress
    t0 = time.monotonic()
    cluster.put(ingress("comp", [rule(None, http_path("/api/comp", "svc-a"))], namespace=cluster.ns))
    figures["add"] = poll_served(router.http_port, "/api/comp/x", "svc-a", timeout=10) - t0
    # modify it: another backend
    t0 = time.monotonic()
    cluster.put(ingress("comp", [rule(None, http_path("/api/comp", "svc-b"))], namespace=cluster.ns))
    figures["modify"] = poll_served(router.http_port, "/api/comp/x", "svc-b", timeout=10) - t0
    # hand-written Endpoints of the legacy Service change
    t0 = time.monotonic()
    cluster.put(endpoints_v1("legacy", [legacy[1].endpoint()], namespace=cluster.ns))

    def legacy1():
        return router.get("/shop").pod == "legacy-1"

    wait_until(legacy1, 10, interval=0.005, desc="legacy endpoints switched to legacy-1")
    figures["endpoints"] = time.monotonic() - t0
    assert all(router.get("/shop").pod == "legacy-1" for _ in range(5))
    # EndpointSlice change: svc-b gets a second pod, then only the new one
    b2 = env.echo("svc-b", "svc-b-1", host=ip)
    t0 = time.monotonic()
    cluster.put_many(backend_objects("svc-b", [b2], namespace=cluster.ns))
    wait_until(lambda: router.get("/api/comp/x").pod == "svc-b-1", 10, interval=0.005,
               desc="svc-b slice switched to svc-b-1")
    figures["slice"] = time.monotonic() - t0
    # delete the Ingress: back to the legacy fallback
    t0 = time.monotonic()
    cluster.delete("ingresses", "comp")
    figures["delete"] = poll_served(router.http_port, "/api/comp/x", "legacy", timeout=10) - t0
    # a host rule in a new Ingress, in the same burst as its Service
    c = env.echo("svc-c", host=ip)
    t0 = time.monotonic()
    cluster.put_many(backend_objects("svc-c", [c], namespace=cluster.ns))
    cluster.put(ingress("host-c", [rule("c.example", http_path("/", "svc-c"))], namespace=cluster.ns))
    figures["host"] = poll_served(router.http_port, "/", "svc-c", host="c.example", timeout=10) - t0
    assert router.get("/", host="other.example").service == "legacy"

    print("\nwatch event -> served (s): " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()))
    slow = {k: v for k, v in figures.items() if v > SLA}
    assert not slow, f"changes served later than {SLA}s: {slow}"


def test_readiness_waits_for_initial_lists(env, cluster):
    fake = fake_only(cluster)
    ip = backend_ip()
    base_objects(cluster, env)
    a = env.echo("svc-a", host=ip)
    cluster.put_many(backend_objects("svc-a", [a]))
    cluster.put(ingress("comp", [rule(None, http_path("/api", "svc-a"))]))
    fake.delay_list("endpointslices", 2.0)

    router = start_router(env, cluster, wait_ready=False)
    wait_until(lambda: router.readyz() is not None, 30, desc="admin listener up")
    wait_until(lambda: fake.requests(contains="/endpointslices", watch=False), 30, desc="EndpointSlice LIST sent")
    # the EndpointSlice LIST is being answered in 2 s: not ready meanwhile
    samples = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.2:
        samples.append(router.readyz())
        time.sleep(0.05)
    assert 200 not in samples, f"/readyz answered 200 before the EndpointSlice list completed: {samples}"
    assert set(samples) <= {503, None}, samples
    t_ready = wait_until(lambda: router.readyz() == 200 and time.monotonic(), 15, desc="ready")
    assert t_ready - t0 >= 0.5
    # ready means the whole picture: the route resolves to the slice's endpoint at once
    r = router.get("/api/x")
    assert r.status == 200 and r.service == "svc-a", r


def test_readiness_waits_for_failing_list(env, cluster):
    """A LIST that fails (500) a few times is retried; ready only once it succeeded."""
    fake = fake_only(cluster)
    base_objects(cluster, env)
    fake.fail_requests(3, 500, match=lambda m, p: m == "GET" and p.endswith("/ingresses"))
    router = start_router(env, cluster, wait_ready=False)
    wait_until(lambda: router.readyz() is not None, 30, desc="admin listener up")
    router.wait_ready()
    assert sum(1 for r in fake.requests(method="GET") if r.resource_path.endswith("/ingresses") and r.code == 500) == 3
    assert router.get("/shop").service == "legacy"


def test_watch_namespace_scopes_watches(env, cluster):
    fake = fake_only(cluster)
    ip = backend_ip()
    base_objects(cluster, env)
    a = env.echo("svc-a", host=ip)
    cluster.put_many(backend_objects("svc-a", [a], namespace="team-a"))
    cluster.put(ingress("comp", [rule(None, http_path("/api", "svc-a"))], namespace="team-a"))
    router = start_router(env, cluster, ["--watch-namespace", "default"])
    assert router.get("/api/x").service == "legacy"
    ns_paths = [r.path for r in fake.requests(method="GET", contains="/ingresses")]
    assert ns_paths and all("/namespaces/default/ingresses" in p for p in ns_paths), ns_paths
    # the same objects in the watched namespace are served
    cluster.put_many(backend_objects("svc-a", [a]))
    cluster.put(ingress("comp", [rule(None, http_path("/api", "svc-a"))]))
    poll_served(router.http_port, "/api/x", "svc-a", timeout=5)
