"""Measurements through the fake API server (run in the default suite; figures printed with -s):

* memory (VmRSS / VmHWM from /proc) of ``router`` and ``tls-edge`` with 10,000 router Ingresses,
  10,000 edge Ingresses and 10,000 ``kubernetes.io/tls`` Secrets loaded through LIST pagination,
  against the same binaries with a near-empty store;
* time from a watch event (an Ingress created in the fake) to the new route being served by the
  loaded router, p50/p99 over 100 changes.

Only loose sanity bounds are asserted; the figures are the point.
"""

from __future__ import annotations

import base64
import os
import ssl
import subprocess
import time
from pathlib import Path

from api_support import (EDGE_CLASS, ROUTER_CLASS, percentile, poll_served, rss_kib, start_api_edge,
                         start_router)
from api_support import FakeCluster
from e2e_lib import backend_objects, http_path, ingress, ingress_class, rule

N_INGRESSES = int(os.environ.get("TANDEM_MEASURE_INGRESSES", "10000"))
N_SECRETS = int(os.environ.get("TANDEM_MEASURE_SECRETS", "10000"))
N_CERTS = 50
# Changes measured on the small-store router (>= 100 for p99), and on the loaded one (~20k
# Ingresses; a change re-translates only the Ingress and hosts it touches, but a debug build is
# still slow at this size), so only a few by default unless the binaries are a release build.
_RELEASE = "release" in os.environ.get("TANDEM_BIN_DIR", "")
N_CHANGES = int(os.environ.get("TANDEM_MEASURE_CHANGES", "100"))
N_LOADED_CHANGES = int(os.environ.get("TANDEM_MEASURE_LOADED_CHANGES", "100" if _RELEASE else "8"))


def make_certs(work: Path, n: int) -> list[tuple[str, str]]:
    """n self-signed ECDSA P-256 cert/key pairs for *.gK.edge.example (K = 0..n-1), made in parallel."""
    work.mkdir(parents=True, exist_ok=True)
    procs = []
    for k in range(n):
        key, crt = work / f"{k}.key", work / f"{k}.crt"
        procs.append((key, crt, subprocess.Popen(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-days", "30", "-subj", f"/CN=g{k}.edge.example", "-keyout", str(key), "-out", str(crt),
             "-addext", f"subjectAltName=DNS:*.g{k}.edge.example"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
    out = []
    for key, crt, p in procs:
        assert p.wait(timeout=60) == 0, p.stderr.read()
        out.append((crt.read_text(), key.read_text()))
    return out


def base(env, fc):
    legacy, a, b = env.echo("legacy"), env.echo("svc-a"), env.echo("svc-b")
    fc.put(ingress_class(ROUTER_CLASS))
    fc.put(ingress_class(EDGE_CLASS, controller="tandem.dev/tls-edge"))
    fc.put_many(backend_objects("legacy", [legacy], mode="endpoints"))
    fc.put_many(backend_objects("svc-a", [a]))
    fc.put_many(backend_objects("svc-b", [b]))
    fc.put(ingress("legacy-fallback", [rule(None, http_path("/", "legacy"))]))


def bulk(fc, certs):
    def router_ing(i):
        return ingress(f"r-{i:05d}", [rule(f"r{i}.example", http_path("/", "svc-a"),
                                           http_path(f"/api/{i}", "svc-b"))],
                       created="2024-01-01T00:00:00Z")

    def edge_ing(i):
        host = f"h{i}.g{i % N_CERTS}.edge.example"
        d = ingress(f"e-{i:05d}", [rule(host, http_path("/", "svc-a"))], class_name=EDGE_CLASS,
                    created="2024-01-01T00:00:00Z")
        d["spec"]["tls"] = [{"hosts": [host], "secretName": f"tls-{i:05d}"}]
        return d

    b64 = [(base64.b64encode(c.encode()).decode(), base64.b64encode(k.encode()).decode()) for c, k in certs]

    def secret(i):
        c, k = b64[i % N_CERTS]
        return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": f"tls-{i:05d}", "namespace": "default"},
                "data": {"tls.crt": c, "tls.key": k}}

    fc.put_many(router_ing(i) for i in range(N_INGRESSES))
    fc.put_many(edge_ing(i) for i in range(N_SECRETS))
    fc.put_many(secret(i) for i in range(N_SECRETS))


def mem(proc) -> str:
    m = rss_kib(proc.pid)
    return f"VmRSS {m['VmRSS'] / 1024:.1f} MiB (peak {m['VmHWM'] / 1024:.1f} MiB)"


def latencies(fc, router, n: int, prefix: str) -> list[float]:
    """Create ``n`` Ingresses one by one; seconds from each put to its route being served."""
    out = []
    for i in range(n):
        t0 = time.monotonic()
        fc.put(ingress(f"{prefix}-{i}", [rule(None, http_path(f"/{prefix}/{i}", "svc-b"))]))
        out.append(poll_served(router.http_port, f"/{prefix}/{i}/x", "svc-b", timeout=15) - t0)
    return out


def fmt(lat: list[float]) -> str:
    return (f"n={len(lat)} p50 {percentile(lat, 50) * 1000:.0f} ms, p99 {percentile(lat, 99) * 1000:.0f} ms, "
            f"max {max(lat) * 1000:.0f} ms")


def test_memory_and_watch_latency(env, tmp_path):
    t_start = time.monotonic()
    certs = make_certs(tmp_path / "certs", N_CERTS)
    t_certs = time.monotonic() - t_start

    fc = FakeCluster(tmp_path)
    try:
        # -- baseline: near-empty store; watch-event latency measured here over N_CHANGES
        base(env, fc)
        r0 = start_router(env, fc, name="router-empty")
        e0 = start_api_edge(env, fc, name="edge-empty")
        time.sleep(0.3)
        empty = {"router": rss_kib(r0.proc.pid), "edge": rss_kib(e0.proc.pid)}
        e0.proc.kill()
        lat_small = latencies(fc, r0, N_CHANGES, "small")
        r0.proc.kill()

        # -- loaded store: both tiers list it (paginated) concurrently
        t0 = time.monotonic()
        bulk(fc, certs)
        t_gen = time.monotonic() - t0
        n_lists = len(fc.fake.requests(method="GET", watch=False))
        t0 = time.monotonic()
        router = start_router(env, fc, name="router-loaded", wait_ready=False)
        edge = start_api_edge(env, fc, name="edge-loaded", wait_ready=False)
        router.wait_ready(180)
        t_router_ready = time.monotonic() - t0
        edge.wait_ready(180)
        t_edge_ready = time.monotonic() - t0
        time.sleep(0.3)
        loaded = {"router": rss_kib(router.proc.pid), "edge": rss_kib(edge.proc.pid)}
        lists = [r for r in fc.fake.requests(method="GET", watch=False)[n_lists:] if "limit=" in r.path]

        # sanity: the loaded config is really served
        assert router.get("/", host=f"r{N_INGRESSES - 1}.example").service == "svc-a"
        assert router.get(f"/api/{N_INGRESSES // 2}", host=f"r{N_INGRESSES // 2}.example").service == "svc-b"
        from edge_support import peer_cert  # noqa: PLC0415

        k = (N_SECRETS - 1) % N_CERTS
        leaf = peer_cert(edge.https_port, f"h{N_SECRETS - 1}.g{k}.edge.example")
        assert leaf == ssl.PEM_cert_to_DER_cert(certs[k][0]), "wrong certificate served"
        # the edge rebuilds on every Ingress change too; stop it so it does not share the CPU
        edge.proc.kill()
        lat_loaded = latencies(fc, router, N_LOADED_CHANGES, "loaded")
    finally:
        fc.close()

    def mib(d, who, k="VmRSS"):
        return d[who][k] / 1024

    print(f"\n== measurement through the fake API server (binaries: {os.environ.get('TANDEM_BIN_DIR', 'target/debug')})")
    print(f"   objects: {N_INGRESSES} router Ingresses + {N_SECRETS} edge Ingresses + {N_SECRETS} TLS Secrets "
          f"({N_CERTS} distinct EC P-256 certs made in {t_certs:.1f}s; loaded into the fake in {t_gen:.1f}s); "
          f"{len(lists)} paginated LIST requests (limit=500)")
    for who in ("router", "edge"):
        print(f"   {who:6s}: empty store VmRSS {mib(empty, who):.1f} MiB -> loaded VmRSS {mib(loaded, who):.1f} MiB "
              f"(peak {mib(loaded, who, 'VmHWM'):.1f} MiB), delta {mib(loaded, who) - mib(empty, who):.1f} MiB")
    print(f"   ready with the loaded store (started together): router {t_router_ready:.1f}s, tls-edge {t_edge_ready:.1f}s")
    print(f"   watch event -> new route served, small store:  {fmt(lat_small)}")
    print(f"   watch event -> new route served, loaded store: {fmt(lat_loaded)}")
    print(f"   total {time.monotonic() - t_start:.0f}s")
    assert len(lists) >= 2 * (N_INGRESSES // 500), "expected paginated LISTs (limit=500)"
    assert percentile(lat_small, 50) < 1.0
