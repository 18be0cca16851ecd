"""Fixtures for the reliability suite: the end-to-end suite's own (``env``, ``module_env``, the
failed-test process dump), with ``tests/e2e`` on ``sys.path`` so its helpers (``e2e_lib``,
``edge_support``, ``api_support``) and the fake API server are reused, not copied."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

E2E_DIR = Path(__file__).resolve().parents[1] / "e2e"
if str(E2E_DIR) not in sys.path:
    sys.path.insert(0, str(E2E_DIR))

_spec = importlib.util.spec_from_file_location("tandem_e2e_conftest", E2E_DIR / "conftest.py")
_e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_e2e)

env = _e2e.env
module_env = _e2e.module_env
pytest_runtest_makereport = _e2e.pytest_runtest_makereport
