"""Ingress status and leader election: one replica (the Lease holder) writes
status.loadBalancer.ingress, only on change, clears it from Ingresses it stops serving, and a
second replica takes over when the leader dies."""

from __future__ import annotations

import time

from api_support import (ROUTER_CLASS, backend_ip, cluster, fake_only, start_router,  # noqa: F401
                         wait_status, wait_status_cleared)
from e2e_lib import backend_objects, http_path, ingress, ingress_class, rule, wait_until

LEASE = ["--lease-duration", "3s", "--lease-renew-interval", "0.5s"]
ELECTION_ID = f"tandem-router-{ROUTER_CLASS}"
ADDR = "10.20.30.40"


def setup_objects(cluster, env):
    ip = backend_ip()
    a = env.echo("svc-a", host=ip)
    cluster.put(ingress_class(ROUTER_CLASS))
    cluster.put(ingress_class("other-class", controller="example.com/other"))
    cluster.put_many(backend_objects("svc-a", [a], namespace=cluster.ns))
    cluster.put(ingress("s1", [rule(None, http_path("/s1", "svc-a"))], namespace=cluster.ns))
    cluster.put(ingress("s2", [rule("s2.example", http_path("/", "svc-a"))], namespace=cluster.ns))
    cluster.put(ingress("foreign", [rule(None, http_path("/f", "svc-a"))], namespace=cluster.ns,
                        class_name="other-class"))


def test_two_replicas_one_writer_only_on_change_and_failover(env, cluster):
    fake = fake_only(cluster)
    setup_objects(cluster, env)
    replicas = {}
    for rid in ("rep-a", "rep-b"):
        replicas[rid] = start_router(env, cluster, ["--publish-status-address", ADDR, *LEASE],
                                     name=rid, client_id=rid, pod_name=rid)
    want = [{"ip": ADDR}]
    holder = wait_until(lambda: cluster.lease_holder(ELECTION_ID), 10, desc=f"lease {ELECTION_ID} held")
    assert holder in replicas
    wait_status(cluster, "s1", want)
    wait_status(cluster, "s2", want)
    assert cluster.ingress_status("foreign") == [], "an Ingress of another class must not get our status"

    def writers():
        return {w.client for w in fake.status_writes() if 200 <= w.code < 300}

    assert writers() == {holder}, f"status written by {writers()}, lease holder {holder}"
    assert all(w.client == holder for w in fake.status_writes(successful=False)), \
        "a non-leader attempted a status write"

    # -- only on change: rebuilds (endpoint churn, unrelated Ingress edits) do not rewrite status
    counts = fake.status_write_counts()
    t_end = time.monotonic() + 5
    i = 0
    while time.monotonic() < t_end:
        cluster.put(ingress("foreign", [rule(None, http_path(f"/f{i}", "svc-a"))], class_name="other-class"))
        cluster.put(ingress("s2", [rule("s2.example", http_path("/", "svc-a"), http_path(f"/p{i % 3}", "svc-a"))]))
        i += 1
        time.sleep(0.25)
    assert fake.status_write_counts() == counts, \
        f"repeated status writes without a change: before {counts}, after {fake.status_write_counts()}"

    # -- an Ingress moved to another class gets its status cleared
    cluster.put(ingress("s1", [rule(None, http_path("/s1", "svc-a"))], class_name="other-class"))
    wait_status_cleared(cluster, "s1")
    assert cluster.get("ingresses", "s1")["spec"]["ingressClassName"] == "other-class"

    # -- failover: kill the leader; the other takes the Lease after it expires, writes status
    leader, follower = replicas[holder], replicas[next(r for r in replicas if r != holder)]
    t_kill = time.monotonic()
    leader.proc.kill()
    new_holder = wait_until(lambda: (h := cluster.lease_holder(ELECTION_ID)) != holder and h, 15,
                            desc="lease taken over")
    t_takeover = time.monotonic() - t_kill
    assert new_holder == follower.client_id
    cluster.put(ingress("s3", [rule(None, http_path("/s3", "svc-a"))]))
    wait_status(cluster, "s3", want, timeout=10)
    assert {w.client for w in fake.status_writes("s3")} == {new_holder}
    assert all(w.client == holder for w in fake.status_writes() if w.time < t_kill)
    print(f"\nleader {holder} killed; {new_holder} took the lease after {t_takeover:.2f}s "
          f"(lease-duration 3s); status writes per ingress: {fake.status_write_counts()}")
    assert t_takeover < 3 + 5


def test_publish_service_addresses(env, cluster):
    fake = fake_only(cluster)
    setup_objects(cluster, env)
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "tandem-router", "namespace": cluster.ns},
           "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80}],
                    "externalIPs": ["192.0.2.10", "192.0.2.11"]}}
    cluster.put(svc)
    start_router(env, cluster, ["--publish-service", f"{cluster.ns}/tandem-router", *LEASE],
                 client_id="solo", pod_name="solo")
    wait_status(cluster, "s1", [{"ip": "192.0.2.10"}, {"ip": "192.0.2.11"}])
    n = len(fake.status_writes("s1"))
    # without externalIPs: the Service's load-balancer status (hostname)
    svc["spec"].pop("externalIPs")
    svc["status"] = {"loadBalancer": {"ingress": [{"hostname": "lb.example.net"}]}}
    cluster.put(svc)
    wait_status(cluster, "s1", [{"hostname": "lb.example.net"}])
    wait_status(cluster, "s2", [{"hostname": "lb.example.net"}])
    assert len(fake.status_writes("s1")) == n + 1
    # a new Ingress of the class gets it too; one of another class does not
    cluster.put(ingress("s4", [rule(None, http_path("/s4", "svc-a"))]))
    wait_status(cluster, "s4", [{"hostname": "lb.example.net"}])
    assert cluster.ingress_status("foreign") == []
