"""pytest wiring for the conformance runs: the end-to-end helpers of ``tests/e2e`` are imported,
not copied; the running processes of one scenario file / set-up are shared by its cases."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))

from e2e_lib import BIN_DIR  # noqa: E402  (needs the paths above)
from local import Deployments  # noqa: E402

RESULTS: list[dict] = []


@pytest.fixture(scope="session")
def deployments(tmp_path_factory):
    d = Deployments(tmp_path_factory.mktemp("conformance"))
    yield d
    d.close()


@pytest.fixture(scope="session")
def results():
    return RESULTS


def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get("TANDEM_CONFORMANCE_RESULTS")
    if not out or not RESULTS:
        return
    repo = HERE.parent

    def git(*args):
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True).stdout.strip()

    Path(out).write_text(json.dumps({
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "binaries": {b: datetime.datetime.fromtimestamp((BIN_DIR / b).stat().st_mtime, datetime.timezone.utc)
                     .strftime("%Y-%m-%d %H:%M UTC") for b in ("router", "tls-edge", "echo-backend")
                     if (BIN_DIR / b).exists()},
        "results": RESULTS,
    }, indent=1))
