"""Rejected objects get a Kubernetes Event naming the problem, rate-limited so a broken object
that stays broken across many rebuilds does not flood the API."""

from __future__ import annotations

import base64
import json
import time

from api_support import (EDGE_CLASS, ROUTER_CLASS, backend_ip, cluster, fake_only,  # noqa: F401
                         start_api_edge, start_router)
from e2e_lib import backend_objects, http_path, ingress, ingress_class, rule, wait_until


def event_text(e: dict) -> str:
    return " ".join(str(e.get(k) or "") for k in ("reason", "note", "message", "action"))


def event_writes(fake, since: float | None = None):
    return [w for w in fake.writes(resource="events", since=since) if w.method in ("POST", "PATCH", "PUT")]


def test_invalid_ingress_event_not_flooding(env, cluster):
    ip = backend_ip()
    a = env.echo("svc-a", host=ip)
    cluster.put(ingress_class(ROUTER_CLASS))
    cluster.put_many(backend_objects("svc-a", [a], namespace=cluster.ns))
    cluster.put(ingress("good", [rule(None, http_path("/good", "svc-a"))], namespace=cluster.ns))
    router = start_router(env, cluster, ["--publish-status-address", "10.0.0.1"], pod_name="ev", client_id="ev")
    bad = ingress("broken", [rule(None, http_path("no-slash", "svc-a"), http_path("/fine", "svc-a"))],
                  namespace=cluster.ns)
    cluster.put(bad)

    def rejected():
        evs = [e for e in cluster.events(involved="broken") if "no-slash" in event_text(e)]
        return evs

    evs = wait_until(rejected, 10, interval=0.1, desc="Event for Ingress broken naming the bad path")
    e = evs[0]
    regarding = e.get("regarding") or e.get("involvedObject") or {}
    assert regarding.get("kind") == "Ingress" and regarding.get("namespace") == cluster.ns, e
    assert e.get("type") == "Warning", e
    print(f"\nEvent: reason={e.get('reason')!r} note={e.get('note') or e.get('message')!r}")
    # the valid rule of the same Ingress is still served
    wait_until(lambda: router.get("/fine/x").service == "svc-a", 5, desc="valid rule of broken served")

    if cluster.real:
        return
    fake = fake_only(cluster)
    # many rebuilds while broken stays broken: a handful of event writes at most
    t0 = time.time()
    for i in range(30):
        cluster.put(ingress("good", [rule(None, http_path("/good", "svc-a"), http_path(f"/g{i}", "svc-a"))]))
        time.sleep(0.1)
    wait_until(lambda: router.get("/g29").service == "svc-a", 5, desc="last rebuild served")
    writes = [w for w in event_writes(fake) if "broken" in json.dumps(w.body or {})]
    later = [w for w in writes if w.time >= t0]
    print(f"event writes about 'broken': {len(writes)} total, {len(later)} during 30 rebuilds")
    assert len(later) <= 2, f"events flood the API: {[(w.method, w.path) for w in later]}"
    assert not [w for w in event_writes(fake) if "good" in json.dumps((w.body or {}).get("regarding") or {})], \
        "a valid Ingress got an Event"


def _edge_setup(cluster, env, secret_name: str):
    ip = backend_ip()
    a = env.echo("svc-a", host=ip)
    cluster.put(ingress_class(EDGE_CLASS, controller="tandem.dev/tls-edge"))
    cluster.put_many(backend_objects("svc-a", [a], namespace=cluster.ns))
    edge_ing = ingress("brand", [rule("brand.example", http_path("/", "svc-a"))], namespace=cluster.ns,
                       class_name=EDGE_CLASS)
    edge_ing["spec"]["tls"] = [{"hosts": ["brand.example"], "secretName": secret_name}]
    cluster.put(edge_ing)
    return start_api_edge(env, cluster, ["--publish-status-address", "10.0.0.2"], pod_name="edge-ev",
                          client_id="edge-ev")


def _wait_event_naming(cluster, needle: str):
    def named():
        return [e for e in cluster.events() if needle in json.dumps(e)]

    try:
        evs = wait_until(named, 10, interval=0.1, desc=f"an Event naming {needle}")
    except AssertionError:
        if not cluster.real:
            print("event writes:", [(w.method, w.path, w.code, w.body) for w in event_writes(cluster.fake)])
        raise
    assert all("BEGIN" not in json.dumps(e) for e in evs), "key material in an Event"
    print(f"\nEvent: {[(e.get('reason'), (e.get('regarding') or {}).get('kind'), e.get('note')) for e in evs]}")
    return evs


def test_missing_secret_event(env, cluster):
    """tls-edge: an edge Ingress naming a TLS Secret that does not exist gets an Event."""
    _edge_setup(cluster, env, "no-such-secret")
    _wait_event_naming(cluster, "no-such-secret")


def test_malformed_secret_event(env, cluster):
    """tls-edge: a kubernetes.io/tls Secret whose certificate cannot be parsed gets an Event."""
    garbage = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nnot a cert\n-----END CERTIFICATE-----\n").decode()
    cluster.put({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                 "metadata": {"name": "bad-cert", "namespace": cluster.ns},
                 "data": {"tls.crt": garbage, "tls.key": garbage}})
    edge = _edge_setup(cluster, env, "bad-cert")
    edge.wait_log("certificate rejected", 10)
    _wait_event_naming(cluster, "bad-cert")


def test_ingress_class_of_another_controller_gets_events(env, cluster):
    """Our IngressClass names another controller: its Ingresses are not served and each one
    gets a Warning Event saying why (kubectl describe ingress shows it)."""
    ip = backend_ip()
    a = env.echo("svc-a", host=ip)
    cluster.put(ingress_class(ROUTER_CLASS, controller="k8s.io/ingress-nginx"))
    cluster.put_many(backend_objects("svc-a", [a], namespace=cluster.ns))
    cluster.put(ingress("foreign", [rule(None, http_path("/foreign", "svc-a"))], namespace=cluster.ns))
    router = start_router(env, cluster, ["--publish-status-address", "10.0.0.1"], pod_name="cc", client_id="cc")

    def mismatch():
        return [e for e in cluster.events(involved="foreign") if "k8s.io/ingress-nginx" in event_text(e)]

    e = wait_until(mismatch, 10, interval=0.1, desc="Event on Ingress foreign naming the other controller")[0]
    assert e.get("type") == "Warning" and "class_controller_mismatch" in event_text(e), e
    assert router.get("/foreign").status == 404
    # Fixed: the IngressClass names our controller → served.
    cluster.put(ingress_class(ROUTER_CLASS))
    wait_until(lambda: router.get("/foreign").service == "svc-a", 5, desc="served once the class is ours")


def test_invalid_service_weights_get_an_event_on_the_service(env, cluster):
    """An invalid `tandem.dev/endpoint-weights` is reported on the Service (kubectl describe
    service shows it); the Service is still served, unweighted."""
    ip = backend_ip()
    a = env.echo("svc-w", host=ip)
    cluster.put(ingress_class(ROUTER_CLASS))
    docs = backend_objects("svc-w", [a], namespace=cluster.ns)
    docs[0]["metadata"]["annotations"] = {"tandem.dev/endpoint-weights": f"{ip}=999"}
    cluster.put_many(docs)
    cluster.put(ingress("weighted", [rule(None, http_path("/w", "svc-w"))], namespace=cluster.ns))
    router = start_router(env, cluster, ["--publish-status-address", "10.0.0.1"], pod_name="sw", client_id="sw")

    def on_service():
        return [e for e in cluster.events(involved="svc-w") if "endpoint-weights" in event_text(e)]

    e = wait_until(on_service, 10, interval=0.1, desc="Event on Service svc-w naming the annotation")[0]
    regarding = e.get("regarding") or e.get("involvedObject") or {}
    assert regarding.get("kind") == "Service" and regarding.get("namespace") == cluster.ns, e
    assert e.get("type") == "Warning" and "invalid_annotation" in event_text(e), e
    wait_until(lambda: router.get("/w").service == "svc-w", 5, desc="the Service still served")
