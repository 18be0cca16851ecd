"""Unit tests of the fake API server itself, with plain stdlib HTTP clients (no Rust involved)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import quote

import pytest

try:  # imported as tests.fakeapi.test_fake (rootdir) or fakeapi.test_fake (tests/ on sys.path)
    from .server import FakeApiServer
except ImportError:  # pragma: no cover
    from fakeapi.server import FakeApiServer

ING = "/apis/networking.k8s.io/v1/ingresses"
NS_ING = "/apis/networking.k8s.io/v1/namespaces/default/ingresses"


def ingress(name, ns="default", cls="tandem-router", host="a.example"):
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"ingressClassName": cls, "rules": [{"host": host}]}}


def secret(name, typ="kubernetes.io/tls", ns="default"):
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
            "type": typ, "data": {"tls.crt": "", "tls.key": ""}}


@pytest.fixture
def fake():
    f = FakeApiServer(bookmark_interval=0.2)
    f.start()
    yield f
    f.stop()


def req(fake, method, path, body=None, ctype="application/json", token="x"):
    data = json.dumps(body).encode() if body is not None else None
    r = urllib.request.Request(fake.url + path, data=data, method=method,
                               headers={"Content-Type": ctype, "Authorization": f"Bearer {token}",
                                        "User-Agent": f"test-{token}"})
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


class Watch:
    """A watch stream over a raw socket, de-chunked by hand so that a clean end (terminating
    zero-size chunk) can be told from an abrupt one (connection closed mid-stream)."""

    def __init__(self, fake, path):
        self.sock = socket.create_connection((fake.host, fake.port), timeout=10)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n".encode())
        self.f = self.sock.makefile("rb")
        status = self.f.readline()
        assert b" 200 " in status, status
        headers = {}
        while (h := self.f.readline()) not in (b"\r\n", b""):
            k, _, v = h.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        assert headers.get("transfer-encoding") == "chunked", headers
        self.events: list[dict] = []
        self.ended: str | None = None  # "clean" (terminating chunk) or "abrupt"
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        buf = b""
        try:
            while True:
                size_line = self.f.readline()
                if not size_line.endswith(b"\r\n"):
                    self.ended = "abrupt"
                    return
                size = int(size_line.strip(), 16)
                if size == 0:
                    self.ended = "clean"
                    return
                data = self.f.read(size + 2)
                if len(data) != size + 2:
                    self.ended = "abrupt"
                    return
                buf += data[:-2]
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    self.events.append(json.loads(line))
        except (OSError, ValueError):
            self.ended = "abrupt"

    def wait(self, pred, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self):
                return True
            time.sleep(0.01)
        raise AssertionError(f"watch condition not met; events={self.events} ended={self.ended}")

    def types(self):
        return [e["type"] for e in self.events if e["type"] != "BOOKMARK"]

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def test_list_items_carry_kind_and_rv(fake):
    fake.put(ingress("a"))
    fake.put(ingress("b", ns="other"))
    code, lst = req(fake, "GET", ING)
    assert code == 200 and lst["kind"] == "IngressList" and lst["apiVersion"] == "networking.k8s.io/v1"
    assert int(lst["metadata"]["resourceVersion"]) == fake.resource_version
    assert [(i["kind"], i["apiVersion"], i["metadata"]["name"]) for i in lst["items"]] == [
        ("Ingress", "networking.k8s.io/v1", "a"), ("Ingress", "networking.k8s.io/v1", "b")]
    code, lst = req(fake, "GET", "/apis/networking.k8s.io/v1/namespaces/other/ingresses")
    assert [i["metadata"]["name"] for i in lst["items"]] == ["b"]
    code, st = req(fake, "GET", NS_ING + "/missing")
    assert code == 404 and st["kind"] == "Status" and st["reason"] == "NotFound" and st["code"] == 404
    code, st = req(fake, "GET", "/apis/networking.k8s.io/v1/ingressclasses")
    assert code == 200 and st["kind"] == "IngressClassList"


def test_pagination_over_500(fake):
    fake.put_many(ingress(f"ing-{i:04d}") for i in range(1203))
    names, pages, cont = [], 0, ""
    while True:
        code, lst = req(fake, "GET", f"{ING}?limit=500" + (f"&continue={quote(cont)}" if cont else ""))
        assert code == 200
        pages += 1
        names += [i["metadata"]["name"] for i in lst["items"]]
        cont = lst["metadata"].get("continue")
        if not cont:
            break
        assert len(lst["items"]) == 500
    assert pages == 3 and len(names) == 1203 and len(set(names)) == 1203


def test_field_selector_tls_secrets(fake):
    fake.put(secret("tls1"))
    fake.put(secret("opaque", typ="Opaque"))
    code, lst = req(fake, "GET", "/api/v1/secrets?fieldSelector=" + quote("type=kubernetes.io/tls", safe=""))
    assert [i["metadata"]["name"] for i in lst["items"]] == ["tls1"]
    rv = lst["metadata"]["resourceVersion"]
    w = Watch(fake, f"/api/v1/secrets?watch=true&resourceVersion={rv}&fieldSelector=type%3Dkubernetes.io%2Ftls")
    fake.put(secret("opaque2", typ="Opaque"))
    fake.put(secret("tls2"))
    w.wait(lambda w: len(w.types()) >= 1)
    time.sleep(0.1)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in w.events if e["type"] != "BOOKMARK"] == [
        ("ADDED", "tls2")]
    w.close()


def test_watch_replay_live_and_timeout(fake):
    fake.put(ingress("a"))
    rv = fake.resource_version
    fake.put(ingress("b"))
    fake.patch("ingresses", "a", {"spec": {"rules": [{"host": "changed.example"}]}})
    fake.delete("ingresses", "b")
    w = Watch(fake, f"{ING}?watch=1&resourceVersion={rv}&timeoutSeconds=2")
    w.wait(lambda w: len(w.types()) >= 3)
    assert w.types() == ["ADDED", "MODIFIED", "DELETED"]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in w.events]
    assert rvs == sorted(rvs) and rvs[0] > rv
    fake.put(ingress("c"))
    w.wait(lambda w: len(w.types()) >= 4)
    assert w.events[-1]["object"]["metadata"]["name"] == "c"
    # namespaced watch filters other namespaces
    w2 = Watch(fake, f"/apis/networking.k8s.io/v1/namespaces/other/ingresses?watch=true&resourceVersion={rv}")
    fake.put(ingress("d", ns="other"))
    w2.wait(lambda w: len(w.types()) >= 1)
    assert [e["object"]["metadata"]["name"] for e in w2.events if e["type"] != "BOOKMARK"] == ["d"]
    # timeoutSeconds ends the stream cleanly
    w.wait(lambda w: w.ended is not None, timeout=5)
    assert w.ended == "clean"
    w.close(), w2.close()


def test_bookmarks_when_idle(fake):
    w = Watch(fake, f"{ING}?watch=true&resourceVersion={fake.resource_version}&allowWatchBookmarks=true")
    w.wait(lambda w: any(e["type"] == "BOOKMARK" for e in w.events), timeout=3)
    bm = next(e for e in w.events if e["type"] == "BOOKMARK")["object"]
    assert bm == {"kind": "Ingress", "apiVersion": "networking.k8s.io/v1",
                  "metadata": {"resourceVersion": str(fake.resource_version)}}
    w.close()
    w = Watch(fake, f"{ING}?watch=true&resourceVersion={fake.resource_version}")
    time.sleep(0.6)
    assert w.events == []
    w.close()


def test_410_expire_and_history_overflow(fake):
    fake.put(ingress("a"))
    rv = fake.resource_version
    w = Watch(fake, f"{ING}?watch=true&resourceVersion={rv}&allowWatchBookmarks=true")
    fake.expire_watches()
    w.wait(lambda w: w.ended is not None)
    err = w.events[-1]
    assert err["type"] == "ERROR" and err["object"]["code"] == 410 and err["object"]["reason"] == "Expired"
    assert w.ended == "clean"
    # resuming from the old RV -> 410 again; a relist gives a fresh RV that works
    w = Watch(fake, f"{ING}?watch=true&resourceVersion={rv}")
    w.wait(lambda w: w.ended is not None)
    assert w.events[0]["object"]["code"] == 410
    _, lst = req(fake, "GET", ING)
    w = Watch(fake, f"{ING}?watch=true&resourceVersion={lst['metadata']['resourceVersion']}")
    fake.put(ingress("b"))
    w.wait(lambda w: w.types() == ["ADDED"])
    w.close()

    small = FakeApiServer(history_limit=10).start()
    try:
        small.put(ingress("x"))
        old = small.resource_version
        for i in range(30):
            small.put(ingress(f"y{i}"))
        w = Watch(small, f"{ING}?watch=true&resourceVersion={old}")
        w.wait(lambda w: w.ended is not None)
        assert w.events[0]["type"] == "ERROR" and w.events[0]["object"]["code"] == 410
    finally:
        small.stop()


def test_status_subresource_and_write_log(fake):
    fake.put(ingress("a"))
    body = {"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}, "spec": {"ingressClassName": "evil"}}
    code, obj = req(fake, "PATCH", NS_ING + "/a/status", body, "application/merge-patch+json", token="r1")
    assert code == 200
    assert obj["status"] == body["status"] and obj["spec"]["ingressClassName"] == "tandem-router"
    # a main-resource write keeps the status
    code, obj = req(fake, "PUT", NS_ING + "/a", dict(ingress("a"), status={}))
    assert code == 200 and obj["status"]["loadBalancer"]["ingress"] == [{"ip": "10.0.0.1"}]
    # identical status write: recorded, but no RV bump
    rv = fake.resource_version
    req(fake, "PATCH", NS_ING + "/a/status", body, "application/merge-patch+json", token="r1")
    assert fake.resource_version == rv
    ws = fake.status_writes("a")
    assert len(ws) == 2 and {w.client for w in ws} == {"r1"} and ws[0].user_agent == "test-r1"
    assert ws[0].body == body and fake.status_write_counts() == {"default/a": 2}
    # clear with a merge patch null
    code, obj = req(fake, "PATCH", NS_ING + "/a/status", {"status": {"loadBalancer": None}},
                    "application/merge-patch+json")
    assert obj["status"] == {}
    code, _ = req(fake, "PATCH", NS_ING + "/missing/status", body, "application/merge-patch+json")
    assert code == 404


def test_lease_create_conflict_update(fake):
    path = "/apis/coordination.k8s.io/v1/namespaces/default/leases"
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"},
             "spec": {"holderIdentity": "a", "leaseDurationSeconds": 3}}
    code, created = req(fake, "POST", path, lease)
    assert code == 201 and created["metadata"]["namespace"] == "default"
    code, st = req(fake, "POST", path, lease)
    assert code == 409 and st["reason"] == "AlreadyExists"
    stale = dict(created, spec={"holderIdentity": "b"})
    code, upd = req(fake, "PUT", path + "/l", stale)
    assert code == 200 and upd["spec"]["holderIdentity"] == "b"
    code, st = req(fake, "PUT", path + "/l", stale)  # same (now stale) RV again
    assert code == 409 and st["reason"] == "Conflict"
    code, _ = req(fake, "PUT", path + "/nope", dict(lease, metadata={"name": "nope"}))
    assert code == 404
    code, st = req(fake, "PATCH", path + "/l", {"metadata": {"resourceVersion": "1"}, "spec": {"holderIdentity": "c"}},
                   "application/merge-patch+json")
    assert code == 409
    assert fake.lease("l")["spec"]["holderIdentity"] == "b"


def test_patch_flavours_delete_and_events(fake):
    p = "/api/v1/namespaces/default/services"
    code, obj = req(fake, "PATCH", p + "/s", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                                              "spec": {"ports": [{"port": 80}]}}, "application/apply-patch+yaml")
    assert code == 201
    code, obj = req(fake, "PATCH", p + "/s", {"metadata": {"labels": {"a": "b"}}}, "application/strategic-merge-patch+json")
    assert code == 200 and obj["metadata"]["labels"] == {"a": "b"} and obj["spec"]["ports"] == [{"port": 80}]
    code, obj = req(fake, "PATCH", p + "/s", [{"op": "replace", "path": "/spec/ports/0/port", "value": 81}],
                    "application/json-patch+json")
    assert code == 200 and obj["spec"]["ports"][0]["port"] == 81
    code, _ = req(fake, "DELETE", p + "/s")
    assert code == 200 and fake.get("services", "s") is None
    code, _ = req(fake, "DELETE", p + "/s")
    assert code == 404
    ev = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "a.123"},
          "regarding": {"kind": "Ingress", "name": "a", "namespace": "default"}, "reason": "Rejected",
          "note": "bad path", "type": "Warning", "action": "Translate", "reportingController": "tandem",
          "reportingInstance": "x", "eventTime": "2024-01-01T00:00:00.000000Z"}
    code, _ = req(fake, "POST", "/apis/events.k8s.io/v1/namespaces/default/events", ev)
    assert code == 201
    code, _ = req(fake, "POST", "/api/v1/namespaces/default/events",
                  dict(ev, apiVersion="v1", involvedObject=ev["regarding"], metadata={"name": "b.1"}))
    assert code == 201
    assert [e["reason"] for e in fake.events(involved="a")] == ["Rejected", "Rejected"]


def test_stop_drops_watches_and_start_keeps_store(fake):
    fake.put(ingress("a"))
    port = fake.port
    w = Watch(fake, f"{ING}?watch=true&resourceVersion={fake.resource_version}")
    idle = socket.create_connection((fake.host, port))
    fake.wait_watches(["ingresses"])
    fake.stop()
    w.wait(lambda w: w.ended is not None)
    assert w.ended == "abrupt"
    idle.settimeout(2)
    try:  # an idle connection is closed too (FIN, or RST if it was still in the accept queue)
        assert idle.recv(10) == b""
    except ConnectionResetError:
        pass
    with pytest.raises(OSError):
        socket.create_connection((fake.host, port), timeout=1)
    fake.put(ingress("b"))  # changed during the outage
    fake.start()
    assert fake.port == port
    code, lst = req(fake, "GET", ING)
    assert [i["metadata"]["name"] for i in lst["items"]] == ["a", "b"]


def test_faults_delays_and_client_prefix(fake):
    fake.fail_requests(2, 503, match="/ingresses")
    assert req(fake, "GET", ING)[0] == 503
    assert req(fake, "GET", "/api/v1/services")[0] == 200
    assert req(fake, "GET", ING)[0] == 503
    assert req(fake, "GET", ING)[0] == 200
    fake.delay_list("endpointslices", 0.5)
    t0 = time.monotonic()
    assert req(fake, "GET", "/apis/discovery.k8s.io/v1/endpointslices")[0] == 200
    assert time.monotonic() - t0 >= 0.5
    fake.put(ingress("a"))
    code, _ = req(fake, "PATCH", "/__client/replica-2" + NS_ING + "/a/status", {"status": {}},
                  "application/merge-patch+json", token="")
    assert code == 200 and fake.status_writes()[-1].client == "replica-2"


def test_control_http_endpoints(fake):
    code, res = req(fake, "POST", "/__fake/objects", [ingress("a"), secret("s")])
    assert code == 200 and res["applied"] == 2
    assert fake.get("secrets", "s") is not None
    code, _ = req(fake, "DELETE", "/__fake/objects/ingresses/default/a")
    assert code == 200 and fake.get("ingresses", "a") is None
    assert req(fake, "POST", "/__fake/expire-watches")[0] == 200
    assert req(fake, "GET", "/__fake/requests")[0] == 200


# --------------------------------------------------------------------------- authentication and RBAC

try:
    from . import rbac
except ImportError:  # pragma: no cover
    from fakeapi import rbac

RBAC = "rbac.authorization.k8s.io/v1"
SA_USER = "system:serviceaccount:tandem:router"


def role(name, rules, ns=None, kind=None, labels=None, aggregate=None):
    meta = {"name": name}
    if ns:
        meta["namespace"] = ns
    if labels:
        meta["labels"] = labels
    o = {"apiVersion": RBAC, "kind": kind or ("Role" if ns else "ClusterRole"), "metadata": meta, "rules": rules}
    if aggregate:
        o["aggregationRule"] = {"clusterRoleSelectors": aggregate}
    return o


def binding(name, ref_kind, ref_name, subjects, ns=None):
    meta = {"name": name}
    if ns:
        meta["namespace"] = ns
    return {"apiVersion": RBAC, "kind": "RoleBinding" if ns else "ClusterRoleBinding", "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": ref_kind, "name": ref_name},
            "subjects": subjects}


def sa_subject(name="router", ns="tandem"):
    return {"kind": "ServiceAccount", "name": name, "namespace": ns}


def attrs(method, path, who=None, **q):
    return rbac.request_attributes(method, path, q, who or rbac.service_account_user("tandem", "router"))


@pytest.mark.parametrize("method,path,q,want", [
    ("GET", "/apis/networking.k8s.io/v1/ingresses", {}, ("list", "networking.k8s.io", "ingresses", "", "", "")),
    ("GET", "/apis/networking.k8s.io/v1/ingresses", {"watch": "true"},
     ("watch", "networking.k8s.io", "ingresses", "", "", "")),
    ("GET", "/api/v1/namespaces/ns1/secrets", {"watch": "1", "fieldSelector": "type=kubernetes.io/tls"},
     ("watch", "", "secrets", "", "ns1", "")),
    ("GET", "/api/v1/namespaces/ns1/secrets", {"fieldSelector": "metadata.name=tls-a"},
     ("list", "", "secrets", "", "ns1", "tls-a")),
    ("GET", "/api/v1/namespaces/ns1/services/web", {}, ("get", "", "services", "", "ns1", "web")),
    ("POST", "/apis/coordination.k8s.io/v1/namespaces/ns1/leases", {},
     ("create", "coordination.k8s.io", "leases", "", "ns1", "")),
    ("PUT", "/apis/coordination.k8s.io/v1/namespaces/ns1/leases/l", {},
     ("update", "coordination.k8s.io", "leases", "", "ns1", "l")),
    ("PATCH", "/apis/networking.k8s.io/v1/namespaces/ns1/ingresses/web/status", {},
     ("patch", "networking.k8s.io", "ingresses", "status", "ns1", "web")),
    ("DELETE", "/api/v1/namespaces/ns1/pods/p", {}, ("delete", "", "pods", "", "ns1", "p")),
    ("DELETE", "/api/v1/namespaces/ns1/pods", {}, ("deletecollection", "", "pods", "", "ns1", "")),
    ("GET", "/api/v1/namespaces", {}, ("list", "", "namespaces", "", "", "")),
    ("GET", "/api/v1/namespaces/ns1", {}, ("get", "", "namespaces", "", "ns1", "ns1")),
    ("PUT", "/api/v1/namespaces/ns1/status", {}, ("update", "", "namespaces", "status", "ns1", "ns1")),
    ("GET", "/apis/networking.k8s.io/v1/ingressclasses/tandem-router", {},
     ("get", "networking.k8s.io", "ingressclasses", "", "", "tandem-router")),
])
def test_rbac_request_attributes(method, path, q, want):
    a = attrs(method, path, **q)
    assert a.resource_request
    assert (a.verb, a.api_group, a.resource, a.subresource, a.namespace, a.name) == want


@pytest.mark.parametrize("method,path,verb", [
    ("GET", "/version", "get"), ("GET", "/healthz", "get"), ("GET", "/api", "get"), ("GET", "/api/v1", "get"),
    ("GET", "/apis/networking.k8s.io/v1", "get"), ("POST", "/logs", "post"),
])
def test_rbac_non_resource_attributes(method, path, verb):
    a = attrs(method, path)
    assert not a.resource_request and a.verb == verb and a.path == path


def test_rbac_rules_wildcards_subresources_and_names():
    who = rbac.service_account_user("tandem", "router")
    pol = rbac.Policy.from_objects([
        role("r", [
            {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "update"],
             "resourceNames": ["tandem-router-x"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["patch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["*"], "verbs": ["*"]},
        ]),
        binding("b", "ClusterRole", "r", [sa_subject()]),
    ])

    def ok(method, path, **q):
        return pol.authorize(rbac.request_attributes(method, path, q, who)).allowed

    assert ok("GET", "/apis/networking.k8s.io/v1/ingresses", watch="true")
    assert ok("GET", "/apis/networking.k8s.io/v1/namespaces/a/ingresses/x")
    # a rule for "ingresses" does not cover "ingresses/status"; "*/status" does, for its verbs only
    assert not ok("PUT", "/apis/networking.k8s.io/v1/namespaces/a/ingresses/x/status")
    assert ok("PATCH", "/apis/networking.k8s.io/v1/namespaces/a/ingresses/x/status")
    assert not ok("PATCH", "/apis/networking.k8s.io/v1/namespaces/a/ingresses/x")
    # wrong group: "ingresses" in extensions is not granted
    assert not ok("GET", "/apis/extensions/v1beta1/ingresses")
    # resourceNames: get/update the named Lease only; create cannot be limited by name
    assert ok("GET", "/apis/coordination.k8s.io/v1/namespaces/a/leases/tandem-router-x")
    assert ok("PUT", "/apis/coordination.k8s.io/v1/namespaces/a/leases/tandem-router-x")
    assert not ok("GET", "/apis/coordination.k8s.io/v1/namespaces/a/leases/other")
    assert not ok("GET", "/apis/coordination.k8s.io/v1/namespaces/a/leases")
    assert not ok("GET", "/apis/coordination.k8s.io/v1/namespaces/a/leases", fieldSelector="metadata.name=other")
    assert ok("POST", "/apis/coordination.k8s.io/v1/namespaces/a/leases")
    assert not ok("DELETE", "/apis/coordination.k8s.io/v1/namespaces/a/leases/tandem-router-x")
    # "*" resources and verbs within one group; a subresource is covered by "*" too
    assert ok("DELETE", "/apis/discovery.k8s.io/v1/namespaces/a/endpointslices")
    assert ok("PUT", "/apis/discovery.k8s.io/v1/namespaces/a/endpointslices/s/status")
    assert not ok("GET", "/api/v1/secrets")
    # non-resource URLs through the bootstrap policy only
    assert ok("GET", "/version") and ok("GET", "/healthz") and ok("GET", "/api/v1")
    assert not ok("GET", "/metrics") and not ok("POST", "/version")
    assert not rbac.Policy.from_objects([], bootstrap=False).authorize(attrs("GET", "/version")).allowed
    anon = rbac.request_attributes("GET", "/version", {}, rbac.ANONYMOUS)
    assert pol.authorize(anon).allowed  # system:public-info-viewer
    assert not pol.authorize(rbac.request_attributes("GET", "/apis", {}, rbac.ANONYMOUS)).allowed


def test_rbac_bindings_namespaces_and_subjects():
    read = [{"apiGroups": [""], "resources": ["services", "secrets"], "verbs": ["get", "list", "watch"]}]
    pol = rbac.Policy.from_objects([
        role("read", read),
        role("ns-read", read, ns="apps"),
        # a ClusterRole through a RoleBinding: only in that namespace
        binding("rb1", "ClusterRole", "read", [sa_subject()], ns="apps"),
        # a Role through a RoleBinding; the SA subject without a namespace means the binding's
        binding("rb2", "Role", "ns-read", [{"kind": "ServiceAccount", "name": "edge"}], ns="apps"),
        # a group subject, cluster-wide
        binding("crb", "ClusterRole", "read", [{"kind": "Group", "name": "ops",
                                                "apiGroup": "rbac.authorization.k8s.io"}]),
        # a binding to a Role that does not exist
        binding("rb3", "Role", "missing", [sa_subject()], ns="apps"),
        role("nurl", [{"nonResourceURLs": ["/metrics", "/debug/*"], "verbs": ["get"]}]),
        binding("crb-u", "ClusterRole", "nurl", [{"kind": "User", "name": "alice"}]),
    ])
    router = rbac.service_account_user("tandem", "router")
    edge_apps = rbac.service_account_user("apps", "edge")
    edge_other = rbac.service_account_user("tandem", "edge")

    def ok(who, method, path, **q):
        return pol.authorize(rbac.request_attributes(method, path, q, who)).allowed

    assert ok(router, "GET", "/api/v1/namespaces/apps/services")
    assert not ok(router, "GET", "/api/v1/namespaces/other/services")
    assert not ok(router, "GET", "/api/v1/services"), "a RoleBinding must not grant an all-namespaces list"
    assert ok(edge_apps, "GET", "/api/v1/namespaces/apps/secrets", watch="true")
    assert not ok(edge_other, "GET", "/api/v1/namespaces/apps/secrets", watch="true")
    ops = rbac.user("bob", ["ops"])
    assert ok(ops, "GET", "/api/v1/secrets") and not ok(rbac.user("bob"), "GET", "/api/v1/secrets")
    alice = rbac.user("alice")
    assert ok(alice, "GET", "/metrics") and ok(alice, "GET", "/debug/pprof") and not ok(alice, "GET", "/debugx")
    assert ok(rbac.user("root", ["system:masters"]), "DELETE", "/api/v1/namespaces/x/secrets/y")
    # the missing Role is a denial reason, worded like the real authorizer
    d = pol.authorize(attrs("GET", "/api/v1/namespaces/apps/configmaps"))
    assert not d.allowed and d.reason == 'RBAC: role.rbac.authorization.k8s.io "missing" not found'


def test_rbac_aggregated_cluster_role():
    pol = rbac.Policy.from_objects([
        role("agg", [], aggregate=[{"matchLabels": {"tandem.dev/aggregate": "true"}}]),
        role("part", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
             labels={"tandem.dev/aggregate": "true"}),
        role("not-part", [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]),
        binding("b", "ClusterRole", "agg", [sa_subject()]),
    ])
    assert pol.authorize(attrs("GET", "/api/v1/namespaces/a/pods/p")).allowed
    assert not pol.authorize(attrs("GET", "/api/v1/namespaces/a/secrets/s")).allowed


@pytest.mark.parametrize("method,path,q,message", [
    ("GET", "/api/v1/secrets", {"watch": "true"},
     f'secrets is forbidden: User "{SA_USER}" cannot watch resource "secrets" in API group "" at the cluster scope'),
    ("GET", "/apis/coordination.k8s.io/v1/namespaces/tandem/leases/tandem-router", {},
     f'leases.coordination.k8s.io "tandem-router" is forbidden: User "{SA_USER}" cannot get resource "leases" '
     'in API group "coordination.k8s.io" in the namespace "tandem"'),
    ("PATCH", "/apis/networking.k8s.io/v1/namespaces/default/ingresses/web/status", {},
     f'ingresses.networking.k8s.io "web" is forbidden: User "{SA_USER}" cannot patch resource "ingresses/status" '
     'in API group "networking.k8s.io" in the namespace "default"'),
    ("GET", "/metrics", {}, f'forbidden: User "{SA_USER}" cannot get path "/metrics"'),
])
def test_rbac_forbidden_status_wording(method, path, q, message):
    a = attrs(method, path, **q)
    s = rbac.forbidden_status(a)
    assert s["code"] == 403 and s["reason"] == "Forbidden" and s["kind"] == "Status" and s["status"] == "Failure"
    assert s["message"] == message
    if a.resource_request:
        assert s["details"]["kind"] == a.resource and s["details"].get("name", "") == a.name
        assert s["details"].get("group", "") == a.api_group


def test_rbac_enforced_over_http():
    f = FakeApiServer(authorization=True, rbac_objects=[
        role("tandem-router", [
            {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses/status"], "verbs": ["patch"]},
        ]),
        binding("tandem-router", "ClusterRole", "tandem-router", [sa_subject()]),
    ]).start()
    try:
        tok = f.add_service_account_token("tandem", "router")
        root = f.add_token("root-token", "admin", ["system:masters"])
        f.put(ingress("web"))
        # the token of a ServiceAccount that does not exist is refused (401), as for a real SA token
        code, body = req(f, "GET", ING, token=tok)
        assert code == 401 and body["reason"] == "Unauthorized" and body["message"] == "Unauthorized"
        f.put({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "router", "namespace": "tandem"}})
        code, body = req(f, "GET", ING, token=tok)
        assert code == 200 and [i["metadata"]["name"] for i in body["items"]] == ["web"]
        code, _ = req(f, "PATCH", NS_ING + "/web/status", {"status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}},
                      ctype="application/merge-patch+json", token=tok)
        assert code == 200 and f.get("ingresses", "web")["status"]["loadBalancer"]["ingress"] == [{"ip": "1.2.3.4"}]
        # denied: 403 Status in the real server's words; recorded; the store is untouched
        code, body = req(f, "PATCH", NS_ING + "/web", {"spec": {"rules": []}}, ctype="application/merge-patch+json",
                         token=tok)
        assert code == 403 and body["reason"] == "Forbidden"
        assert body["message"] == (f'ingresses.networking.k8s.io "web" is forbidden: User "{SA_USER}" cannot patch '
                                   'resource "ingresses" in API group "networking.k8s.io" in the namespace "default"')
        assert f.get("ingresses", "web")["spec"]["rules"] == [{"host": "a.example"}]
        assert not f.writes(method="PATCH", subresource=""), "a denied request must not reach the store"
        code, body = req(f, "GET", "/api/v1/namespaces/default/secrets?watch=true", token=tok)
        assert code == 403 and "cannot watch resource \"secrets\"" in body["message"]
        code, _ = req(f, "GET", "/version", token=tok)
        assert code == 200
        code, body = req(f, "GET", ING, token="nobody-knows-me")
        assert code == 401
        assert [(d.code, d.client) for d in f.denials(user="")] == [(401, tok), (401, "nobody-knows-me")]
        ds = f.denials(user=SA_USER)
        assert [(d.code, d.verb, d.combined_resource, d.namespace, d.name) for d in ds] == [
            (403, "patch", "ingresses", "default", "web"), (403, "watch", "secrets", "default", "")]
        # the request log carries the authorizer's view of every request, allowed or not
        secrets = f.requests(resource="secrets", user=SA_USER)
        assert len(secrets) == 1 and secrets[0].authz == "denied" and secrets[0].code == 403
        assert [r.verb for r in f.requests(resource="ingresses/status")] == ["patch"]
        assert f.can(SA_USER, "patch", "ingresses/status", "default") and not f.can(SA_USER, "list", "secrets")
        # a policy change through the API (by a system:masters user) takes effect at once
        code, _ = req(f, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
                      binding("secrets", "ClusterRole", "reader", [sa_subject()], ns="default"), token=root)
        assert code == 201
        code, body = req(f, "GET", "/api/v1/namespaces/default/secrets", token=tok)
        assert code == 403 and body["message"].endswith(
            ': RBAC: clusterrole.rbac.authorization.k8s.io "reader" not found')
        f.put(role("reader", [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]))
        code, _ = req(f, "GET", "/api/v1/namespaces/default/secrets", token=tok)
        assert code == 200
        code, _ = req(f, "GET", "/api/v1/namespaces/other/secrets", token=tok)
        assert code == 403
        # anonymous
        r = urllib.request.Request(f.url + ING)
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(r, timeout=10)
        assert ei.value.code == 403 and 'User "system:anonymous" cannot list' in json.loads(ei.value.read())["message"]
        # switched off: everything goes again (the default for every other test)
        f.set_authorization(False)
        code, _ = req(f, "GET", "/api/v1/secrets", token="nobody-knows-me")
        assert code == 200
    finally:
        f.stop()


def test_rbac_off_by_default_records_attributes(fake):
    fake.add_token("t1", "system:serviceaccount:x:y")
    code, _ = req(fake, "GET", "/api/v1/namespaces/x/secrets?fieldSelector=type%3Dkubernetes.io%2Ftls", token="t1")
    assert code == 200
    code, _ = req(fake, "GET", ING, token="unknown")
    assert code == 200
    rs = fake.requests(resource="secrets")
    assert [(r.user, r.verb, r.namespace, r.authz) for r in rs] == [("system:serviceaccount:x:y", "list", "x", "")]
    [ing] = fake.requests(resource="ingresses")
    assert (ing.user, ing.verb, ing.client, ing.authz) == ("", "list", "unknown", "")
    assert fake.denials() == []
