#!/usr/bin/env python3
"""Cluster mode: the same scenario files against tandem installed on a real cluster with the Helm
chart, objects created through the API with plain ``kubectl``, backends as Deployments of the
upstream suite's echo server, requests sent to the entry tier's Service address.

    KUBECONFIG=... .venv/bin/python conformance/cluster.py --setup router --http 192.0.2.20
    KUBECONFIG=... .venv/bin/python conformance/cluster.py --setup edge-router \\
        --http 192.0.2.10 --https 192.0.2.10 --router-service ingress/tandem-router
    .venv/bin/python conformance/cluster.py --setup edge --dry-run      # print, touch nothing

Per scenario file: render → ``kubectl apply -f -`` → wait for every Deployment's rollout and for
the status address of every Ingress of the class (the upstream Background step) → the cases →
``cluster_expect`` (an Ingress of another class has no status address) → delete what was applied.
Scenario files with ``cluster: {skip: reason}`` are listed as not run, with the reason.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))

import yaml  # noqa: E402

from harness import CLASS, ROUTING_TIER, SETUPS, Scenario, Target, load_all, run_case  # noqa: E402

# The upstream suite's echo server (test/kubernetes/deployment.go at the pinned commit, see
# upstream.sh): it reports namespace, Ingress, Service and pod from its environment. tandem's own
# echo-backend has no container image (the Containerfile ships router and tls-edge only).
ECHO_IMAGE = ("k8s.gcr.io/ingressconformance/echoserver:v0.0.1"
              "@sha256:9b34b17f391f87fb2155f01da2f2f90b7a4a5c1110ed84cb5379faa4f570dc52")
ECHO_PORT = 3000
RUN_LABEL = "tandem.dev/conformance-run"


def namespaces_of(scn: Scenario) -> list[str]:
    names = {scn.namespace} | {b.namespace for b in scn.backends} | {t.namespace for t in scn.tls}
    for o in scn.objects:
        if o["kind"] == "Ingress":
            names.add(o["metadata"].get("namespace", scn.namespace))
    return sorted(names)


def echo_objects(scn: Scenario, image: str) -> list[dict]:
    docs = []
    for b in scn.backends:
        app = f"echo-{b.name}"
        port_name = b.port_name or "http"
        docs.append({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": app, "namespace": b.namespace},
            "spec": {
                "replicas": b.replicas,
                "selector": {"matchLabels": {"app": app}},
                "template": {
                    "metadata": {"labels": {"app": app}},
                    "spec": {
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                                            "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [{
                            "name": "echo", "image": image,
                            "env": [
                                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                                {"name": "INGRESS_NAME", "value": b.ingress},
                                {"name": "SERVICE_NAME", "value": b.name},
                            ],
                            "ports": [{"name": port_name, "containerPort": ECHO_PORT}],
                            "readinessProbe": {"httpGet": {"path": "/health", "port": ECHO_PORT},
                                               "periodSeconds": 1, "failureThreshold": 10},
                            "securityContext": {"allowPrivilegeEscalation": False,
                                                "readOnlyRootFilesystem": True,
                                                "capabilities": {"drop": ["ALL"]}},
                        }],
                    },
                },
            },
        })
        port: dict = {"port": b.port, "targetPort": ECHO_PORT, "protocol": "TCP"}
        if b.port_name:
            port["name"] = b.port_name
        docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": b.name, "namespace": b.namespace},
                     "spec": {"selector": {"app": app}, "ports": [port]}})
    return docs


def render(scn: Scenario, setup: str, *, pki, certs: dict, run_id: str, image: str = ECHO_IMAGE,
           class_name: str | None = None, edge_class: str | None = None,
           router_service: str = "ingress/tandem-router") -> list[dict]:
    """Every object the cluster run of ``scn`` on ``setup`` applies, in apply order.
    ``certs`` is filled with ``namespace/secret`` -> leaf certificate (for the checks)."""
    docs: list[dict] = [{"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": ns, "labels": {RUN_LABEL: run_id}}} for ns in namespaces_of(scn)]
    docs += echo_objects(scn, image)
    secrets = []
    for t in scn.tls:
        key = f"{t.namespace}/{t.name}"
        if key not in certs:
            certs[key] = pki.leaf(f"{scn.id}-{t.namespace}-{t.name}", t.hosts)
        c = certs[key]
        secrets.append({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                        "metadata": {"name": t.name, "namespace": t.namespace},
                        "stringData": {"tls.crt": c.cert_pem, "tls.key": c.key_pem}})
    tier = ROUTING_TIER[setup]
    if tier == "edge":
        docs += secrets
    routing = scn.routing_objects(setup, class_name=class_name, add_class=False)
    docs += routing
    if setup == "edge-router":
        rns, rsvc = router_service.split("/", 1)
        for s in secrets:
            c = copy.deepcopy(s)
            c["metadata"] = {"name": f"{s['metadata']['namespace']}-{s['metadata']['name']}", "namespace": rns,
                             "labels": {RUN_LABEL: run_id}}
            docs.append(c)
        edge = scn.edge_to_router_objects(namespace=rns, service=rsvc, edge_class=edge_class or CLASS["edge"],
                                          add_class=False)
        for e in edge:
            e["metadata"].setdefault("labels", {})[RUN_LABEL] = run_id
        docs += edge
    return docs


def kubectl(*args: str, input: str | None = None, timeout: float = 300) -> str:
    proc = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def commands(docs: list[dict], run_id: str, served: list[tuple[str, str]]) -> list[list[str]]:
    """The kubectl commands of one scenario (printed by --dry-run, run otherwise)."""
    cmds = [["kubectl", "apply", "-f", "-"]]
    for d in docs:
        if d["kind"] == "Deployment":
            cmds.append(["kubectl", "-n", d["metadata"]["namespace"], "rollout", "status",
                         f"deployment/{d['metadata']['name']}", "--timeout=180s"])
    for ns, name in served:
        cmds.append(["kubectl", "-n", ns, "get", "ingress", name, "-o", "jsonpath={.status.loadBalancer.ingress}"])
    cmds.append(["kubectl", "delete", "namespace", "-l", f"{RUN_LABEL}={run_id}", "--wait=false"])
    cmds.append(["kubectl", "delete", "ingress,secret", "-A", "-l", f"{RUN_LABEL}={run_id}"])
    return cmds


def served_ingresses(docs: list[dict], class_names: set[str]) -> list[tuple[str, str]]:
    out = []
    for d in docs:
        if d["kind"] != "Ingress":
            continue
        cls = d["spec"].get("ingressClassName") or (d["metadata"].get("annotations") or {}).get(
            "kubernetes.io/ingress.class")
        if cls in class_names:
            out.append((d["metadata"]["namespace"], d["metadata"]["name"]))
    return out


def wait_status(ns: str, name: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = kubectl("-n", ns, "get", "ingress", name, "-o", "jsonpath={.status.loadBalancer.ingress}")
        if out.strip() not in ("", "[]"):
            return out
        if time.monotonic() > deadline:
            raise RuntimeError(f"Ingress {ns}/{name} got no status address within {timeout:.0f}s")
        time.sleep(2)


def parse_addr(value: str | None, default_port: int) -> tuple[str, int] | None:
    if not value:
        return None
    host, _, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    return (host, int(port)) if port else (value, default_port)


def main(argv: list[str] | None = None) -> int:
    import os
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setup", choices=SETUPS, required=True)
    ap.add_argument("--http", default=os.environ.get("TANDEM_CONFORMANCE_HTTP"),
                    help="entry tier's plain-HTTP address IP[:PORT] (default port 80; env TANDEM_CONFORMANCE_HTTP)")
    ap.add_argument("--https", default=os.environ.get("TANDEM_CONFORMANCE_HTTPS"),
                    help="the edge's HTTPS address IP[:PORT] (default port 443; env TANDEM_CONFORMANCE_HTTPS)")
    ap.add_argument("--class", dest="class_name", help="class of the routing tier's release "
                    "(default tandem-router / tandem-edge)")
    ap.add_argument("--edge-class", default=CLASS["edge"], help="the edge release's class (edge-router)")
    ap.add_argument("--router-service", default="ingress/tandem-router",
                    help="NAMESPACE/NAME of the router release's Service (edge-router)")
    ap.add_argument("--echo-image", default=os.environ.get("TANDEM_CONFORMANCE_ECHO_IMAGE", ECHO_IMAGE))
    ap.add_argument("--status-timeout", type=float, default=120.0)
    ap.add_argument("--dry-run", action="store_true", help="print the objects and commands; contact nothing")
    ap.add_argument("--results", help="write per-case results as JSON here")
    ap.add_argument("scenarios", nargs="*", help="scenario names (file stems); default all")
    args = ap.parse_args(argv)

    from edge_support import Pki
    scenarios = [s for s in load_all() if not args.scenarios or s.id in args.scenarios]
    run_id = f"r{int(time.time())}"
    work = Path(tempfile.mkdtemp(prefix="tandem-conformance-"))
    pki = Pki(work / "pki", ca_cn="tandem conformance cluster CA")
    tier = ROUTING_TIER[args.setup]
    class_names = {args.class_name or CLASS[tier]}

    http = parse_addr(args.http, 80)
    https = parse_addr(args.https, 443)
    if not args.dry_run:
        if not http:
            ap.error("--http (or TANDEM_CONFORMANCE_HTTP) is required")
        if args.setup != "router" and not https:
            ap.error("--https (or TANDEM_CONFORMANCE_HTTPS) is required for the edge set-ups")
        if https and https[0] != http[0]:
            ap.error("--http and --https must be the same address")
        kubectl("version")

    results, failed = [], 0
    for scn in scenarios:
        if scn.cluster.get("skip"):
            print(f"# {scn.id}: not run on a cluster: {scn.cluster['skip']}")
            results.append({"scenario": scn.id, "outcome": "not run", "reason": scn.cluster["skip"]})
            continue
        certs: dict = {}
        docs = render(scn, args.setup, pki=pki, certs=certs, run_id=run_id, image=args.echo_image,
                      class_name=args.class_name, edge_class=args.edge_class, router_service=args.router_service)
        served = served_ingresses(docs, class_names)
        cmds = commands(docs, run_id, served)
        if args.dry_run:
            print(f"# ===== {scn.id} ({args.setup}): {len(docs)} objects, {len(scn.cases)} cases")
            for c in cmds:
                print("# " + " ".join(c))
            print(yaml.safe_dump_all(docs, sort_keys=False), end="")
            print("---")
            continue
        for ns in namespaces_of(scn):
            # The run deletes its namespaces at the end: never adopt one that exists.
            if subprocess.run(["kubectl", "get", "namespace", ns], capture_output=True).returncode == 0:
                print(f"cluster.py: namespace {ns} already exists; delete it or leave this scenario out",
                      file=sys.stderr)
                return 2
        try:
            kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
            for c in cmds[1:]:
                if "rollout" in c:
                    kubectl(*c[1:])
            for ns, name in served:
                wait_status(ns, name, args.status_timeout)
            target = Target(http[0], http[1], https[1] if https else None, pki.ca_path)
            fingerprints = {k: v.fingerprint for k, v in certs.items()}
            for case in scn.cases:
                errs, reason, figures = run_case(case, args.setup, target, namespace=scn.namespace,
                                                 fingerprints=fingerprints)
                ingress = case.cluster_expect.get("no_status")
                if ingress:
                    out = kubectl("-n", scn.namespace, "get", "ingress", ingress, "-o",
                                  "jsonpath={.status.loadBalancer.ingress}")
                    if out.strip() not in ("", "[]"):
                        errs.append(f"Ingress {ingress} of another class got a status address: {out}")
                outcome = "fail" if errs else ("deviates" if reason else "pass")
                failed += bool(errs)
                print(f"{outcome:8} {scn.id} / {case.name}" + "".join(f"\n         {e}" for e in errs))
                results.append({"scenario": scn.id, "case": case.name, "setup": args.setup, "outcome": outcome,
                                "reason": reason, "errors": errs, "requests": figures["requests"]})
        finally:
            for c in cmds[-2:]:
                subprocess.run(c, capture_output=True, timeout=120)
    if args.results:
        Path(args.results).write_text(json.dumps(results, indent=1))
    if not args.dry_run:
        print(f"{sum(r['outcome'] == 'pass' for r in results)} pass, "
              f"{sum(r['outcome'] == 'deviates' for r in results)} deviate as documented, {failed} fail, "
              f"{sum(r['outcome'] == 'not run' for r in results)} scenario files not run")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
