"""Fixtures for tandem's end-to-end tests; the helpers live in e2e_lib.py."""

from __future__ import annotations

import pytest

from e2e_lib import BIN_DIR, MEASURE_SLACK, RELOAD_SLA, Env


@pytest.fixture
def env(tmp_path, request):
    e = Env(tmp_path)
    yield e
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        print("\n==== processes of failed test ====\n" + e.describe())
    e.close()


@pytest.fixture(scope="module")
def module_env(tmp_path_factory, request):
    e = Env(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    yield e
    e.close()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def pytest_report_header(config):
    return [f"tandem e2e: TANDEM_BIN_DIR={BIN_DIR} reload SLA={RELOAD_SLA}s (+{MEASURE_SLACK}s measurement slack)"]

