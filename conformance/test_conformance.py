"""Every case of every scenario file (``scenarios/*.yaml``) against the real binaries on loopback,
on the three set-ups: router alone, edge alone, edge -> router. A case that tandem answers
differently on purpose (``deviates`` in its file) passes only if the documented answer holds."""

from __future__ import annotations

import pytest

from harness import SETUPS, load_all, run_case

SCENARIOS = load_all()


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        params = [pytest.param(scn, setup, case, id=f"{scn.id}/{setup}/{case.id}")
                  for scn in SCENARIOS for setup in SETUPS for case in scn.cases]
        metafunc.parametrize("scn,setup,case", params)


def test_case(scn, setup, case, deployments, results):
    running = deployments.get(scn, setup)
    errs, reason, figures = run_case(case, setup, running.target, namespace=scn.namespace,
                                     fingerprints=running.fingerprints)
    outcome = "fail" if errs else ("deviates" if reason else "pass")
    results.append({"scenario": scn.id, "feature": scn.feature, "case": case.name, "setup": setup,
                    "outcome": outcome, "reason": reason, **figures})
    if errs:
        pytest.fail(f"{scn.path.name} / {setup} / {case.name}:\n  " + "\n  ".join(errs)
                    + "\n\n" + deployments.describe(), pytrace=False)
    if figures.get("pods"):
        print(f"\n[{scn.id}/{setup}/{case.id}] {figures['requests']} requests in {figures['seconds']:.2f}s, "
              f"per pod: {sorted(figures['pods'].values())}")


def test_every_feature_area_is_covered():
    areas = {s.feature for s in SCENARIOS}
    assert {"Default backend", "Host rules", "Ingress class", "Load balancing", "Path rules"} <= areas, areas
    assert sum(len(s.cases) for s in SCENARIOS) >= 40
