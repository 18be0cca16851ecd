"""The README's first command, checked: scripts/demo.sh --check starts both tiers and the example
backends from examples/ingress/ on their fixed loopback ports and verifies its curl lines."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO_PORTS = (18000, 18080, 18081, 18100, 18101, 18443, 18880)


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_demo_check_passes():
    busy = [p for p in DEMO_PORTS if _port_busy(p)]
    if busy:
        pytest.fail(f"demo ports already in use by something else: {busy}")
    env = dict(os.environ, CARGO_TERM_QUIET="true")
    proc = subprocess.run(
        [str(REPO / "scripts" / "demo.sh"), "--check"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for line in ("ok   migrated path -> example-service",
                 "ok   unclaimed path -> legacy fallback",
                 "ok   edge -> router -> example-service",
                 "ok   edge -> router -> legacy, client IP kept",
                 "ok   plain HTTP redirected"):
        assert line in out, out[-4000:]
    # Everything it started is gone again.
    assert not [p for p in DEMO_PORTS if _port_busy(p)]
