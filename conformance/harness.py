"""tandem's Ingress conformance harness: scenario files, the objects they stand for, the requests
they send and the checks on what came back. Shared by the local runner (``test_conformance.py``,
real binaries on loopback) and the cluster runner (``cluster.py``).

A scenario file (``scenarios/*.yaml``) holds:

* ``feature``, ``about``, ``upstream``: the feature area and which upstream scenarios it follows;
* ``namespace``: default namespace of its objects;
* ``objects``: Ingresses (and IngressClasses) as they would be applied to a cluster.
  ``${class}`` / ``${controller}`` stand for the class and controller of the tier under test;
  an Ingress with neither ``spec.ingressClassName`` nor the legacy annotation gets
  ``ingressClassName: ${class}`` (as the upstream suite does), unless listed in ``classless``;
* ``ingressClass``: ``true`` (default) adds the tier's IngressClass naming its controller, as the
  Helm chart does, unless ``objects`` has one of that name; ``false`` adds none;
* ``backends``: Services with ``replicas`` echo backends each (``port``, optional ``portName``,
  ``ingress``: the Ingress the backend reports, as the upstream echo server does);
* ``tls``: ``kubernetes.io/tls`` Secrets issued by the run's test CA for ``hosts``;
* ``cases``: requests and what must come back (see :func:`check`), with ``per_setup`` details
  (same outcome as upstream, e.g. a 308 hop first) and ``deviates`` (tandem deliberately answers
  otherwise on that set-up: ``reason`` and the ``expect`` that is asserted instead).
"""

from __future__ import annotations

import copy
import http.client
import json
import re
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
SCENARIO_DIR = HERE / "scenarios"

SETUPS = ("router", "edge", "edge-router")
# The tier whose Ingresses the scenario's objects are, per set-up.
ROUTING_TIER = {"router": "router", "edge": "edge", "edge-router": "router"}
CLASS = {"router": "tandem-router", "edge": "tandem-edge"}
CONTROLLER = {"router": "tandem.dev/router", "edge": "tandem.dev/tls-edge"}
# Where the edge -> router objects live (the router release's namespace in the chart's topology).
RELEASE_NAMESPACE = "tandem"
ROUTER_SERVICE = "tandem-router"
USER_AGENT = "tandem-conformance/1"
REQUEST_TIMEOUT = 5.0

SCENARIO_KEYS = {"feature", "about", "upstream", "namespace", "objects", "ingressClass", "classless",
                 "backends", "tls", "cases", "cluster"}
CASE_KEYS = {"name", "request", "expect", "per_setup", "deviates", "cluster_expect"}
REQUEST_KEYS = {"method", "scheme", "host", "path", "headers", "repeat"}
EXPECT_KEYS = {"status", "service", "namespace", "ingress", "distinct_pods", "request", "response", "tls",
               "redirect", "tls_refused"}


class ScenarioError(ValueError):
    pass


@dataclass
class Backend:
    name: str
    namespace: str
    port: int
    port_name: str | None
    replicas: int
    ingress: str

    def pod(self, i: int) -> str:
        """The pod name an echo replica reports: it carries namespace and Ingress, since
        echo-backend itself only reports ``--service`` and ``--pod``."""
        return f"{self.namespace}:{self.ingress}:{self.name}-{i}"


@dataclass
class TlsSecret:
    name: str
    namespace: str
    hosts: list[str]


@dataclass
class Case:
    id: str
    name: str
    request: dict
    expect: dict
    per_setup: dict = field(default_factory=dict)
    deviates: dict = field(default_factory=dict)
    cluster_expect: dict = field(default_factory=dict)

    def plan(self, setup: str) -> tuple[dict, str | None]:
        """(expectation, deviation reason or None) on ``setup``."""
        if setup in self.deviates:
            d = self.deviates[setup]
            return d["expect"], d["reason"]
        exp = copy.deepcopy(self.expect)
        exp.update(copy.deepcopy(self.per_setup.get(setup, {})))
        return exp, None


@dataclass
class Scenario:
    path: Path
    id: str
    feature: str
    about: str
    upstream: str
    namespace: str
    objects: list[dict]
    ingress_class: bool
    classless: set[str]
    backends: list[Backend]
    tls: list[TlsSecret]
    cases: list[Case]
    cluster: dict

    # ----------------------------------------------------------------- objects per set-up

    def routing_objects(self, setup: str, *, class_name: str | None = None,
                        add_class: bool = True) -> list[dict]:
        """The scenario's own Ingresses/IngressClasses for the routing tier of ``setup``
        (``class_name``: a class other than the tier's default; ``add_class=False``: leave the
        tier's IngressClass out, as on a cluster where the Helm release owns it)."""
        tier = ROUTING_TIER[setup]
        cls = class_name or CLASS[tier]
        subst = {"${class}": cls, "${controller}": CONTROLLER[tier]}
        out = []
        for obj in self.objects:
            o = _substitute(copy.deepcopy(obj), subst)
            if o["kind"] == "Ingress":
                meta = o.setdefault("metadata", {})
                meta.setdefault("namespace", self.namespace)
                ann = meta.get("annotations") or {}
                spec = o.setdefault("spec", {})
                if (meta["name"] not in self.classless and "ingressClassName" not in spec
                        and "kubernetes.io/ingress.class" not in ann):
                    spec["ingressClassName"] = cls
            out.append(o)
        if add_class and self.ingress_class and not any(
                o["kind"] == "IngressClass" and o["metadata"]["name"] == cls for o in out):
            out.insert(0, ingress_class_object(tier))
        return out

    def own_ingress_class(self) -> bool:
        """Whether the scenario defines the tier's IngressClass itself."""
        return any(o["kind"] == "IngressClass" and o["metadata"]["name"] == "${class}" for o in self.objects)

    def ingresses(self, setup: str) -> list[dict]:
        return [o for o in self.routing_objects(setup) if o["kind"] == "Ingress"]

    def tls_entries(self, setup: str) -> list[tuple[str, str, list[str]]]:
        """(namespace, secretName, hosts) of every spec.tls entry of the scenario's Ingresses."""
        out = []
        for ing in self.ingresses(setup):
            for t in ing["spec"].get("tls") or []:
                out.append((ing["metadata"]["namespace"], t["secretName"], list(t.get("hosts") or [])))
        return out

    def edge_to_router_objects(self, *, namespace: str = RELEASE_NAMESPACE, service: str = ROUTER_SERVICE,
                               edge_class: str = CLASS["edge"], add_class: bool = True) -> list[dict]:
        """Edge objects of the edge -> router set-up, in the router's namespace (as the chart's
        README does it): one edge Ingress carrying every TLS entry of the scenario (the Secrets
        are copied there, named ``<namespace>-<secret>``), a ``/`` rule per TLS host and a
        defaultBackend, all to the router's Service. Everything reaches the router, which routes."""
        tls, rules, seen = [], [], set()
        backend = {"service": {"name": service, "port": {"name": "http"}}}
        for ns, secret, hosts in self.tls_entries("edge-router"):
            tls.append({"hosts": hosts, "secretName": f"{ns}-{secret}"})
            for h in hosts:
                if h not in seen:
                    seen.add(h)
                    rules.append({"host": h, "http": {"paths": [{"path": "/", "pathType": "Prefix",
                                                                  "backend": copy.deepcopy(backend)}]}})
        spec: dict = {"ingressClassName": edge_class, "defaultBackend": backend}
        if tls:
            spec["tls"] = tls
        if rules:
            spec["rules"] = rules
        ing = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
               "metadata": {"name": f"edge-to-router-{self.id.replace('_', '-')}", "namespace": namespace},
               "spec": spec}
        return [ingress_class_object("edge"), ing] if add_class else [ing]


def ingress_class_object(tier: str) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": CLASS[tier]},
            "spec": {"controller": CONTROLLER[tier]}}


def _substitute(value: Any, subst: dict[str, str]) -> Any:
    if isinstance(value, str):
        for k, v in subst.items():
            value = value.replace(k, v)
        return value
    if isinstance(value, list):
        return [_substitute(v, subst) for v in value]
    if isinstance(value, dict):
        return {_substitute(k, subst): _substitute(v, subst) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- loading


def _slug(text: str) -> str:
    """A test id: case kept (/FOO is not /foo), "/" kept apart as "_" (/foo/ is not /foo)."""
    return re.sub(r"[^A-Za-z0-9_]+", "-", text.replace("/", "_")).strip("-")[:80]


def load(path: Path) -> Scenario:
    raw = yaml.safe_load(path.read_text())
    where = path.name
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: not a mapping")
    unknown = set(raw) - SCENARIO_KEYS
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {sorted(unknown)}")
    ns = raw.get("namespace", "conformance")
    objects = raw.get("objects") or []
    for o in objects:
        if o.get("kind") not in ("Ingress", "IngressClass"):
            raise ScenarioError(f"{where}: objects may only be Ingresses and IngressClasses, not {o.get('kind')}")
    # Which Ingress references which Service: the default `ingress` a backend reports.
    refs: dict[tuple[str, str], set[str]] = {}
    for o in objects:
        if o["kind"] != "Ingress":
            continue
        ons = o["metadata"].get("namespace", ns)
        for svc in _services_of(o):
            refs.setdefault((ons, svc), set()).add(o["metadata"]["name"])
    backends = []
    for b in raw.get("backends") or []:
        bns = b.get("namespace", ns)
        ing = b.get("ingress")
        if ing is None:
            names = refs.get((bns, b["name"]), set())
            if len(names) != 1:
                raise ScenarioError(f"{where}: backend {bns}/{b['name']} is referenced by {sorted(names)}; "
                                    "say which Ingress it reports with `ingress:`")
            ing = next(iter(names))
        backends.append(Backend(b["name"], bns, int(b.get("port", 8080)), b.get("portName"),
                                int(b.get("replicas", 1)), ing))
    for key in refs:
        if not any((b.namespace, b.name) == key for b in backends):
            raise ScenarioError(f"{where}: Service {key[0]}/{key[1]} is referenced but not in backends")
    tls = [TlsSecret(t["secret"], t.get("namespace", ns), list(t["hosts"])) for t in raw.get("tls") or []]
    for o in objects:
        for t in (o.get("spec") or {}).get("tls") or [] if o["kind"] == "Ingress" else []:
            key = (o["metadata"].get("namespace", ns), t.get("secretName"))
            if not any((s.namespace, s.name) == key for s in tls):
                raise ScenarioError(f"{where}: Ingress {o['metadata']['name']} names Secret {key[0]}/{key[1]}, "
                                    "which is not in tls")
    cases, ids = [], set()
    for c in raw.get("cases") or []:
        bad = set(c) - CASE_KEYS
        if bad:
            raise ScenarioError(f"{where}: case {c.get('name')!r}: unknown keys {sorted(bad)}")
        if set(c.get("request", {})) - REQUEST_KEYS:
            raise ScenarioError(f"{where}: case {c['name']!r}: unknown request keys")
        expects = [c["expect"], *c.get("per_setup", {}).values(),
                   *(d["expect"] for d in c.get("deviates", {}).values())]
        for e in expects:
            if set(e) - EXPECT_KEYS:
                raise ScenarioError(f"{where}: case {c['name']!r}: unknown expect keys {sorted(set(e) - EXPECT_KEYS)}")
        for s in (*c.get("per_setup", {}), *c.get("deviates", {})):
            if s not in SETUPS:
                raise ScenarioError(f"{where}: case {c['name']!r}: unknown set-up {s!r}")
        for s, d in c.get("deviates", {}).items():
            if not d.get("reason"):
                raise ScenarioError(f"{where}: case {c['name']!r}: deviation on {s} without a reason")
        cid = _slug(c["name"])
        if cid in ids:
            raise ScenarioError(f"{where}: duplicate case name {c['name']!r}")
        ids.add(cid)
        cases.append(Case(cid, c["name"], c.get("request", {}), c["expect"], c.get("per_setup", {}),
                          c.get("deviates", {}), c.get("cluster_expect", {})))
    if not cases:
        raise ScenarioError(f"{where}: no cases")
    return Scenario(path, path.stem, raw["feature"], raw.get("about", ""), raw.get("upstream", ""), ns,
                    objects, raw.get("ingressClass", True), set(raw.get("classless") or []), backends, tls,
                    cases, raw.get("cluster") or {})


def _services_of(ing: dict) -> list[str]:
    spec = ing.get("spec") or {}
    out = []
    if spec.get("defaultBackend", {}).get("service"):
        out.append(spec["defaultBackend"]["service"]["name"])
    for r in spec.get("rules") or []:
        for p in (r.get("http") or {}).get("paths") or []:
            if p.get("backend", {}).get("service"):
                out.append(p["backend"]["service"]["name"])
    return out


def load_all(directory: Path = SCENARIO_DIR) -> list[Scenario]:
    return [load(p) for p in sorted(directory.glob("*.yaml"))]


# --------------------------------------------------------------------------- requests


@dataclass
class Target:
    """Where requests go: the plain-HTTP and (if any) HTTPS address of the set-up's entry tier."""
    address: str
    http_port: int
    https_port: int | None
    cafile: str | None


@dataclass
class Observation:
    status: int | None = None
    version: str = ""
    headers: dict[str, list[str]] = field(default_factory=dict)    # lower-case name -> values
    body: bytes = b""
    echo: dict | None = None            # what the backend saw, normalised (see :func:`echo_view`)
    redirects: list[tuple[int, str]] = field(default_factory=list)
    tls_hostname_ok: bool | None = None  # chain and hostname verified against the test CA
    tls_error: str | None = None
    peer_fingerprint: str | None = None
    peer_sans: list[str] = field(default_factory=list)
    error: str | None = None

    def brief(self) -> str:
        who = f"{self.echo['service']}@{self.echo['namespace']}/{self.echo['ingress']}" if self.echo else "-"
        return (f"status={self.status} served_by={who} redirects={self.redirects} tls_error={self.tls_error} "
                f"error={self.error} body={self.body[:160]!r}")


def echo_view(body: bytes) -> dict | None:
    """What the echo backend saw, from either echo: tandem's ``echo-backend`` (``service``,
    ``pod`` = ``namespace:ingress:service-i``, headers lower-case -> joined value) or the upstream
    suite's echo server (``namespace``, ``ingress``, ``service``, ``pod`` fields, headers
    canonical name -> list). Returns None for a body that is not an echo."""
    try:
        js = json.loads(body)
    except ValueError:
        return None
    if not isinstance(js, dict) or "service" not in js or "path" not in js:
        return None
    headers: dict[str, list[str]] = {}
    for k, v in (js.get("headers") or {}).items():
        headers.setdefault(k.lower(), []).extend(v if isinstance(v, list) else [v])
    if "namespace" in js:
        ns, ing = js.get("namespace"), js.get("ingress")
    else:
        parts = str(js.get("pod", "")).split(":")
        ns, ing = (parts[0], parts[1]) if len(parts) == 3 else (None, None)
    return {"service": js["service"], "namespace": ns, "ingress": ing, "pod": js.get("pod"),
            "host": js.get("host"), "path": js.get("path"), "method": js.get("method"),
            "proto": js.get("proto"), "headers": headers}


def _tls_context(cafile: str | None, verify: bool) -> ssl.SSLContext:
    if verify:
        ctx = ssl.create_default_context(cafile=cafile)
    else:
        ctx = ssl._create_unverified_context()  # noqa: S323 - only to describe a failed verification
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _one(target: Target, scheme: str, method: str, host: str | None, path: str, headers: dict,
         obs: Observation) -> None:
    """One HTTP/1.1 exchange; fills ``obs``."""
    h = {"User-Agent": USER_AGENT, **headers}
    if host:
        h["Host"] = host
    if scheme == "https":
        if target.https_port is None:
            raise AssertionError("no https listener")
        sni = host.rsplit(":", 1)[0] if host else None
        raw = socket.create_connection((target.address, target.https_port), timeout=REQUEST_TIMEOUT)
        try:
            tls = _tls_context(target.cafile, True).wrap_socket(raw, server_hostname=sni)
            obs.tls_hostname_ok = True
        except ssl.SSLError as e:
            raw.close()
            obs.tls_hostname_ok = False
            obs.tls_error = f"{type(e).__name__}: {e}"
            raw = socket.create_connection((target.address, target.https_port), timeout=REQUEST_TIMEOUT)
            tls = _tls_context(None, False).wrap_socket(raw, server_hostname=sni)
        der = tls.getpeercert(binary_form=True)
        obs.peer_fingerprint = _sha256(der)
        obs.peer_sans = _sans(der)
        conn = http.client.HTTPConnection(target.address, target.https_port, timeout=REQUEST_TIMEOUT)
        conn.sock = tls
    else:
        conn = http.client.HTTPConnection(target.address, target.http_port, timeout=REQUEST_TIMEOUT)
    try:
        conn.request(method, path, headers=h)
        r = conn.getresponse()
        obs.status = r.status
        obs.version = {10: "HTTP/1.0", 11: "HTTP/1.1"}.get(r.version, str(r.version))
        obs.headers = {}
        for k, v in r.getheaders():
            obs.headers.setdefault(k.lower(), []).append(v)
        obs.body = r.read()
    finally:
        conn.close()


def _sha256(der: bytes) -> str:
    import hashlib
    return hashlib.sha256(der).hexdigest()


def _sans(der: bytes) -> list[str]:
    import subprocess
    pem = ssl.DER_cert_to_PEM_cert(der)
    out = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"], input=pem.encode(),
                         capture_output=True, timeout=10).stdout.decode()
    return re.findall(r"DNS:([^,\s]+)", out)


def perform(target: Target, req: dict) -> Observation:
    """Send one request as the upstream suite does (HTTP/1.1, a fresh connection, redirects
    followed to the same entry address with the Location's scheme, host and path)."""
    obs = Observation()
    scheme, method = req.get("scheme", "http"), req.get("method", "GET")
    host, path = req.get("host"), req.get("path", "/")
    headers = dict(req.get("headers") or {})
    try:
        for _ in range(4):
            _one(target, scheme, method, host, path, headers, obs)
            loc = (obs.headers.get("location") or [None])[0]
            if obs.status not in (301, 302, 303, 307, 308) or not loc:
                break
            obs.redirects.append((obs.status, loc))
            u = urllib.parse.urlsplit(loc)
            scheme, host = u.scheme or scheme, u.hostname or host
            path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        obs.echo = echo_view(obs.body)
    except (OSError, http.client.HTTPException, ssl.SSLError, AssertionError) as e:
        obs.error = f"{type(e).__name__}: {e}"
    return obs


def tls_refused(target: Target, host: str | None) -> str | None:
    """None if a TLS handshake succeeds on the set-up's TLS port or, for a tier without one,
    on its only port; else the error it failed with."""
    port = target.https_port or target.http_port
    try:
        with socket.create_connection((target.address, port), timeout=REQUEST_TIMEOUT) as raw:
            with _tls_context(None, False).wrap_socket(raw, server_hostname=host):
                return None
    except (OSError, ssl.SSLError) as e:
        return f"{type(e).__name__}: {e}"


# --------------------------------------------------------------------------- checks


def _header_matches(values: list[str] | None, want: str) -> bool:
    if not values:
        return False
    if want == "*":
        return True
    return want in values or want in [p.strip() for v in values for p in v.split(",")] or ", ".join(values) == want


def check(exp: dict, obs: Observation, *, namespace: str, fingerprints: dict[str, str]) -> list[str]:
    """Everything ``exp`` asks of one observation; returns the failures (empty: it holds).

    ``namespace``: the scenario's default namespace (``service`` implies it unless ``namespace``
    is given); ``fingerprints``: sha256 of the certificate issued for each ``namespace/secret``.
    """
    errs: list[str] = []
    if obs.error:
        return [f"request failed: {obs.error}"]
    if "redirect" in exp:
        got = obs.redirects[0][0] if obs.redirects else None
        if got != exp["redirect"]:
            errs.append(f"first answer {got} (redirects {obs.redirects}), expected redirect {exp['redirect']}")
    elif obs.redirects:
        errs.append(f"unexpected redirects {obs.redirects}")
    if "status" in exp and obs.status != exp["status"]:
        errs.append(f"status {obs.status}, expected {exp['status']}")
    echo = obs.echo
    if "service" in exp:
        if not echo:
            errs.append(f"not answered by an echo backend (body {obs.body[:120]!r})")
        else:
            want = (exp["service"], exp.get("namespace", namespace))
            if (echo["service"], echo["namespace"]) != want:
                errs.append(f"served by {echo['namespace']}/{echo['service']}, expected {want[1]}/{want[0]}")
            if "ingress" in exp and echo["ingress"] != exp["ingress"]:
                errs.append(f"served through Ingress {echo['ingress']}, expected {exp['ingress']}")
    elif exp.get("status", 200) >= 400 and echo:
        errs.append(f"a {obs.status} must come from the controller, but backend {echo['service']} answered")
    for k, want in (exp.get("request") or {}).items():
        if not echo:
            errs.append(f"request.{k}: no echo body")
            continue
        if k == "headers":
            for name, v in want.items():
                if not _header_matches(echo["headers"].get(name.lower()), str(v)):
                    errs.append(f"request header {name}: {echo['headers'].get(name.lower())}, expected {v}")
        elif echo.get(k) != want:
            errs.append(f"request {k} {echo.get(k)!r}, expected {want!r}")
    resp = exp.get("response") or {}
    if "proto" in resp and obs.version != resp["proto"]:
        errs.append(f"response proto {obs.version}, expected {resp['proto']}")
    for name, v in (resp.get("headers") or {}).items():
        if not _header_matches(obs.headers.get(name.lower()), str(v)):
            errs.append(f"response header {name}: {obs.headers.get(name.lower())}, expected {v}")
    tls = exp.get("tls")
    if tls:
        if not obs.tls_hostname_ok:
            errs.append(f"TLS: chain/hostname not verified against the test CA: {obs.tls_error}")
        if tls.get("hostname") and tls["hostname"] not in obs.peer_sans:
            errs.append(f"TLS: certificate names {obs.peer_sans}, expected {tls['hostname']}")
        if tls.get("secret"):
            key = tls["secret"] if "/" in tls["secret"] else f"{namespace}/{tls['secret']}"
            if obs.peer_fingerprint != fingerprints.get(key):
                errs.append(f"TLS: certificate is not the one of Secret {key}")
    if not errs and "status" not in exp and not tls and "service" not in exp:
        errs.append("expectation asserts nothing")
    return errs


def run_case(case: Case, setup: str, target: Target, *, namespace: str,
             fingerprints: dict[str, str]) -> tuple[list[str], str | None, dict]:
    """Run one case on one set-up: (failures, deviation reason or None, figures)."""
    exp, reason = case.plan(setup)
    t0 = time.monotonic()
    if exp.get("tls_refused"):
        err = tls_refused(target, case.request.get("host"))
        errs = [] if err else ["a TLS handshake succeeded on a tier that should have no TLS listener"]
        return errs, reason, {"requests": 1, "seconds": time.monotonic() - t0, "detail": err}
    repeat = int(case.request.get("repeat", 1))
    errs: list[str] = []
    pods: dict[str, int] = {}
    for i in range(repeat):
        obs = perform(target, case.request)
        e = check(exp, obs, namespace=namespace, fingerprints=fingerprints)
        if e:
            errs += [f"request {i + 1}/{repeat}: {m} [{obs.brief()}]" for m in e]
            if len(errs) > 10:
                break
        if obs.echo:
            pods[obs.echo["pod"]] = pods.get(obs.echo["pod"], 0) + 1
    if "distinct_pods" in exp and len(pods) != exp["distinct_pods"]:
        errs.append(f"{len(pods)} distinct pods answered, expected {exp['distinct_pods']}: {pods}")
    return errs, reason, {"requests": repeat, "seconds": time.monotonic() - t0,
                          "pods": dict(sorted(pods.items())) if repeat > 1 else None}
