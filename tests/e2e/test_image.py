"""The container image (Containerfile, built offline by scripts/build-image.sh) runs both tiers the
way the Helm chart runs them: read-only root filesystem, UID/GID 65532, every capability dropped,
no-new-privileges, a tmpfs at /tmp (the chart's emptyDir), the manifests mounted read-only.

With podman on the host network, on loopback ports chosen here: echo backends on the host, a
router container and a tls-edge container from the image, one manifest directory for both.
Checked: the migration story through both tiers (component path → component, unclaimed path →
legacy fallback, HTTPS via the edge with the example CA → router → component), /readyz, the
process's user, capabilities and no-new-privs as the kernel sees them, writes refused outside
/tmp, nothing written to the container's filesystem, the image's file tree and config, and
SIGTERM (podman stop) ending each tier cleanly with exit code 0.

podman missing: skipped on a developer's machine, a failure in CI (CI=true); scripts/setup.sh
installs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from e2e_lib import (LOOPBACK, REPO, STARTUP_TIMEOUT, Endpoint, backend_objects, free_port, http_path,
                     http_request, ingress, json_log_lines, port_open, require_binary, rule, to_yaml,
                     wait_until)
from edge_support import curl_https, edge_ingress

TAG = f"localhost/tandem:e2e-{os.getpid()}"   # own tag: concurrent runs never untag each other's
BRANDED = "branded-domain.example.com"
EXAMPLES = REPO / "examples" / "ingress"
CA = EXAMPLES / "example-ca.crt"
COMPONENT_PATH = "/api/example-service/"

# What podman itself puts into a container's filesystem (mount points and the files it
# bind-mounts); `podman diff` may list these, and nothing else.
PODMAN_MOUNT_POINTS = {"/etc", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/etc/mtab", "/run",
                       "/run/.containerenv", "/dev", "/proc", "/sys", "/tmp", "/manifests"}
# The image's whole file tree (scripts/image-rootfs.sh).
IMAGE_FILES = {"/usr/local/bin/router", "/usr/local/bin/tls-edge", "/etc/passwd", "/etc/group",
               "/etc/nsswitch.conf", "/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libc.so.6",
               "/lib/x86_64-linux-gnu/libm.so.6", "/lib/x86_64-linux-gnu/libgcc_s.so.1"}


def podman_env() -> dict:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(REPO / "scripts" / "containers.conf"))
    return env


def podman(*args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                          env=podman_env(), stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} -> exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def image():
    """Builds the image from the binaries under test with scripts/build-image.sh."""
    if shutil.which("podman") is None:
        msg = "podman not found (scripts/setup.sh installs podman and runc)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    bin_dir = require_binary("router").parent
    require_binary("tls-edge")
    t0 = time.monotonic()
    proc = subprocess.run([str(REPO / "scripts" / "build-image.sh"), "--bin-dir", str(bin_dir), "--tag", TAG],
                          capture_output=True, text=True, timeout=600, env=podman_env(), stdin=subprocess.DEVNULL)
    took = time.monotonic() - t0
    assert proc.returncode == 0, f"build-image.sh failed:\n{proc.stdout}\n{proc.stderr}"
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith(f"image: {TAG} "), proc.stdout
    size = int(last.split()[3])
    print(f"\n[image] {TAG} from {bin_dir}: {size / 1e6:.1f} MB, built in {took:.1f} s")
    yield TAG
    podman("rmi", TAG, check=False)   # untags; the layers stay cached if another tag shares them


class Container:
    """One container of the image, started the way the chart runs it."""

    def __init__(self, image: str, tier: str, manifests: Path, args: list[str], admin_port: int):
        self.tier = tier
        self.admin_port = admin_port
        self.name = f"tandem-e2e-{tier}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.argv = ["run", "-d", "--name", self.name, "--net=host",
                     "--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,size=16m,mode=1777",
                     "--user", "65532:65532", "--cap-drop=ALL", "--security-opt", "no-new-privileges",
                     "-v", f"{manifests}:/manifests:ro",
                     image, f"/usr/local/bin/{tier}", "--manifests", "/manifests",
                     "--admin-listen", f"{LOOPBACK}:{admin_port}",
                     "--shutdown-delay", "0s", "--shutdown-grace", "1s", *args]
        podman(*self.argv)

    def inspect(self) -> dict:
        return json.loads(podman("inspect", self.name).stdout)[0]

    def running(self) -> bool:
        return bool(self.inspect()["State"]["Running"])

    def host_pid(self) -> int:
        return int(self.inspect()["State"]["Pid"])

    def logs(self) -> str:
        p = podman("logs", self.name, check=False)
        return p.stdout + p.stderr

    def diff(self) -> set[tuple[str, str]]:
        out = podman("diff", self.name).stdout
        return {tuple(line.split(None, 1)) for line in out.splitlines() if line.strip()}

    def readyz(self) -> int | None:
        try:
            return http_request(self.admin_port, "/readyz", timeout=2).status
        except OSError:
            return None

    def wait_ready(self, *ports: int) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.readyz() == 200 and all(port_open(p) for p in ports):
                return
            if not self.running():
                pytest.fail(f"{self.tier} container exited early:\n{self.describe()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.tier} container not ready within {STARTUP_TIMEOUT} s:\n{self.describe()}")
            time.sleep(0.1)

    def describe(self) -> str:
        return f"podman {' '.join(self.argv)}\n--- podman logs {self.name} (tail) ---\n" + \
            "\n".join(self.logs().splitlines()[-40:])

    def remove(self) -> None:
        podman("rm", "-f", "-t", "0", self.name, check=False, timeout=30)


@pytest.fixture(scope="module")
def stack(image, module_env, request):
    """Echo backends on the host; a router and a tls-edge container sharing one manifest dir."""
    legacy = module_env.echo("legacy-fallback", "legacy-1")
    component = module_env.echo("example-service", "example-service-1")
    router_http, router_admin = free_port(), free_port()
    edge_https, edge_http, edge_admin = free_port(), free_port(), free_port()

    # Written by the test, readable by UID 65532 (pytest's tmp dirs are 0700).
    mdir = module_env.work_dir / "manifests"
    mdir.mkdir()
    mdir.chmod(0o755)
    router_service = backend_objects("routing-ingress-controller", [Endpoint(LOOPBACK, router_http)],
                                     mode="endpoints")
    # The router speaks h2c; said the Kubernetes way, which the edge follows.
    router_service[0]["spec"]["ports"][0]["appProtocol"] = "kubernetes.io/h2c"
    files = {
        "ingressclass.yaml": (EXAMPLES / "ingressclass.yaml").read_text(),
        "legacy-fallback.yaml": [*backend_objects("legacy-fallback", [legacy], mode="endpoints"),
                                 ingress("legacy-fallback", [rule(None, http_path("/", "legacy-fallback", "http"))])],
        "example-service.yaml": [*backend_objects("example-service", [component], mode="slice", port_name="api"),
                                 ingress("example-service",
                                         [rule(None, http_path(COMPONENT_PATH, "example-service", "api"))])],
        # the example Secret: its certificate is signed by examples/ingress/example-ca.crt
        "branded-domain-tls.yaml": (EXAMPLES / "branded-domain-tls.yaml").read_text(),
        "branded-domain.yaml": [edge_ingress(BRANDED, [([BRANDED], BRANDED)], "routing-ingress-controller", 80),
                                *router_service],
    }
    for fname, docs in files.items():
        (mdir / fname).write_text(to_yaml(docs))
        (mdir / fname).chmod(0o644)

    containers: list[Container] = []
    failed_before = request.session.testsfailed
    try:
        router = Container(image, "router", mdir, ["--http-listen", f"{LOOPBACK}:{router_http}",
                                                   "--trusted-proxies", "127.0.0.1/32"], router_admin)
        containers.append(router)
        router.http_port = router_http
        edge = Container(image, "tls-edge", mdir, ["--https-listen", f"{LOOPBACK}:{edge_https}",
                                                   "--http-listen", f"{LOOPBACK}:{edge_http}",
                                                   "--redirect-https-port", str(edge_https)], edge_admin)
        containers.append(edge)
        edge.https_port, edge.http_port = edge_https, edge_http
        router.wait_ready(router_http)
        edge.wait_ready(edge_http)
        # the TLS listener, probed with a real handshake (a bare TCP probe is logged as an error)
        wait_until(lambda: curl_https(edge_https, BRANDED, "/", cacert=str(CA), check=False).status == 200,
                   STARTUP_TIMEOUT, interval=0.1, desc="tls-edge answering HTTPS")
        # right after start: podman's own mount points; the process must add nothing to them
        router.diff_at_start, edge.diff_at_start = router.diff(), edge.diff()
        router.startup_logs, edge.startup_logs = router.logs(), edge.logs()
        yield {"router": router, "edge": edge, "legacy": legacy, "component": component}
    finally:
        for c in containers:
            if request.session.testsfailed > failed_before:
                with contextlib.suppress(Exception):
                    print(f"\n==== container of failed test ====\n{c.describe()}")
            c.remove()
        for c in containers:
            gone = podman("container", "exists", c.name, check=False).returncode != 0
            assert gone, f"container {c.name} still exists after podman rm -f"


# --------------------------------------------------------------------------- tests


def test_image_file_tree_and_config(image):
    info = json.loads(podman("image", "inspect", image).stdout)[0]
    cfg = info["Config"]
    assert cfg["User"] == "65532:65532"
    assert set(cfg["ExposedPorts"]) == {"8080/tcp", "8443/tcp", "10254/tcp"}
    assert cfg["Labels"]["org.opencontainers.image.title"] == "tandem"
    assert len(info["RootFS"]["Layers"]) == 1, "one layer: the file tree, nothing else"
    mount = podman("image", "mount", image).stdout.strip()
    try:
        root = Path(mount)
        files = {"/" + str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()}
        assert files == IMAGE_FILES, f"unexpected image content: {sorted(files ^ IMAGE_FILES)}"
        for b in ("router", "tls-edge"):
            assert os.access(root / "usr/local/bin" / b, os.X_OK)
        assert (root / "tmp").is_dir() and (root / "tmp").stat().st_mode & 0o1777 == 0o1777
        assert not (root / "bin").exists() and not (root / "usr/bin").exists(), "no shell, no tools"
        passwd = (root / "etc/passwd").read_text()
        assert "nonroot:x:65532:65532:" in passwd
    finally:
        podman("image", "unmount", image, check=False)


def test_router_routes_component_and_legacy_fallback(stack):
    router = stack["router"]
    r = http_request(router.http_port, "/api/example-service/orders?id=7")
    assert r.status == 200 and r.service == "example-service", r
    assert r.json()["path"] == "/api/example-service/orders?id=7"
    r = http_request(router.http_port, "/shop/cart")
    assert r.status == 200 and r.service == "legacy-fallback", r


def test_edge_tls_to_router_to_component(stack):
    edge = stack["edge"]
    r = curl_https(edge.https_port, BRANDED, "/api/example-service/orders?via=edge", cacert=str(CA))
    assert r.status == 200 and r.service == "example-service", r
    h = r.json()["headers"]
    assert h["x-forwarded-proto"] == "https" and h["x-real-ip"] == LOOPBACK, h
    # the edge → router hop is h2c, as the router Service port's appProtocol says
    def router_saw():
        return [e for e in json_log_lines(stack["router"].logs().splitlines())
                if e.get("path") == "/api/example-service/orders?via=edge"]
    entry = wait_until(router_saw, 5, interval=0.1, desc="router access log of the edge's request")[-1]
    assert entry.get("proto") == "HTTP/2.0" and entry.get("service") == "example-service", entry
    r = curl_https(edge.https_port, BRANDED, "/shop", cacert=str(CA), http2=True)
    assert r.status == 200 and r.service == "legacy-fallback" and r.http_version == "2", r
    # the edge's plain listener redirects the branded host to HTTPS
    r = http_request(edge.http_port, "/shop", host=BRANDED)
    assert r.status == 308 and r.header("location") == f"https://{BRANDED}:{edge.https_port}/shop", r


def test_readyz_on_both_tiers_and_a_quiet_start(stack):
    for c in (stack["router"], stack["edge"]):
        assert c.readyz() == 200, c.describe()
        assert http_request(c.admin_port, "/healthz").status == 200
        # Nothing the image lacks (CA bundle, user database, timezone data, ...) is complained
        # about: no warning or error from start-up to ready and a first request.
        noisy = [line for line in c.startup_logs.splitlines()
                 if '"level":"WARN"' in line or '"level":"ERROR"' in line]
        assert not noisy, f"{c.tier} start-up:\n" + "\n".join(noisy)
        assert "source=/manifests" in c.startup_logs or '"source":"/manifests"' in c.startup_logs, \
            c.startup_logs[-2000:]


def test_runs_as_65532_without_privileges(stack):
    for c in (stack["router"], stack["edge"]):
        pid = c.host_pid()
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        assert status["Uid"].split() == ["65532"] * 4, status["Uid"]
        assert status["Gid"].split() == ["65532"] * 4, status["Gid"]
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(status[cap], 16) == 0, f"{c.tier}: {cap}={status[cap].strip()}"
        assert status["NoNewPrivs"].strip() == "1"
        # podman's view: the tier's binary is PID 1 of the container, as user nonroot (65532)
        top = podman("top", c.name, "pid", "user", "huser", "capeff", "args").stdout.splitlines()
        assert len(top) == 2, top
        fields = top[1].split()
        assert fields[:4] == ["1", "nonroot", "65532", "none"], top
        assert fields[4] == f"/usr/local/bin/{c.tier}", top
        assert c.inspect()["HostConfig"]["ReadonlyRootfs"] is True


def test_root_filesystem_read_only_only_tmp_writable(stack):
    for c in (stack["router"], stack["edge"]):
        root = Path(f"/proc/{c.host_pid()}/root")
        # Even root on the host, going through the container's mount namespace, cannot write.
        for target in ("probe", "etc/probe", "usr/local/bin/probe", "manifests/probe"):
            with pytest.raises(OSError) as exc:
                (root / target).write_text("x")
            assert exc.value.errno == 30, f"{c.tier}: writing /{target}: {exc.value!r} (want EROFS)"
        probe = root / "tmp" / "probe"
        probe.write_text("x")
        probe.unlink()


def test_nothing_written_and_clean_shutdown(stack):
    """Last: stops both containers with `podman stop` (SIGTERM, what the kubelet sends too)."""
    router, edge = stack["router"], stack["edge"]
    # traffic through both tiers first, so anything the process might write has happened
    for _ in range(20):
        r = curl_https(edge.https_port, BRANDED, "/api/example-service/x", cacert=str(CA))
        assert r.status == 200, r

    took = {}
    for c in (edge, router):
        t0 = time.monotonic()
        podman("stop", "--time", "10", c.name)   # SIGTERM; SIGKILL only after 10 s
        took[c.tier] = time.monotonic() - t0
    print(f"\n[image] stopped by SIGTERM in: tls-edge {took['tls-edge']:.2f} s, router {took['router']:.2f} s")

    for c in (edge, router):
        state = c.inspect()["State"]
        assert state["ExitCode"] == 0 and not state.get("OOMKilled"), f"{c.tier}: {state}\n{c.describe()}"
        logs = c.logs()
        assert "SIGTERM: readiness off" in logs and "drained; exiting" in logs, c.describe()
        diff = c.diff()
        assert diff == c.diff_at_start, f"{c.tier} wrote to its filesystem: {sorted(diff - c.diff_at_start)}"
        assert {path for _, path in diff} <= PODMAN_MOUNT_POINTS, f"{c.tier}: podman diff {sorted(diff)}"
        # --shutdown-delay 0s --shutdown-grace 1s: well before podman's 10 s SIGKILL
        assert took[c.tier] < 5, f"{c.tier} took {took[c.tier]:.1f} s to stop"
    assert not port_open(router.http_port) and not port_open(edge.https_port)
