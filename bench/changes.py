#!/usr/bin/env python3
"""Benchmark: config change -> served latency, and RSS under churn, for both config sources.

For each source (`manifests`: a `--manifests DIR` per tier; `api`: both tiers watching the
wire-level fake API server of tests/fakeapi, run as its own process) and each size N in
CHANGE_SIZES, the router is loaded with N Ingresses (one host each) and tls-edge with N edge
Ingresses (one host each, TLS) naming min(N, CHANGE_CERTS) kubernetes.io/tls Secrets, each with
its own certificate (distinct ECDSA P-256 keys, made once with openssl and cached under
bench/.cache/certs/). Then, per tier, CHANGE_N changes of each kind, one at a time:

  add       a new Ingress for a new host              -> 200 from its backend (svc-b)
  update    an existing Ingress's backend a <-> b      -> 200 from the new backend
  delete    an Ingress added before is removed         -> 404
  endpoint  the EndpointSlice of ep-svc moves from 127.0.0.1:P to 127.0.0.2:P (and back)
                                                       -> 200 from the new pod (x-served-by)
  rotate    (edge) a TLS Secret gets another certificate -> a new handshake (SNI) presents it
  update-inplace  (manifests only) `update` with the file rewritten in place (truncate, write,
            close) instead of renamed in. The manifest source may hold such a file back until it
            has settled (100 ms unchanged) so it is never read half-written: its own row.

A manifest change is a file written aside (a staging directory on the same file system) and
renamed in; a delete is an unlink. An API change is a PUT/POST/DELETE to the fake over HTTP.
The clock starts right before the rename/unlink or the API request, then a persistent
keep-alive connection (plain HTTP to the router, HTTPS with SNI = the host to the edge) polls
every CHANGE_POLL_MS until the expected answer; rotations poll with new TLS handshakes. Every
change is bounded by CHANGE_TIMEOUT s, every (source, tier, size, kind) by CHANGE_N changes and
CHANGE_BUDGET s (fewer than CHANGE_N changes is reported in the table).

RSS: VmRSS of both tiers after the load (after CHANGE_SETTLE s), and a soak per source at
CHANGE_SOAK_HOSTS hosts per tier: CHANGE_SOAK changes (cycles of router add, router delete, edge
add, edge delete, Secret rotation: the store size stays constant), one every
CHANGE_SOAK_PACE_MS, sampled every 1,000 changes once the last change is served.

Writes $RESULTS/changes.tsv: source tier size metric run value (latency in ms, -1 = timed out;
rss in KiB; rebuilds from tandem_config_rebuilds_total). Summary: bench/parse.py changes.

Knobs (environment): CHANGE_SIZES="10 1000 20000" CHANGE_N=100 CHANGE_CERTS=10000
CHANGE_SOURCES="manifests api" CHANGE_TIERS="router edge" CHANGE_KINDS (default: all)
CHANGE_TIMEOUT=10 CHANGE_BUDGET=20 CHANGE_POLL_MS=1 CHANGE_SETTLE=2 CHANGE_SOAK=10000
CHANGE_SOAK_HOSTS=10000 CHANGE_SOAK_PACE_MS=2 (CHANGE_SOAK=0: no soak) CHANGE_TMP=/dev/shm (where
the manifest directories go; default tmpfs if writable) BENCH_PORT_BASE=39000
BENCH_BIN=target/release RESULTS=bench/results/changes-<time>.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("BENCH_BIN", ROOT / "target" / "release"))
os.environ["TANDEM_BIN_DIR"] = str(BIN)  # read by e2e_lib at import
sys.path[:0] = [str(ROOT / "tests" / "e2e"), str(ROOT / "tests")]

from api_support import EDGE_CLASS, ROUTER_CLASS, rss_kib  # noqa: E402
from e2e_lib import (LOOPBACK, Endpoint, Process, backend_objects, http_path, ingress,  # noqa: E402
                     ingress_class, port_open, rule)
from edge_support import SniHTTPSConnection, der_fingerprint, edge_ingress, pem_fingerprint, tls_secret  # noqa: E402
from fakeapi import resource_for  # noqa: E402


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


SIZES = [int(x) for x in os.environ.get("CHANGE_SIZES", "10 1000 20000").split()]
N_CHANGES = env_int("CHANGE_N", 100)
N_CERTS = env_int("CHANGE_CERTS", 10000)
SOURCES = os.environ.get("CHANGE_SOURCES", "manifests api").split()
TIERS = os.environ.get("CHANGE_TIERS", "router edge").split()
KINDS = os.environ.get("CHANGE_KINDS", "").split()
TIMEOUT = env_float("CHANGE_TIMEOUT", 10)
BUDGET = env_float("CHANGE_BUDGET", 20)
POLL = env_float("CHANGE_POLL_MS", 1) / 1000
SETTLE = env_float("CHANGE_SETTLE", 2)
SOAK = env_int("CHANGE_SOAK", 10000)
SOAK_HOSTS = env_int("CHANGE_SOAK_HOSTS", 10000)
SOAK_PACE = env_float("CHANGE_SOAK_PACE_MS", 2) / 1000
SOAK_SAMPLE = 1000
READY_TIMEOUT = env_float("CHANGE_READY_TIMEOUT", 300)
PORT_BASE = env_int("BENCH_PORT_BASE", 39000)
RESULTS = Path(os.environ.get("RESULTS") or ROOT / "bench" / "results" / time.strftime("changes-%Y%m%d-%H%M%S"))
CACHE = ROOT / "bench" / ".cache" / "certs"
# Manifest directories and their staging directory (same file system, for atomic renames): on
# tmpfs when there is one. On an ext4 mounted with `discard`, unlinking the 50,000 files of the
# largest size took 2.5 minutes on a busy machine.
WORK_ROOT = os.environ.get("CHANGE_TMP") or ("/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
ROTATION_POOL = 100  # extra certificates a rotated Secret switches to (and back from)
CREATED = "2024-01-01T00:00:00Z"

# Loopback ports (BENCH_PORT_BASE + 200...); ep-y listens on 127.0.0.2 with ep-x's port.
P_A, P_B, P_EP = PORT_BASE + 200, PORT_BASE + 201, PORT_BASE + 202
P_ROUTER, P_ROUTER_ADMIN = PORT_BASE + 210, PORT_BASE + 211
P_EDGE_HTTPS, P_EDGE_HTTP, P_EDGE_ADMIN = PORT_BASE + 212, PORT_BASE + 213, PORT_BASE + 214
P_FAKE = PORT_BASE + 215
EP_X, EP_Y = LOOPBACK, "127.0.0.2"


def log(msg: str) -> None:
    print(f"[changes {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes

PROCS: list[Process] = []


def spawn(name: str, argv: list[str], log_dir: Path, env: dict | None = None) -> Process:
    p = Process(name, argv, log_dir, env)
    PROCS.append(p)
    return p


def stop(p: Process, grace: float = 5.0) -> None:
    """SIGINT (pingora's fast shutdown; SIGTERM would drain), then SIGKILL after ``grace``."""
    t0 = time.monotonic()
    p.signal(signal.SIGINT)
    if p.wait_exit(grace) is None:
        log(f"{p.name} did not stop on SIGINT within {grace:.0f}s; killing it")
    p.kill()
    if time.monotonic() - t0 > 1:
        log(f"stopping {p.name} took {time.monotonic() - t0:.1f}s")
    if p in PROCS:
        PROCS.remove(p)


def stop_all() -> None:
    for p in list(reversed(PROCS)):
        stop(p)


def wait_ready(p: Process, admin_port: int, timeout: float = READY_TIMEOUT) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if not p.alive():
            raise RuntimeError(f"{p.name} exited\n{p.describe()}")
        try:
            c = http.client.HTTPConnection(LOOPBACK, admin_port, timeout=2)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{p.name} not ready within {timeout:.0f}s\n{p.describe()}")


def rebuilds(admin_port: int) -> int:
    """Sum of tandem_config_rebuilds_total over results."""
    c = http.client.HTTPConnection(LOOPBACK, admin_port, timeout=10)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    return int(sum(float(m) for m in re.findall(r"^tandem_config_rebuilds_total\{[^}]*\} (\S+)$", text, re.M)))


# --------------------------------------------------------------------------- certificates


def certificates(n: int) -> list[tuple[str, str, str]]:
    """n distinct self-signed ECDSA P-256 certificates (cert PEM, key PEM, sha256 fingerprint),
    valid for *.edge.example; made with openssl in parallel once and cached in bench/.cache."""
    CACHE.mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(n) if not (CACHE / f"{i}.crt").exists()]
    if missing:
        jobs = max(2, os.cpu_count() or 2)
        log(f"making {len(missing)} certificates with openssl ({jobs} in parallel; cached in {CACHE})")
        t0 = time.monotonic()
        running: list[tuple[int, subprocess.Popen]] = []

        def reap(block: bool) -> None:
            for item in list(running):
                i, p = item
                if block or p.poll() is not None:
                    if p.wait(timeout=60) != 0:
                        raise RuntimeError(f"openssl failed for certificate {i}")
                    # the .crt appears last: a cached pair is complete
                    os.replace(CACHE / f"{i}.key.tmp", CACHE / f"{i}.key")
                    os.replace(CACHE / f"{i}.crt.tmp", CACHE / f"{i}.crt")
                    running.remove(item)
                    if block:
                        return

        for i in missing:
            while len(running) >= jobs:
                reap(False)
                if len(running) >= jobs:
                    time.sleep(0.002)
            running.append((i, subprocess.Popen(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-days", "3650", "-subj", f"/CN=bench-cert-{i}",
                 "-addext", "subjectAltName=DNS:*.edge.example,DNS:*.example",
                 "-keyout", str(CACHE / f"{i}.key.tmp"), "-out", str(CACHE / f"{i}.crt.tmp")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        while running:
            reap(True)
        log(f"certificates made in {time.monotonic() - t0:.0f}s")
    out = []
    for i in range(n):
        crt = (CACHE / f"{i}.crt").read_text()
        out.append((crt, (CACHE / f"{i}.key").read_text(), pem_fingerprint(crt)))
    if len({fp for _, _, fp in out}) != n:
        raise RuntimeError("cached certificates are not distinct")
    return out


# --------------------------------------------------------------------------- config sources


def fname(obj: dict) -> str:
    m = obj["metadata"]
    return f"{obj['kind']}-{m.get('namespace', '')}-{m['name']}.json"


class ManifestSource:
    """One manifest directory per tier; changes are renames of files written aside, or unlinks."""

    name = "manifests"

    def __init__(self, work: Path):
        self.dirs = {t: work / f"manifests-{t}" for t in ("router", "edge")}
        self.stage = work / "stage"
        for d in [*self.dirs.values(), self.stage]:
            d.mkdir(parents=True)

    def tier_args(self, tier: str) -> list[str]:
        return ["--manifests", str(self.dirs[tier])]

    def load(self, tier: str, objs) -> None:
        d = self.dirs[tier]
        for o in objs:
            (d / fname(o)).write_text(json.dumps(o))

    def put(self, tier: str, obj: dict, inplace: bool = False) -> float:
        """Makes the change; returns the monotonic time taken right before it."""
        target = self.dirs[tier] / fname(obj)
        text = json.dumps(obj)
        if inplace:
            t0 = time.monotonic()
            with open(target, "w") as f:
                f.write(text)
            return t0
        tmp = self.stage / fname(obj)
        tmp.write_text(text)
        t0 = time.monotonic()
        os.replace(tmp, target)
        return t0

    def delete(self, tier: str, obj: dict) -> float:
        t0 = time.monotonic()
        (self.dirs[tier] / fname(obj)).unlink()
        return t0

    def close(self) -> None:
        pass


class ApiSource:
    """The fake API server (tests/fakeapi) in its own process; both tiers watch it. Changes are
    API requests (PUT, POST for a new object, DELETE) over a keep-alive connection."""

    name = "api"

    def __init__(self, work: Path):
        self.kubeconfig = work / "kubeconfig.yaml"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = spawn("fakeapi", [sys.executable, "-m", "tests.fakeapi", "--host", LOOPBACK,
                                      "--port", str(P_FAKE), "--kubeconfig", str(self.kubeconfig)],
                          RESULTS / "raw" / "changes-logs" / work.name, env)
        deadline = time.monotonic() + 30
        while not (self.kubeconfig.exists() and port_open(P_FAKE)):
            if not self.proc.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"fake API server did not start\n{self.proc.describe()}")
            time.sleep(0.05)
        self.conn: http.client.HTTPConnection | None = None

    def tier_args(self, tier: str) -> list[str]:
        return ["--kubeconfig", str(self.kubeconfig)]

    def _request(self, method: str, path: str, body: object = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        for attempt in (1, 2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(LOOPBACK, P_FAKE, timeout=120)
                self.conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
                r = self.conn.getresponse()
                return r.status, r.read()
            except (OSError, http.client.HTTPException):
                with contextlib.suppress(Exception):
                    self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _collection(obj: dict) -> str:
        r = resource_for(obj)
        base = f"/apis/{r.group}/{r.version}" if r.group else f"/api/{r.version}"
        ns = obj["metadata"].get("namespace", "default")
        return f"{base}/namespaces/{ns}/{r.plural}" if r.namespaced else f"{base}/{r.plural}"

    def load(self, tier: str, objs) -> None:
        batch: list[dict] = []
        for o in objs:
            batch.append(o)
            if len(batch) == 2000:
                self._bulk(batch)
                batch = []
        if batch:
            self._bulk(batch)

    def _bulk(self, batch: list[dict]) -> None:
        code, body = self._request("POST", "/__fake/objects", batch)
        if code != 200:
            raise RuntimeError(f"fake: bulk load answered {code}: {body[:300]!r}")

    def put(self, tier: str, obj: dict, inplace: bool = False) -> float:
        assert not inplace
        t0 = time.monotonic()
        code, body = self._request("PUT", f"{self._collection(obj)}/{obj['metadata']['name']}", obj)
        if code == 404:
            code, body = self._request("POST", self._collection(obj), obj)
        if code not in (200, 201):
            raise RuntimeError(f"fake: write of {fname(obj)} answered {code}: {body[:300]!r}")
        return t0

    def delete(self, tier: str, obj: dict) -> float:
        t0 = time.monotonic()
        code, body = self._request("DELETE", f"{self._collection(obj)}/{obj['metadata']['name']}")
        if code != 200:
            raise RuntimeError(f"fake: delete of {fname(obj)} answered {code}: {body[:300]!r}")
        return t0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.conn:
                self.conn.close()
        stop(self.proc)


# --------------------------------------------------------------------------- objects


def router_ingress(name: str, host: str, service: str) -> dict:
    return ingress(name, [rule(host, http_path("/", service))], class_name=ROUTER_CLASS, created=CREATED)


def edge_ing(name: str, host: str, secret: str, service: str) -> dict:
    d = edge_ingress(name, [([host], secret)], service)
    d["metadata"]["creationTimestamp"] = CREATED
    return d


def ep_slice(ip: str, pod: str) -> dict:
    return [o for o in backend_objects("ep-svc", [Endpoint(ip, P_EP, True, pod)]) if o["kind"] == "EndpointSlice"][0]


def base_objects() -> list[dict]:
    return [ingress_class(ROUTER_CLASS), ingress_class(EDGE_CLASS, controller="tandem.dev/tls-edge"),
            *backend_objects("svc-a", [Endpoint(LOOPBACK, P_A, True, "a-0")]),
            *backend_objects("svc-b", [Endpoint(LOOPBACK, P_B, True, "b-0")]),
            *backend_objects("ep-svc", [Endpoint(EP_X, P_EP, True, "ep-x")])]


class Store:
    """The objects of one run (size n), and what each tier's change kinds do to them."""

    def __init__(self, src, n: int, certs: list, n_secrets: int):
        self.src, self.n, self.certs, self.n_secrets = src, n, certs, n_secrets
        self.secret_cert = {k: k for k in range(n_secrets)}  # Secret index -> certificate index
        self.backend = {"router": {}, "edge": {}}  # Ingress index -> service, once updated
        # the pod ep-svc's EndpointSlice names, per tier's directory (one slice for both in the API)
        self.ep = {"router": "ep-x", "edge": "ep-x"} if isinstance(src, ManifestSource) else {}
        self.added = {"router": [], "edge": []}
        self.serial = 0  # names of added Ingresses

    # objects
    def host(self, tier: str, i: int) -> str:
        return f"r{i}.example" if tier == "router" else f"h{i}.edge.example"

    def ing(self, tier: str, i: int, service: str = "svc-a") -> dict:
        if tier == "router":
            return router_ingress(f"r-{i:05d}", self.host(tier, i), service)
        return edge_ing(f"e-{i:05d}", self.host(tier, i), self.secret_name(i % self.n_secrets), service)

    def secret_name(self, k: int) -> str:
        return f"tls-{k:05d}"

    def secret(self, k: int) -> dict:
        crt, key, _ = self.certs[self.secret_cert[k]]
        return tls_secret(self.secret_name(k), crt, key)

    def ep_ingress(self, tier: str) -> dict:
        if tier == "router":
            return router_ingress("r-ep", "ep.example", "ep-svc")
        return edge_ing("e-ep", "ep.edge.example", self.secret_name(0), "ep-svc")

    def load(self) -> None:
        """Manifests: each tier's directory gets the shared objects and its own; API: one store."""
        api = isinstance(self.src, ApiSource)
        for j, tier in enumerate(TIERS):
            self.src.load(tier, ([] if api and j else base_objects()) + [self.ep_ingress(tier)])
            if tier == "edge":
                self.src.load(tier, (self.secret(k) for k in range(self.n_secrets)))
            self.src.load(tier, (self.ing(tier, i) for i in range(self.n)))

    def add(self, tier: str):
        self.serial += 1
        i = self.serial
        name = f"add-{i}"
        host = f"add{i}.example" if tier == "router" else f"add{i}.edge.example"
        obj = (router_ingress(name, host, "svc-b") if tier == "router"
               else edge_ing(name, host, self.secret_name(i % self.n_secrets), "svc-b"))
        self.added[tier].append(obj)
        return obj, host

    def pick(self, k: int) -> int:
        return (k * 7919 + 13) % self.n

    def rotation_target(self, k: int) -> tuple[int, int, str]:
        """Secret index, new certificate index and fingerprint for the k-th rotation."""
        s = (k * 7919 + 13) % self.n_secrets
        own, alt = s, len(self.certs) - ROTATION_POOL + s % ROTATION_POOL
        new = alt if self.secret_cert[s] == own else own
        return s, new, self.certs[new][2]


# --------------------------------------------------------------------------- probes


TLS_CTX = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
TLS_CTX.check_hostname = False
TLS_CTX.verify_mode = ssl.CERT_NONE


class Probe:
    """A keep-alive connection for one host: plain HTTP to the router, HTTPS with SNI = host to
    the edge (Host equals SNI, so no 421). get() -> (status, x-served-by) or (None, error)."""

    def __init__(self, tier: str, host: str):
        self.tier, self.host = tier, host
        self.conn = None

    def get(self):
        try:
            if self.conn is None:
                if self.tier == "router":
                    self.conn = http.client.HTTPConnection(LOOPBACK, P_ROUTER, timeout=5)
                else:
                    self.conn = SniHTTPSConnection(self.host, P_EDGE_HTTPS, TLS_CTX, timeout=5)
            self.conn.request("GET", "/", headers={"Host": self.host})
            r = self.conn.getresponse()
            r.read()
            return r.status, r.getheader("x-served-by") or ""
        except (OSError, http.client.HTTPException) as e:
            self.close()
            return None, repr(e)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.conn:
                self.conn.close()
        self.conn = None


def handshake_fingerprint(sni: str):
    """A new TLS handshake with SNI ``sni``: sha256 of the certificate presented."""
    try:
        with socket.create_connection((LOOPBACK, P_EDGE_HTTPS), timeout=5) as raw:
            with TLS_CTX.wrap_socket(raw, server_hostname=sni) as tls:
                return der_fingerprint(tls.getpeercert(binary_form=True))
    except OSError as e:
        return repr(e)


def served(service: str):
    return lambda v: v[0] == 200 and v[1].split("/", 1)[0] == service


def served_pod(pod: str):
    return lambda v: v[0] == 200 and v[1] == f"ep-svc/{pod}"


def not_found(v) -> bool:
    return v[0] == 404


def wait_for(fn, pred, t0: float, timeout: float = TIMEOUT):
    """Polls fn() every POLL until pred holds; ms from t0 to the good answer, or None."""
    deadline = t0 + timeout
    last = None
    while True:
        last = fn()
        now = time.monotonic()
        if pred(last):
            return (now - t0) * 1000.0, last
        if now > deadline:
            return None, last
        time.sleep(POLL)


# --------------------------------------------------------------------------- one measurement


class Tsv:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "a")

    def row(self, source: str, tier: str, size: int, metric: str, run, value) -> None:
        v = f"{value:.3f}" if isinstance(value, float) else str(value)
        self.f.write(f"{source}\t{tier}\t{size}\t{metric}\t{run}\t{v}\n")
        self.f.flush()


def kinds_for(tier: str, source: str) -> list[str]:
    ks = ["add", "update", "delete", "endpoint"] + (["rotate"] if tier == "edge" else [])
    if source == "manifests":
        ks.append("update-inplace")
    return [k for k in ks if not KINDS or k in KINDS]


def precondition(fn, pred, what: str) -> None:
    lat, last = wait_for(fn, pred, time.monotonic(), TIMEOUT)
    if lat is None:
        raise RuntimeError(f"before a change: {what} does not hold (last answer {last!r})")


def measure_kind(st: Store, tier: str, kind: str, out: Tsv, proc: Process) -> tuple[list[float], int]:
    src = st.src
    lats: list[float] = []
    timeouts = in_a_row = 0
    n_target = len(st.added[tier]) if kind == "delete" else N_CHANGES
    started = time.monotonic()
    for k in range(n_target):
        if time.monotonic() - started > BUDGET:
            break
        probe = None
        try:
            if kind == "add":
                obj, host = st.add(tier)
                probe = Probe(tier, host)
                precondition(probe.get, not_found, f"{host} answers 404")
                t0 = src.put(tier, obj)
                lat, last = wait_for(probe.get, served("svc-b"), t0)
            elif kind == "delete":
                obj = st.added[tier].pop(0)
                host = obj["spec"]["rules"][0]["host"]
                probe = Probe(tier, host)
                precondition(probe.get, served("svc-b"), f"{host} served by svc-b")
                t0 = src.delete(tier, obj)
                lat, last = wait_for(probe.get, not_found, t0)
            elif kind in ("update", "update-inplace"):
                i = st.pick(k)
                old = st.backend[tier].get(i, "svc-a")
                new = "svc-b" if old == "svc-a" else "svc-a"
                probe = Probe(tier, st.host(tier, i))
                precondition(probe.get, served(old), f"{st.host(tier, i)} served by {old}")
                t0 = src.put(tier, st.ing(tier, i, new), inplace=kind == "update-inplace")
                st.backend[tier][i] = new
                lat, last = wait_for(probe.get, served(new), t0)
            elif kind == "endpoint":
                old = st.ep.get(tier, st.ep.get("shared", "ep-x"))
                new, ip = ("ep-y", EP_Y) if old == "ep-x" else ("ep-x", EP_X)
                probe = Probe(tier, "ep.example" if tier == "router" else "ep.edge.example")
                precondition(probe.get, served_pod(old), f"ep-svc served by {old}")
                t0 = src.put(tier, ep_slice(ip, new))
                st.ep[tier if isinstance(src, ManifestSource) else "shared"] = new
                lat, last = wait_for(probe.get, served_pod(new), t0)
            elif kind == "rotate":
                s, new, fp = st.rotation_target(k)
                sni = st.host("edge", s)  # Ingress s names Secret s (s < n_secrets <= n)
                old_fp = st.certs[st.secret_cert[s]][2]
                precondition(lambda: handshake_fingerprint(sni), lambda v: v == old_fp, f"{sni} has the old cert")
                st.secret_cert[s] = new
                t0 = src.put("edge", st.secret(s))
                lat, last = wait_for(lambda: handshake_fingerprint(sni), lambda v: v == fp, t0)
            else:
                raise ValueError(kind)
        finally:
            if probe:
                probe.close()
        if lat is None:
            timeouts += 1
            in_a_row += 1
            log(f"  {kind} #{k}: not served within {TIMEOUT:.0f}s (last answer {last!r})")
            out.row(src.name, tier, st.n, f"{kind}_ms", k + 1, -1)
            if not proc.alive():
                raise RuntimeError(f"{tier} died\n{proc.describe()}")
            if in_a_row == 3:
                log(f"  {kind}: 3 changes in a row not served; giving up on this kind")
                break
        else:
            in_a_row = 0
            lats.append(lat)
            out.row(src.name, tier, st.n, f"{kind}_ms", k + 1, lat)
    return lats, timeouts


def fmt_lat(lats: list[float], timeouts: int) -> str:
    if not lats:
        return f"n=0 timeouts={timeouts}"
    s = sorted(lats)

    def p(q):
        return s[min(len(s) - 1, max(0, -(-q * len(s) // 100) - 1))]

    return f"n={len(s)} p50 {p(50):.1f} p99 {p(99):.1f} max {s[-1]:.1f} ms" + (f" timeouts={timeouts}" if timeouts else "")


# --------------------------------------------------------------------------- runs


def start_tiers(src, work: Path) -> dict[str, Process]:
    procs = {}
    logs = RESULTS / "raw" / "changes-logs" / work.name
    if "router" in TIERS:
        procs["router"] = spawn("router", [str(BIN / "router"), *src.tier_args("router"),
                                           "--http-listen", f"{LOOPBACK}:{P_ROUTER}",
                                           "--admin-listen", f"{LOOPBACK}:{P_ROUTER_ADMIN}",
                                           "--no-access-log", "--shutdown-delay", "0s",
                                           "--log-format", "json"], logs)
    if "edge" in TIERS:
        procs["edge"] = spawn("edge", [str(BIN / "tls-edge"), *src.tier_args("edge"),
                                       "--https-listen", f"{LOOPBACK}:{P_EDGE_HTTPS}",
                                       "--http-listen", f"{LOOPBACK}:{P_EDGE_HTTP}",
                                       "--admin-listen", f"{LOOPBACK}:{P_EDGE_ADMIN}",
                                       "--no-access-log", "--shutdown-delay", "0s",
                                       "--log-format", "json"], logs)
    return procs


ADMIN = {"router": P_ROUTER_ADMIN, "edge": P_EDGE_ADMIN}


def loaded(source: str, n: int, certs: list, out: Tsv, work: Path, tag: str = ""):
    """A source with n Ingresses per tier loaded and both tiers ready (rows: ``tag`` + metric)."""
    n_secrets = max(1, min(n, N_CERTS))
    src = ManifestSource(work) if source == "manifests" else ApiSource(work)
    st = Store(src, n, certs, n_secrets)
    t0 = time.monotonic()
    st.load()
    log(f"{source} n={n}: {n} Ingresses per tier, {n_secrets} Secrets/certificates loaded in "
        f"{time.monotonic() - t0:.1f}s; starting tiers")
    t0 = time.monotonic()
    procs = start_tiers(src, work)
    for tier, p in procs.items():
        wait_ready(p, ADMIN[tier])
        out.row(source, tier, n, f"{tag}ready_ms", 1, (time.monotonic() - t0) * 1000.0)
    # sanity: the loaded config is served
    for tier in procs:
        probe = Probe(tier, st.host(tier, n - 1))
        precondition(probe.get, served("svc-a"), f"{tier}: last loaded host served")
        probe.close()
    if "edge" in procs:
        fp = st.certs[st.secret_cert[n_secrets - 1]][2]
        precondition(lambda: handshake_fingerprint(st.host("edge", n_secrets - 1)), lambda v: v == fp,
                     "edge: last Secret's certificate served")
    time.sleep(SETTLE)
    for tier, p in procs.items():
        out.row(source, tier, n, f"{tag}rss_kb_loaded", 1, rss_kib(p.pid)["VmRSS"])
        if tier == "edge":
            out.row(source, tier, n, f"{tag}certs", 1, n_secrets)
    log(f"{source} n={n}: ready in " + ", ".join(f"{t} {rss_kib(p.pid)['VmRSS'] / 1024:.0f} MiB" for t, p in procs.items()))
    return src, st, procs


def run_size(source: str, n: int, certs: list, out: Tsv) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"tandem-changes-{source}-{n}-", dir=WORK_ROOT))
    src = None
    try:
        src, st, procs = loaded(source, n, certs, out, work)
        for tier in procs:
            for kind in kinds_for(tier, source):
                t0 = time.monotonic()
                lats, timeouts = measure_kind(st, tier, kind, out, procs[tier])
                short = " (budget reached)" if kind != "delete" and len(lats) + timeouts < N_CHANGES else ""
                log(f"{source} {tier} n={n} {kind}: {fmt_lat(lats, timeouts)} "
                    f"[{time.monotonic() - t0:.0f}s, load {os.getloadavg()[0]:.1f}]{short}")
        for tier, p in procs.items():
            if not p.alive():
                raise RuntimeError(f"{tier} died\n{p.describe()}")
            out.row(source, tier, n, "rss_kb_after", 1, rss_kib(p.pid)["VmRSS"])
    finally:
        stop_all_but_fake(src)
        t0 = time.monotonic()
        shutil.rmtree(work, ignore_errors=True)
        log(f"cleaned up {work} in {time.monotonic() - t0:.1f}s")


def stop_all_but_fake(src) -> None:
    for p in list(reversed(PROCS)):
        if p.name.startswith(("router", "edge")):
            stop(p)
    if src is not None:
        src.close()


def run_soak(source: str, certs: list, out: Tsv) -> None:
    n = SOAK_HOSTS
    work = Path(tempfile.mkdtemp(prefix=f"tandem-soak-{source}-", dir=WORK_ROOT))
    src = None
    try:
        src, st, procs = loaded(source, n, certs, out, work, "soak_")
        if set(procs) != {"router", "edge"}:
            raise RuntimeError("the soak needs both tiers (CHANGE_TIERS)")
        def sample(done: int) -> None:
            for t, p in procs.items():
                out.row(source, t, n, "soak_rss_kb", done, rss_kib(p.pid)["VmRSS"])
                out.row(source, t, n, "soak_rebuilds", done, rebuilds(ADMIN[t]) - base_rebuilds[t])

        # one extra Ingress per tier, deleted in the first cycle, so every cycle adds one and
        # deletes the one added before it
        soak_r0 = router_ingress("soak-r-init", "soak-init.example", "svc-b")
        soak_e0 = edge_ing("soak-e-init", "soak-init.edge.example", st.secret_name(0), "svc-b")
        src.put("router", soak_r0)
        src.put("edge", soak_e0)
        precondition(Probe("router", "soak-init.example").get, served("svc-b"), "soak: first Ingress served")
        precondition(Probe("edge", "soak-init.edge.example").get, served("svc-b"), "soak: first edge Ingress served")
        time.sleep(SETTLE)
        base_rebuilds = {t: rebuilds(ADMIN[t]) for t in procs}
        sample(0)
        t_start = time.monotonic()
        last_router_host = last_sni = last_fp = None
        for c in range(SOAK):
            step, cyc = c % 5, c // 5
            if step == 0:
                src.put("router", router_ingress(f"soak-r-{cyc}", f"soak{cyc}.example", "svc-b"))
            elif step == 1:
                # the previous cycle's Ingress: an add and its delete are never coalesced together
                prev = router_ingress(f"soak-r-{cyc - 1}", f"soak{cyc - 1}.example", "svc-b") if cyc else soak_r0
                src.delete("router", prev)
                last_router_host = prev["spec"]["rules"][0]["host"]
            elif step == 2:
                src.put("edge", edge_ing(f"soak-e-{cyc}", f"soak{cyc}.edge.example",
                                         st.secret_name(cyc % st.n_secrets), "svc-b"))
            elif step == 3:
                prev = edge_ing(f"soak-e-{cyc - 1}", f"soak{cyc - 1}.edge.example",
                                st.secret_name((cyc - 1) % st.n_secrets), "svc-b") if cyc else soak_e0
                src.delete("edge", prev)
            else:
                s, new, last_fp = st.rotation_target(cyc)
                st.secret_cert[s] = new
                src.put("edge", st.secret(s))
                last_sni = st.host("edge", s)
            done = c + 1
            if done % SOAK_SAMPLE == 0 or done == SOAK:
                # sync: the batch's last router change and last rotation are served
                if last_router_host:
                    precondition(Probe("router", last_router_host).get, not_found, "soak: router caught up")
                if last_fp:
                    precondition(lambda: handshake_fingerprint(last_sni), lambda v: v == last_fp,
                                 "soak: edge caught up")
                time.sleep(0.5)
                sample(done)
                log(f"{source} soak: {done} changes in {time.monotonic() - t_start:.0f}s; "
                    + ", ".join(f"{t} {rss_kib(p.pid)['VmRSS'] / 1024:.1f} MiB" for t, p in procs.items()))
            else:
                time.sleep(SOAK_PACE)
        for t, p in procs.items():
            if not p.alive():
                raise RuntimeError(f"{t} died during the soak\n{p.describe()}")
    finally:
        stop_all_but_fake(src)
        t0 = time.monotonic()
        shutil.rmtree(work, ignore_errors=True)
        log(f"cleaned up {work} in {time.monotonic() - t0:.1f}s")


def main() -> int:
    for b in ("router", "tls-edge", "echo-backend"):
        if not os.access(BIN / b, os.X_OK):
            sys.exit(f"changes: missing {BIN / b} (build, or set BENCH_BIN)")
    ports = [P_A, P_B, P_EP, P_ROUTER, P_ROUTER_ADMIN, P_EDGE_HTTPS, P_EDGE_HTTP, P_EDGE_ADMIN, P_FAKE]
    busy = [p for p in ports if port_open(p)] + ([P_EP] if port_open(P_EP, EP_Y) else [])
    if busy:
        sys.exit(f"changes: ports {busy} busy (set BENCH_PORT_BASE)")
    out = Tsv(RESULTS / "changes.tsv")
    t_start = time.monotonic()
    need_soak = SOAK > 0
    biggest = max(SIZES + ([SOAK_HOSTS] if need_soak else []))
    certs = certificates(min(biggest, N_CERTS) + ROTATION_POOL)
    logs = RESULTS / "raw" / "changes-logs"
    for svc, pod, ip, port in (("svc-a", "a-0", LOOPBACK, P_A), ("svc-b", "b-0", LOOPBACK, P_B),
                               ("ep-svc", "ep-x", EP_X, P_EP), ("ep-svc", "ep-y", EP_Y, P_EP)):
        spawn(f"echo-{pod}", [str(BIN / "echo-backend"), "--listen", f"{ip}:{port}", "--service", svc,
                              "--pod", pod], logs)
        deadline = time.monotonic() + 10
        while not port_open(port, ip):
            if time.monotonic() > deadline:
                raise RuntimeError(f"echo-backend {pod} did not start")
            time.sleep(0.02)
    log(f"binaries {BIN}; sizes {SIZES}; sources {SOURCES}; tiers {TIERS}; n={N_CHANGES} per kind "
        f"(budget {BUDGET:.0f}s, timeout {TIMEOUT:.0f}s, poll {POLL * 1000:.1f} ms); soak {SOAK} at {SOAK_HOSTS}")
    for source in SOURCES:
        for n in SIZES:
            run_size(source, n, certs, out)
        if need_soak:
            run_soak(source, certs, out)
    log(f"done in {time.monotonic() - t_start:.0f}s; {RESULTS / 'changes.tsv'}")
    return 0


def _terminate(signum, _frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    # also when started with SIGINT ignored (a background job of a script): stop what we started
    signal.signal(signal.SIGINT, _terminate)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        sys.exit(main())
    finally:
        stop_all()
