"""The harness itself: scenario files that are wrong are refused, and every kind of expectation
fails when the answer differs (a checker that cannot fail would make every run green)."""

from __future__ import annotations

import pytest
import yaml

from harness import Case, ScenarioError, load, run_case

INGRESS = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress"}


def rule(host, svc):
    return {"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix",
                                              "backend": {"service": {"name": svc, "port": {"number": 8080}}}}]}}


SELFTEST = {
    "feature": "Self-test",
    "namespace": "selftest",
    "tls": [{"secret": "one-tls", "hosts": ["one.test"]}, {"secret": "two-tls", "hosts": ["two.test"]}],
    "objects": [
        {**INGRESS, "metadata": {"name": "one"},
         "spec": {"tls": [{"hosts": ["one.test"], "secretName": "one-tls"}], "rules": [rule("one.test", "a")]}},
        {**INGRESS, "metadata": {"name": "two"},
         "spec": {"tls": [{"hosts": ["two.test"], "secretName": "two-tls"}], "rules": [rule("two.test", "b")]}},
    ],
    "backends": [{"name": "a", "replicas": 2}, {"name": "b"}],
}

# (case, set-ups it runs on, the failure message it must produce)
WRONG = [
    ({"request": {"host": "one.test"}, "expect": {"status": 200, "service": "b"}},
     ["router"], "served by selftest/a, expected selftest/b"),
    ({"request": {"host": "one.test"}, "expect": {"status": 200, "service": "a", "namespace": "elsewhere"}},
     ["router"], "expected elsewhere/a"),
    ({"request": {"host": "one.test"}, "expect": {"status": 200, "service": "a", "ingress": "two"}},
     ["router"], "served through Ingress one, expected two"),
    ({"request": {"host": "none.test"}, "expect": {"status": 200}}, ["router"], "status 404, expected 200"),
    ({"request": {"host": "one.test"}, "expect": {"status": 404}},
     ["router"], "a 200 must come from the controller"),
    ({"request": {"host": "one.test"}, "expect": {"status": 200, "request": {"headers": {"X-Absent": "*"}}}},
     ["router"], "request header X-Absent"),
    ({"request": {"host": "one.test", "path": "/p"}, "expect": {"status": 200, "request": {"path": "/q"}}},
     ["router"], "request path '/p', expected '/q'"),
    ({"request": {"host": "one.test"}, "expect": {"status": 200, "response": {"headers": {"X-Nope": "*"}}}},
     ["router"], "response header X-Nope"),
    ({"request": {"host": "one.test", "repeat": 4}, "expect": {"status": 200, "distinct_pods": 3}},
     ["router"], "2 distinct pods answered, expected 3"),
    ({"request": {"scheme": "https", "host": "one.test"}, "expect": {"status": 200}},
     ["router"], "request failed"),
    ({"request": {"host": "one.test"}, "expect": {"status": 200, "service": "a"}},
     ["edge"], "unexpected redirects [(308"),
    ({"request": {"host": "one.test"}, "expect": {"redirect": 301, "status": 200}},
     ["edge"], "expected redirect 301"),
    ({"request": {"scheme": "https", "host": "one.test"},
      "expect": {"status": 200, "tls": {"hostname": "one.test", "secret": "two-tls"}}},
     ["edge"], "certificate is not the one of Secret selftest/two-tls"),
    ({"request": {"scheme": "https", "host": "unknown.test"}, "expect": {"status": 404, "tls": {"hostname": "unknown.test"}}},
     ["edge"], "chain/hostname not verified"),
    ({"request": {"scheme": "https", "host": "one.test"}, "expect": {"tls_refused": True}},
     ["edge"], "a TLS handshake succeeded"),
]


@pytest.fixture(scope="module")
def selftest(tmp_path_factory):
    doc = dict(SELFTEST, cases=[dict(c, name=f"wrong {i}") for i, (c, _, _) in enumerate(WRONG)])
    path = tmp_path_factory.mktemp("selftest") / "selftest.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load(path)


@pytest.mark.parametrize("i", range(len(WRONG)), ids=[w[2][:40] for w in WRONG])
def test_a_wrong_expectation_fails(selftest, deployments, i):
    _, setups, message = WRONG[i]
    case = selftest.cases[i]
    for setup in setups:
        running = deployments.get(selftest, setup)
        errs, _, _ = run_case(case, setup, running.target, namespace=selftest.namespace,
                              fingerprints=running.fingerprints)
        assert any(message in e for e in errs), f"{setup}: expected a failure containing {message!r}, got {errs}"


def test_the_right_expectations_hold(selftest, deployments):
    """The same deployment answers the correct expectations (so the failures above are the
    checker's, not a broken deployment's)."""
    good = Case("good", "good", **{"request": {"scheme": "https", "host": "two.test", "path": "/p"},
                                "expect": {"status": 200, "service": "b", "ingress": "two",
                                           "tls": {"hostname": "two.test", "secret": "two-tls"},
                                           "request": {"path": "/p", "host": "two.test"}}})
    running = deployments.get(selftest, "edge")
    errs, _, _ = run_case(good, "edge", running.target, namespace="selftest", fingerprints=running.fingerprints)
    assert errs == []


BAD_FILES = [
    ({"feature": "x", "cases": [{"name": "a", "request": {}, "expect": {"status": 404}}], "extra": 1},
     "unknown keys ['extra']"),
    ({"feature": "x", "cases": []}, "no cases"),
    ({"feature": "x", "objects": [{**INGRESS, "metadata": {"name": "i"}, "spec": {"rules": [rule("h", "s")]}}],
      "cases": [{"name": "a", "expect": {"status": 404}}]}, "Service conformance/s is referenced but not in backends"),
    ({"feature": "x", "objects": [{**INGRESS, "metadata": {"name": "i"}, "spec": {"rules": [rule("h", "s")]}},
                                  {**INGRESS, "metadata": {"name": "j"}, "spec": {"rules": [rule("g", "s")]}}],
      "backends": [{"name": "s"}], "cases": [{"name": "a", "expect": {"status": 404}}]}, "say which Ingress"),
    ({"feature": "x", "cases": [{"name": "a", "expect": {"status": 404},
                                 "deviates": {"router": {"expect": {"status": 200}}}}]}, "without a reason"),
    ({"feature": "x", "cases": [{"name": "a", "expect": {"stauts": 404}}]}, "unknown expect keys ['stauts']"),
    ({"feature": "x", "cases": [{"name": "a", "expect": {"status": 404}, "per_setup": {"nginx": {}}}]},
     "unknown set-up 'nginx'"),
    ({"feature": "x", "objects": [{**INGRESS, "metadata": {"name": "i"},
                                   "spec": {"tls": [{"hosts": ["h"], "secretName": "nope"}], "rules": [rule("h", "s")]}}],
      "backends": [{"name": "s"}], "cases": [{"name": "a", "expect": {"status": 404}}]}, "names Secret conformance/nope"),
]


@pytest.mark.parametrize("doc,message", BAD_FILES, ids=[m[:30] for _, m in BAD_FILES])
def test_a_wrong_scenario_file_is_refused(tmp_path, doc, message):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(ScenarioError) as e:
        load(p)
    assert message in str(e.value)
