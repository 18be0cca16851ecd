"""Local mode: a scenario file deployed as manifest directories for the real binaries on
loopback, with real ``echo-backend`` replicas as the Services' endpoints, on one of three
set-ups (default flags everywhere):

* ``router``: the scenario's Ingresses (class ``tandem-router``) on the router alone;
* ``edge``: the same Ingresses with the edge's class on ``tls-edge`` alone, Secrets from the
  run's test CA;
* ``edge-router``: the scenario's Ingresses on the router; the edge gets one Ingress in the
  router's namespace sending everything (TLS hosts and a defaultBackend) to the router's Service,
  whose port says ``appProtocol: kubernetes.io/h2c`` as the Helm chart's does.

Processes start once per scenario file (echo backends) and once per file and set-up (tiers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from e2e_lib import LOOPBACK, Endpoint, Env, backend_objects
from edge_support import Pki, cert_secret, start_edge

from harness import RELEASE_NAMESPACE, ROUTER_SERVICE, Scenario, Target


@dataclass
class Running:
    target: Target
    fingerprints: dict[str, str]
    env: Env


class Deployments:
    """At most one scenario file's echo backends and one set-up's tiers run at a time."""

    def __init__(self, work_dir: Path):
        self.work_dir = work_dir
        self.pki = Pki(work_dir / "pki", ca_cn="tandem conformance test CA")
        self._echo_key: str | None = None
        self._echo_env: Env | None = None
        self._echoes: dict[tuple[str, str], list] = {}
        self._secrets: list[dict] = []
        self._fingerprints: dict[str, str] = {}
        self._key: tuple[str, str] | None = None
        self._running: Running | None = None
        self._starts = 0

    # ------------------------------------------------------------------ per scenario file

    def _backends(self, scn: Scenario) -> None:
        if self._echo_key == scn.id:
            return
        self._close_tiers()
        if self._echo_env:
            self._echo_env.close()
        env = Env(self.work_dir / scn.id / "backends")
        self._echo_env, self._echo_key, self._echoes = env, scn.id, {}
        for b in scn.backends:
            self._echoes[(b.namespace, b.name)] = [env.echo(b.name, b.pod(i)) for i in range(b.replicas)]
        self._secrets, self._fingerprints = [], {}
        for t in scn.tls:
            cert = self.pki.leaf(f"{scn.id}-{t.namespace}-{t.name}", t.hosts)
            self._secrets.append(cert_secret(t.name, cert, namespace=t.namespace))
            self._fingerprints[f"{t.namespace}/{t.name}"] = cert.fingerprint

    def _service_docs(self, scn: Scenario) -> list[dict]:
        docs = []
        for b in scn.backends:
            docs += backend_objects(b.name, self._echoes[(b.namespace, b.name)], port_name=b.port_name,
                                    service_port=b.port, namespace=b.namespace)
        return docs

    # ------------------------------------------------------------------ per set-up

    def get(self, scn: Scenario, setup: str) -> Running:
        if self._key == (scn.id, setup) and self._running:
            return self._running
        self._backends(scn)
        self._close_tiers()
        self._starts += 1
        env = Env(self.work_dir / scn.id / f"{setup}-{self._starts}")
        routing = {"ingresses.yaml": scn.routing_objects(setup), "services.yaml": self._service_docs(scn)}
        if setup == "router":
            router = env.router(routing)
            target = Target(LOOPBACK, router.http_port, None, self.pki.ca_path)
        elif setup == "edge":
            routing["secrets.yaml"] = self._secrets or []
            edge = start_edge(env, routing)
            target = Target(LOOPBACK, edge.http_port, edge.https_port, self.pki.ca_path)
        else:
            router = env.router(routing)
            svc = backend_objects(ROUTER_SERVICE, [Endpoint(LOOPBACK, router.http_port)], port_name="http",
                                  service_port=80, namespace=RELEASE_NAMESPACE)
            svc[0]["spec"]["ports"][0]["appProtocol"] = "kubernetes.io/h2c"
            copies = []
            for s in self._secrets:
                c = dict(s, metadata={"name": f"{s['metadata']['namespace']}-{s['metadata']['name']}",
                                      "namespace": RELEASE_NAMESPACE})
                copies.append(c)
            edge = start_edge(env, {"router-service.yaml": svc, "secrets.yaml": copies or [],
                                    "ingresses.yaml": scn.edge_to_router_objects()})
            target = Target(LOOPBACK, edge.http_port, edge.https_port, self.pki.ca_path)
        self._key, self._running = (scn.id, setup), Running(target, self._fingerprints, env)
        return self._running

    def describe(self) -> str:
        parts = [self._running.env.describe()] if self._running else []
        if self._echo_env:
            parts.append(self._echo_env.describe())
        return "\n\n".join(parts)

    def _close_tiers(self) -> None:
        if self._running:
            self._running.env.close()
        self._running, self._key = None, None

    def close(self) -> None:
        self._close_tiers()
        if self._echo_env:
            self._echo_env.close()
