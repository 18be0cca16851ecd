"""Canary Ingresses (ingress-nginx's `canary` annotations, under `nginx.ingress.kubernetes.io/`
or `tandem.dev/`): an Ingress with `canary: "true"` and the same host, path and pathType as a
main Ingress sends a share of that route's requests to its own Service — by header
(`always` / `never`, an exact value or a regex), by cookie (`always` / `never`), then by weight
out of `canary-weight-total`. Weighted shares are measured over bounded runs on one keep-alive
connection; removing a canary at runtime sends everything back to the main Service; a canary
with no main route, a second canary and every invalid value are reported while the main route
stays served.

Each case has its own host `<case>.canary.test`, all on one router.
"""

from __future__ import annotations

import http.client
import json

import pytest

from e2e_lib import LOOPBACK, backend_objects, http_path, ingress, rule, wait_until
from metrics_support import scrape

NGX = "nginx.ingress.kubernetes.io/"
TD = "tandem.dev/"

# Requests per weighted run, and the tolerance the share must meet.
RUN = 1000
TOLERANCE = 0.05


def host(case: str) -> str:
    return f"{case}.canary.test"


def main_ing(case: str, path: str = "/", path_type: str = "Prefix", created: str = "2026-01-01T00:00:00Z") -> dict:
    doc = ingress(f"{case}-main", [rule(host(case), http_path(path, "stable", path_type=path_type))])
    doc["metadata"]["creationTimestamp"] = created
    return doc


def canary_ing(case: str, annotations: dict, *, name: str | None = None, service: str = "beta",
               path: str = "/", path_type: str = "Prefix", prefix: str = NGX,
               created: str = "2026-02-01T00:00:00Z") -> dict:
    ann = {prefix + "canary": "true", **annotations}
    doc = ingress(name or f"{case}-canary", [rule(host(case), http_path(path, service, path_type=path_type))],
                  annotations=ann)
    doc["metadata"]["creationTimestamp"] = created
    return doc


# case -> canary annotations (without the `canary: "true"` switch)
CASES = {
    "w0": {NGX + "canary-weight": "0"},
    "w30": {NGX + "canary-weight": "30"},
    "w100": {NGX + "canary-weight": "100"},
    "wtotal": {TD + "canary-weight": "250", TD + "canary-weight-total": "1000"},
    "header": {NGX + "canary-by-header": "X-Canary"},
    "header-weight": {NGX + "canary-by-header": "X-Canary", NGX + "canary-weight": "100"},
    "value": {NGX + "canary-by-header": "X-Release", NGX + "canary-by-header-value": "blue"},
    "pattern": {NGX + "canary-by-header": "X-Release", NGX + "canary-by-header-pattern": "^beta-[0-9]+$"},
    "cookie": {NGX + "canary-by-cookie": "release"},
    "cookie-weight": {NGX + "canary-by-cookie": "release", NGX + "canary-weight": "100"},
    "precedence": {NGX + "canary-by-header": "X-Canary", NGX + "canary-by-cookie": "release",
                   NGX + "canary-weight": "50"},
    # invalid values: the annotation is ignored, the rest of the canary applies
    "bad-weight": {NGX + "canary-weight": "150", NGX + "canary-by-header": "X-Canary"},
    "bad-total": {NGX + "canary-weight": "30", NGX + "canary-weight-total": "10"},
    "bad-header": {NGX + "canary-by-header": "X Canary", NGX + "canary-weight": "100"},
    "bad-pattern": {NGX + "canary-by-header": "X-Release", NGX + "canary-by-header-pattern": "(beta"},
    "bad-cookie": {NGX + "canary-by-cookie": "re;lease", NGX + "canary-weight": "100"},
    "bad-value": {NGX + "canary-by-header-value": "blue", NGX + "canary-weight": "100"},
}


@pytest.fixture(scope="module")
def backends(module_env):
    return {"stable": module_env.echo("stable"), "beta": module_env.echo("beta"),
            "gamma": module_env.echo("gamma")}


@pytest.fixture(scope="module")
def router(module_env, backends):
    docs = []
    for case, ann in CASES.items():
        docs += [main_ing(case), canary_ing(case, ann)]
    # a canary setting without the switch
    off = main_ing("switch-off")
    docs += [off, ingress("switch-off-canary", [rule(host("switch-off"), http_path("/", "beta"))],
                          annotations={NGX + "canary-weight": "100"})]
    # a canary with no main route: other host, other path, other pathType
    docs += [main_ing("orphan", "/app", "Prefix"),
             canary_ing("orphan", {NGX + "canary-weight": "100"}, name="orphan-host", path="/"),
             canary_ing("orphan", {NGX + "canary-weight": "100"}, name="orphan-type", path="/app",
                        path_type="Exact")]
    docs.append(canary_ing("nohost", {NGX + "canary-weight": "100"}, name="orphan-nohost"))
    # two canaries for one route: the older one wins
    docs += [main_ing("two"),
             canary_ing("two", {NGX + "canary-weight": "100"}, name="two-old", service="beta",
                        created="2026-02-01T00:00:00Z"),
             canary_ing("two", {NGX + "canary-weight": "100"}, name="two-new", service="gamma",
                        created="2026-03-01T00:00:00Z")]
    # a canary older than its main Ingress is still only a canary
    docs += [main_ing("older", created="2026-05-01T00:00:00Z"),
             canary_ing("older", {NGX + "canary-weight": "100"}, created="2026-01-01T00:00:00Z")]
    docs += [main_ing("runtime")]
    return module_env.router({
        "backends.yaml": backend_objects("stable", [backends["stable"]]) + backend_objects("beta", [backends["beta"]])
        + backend_objects("gamma", [backends["gamma"]]),
        "ingresses.yaml": docs,
    })


class Client:
    """One keep-alive HTTP/1.1 connection to the router."""

    def __init__(self, router):
        self.conn = http.client.HTTPConnection(LOOPBACK, router.http_port, timeout=10)

    def service(self, case: str, path: str = "/", headers: dict | None = None) -> str:
        self.conn.request("GET", path, headers={"Host": host(case), **(headers or {})})
        r = self.conn.getresponse()
        body = r.read()
        assert r.status == 200, (case, r.status, body[:200])
        return json.loads(body)["service"]

    def status(self, case: str, path: str = "/") -> int:
        self.conn.request("GET", path, headers={"Host": host(case)})
        r = self.conn.getresponse()
        r.read()
        return r.status

    def share(self, case: str, n: int = RUN, headers: dict | None = None) -> float:
        """The share of `n` requests the canary (`beta`) served."""
        got = [self.service(case, headers=headers) for _ in range(n)]
        assert set(got) <= {"stable", "beta"}, set(got)
        return got.count("beta") / n

    def close(self):
        self.conn.close()


@pytest.fixture
def client(router):
    c = Client(router)
    yield c
    c.close()


def problems(router, reason: str, name: str) -> list[str]:
    return [e.get("detail", "") for e in router.json_logs() if e.get("reason") == reason and e.get("name") == name]


def problem_of(router, reason: str, name: str) -> str:
    return wait_until(lambda: (problems(router, reason, name) or [None])[0], 10,
                      desc=f"{reason} logged for {name}")


# --------------------------------------------------------------------------- weight


@pytest.mark.parametrize("case,want", [("w0", 0.0), ("w30", 0.30), ("w100", 1.0), ("wtotal", 0.25)])
def test_weight_share(client, case, want):
    share = client.share(case)
    print(f"canary weight {case}: {share:.3f} of {RUN} (want {want:.2f})")
    assert abs(share - want) <= TOLERANCE, (case, share, want)
    if want in (0.0, 1.0):
        assert share == want


def test_weight_share_interleaved_across_connections(router):
    """Two clients alternating on the same route still split it as weighted in total."""
    a, b = Client(router), Client(router)
    try:
        got = []
        for _ in range(RUN // 2):
            got += [a.service("w30"), b.service("w30")]
        share = got.count("beta") / len(got)
        print(f"canary weight w30, two connections: {share:.3f} of {len(got)}")
        assert abs(share - 0.30) <= TOLERANCE, share
    finally:
        a.close()
        b.close()


# --------------------------------------------------------------------------- header, cookie, precedence


def test_header_always_never_other(client):
    assert client.service("header", headers={"X-Canary": "always"}) == "beta"
    assert client.service("header", headers={"x-canary": "never"}) == "stable"
    # any other value falls through to the weight (0 here, 100 in header-weight)
    assert client.service("header", headers={"X-Canary": "yes"}) == "stable"
    assert client.service("header") == "stable"
    assert client.service("header-weight", headers={"X-Canary": "never"}) == "stable"
    assert client.service("header-weight", headers={"X-Canary": "yes"}) == "beta"
    assert client.service("header-weight") == "beta"


def test_header_value(client):
    assert client.service("value", headers={"X-Release": "blue"}) == "beta"
    assert client.service("value", headers={"X-Release": "Blue"}) == "stable"
    # with a value configured, always is an ordinary value
    assert client.service("value", headers={"X-Release": "always"}) == "stable"
    assert client.service("value") == "stable"


def test_header_pattern(client):
    assert client.service("pattern", headers={"X-Release": "beta-42"}) == "beta"
    assert client.service("pattern", headers={"X-Release": "beta-x"}) == "stable"
    assert client.service("pattern", headers={"X-Release": "always"}) == "stable"


def test_cookie_always_never(client):
    assert client.service("cookie", headers={"Cookie": "release=always"}) == "beta"
    assert client.service("cookie", headers={"Cookie": "a=1; release=always; b=2"}) == "beta"
    assert client.service("cookie", headers={"Cookie": "release=never"}) == "stable"
    assert client.service("cookie", headers={"Cookie": "release=maybe"}) == "stable"
    assert client.service("cookie-weight", headers={"Cookie": "release=never"}) == "stable"
    assert client.service("cookie-weight", headers={"Cookie": "release=maybe"}) == "beta"
    assert client.service("cookie-weight") == "beta"


def test_precedence_header_then_cookie_then_weight(client):
    assert client.service("precedence", headers={"X-Canary": "always", "Cookie": "release=never"}) == "beta"
    assert client.service("precedence", headers={"X-Canary": "never", "Cookie": "release=always"}) == "stable"
    assert client.service("precedence", headers={"X-Canary": "other", "Cookie": "release=always"}) == "beta"
    assert client.service("precedence", headers={"X-Canary": "other", "Cookie": "release=never"}) == "stable"
    share = client.share("precedence", 200, headers={"X-Canary": "other", "Cookie": "release=other"})
    print(f"canary weight 50 after header and cookie fell through: {share:.3f} of 200")
    assert abs(share - 0.5) <= TOLERANCE, share


# --------------------------------------------------------------------------- conflicts, orphans, runtime


def test_canary_never_competes_with_its_main(router, client):
    # older than its main Ingress, still only a canary: no path conflict, the main one serves
    assert client.service("older", headers={"X-Anything": "1"}) == "beta"
    assert not problems(router, "path_conflict", "older-canary")
    assert not problems(router, "path_conflict", "older-main")


def test_canary_without_main_is_reported_not_served(router, client):
    assert "not served" in problem_of(router, "canary_without_main", "orphan-host")
    assert "(Exact)" in problem_of(router, "canary_without_main", "orphan-type")
    assert problem_of(router, "canary_without_main", "orphan-nohost")
    assert client.service("orphan", "/app") == "stable"
    assert client.status("nohost") == 404


def test_second_canary_is_reported_oldest_wins(router, client):
    detail = problem_of(router, "canary_conflict", "two-new")
    assert "default/two-old" in detail, detail
    assert {client.service("two") for _ in range(20)} == {"beta"}


def test_canary_added_and_removed_at_runtime(router, client):
    assert {client.service("runtime") for _ in range(10)} == {"stable"}
    router.write("runtime-canary.yaml", [canary_ing("runtime", {TD + "canary-weight": "100"}, prefix=TD)])
    wait_until(lambda: client.service("runtime") == "beta", 10, desc="canary in force")
    assert {client.service("runtime") for _ in range(20)} == {"beta"}
    router.delete("runtime-canary.yaml")
    wait_until(lambda: client.service("runtime") == "stable", 10, desc="canary gone")
    assert {client.service("runtime") for _ in range(50)} == {"stable"}


# --------------------------------------------------------------------------- invalid values


def test_invalid_values_are_reported_and_the_rest_served(router, client):
    assert "canary-weight" in problem_of(router, "invalid_annotation", "bad-weight-canary")
    # the weight is ignored (0); the header still works
    assert client.service("bad-weight") == "stable"
    assert client.service("bad-weight", headers={"X-Canary": "always"}) == "beta"

    assert "canary-weight-total" in problem_of(router, "invalid_annotation", "bad-total-canary")
    share = client.share("bad-total", 200)
    assert abs(share - 0.30) <= TOLERANCE, share  # 30 of the default 100

    assert "canary-by-header" in problem_of(router, "invalid_annotation", "bad-header-canary")
    assert client.service("bad-header") == "beta"

    assert "canary-by-header-pattern" in problem_of(router, "invalid_annotation", "bad-pattern-canary")
    # the pattern is ignored: the header falls back to always / never
    assert client.service("bad-pattern", headers={"X-Release": "beta"}) == "stable"
    assert client.service("bad-pattern", headers={"X-Release": "always"}) == "beta"

    assert "canary-by-cookie" in problem_of(router, "invalid_annotation", "bad-cookie-canary")
    assert client.service("bad-cookie", headers={"Cookie": "release=never"}) == "beta"

    assert "without canary-by-header" in problem_of(router, "invalid_annotation", "bad-value-canary")
    assert client.service("bad-value", headers={"X-Release": "blue"}) == "beta"

    assert "without canary" in problem_of(router, "invalid_annotation", "switch-off-canary")
    # without the switch it is an ordinary Ingress: the older main Ingress keeps the path
    assert problem_of(router, "path_conflict", "switch-off-canary")
    assert {client.service("switch-off") for _ in range(10)} == {"stable"}


# --------------------------------------------------------------------------- observability


def test_canary_requests_are_counted_and_logged(router, client):
    before = scrape(router.admin_port).value("tandem_canary_requests_total", namespace="default",
                                              ingress="w100-canary", service="beta")
    for _ in range(7):
        assert client.service("w100") == "beta"
    exp = scrape(router.admin_port)
    after = exp.value("tandem_canary_requests_total", namespace="default", ingress="w100-canary", service="beta")
    assert after - before == 7, (before, after)
    # request metrics of canary requests carry the canary Ingress and Service
    assert exp.sum("tandem_requests_total", ingress="w100-canary", service="beta") >= 7
    entries = wait_until(lambda: [e for e in router.access_logs() if e.get("host") == host("w100")] or None, 10)
    last = entries[-1]
    assert last["canary"] is True and last["service"] == "beta" and last["ingress"] == "default/w100-main", last
    plain = client.service("header")
    assert plain == "stable"
    entries = wait_until(lambda: [e for e in router.access_logs() if e.get("host") == host("header")] or None, 10)
    assert entries[-1]["canary"] is False and entries[-1]["service"] == "stable", entries[-1]
