"""Hot changes of the manifest directory: under load (zero failed requests, each change
served within the SLA), long-lived connections surviving changes, file types, and broken
files (reported with file + document index; the file's last good objects stay in force).
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections import Counter

import pytest
from websockets.sync.client import connect as ws_connect

from e2e_lib import (LOOPBACK, MEASURE_SLACK, RELOAD_SLA, backend_objects, flatten_log, http_path,
                     ingress, rule, wait_until)

LOAD_MAX_SECONDS = 10.0
LOAD_MAX_REQUESTS = 20_000
LOAD_THREADS = 4


def routes(name, path, svc):
    return ingress(name, [rule(None, http_path(path, svc, 80))])


class LoadGenerator:
    """N threads of keep-alive http.client connections; bounded in time and count.

    ``allowed`` maps each path to the set of acceptable ``service`` or ``service/pod``
    answers. The test swaps in a new dict at each phase; every request is checked against
    the dict in force when it was *sent* (a change observed before the send must be seen).
    """

    def __init__(self, port, allowed: dict[str, set[str]], threads=LOAD_THREADS,
                 max_seconds=LOAD_MAX_SECONDS, max_requests=LOAD_MAX_REQUESTS):
        self.port = port
        self.allowed = allowed
        self.paths = list(allowed)
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.count = 0
        self.failures: list[str] = []
        self.served = Counter()
        self.reconnects = 0
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def set_allowed(self, allowed: dict[str, set[str]]):
        self.allowed = allowed  # atomic reference swap

    def _take(self) -> bool:
        with self.lock:
            if self.count >= self.max_requests:
                return False
            self.count += 1
            return True

    @staticmethod
    def _ok(served: str, allowed: set[str]) -> bool:
        return served in allowed or served.split("/", 1)[0] in allowed

    def _run(self, i):
        deadline = time.monotonic() + self.max_seconds
        conn = None
        n = i
        while not self.stop_event.is_set() and time.monotonic() < deadline and self._take():
            path = self.paths[n % len(self.paths)]
            n += 1
            allowed = self.allowed[path]
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=10)
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                served = resp.getheader("x-served-by") or ""
                # A request in flight while a change starts may see either side of it: accept
                # what was allowed when it was sent or when its answer came back (the latter
                # includes both sides while a change is in flight).
                allowed = allowed | self.allowed[path]
                if resp.status != 200 or not self._ok(served, allowed):
                    self._fail(f"{path}: status {resp.status} served by {served!r}, expected one of {sorted(allowed)}")
                else:
                    with self.lock:
                        self.served[(path, served)] += 1
                if (resp.getheader("connection") or "").lower() == "close":
                    conn.close()
                    conn = None
                    with self.lock:
                        self.reconnects += 1
            except Exception as exc:  # noqa: BLE001
                self._fail(f"{path}: {type(exc).__name__}: {exc}")
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def _fail(self, msg):
        with self.lock:
            self.failures.append(f"t+{time.monotonic() - self.t0:.3f}s {msg}")

    def start(self):
        self.t0 = time.monotonic()
        for t in self.threads:
            t.start()

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=30)
        self.elapsed = time.monotonic() - self.t0


def measure(probe_port, path, predicate, t_change, timeout=10.0):
    """Poll ``path`` (own connection) until predicate(response) holds; return seconds since t_change."""
    conn = http.client.HTTPConnection(LOOPBACK, probe_port, timeout=5)

    def check():
        nonlocal conn
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
        except Exception:
            conn.close()
            conn = http.client.HTTPConnection(LOOPBACK, probe_port, timeout=5)
            raise
        return predicate(resp)

    try:
        wait_until(check, timeout, interval=0.01, desc=f"change visible on {path}")
        return time.monotonic() - t_change
    finally:
        conn.close()


def served(svc=None, pod=None):
    def pred(resp):
        sb = resp.getheader("x-served-by") or ""
        s, _, p = sb.partition("/")
        return resp.status == 200 and (svc is None or s == svc) and (pod is None or p == pod)
    return pred


DWELL = 0.4  # seconds of load in each state after a change was observed


def test_hot_changes_under_load(env):
    e = env
    a1, a2 = e.echo("svc-a", "a1"), e.echo("svc-a", "a2")
    b, c, legacy = e.echo("svc-b", "b1"), e.echo("svc-c", "c1"), e.echo("legacy", "l1")
    r = e.router({
        "backends-a.yaml": backend_objects("svc-a", [a1]),
        "backends.yaml": backend_objects("svc-b", [b]) + backend_objects("svc-c", [c])
        + backend_objects("legacy", [legacy], mode="endpoints"),
        "00-legacy.yaml": ingress("legacy", [rule(None, http_path("/", "legacy", 80))]),
        "routes-a.yaml": routes("routes-a", "/a", "svc-a"),
    })
    # what each path may answer in the current (settled) state
    state = {"/a/x": {"svc-a/a1"}, "/b/x": {"legacy"}, "/c/x": {"legacy"}, "/other": {"legacy"}}
    assert r.get("/a/x").served_by == "svc-a/a1"

    # (description, action, path whose new answer marks the change as applied, new answer,
    #  answers acceptable on that path once settled (None: just the new one),
    #  extra answers tolerated on that path only while the change is in flight)
    steps = [
        ("add routes-b.yaml (/b -> svc-b)",
         lambda: r.write("routes-b.yaml", routes("routes-b", "/b", "svc-b")), "/b/x", "svc-b", None, set()),
        ("rewrite backends-a.yaml (svc-a endpoints a1 -> a2)",
         lambda: r.write("backends-a.yaml", backend_objects("svc-a", [a2])), "/a/x", "svc-a/a2", None, set()),
        ("rewrite routes-a.yaml (/a -> svc-c)",
         lambda: r.write("routes-a.yaml", routes("routes-a", "/a", "svc-c")), "/a/x", "svc-c", None, set()),
        ("rename routes-b.yaml -> routes-b.yaml.off (drops /b)",
         lambda: r.rename("routes-b.yaml", "routes-b.yaml.off"), "/b/x", "legacy", None, set()),
        ("rename routes-b.yaml.off -> routes-b.yml (restores /b)",
         lambda: r.rename("routes-b.yaml.off", "routes-b.yml"), "/b/x", "svc-b", None, set()),
        ("add routes-c.yaml (/c -> svc-c)",
         lambda: r.write("routes-c.yaml", routes("routes-c", "/c", "svc-c")), "/c/x", "svc-c", None, set()),
        # an in-place (truncate + write) rewrite is read only once it has settled: the file's
        # Ingress never vanishes, so the fallback is not tolerated (test_manifest_hostile.py
        # rewrites in chunks with pauses)
        ("rewrite routes-a.yaml in place, non-atomically (/a -> svc-a)",
         lambda: r.write("routes-a.yaml", routes("routes-a", "/a", "svc-a"), atomic=False), "/a/x", "svc-a/a2",
         None, set()),
        ("edit backends.yaml (svc-c gets a second endpoint, svc-b unchanged)",
         lambda: r.write("backends.yaml", backend_objects("svc-b", [b]) + backend_objects("svc-c", [c, a1])
                         + backend_objects("legacy", [legacy], mode="endpoints")), "/c/x", "svc-a/a1",
         {"svc-c/c1", "svc-a/a1"}, set()),
        ("delete routes-a.yaml", lambda: r.delete("routes-a.yaml"), "/a/x", "legacy", None, set()),
    ]

    load = LoadGenerator(r.http_port, {k: set(v) for k, v in state.items()})
    load.start()
    figures = []
    try:
        time.sleep(DWELL)
        for desc, action, path, new, settled, tolerated in steps:
            # while the change is in flight the old and the new answer are both fine
            load.set_allowed({**state, path: state[path] | {new} | tolerated})
            t = action()
            pred = served(*new.split("/", 1)) if "/" in new else served(new)
            latency = measure(r.http_port, path, pred, t)
            figures.append((desc, latency))
            # from now on only the new answer is acceptable
            state[path] = settled or {new}
            load.set_allowed({k: set(v) for k, v in state.items()})
            if load.stop_event.is_set() or time.monotonic() - load.t0 > LOAD_MAX_SECONDS - DWELL:
                break
            time.sleep(DWELL)
    finally:
        load.stop()

    print(f"\nload: {load.count} requests in {load.elapsed:.2f}s "
          f"({load.count / max(load.elapsed, 1e-9):.0f} req/s, {LOAD_THREADS} keep-alive threads), "
          f"{len(load.failures)} failures, {load.reconnects} server-closed connections")
    for desc, latency in figures:
        print(f"  {latency * 1000:7.1f} ms  {desc}")
    print("  served:", dict(sorted((f"{p} {s}", n) for (p, s), n in load.served.items())))

    assert not load.failures, f"{len(load.failures)} failed requests under load, first: {load.failures[:10]}"
    assert len(figures) == len(steps), (
        f"only {len(figures)}/{len(steps)} changes happened within the load window: {figures}")
    slow = [(d, round(l, 3)) for d, l in figures if l > RELOAD_SLA + MEASURE_SLACK]
    assert not slow, f"changes not served within {RELOAD_SLA}s: {slow}"
    assert load.count >= 200, f"load generator too slow to mean anything: {load.count} requests"


@pytest.mark.parametrize("change", ["rename to another *.yaml name", "rewrite identical content",
                                    "touch another file"])
def test_no_op_changes_cause_no_gap(env, change):
    """Changes that leave the set of objects identical must not make a route blink."""
    b, legacy = env.echo("svc-b", "b1"), env.echo("legacy", "l1")
    r = env.router({
        "backends.yaml": backend_objects("svc-b", [b]) + backend_objects("legacy", [legacy], mode="endpoints"),
        "00-legacy.yaml": ingress("legacy", [rule(None, http_path("/", "legacy", 80))]),
        "routes-b.yaml": routes("routes-b", "/b", "svc-b"),
    })
    load = LoadGenerator(r.http_port, {"/b/x": {"svc-b"}, "/other": {"legacy"}}, max_seconds=4)
    load.start()
    try:
        time.sleep(0.3)
        for i in range(3):
            if change.startswith("rename"):
                r.rename("routes-b.yaml" if i % 2 == 0 else "zz-routes-b.yaml",
                         "zz-routes-b.yaml" if i % 2 == 0 else "routes-b.yaml")
            elif change.startswith("rewrite"):
                r.write("routes-b.yaml", routes("routes-b", "/b", "svc-b"))
            else:
                r.write("unrelated.yaml", routes(f"unrelated-{i}", f"/u{i}", "svc-b"))
            time.sleep(0.6)
    finally:
        load.stop()
    print(f"\n{change}: {load.count} requests, {len(load.failures)} failures")
    assert not load.failures, f"{change}: {len(load.failures)} bad answers, first: {load.failures[:5]}"


def test_long_lived_connections_survive_changes(env):
    """An open WebSocket and an idle keep-alive connection outlive route and endpoint changes."""
    ws1, other, extra = env.echo("ws", "ws-1"), env.echo("other", "o1"), env.echo("ws", "ws-2")
    r = env.router({
        "backends.yaml": backend_objects("ws", [ws1]) + backend_objects("other", [other]),
        "ws.yaml": routes("ws", "/ws", "ws"),
        "other.yaml": routes("other", "/other", "other"),
    })
    keepalive = http.client.HTTPConnection(LOOPBACK, r.http_port, timeout=10)
    keepalive.request("GET", "/other/1")
    first = keepalive.getresponse()
    first.read()
    assert first.status == 200
    with ws_connect(f"ws://{LOOPBACK}:{r.http_port}/ws", open_timeout=10, close_timeout=5) as ws:
        ws.send("before")
        assert ws.recv(timeout=10) == "before"
        changes = [
            ("routes of other Ingresses change", lambda: r.write("other.yaml", routes("other", "/other2", "other")),
             "/other2", "other"),
            ("endpoints of the WebSocket's Service change",
             lambda: r.write("backends.yaml", backend_objects("ws", [ws1, extra]) + backend_objects("other", [other])),
             None, None),
            ("the WebSocket's own route is re-pointed",
             lambda: r.write("ws.yaml", routes("ws", "/ws", "other")), "/ws", "other"),
            ("a new file appears", lambda: r.write("new.yaml", routes("new", "/new", "ws")), "/new", "ws"),
        ]
        for i, (desc, action, path, svc) in enumerate(changes):
            action()
            if path:
                r.wait_served_by(path, svc)
            else:
                wait_until(lambda: {r.get("/ws").pod for _ in range(4)} == {"ws-1", "ws-2"}, 10,
                           desc="new endpoint ws-2 in rotation")
            ws.send(f"after change {i}")
            assert ws.recv(timeout=10) == f"after change {i}", f"WebSocket broken after: {desc}"
        keepalive.request("GET", "/other2/x")
        resp = keepalive.getresponse()
        resp.read()
        assert (resp.status, resp.getheader("x-served-by")) == (200, "other/o1"), \
            "an idle keep-alive connection must survive the changes and see the new routes"
    keepalive.close()


def test_file_kinds_and_locations(env):
    svc = env.echo("svc")
    r = env.router({"backends.yaml": backend_objects("svc", [svc])})
    r.write("a.yml", routes("a", "/yml", "svc"))
    r.wait_served_by("/yml", "svc")
    (r.manifests_dir / "b.json").write_text(json.dumps(routes("b", "/json", "svc")))
    r.wait_served_by("/json", "svc")
    r.write("nested/dir/c.yaml", routes("c", "/nested", "svc"))
    r.wait_served_by("/nested", "svc")
    (r.manifests_dir / "d.txt").write_text(json.dumps(routes("d", "/txt", "svc")))
    r.write("e.yaml", routes("e", "/marker", "svc"))
    r.wait_served_by("/marker", "svc")
    assert r.get("/txt").status == 404, "files that are not *.yaml|*.yml|*.json must be ignored"
    # Several documents in one file, including an empty one and a comment-only one.
    r.write("multi.yaml", "# comment only\n---\n---\n" + "---\n".join(
        json.dumps(routes(f"m{i}", f"/multi{i}", "svc")) + "\n" for i in range(3)))
    for i in range(3):
        r.wait_served_by(f"/multi{i}", "svc")


def test_other_kinds_in_the_directory_are_harmless(env):
    """A manifest directory of a real repo holds Deployments, ConfigMaps, Secrets...: the
    Ingress beside them is served, and the other kinds do not get the file rejected."""
    svc = env.echo("svc")
    tls_secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                  "metadata": {"name": "site-tls", "namespace": "default"},
                  "data": {"tls.crt": "", "tls.key": ""}}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "svc", "namespace": "default"},
                  "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "svc"}},
                           "template": {"metadata": {"labels": {"app": "svc"}},
                                        "spec": {"containers": [{"name": "svc", "image": "example/svc:1"}]}}}}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "default"},
                  "data": {"k": "v"}}
    r = env.router({"app.yaml": [deployment, config_map, tls_secret, *backend_objects("svc", [svc]),
                                 routes("app", "/app", "svc")]})
    assert r.get("/app").service == "svc"
    r.write("app.yaml", [deployment, config_map, tls_secret, *backend_objects("svc", [svc]),
                         routes("app", "/app2", "svc")])
    r.wait_served_by("/app2", "svc")


# --------------------------------------------------------------------------- broken files


BROKEN_DOC = """apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: y
  namespace: default
spec: {rules: [ {http: {paths: [ {path: /y, pathType: Prefix
"""


def mentions_doc_index(line: str, filename: str, indexes: set[int]) -> bool:
    """Does a log line name ``filename`` and one of the document ``indexes``?"""
    if filename not in line:
        return False
    try:
        obj = flatten_log(json.loads(line))
        for k, v in obj.items():
            if re.search(r"doc|index", k, re.I) and str(v) in {str(i) for i in indexes}:
                return True
    except (ValueError, AttributeError):
        pass
    alt = "|".join(str(i) for i in indexes)
    return bool(re.search(rf"(?i)(doc\w*|index|#)\W{{0,3}}(?:{alt})\b", line))


def test_broken_file_keeps_last_good_objects(env):
    a, b, c = env.echo("svc-a"), env.echo("svc-b"), env.echo("svc-c")
    good = [routes("x", "/x", "svc-a"), routes("y", "/y", "svc-b"), routes("z", "/z", "svc-c")]
    r = env.router({
        "backends.yaml": backend_objects("svc-a", [a]) + backend_objects("svc-b", [b]) + backend_objects("svc-c", [c]),
        "apps.yaml": good,
        "other.yaml": routes("other", "/other", "svc-c"),
    })
    for p, s in (("/x", "svc-a"), ("/y", "svc-b"), ("/z", "svc-c"), ("/other", "svc-c")):
        assert r.get(p).service == s

    # Break the second document (index 1 counting from 0; 2 counting from 1).
    r.write("apps.yaml", [good[0], BROKEN_DOC, good[2]])
    line = wait_until(lambda: next((l for l in r.proc.log_lines() if mentions_doc_index(l, "apps.yaml", {1, 2})),
                                   None), 5, 0.05, desc="a log line naming apps.yaml and the broken document's index")
    print("broken file reported as:", line)
    # Every route keeps serving, including /y from the broken document (last good read).
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        for p, s in (("/x", "svc-a"), ("/y", "svc-b"), ("/z", "svc-c"), ("/other", "svc-c")):
            resp = r.get(p)
            assert (resp.status, resp.service) == (200, s), f"{p} after apps.yaml broke: {resp}"
        time.sleep(0.05)

    # A broken *new* file does not disturb anything either, and is reported.
    r.write("new-broken.yaml", ["kind: [unclosed\n"])
    r.wait_log("new-broken.yaml", 5)
    assert r.get("/other").service == "svc-c"

    # A document that is valid YAML but not a valid object is reported too.
    r.write("bad-shape.yaml", [routes("ok", "/ok", "svc-a"),
                               {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                                "metadata": {"name": "shape", "namespace": "default"}, "spec": {"rules": "oops"}}])
    r.wait_log("bad-shape.yaml", 5)
    assert r.get("/y").service == "svc-b"

    # Fixing the file applies its new content within the SLA.
    t = r.write("apps.yaml", [good[0], routes("y", "/y", "svc-a"), good[2]])
    latency = measure(r.http_port, "/y", served("svc-a"), t)
    print(f"fixed file served after {latency * 1000:.0f} ms")
    assert latency <= RELOAD_SLA + MEASURE_SLACK
    assert r.get("/x").service == "svc-a" and r.get("/z").service == "svc-c"


def test_deleting_a_broken_file_removes_its_last_good_objects(env):
    a = env.echo("svc-a")
    r = env.router({"backends.yaml": backend_objects("svc-a", [a]), "apps.yaml": routes("x", "/x", "svc-a")})
    r.write("apps.yaml", [BROKEN_DOC])
    r.wait_log("apps.yaml", 5)
    assert r.get("/x").service == "svc-a"
    r.delete("apps.yaml")
    wait_until(lambda: r.get("/x").status == 404, 5, desc="objects of the deleted file gone")


@pytest.mark.parametrize("n_files", [200])
def test_many_files_change_latency(env, n_files):
    """A change is served within the SLA even with many Ingresses loaded."""
    svc = env.echo("svc")
    files = {"backends.yaml": backend_objects("svc", [svc])}
    for i in range(n_files):
        files[f"ing-{i:04d}.yaml"] = ingress(f"ing-{i}", [rule(f"h{i}.test", http_path(f"/p{i}", "svc", 80))])
    r = env.router(files)
    assert r.get(f"/p{n_files - 1}", host=f"h{n_files - 1}.test").status == 200
    t = r.write("ing-0000.yaml", ingress("ing-0", [rule("h0.test", http_path("/changed", "svc", 80))]))
    wait_until(lambda: r.get("/changed", host="h0.test").status == 200, 10, 0.01, desc="changed route served")
    latency = time.monotonic() - t
    print(f"{n_files} files: change served after {latency * 1000:.0f} ms")
    assert latency <= RELOAD_SLA + MEASURE_SLACK
    assert r.get("/p0", host="h0.test").status == 404
