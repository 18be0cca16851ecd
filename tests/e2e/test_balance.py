"""Load balancing per route: round-robin spread, `upstream-hash-by` (same key → same endpoint,
about 1/N of the keys move when an endpoint joins), `load-balance: ewma` (a slow endpoint loses
its share) and `least_request` (under concurrency), passive outlier ejection (`tandem.dev/outlier-*`: a failing endpoint stops getting
traffic and gets it back after its ejection time), cookie affinity (`affinity: cookie` and
`session-cookie-*`; `affinity-mode` balanced/persistent across a scale-up,
`session-cookie-change-on-failure` with a stopped endpoint, `session-cookie-conditional-samesite-none`
by User-Agent), draining (an endpoint that is terminating but still serving gets no new
sessions, its pinned sessions keep going), active health checks, endpoint weights set on the
Service (`tandem.dev/endpoint-weights` by address, `tandem.dev/zone-weights` by EndpointSlice
zone: exact shares per cycle, weight 0 gets nothing new, changed at runtime), and invalid values
reported with the route served.

Each case is its own Ingress with its own host `<case>.lb.test` and its own Service.
"""

from __future__ import annotations

import http.client
import re
import time
from collections import Counter

import pytest

from e2e_lib import (LOOPBACK, MEASURE_SLACK, RELOAD_SLA, backend_objects, dead_endpoint, http_path,
                     ingress, invalid_annotation_detail, rule, wait_until)
from metrics_support import scrape

NGX = "nginx.ingress.kubernetes.io/"
TD = "tandem.dev/"
#: Upper bound of any request loop here.
LOOP_SECONDS = 60
#: Ejection time of the outlier cases: longer than their 60 requests take on a busy machine.
EJECTION_S = 3


def host(case: str) -> str:
    return f"{case}.lb.test"


def ing(case: str, annotations: dict, service: str | None = None) -> dict:
    return ingress(case, [rule(host(case), http_path("/", service or case, "http"))],
                   annotations=annotations)


class Client:
    """One keep-alive connection to the router (reopened after the router closes it)."""

    def __init__(self, router, case: str):
        self.port = router.http_port
        self.host = host(case)
        self.conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=10)

    def get(self, path: str = "/", headers: dict | None = None):
        h = {"Host": self.host, **(headers or {})}
        for attempt in range(2):
            try:
                self.conn.request("GET", path, headers=h)
                r = self.conn.getresponse()
                r.read()
                sb = r.getheader("x-served-by") or ""
                return r.status, sb.split("/", 1)[-1], r.getheader("set-cookie")
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def many(self, n: int, path: str = "/", headers: dict | None = None) -> list[tuple]:
        deadline = time.monotonic() + LOOP_SECONDS
        out = []
        for _ in range(n):
            assert time.monotonic() < deadline, f"{n} requests took over {LOOP_SECONDS}s"
            out.append(self.get(path, headers))
        return out

    def close(self):
        self.conn.close()


def cookie_of(set_cookie: str | None, name: str = "INGRESSCOOKIE") -> str | None:
    if not set_cookie or not set_cookie.startswith(name + "="):
        return None
    return set_cookie.split(";", 1)[0].split("=", 1)[1]


def weighted(docs: list[dict], annotations: dict, zones: dict | None = None) -> list[dict]:
    """backend_objects with annotations on the Service and, per pod, an EndpointSlice zone."""
    docs = [dict(d) for d in docs]
    docs[0] = {**docs[0], "metadata": {**docs[0]["metadata"], "annotations": annotations}}
    for d in docs[1:] if zones else []:
        for e in d["endpoints"]:
            pod = e["targetRef"]["name"]
            if pod in zones:
                e["zone"] = zones[pod]
    return docs


def wrr_objects(b: dict, weights: str) -> list[dict]:
    return weighted(backend_objects("wrr", b["wrr"]), {TD + "endpoint-weights": weights})


def with_conditions(service: str, eps: list, conditions: dict) -> list[dict]:
    """backend_objects for echo backends, with EndpointSlice conditions per pod."""
    docs = backend_objects(service, eps)
    for d in docs[1:]:
        for e in d["endpoints"]:
            pod = e["targetRef"]["name"]
            if pod in conditions:
                e["conditions"] = conditions[pod]
    return docs


@pytest.fixture(scope="module")
def setup(module_env):
    e = module_env
    b: dict = {}
    b["rr"] = [e.echo("rr", f"rr-{i}") for i in range(4)]
    b["hash"] = [e.echo("hash", f"h{i}") for i in range(11)]
    b["ewma"] = [e.echo("ewma", "slow", args=["--delay-ms", "40"])] + [e.echo("ewma", f"fast-{i}") for i in range(2)]
    b["lr"] = [e.echo("lr", "slow", args=["--delay-ms", "1000"])] + [e.echo("lr", f"fast-{i}") for i in range(2)]
    b["flaky"] = [e.echo("flaky", "bad", args=["--status", "503"])] + [e.echo("flaky", f"good-{i}") for i in range(2)]
    b["deadish"] = [e.echo("deadish", f"live-{i}") for i in range(2)]
    b["sticky"] = [e.echo("sticky", f"s{i}") for i in range(3)]
    b["drain"] = [e.echo("drain", f"d{i}") for i in range(3)]
    b["app"] = [e.echo("app")]
    b["checked"] = [e.echo("checked", "sick", args=["--status", "503"])] + [e.echo("checked", f"well-{i}") for i in range(2)]
    b["allsick"] = [e.echo("allsick", f"sick-{i}", args=["--status", "503"]) for i in range(2)]
    # Weighted: "heavy" alone on 127.0.0.2 (weighted by IP), the others by ip:port.
    b["wrr"] = [e.echo("wrr", "heavy", host="127.0.0.2"), e.echo("wrr", "light"), e.echo("wrr", "off")]
    b["zone"] = [e.echo("zone", "a0"), e.echo("zone", "a1"), e.echo("zone", "b0")]
    b["wbad"] = [e.echo("wbad", f"p{i}") for i in range(2)]
    b["legacy"] = [e.echo("legacy", f"m{i}") for i in range(2)]
    b["wzero"] = [e.echo("wzero", f"p{i}") for i in range(2)]
    b["keep"] = [e.echo("keep", f"k{i}") for i in range(3)]
    b["change"] = [e.echo("change", f"c{i}") for i in range(3)]
    b["scale"] = [e.echo("scale", f"n{i}") for i in range(6)]
    dead = dead_endpoint()
    outlier = {TD + "outlier-consecutive-failures": "3", TD + "outlier-ejection-time": f"{EJECTION_S}s"}
    checks = {TD + "health-check-path": "/healthz", TD + "health-check-interval": "200ms",
              TD + "health-check-timeout": "150ms", TD + "health-check-unhealthy-threshold": "2",
              TD + "health-check-healthy-threshold": "2"}
    docs = [
        ing("rr", {}),
        ing("hash", {NGX + "upstream-hash-by": "$http_x_user"}),
        ing("ewma", {NGX + "load-balance": "ewma"}),
        ing("ewma-rr", {}, "ewma"),
        ing("lr", {TD + "load-balance": "least_request"}),
        ing("flaky", outlier),
        ing("deadish", outlier),
        ing("sticky", {NGX + "affinity": "cookie", NGX + "affinity-mode": "persistent",
                       NGX + "session-cookie-name": "route", NGX + "session-cookie-change-on-failure": "true",
                       NGX + "session-cookie-max-age": "3600", NGX + "session-cookie-samesite": "Lax"}),
        ing("drain", {NGX + "affinity": "cookie"}),
        ingress("sticky-path", [rule(host("sticky-path"), http_path("/api", "app", "http"))],
                annotations={NGX + "affinity": "cookie"}),
        ing("checked", checks),
        ing("allsick", checks),
        # Invalid values: each reported, the Ingress still served.
        ing("bad-lb", {NGX + "load-balance": "fastest"}, "app"),
        ing("bad-hash", {NGX + "upstream-hash-by": "$server_name"}, "app"),
        ing("bad-affinity", {NGX + "affinity": "ip"}, "app"),
        ing("bad-cookie", {NGX + "affinity": "cookie", NGX + "session-cookie-samesite": "sometimes"}, "app"),
        ing("bad-mode", {NGX + "affinity": "cookie", NGX + "affinity-mode": "sticky"}, "app"),
        ing("bad-change", {TD + "affinity": "cookie", TD + "session-cookie-change-on-failure": "yes"}, "app"),
        ing("bad-conditional", {NGX + "affinity": "cookie", NGX + "session-cookie-samesite": "None",
                                NGX + "session-cookie-conditional-samesite-none": "maybe"}, "app"),
        # change-on-failure: off (the default) and on, over the default (balanced) mode.
        ing("keep", {NGX + "affinity": "cookie"}),
        ing("change", {TD + "affinity": "cookie", TD + "session-cookie-change-on-failure": "true"}),
        ing("samesite", {NGX + "affinity": "cookie", NGX + "session-cookie-samesite": "None",
                         NGX + "session-cookie-conditional-samesite-none": "true"}, "app"),
        ing("samesite-always", {NGX + "affinity": "cookie", NGX + "session-cookie-samesite": "None"}, "app"),
        # One Service of four endpoints (six later), one route per mode.
        ing("scale-balanced", {NGX + "affinity": "cookie", NGX + "affinity-mode": "balanced"}, "scale"),
        ing("scale-persistent", {TD + "affinity": "cookie", TD + "affinity-mode": "persistent"}, "scale"),
        ing("bad-failures", {TD + "outlier-consecutive-failures": "0"}, "app"),
        ing("bad-ejection", {TD + "outlier-ejection-time": "forever"}, "app"),
        ing("bad-check", {TD + "health-check-path": "healthz"}, "app"),
        ing("bad-check-interval", {TD + "health-check-path": "/h", TD + "health-check-interval": "0ms"}, "app"),
        ing("wrr", {}),
        ing("wrr-sticky", {NGX + "affinity": "cookie", NGX + "affinity-mode": "persistent"}, "wrr"),
        ing("zone", {}),
        ing("wbad", {}),
        ing("legacy", {}),
        ing("wzero", {}),
    ]
    heavy, light, off = b["wrr"]
    weights = (wrr_objects(b, f"127.0.0.2=3, {light.addr}=1, {off.addr}=0")
               + weighted(backend_objects("zone", b["zone"]), {TD + "zone-weights": "zone-a=1, zone-b=2"},
                          {"a0": "zone-a", "a1": "zone-a", "b0": "zone-b"})
               # A selector-less Service with hand-written v1 Endpoints (legacy machines).
               + weighted(backend_objects("legacy", b["legacy"], mode="endpoints"),
                          {TD + "endpoint-weights": f"{b['legacy'][0].addr}=2, {b['legacy'][1].addr}=1"})
               # Out of range: reported, every endpoint weighs 1.
               + weighted(backend_objects("wbad", b["wbad"]), {TD + "endpoint-weights": f"{b['wbad'][0].addr}=300"})
               # Every ready endpoint at 0: reported, all weigh 1.
               + weighted(backend_objects("wzero", b["wzero"]),
                          {TD + "endpoint-weights": ", ".join(f"{x.addr}=0" for x in b["wzero"])}))
    services = (backend_objects("rr", b["rr"]) + backend_objects("ewma", b["ewma"])
                + backend_objects("lr", b["lr"])
                + backend_objects("flaky", b["flaky"])
                + backend_objects("deadish", [dead] + b["deadish"])
                + backend_objects("sticky", b["sticky"]) + backend_objects("app", b["app"])
                + backend_objects("checked", b["checked"]) + backend_objects("allsick", b["allsick"])
                + backend_objects("keep", b["keep"]) + backend_objects("change", b["change"]))
    router = e.router({
        "services.yaml": services,
        "hash.yaml": backend_objects("hash", b["hash"][:10]),
        "drain.yaml": backend_objects("drain", b["drain"]),
        "scale.yaml": backend_objects("scale", b["scale"][:4]),
        "weights.yaml": weights,
        "ingresses.yaml": docs,
    }, ["--trusted-proxies", "127.0.0.1/32"])
    b["dead"] = dead
    return router, b


def test_round_robin_is_even(setup):
    router, b = setup
    c = Client(router, "rr")
    got = Counter(pod for status, pod, _ in c.many(400) if status == 200)
    c.close()
    assert sum(got.values()) == 400, got
    assert set(got) == {x.pod for x in b["rr"]}, got
    # Within ±5 % of the even share.
    assert all(95 <= n <= 105 for n in got.values()), got


def test_hash_by_header_is_consistent_and_moves_few_keys(setup):
    router, b = setup
    c = Client(router, "hash")
    keys = [f"user-{i}" for i in range(1000)]

    def owners():
        out = {}
        for k in keys:
            status, pod, _ = c.get("/", {"X-User": k})
            assert status == 200, (k, status)
            out[k] = pod
        return out

    before = owners()
    # Same key → same endpoint (each key asked again, in another order).
    for k in reversed(keys[:300]):
        assert c.get("/x", {"X-User": k})[1] == before[k], k
    assert len(set(before.values())) == 10, Counter(before.values())
    # No key: the route's algorithm (round-robin) spreads the requests.
    assert len({pod for _, pod, _ in c.many(20)}) == 10
    # An eleventh endpoint joins.
    router.write("hash.yaml", backend_objects("hash", b["hash"]))
    new_pod = b["hash"][10].pod
    wait_until(lambda: any(c.get("/", {"X-User": k})[1] == new_pod for k in keys[:200]),
               RELOAD_SLA + MEASURE_SLACK, desc="the new endpoint takes its keys")
    after = owners()
    moved = [k for k in keys if after[k] != before[k]]
    print(f"hash-by: {len(moved)} of {len(keys)} keys moved from 10 to 11 endpoints")
    assert len(moved) <= 130, f"{len(moved)} of 1000 keys moved (limit 1.3/N = 130)"
    assert len(moved) >= 40, f"only {len(moved)} keys moved: the new endpoint must take its share"
    assert all(after[k] == new_pod for k in moved), "a key moved between two old endpoints"
    c.close()


def test_ewma_moves_load_away_from_a_slow_endpoint(setup):
    router, b = setup
    n = 150
    c = Client(router, "ewma")
    got = Counter(pod for status, pod, _ in c.many(n) if status == 200)
    c.close()
    assert sum(got.values()) == n, got
    # The same endpoints behind round-robin: the slow one gets its third.
    c = Client(router, "ewma-rr")
    rr = Counter(pod for status, pod, _ in c.many(30) if status == 200)
    c.close()
    print(f"ewma: {dict(got)} of {n}; round-robin: {dict(rr)} of 30")
    assert rr["slow"] == 10, rr
    assert got["slow"] <= n // 20, f"the slow endpoint got {got['slow']} of {n} (1/N = {n // 3}): {got}"


def test_least_request_avoids_an_endpoint_holding_requests(setup):
    """Eight concurrent clients: under round-robin a 1 s endpoint would get a third of the
    requests; with least_request it only gets a request when it holds fewer than the others."""
    import threading
    router, _ = setup
    got: Counter = Counter()
    errors: list = []

    def client():
        c = Client(router, "lr")
        try:
            for status, pod, _ in c.many(15):
                got[pod if status == 200 else f"status {status}"] += 1
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            c.close()

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(LOOP_SECONDS)
    assert not errors and sum(got.values()) == 120, (errors, got)
    print(f"least_request: {dict(got)} of 120")
    assert got["slow"] <= 120 // 6, got


def test_outlier_ejection_of_a_5xx_endpoint_and_its_return(setup, module_env):
    router, b = setup
    c = Client(router, "flaky")
    started = time.monotonic()
    results = c.many(60)
    bad = [i for i, (status, pod, _) in enumerate(results) if pod == "bad"]
    print(f"outlier: the 503 endpoint answered requests {bad} of 60")
    assert all(results[i][0] == 503 for i in bad)
    # Round-robin over three: ejected after its third 503 in a row (request 9 at the latest).
    assert time.monotonic() - started < EJECTION_S, "60 requests took longer than the ejection"
    assert len(bad) == 3 and bad[-1] <= 9, bad
    assert all(status == 200 for i, (status, _, _) in enumerate(results) if i not in bad)
    exp = scrape(router.admin_port)
    assert exp.value("tandem_endpoint_ejections_total", namespace="default", service="flaky") >= 1
    assert exp.value("tandem_endpoints_ejected", namespace="default", service="flaky") == 1
    assert not any("127.0.0.1" in s.labels.get("endpoint", "") for s in exp.select("tandem_endpoint_ejections_total"))
    router.wait_log(rf'endpoint ejected.*"default/flaky:http".*"{re.escape(b["flaky"][0].addr)}"',
                    desc="ejection logged with the endpoint")
    # The endpoint recovers (same address, now answering 200): back after its ejection time.
    port = b["flaky"][0].port
    b["flaky"][0].stop()
    module_env.echo("flaky", "recovered", port=port)
    seen = []
    while time.monotonic() - started < EJECTION_S + 5:
        status, pod, _ = c.get()
        seen.append(pod)
        if pod == "recovered":
            break
        time.sleep(0.02)
    # Ejected after the first request was sent, so back no sooner than the ejection time later.
    took = time.monotonic() - started
    assert seen[-1] == "recovered", f"the recovered endpoint got no traffic: {Counter(seen)}"
    assert took >= EJECTION_S, f"back after {took:.2f}s, before its ejection time was up"
    router.wait_log(rf'back in rotation.*"{re.escape(b["flaky"][0].addr)}"', desc="return logged")
    wait_until(lambda: scrape(router.admin_port).value(
        "tandem_endpoints_ejected", namespace="default", service="flaky") == 0, 5, desc="gauge back to 0")
    c.close()


def test_outlier_ejection_of_a_dead_endpoint(setup):
    """Connection refused: every request is still answered (retried on a live endpoint), and
    after three failures the dead endpoint is not even tried any more."""
    router, b = setup
    c = Client(router, "deadish")
    started = time.monotonic()
    results = c.many(60)
    c.close()
    assert time.monotonic() - started < EJECTION_S, "60 requests took longer than the ejection"
    assert all(status == 200 for status, _, _ in results), Counter(s for s, _, _ in results)
    dead = f"{b['dead'].ip}:{b['dead'].port}"

    def tried_dead():
        return [e for e in router.access_logs() if e.get("host") == host("deadish") and e.get("attempts", 1) > 1]

    wait_until(lambda: len(tried_dead()) >= 3, 5, desc="access log lines of retried requests")
    retried = tried_dead()
    print(f"outlier: {len(retried)} of 60 requests tried the dead endpoint {dead}")
    assert len(retried) == 3, retried


def test_cookie_affinity_holds_and_repins(setup):
    router, b = setup
    c = Client(router, "sticky")
    status, pod, set_cookie = c.get()
    assert status == 200 and set_cookie, set_cookie
    assert "; Path=/" in set_cookie and "Max-Age=3600" in set_cookie and "HttpOnly" in set_cookie
    assert "SameSite=Lax" in set_cookie, set_cookie
    value = cookie_of(set_cookie, "route")
    assert value and len(value) == 16 and all(ch in "0123456789abcdef" for ch in value), set_cookie
    assert LOOPBACK not in set_cookie, "the cookie must not carry the endpoint's address"
    results = c.many(1000, headers={"Cookie": f"other=1; route={value}"})
    assert Counter(p for _, p, _ in results) == Counter({pod: 1000}), Counter(p for _, p, _ in results)
    assert not any(sc for _, _, sc in results), "a pinned request must not get a new cookie"
    # New sessions are spread by the algorithm (round-robin).
    fresh = c.many(30)
    assert len({p for _, p, _ in fresh}) == 3 and all(sc for _, _, sc in fresh)
    # An unknown value: a new session.
    status, _, sc = c.get(headers={"Cookie": "route=0123456789abcdef"})
    assert status == 200 and cookie_of(sc, "route"), sc
    # The pinned endpoint goes away: the session moves and the cookie is set again.
    rest = [x for x in b["sticky"] if x.pod != pod]
    others = [d for d in _read(router, "services.yaml") if d["metadata"]["name"].split("-")[0] != "sticky"]
    router.write("services.yaml", others + backend_objects("sticky", rest))
    wait_until(lambda: c.get(headers={"Cookie": f"route={value}"})[1] != pod, RELOAD_SLA + MEASURE_SLACK,
               desc="session moved off the removed endpoint")
    status, new_pod, sc = c.get(headers={"Cookie": f"route={value}"})
    new_value = cookie_of(sc, "route")
    assert status == 200 and new_pod != pod and new_value and new_value != value, (new_pod, sc)
    again = c.many(200, headers={"Cookie": f"route={new_value}"})
    assert Counter(p for _, p, _ in again) == Counter({new_pod: 200})
    c.close()


def test_cookie_path_defaults_to_the_rule_path(setup):
    router, _ = setup
    c = Client(router, "sticky-path")
    status, _, sc = c.get("/api/x")
    c.close()
    assert status == 200 and sc and sc.startswith("INGRESSCOOKIE=") and "; Path=/api;" in sc, sc


def _read(router, name: str) -> list[dict]:
    import yaml
    return [d for d in yaml.safe_load_all(router.path(name).read_text()) if d]


def test_draining_endpoint_keeps_its_sessions_only(setup):
    router, b = setup
    c = Client(router, "drain")
    # A session pinned to d0.
    pinned = None
    for _ in range(40):
        _, pod, sc = c.get()
        if pod == "d0":
            pinned = cookie_of(sc)
            break
    assert pinned, "no new session of 40 went to d0 (one of three)"
    # d0's pod is terminating but still serving.
    router.write("drain.yaml", with_conditions("drain", b["drain"], {
        "d0": {"ready": False, "serving": True, "terminating": True}}))

    # 30 in a row: before the change lands, a new session avoids d0 by chance with p = 2/3, so six
    # in a row ((2/3)^6 ≈ 9 %) could pass early and leave d0 in the sample below.
    def new_sessions_avoid_d0():
        return all(c.get()[1] != "d0" for _ in range(30))

    wait_until(new_sessions_avoid_d0, RELOAD_SLA + MEASURE_SLACK, desc="new sessions avoid the draining endpoint")
    fresh = c.many(60)
    assert not any(p == "d0" for _, p, _ in fresh), Counter(p for _, p, _ in fresh)
    assert {p for _, p, _ in fresh} == {"d1", "d2"}
    kept = c.many(200, headers={"Cookie": f"INGRESSCOOKIE={pinned}"})
    assert Counter(p for _, p, _ in kept) == Counter({"d0": 200}), Counter(p for _, p, _ in kept)
    # Once it stops serving, its session moves.
    router.write("drain.yaml", with_conditions("drain", b["drain"], {
        "d0": {"ready": False, "serving": False, "terminating": True}}))
    wait_until(lambda: c.get(headers={"Cookie": f"INGRESSCOOKIE={pinned}"})[1] != "d0",
               RELOAD_SLA + MEASURE_SLACK, desc="session moved off the stopped endpoint")
    c.close()


def _pin(c: Client) -> tuple[str, str]:
    """A new session: its endpoint and cookie value."""
    status, pod, sc = c.get()
    value = cookie_of(sc)
    assert status == 200 and value, (status, sc)
    return pod, value


def _access_lines(router, case: str, n: int) -> list[dict]:
    return wait_until(lambda: (lambda got: got if len(got) >= n else None)(
        [e for e in router.access_logs() if e.get("host") == host(case)]), 5, desc=f"{n} access log lines of {case}")


def test_change_on_failure_off_keeps_the_session_on_its_endpoint(setup, module_env):
    """ingress-nginx's default: the session's endpoint refuses connections, every attempt of the
    request still goes there (the client gets 502, no new cookie); when it answers again, the
    same cookie leads back to it."""
    router, b = setup
    c = Client(router, "keep")
    pod, value = _pin(c)
    target = next(x for x in b["keep"] if x.pod == pod)
    cookie = {"Cookie": f"INGRESSCOOKIE={value}"}
    assert c.many(20, headers=cookie) == [(200, pod, None)] * 20
    target.stop()
    failed = c.many(3, headers=cookie)
    print(f"change-on-failure off, endpoint {pod} stopped: {failed}")
    assert failed == [(502, "", None)] * 3, failed
    # Every attempt (one per endpoint of the Service) went to the stopped endpoint.
    last = _access_lines(router, "keep", 24)[-3:]
    assert all(e.get("attempts") == 3 and e.get("upstream") == target.addr for e in last), last
    module_env.echo("keep", f"{pod}-back", port=target.port)
    back = c.many(10, headers=cookie)
    assert back == [(200, f"{pod}-back", None)] * 10, back
    c.close()


def test_change_on_failure_on_moves_the_session(setup):
    router, b = setup
    c = Client(router, "change")
    pod, value = _pin(c)
    target = next(x for x in b["change"] if x.pod == pod)
    target.stop()
    status, other, sc = c.get(headers={"Cookie": f"INGRESSCOOKIE={value}"})
    new_value = cookie_of(sc)
    print(f"change-on-failure on, endpoint {pod} stopped: served by {other}, cookie {value} -> {new_value}")
    assert status == 200 and other != pod and new_value and new_value != value, (status, other, sc)
    # The new cookie stays on the endpoint that answered.
    again = c.many(50, headers={"Cookie": f"INGRESSCOOKIE={new_value}"})
    assert again == [(200, other, None)] * 50, Counter(again)
    # The old cookie still names the stopped endpoint: moved again, with a new cookie each time.
    old = c.many(10, headers={"Cookie": f"INGRESSCOOKIE={value}"})
    assert all(st == 200 and p != pod and cookie_of(sc) for st, p, sc in old), old
    c.close()


OLD_CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/60.0.3112.113 Safari/537.36")
IOS_12 = ("Mozilla/5.0 (iPhone; CPU iPhone OS 12_1_4 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/12.0 Mobile/15E148 Safari/604.1")
CURRENT_CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/131.0.0.0 Safari/537.36")


def test_conditional_samesite_none_by_user_agent(setup):
    router, _ = setup
    c = Client(router, "samesite")
    got = {name: c.get(headers={"User-Agent": ua})[2]
           for name, ua in [("old-chrome", OLD_CHROME), ("ios12", IOS_12), ("current", CURRENT_CHROME)]}
    got["none"] = c.get()[2]
    c.close()
    print(f"conditional SameSite=None: {got}")
    for name in ("old-chrome", "ios12"):
        assert got[name] and "SameSite" not in got[name] and "; Secure" in got[name], (name, got[name])
    for name in ("current", "none"):
        assert got[name] and "; SameSite=None; Secure" in got[name], (name, got[name])
    # Without the annotation, every client gets SameSite=None.
    c = Client(router, "samesite-always")
    always = c.get(headers={"User-Agent": OLD_CHROME})[2]
    c.close()
    assert always and "; SameSite=None; Secure" in always, always


def _sessions(router, case: str, n: int) -> list[tuple[str, str]]:
    """`n` new sessions: (cookie value, endpoint) each."""
    c = Client(router, case)
    out = []
    for status, pod, sc in c.many(n):
        assert status == 200 and cookie_of(sc), (status, sc)
        out.append((cookie_of(sc), pod))
    c.close()
    return out


def _replay(router, case: str, sessions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The sessions' requests again, each with its cookie: (cookie value, endpoint now)."""
    c = Client(router, case)
    deadline = time.monotonic() + LOOP_SECONDS
    out = []
    for value, _ in sessions:
        assert time.monotonic() < deadline, f"{len(sessions)} requests took over {LOOP_SECONDS}s"
        status, pod, sc = c.get(headers={"Cookie": f"INGRESSCOOKIE={value}"})
        assert status == 200 and sc is None, (status, sc)
        out.append((value, pod))
    c.close()
    return out


def test_affinity_mode_balanced_moves_a_share_of_sessions_on_scale_up(setup):
    """1,000 sessions over 4 endpoints, then 6: in balanced mode about 2/6 move, each to one of the
    new endpoints, without a new cookie; persistent sessions all stay."""
    router, b = setup
    balanced = _sessions(router, "scale-balanced", 1000)
    persistent = _sessions(router, "scale-persistent", 1000)
    assert len({v for v, _ in balanced}) == 1000, "balanced cookies are random keys"
    spread = Counter(p for _, p in balanced)
    assert set(spread) == {"n0", "n1", "n2", "n3"} and min(spread.values()) >= 150, spread
    assert _replay(router, "scale-balanced", balanced) == balanced
    router.write("scale.yaml", backend_objects("scale", b["scale"]))
    c = Client(router, "scale-balanced")
    wait_until(lambda: any(c.get()[1] in ("n4", "n5") for _ in range(20)), RELOAD_SLA + MEASURE_SLACK,
               desc="the new endpoints take sessions")
    c.close()
    after = _replay(router, "scale-balanced", balanced)
    moved = [now for (_, was), (_, now) in zip(balanced, after) if now != was]
    print(f"affinity-mode balanced: {len(moved)} of 1000 sessions moved from 4 to 6 endpoints "
          f"({Counter(moved)})")
    assert all(now in ("n4", "n5") for now in moved), "a session moved between two old endpoints"
    assert 220 <= len(moved) <= 450, f"{len(moved)} of 1000 moved (2/6 = 333 expected)"
    kept = _replay(router, "scale-persistent", persistent)
    moved_p = [now for (_, was), (_, now) in zip(persistent, kept) if now != was]
    print(f"affinity-mode persistent: {len(moved_p)} of 1000 sessions moved")
    assert not moved_p


@pytest.mark.parametrize("case,annotation", [
    ("bad-lb", "load-balance"),
    ("bad-hash", "upstream-hash-by"),
    ("bad-affinity", "affinity"),
    ("bad-cookie", "session-cookie-samesite"),
    ("bad-mode", "affinity-mode"),
    ("bad-change", "session-cookie-change-on-failure"),
    ("bad-conditional", "session-cookie-conditional-samesite-none"),
    ("bad-failures", "outlier-consecutive-failures"),
    ("bad-ejection", "outlier-ejection-time"),
    ("bad-check", "health-check-path"),
    ("bad-check-interval", "health-check-interval"),
])
def test_invalid_values_are_reported_and_the_route_served(setup, case, annotation):
    router, _ = setup
    assert annotation in invalid_annotation_detail(router, case)
    c = Client(router, case)
    status, pod, _ = c.get()
    c.close()
    assert (status, pod) == (200, "app-0")


def test_invalid_values_are_counted(setup):
    router, _ = setup
    exp = scrape(router.admin_port)
    assert exp.sum("tandem_config_problems", kind="Ingress", reason="invalid_annotation") >= 11


def test_health_checks_take_a_failing_endpoint_out_and_back(setup, module_env):
    router, b = setup
    unhealthy = lambda: scrape(router.admin_port).value(  # noqa: E731
        "tandem_endpoints_unhealthy", namespace="default", service="checked")
    wait_until(lambda: unhealthy() == 1, 5, desc="the failing endpoint marked unhealthy")
    router.wait_log(rf'failed its health checks.*"default/checked:http".*"{re.escape(b["checked"][0].addr)}"',
                    desc="unhealthy logged with the endpoint")
    c = Client(router, "checked")
    got = Counter(pod for _, pod, _ in c.many(60))
    assert got["sick"] == 0 and sum(got.values()) == 60, got
    # It recovers (same address, now healthy): back after two passing checks.
    port = b["checked"][0].port
    b["checked"][0].stop()
    module_env.echo("checked", "cured", port=port)
    wait_until(lambda: unhealthy() == 0, 5, desc="the endpoint healthy again")
    got = Counter(pod for _, pod, _ in c.many(30))
    assert got["cured"] == 10, got
    c.close()


def test_health_checks_never_empty_a_backend(setup):
    """Every endpoint fails its checks: requests still go to all of them (as nginx does)."""
    router, _ = setup
    wait_until(lambda: scrape(router.admin_port).value(
        "tandem_endpoints_unhealthy", namespace="default", service="allsick") == 2, 5,
        desc="both endpoints marked unhealthy")
    c = Client(router, "allsick")
    got = Counter((status, pod) for status, pod, _ in c.many(20))
    c.close()
    assert got == Counter({(503, "sick-0"): 10, (503, "sick-1"): 10}), got


def _shares(router, case: str, n: int) -> Counter:
    c = Client(router, case)
    got = Counter(pod if status == 200 else f"status {status}" for status, pod, _ in c.many(n))
    c.close()
    return got


def test_weighted_round_robin_shares(setup):
    """Weights 3:1:0 over 400 requests: 300/100/0 (exact per cycle of 4; ±5 % allowed)."""
    router, _ = setup
    got = _shares(router, "wrr", 400)
    print(f"weights 3:1:0 (127.0.0.2=3 by IP, ip:port=1, ip:port=0): {dict(got)} of 400")
    assert sum(got.values()) == 400 and set(got) <= {"heavy", "light"}, got
    assert 285 <= got["heavy"] <= 315 and 95 <= got["light"] <= 105, got
    assert got["off"] == 0, got


def test_weights_of_a_selector_less_service(setup):
    """v1 Endpoints, weights 2:1 by ip:port → 200/100 of 300."""
    router, _ = setup
    got = _shares(router, "legacy", 300)
    print(f"selector-less Service, weights 2:1: {dict(got)} of 300")
    assert sum(got.values()) == 300 and 190 <= got["m0"] <= 210 and 95 <= got["m1"] <= 105, got


def test_weighted_round_robin_interleaves(setup):
    """Smooth, not blocked: the light endpoint's turn comes once in every 4 requests."""
    router, _ = setup
    c = Client(router, "wrr")
    pods = [pod for _, pod, _ in c.many(40)]
    c.close()
    at = [i for i, p in enumerate(pods) if p == "light"]
    assert len(at) == 10 and all(b - a == 4 for a, b in zip(at, at[1:])), pods


def test_zone_weights(setup):
    """zone-a=1, zone-b=2 over EndpointSlice zones: a0, a1 at 1, b0 at 2 → 100/100/200 of 400."""
    router, _ = setup
    got = _shares(router, "zone", 400)
    print(f"zone weights zone-a=1 (a0, a1), zone-b=2 (b0): {dict(got)} of 400")
    assert sum(got.values()) == 400, got
    assert 190 <= got["b0"] <= 210 and all(95 <= got[p] <= 105 for p in ("a0", "a1")), got


def test_weight_change_at_runtime(setup):
    """Changing the Service annotation changes the shares without restart: 3:1:0 → 1:1:2, and
    back. A session pinned to an endpoint whose weight went to 0 stays there (like draining);
    new sessions never go there."""
    router, b = setup
    heavy, light, off = b["wrr"]
    started = time.monotonic()
    router.write("weights.yaml", [d for d in _read(router, "weights.yaml") if not _is_wrr(d)]
                 + wrr_objects(b, f"127.0.0.2=1, {light.addr}=1, {off.addr}=2"))
    c = Client(router, "wrr")
    wait_until(lambda: Counter(p for _, p, _ in c.many(8))["off"] == 4, RELOAD_SLA + MEASURE_SLACK + 2,
               desc="the new weights served")
    took = time.monotonic() - started
    c.close()
    got = _shares(router, "wrr", 400)
    print(f"after the change to 1:1:2 ({took:.2f}s): {dict(got)} of 400")
    try:
        assert sum(got.values()) == 400, got
        assert 190 <= got["off"] <= 210 and all(95 <= got[p] <= 105 for p in ("heavy", "light")), got
        assert router.proc.alive(), "the router exited"
        # A session pinned to "off" while it weighs 2.
        c = Client(router, "wrr-sticky")
        pinned = next((cookie_of(sc) for _, p, sc in c.many(8) if p == "off"), None)
        c.close()
        assert pinned, "no new session went to the endpoint of weight 2 in 8"
    finally:
        router.write("weights.yaml", [d for d in _read(router, "weights.yaml") if not _is_wrr(d)]
                     + wrr_objects(b, f"127.0.0.2=3, {light.addr}=1, {off.addr}=0"))
        c = Client(router, "wrr")
        wait_until(lambda: Counter(p for _, p, _ in c.many(8))["off"] == 0, RELOAD_SLA + MEASURE_SLACK + 2,
                   desc="weights restored")
        c.close()
    c = Client(router, "wrr-sticky")
    kept = Counter(p for _, p, _ in c.many(40, headers={"Cookie": f"INGRESSCOOKIE={pinned}"}))
    fresh = Counter(p for _, p, _ in c.many(40))
    c.close()
    print(f"weight 0: pinned session {dict(kept)}, new sessions {dict(fresh)}")
    assert kept == Counter({"off": 40}), kept
    assert fresh["off"] == 0 and fresh["heavy"] == 30 and fresh["light"] == 10, fresh


def _is_wrr(doc: dict) -> bool:
    meta = doc.get("metadata", {})
    return meta.get("name") == "wrr" or meta.get("labels", {}).get("kubernetes.io/service-name") == "wrr"


def test_invalid_weights_are_reported_and_the_service_served_unweighted(setup):
    router, _ = setup
    detail = invalid_annotation_detail(router, "wbad")
    assert "endpoint-weights" in detail and "300" in detail, detail
    entry = next(e for e in router.json_logs() if e.get("reason") == "invalid_annotation" and e.get("name") == "wbad")
    assert entry.get("kind") == "Service", entry
    got = _shares(router, "wbad", 100)
    assert got == Counter({"p0": 50, "p1": 50}), got
    exp = scrape(router.admin_port)
    assert exp.value("tandem_config_problems", kind="Service", reason="invalid_annotation") >= 1


def test_all_zero_weights_are_reported_and_read_as_one(setup):
    router, _ = setup
    found = wait_until(lambda: [e for e in router.json_logs()
                                if e.get("reason") == "all_weights_zero" and e.get("name") == "wzero"],
                       10, desc="all_weights_zero logged")
    assert found[0].get("kind") == "Service", found
    got = _shares(router, "wzero", 100)
    assert got == Counter({"p0": 50, "p1": 50}), got
    assert scrape(router.admin_port).value("tandem_config_problems", kind="Service", reason="all_weights_zero") == 1
