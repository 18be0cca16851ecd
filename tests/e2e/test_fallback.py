"""The legacy-fallback story (MISSION.md §1).

One catch-all Ingress (no host, ``/`` Prefix) points at a selector-less Service whose v1
Endpoints are written by hand (the legacy front-end). Every request that no migrated
component claims falls through to it; host rules, wildcard rules and host-less rules all
beat it; defaultBackend comes after the host-less rules; adding a component's Ingress takes
its path off the fallback within 1 s and deleting it puts it back; the access log's
``fallback`` field tells how much traffic still goes to legacy.
"""

from __future__ import annotations

import time
import uuid

import pytest

from e2e_lib import (MEASURE_SLACK, RELOAD_SLA, backend_objects, backend_ref, dead_endpoint, http_path, ingress,
                     rule, truthy, wait_until)

LEGACY = "legacy-fallback"


def legacy_catch_all():
    return ingress(LEGACY, [rule(None, http_path("/", LEGACY, "http"))])


@pytest.fixture(scope="module")
def backends(module_env):
    e = module_env
    docs = backend_objects(LEGACY, [e.echo(LEGACY, "nginx-1"), e.echo(LEGACY, "nginx-2")], mode="endpoints")
    for s in ("example-service", "shop", "promo", "default-svc", "component"):
        docs += backend_objects(s, [e.echo(s)], port_name="api" if s == "example-service" else "http")
    return docs


@pytest.fixture(scope="module")
def router(module_env, backends):
    return module_env.router({
        "backends.yaml": backends,
        "00-legacy.yaml": legacy_catch_all(),
        "example-service.yaml": ingress("example-service", [
            rule(None, http_path("/api/example-service/", "example-service", "api"))]),
        "shop.yaml": ingress("shop", [rule("shop.test", http_path("/", "shop", 80))]),
        "promo.yaml": ingress("promo", [rule("*.brand.test", http_path("/promo", "promo", 80))]),
    }, ["--log-format", "json"])


@pytest.mark.parametrize("host,path,want", [
    (None, "/", LEGACY),
    (None, "/anything/else?x=1", LEGACY),
    ("unknown.test", "/index.php", LEGACY),
    (None, "/api/example-service", "example-service"),
    (None, "/api/example-service/v1/items?id=3", "example-service"),
    ("any.host.test", "/api/example-service/x", "example-service"),
    (None, "/api/example-servicex", LEGACY),
    (None, "/api", LEGACY),
    ("shop.test", "/", "shop"),                 # host rule `/` beats the host-less catch-all
    ("shop.test", "/api/example-service/x", "shop"),  # ... even against a longer host-less rule
    ("SHOP.test:443", "/cart", "shop"),
    ("x.brand.test", "/promo/summer", "promo"),  # wildcard rule beats it
    ("x.brand.test", "/other", LEGACY),         # wildcard host without a matching path → host-less rules
    ("x.brand.test", "/api/example-service/1", "example-service"),
    ("a.b.brand.test", "/promo", LEGACY),
])
def test_fallback_catches_only_what_nothing_else_matches(router, host, path, want):
    r = router.curl(path, host=host)
    assert (r.status, r.service) == (200, want), f"{host or '(no host)'}{path}: {r}"


def test_legacy_endpoints_are_balanced(router):
    pods = {router.curl("/legacy/page").pod for _ in range(6)}
    assert pods == {"nginx-1", "nginx-2"}


def test_default_backend_comes_after_hostless_rules(env, backends):
    r = env.router({
        "backends.yaml": backends,
        "d.yaml": ingress("with-default", [rule("h.test", http_path("/h", "shop", 80)),
                                           rule(None, http_path("/only", "component", 80))],
                          default_backend=backend_ref("default-svc", 80)),
    })
    cases = [
        (None, "/only/x", "component"),
        (None, "/nothing", "default-svc"),
        ("h.test", "/h/1", "shop"),
        ("h.test", "/only", "component"),       # exact host misses → host-less rule
        ("h.test", "/zzz", "default-svc"),      # nothing matches → defaultBackend
        ("other.test", "/", "default-svc"),
    ]
    for host, path, want in cases:
        resp = r.curl(path, host=host)
        assert (resp.status, resp.service) == (200, want), f"{host}{path}: {resp}"
    # A host-less `/` catch-all takes precedence over the defaultBackend.
    r.write("legacy.yaml", legacy_catch_all())
    r.wait_served_by("/nothing", LEGACY)
    assert r.curl("/zzz", host="h.test").service == LEGACY
    r.delete("legacy.yaml")
    r.wait_served_by("/nothing", "default-svc")


def test_default_backend_of_other_class_is_ignored(env, backends):
    r = env.router({
        "backends.yaml": backends,
        "d.yaml": ingress("other-default", [], class_name="nginx", default_backend=backend_ref("default-svc", 80)),
    })
    assert r.curl("/x").status == 404


def test_migration_add_and_rollback_within_sla(env, backends):
    r = env.router({"backends.yaml": backends, "00-legacy.yaml": legacy_catch_all()}, ["--log-format", "json"])
    assert r.curl("/api/component/x").service == LEGACY
    figures = []
    for round_ in range(3):
        t_write = r.write("component.yaml", ingress("component", [
            rule(None, http_path("/api/component", "component", 80))]))
        wait_until(lambda: r.get("/api/component/x").service == "component", 10, 0.01,
                   desc="migrated path served by the component")
        migrate = time.monotonic() - t_write
        # other paths stay on legacy
        assert r.get("/api/componentx").service == LEGACY
        assert r.get("/somewhere").service == LEGACY
        t_del = r.delete("component.yaml")
        wait_until(lambda: r.get("/api/component/x").service == LEGACY, 10, 0.01,
                   desc="rolled-back path served by legacy again")
        rollback = time.monotonic() - t_del
        figures.append((migrate, rollback))
        print(f"round {round_}: add Ingress -> served in {migrate * 1000:.0f} ms, "
              f"delete -> back on legacy in {rollback * 1000:.0f} ms")
    worst = max(max(f) for f in figures)
    assert worst <= RELOAD_SLA + MEASURE_SLACK, f"change took {worst:.3f}s (> {RELOAD_SLA}s): {figures}"


def _new_access_entries(router, before: int, n: int = 1, timeout: float = 5.0):
    def enough():
        logs = router.access_logs()
        return logs[before:] if len(logs) - before >= n else None
    return wait_until(enough, timeout, 0.05, desc=f"{n} new access-log line(s)")


@pytest.mark.parametrize("host,path,want_service,want_ingress,want_fallback", [
    (None, "/old/page", LEGACY, f"default/{LEGACY}", True),
    (None, "/api/example-service/1", "example-service", "default/example-service", False),
    ("shop.test", "/", "shop", "default/shop", False),
    ("x.brand.test", "/promo", "promo", "default/promo", False),
    ("x.brand.test", "/nope", LEGACY, f"default/{LEGACY}", True),
])
def test_access_log_fallback_flag(router, host, path, want_service, want_ingress, want_fallback):
    before = len(router.access_logs())
    resp = router.curl(path, host=host)
    assert resp.status == 200
    entry = _new_access_entries(router, before)[-1]
    print("access log:", entry)
    assert str(entry.get("status")) == "200", entry
    assert entry.get("ingress") == want_ingress, entry
    assert want_service in str(entry.get("service")), entry
    assert "fallback" in entry, f"access log line without a `fallback` field: {entry}"
    assert truthy(entry["fallback"]) is want_fallback, entry


def test_access_log_fallback_flag_for_default_backend(env, backends):
    r = env.router({
        "backends.yaml": backends,
        "d.yaml": ingress("with-default", [rule(None, http_path("/only", "component", 80))],
                          default_backend=backend_ref("default-svc", 80)),
    }, ["--log-format", "json"])
    for path, want_service, want_fallback in (("/x", "default-svc", True), ("/only", "component", False)):
        before = len(r.access_logs())
        assert r.curl(path).service == want_service
        entry = _new_access_entries(r, before)[-1]
        print("access log:", entry)
        assert want_service in str(entry.get("service")), entry
        assert entry.get("ingress") == "default/with-default", entry
        assert truthy(entry.get("fallback")) is want_fallback, entry


def test_access_log_counts_legacy_share(router):
    """A legacy share can be computed from the access log: count fallback lines per host."""
    before = len(router.access_logs())
    hosts = ["a.test", "b.test"]
    for h in hosts:
        router.curl("/legacy", host=h)
        router.curl("/api/example-service/x", host=h)
    entries = _new_access_entries(router, before, 4)
    fallback = [e for e in entries if truthy(e.get("fallback"))]
    assert len(fallback) == 2, entries


def test_access_log_one_line_per_request(env, backends):
    """Every request, whatever its outcome or protocol, logs exactly one access-log line."""
    unready = env.echo("unready")
    r = env.router({
        "backends.yaml": backends + backend_objects("dead", [dead_endpoint()])
        + backend_objects("unready", [unready.endpoint(False)]),
        "i.yaml": ingress("mixed", [rule(None, http_path("/ok", "component", 80),
                                         http_path("/dead", "dead", 80),
                                         http_path("/unready", "unready", 80))]),
    }, ["--log-format", "json"])
    tag = uuid.uuid4().hex[:12]
    sent = []
    for http2 in (False, True):
        for prefix, status in (("/ok", 200), ("/dead", 502), ("/unready", 503), ("/none", 404)):
            path = f"{prefix}/{tag}-{'h2' if http2 else 'h1'}"
            assert r.curl(path, http2=http2).status == status
            sent.append((path, status))

    def lines_for(path):
        return [e for e in r.access_logs() if str(e.get("path", "")).startswith(path)]

    wait_until(lambda: all(lines_for(p) for p, _ in sent), 5, 0.05, desc="an access-log line for every request")
    time.sleep(0.2)  # a duplicate would be written at the same time as the first line
    for path, status in sent:
        lines = lines_for(path)
        assert len(lines) == 1, f"{path}: expected one access-log line, got {lines}"
        assert str(lines[0].get("status")) == str(status), lines[0]
        assert "fallback" in lines[0] and "ingress" in lines[0] and "service" in lines[0], lines[0]
