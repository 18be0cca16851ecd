"""Helpers for the end-to-end tests of the Kubernetes API source (``test_api_*.py``).

The binaries run without ``--manifests``: they list/watch a Kubernetes API server through a
kubeconfig. By default that server is the in-process fake of ``tests/fakeapi`` (wire-level:
LIST with pagination, chunked WATCH with BOOKMARK and 410, status subresource, Leases, Events).

``TANDEM_E2E_REAL_CLUSTER=1`` switches the same tests to the cluster ``KUBECONFIG`` points at
(see ``tests/real-cluster/``): objects are applied with ``kubectl`` in ``TANDEM_E2E_NAMESPACE``,
the binaries still run locally with ``--kubeconfig``, echo backends listen on
``TANDEM_E2E_BACKEND_IP`` (an address of this machine the API accepts in Endpoints, i.e. not
loopback). Tests that need the fake's fault injection or request log are skipped there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import pytest

from e2e_lib import (LOOPBACK, REPO, STARTUP_TIMEOUT, Env, Router, _Fatal, free_port, port_open,
                     require_binary, wait_until)

sys.path.insert(0, str(REPO / "tests"))
from fakeapi import FakeApiServer, resource_for  # noqa: E402

REAL = os.environ.get("TANDEM_E2E_REAL_CLUSTER") == "1"
ROUTER_CLASS = "tandem-router"
EDGE_CLASS = "tandem-edge"


def backend_ip() -> str:
    """Address echo backends listen on: loopback with the fake; with a real cluster an address of
    this machine that may appear in Endpoints (loopback is rejected by the API)."""
    if not REAL:
        return LOOPBACK
    ip = os.environ.get("TANDEM_E2E_BACKEND_IP")
    if ip:
        return ip
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # no packet is sent
        s.connect(("10.255.255.255", 1))
        return s.getsockname()[0]


# --------------------------------------------------------------------------- clusters


class Cluster:
    """What the tests need from an API server. ``FakeCluster`` adds fault injection and logs."""

    real = False
    ns = "default"

    def kubeconfig(self, client_id: str | None = None) -> str:
        raise NotImplementedError

    def put(self, obj: dict) -> dict:
        raise NotImplementedError

    def put_many(self, objs: Iterable[dict]) -> None:
        for o in objs:
            self.put(o)

    def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        raise NotImplementedError

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        raise NotImplementedError

    def events(self, involved: str | None = None) -> list[dict]:
        raise NotImplementedError

    def lease(self, name: str, namespace: str | None = None) -> dict | None:
        return self.get("leases", name, namespace)

    def lease_holder(self, name: str, namespace: str | None = None) -> str | None:
        lease = self.lease(name, namespace)
        return ((lease or {}).get("spec") or {}).get("holderIdentity")

    def ingress_status(self, name: str, namespace: str | None = None) -> list[dict]:
        obj = self.get("ingresses", name, namespace) or {}
        return ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []

    @property
    def fake(self) -> FakeApiServer:
        pytest.skip("needs the fake API server (fault injection / request log), not a real cluster")

    def close(self) -> None:
        pass


class FakeCluster(Cluster):
    def __init__(self, work_dir: Path, **kw):
        self.work_dir = work_dir
        self._fake = FakeApiServer(**kw).start()

    @property
    def fake(self) -> FakeApiServer:
        return self._fake

    def kubeconfig(self, client_id: str | None = None) -> str:
        path = self.work_dir / f"kubeconfig-{client_id or 'default'}.yaml"
        return self._fake.write_kubeconfig(path, client_id=client_id, token=client_id or "x")

    def put(self, obj: dict) -> dict:
        return self._fake.put(obj)

    def put_many(self, objs: Iterable[dict]) -> None:
        self._fake.put_many(objs)

    def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        self._fake.delete(kind, name, namespace or self.ns)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        return self._fake.get(kind, name, namespace or self.ns)

    def events(self, involved: str | None = None) -> list[dict]:
        return self._fake.events(involved=involved)

    def close(self) -> None:
        self._fake.stop()


class RealCluster(Cluster):
    """The cluster of $KUBECONFIG, driven with kubectl (objects go to TANDEM_E2E_NAMESPACE)."""

    real = True

    def __init__(self, work_dir: Path):
        if not shutil.which("kubectl"):
            pytest.skip("kubectl not on PATH")
        self.work_dir = work_dir
        self.ns = os.environ.get("TANDEM_E2E_NAMESPACE", "tandem-e2e")
        self._kubeconfig = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
        self._created: list[tuple[str, str, str]] = []

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        p = subprocess.run(["kubectl", "--kubeconfig", self._kubeconfig, *args], input=input,
                           capture_output=True, text=True, timeout=60)
        if check and p.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {p.stderr.strip()}")
        return p.stdout

    def kubeconfig(self, client_id: str | None = None) -> str:
        return self._kubeconfig

    def _fix(self, obj: dict) -> dict:
        obj = json.loads(json.dumps(obj))
        r = resource_for(obj)
        if r.namespaced:
            obj["metadata"]["namespace"] = self.ns
        obj["metadata"].pop("creationTimestamp", None)
        return obj

    def put(self, obj: dict) -> dict:
        obj = self._fix(obj)
        status = obj.pop("status", None)
        out = json.loads(self.kubectl("apply", "-o", "json", "-f", "-", input=json.dumps(obj)))
        r = resource_for(obj)
        self._created.append((r.plural if not r.group else f"{r.plural}.{r.group}", out["metadata"].get("namespace", ""),
                              out["metadata"]["name"]))
        if status is not None and r.status_subresource:  # e.g. a Service's status.loadBalancer
            self.kubectl("patch", r.plural, out["metadata"]["name"], "-n", self.ns, "--subresource=status",
                         "--type=merge", "-p", json.dumps({"status": status}))
        return out

    def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        r = resource_for(kind)
        args = ["delete", r.plural if not r.group else f"{r.plural}.{r.group}", name, "--ignore-not-found", "--wait=false"]
        if r.namespaced:
            args += ["-n", namespace or self.ns]
        self.kubectl(*args)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        r = resource_for(kind)
        args = ["get", r.plural if not r.group else f"{r.plural}.{r.group}", name, "-o", "json", "--ignore-not-found"]
        if r.namespaced:
            args += ["-n", namespace or self.ns]
        out = self.kubectl(*args)
        return json.loads(out) if out.strip() else None

    def events(self, involved: str | None = None) -> list[dict]:
        out = json.loads(self.kubectl("get", "events.events.k8s.io", "-n", self.ns, "-o", "json"))["items"]
        if involved is not None:
            out = [e for e in out if (e.get("regarding") or {}).get("name") == involved]
        return out

    def close(self) -> None:
        # namespaced objects only: cluster-scoped ones (IngressClasses) may be shared, they stay
        for res, ns, name in reversed(self._created):
            if ns:
                with contextlib.suppress(Exception):
                    self.kubectl("delete", res, name, "-n", ns, "--ignore-not-found", "--wait=false")


@pytest.fixture
def cluster(tmp_path):
    c: Cluster = RealCluster(tmp_path) if REAL else FakeCluster(tmp_path)
    yield c
    c.close()


def fake_only(c: Cluster) -> FakeApiServer:
    """The fake behind ``c``; skips the test on a real cluster."""
    return c.fake


# --------------------------------------------------------------------------- tiers in API mode


def _api_args(cluster: Cluster, client_id: str | None, pod_name: str | None, extra: Iterable[str]) -> list[str]:
    args = ["--kubeconfig", cluster.kubeconfig(client_id)]
    if pod_name:
        args += ["--pod-name", pod_name]
    if cluster.real:
        args += ["--watch-namespace", cluster.ns, "--election-namespace", cluster.ns]
    return args + list(extra)


class ApiRouter(Router):
    """A ``router`` reading the API server (no ``--manifests``); Router's client/log helpers apply."""

    def __init__(self, env: Env, cluster: Cluster, args: list[str], name: str, client_id: str | None,
                 pod_name: str | None):
        self.env = env
        self.cluster = cluster
        self.manifests_dir = None
        self.http_port = free_port()
        self.admin_port = free_port()
        self.name = name
        self.client_id = client_id
        self.pod_name = pod_name
        argv = [str(require_binary("router")),
                "--http-listen", f"{LOOPBACK}:{self.http_port}",
                "--admin-listen", f"{LOOPBACK}:{self.admin_port}",
                *_api_args(cluster, client_id, pod_name, args)]
        self.proc = env.spawn(name, argv)
        self.name = self.proc.name

    def write(self, *a, **kw):  # pragma: no cover - guard
        raise AssertionError("API-mode router has no manifest directory; use the cluster")

    def readyz(self) -> int | None:
        return self.admin_status("/readyz")


def require_api_mode(binary: str = "router") -> None:
    """Skip unless the binary has the Kubernetes API source (``--kubeconfig``)."""
    path = require_binary(binary)
    out = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=10).stdout
    if "--kubeconfig" not in out:
        msg = f"{binary} has no --kubeconfig yet (Kubernetes API source not built)"
        if os.environ.get("TANDEM_E2E_REQUIRE_BINARIES") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


def start_router(env: Env, cluster: Cluster, args: Iterable[str] = (), *, name: str = "router",
                 client_id: str | None = None, pod_name: str | None = None,
                 wait_ready: bool = True, timeout: float = STARTUP_TIMEOUT) -> ApiRouter:
    require_api_mode("router")
    r = ApiRouter(env, cluster, list(args), name, client_id, pod_name)
    if wait_ready:
        r.wait_ready(timeout)
    return r


def start_api_edge(env: Env, cluster: Cluster, args: Iterable[str] = (), *, name: str = "edge",
                   client_id: str | None = None, pod_name: str | None = None,
                   wait_ready: bool = True, timeout: float = STARTUP_TIMEOUT):
    from edge_support import Edge

    require_api_mode("tls-edge")

    class ApiEdge(Edge):
        def __init__(self):  # noqa: D107
            self.env = env
            self.cluster = cluster
            self.manifests_dir = None
            self.https_port = free_port()
            self.http_port = free_port()
            self.admin_port = free_port()
            self.name = name
            self.client_id = client_id
            self.pod_name = pod_name
            argv = [str(require_binary("tls-edge")),
                    "--https-listen", f"{LOOPBACK}:{self.https_port}",
                    "--http-listen", f"{LOOPBACK}:{self.http_port}",
                    "--admin-listen", f"{LOOPBACK}:{self.admin_port}",
                    *_api_args(cluster, client_id, pod_name, args)]
            self.proc = env.spawn(self.name, argv)
            self.name = self.proc.name

    e = ApiEdge()
    if wait_ready:
        e.wait_ready(timeout)
    return e


# --------------------------------------------------------------------------- misc


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (KiB) of a process, from /proc/PID/status."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0])
    return out


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, int(round(p / 100 * (len(s) - 1)))))
    return s[k]


def wait_status(cluster: Cluster, name: str, expected: list[dict], timeout: float = 10.0,
                namespace: str | None = None) -> None:
    wait_until(lambda: cluster.ingress_status(name, namespace) == expected, timeout, interval=0.05,
               desc=f"status of ingress {name} == {expected}")


def wait_status_cleared(cluster: Cluster, name: str, timeout: float = 10.0, namespace: str | None = None) -> None:
    wait_until(lambda: cluster.ingress_status(name, namespace) == [], timeout, interval=0.05,
               desc=f"status of ingress {name} cleared")


def poll_served(port: int, path: str, service: str, *, host: str | None = None, timeout: float = 5.0,
                conn_holder: list | None = None) -> float:
    """Tight poll over a keep-alive connection until ``path`` is served by ``service``; returns the
    monotonic time of the first good answer."""
    import http.client

    deadline = time.monotonic() + timeout
    conn = None
    last = None
    while time.monotonic() < deadline:
        try:
            if conn is None:
                conn = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
            h = {"Host": host} if host else {}
            conn.request("GET", path, headers=h)
            r = conn.getresponse()
            r.read()
            sb = r.getheader("x-served-by") or ""
            last = (r.status, sb)
            if r.status == 200 and sb.split("/", 1)[0] == service:
                t = time.monotonic()
                conn.close()
                return t
        except (OSError, http.client.HTTPException) as e:
            last = e
            with contextlib.suppress(Exception):
                conn.close()
            conn = None
        time.sleep(0.002)
    with contextlib.suppress(Exception):
        conn.close()
    raise AssertionError(f"{path} not served by {service} within {timeout}s; last={last!r}")
