"""Merging Ingresses: rules of several Ingresses (and namespaces) merge per host; a
host+path+pathType claimed twice goes to the oldest Ingress (creationTimestamp, then
namespace/name) and the loser is reported in the log; an invalid rule is skipped and
reported while every other rule keeps serving.
"""

from __future__ import annotations

import re

import pytest

from e2e_lib import backend_objects, http_path, ingress, rule

SERVICES = ["svc-a", "svc-b", "svc-c", "old", "new", "tie-a", "tie-b", "good"]
HOST = "merge.test"


@pytest.fixture(scope="module")
def backends(module_env):
    docs = {"default": [], "team": [], "a-ns": [], "b-ns": []}
    for s in SERVICES:
        b = module_env.echo(s)
        for ns in docs:
            docs[ns] += backend_objects(s, [b], namespace=ns)
    return [d for ns_docs in docs.values() for d in ns_docs]


def test_rules_merge_per_host_across_ingresses_and_namespaces(env, backends):
    r = env.router({
        "backends.yaml": backends,
        "a.yaml": ingress("ing-a", [rule(HOST, http_path("/a", "svc-a", 80))]),
        "b.yaml": ingress("ing-b", [rule(HOST, http_path("/b", "svc-b", 80)),
                                    rule("other.test", http_path("/", "svc-b", 80))]),
        "c.yaml": ingress("ing-c", [rule(HOST, http_path("/c", "svc-c", 80, "Exact"))], namespace="team"),
        "d.yaml": ingress("ing-d", [rule(HOST, http_path("/a/deeper", "svc-c", 80))], namespace="team"),
    })
    for path, want in [("/a/1", "svc-a"), ("/b/1", "svc-b"), ("/c", "svc-c"), ("/a/deeper/x", "svc-c")]:
        resp = r.curl(path, host=HOST)
        assert (resp.status, resp.service) == (200, want), f"{HOST}{path}: {resp}"
    assert r.curl("/c/x", host=HOST).status == 404, "Exact /c must not match /c/x"
    assert r.curl("/", host="other.test").service == "svc-b"
    assert r.curl("/a/1", host="other.test").service == "svc-b", "rules of merge.test must not leak to other.test"
    assert r.curl("/a/1", host="third.test").status == 404


def test_conflict_oldest_wins_and_loser_is_reported(env, backends):
    # Names are chosen so that alphabetical order disagrees with age.
    r = env.router({
        "backends.yaml": backends,
        "old.yaml": ingress("zz-old", [rule(HOST, http_path("/dup", "old", 80))], created="2020-01-01T00:00:00Z"),
        "new.yaml": ingress("aa-new", [rule(HOST, http_path("/dup", "new", 80)),
                                       rule(HOST, http_path("/new-only", "new", 80))],
                            created="2023-06-01T00:00:00Z"),
    })
    for _ in range(3):
        resp = r.curl("/dup/x", host=HOST)
        assert (resp.status, resp.service) == (200, "old"), f"the oldest Ingress must win: {resp}"
    assert r.curl("/new-only", host=HOST).service == "new", "the loser's other rules keep serving"
    line = r.wait_log(r"aa-new.*(conflict|zz-old)|(conflict|zz-old).*aa-new", timeout=5,
                      desc="a log line reporting the losing Ingress default/aa-new and the conflict")
    print("conflict reported as:", line)


def test_conflict_same_timestamp_namespace_name_order(env, backends):
    ts = "2022-02-02T00:00:00Z"
    r = env.router({
        "backends.yaml": backends,
        # b-ns/aaa vs a-ns/zzz: namespace decides before name → a-ns/zzz wins
        "one.yaml": ingress("aaa", [rule(HOST, http_path("/tie", "tie-b", 80))], namespace="b-ns", created=ts),
        "two.yaml": ingress("zzz", [rule(HOST, http_path("/tie", "tie-a", 80))], namespace="a-ns", created=ts),
        # same namespace: name decides
        "three.yaml": ingress("n2", [rule(HOST, http_path("/tie2", "tie-b", 80))], created=ts),
        "four.yaml": ingress("n1", [rule(HOST, http_path("/tie2", "tie-a", 80))], created=ts),
    })
    assert r.curl("/tie", host=HOST).service == "tie-a"
    assert r.curl("/tie2", host=HOST).service == "tie-a"
    r.wait_log(r"b-ns.*aaa.*(conflict|a-ns)|(conflict|a-ns).*b-ns.*aaa", timeout=5,
               desc="the losing Ingress b-ns/aaa reported")
    r.wait_log(r'"n2".*(conflict|n1)|default/n2.*(conflict|n1)', timeout=5, desc="the losing Ingress default/n2 reported")


def test_conflict_resolution_is_stable_across_reloads(env, backends):
    """Rewriting the winner's file (same object) or touching the loser must not flip the winner."""
    r = env.router({
        "backends.yaml": backends,
        "old.yaml": ingress("old", [rule(HOST, http_path("/dup", "old", 80))], created="2020-01-01T00:00:00Z"),
        "new.yaml": ingress("new", [rule(HOST, http_path("/dup", "new", 80))], created="2024-01-01T00:00:00Z"),
    })
    assert r.curl("/dup", host=HOST).service == "old"
    # touch the newer one: it is re-read last but is still younger
    r.write("new.yaml", ingress("new", [rule(HOST, http_path("/dup", "new", 80)),
                                        rule(HOST, http_path("/marker", "new", 80))],
                                created="2024-01-01T00:00:00Z"))
    r.wait_served_by("/marker", "new", host=HOST)
    assert all(r.get("/dup", host=HOST).service == "old" for _ in range(5))
    # delete the winner: the other takes over
    r.delete("old.yaml")
    r.wait_served_by("/dup", "new", host=HOST)


def test_same_path_different_type_is_not_a_conflict(env, backends):
    r = env.router({
        "backends.yaml": backends,
        "a.yaml": ingress("prefix", [rule(HOST, http_path("/p", "svc-a", 80, "Prefix"))], created="2020-01-01T00:00:00Z"),
        "b.yaml": ingress("exact", [rule(HOST, http_path("/p", "svc-b", 80, "Exact"))], created="2024-01-01T00:00:00Z"),
    })
    assert r.curl("/p", host=HOST).service == "svc-b", "Exact wins at equal length"
    assert r.curl("/p/q", host=HOST).service == "svc-a"


def test_invalid_rules_skipped_others_serve(env, backends):
    bad = ingress("mixed", [
        rule(HOST,
             http_path("/good", "good", 80),
             http_path("no-leading-slash", "svc-a", 80),
             {"path": "/resource", "pathType": "Prefix",
              "backend": {"resource": {"apiGroup": "k8s.example.com", "kind": "StorageBucket", "name": "b"}}},
             http_path("/missing-svc", "does-not-exist", 80),
             http_path("/bad-type", "svc-a", 80, "Regex")),
        rule(None, http_path("/", "svc-c", 80)),
    ])
    r = env.router({
        "backends.yaml": backends,
        "mixed.yaml": bad,
        "other.yaml": ingress("other", [rule(HOST, http_path("/other", "svc-b", 80))]),
    })
    assert r.curl("/good/1", host=HOST).service == "good"
    assert r.curl("/other", host=HOST).service == "svc-b"
    # The skipped rules do not exist: those requests fall through to the host-less catch-all.
    for path in ("/resource", "/bad-type"):
        resp = r.curl(path, host=HOST)
        assert (resp.status, resp.service) == (200, "svc-c"), f"{path}: skipped rule must fall through: {resp}"
    # Each skipped rule is reported (the log names the Ingress and what is wrong).
    for needle in ("no-leading-slash", "does-not-exist"):
        line = r.wait_log(re.escape(needle), timeout=5, desc=f"invalid rule {needle!r} reported")
        print("reported:", line)
    assert "mixed" in r.log_text()


def test_rule_with_missing_service_answers_503_and_is_reported(env, backends):
    """A rule naming a Service that does not exist stays and answers 503, as ingress-nginx does:
    a component whose Ingress lands before its Service must not silently fall through to the
    legacy fallback. The problem is reported; other rules keep serving."""
    r = env.router({
        "backends.yaml": backends,
        "i.yaml": ingress("missing", [rule(HOST, http_path("/missing-svc", "does-not-exist", 80)),
                                      rule(None, http_path("/", "svc-c", 80))]),
    })
    r.wait_log("does-not-exist", timeout=5, desc="the missing Service reported")
    resp = r.curl("/missing-svc/x", host=HOST)
    assert resp.status == 503, f"a rule with a missing Service answers 503: {resp}"
    assert r.curl("/other", host=HOST).service == "svc-c", "the other rule keeps serving"


def test_invalid_ingress_does_not_break_other_ingresses_at_runtime(env, backends):
    r = env.router({
        "backends.yaml": backends,
        "good.yaml": ingress("good", [rule(HOST, http_path("/good", "good", 80))]),
    })
    r.write("bad.yaml", ingress("bad", [rule(HOST, http_path("relative", "svc-a", 80),
                                           http_path("/bad-ok", "svc-b", 80))]))
    r.wait_served_by("/bad-ok", "svc-b", host=HOST)
    assert r.curl("/good", host=HOST).service == "good"
    r.wait_log("relative", timeout=5, desc="the invalid path 'relative' is reported")


def test_default_backend_as_resource_is_ignored(env, backends):
    r = env.router({
        "backends.yaml": backends,
        "i.yaml": ingress("res-default", [rule(HOST, http_path("/ok", "svc-a", 80))],
                          default_backend={"resource": {"apiGroup": "x.io", "kind": "Bucket", "name": "b"}}),
    })
    assert r.curl("/ok", host=HOST).service == "svc-a"
    assert r.curl("/elsewhere", host=HOST).status == 404
