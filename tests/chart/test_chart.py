"""Offline checks of the Helm chart charts/tandem.

Every `ci/*-values.yaml` must pass `helm lint --strict` and render with `helm template`; every
rendered object must validate strictly (unknown fields fail) against the Kubernetes 1.37 schemas
of kubernetes-validate, except the CRD kinds in CRD_KINDS; the pods must meet the Pod Security
"restricted" profile; the RBAC must be the least privilege README.md lists (the router gets no
Secrets); several releases must live side by side in one namespace without a collision; every
file under tests/chart/invalid/ must be rejected with the message its first line names.

helm and kubernetes-validate come from scripts/setup.sh (.venv/bin/helm, the .venv's package);
TANDEM_HELM overrides the helm binary.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "tandem"
CI_DIR = CHART / "ci"
INVALID_DIR = Path(__file__).resolve().parent / "invalid"
HELM = os.environ.get("TANDEM_HELM", str(REPO / ".venv" / "bin" / "helm"))
K8S_VERSION = "1.37.0"
NAMESPACE = "ingress"

# Kinds whose schema is a CRD's: kubernetes-validate only knows built-in kinds, so these are
# checked by hand below (test_service_monitor) instead.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

CI_FILES = sorted(CI_DIR.glob("*-values.yaml"))
INVALID_FILES = sorted(INVALID_DIR.glob("*.yaml"))

# The seed topology plus a second router, installed side by side in one namespace.
SIDE_BY_SIDE = {
    "tandem-edge": "edge-values.yaml",
    "tandem-router": "router-values.yaml",
    "tandem-router-ws": "router-websocket-values.yaml",
}

CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "IngressClass"}
WORKLOAD_KINDS = {"Deployment", "DaemonSet"}


def ci_id(path: Path) -> str:
    return path.name.removesuffix("-values.yaml")


def release_for(values: Path) -> str:
    return "tandem-" + ci_id(values)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    assert Path(HELM).exists(), f"{HELM} missing: run scripts/setup.sh"
    proc = subprocess.run(
        [HELM, *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def render(
    release: str, *values: Path, namespace: str = NAMESPACE, sets: tuple[str, ...] = ()
) -> list[dict]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    for v in values:
        args += ["-f", str(v)]
    for s in sets:
        args += ["--set", s]
    out = helm(*args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def values_of(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def tier_of(values: dict) -> str:
    return values.get("tier", "router")


def workload(docs: list[dict]) -> dict:
    found = [d for d in docs if d["kind"] in WORKLOAD_KINDS]
    assert len(found) == 1, [d["kind"] for d in docs]
    return found[0]


def container(docs: list[dict]) -> dict:
    containers = workload(docs)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def flags(docs: list[dict]) -> dict[str, str]:
    out = {}
    for a in container(docs)["args"]:
        name, _, value = a.partition("=")
        out[name] = value
    return out


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def seconds(duration: str) -> float:
    m = re.fullmatch(r"(\d+)s", duration)
    assert m, f"chart renders durations as whole seconds, got {duration!r}"
    return float(m.group(1))


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    """ci file id → its rendered objects (release named tandem-<id>)."""
    return {ci_id(f): render(release_for(f), f) for f in CI_FILES}


def test_ci_files_cover_the_required_cases():
    ids = {ci_id(f) for f in CI_FILES}
    assert {
        "default",
        "edge",
        "router",
        "router-websocket",
        "daemonset",
        "watch-namespace",
        "legacy-fallback",
    } <= ids
    assert INVALID_FILES, "no invalid values files"


@pytest.mark.parametrize("values", CI_FILES, ids=ci_id)
def test_helm_lint_strict(values):
    proc = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, "-f", str(values))
    out = proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in out, out
    assert "[WARNING]" not in out and "[ERROR]" not in out, out
    # Lint logs a template's fail() at INFO level instead of failing: none may fire.
    assert "funcMap fail" not in out, out


@pytest.mark.parametrize("values", CI_FILES, ids=ci_id)
def test_every_object_validates_strictly_against_kubernetes_1_37(values, rendered):
    docs = rendered[ci_id(values)]
    assert docs
    validated = 0
    for d in docs:
        key = (d["apiVersion"], d["kind"])
        if key in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise AssertionError(
                f"{d['kind']}/{d['metadata']['name']}: {e.message} at {list(e.path)}"
            ) from None
        validated += 1
    assert validated >= 5
    for d in docs:
        meta = d["metadata"]
        if d["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta, d["kind"]
        else:
            assert meta.get("namespace"), f"{d['kind']}/{meta['name']} has no namespace"


def test_strict_validation_rejects_unknown_fields(rendered):
    """The schema check itself is strict: a misspelt field fails."""
    dep = json.loads(json.dumps(workload(rendered["default"])))
    dep["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


def test_only_listed_crd_kinds_are_rendered(rendered):
    kinds = {(d["apiVersion"], d["kind"]) for docs in rendered.values() for d in docs}
    crd_like = {k for k in kinds if k in CRD_KINDS}
    assert crd_like == CRD_KINDS, "observability-values.yaml should render the ServiceMonitor"


# --- Pod Security "restricted" ----------------------------------------------------------

RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


@pytest.mark.parametrize("values", CI_FILES, ids=ci_id)
def test_pod_security_restricted(values, rendered):
    spec = workload(rendered[ci_id(values)])["spec"]["template"]["spec"]
    psc = spec.get("securityContext", {})
    for host in ("hostNetwork", "hostPID", "hostIPC", "hostUsers"):
        if host == "hostUsers":
            assert spec.get(host, True) in (True, False)
        else:
            assert not spec.get(host, False), host
    for vol in spec.get("volumes", []):
        types = set(vol) - {"name"}
        assert types <= RESTRICTED_VOLUME_TYPES, vol
    assert "sysctls" not in psc
    assert psc.get("seccompProfile", {}).get("type") in ("RuntimeDefault", "Localhost")
    containers = spec["containers"] + spec.get("initContainers", [])
    for c in containers:
        sc = c.get("securityContext", {})
        assert sc.get("privileged") is not True
        assert sc.get("allowPrivilegeEscalation") is False
        assert "ALL" in sc.get("capabilities", {}).get("drop", [])
        assert set(sc.get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"}
        assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True
        assert sc.get("runAsUser", psc.get("runAsUser")) == 65532
        assert sc.get("runAsGroup", psc.get("runAsGroup")) == 65532
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {}))
        assert seccomp.get("type") in ("RuntimeDefault", "Localhost")
        assert sc.get("procMount", "Default") == "Default"
        assert sc.get("readOnlyRootFilesystem") is True
        for p in c.get("ports", []):
            assert "hostPort" not in p, p
            assert p["containerPort"] >= 1024, "unprivileged ports only"
        # /tmp is the only writable path (pingora's upgrade socket lives there).
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        assert "/tmp" in mounts
        tmp = next(v for v in spec["volumes"] if v["name"] == mounts["/tmp"])
        assert "emptyDir" in tmp


# --- the container: binary, flags, probes, shutdown --------------------------------------


@pytest.mark.parametrize("values", CI_FILES, ids=ci_id)
def test_container_runs_the_tier_binary_with_its_flags(values, rendered):
    docs = rendered[ci_id(values)]
    vals = values_of(values)
    tier = tier_of(vals)
    binary = "tls-edge" if tier == "edge" else "router"
    c = container(docs)
    assert c["command"] == [f"/usr/local/bin/{binary}"]
    f = flags(docs)
    release = release_for(values)
    assert f["--election-id"] == release
    assert f["--controller-class"] == f"tandem.dev/{binary}"
    assert f["--ingress-class"] == vals.get("ingressClass", {}).get("name", f"tandem-{tier}")
    assert f["--http-listen"] == "0.0.0.0:8080"
    assert f["--admin-listen"] == "0.0.0.0:10254"
    assert ("--https-listen" in f) == (tier == "edge")
    if tier == "edge":
        assert f["--https-listen"] == "0.0.0.0:8443"
    for edge_only in ("--default-certificate", "--hsts-max-age", "--redirect-https-port"):
        if tier == "router":
            assert edge_only not in f
    # Lease namespace and identity come from the downward API.
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["TMPDIR"]["value"] == "/tmp"
    # Probes on the admin port.
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["admin"] == 10254 and ports["http"] == 8080
    assert ("https" in ports) == (tier == "edge")
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    # The kubelet must not kill the pod before the binary's own drain ends.
    grace = workload(docs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > seconds(f["--shutdown-delay"]) + seconds(f["--shutdown-grace"])
    # Ingress status from the release's own Service, or fixed addresses.
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    if "--publish-service" in f:
        ns, _, name = f["--publish-service"].partition("/")
        assert ns == NAMESPACE and name == release and name in services
    else:
        assert f["--publish-status-address"]


BIN_DIR = Path(os.environ.get("TANDEM_BIN_DIR", REPO / "target" / "debug"))


@pytest.mark.parametrize("values", CI_FILES, ids=ci_id)
def test_rendered_arguments_are_accepted_by_the_binary(values, rendered, tmp_path):
    """The real binary parses the rendered command line and gets as far as its config source.

    Listen addresses become 127.0.0.1:0 (loopback, any port) and --kubeconfig points at a
    missing file, so the process stops at the API client instead of serving."""
    docs = rendered[ci_id(values)]
    c = container(docs)
    binary = BIN_DIR / Path(c["command"][0]).name
    if not binary.exists():
        if os.environ.get("TANDEM_E2E_REQUIRE_BINARIES") == "1":
            pytest.fail(f"{binary} missing")
        pytest.skip(f"{binary} missing: cargo build --workspace")
    args = []
    for a in c["args"]:
        name, _, _ = a.partition("=")
        if name in ("--http-listen", "--https-listen", "--admin-listen"):
            a = f"{name}=127.0.0.1:0"
        args.append(a)
    missing = tmp_path / "no-kubeconfig"
    env = {**os.environ, "POD_NAMESPACE": NAMESPACE, "POD_NAME": "pod-0", "TMPDIR": str(tmp_path)}
    env.pop("KUBECONFIG", None)
    env.pop("TANDEM_MANIFESTS", None)
    proc = subprocess.run(
        [str(binary), *args, f"--kubeconfig={missing}"],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path, check=False,
    )
    out = proc.stdout + proc.stderr
    assert "unexpected argument" not in out and "invalid value" not in out, out
    assert proc.returncode == 1 and "cannot read kubeconfig" in out, (proc.returncode, out)


def test_defaults_compute_termination_grace(rendered):
    docs = rendered["default"]
    spec = workload(docs)["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] == 5 + 30 + 10
    assert workload(docs)["kind"] == "Deployment"
    assert workload(rendered["daemonset"])["kind"] == "DaemonSet"
    assert "replicas" not in workload(rendered["daemonset"])["spec"]


def test_values_reach_the_pod(rendered):
    docs = rendered["edge"]
    spec = workload(docs)["spec"]["template"]
    pod = spec["spec"]
    assert pod["nodeSelector"] == {"node-role.tandem.dev/ingress": "true"}
    assert pod["tolerations"][0]["key"] == "node-role.tandem.dev/ingress"
    assert "podAntiAffinity" in pod["affinity"]
    assert pod["priorityClassName"] == "ingress-critical"
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    # A spread constraint without labelSelector gets the release's pod selector.
    tsc = pod["topologySpreadConstraints"][0]
    assert tsc["labelSelector"]["matchLabels"] == workload(docs)["spec"]["selector"]["matchLabels"]
    assert spec["metadata"]["annotations"] == {"example.com/team": "edge"}
    assert spec["metadata"]["labels"]["example.com/tier"] == "edge"
    c = container(docs)
    assert c["image"] == "registry.example.com/tandem:0.1.0"
    assert "--connect-timeout=3s" in c["args"]
    assert {"name": "RUST_LOG", "value": "info"} in c["env"]
    f = flags(docs)
    assert f["--default-certificate"] == "ingress/default-tls"
    assert f["--hsts-max-age"] == "31536000"
    assert f["--threads"] == "4"
    assert f["--shutdown-delay"] == "10s"
    assert workload(docs)["spec"]["replicas"] == 3
    assert of_kind(docs, "PodDisruptionBudget")[0]["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": workload(docs)["spec"]["selector"]["matchLabels"]},
    }
    assert flags(rendered["router"])["--trusted-proxies"] == "10.244.0.0/16"
    pdb = of_kind(rendered["daemonset"], "PodDisruptionBudget")[0]["spec"]
    assert pdb["minAvailable"] == 1 and "maxUnavailable" not in pdb


# --- Services -------------------------------------------------------------------------------


def traffic_service(docs: list[dict], release: str) -> dict:
    return next(s for s in of_kind(docs, "Service") if s["metadata"]["name"] == release)


def test_services_keep_client_ips_and_map_80_443(rendered):
    edge = traffic_service(rendered["edge"], "tandem-edge")["spec"]
    assert edge["type"] == "ClusterIP"
    assert edge["externalIPs"] == ["192.0.2.10", "192.0.2.11"]
    assert edge["externalTrafficPolicy"] == "Local"
    ports = {p["name"]: p for p in edge["ports"]}
    assert (ports["http"]["port"], ports["http"]["targetPort"]) == (80, "http")
    assert (ports["https"]["port"], ports["https"]["targetPort"]) == (443, "https")
    assert "appProtocol" not in ports["http"]
    assert edge["selector"] == workload(rendered["edge"])["spec"]["selector"]["matchLabels"]

    default = traffic_service(rendered["default"], "tandem-default")["spec"]
    assert default["type"] == "LoadBalancer" and default["externalTrafficPolicy"] == "Local"

    lb = traffic_service(rendered["daemonset"], "tandem-daemonset")["spec"]
    assert lb["healthCheckNodePort"] == 32100
    assert lb["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
    assert lb["allocateLoadBalancerNodePorts"] is True
    assert lb["ports"][0]["nodePort"] == 32080

    np = traffic_service(rendered["watch-namespace"], "tandem-watch-namespace")["spec"]
    assert np["type"] == "NodePort"
    assert {p["name"]: p["nodePort"] for p in np["ports"]} == {"http": 30080, "https": 30443}


def test_router_service_port_is_h2c_for_the_edge_hop(rendered):
    router = traffic_service(rendered["router"], "tandem-router")["spec"]
    assert [p["name"] for p in router["ports"]] == ["http"]
    assert router["ports"][0]["appProtocol"] == "kubernetes.io/h2c"
    ws = traffic_service(rendered["router-websocket"], "tandem-router-websocket")["spec"]
    assert "appProtocol" not in ws["ports"][0]


def test_admin_port_is_never_on_the_traffic_service(rendered):
    for cid, docs in rendered.items():
        svc = traffic_service(docs, "tandem-" + cid)
        assert all(p["targetPort"] != "admin" for p in svc["spec"]["ports"]), cid


def test_metrics_service_and_service_monitor(rendered):
    docs = rendered["observability"]
    metrics = next(s for s in of_kind(docs, "Service") if s["metadata"]["name"].endswith("-metrics"))
    assert metrics["spec"]["type"] == "ClusterIP"
    assert metrics["spec"]["ports"] == [
        {"name": "admin", "port": 10254, "targetPort": "admin", "protocol": "TCP"}
    ]
    sm = of_kind(docs, "ServiceMonitor")[0]
    # Hand check of the CRD object kubernetes-validate cannot validate.
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert set(sm["spec"]) == {"namespaceSelector", "selector", "endpoints"}
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    selector = sm["spec"]["selector"]["matchLabels"]
    assert selector.items() <= metrics["metadata"]["labels"].items()
    traffic = traffic_service(docs, "tandem-observability")
    assert not selector.items() <= traffic["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"] == [{"port": "admin", "path": "/metrics", "interval": "15s"}]


# --- IngressClass ---------------------------------------------------------------------------


@pytest.mark.parametrize("values", CI_FILES, ids=ci_id)
def test_ingress_class_matches_the_binary(values, rendered):
    docs = rendered[ci_id(values)]
    f = flags(docs)
    classes = of_kind(docs, "IngressClass")
    assert len(classes) == 1
    assert classes[0]["metadata"]["name"] == f["--ingress-class"]
    assert classes[0]["spec"] == {"controller": f["--controller-class"]}
    assert "annotations" not in classes[0]["metadata"]


def test_ingress_class_default_annotation_and_opt_out():
    docs = render("r", sets=("ingressClass.default=true",))
    ic = of_kind(docs, "IngressClass")[0]
    assert ic["metadata"]["annotations"] == {"ingressclass.kubernetes.io/is-default-class": "true"}
    docs = render("r", sets=("ingressClass.create=false", "controllerClass=example.com/x"))
    assert not of_kind(docs, "IngressClass")
    assert flags(docs)["--controller-class"] == "example.com/x"


# --- RBAC -----------------------------------------------------------------------------------


def grants(docs: list[dict]) -> set[tuple[str, str, str, str, str]]:
    """(role kind, namespace, apiGroup, resource, verb) for every rule of every (Cluster)Role."""
    out = set()
    for d in docs:
        if d["kind"] not in ("Role", "ClusterRole"):
            continue
        ns = d["metadata"].get("namespace", "")
        for r in d["rules"]:
            assert "*" not in r["apiGroups"] and "*" not in r["resources"] and "*" not in r["verbs"]
            assert "nonResourceURLs" not in r
            for g in r["apiGroups"]:
                for res in r["resources"]:
                    for v in r["verbs"]:
                        out.add((d["kind"], ns, g, res, v))
    return out


def expected_watch_grants(tier: str) -> set[tuple[str, str, str]]:
    g = set()
    for res in ("ingresses",):
        g |= {("networking.k8s.io", res, v) for v in ("get", "list", "watch")}
    g |= {("networking.k8s.io", "ingresses/status", v) for v in ("update", "patch")}
    for res in ("services", "endpoints"):
        g |= {("", res, v) for v in ("get", "list", "watch")}
    g |= {("discovery.k8s.io", "endpointslices", v) for v in ("get", "list", "watch")}
    g |= {("events.k8s.io", "events", v) for v in ("create", "patch")}
    if tier == "edge":
        g |= {("", "secrets", v) for v in ("get", "list", "watch")}
    return g


@pytest.mark.parametrize("values", CI_FILES, ids=ci_id)
def test_rbac_is_the_readme_table(values, rendered):
    docs = rendered[ci_id(values)]
    vals = values_of(values)
    tier = tier_of(vals)
    watch_ns = vals.get("watchNamespace", "")
    got = grants(docs)
    ingressclasses = {("networking.k8s.io", "ingressclasses", v) for v in ("get", "list", "watch")}
    cluster = {(g, r, v) for (k, _, g, r, v) in got if k == "ClusterRole"}
    leases = {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")}
    in_release_ns = {(g, r, v) for (k, ns, g, r, v) in got if k == "Role" and ns == NAMESPACE}
    if watch_ns:
        assert cluster == ingressclasses
        in_watch_ns = {(g, r, v) for (k, ns, g, r, v) in got if k == "Role" and ns == watch_ns}
        assert in_watch_ns == expected_watch_grants(tier)
        assert in_release_ns == leases
    else:
        assert cluster == ingressclasses | expected_watch_grants(tier)
        assert in_release_ns == leases
    # get/update of Leases only for this release's election Lease.
    lease_role = next(
        d for d in of_kind(docs, "Role") if any("leases" in r["resources"] for r in d["rules"])
    )
    for r in lease_role["rules"]:
        if set(r["verbs"]) & {"get", "update"}:
            assert r["resourceNames"] == [flags(docs)["--election-id"]]
    # Every (Cluster)Role is bound to the release's ServiceAccount.
    sa = workload(docs)["spec"]["template"]["spec"]["serviceAccountName"]
    assert [d["metadata"]["name"] for d in of_kind(docs, "ServiceAccount")] == [sa]
    roles = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]) for d in docs
             if d["kind"] in ("Role", "ClusterRole")}
    bound = set()
    for b in docs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
        bound.add((b["roleRef"]["kind"], b["metadata"].get("namespace", ""), b["roleRef"]["name"]))
    assert bound == roles


def test_upstream_ca_is_a_mounted_config_map():
    docs = render("r", sets=("upstreamCA.configMap=internal-ca", "upstreamCA.key=bundle.pem"))
    c = container(docs)
    assert {"name": "SSL_CERT_FILE", "value": "/etc/tandem/upstream-ca/bundle.pem"} in c["env"]
    assert {"name": "upstream-ca", "mountPath": "/etc/tandem/upstream-ca", "readOnly": True} in c["volumeMounts"]
    vols = workload(docs)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "upstream-ca", "configMap": {"name": "internal-ca", "items": [
        {"key": "bundle.pem", "path": "bundle.pem"}]}} in vols
    # unset: nothing mounted, no trust store named
    c = container(render("r"))
    assert not any(e["name"] == "SSL_CERT_FILE" for e in c["env"])
    assert [m["name"] for m in c["volumeMounts"]] == ["tmp"]


@pytest.mark.parametrize(
    "values", [f for f in CI_FILES if tier_of(values_of(f)) == "router"], ids=ci_id
)
def test_router_renders_no_secrets_rule(values, rendered):
    docs = rendered[ci_id(values)]
    for d in docs:
        for r in d.get("rules", []) if d["kind"] in ("Role", "ClusterRole") else []:
            assert "secrets" not in r["resources"], d["metadata"]["name"]


def test_edge_secrets_are_read_only():
    got = grants(render("e", sets=("tier=edge",)))
    assert {v for (_, _, g, r, v) in got if r == "secrets"} == {"get", "list", "watch"}


# --- legacy fallback ------------------------------------------------------------------------


def test_legacy_fallback_objects(rendered):
    docs = rendered["legacy-fallback"]
    f = flags(docs)
    legacy = next(s for s in of_kind(docs, "Service") if s["metadata"]["name"].endswith("-legacy"))
    name = legacy["metadata"]["name"]
    assert "selector" not in legacy["spec"], "selector-less: the endpoints are written by hand"
    assert legacy["spec"]["ports"][0]["name"] == "http"
    (eps,) = of_kind(docs, "EndpointSlice")
    assert eps["addressType"] == "IPv4"
    assert eps["metadata"]["name"] == name
    labels = eps["metadata"]["labels"]
    assert labels["kubernetes.io/service-name"] == name
    managed_by = labels["endpointslice.kubernetes.io/managed-by"]
    assert managed_by not in (
        "endpointslice-controller.k8s.io",
        "endpointslicemirroring-controller.k8s.io",
    )
    assert eps["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    addrs = [a for e in eps["endpoints"] for a in e["addresses"]]
    assert addrs == ["198.51.100.7", "198.51.100.8"]
    assert all(ipaddress.ip_address(a).version == 4 for a in addrs)
    (ing,) = of_kind(docs, "Ingress")
    assert ing["spec"]["ingressClassName"] == f["--ingress-class"]
    (rule,) = ing["spec"]["rules"]
    assert "host" not in rule, "the catch-all has no host"
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    assert path["backend"]["service"] == {"name": name, "port": {"name": "http"}}
    # Off by default.
    for cid in ("default", "router", "edge"):
        assert not of_kind(rendered[cid], "EndpointSlice") and not of_kind(rendered[cid], "Ingress")


# --- several releases side by side ----------------------------------------------------------


def selects(selector: dict, labels: dict) -> bool:
    return selector.items() <= labels.items()


def test_releases_side_by_side_do_not_collide():
    releases = {rel: render(rel, CI_DIR / f) for rel, f in SIDE_BY_SIDE.items()}
    seen: dict[tuple, str] = {}
    for rel, docs in releases.items():
        for d in docs:
            ns = "" if d["kind"] in CLUSTER_SCOPED else d["metadata"]["namespace"]
            key = (d["kind"], ns, d["metadata"]["name"])
            assert key not in seen, f"{key} rendered by both {seen.get(key)} and {rel}"
            seen[key] = rel
    classes = [of_kind(docs, "IngressClass")[0]["metadata"]["name"] for docs in releases.values()]
    assert len(set(classes)) == len(classes)
    assert [flags(docs)["--ingress-class"] for docs in releases.values()] == classes
    leases = [flags(docs)["--election-id"] for docs in releases.values()]
    assert len(set(leases)) == len(leases)
    assert leases == list(releases)
    # No two Services answer on the same external IP and port.
    endpoints = []
    for rel, docs in releases.items():
        svc = traffic_service(docs, rel)["spec"]
        endpoints += [(ip, p["port"]) for ip in svc.get("externalIPs", []) for p in svc["ports"]]
    assert len(set(endpoints)) == len(endpoints), endpoints
    # A release's Service, PodDisruptionBudget and Deployment select only its own pods.
    pods = {rel: workload(docs)["spec"]["template"]["metadata"]["labels"] for rel, docs in releases.items()}
    for rel, docs in releases.items():
        selectors = [traffic_service(docs, rel)["spec"]["selector"]]
        selectors += [d["spec"]["selector"]["matchLabels"] for d in docs
                      if d["kind"] in ("PodDisruptionBudget", *WORKLOAD_KINDS)]
        for sel in selectors:
            for other, labels in pods.items():
                assert selects(sel, labels) == (other == rel), (rel, other, sel)


def test_long_release_names_stay_valid():
    rel = "a" + "b" * 52  # Helm allows 53 characters; the full name adds "-tandem"
    docs = render(rel, CI_DIR / "legacy-fallback-values.yaml", sets=("metrics.service.enabled=true",))
    label = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    for d in docs:
        name = d["metadata"]["name"]
        if d["kind"] in ("Service",):
            assert len(name) <= 63 and label.match(name), name
        assert len(name) <= 253
    names = [d["metadata"]["name"] for d in of_kind(docs, "Service")]
    assert len(set(names)) == len(names)


# --- rejected values ------------------------------------------------------------------------


def expectation(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: <message>'"
    return first.removeprefix("# expect: ")


@pytest.mark.parametrize("values", INVALID_FILES, ids=lambda p: p.stem)
def test_invalid_values_are_rejected_with_a_clear_message(values):
    proc = helm(
        "template", "tandem-router", str(CHART), "--namespace", NAMESPACE, "-f", str(values),
        check=False,
    )
    assert proc.returncode != 0, f"{values.name} rendered:\n{proc.stdout[:2000]}"
    assert expectation(values) in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "setting, message",
    [
        ("typo=1", "additional properties 'typo' not allowed"),
        ("service.typo=1", "additional properties 'typo' not allowed"),
        ("image.tagg=x", "additional properties 'tagg' not allowed"),
        ("shutdown.delaySeconds=-1", "/shutdown/delaySeconds"),
    ],
)
def test_schema_rejects_unknown_or_wrong_values(setting, message):
    proc = helm("template", "r", str(CHART), "--set", setting, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


def test_schema_covers_every_value():
    """Every key of values.yaml is declared in values.schema.json, and objects are closed."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(value, node, path):
        assert node is not None, f"{path} not in the schema"
        if isinstance(value, dict) and node.get("additionalProperties") is False:
            for k, v in value.items():
                walk(v, node["properties"].get(k), f"{path}.{k}")
        elif isinstance(value, dict):
            # Free-form maps (labels, annotations, resources, affinity, ...).
            assert node.get("type") == "object", path

    assert schema["additionalProperties"] is False
    walk(defaults, schema, "")


# --- dashboard ------------------------------------------------------------------------------


def test_dashboard_copy_equals_the_original(rendered):
    original = REPO / "charts" / "dashboards" / "tandem-grafana.json"
    copy = CHART / "dashboards" / "tandem-grafana.json"
    assert copy.read_bytes() == original.read_bytes(), (
        "charts/tandem/dashboards/tandem-grafana.json differs from "
        "charts/dashboards/tandem-grafana.json: copy the original over it"
    )
    (cm,) = of_kind(rendered["observability"], "ConfigMap")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["tandem-grafana.json"]) == json.loads(original.read_text())


# --- the chart README's worked example ------------------------------------------------------


def readme_blocks(lang: str) -> list[str]:
    text = (CHART / "README.md").read_text()
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_readme_example_values_render_and_validate(tmp_path):
    """The router.yaml / edge.yaml of the README's seed topology render, validate and coexist."""
    examples = [yaml.safe_load(b) for b in readme_blocks("yaml") if b.startswith("tier:")]
    by_tier = {e["tier"]: e for e in examples}
    assert set(by_tier) == {"router", "edge"}
    docs = {}
    for tier, vals in by_tier.items():
        f = tmp_path / f"{tier}.yaml"
        f.write_text(yaml.safe_dump(vals))
        docs[tier] = render(f"tandem-{tier}", f)
        for d in docs[tier]:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    assert of_kind(docs["router"], "EndpointSlice"), "the example router has the legacy fallback"
    # The example edge Ingress names the router release's Service and its h2c port.
    ingresses = [yaml.safe_load(m) for b in readme_blocks("sh")
                 for m in re.findall(r"<<'EOF'\n(.*?)EOF", b, flags=re.S)]
    edge_ing = next(i for i in ingresses if i["spec"]["ingressClassName"] == "tandem-edge")
    kubernetes_validate.validate(edge_ing, K8S_VERSION, strict=True)
    backend = edge_ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    router_svc = traffic_service(docs["router"], "tandem-router")
    assert backend["name"] == router_svc["metadata"]["name"]
    port = next(p for p in router_svc["spec"]["ports"] if p["name"] == backend["port"]["name"])
    assert port["appProtocol"] == "kubernetes.io/h2c"
    assert edge_ing["metadata"]["namespace"] == NAMESPACE
    router_ing = next(i for i in ingresses if i["spec"]["ingressClassName"] == "tandem-router")
    kubernetes_validate.validate(router_ing, K8S_VERSION, strict=True)
    assert flags(docs["router"])["--ingress-class"] == "tandem-router"
    assert flags(docs["edge"])["--ingress-class"] == "tandem-edge"
