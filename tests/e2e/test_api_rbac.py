"""Least privilege, tested: the Helm chart's RBAC enforced by the fake API server.

``helm template`` renders ``charts/tandem`` with its ``ci/*-values.yaml``; the rendered
ServiceAccount, Roles/ClusterRoles, bindings, Services, IngressClass (every kind the fake serves)
go into the fake API server with authorization on — it authorizes every request like
kube-apiserver's RBAC authorizer (``tests/fakeapi/rbac.py``) — and the real ``router``/``tls-edge``
run with the rendered Deployment's command-line arguments and environment (listen addresses moved
to loopback ports, plus a kubeconfig whose token is the release's ServiceAccount). So the chart's
wiring is checked too: a flag the binary does not know, a wrong election id, publish Service or
default certificate, a missing rule all fail here.

Normal operation must need no request the policy refuses (zero 401/403) and the router must make
no request for Secrets at all; the policy, probed verb by verb, must stay within the README's RBAC
table. Reduced policies prove that enforcement is live: without ``ingresses/status`` or
``leases`` the binary gets 403s (recorded by the fake, logged by the binary) and writes no status.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from api_support import REAL
from e2e_lib import (LOOPBACK, REPO, STARTUP_TIMEOUT, Process, Router, _Fatal, backend_objects, free_port,
                     http_path, ingress, port_open, require_binary, rule, wait_until)
from fakeapi import RESOURCES, FakeApiServer, resource_for, service_account_user

pytestmark = pytest.mark.skipif(REAL, reason="the chart's RBAC is checked against the fake API server")

CHART = REPO / "charts" / "tandem"
CI_DIR = CHART / "ci"
CI_FILES = sorted(CI_DIR.glob("*-values.yaml"))
RELEASE_NS = "ingress"           # where the chart is installed (helm -n); ci/edge-values.yaml's
                                 # default certificate lives there
APPS = "apps"                    # the application's Ingresses, Services and TLS Secrets
TIERS = {"router": "router", "tls-edge": "edge"}   # binary -> tier

# The README's RBAC table: the most a release may be granted, as {(group, resource): verbs}.
README_RBAC = {
    ("networking.k8s.io", "ingresses"): {"get", "list", "watch"},
    ("networking.k8s.io", "ingressclasses"): {"get", "list", "watch"},
    ("networking.k8s.io", "ingresses/status"): {"update", "patch"},
    ("", "services"): {"get", "list", "watch"},
    ("", "endpoints"): {"get", "list", "watch"},
    ("discovery.k8s.io", "endpointslices"): {"get", "list", "watch"},
    ("", "secrets"): {"get", "list", "watch"},          # edge only
    ("coordination.k8s.io", "leases"): {"get", "create", "update"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
ALL_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")


def ci_id(path: Path) -> str:
    return path.name.removesuffix("-values.yaml")


# --------------------------------------------------------------------------- rendering


def helm_binary() -> str:
    """$TANDEM_HELM, else .venv/bin/helm (scripts/setup.sh installs it), else helm on PATH. Missing:
    the test fails under CI=true or TANDEM_E2E_REQUIRE_BINARIES=1, else it is skipped."""
    for cand in (os.environ.get("TANDEM_HELM"), REPO / ".venv" / "bin" / "helm", shutil.which("helm")):
        if cand and os.access(str(cand), os.X_OK):
            return str(cand)
    msg = "helm not found ($TANDEM_HELM, .venv/bin/helm, PATH); scripts/setup.sh installs it"
    if os.environ.get("TANDEM_E2E_REQUIRE_BINARIES") == "1" or os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


@dataclass
class Release:
    """One ``helm template`` rendering of the chart."""
    name: str
    namespace: str
    docs: list[dict]
    sets: list[str] = field(default_factory=list)

    def of_kind(self, *kinds: str) -> list[dict]:
        return [d for d in self.docs if d.get("kind") in kinds]

    @property
    def workload(self) -> dict:
        [w] = self.of_kind("Deployment", "DaemonSet")
        return w

    @property
    def pod_spec(self) -> dict:
        return self.workload["spec"]["template"]["spec"]

    @property
    def container(self) -> dict:
        return self.pod_spec["containers"][0]

    @property
    def binary(self) -> str:
        return Path((self.container.get("command") or ["?"])[0]).name

    @property
    def tier(self) -> str:
        return TIERS[self.binary]

    @property
    def args(self) -> list[str]:
        return list(self.container.get("args") or [])

    def arg(self, flag: str) -> str | None:
        """Value of ``--flag=value`` / ``--flag value`` in the rendered args."""
        args = self.args
        for i, a in enumerate(args):
            if a.startswith(flag + "="):
                return a.split("=", 1)[1]
            if a == flag and i + 1 < len(args):
                return args[i + 1]
        return None

    @property
    def app_namespace(self) -> str:
        """Where the test puts the application: the watched namespace, else ``apps``."""
        return self.arg("--watch-namespace") or APPS

    @property
    def service_account(self) -> str:
        return self.pod_spec.get("serviceAccountName") or "default"

    @property
    def user(self) -> str:
        return service_account_user(self.namespace, self.service_account).name

    @property
    def rbac(self) -> list[dict]:
        return self.of_kind("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")

    def status_addresses(self) -> list[dict]:
        """What Ingress status must hold: --publish-status-address, else the externalIPs of the
        rendered Service --publish-service names (sorted, as the binaries write them)."""
        fixed = self.arg("--publish-status-address")
        if fixed:
            return [{"ip": a} for a in sorted(fixed.split(","))]
        publish = self.arg("--publish-service")
        assert publish, f"neither --publish-status-address nor --publish-service in {self.args}"
        ns, _, name = publish.partition("/")
        svc = [s for s in self.of_kind("Service") if s["metadata"]["name"] == name
               and s["metadata"].get("namespace", self.namespace) == ns]
        assert svc, f"--publish-service={publish} names no Service of the release"
        ips = svc[0]["spec"].get("externalIPs") or []
        assert ips, f"the published Service {publish} has no externalIPs in this configuration"
        return [{"ip": a} for a in sorted(ips)]

    def loadable(self) -> list[dict]:
        """What ``helm install -n`` would create, for the kinds the fake knows (no Deployment,
        PodDisruptionBudget, ServiceMonitor...); namespaced objects without a namespace go to the
        release's."""
        out = []
        for d in self.docs:
            try:
                r = resource_for(d)
            except KeyError:
                continue
            d = copy.deepcopy(d)
            if r.namespaced:
                d["metadata"].setdefault("namespace", self.namespace)
            out.append(d)
        return out


def render(values: str, *sets: str, release: str | None = None, namespace: str = RELEASE_NS) -> Release:
    """``helm template tandem-<values> charts/tandem -f ci/<values>-values.yaml --set ...``."""
    release = release or f"tandem-{values}"
    argv = [helm_binary(), "template", release, str(CHART), "--namespace", namespace,
            "-f", str(CI_DIR / f"{values}-values.yaml")]
    for s in sets:
        argv += ["--set", s]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"helm template failed: {' '.join(argv)}\n{p.stderr}"
    docs = [d for d in yaml.safe_load_all(p.stdout) if d]
    return Release(release, namespace, docs, list(sets))


def without_resource(rel: Release, resource: str) -> list[dict]:
    """The release's loadable objects with ``resource`` removed from every rule (a rule left with
    no resources is dropped): a deliberately reduced policy."""
    out = []
    for d in rel.loadable():
        if d["kind"] in ("Role", "ClusterRole"):
            rules = []
            for r in d.get("rules") or []:
                r = dict(r, resources=[x for x in r.get("resources") or [] if x != resource])
                if r["resources"] or r.get("nonResourceURLs"):
                    rules.append(r)
            d["rules"] = rules
        out.append(d)
    return out


# --------------------------------------------------------------------------- running a tier


class Tier(Router):
    """A ``router`` or ``tls-edge`` started with the rendered Deployment's args and env."""

    def __init__(self, env, fake: FakeApiServer, rel: Release, *, pod_name: str | None = None,
                 wait_ready: bool = True):
        self.env = env
        self.fake = fake
        self.rel = rel
        self.manifests_dir = None
        self.http_port = free_port()
        self.https_port = free_port()
        self.admin_port = free_port()
        self.pod_name = pod_name or f"{rel.workload['metadata']['name']}-5d8f7c9b4-x2x7q"
        self.token = fake.add_service_account_token(rel.namespace, rel.service_account)
        kubeconfig = env.work_dir / f"kubeconfig-{rel.name}.json"
        # in a pod: the ServiceAccount's token, and its namespace as the default one
        fake.write_kubeconfig(kubeconfig, token=self.token, namespace=rel.namespace)
        binary = rel.binary
        assert binary in TIERS, f"the release runs {rel.container.get('command')}"
        ports = {"--http-listen": self.http_port, "--https-listen": self.https_port,
                 "--admin-listen": self.admin_port}
        args, skip = [], False
        for i, a in enumerate(rel.args):
            if skip:
                skip = False
                continue
            flag = a.split("=", 1)[0]
            if flag in ports:
                args.append(f"{flag}={LOOPBACK}:{ports[flag]}")
                skip = "=" not in a
            else:
                args.append(a)
        assert any(a.startswith("--admin-listen=") for a in args), f"no --admin-listen in {rel.args}"
        self.argv = [str(require_binary(binary)), *args, "--kubeconfig", str(kubeconfig)]
        self.name = env._unique(rel.name)
        self.proc = Process(self.name, self.argv, env.log_dir, env=dict(os.environ, **self._env()))
        env.procs.append(self.proc)
        if wait_ready:
            self.wait_ready()

    def _env(self) -> dict[str, str]:
        """The container's env: downward-API fields as the kubelet fills them, literal values."""
        out = {}
        fields = {"metadata.namespace": self.rel.namespace, "metadata.name": self.pod_name}
        for e in self.rel.container.get("env") or []:
            if "value" in e:
                out[e["name"]] = str(e["value"])
                continue
            ref = ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
            assert ref in fields, f"env {e['name']}: unsupported valueFrom {e.get('valueFrom')}"
            out[e["name"]] = fields[ref]
        return out

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        def ready():
            if not self.proc.alive():
                raise _Fatal(f"{self.name} exited early\n{self.proc.describe()}")
            return self.admin_status("/readyz") == 200

        try:
            wait_until(ready, timeout, interval=0.05, desc=f"{self.name} /readyz == 200")
        except _Fatal as e:
            pytest.fail(f"{e}\ndenials: {self.denials()}")
        except AssertionError as e:
            pytest.fail(f"{e}\ndenials: {self.denials()}\n{self.proc.describe()}")
        wait_until(lambda: port_open(self.http_port), 10, desc=f"{self.name} http listener accepting")

    def requests(self, **kw):
        return self.fake.requests(client=self.token, **kw)

    def denials(self):
        return [(d.code, d.verb, d.combined_resource, d.namespace, d.name) for d in self.fake.denials()
                if d.client == self.token]


# --------------------------------------------------------------------------- fixtures and objects


@pytest.fixture
def fakes():
    made: list[FakeApiServer] = []
    yield made
    for f in made:
        f.stop()


def new_fake(fakes: list, objects: list[dict]) -> FakeApiServer:
    f = FakeApiServer(authorization=True, rbac_objects=objects).start()
    fakes.append(f)
    return f


@dataclass
class App:
    """What ``put_app`` created: the served Ingress ``web`` and the rejected ``broken``."""
    namespace: str
    cert: object = None           # edge: the certificate of brand.example
    default_cert: object = None   # edge: the certificate behind --default-certificate
    ca: str | None = None


def put_app(fake: FakeApiServer, env, rel: Release) -> App:
    """An echo backend (Service + EndpointSlice), an Ingress served by the release (for the edge:
    TLS for brand.example from a Secret; the --default-certificate Secret too) and one it must
    reject (a path without a leading slash), in the application namespace."""
    ns = rel.app_namespace
    app = App(ns)
    a = env.echo("svc-a")
    fake.put_many(backend_objects("svc-a", [a], namespace=ns))
    cls = rel.arg("--ingress-class")
    assert cls, f"the Deployment passes no --ingress-class: {rel.args}"
    if rel.tier == "router":
        fake.put(ingress("web", [rule(None, http_path("/web", "svc-a"))], namespace=ns, class_name=cls))
    else:
        from edge_support import Pki, cert_secret, edge_ingress

        pki = Pki(env.work_dir / "pki")
        app.ca = pki.ca_path
        app.cert = pki.leaf("brand", ["brand.example"])
        fake.put(cert_secret("brand-tls", app.cert, namespace=ns))
        fake.put(edge_ingress("web", [(["brand.example"], "brand-tls")], "svc-a", namespace=ns, class_name=cls))
        default = rel.arg("--default-certificate")
        if default:
            dns, _, dname = default.partition("/")
            app.default_cert = pki.leaf("default", ["default.invalid"])
            fake.put(cert_secret(dname, app.default_cert, namespace=dns))
    fake.put(ingress("broken", [rule(None, http_path("no-slash", "svc-a"))], namespace=ns, class_name=cls))
    return app


def ingress_addresses(fake: FakeApiServer, name: str, namespace: str) -> list[dict]:
    obj = fake.get("ingresses", name, namespace) or {}
    return ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []


def wait_served(t: "Tier", app: App) -> None:
    """The route of Ingress ``web`` answers from svc-a (edge: over TLS with the Secret's
    certificate, verified against the test CA)."""
    if t.rel.tier == "router":
        wait_until(lambda: t.get("/web/x").service == "svc-a", 10, desc="router serves /web from svc-a")
        return
    from edge_support import curl_https, peer_fingerprint, wait_fingerprint

    wait_fingerprint(t.https_port, "brand.example", app.cert.fingerprint)
    r = curl_https(t.https_port, "brand.example", "/", cacert=app.ca)
    assert r.status == 200 and r.service == "svc-a", (r.status, r.headers)
    if app.default_cert is not None:  # --default-certificate from the chart, read from its Secret
        wait_fingerprint(t.https_port, "unknown.example", app.default_cert.fingerprint)
        assert peer_fingerprint(t.https_port, "brand.example") == app.cert.fingerprint


def assert_clean(t: "Tier", fake: FakeApiServer) -> None:
    """Zero 401/403, every request authenticated as the release's ServiceAccount, namespaced
    kinds never asked cluster-wide when a namespace is watched, no Secret asked by a router."""
    assert t.denials() == [] and fake.denials() == [], [d.message for d in fake.denials()]
    mine = t.requests()
    assert mine and all(r.user == t.rel.user for r in mine), {r.user for r in mine}
    if t.rel.arg("--watch-namespace"):
        wide = [r for r in mine if r.resource not in ("ingressclasses", "") and r.namespace == ""]
        assert not wide, f"cluster-wide requests for namespaced kinds: {[(r.verb, r.path) for r in wide]}"
    secrets = fake.requests(resource="secrets")
    if t.rel.tier == "router":
        assert secrets == [], f"the router asked for Secrets: {[(r.method, r.path, r.code) for r in secrets]}"
    else:
        assert secrets and all(r.authz == "allowed" for r in secrets)
        assert all("type%3Dkubernetes.io%2Ftls" in r.path or "type=kubernetes.io/tls" in r.path for r in secrets), \
            [r.path for r in secrets]
    assert t.proc.alive()


def allowed_matrix(fake: FakeApiServer, rel: Release, namespaces: list[str]) -> dict[tuple[str, str], set[str]]:
    """Every (group, resource) of the fake's kinds (and their status) that the policy lets the
    release's ServiceAccount touch in any of ``namespaces`` or cluster-wide, with the verbs. Named
    requests are probed with every resourceName the policy mentions and with an unlisted one."""
    names = {"", "not-a-listed-name"} | {n for d in rel.rbac for r in d.get("rules") or []
                                          for n in r.get("resourceNames") or []}
    resources = {(r.group, r.plural) for r in RESOURCES}
    resources |= {(r.group, f"{r.plural}/status") for r in RESOURCES if r.status_subresource}
    out: dict[tuple[str, str], set[str]] = {}
    for group, res in sorted(resources):
        for ns in [""] + namespaces:
            for verb in ALL_VERBS:
                if any(fake.can(rel.user, verb, res, ns, n, group=group) for n in names):
                    out.setdefault((group, res), set()).add(verb)
    return out


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("values", [ci_id(p) for p in CI_FILES])
def test_ci_policy_is_least_privilege(values):
    """What each ci configuration's policy grants, probed verb by verb through the authorizer over
    every kind the fake knows: nothing beyond the README's table (no Secrets for a router, no
    deletes, no RBAC, no Pods, no ConfigMaps), the Lease only in the release namespace and, beyond
    create, only the release's own one."""
    rel = render(values)
    assert [s["metadata"]["name"] for s in rel.of_kind("ServiceAccount")] == [rel.service_account], \
        f"the pod runs as {rel.service_account!r}, which the release does not create"
    fake = FakeApiServer(authorization=True, rbac_objects=rel.loadable())  # the policy only, never started
    watched = rel.arg("--watch-namespace")
    granted = allowed_matrix(fake, rel, [RELEASE_NS, APPS] + ([watched] if watched else []))
    ceiling = dict(README_RBAC)
    if rel.tier == "router":
        ceiling.pop(("", "secrets"))
    beyond = {k: sorted(v - ceiling.get(k, set())) for k, v in granted.items() if v - ceiling.get(k, set())}
    shown = {f"{g or 'core'}/{r}": sorted(v) for (g, r), v in sorted(granted.items())}
    print(f"\n{values} ({rel.tier}) may: {json.dumps(shown)}")
    assert not beyond, f"{values}: grants beyond the README's RBAC table: {beyond}"
    # the rules as written too (kinds the fake does not serve, wildcards, non-resource URLs)
    for d in rel.of_kind("Role", "ClusterRole"):
        for r in d.get("rules") or []:
            assert not r.get("nonResourceURLs"), f"{d['kind']} {d['metadata']['name']}: {r}"
            for g in r.get("apiGroups") or []:
                for res in r.get("resources") or []:
                    assert set(r.get("verbs") or []) <= ceiling.get((g, res), set()), \
                        f"{d['kind']} {d['metadata']['name']} grants {r} beyond the README's table"
    if rel.tier == "router":
        assert not any(fake.can(rel.user, v, "secrets", ns) for v in ALL_VERBS for ns in ("", APPS, RELEASE_NS))
    else:
        assert fake.can(rel.user, "watch", "secrets", watched or "")
    election = rel.arg("--election-id")
    assert fake.can(rel.user, "create", "leases", RELEASE_NS)
    assert fake.can(rel.user, "update", "leases", RELEASE_NS, election)
    assert not fake.can(rel.user, "update", "leases", RELEASE_NS, f"other-than-{election}")
    assert not fake.can(rel.user, "create", "leases", APPS)


@pytest.mark.parametrize("values", ["router", "edge"])
def test_release_runs_on_its_rbac(fakes, env, values):
    """The seed topology's router and edge (ci/router-values.yaml, ci/edge-values.yaml) on exactly
    the rendered policy: ready, serving, Ingress status from the published Service's externalIPs,
    the Lease created and renewed, an Event for the rejected Ingress, the edge's certificates from
    Secrets; zero 403s, and the router never asks for a Secret."""
    rel = render(values)
    fake = new_fake(fakes, rel.loadable())
    app = put_app(fake, env, rel)
    t = Tier(env, fake, rel)
    wait_served(t, app)
    assert rel.arg("--publish-service") == f"{RELEASE_NS}/{rel.workload['metadata']['name']}", rel.args
    want = rel.status_addresses()
    wait_until(lambda: ingress_addresses(fake, "web", app.namespace) == want, 10,
               desc=f"status of Ingress web == {want} (the published Service's externalIPs)")
    election = rel.arg("--election-id")
    wait_until(lambda: ((fake.lease(election, RELEASE_NS) or {}).get("spec") or {}).get("holderIdentity")
               == t.pod_name, 10, desc=f"Lease {RELEASE_NS}/{election} held by {t.pod_name} ($POD_NAME)")
    wait_until(lambda: any(r.code == 200 for r in t.requests(resource="leases", method="PUT")), 15,
               desc="a Lease renewal (update) accepted")
    wait_until(lambda: [e for e in fake.events(app.namespace, involved="broken") if e.get("type") == "Warning"], 10,
               desc="a Warning Event for the rejected Ingress")
    assert {w.client for w in fake.writes(resource="events")} == {t.token}
    assert_clean(t, fake)
    used = sorted({(r.verb, r.api_group or "core", r.resource + (f"/{r.subresource}" if r.subresource else ""),
                    r.namespace or "*") for r in t.requests()})
    print(f"\n{values} ({rel.user}) used: {used}")


def _expected_denial(rel: Release, app_ns: str, drop: str) -> tuple[str, str, str, str]:
    if drop == "ingresses/status":
        return "patch", "ingresses/status", app_ns, "web"
    return "get", "leases", RELEASE_NS, rel.arg("--election-id")


@pytest.mark.parametrize("values,drop", [("router", "ingresses/status"), ("router", "leases"),
                                         ("edge", "ingresses/status")])
def test_reduced_policy_is_refused(fakes, env, values, drop):
    """Enforcement is live: the rendered policy minus one resource gets 403s where the binary
    needs it, worded like the real server, logged by the binary; no status is written; the rest
    keeps working."""
    rel = render(values)
    fake = new_fake(fakes, without_resource(rel, drop))
    app = put_app(fake, env, rel)
    t = Tier(env, fake, rel)
    verb, resource, ns, name = _expected_denial(rel, app.namespace, drop)
    wait_until(lambda: (403, verb, resource, ns, name) in t.denials(), 15,
               desc=f"403 for {verb} {resource} {ns}/{name}")
    d = next(d for d in fake.denials() if (d.verb, d.combined_resource, d.name) == (verb, resource, name))
    group = resource_for(resource.split("/")[0]).group
    qualified = f"{resource.split('/')[0]}.{group}" if group else resource.split("/")[0]
    assert d.message == (f'{qualified} "{name}" is forbidden: User "{rel.user}" cannot {verb} resource '
                         f'"{resource}" in API group "{group}" in the namespace "{ns}"'), d.message
    assert {x[2] for x in t.denials()} == {resource}, f"other denials than {resource}: {t.denials()}"
    t.proc.wait_log(r"is forbidden: User", 10, desc="the 403 in the binary's log")
    assert ingress_addresses(fake, "web", app.namespace) == [], "status written without the permission"
    wait_served(t, app)
    print(f"\n{values} without {drop}: {len(t.denials())} denials, first: {d.message}")


WATCH_CASES = {
    # ci/watch-namespace-values.yaml as it is: an edge watching "shop", installed elsewhere, so
    # with fixed status addresses
    "edge-ci": ("watch-namespace", [], RELEASE_NS),
    # the router of the seed topology watching "apps" from another namespace
    "router-elsewhere": ("router", [f"watchNamespace={APPS}", "publishService.enabled=false",
                                    "publishStatusAddresses={192.0.2.30}"], RELEASE_NS),
    # installed in the watched namespace: the published Service is visible
    "router-same-namespace": ("router", [f"watchNamespace={APPS}"], APPS),
}


@pytest.mark.parametrize("case", sorted(WATCH_CASES))
def test_watch_namespace_roles(fakes, env, case):
    """watchNamespace: the watched kinds through a Role in that namespace (IngressClasses stay
    cluster-wide); the binary gets --watch-namespace and serves, writes status, the Lease and
    Events with zero 403s, never asking for a namespaced kind cluster-wide."""
    values, sets, namespace = WATCH_CASES[case]
    rel = render(values, *sets, namespace=namespace)
    watched = rel.arg("--watch-namespace")
    assert watched, rel.args
    assert not [r for d in rel.of_kind("ClusterRole") for r in d.get("rules") or []
                if set(r.get("resources") or []) - {"ingressclasses"}], "namespaced kinds in a ClusterRole"
    fake = new_fake(fakes, rel.loadable())
    kinds = ("ingresses", "services", "endpointslices", "endpoints") + (("secrets",) if rel.tier == "edge" else ())
    for res in kinds:
        assert fake.can(rel.user, "watch", res, watched), res
        assert not fake.can(rel.user, "watch", res), f"{res}: still granted cluster-wide"
        assert not fake.can(rel.user, "watch", res, "elsewhere"), f"{res}: granted outside {watched}"
    assert fake.can(rel.user, "watch", "ingressclasses")
    assert fake.can(rel.user, "patch", "ingresses/status", watched)
    assert not fake.can(rel.user, "patch", "ingresses/status", "elsewhere")
    app = put_app(fake, env, rel)
    t = Tier(env, fake, rel)
    wait_served(t, app)
    want = rel.status_addresses()
    wait_until(lambda: ingress_addresses(fake, "web", watched) == want, 10, desc=f"status of Ingress web == {want}")
    wait_until(lambda: fake.events(watched, involved="broken"), 10, desc="Event for the rejected Ingress")
    election = rel.arg("--election-id")
    wait_until(lambda: fake.lease(election, namespace), 10, desc=f"Lease {namespace}/{election} written")
    assert_clean(t, fake)


OTHER_CI = [ci_id(p) for p in CI_FILES if ci_id(p) not in ("router", "edge", "watch-namespace")]


@pytest.mark.parametrize("values", OTHER_CI)
def test_other_ci_configurations_run_on_their_rbac(fakes, env, values):
    """Every other ci configuration (DaemonSet, defaults, legacy fallback, observability, a
    second router...) starts on its own rendered policy: ready, serving, the Lease taken, status
    written, zero 403s."""
    rel = render(values)
    fake = new_fake(fakes, rel.loadable())
    app = put_app(fake, env, rel)
    t = Tier(env, fake, rel)
    wait_served(t, app)
    election = rel.arg("--election-id")
    wait_until(lambda: fake.lease(election, RELEASE_NS), 10, desc=f"Lease {RELEASE_NS}/{election} written")
    if rel.arg("--publish-status-address") or [s for s in rel.of_kind("Service") if s["spec"].get("externalIPs")]:
        want = rel.status_addresses()
        wait_until(lambda: ingress_addresses(fake, "web", app.namespace) == want, 10,
                   desc=f"status of Ingress web == {want}")
    assert_clean(t, fake)


def test_seed_topology_edge_to_router_side_by_side(fakes, env):
    """The seed topology: the edge and router releases (ci/edge-values.yaml, ci/router-values.yaml)
    side by side in one namespace, each on its own rendered policy; HTTPS client → edge → the
    router release's Service (its EndpointSlice written here, as the EndpointSlice controller
    would, with the port's appProtocol) → router → echo. Each release writes its own Ingress
    status and Lease; zero 403s for both; the router asks for no Secret."""
    from edge_support import Pki, cert_secret, curl_https, edge_ingress
    from e2e_lib import Endpoint, endpoint_slice

    rt, ed = render("router"), render("edge")
    keys = [(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]) for d in rt.loadable() + ed.loadable()]
    assert len(keys) == len(set(keys)), f"the two releases collide: {sorted(k for k in keys if keys.count(k) > 1)}"
    fake = new_fake(fakes, rt.loadable() + ed.loadable())
    echo = env.echo("svc-a")
    fake.put_many(backend_objects("svc-a", [echo], namespace=APPS))
    fake.put(ingress("web", [rule("brand.example", http_path("/", "svc-a"))], namespace=APPS,
                     class_name=rt.arg("--ingress-class")))
    router = Tier(env, fake, rt)

    # the router release's Service, as the edge reaches it: its EndpointSlice → the router's port
    svc_name = rt.arg("--publish-service").split("/")[1]
    svc = fake.get("services", svc_name, RELEASE_NS)
    http_port = next(p for p in svc["spec"]["ports"] if p["name"] == "http")
    slice_ = endpoint_slice(f"{svc_name}-x1", svc_name, [Endpoint(LOOPBACK, router.http_port, True, router.pod_name)],
                            [("http", router.http_port)], namespace=RELEASE_NS)
    if http_port.get("appProtocol"):
        slice_["ports"][0]["appProtocol"] = http_port["appProtocol"]
    fake.put(slice_)
    pki = Pki(env.work_dir / "pki")
    cert = pki.leaf("brand", ["brand.example"])
    fake.put(cert_secret("brand-tls", cert, namespace=RELEASE_NS))
    dns, _, dname = ed.arg("--default-certificate").partition("/")
    fake.put(cert_secret(dname, pki.leaf("default", ["default.invalid"]), namespace=dns))
    fake.put(edge_ingress("brand", [(["brand.example"], "brand-tls")], svc_name, http_port["port"],
                          namespace=RELEASE_NS, class_name=ed.arg("--ingress-class")))
    edge = Tier(env, fake, ed)

    def through():
        r = curl_https(edge.https_port, "brand.example", "/x", cacert=pki.ca_path, check=False)
        return r if r.status == 200 and r.service == "svc-a" else None

    r = wait_until(through, 15, interval=0.1, desc="HTTPS brand.example through edge and router")
    line = json.loads(router.proc.wait_log(r'"path":"/x"', 5, desc="the router's access-log line"))
    print(f"\nedge→router hop as the router logged it: {line.get('proto')} (Service port appProtocol "
          f"{http_port.get('appProtocol')!r})")
    if http_port.get("appProtocol") == "kubernetes.io/h2c":
        assert line.get("proto") == "HTTP/2.0", line
    wait_until(lambda: ingress_addresses(fake, "web", APPS) == rt.status_addresses(), 10, desc="router's status")
    wait_until(lambda: ingress_addresses(fake, "brand", RELEASE_NS) == ed.status_addresses(), 10, desc="edge's status")
    holders = {}
    for t in (router, edge):
        lease = wait_until(lambda: fake.lease(t.rel.arg("--election-id"), RELEASE_NS), 10, desc="Lease")
        holders[lease["metadata"]["name"]] = lease["spec"]["holderIdentity"]
    assert holders == {rt.arg("--election-id"): router.pod_name, ed.arg("--election-id"): edge.pod_name}, holders
    assert fake.denials() == [], [d.message for d in fake.denials()]
    assert fake.requests(resource="secrets", user=rt.user) == []
    assert {r.user for r in fake.requests()} == {rt.user, ed.user}
