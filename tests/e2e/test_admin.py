"""Admin endpoints: /healthz always 200 while running; /readyz 503 until the first full
load of the manifests is published, then 200.
"""

from __future__ import annotations

from e2e_lib import backend_objects, http_path, http_request, ingress, rule, wait_until


def test_healthz_and_readyz(env):
    svc = env.echo("svc")
    r = env.router({"b.yaml": backend_objects("svc", [svc]),
                    "i.yaml": ingress("i", [rule(None, http_path("/", "svc", 80))])})
    assert r.admin_status("/healthz") == 200
    assert r.admin_status("/readyz") == 200
    assert r.curl("/").status == 200
    # the admin listener is not the proxy: routes are not served there
    assert http_request(r.admin_port, "/").status == 404


def test_ready_with_empty_manifest_dir(env):
    r = env.router({})
    assert r.admin_status("/readyz") == 200
    assert r.curl("/x").status == 404


def test_readyz_only_after_first_full_load(env):
    """Poll from process start: 503* then 200, never back; at the first 200 every route is served."""
    svc = env.echo("svc")
    n = 400
    files = {"backends.yaml": backend_objects("svc", [svc])}
    for i in range(n):
        files[f"ing-{i:04d}.yaml"] = [ingress(f"ing-{i}-{j}", [rule(f"h{i}-{j}.test", http_path("/p", "svc", 80))])
                                      for j in range(5)]
    r = env.router(files, wait_ready=False)
    seen = []
    health_bad = []

    def poll():
        s = r.admin_status("/readyz")
        if s is not None:
            seen.append(s)
            h = r.admin_status("/healthz")
            if h != 200:
                health_bad.append(h)
        if not r.proc.alive():
            raise AssertionError(f"router exited\n{r.describe()}")
        return s == 200

    wait_until(poll, 60, 0.005, desc="/readyz 200")
    # Right at the first 200: routes from the first and the last file are served.
    for host in ("h0-0.test", f"h{n - 1}-4.test", f"h{n // 2}-2.test"):
        resp = r.get("/p", host=host)
        assert (resp.status, resp.service) == (200, "svc"), f"ready before {host} was loaded: {resp}"
    for _ in range(20):
        seen.append(r.admin_status("/readyz"))
    first_200 = seen.index(200)
    print(f"\n/readyz statuses before ready: {seen[:first_200].count(503)}x503, then 200")
    assert set(seen[:first_200]) <= {503}, f"/readyz before ready must be 503: {seen[:first_200]}"
    assert set(seen[first_200:]) == {200}, f"/readyz went back from 200: {seen[first_200:]}"
    assert not health_bad, f"/healthz not 200 while running: {health_bad}"
