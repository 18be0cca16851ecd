"""Cluster mode and upstream.sh, checked offline: everything cluster.py would apply for every
scenario and set-up is valid Kubernetes (strict schema of 1.37), says what the harness means, and
its --dry-run prints it; upstream.sh passes bash -n and shellcheck and prints its pinned commands."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

import cluster
from harness import CLASS, ROUTING_TIER, SETUPS, load_all

K8S_VERSION = "1.37.0"
HERE = Path(__file__).resolve().parent
UPSTREAM = HERE / "upstream.sh"
SCENARIOS = [s for s in load_all() if not s.cluster.get("skip")]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from edge_support import Pki
    return Pki(tmp_path_factory.mktemp("cluster-pki"))


def render(scn, setup, pki):
    certs: dict = {}
    docs = cluster.render(scn, setup, pki=pki, certs=certs, run_id="r1", router_service="ingress/tandem-router")
    return docs, certs


@pytest.mark.parametrize("setup", SETUPS)
@pytest.mark.parametrize("scn", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_rendered_objects_are_valid_and_complete(scn, setup, pki):
    docs, certs = render(scn, setup, pki)
    for d in docs:
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise AssertionError(f"{d['kind']}/{d['metadata']['name']}: {e.message} at {list(e.path)}") from None
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    # Namespaces come first, so everything else can be applied in one go.
    assert docs[0]["kind"] == "Namespace"
    assert {n["metadata"]["name"] for n in by_kind["Namespace"]} >= {scn.namespace}
    # One Deployment + Service per backend, replicas as in the scenario, port as the Ingress names it.
    for b in scn.backends:
        dep = next(d for d in by_kind["Deployment"]
                   if d["metadata"] == {"name": f"echo-{b.name}", "namespace": b.namespace})
        assert dep["spec"]["replicas"] == b.replicas
        env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["SERVICE_NAME"] == b.name and env["INGRESS_NAME"] == b.ingress
        svc = next(d for d in by_kind["Service"] if d["metadata"] == {"name": b.name, "namespace": b.namespace})
        assert svc["spec"]["ports"][0]["port"] == b.port
        assert svc["spec"]["ports"][0].get("name") == b.port_name
        assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    # The release owns the tier's IngressClass: none is rendered for a scenario that runs on a cluster.
    assert "IngressClass" not in by_kind
    tier = ROUTING_TIER[setup]
    routing = [d for d in by_kind["Ingress"] if not d["metadata"]["name"].startswith("edge-to-router")]
    assert len(routing) == sum(o["kind"] == "Ingress" for o in scn.objects)
    for ing in routing:
        cls = ing["spec"].get("ingressClassName") or ing["metadata"].get("annotations", {}).get(
            "kubernetes.io/ingress.class")
        assert cls == CLASS[tier] or ing["metadata"]["name"] in scn.classless or cls not in CLASS.values(), cls
    secrets = by_kind.get("Secret", [])
    if setup == "router":
        assert not secrets, "the router reads no Secrets"
    else:
        assert len(secrets) == len(scn.tls)
        for t in scn.tls:
            name, ns = (t.name, t.namespace) if setup == "edge" else (f"{t.namespace}-{t.name}", "ingress")
            s = next(s for s in secrets if s["metadata"]["name"] == name and s["metadata"]["namespace"] == ns)
            assert s["type"] == "kubernetes.io/tls"
            assert s["stringData"]["tls.crt"] == certs[f"{t.namespace}/{t.name}"].cert_pem
    if setup == "edge-router":
        edge = [d for d in by_kind["Ingress"] if d["metadata"]["name"].startswith("edge-to-router")]
        assert len(edge) == 1
        e = edge[0]
        assert e["metadata"]["namespace"] == "ingress" and e["spec"]["ingressClassName"] == CLASS["edge"]
        assert e["spec"]["defaultBackend"] == {"service": {"name": "tandem-router", "port": {"name": "http"}}}
        hosts = {h for t in e["spec"].get("tls", []) for h in t["hosts"]}
        assert hosts == {h for t in scn.tls for h in t.hosts}
        assert all(s["metadata"]["namespace"] == "ingress" for s in secrets)


def test_strict_validation_catches_a_misspelt_field(pki):
    docs, _ = render(SCENARIOS[0], "router", pki)
    dep = next(d for d in docs if d["kind"] == "Deployment")
    dep["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


def test_scenario_files_that_cannot_run_on_a_cluster_say_why():
    skipped = [s for s in load_all() if s.cluster.get("skip")]
    assert {s.id for s in skipped} == {"ingress_class_controller", "ingress_class_default"}
    assert all(s.own_ingress_class() for s in skipped)
    assert not any(s.own_ingress_class() for s in SCENARIOS)


@pytest.mark.parametrize("setup", SETUPS)
def test_dry_run_prints_every_object_and_command(setup):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cluster.main(["--setup", setup, "--dry-run"])
    assert rc == 0
    text = out.getvalue()
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert len(docs) > 50
    for d in docs:
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    for scn in SCENARIOS:
        assert f"# ===== {scn.id} ({setup})" in text
    assert "# kubectl apply -f -" in text and "rollout status deployment/" in text
    assert "# ingress_class_controller: not run on a cluster: it would replace the IngressClass" in text


def test_cluster_mode_needs_an_address_when_it_would_run():
    with pytest.raises(SystemExit):
        with contextlib.redirect_stderr(io.StringIO()):
            cluster.main(["--setup", "edge"])


def test_upstream_sh_is_clean_for_bash_and_shellcheck():
    subprocess.run(["bash", "-n", str(UPSTREAM)], check=True)
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is missing: scripts/setup.sh installs it")
    proc = subprocess.run(["shellcheck", "-x", str(UPSTREAM)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("setup,klass", [("router", "tandem-router"), ("edge", "tandem-edge"),
                                         ("edge-router", "tandem-router")])
def test_upstream_sh_dry_run_prints_the_pinned_suite(setup, klass, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "WORK_DIR": str(tmp_path)}
    out = subprocess.run([str(UPSTREAM), "--dry-run", setup], capture_output=True, text=True, env=env, check=True).stdout
    assert "checkout --quiet --detach f91a7996369a1b76e5e058f78da2285026178b59" in out
    assert "go test -c -trimpath" in out
    assert f"--ingress-class={klass} --wait-time-for-ingress-status=5m" in out
    assert f"kubectl get ingressclass {klass}" in out
    assert ("conformance-edge-to-router" in out) == (setup == "edge-router")
    assert not (tmp_path / "src").exists(), "a dry run must not clone"
    son = subprocess.run([str(UPSTREAM), "--dry-run", setup], capture_output=True, text=True, check=True,
                         env={**env, "UPSTREAM_MODE": "sonobuoy"}).stdout
    assert "--kube-conformance-image=gcr.io/k8s-staging-ingressconformance/ingress-controller-conformance@sha256:" in son
    assert f"--plugin-env e2e.INGRESS_CLASS={klass}" in son
    bad = subprocess.run([str(UPSTREAM), "--dry-run", "nginx"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2
