"""Shared helpers for tandem's end-to-end tests of the routing tier.

Everything runs on loopback: real `echo-backend` and `router` processes, a manifest
directory under pytest's tmp_path, real clients (curl, http.client, websockets).

Conventions
-----------
* Binaries come from ``$TANDEM_BIN_DIR`` (default ``<repo>/target/debug``). When a
  binary is missing the tests that need it are skipped, unless
  ``TANDEM_E2E_REQUIRE_BINARIES=1`` in which case they fail.
* Every wait is a poll with a deadline (:func:`wait_until`); there are no long fixed sleeps.
* Every process started here is killed at fixture teardown; its stdout/stderr are kept as
  files under the test's tmp dir (paths are printed when a test fails).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("TANDEM_BIN_DIR", REPO / "target" / "debug"))
DEFAULT_CLASS = "tandem-router"
LOOPBACK = "127.0.0.1"

# Service-level objectives the suite checks (see MISSION.md / the router's contract).
RELOAD_SLA = float(os.environ.get("TANDEM_RELOAD_SLA", "1.0"))  # seconds, disk change -> served
# Measurement slack on top of the SLA: poll interval + client/process scheduling on a
# loaded 2-core machine. Kept small on purpose.
MEASURE_SLACK = float(os.environ.get("TANDEM_MEASURE_SLACK", "0.25"))
STARTUP_TIMEOUT = float(os.environ.get("TANDEM_STARTUP_TIMEOUT", "30"))


# --------------------------------------------------------------------------- basics


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
               desc: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value; return that value.

    Exceptions raised by the predicate count as "not yet" and the last one is reported
    when the deadline passes (AssertionError).
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    last_exc: BaseException | None = None
    while True:
        try:
            last = predicate()
            last_exc = None
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f"last exception: {last_exc!r}" if last_exc else f"last value: {last!r}"
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {desc}; {detail}")
        time.sleep(interval)


def invalid_annotation_detail(proc, name: str, timeout: float = 10.0) -> str:
    """Waits for the `invalid_annotation` problem a tier logs against Ingress `name`; its detail."""
    def find():
        for e in proc.json_logs():
            if e.get("reason") == "invalid_annotation" and e.get("name") == name:
                return e.get("detail", "")
        return None
    return wait_until(find, timeout, desc=f"invalid_annotation logged for {name}")


_handed_out_ports: set[int] = set()
_port_lock = threading.Lock()


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is currently free on ``host`` and was not handed out before."""
    with _port_lock:
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
            if port not in _handed_out_ports:
                _handed_out_ports.add(port)
                return port
    raise RuntimeError("could not find a free port")


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_binary(name: str) -> Path:
    path = BIN_DIR / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        msg = f"{name} binary not found at {path} (build with `cargo build --workspace` or set TANDEM_BIN_DIR)"
        if os.environ.get("TANDEM_E2E_REQUIRE_BINARIES") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


# --------------------------------------------------------------------------- processes


class Process:
    """A child process whose stdout/stderr go to files."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict | None = None):
        self.name = name
        self.argv = argv
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = log_dir / f"{name}.stdout.log"
        self.stderr_path = log_dir / f"{name}.stderr.log"
        self._stdout = open(self.stdout_path, "wb")
        self._stderr = open(self.stderr_path, "wb")
        self.popen = subprocess.Popen(
            argv, stdout=self._stdout, stderr=self._stderr, stdin=subprocess.DEVNULL,
            env=env if env is not None else os.environ.copy(), start_new_session=True,
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def log_text(self) -> str:
        out = []
        for p in (self.stdout_path, self.stderr_path):
            with contextlib.suppress(FileNotFoundError):
                out.append(p.read_text(errors="replace"))
        return "\n".join(out)

    def log_lines(self) -> list[str]:
        return [line for line in self.log_text().splitlines() if line.strip()]

    def tail(self, n: int = 40) -> str:
        lines = self.log_lines()
        return "\n".join(lines[-n:])

    def wait_log(self, pattern: str | re.Pattern, timeout: float = 10.0, desc: str | None = None) -> str:
        """Wait for a log line matching the regex; return the line."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern

        def find():
            for line in self.log_lines():
                if rx.search(line):
                    return line
            return None

        return wait_until(find, timeout, interval=0.05, desc=desc or f"log line /{rx.pattern}/ from {self.name}")

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=5)
        for f in (self._stdout, self._stderr):
            with contextlib.suppress(Exception):
                f.close()

    def describe(self) -> str:
        return (f"{self.name} pid={self.pid} rc={self.returncode} argv={' '.join(self.argv)}\n"
                f"  logs: {self.stdout_path} {self.stderr_path}\n--- last log lines ---\n{self.tail()}")


# --------------------------------------------------------------------------- HTTP clients


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    http_version: str = ""

    def header(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def has_header(self, name: str) -> bool:
        return self.header(name) is not None

    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    @property
    def served_by(self) -> str | None:
        """``service/pod`` of the echo-backend that answered (``x-served-by``), if any."""
        return self.header("x-served-by")

    @property
    def service(self) -> str | None:
        sb = self.served_by
        return sb.split("/", 1)[0] if sb else None

    @property
    def pod(self) -> str | None:
        sb = self.served_by
        return sb.split("/", 1)[1] if sb and "/" in sb else None

    def __repr__(self) -> str:
        return (f"Response(status={self.status}, served_by={self.served_by!r}, "
                f"http_version={self.http_version!r}, body={self.body[:200]!r})")


class CurlError(Exception):
    pass


def _parse_header_dump(raw: str) -> tuple[str, list[tuple[str, str]]]:
    """Parse curl's -D dump; keep the last response block (skips 1xx)."""
    blocks = [b for b in re.split(r"\r?\n\r?\n", raw) if b.strip()]
    if not blocks:
        return "", []
    last = blocks[-1].splitlines()
    status_line = last[0]
    headers = []
    for line in last[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers.append((k.strip(), v.strip()))
    return status_line, headers


def curl(url: str, *, method: str | None = None, headers: Iterable[tuple[str, str]] | dict | None = None,
         data: bytes | str | None = None, http2: bool = False, timeout: float = 15.0,
         extra: Iterable[str] = ()) -> Response:
    """Run curl once and return (status, headers, body) as a :class:`Response`.

    ``http2=True`` uses h2c with prior knowledge. Raises :class:`CurlError` when curl itself
    fails (connection refused, timeout, ...).
    """
    if isinstance(headers, dict):
        headers = list(headers.items())
    with tempfile.TemporaryDirectory(prefix="tandem-curl-") as td:
        hdr_file = os.path.join(td, "h")
        body_file = os.path.join(td, "b")
        argv = ["curl", "-sS", "--max-time", str(timeout), "-D", hdr_file, "-o", body_file,
                "-w", "%{http_code} %{http_version}", "--noproxy", "*"]
        argv.append("--http2-prior-knowledge" if http2 else "--http1.1")
        if method:
            argv += ["-X", method]
        for k, v in headers or ():
            argv += ["-H", f"{k}: {v}" if v != "" else f"{k};"]
        stdin = None
        if data is not None:
            argv += ["--data-binary", "@-"]
            stdin = data.encode() if isinstance(data, str) else data
        argv += list(extra)
        argv.append(url)
        proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout + 10)
        if proc.returncode != 0:
            raise CurlError(f"curl exit {proc.returncode}: {proc.stderr.decode(errors='replace').strip()} "
                            f"({' '.join(argv)})")
        code, _, version = proc.stdout.decode().strip().partition(" ")
        raw = Path(hdr_file).read_text(errors="replace") if os.path.exists(hdr_file) else ""
        _, hdrs = _parse_header_dump(raw)
        body = Path(body_file).read_bytes() if os.path.exists(body_file) else b""
        return Response(int(code), hdrs, body, version)


def http_request(port: int, path: str = "/", *, host: str | None = None, method: str = "GET",
                 headers: dict | None = None, body: bytes | None = None, timeout: float = 10.0,
                 conn: http.client.HTTPConnection | None = None) -> Response:
    """One request with http.client (fast, for polling). Uses ``conn`` if given (keep-alive)."""
    own = conn is None
    if own:
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        h = dict(headers or {})
        if host is not None:
            h["Host"] = host
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, list(r.getheaders()), data, "1.1")
    finally:
        if own:
            conn.close()


# --------------------------------------------------------------------------- manifests


def backend_ref(service: str, port: int | str) -> dict:
    p = {"number": port} if isinstance(port, int) else {"name": port}
    return {"service": {"name": service, "port": p}}


def http_path(path: str, service: str, port: int | str = 80, path_type: str = "Prefix") -> dict:
    return {"path": path, "pathType": path_type, "backend": backend_ref(service, port)}


def rule(host: str | None = None, *paths: dict) -> dict:
    r: dict = {}
    if host is not None:
        r["host"] = host
    r["http"] = {"paths": list(paths)}
    return r


def ingress(name: str, rules: Iterable[dict] = (), *, namespace: str = "default",
            class_name: str | None = DEFAULT_CLASS, annotation_class: str | None = None,
            default_backend: dict | None = None, created: str | None = None,
            annotations: dict | None = None) -> dict:
    meta: dict = {"name": name, "namespace": namespace}
    ann = dict(annotations or {})
    if annotation_class is not None:
        ann["kubernetes.io/ingress.class"] = annotation_class
    if ann:
        meta["annotations"] = ann
    if created is not None:
        meta["creationTimestamp"] = created
    spec: dict = {}
    if class_name is not None:
        spec["ingressClassName"] = class_name
    if default_backend is not None:
        spec["defaultBackend"] = default_backend
    rules = list(rules)
    if rules:
        spec["rules"] = rules
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}


def ingress_class(name: str = DEFAULT_CLASS, *, default: bool = False,
                  controller: str = "tandem.dev/router") -> dict:
    meta: dict = {"name": name}
    if default:
        meta["annotations"] = {"ingressclass.kubernetes.io/is-default-class": "true"}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": meta,
            "spec": {"controller": controller}}


@dataclass
class Endpoint:
    """One address:port of a Service (a running echo-backend or a dead port)."""
    ip: str
    port: int
    ready: bool | None = True   # None: omit the `ready` condition entirely
    pod: str | None = None


def service(name: str, ports: Iterable[tuple[str | None, int]] = (("http", 80),), *,
            namespace: str = "default", selector: bool = True) -> dict:
    sports = []
    for pname, pnum in ports:
        sp: dict = {"port": pnum, "protocol": "TCP", "targetPort": pname or pnum}
        if pname:
            sp["name"] = pname
        sports.append(sp)
    spec: dict = {"ports": sports}
    if selector:
        spec["selector"] = {"app": name}
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": spec}


def endpoint_slice(name: str, service_name: str, endpoints: Iterable[Endpoint],
                   ports: Iterable[tuple[str | None, int]], *, namespace: str = "default") -> dict:
    eps = []
    for ep in endpoints:
        e: dict = {"addresses": [ep.ip], "conditions": {}}
        if ep.ready is not None:
            e["conditions"]["ready"] = ep.ready
        if ep.pod:
            e["targetRef"] = {"kind": "Pod", "name": ep.pod, "namespace": namespace}
        eps.append(e)
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"kubernetes.io/service-name": service_name}},
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": pname or "", "port": pnum, "protocol": "TCP"} for pname, pnum in ports],
    }


def endpoints_v1(service_name: str, endpoints: Iterable[Endpoint], port_name: str | None = "http", *,
                 namespace: str = "default") -> dict:
    """Hand-written v1 Endpoints (as for a selector-less legacy Service): one subset per port."""
    by_port: dict[int, list[Endpoint]] = {}
    for ep in endpoints:
        by_port.setdefault(ep.port, []).append(ep)
    subsets = []
    for pnum, eps in by_port.items():
        sub: dict = {}
        ready = [{"ip": e.ip} for e in eps if e.ready is not False]
        not_ready = [{"ip": e.ip} for e in eps if e.ready is False]
        if ready:
            sub["addresses"] = ready
        if not_ready:
            sub["notReadyAddresses"] = not_ready
        port: dict = {"port": pnum, "protocol": "TCP"}
        if port_name:
            port["name"] = port_name
        sub["ports"] = [port]
        subsets.append(sub)
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": service_name, "namespace": namespace}, "subsets": subsets}


def backend_objects(name: str, endpoints: Iterable[Endpoint | "EchoBackend"], *, mode: str = "slice",
                    port_name: str | None = "http", service_port: int = 80,
                    namespace: str = "default") -> list[dict]:
    """Service + its endpoints for a backend.

    ``mode="slice"``: Service with selector + EndpointSlices (one slice per distinct target
    port, since all endpoints of a slice share its port list).
    ``mode="endpoints"``: selector-less Service + hand-written v1 Endpoints.
    """
    eps = [e.endpoint() if isinstance(e, EchoBackend) else e for e in endpoints]
    if mode == "slice":
        docs = [service(name, [(port_name, service_port)], namespace=namespace, selector=True)]
        by_port: dict[int, list[Endpoint]] = {}
        for ep in eps:
            by_port.setdefault(ep.port, []).append(ep)
        for i, (pnum, group) in enumerate(sorted(by_port.items())):
            docs.append(endpoint_slice(f"{name}-{i}", name, group, [(port_name, pnum)], namespace=namespace))
        return docs
    if mode == "endpoints":
        return [service(name, [(port_name, service_port)], namespace=namespace, selector=False),
                endpoints_v1(name, eps, port_name, namespace=namespace)]
    raise ValueError(mode)


def to_yaml(docs: Any) -> str:
    """Render a document, a list of documents, or raw YAML text as a multi-document file."""
    if isinstance(docs, str):
        return docs
    if isinstance(docs, dict):
        docs = [docs]
    parts = []
    for d in docs:
        parts.append(d if isinstance(d, str) else yaml.safe_dump(d, sort_keys=False))
    return "---\n" + "---\n".join(p if p.endswith("\n") else p + "\n" for p in parts)


# --------------------------------------------------------------------------- echo-backend


class EchoBackend:
    def __init__(self, proc: Process, service: str, pod: str, host: str, port: int):
        self.proc = proc
        self.service = service
        self.pod = pod
        self.host = host
        self.port = port

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def served_by(self) -> str:
        return f"{self.service}/{self.pod}"

    def endpoint(self, ready: bool | None = True) -> Endpoint:
        return Endpoint(self.host, self.port, ready, self.pod)

    def stop(self) -> None:
        self.proc.kill()

    def __repr__(self) -> str:
        return f"EchoBackend({self.served_by}@{self.addr})"


# --------------------------------------------------------------------------- router


class Router:
    def __init__(self, env: "Env", manifests_dir: Path, args: list[str], name: str):
        self.env = env
        self.manifests_dir = manifests_dir
        self.http_port = free_port()
        self.admin_port = free_port()
        self.name = name
        argv = [str(require_binary("router")), "--manifests", str(manifests_dir),
                "--http-listen", f"{LOOPBACK}:{self.http_port}",
                "--admin-listen", f"{LOOPBACK}:{self.admin_port}", *args]
        self.proc = env.spawn(name, argv)

    # -- lifecycle
    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        def ready():
            if not self.proc.alive():
                raise _Fatal(f"router exited early\n{self.proc.describe()}")
            return self.admin_status("/readyz") == 200

        try:
            wait_until(ready, timeout, interval=0.05, desc="router /readyz == 200")
        except _Fatal as e:
            pytest.fail(str(e))
        except AssertionError as e:
            pytest.fail(f"{e}\n{self.proc.describe()}")
        wait_until(lambda: port_open(self.http_port), 10, desc="router http listener accepting")

    # -- manifests
    def path(self, filename: str) -> Path:
        return self.manifests_dir / filename

    def write(self, filename: str, docs: Any, *, atomic: bool = True) -> float:
        """Write a manifest file; return the monotonic time at which it became visible."""
        target = self.path(filename)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = to_yaml(docs)
        if atomic:
            # The temp name ends in .tmp, which the router must ignore.
            tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
            tmp.write_text(text)
            os.replace(tmp, target)
        else:
            target.write_text(text)
        return time.monotonic()

    def delete(self, filename: str) -> float:
        self.path(filename).unlink()
        return time.monotonic()

    def rename(self, old: str, new: str) -> float:
        os.replace(self.path(old), self.path(new))
        return time.monotonic()

    # -- clients
    @property
    def base(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    def url(self, path: str = "/") -> str:
        return self.base + path

    def curl(self, path: str = "/", *, host: str | None = None, headers=None, **kw) -> Response:
        hdrs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        if host is not None:
            hdrs.insert(0, ("Host", host))
        return curl(self.url(path), headers=hdrs, **kw)

    def get(self, path: str = "/", *, host: str | None = None, **kw) -> Response:
        """Fast request via http.client (new connection per call)."""
        return http_request(self.http_port, path, host=host, **kw)

    def admin_status(self, path: str) -> int | None:
        try:
            return http_request(self.admin_port, path, timeout=2).status
        except OSError:
            return None

    def wait_served_by(self, path: str, service: str, *, host: str | None = None,
                       timeout: float = 10.0) -> float:
        """Poll until ``path`` is answered 200 by ``service``; return the elapsed seconds."""
        t0 = time.monotonic()

        def ok():
            r = self.get(path, host=host, timeout=5)
            return r.status == 200 and r.service == service

        wait_until(ok, timeout, interval=0.01, desc=f"{host or ''}{path} served by {service}")
        return time.monotonic() - t0

    # -- logs
    def log_text(self) -> str:
        return self.proc.log_text()

    def wait_log(self, pattern: str, timeout: float = 10.0, desc: str | None = None) -> str:
        return self.proc.wait_log(pattern, timeout, desc)

    def json_logs(self) -> list[dict]:
        """All JSON log lines, flattened (tracing's nested ``fields`` / ``span`` merged in)."""
        return json_log_lines(self.proc.log_lines())

    def access_logs(self) -> list[dict]:
        """JSON log entries that look like access-log lines (have ``status`` and ``service``/``ingress``)."""
        return [e for e in self.json_logs() if "status" in e and ("service" in e or "ingress" in e)]

    def describe(self) -> str:
        return self.proc.describe()


class _Fatal(Exception):
    pass


def json_log_lines(lines: Iterable[str]) -> list[dict]:
    """The lines that are JSON objects, flattened with :func:`flatten_log`."""
    out = []
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(flatten_log(obj))
    return out


def flatten_log(obj: dict) -> dict:
    flat = dict(obj)
    for key in ("fields", "span"):
        inner = obj.get(key)
        if isinstance(inner, dict):
            for k, v in inner.items():
                flat.setdefault(k, v)
    return flat


def truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    return bool(v)


# --------------------------------------------------------------------------- environment


class Env:
    """Owns processes and a work dir; kills everything on close."""

    def __init__(self, work_dir: Path):
        self.work_dir = work_dir
        self.log_dir = work_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[Process] = []
        self._names: dict[str, int] = {}

    def _unique(self, name: str) -> str:
        n = self._names.get(name, 0)
        self._names[name] = n + 1
        return name if n == 0 else f"{name}-{n}"

    def spawn(self, name: str, argv: list[str]) -> Process:
        p = Process(self._unique(name), argv, self.log_dir)
        self.procs.append(p)
        return p

    def echo(self, service: str, pod: str | None = None, *, host: str = LOOPBACK,
             port: int | None = None, args: Iterable[str] = ()) -> EchoBackend:
        """An echo-backend; ``args`` adds flags such as ``--delay-ms 50`` or ``--status 503``."""
        binary = require_binary("echo-backend")
        pod = pod or f"{service}-0"
        port = port or free_port(host)
        proc = self.spawn(f"echo-{service}-{pod}", [str(binary), "--listen", f"{host}:{port}",
                                                     "--service", service, "--pod", pod, *args])

        def up():
            if not proc.alive():
                raise _Fatal(f"echo-backend exited early\n{proc.describe()}")
            return port_open(port, host)

        try:
            wait_until(up, STARTUP_TIMEOUT, interval=0.02, desc=f"echo-backend {service}/{pod} listening")
        except (_Fatal, AssertionError) as e:
            pytest.fail(f"{e}\n{proc.describe()}")
        return EchoBackend(proc, service, pod, host, port)

    def router(self, manifests: dict[str, Any] | None = None, args: Iterable[str] = (), *,
               wait_ready: bool = True, name: str = "router") -> Router:
        mdir = self.work_dir / self._unique(f"manifests-{name}")
        mdir.mkdir(parents=True)
        # Write the manifests before starting so the first full load sees them all.
        for fname, docs in (manifests or {}).items():
            p = mdir / fname
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(to_yaml(docs))
        r = Router(self, mdir, list(args), self._unique(name))
        if wait_ready:
            r.wait_ready()
        return r

    def close(self) -> None:
        for p in reversed(self.procs):
            p.kill()

    def describe(self) -> str:
        return "\n\n".join(p.describe() for p in self.procs)


def dead_endpoint(host: str = LOOPBACK) -> Endpoint:
    """An address:port nobody listens on (connection refused)."""
    return Endpoint(host, free_port(host), True, "dead")


# --------------------------------------------------------------------------- minimal h2c client


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _hpack_literal(name: str, value: str) -> bytes:
    """Literal header field without indexing, new name, no Huffman (RFC 7541 §6.2.2)."""
    n, v = name.encode(), value.encode()
    return b"\x00" + _hpack_int(len(n), 7) + n + _hpack_int(len(v), 7) + v


def _h2_frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + stream.to_bytes(4, "big") + payload


def h2c_multiplex(port: int, paths: list[str], authority: str = "localhost", timeout: float = 15.0) -> dict[str, dict]:
    """Send all ``paths`` as concurrent streams on ONE h2c (prior knowledge) connection.

    curl 7.88 cannot reuse a prior-knowledge connection (curl/curl#10634), hence this
    hand-rolled client. Returns {path: {"status_200": bool, "body": bytes}}; the status is
    only recognised when encoded as the static-table entry ``:status: 200`` (0x88), which is
    what every HPACK encoder emits for it.
    """
    sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
    try:
        out = bytearray(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        out += _h2_frame(0x4, 0, 0)  # SETTINGS (defaults)
        streams: dict[int, str] = {}
        for i, path in enumerate(paths):
            sid = 1 + 2 * i
            streams[sid] = path
            block = (_hpack_literal(":method", "GET") + _hpack_literal(":scheme", "http")
                     + _hpack_literal(":authority", authority) + _hpack_literal(":path", path))
            out += _h2_frame(0x1, 0x4 | 0x1, sid, block)  # HEADERS, END_HEADERS|END_STREAM
        sock.sendall(bytes(out))
        results = {p: {"status_200": False, "body": b"", "done": False} for p in paths}
        buf = b""
        deadline = time.monotonic() + timeout
        while not all(r["done"] for r in results.values()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"h2c streams not finished: {results}")
            while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], "big"):
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"h2c connection closed early: {results}")
                buf += chunk
            length = int.from_bytes(buf[:3], "big")
            ftype, flags, sid = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            payload, buf = buf[9:9 + length], buf[9 + length:]
            if ftype == 0x4 and not flags & 0x1:      # SETTINGS → ACK
                sock.sendall(_h2_frame(0x4, 0x1, 0))
            elif ftype == 0x6 and not flags & 0x1:    # PING → PONG
                sock.sendall(_h2_frame(0x6, 0x1, 0, payload))
            elif ftype == 0x7:                        # GOAWAY
                raise ConnectionError(f"GOAWAY {payload!r}: {results}")
            elif ftype == 0x3:                        # RST_STREAM
                raise ConnectionError(f"RST_STREAM on stream {sid} ({streams.get(sid)})")
            elif ftype in (0x1, 0x0) and sid in streams:
                r = results[streams[sid]]
                data = payload
                if flags & 0x8:                       # PADDED
                    data = data[1:len(data) - data[0]]
                if ftype == 0x1:
                    if flags & 0x20:                  # PRIORITY
                        data = data[5:]
                    r["status_200"] = r["status_200"] or data[:1] == b"\x88"
                else:
                    r["body"] += data
                    if data:  # give the window back so large bodies never stall
                        inc = len(payload).to_bytes(4, "big")
                        sock.sendall(_h2_frame(0x8, 0, 0, inc) + _h2_frame(0x8, 0, sid, inc))
                if flags & 0x1:
                    r["done"] = True
        return results
    finally:
        sock.close()
