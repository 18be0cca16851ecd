"""A host's TLS Secret rewritten with a fresh certificate every 100 ms for 30 s while TLS load
runs against the edge (a full handshake per request, SNI = the host, verified against the test
CA): zero failed handshakes or requests, every handshake presents one of the issued
certificates, and after the last rotation new handshakes get the last one within the SLA."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from e2e_lib import MEASURE_SLACK, RELOAD_SLA, backend_objects
from edge_support import Pki, cert_secret, edge_ingress, start_edge, wait_fingerprint
from rel_support import Load

HOST = "rotate.example.com"
SECRET = "rotate-tls"
CERTS = 10
ROTATE_EVERY = 0.1       # seconds
ROTATE_FOR = 30.0        # seconds
LOAD_THREADS = 3
LOAD_MAX_REQUESTS = 30_000


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    pki = Pki(tmp_path_factory.mktemp("pki"))
    return pki, [pki.leaf(f"c{i}", [HOST], cn=f"rotate {i}") for i in range(CERTS)]


def test_certificate_rotated_every_100ms_under_tls_load(env, certs):
    pki, issued = certs
    names = {c.fingerprint: c.name for c in issued}
    echo = env.echo("echo")
    edge = start_edge(env, {
        "backend.yaml": backend_objects("echo", [echo]),
        "ingress.yaml": edge_ingress("rotate", [([HOST], SECRET)], "echo"),
        "secret.yaml": cert_secret(SECRET, issued[0]),
    })
    wait_fingerprint(edge.https_port, HOST, issued[0].fingerprint)

    seen: Counter = Counter()
    seen_lock = threading.Lock()

    def on_conn(conn):
        fp = conn.peer_fingerprint()
        with seen_lock:
            seen[names.get(fp, f"UNKNOWN {fp}")] += 1

    load = Load(edge.https_port, [("/rotate", "echo")], threads=LOAD_THREADS, max_seconds=ROTATE_FOR + 5,
                max_requests=LOAD_MAX_REQUESTS, tls=(HOST, pki.ca_path), fresh=True, on_conn=on_conn).start()
    rotations = 0
    late = []
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < ROTATE_FOR:
            due = t0 + (rotations + 1) * ROTATE_EVERY
            time.sleep(max(0.0, due - time.monotonic()))
            late.append(time.monotonic() - due)
            rotations += 1
            t_last = edge.write_secret("secret.yaml", cert_secret(SECRET, issued[rotations % CERTS]))
    finally:
        load.stop()
    rotated_for = t_last - t0
    last = issued[rotations % CERTS]
    wait_fingerprint(edge.https_port, HOST, last.fingerprint, timeout=10)
    settle = time.monotonic() - t_last

    print(f"\ncertificate rotation: {rotations} rewrites of {SECRET} in {rotated_for:.1f} s "
          f"(writer late by at most {max(late) * 1000:.0f} ms); {load.connections} handshakes, {load.summary()}")
    print(f"certificates seen by handshakes: {dict(sorted(seen.items()))}; last one served at most {settle * 1000:.0f} ms "
          f"after the final rewrite (load stopped first)")
    assert edge.proc.alive()
    assert not load.failures, f"{len(load.failures)} failed handshakes/requests: {load.failures[:10]}"
    unknown = [k for k in seen if k.startswith("UNKNOWN")]
    assert not unknown, f"handshakes presented certificates that were never issued: {unknown}"
    assert load.connections >= 100 and sum(seen.values()) == load.connections
    assert len(seen) >= CERTS // 2, f"rotation barely reached the handshakes: {dict(seen)}"
    assert settle <= RELOAD_SLA + MEASURE_SLACK
