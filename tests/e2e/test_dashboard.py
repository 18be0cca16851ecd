"""The Grafana dashboard (charts/dashboards/tandem-grafana.json) queries only what exists.

Loads the JSON, checks its structure (schema, datasource variable, tier/namespace
variables, unique panel ids, every panel on ``${DS_PROMETHEUS}``), extracts every metric
name of every panel ``expr`` and of the variable queries, and asserts each one (histogram
``_bucket``/``_sum``/``_count`` folded into their family) is exposed by a live router's or
tls-edge's ``/metrics`` after a little traffic, and that every label a query groups or
filters by is a label of the metrics that query selects.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from e2e_lib import REPO, backend_objects, dead_endpoint, http_path, ingress, rule
from edge_support import Pki, cert_secret, curl_https, edge_ingress, s_client, start_edge
from metrics_support import Exposition, panel_exprs, promql_metric_names, scrape, wait_metric

DASHBOARD = REPO / "charts" / "dashboards" / "tandem-grafana.json"
# labels the Prometheus server adds at scrape time, and the histogram bucket label
SCRAPE_LABELS = {"instance", "job", "le"}
EDGE_ONLY = {"tandem_tls_client_hellos_total", "tandem_tls_handshakes_total",
             "tandem_certificate_not_after_timestamp_seconds"}


def load() -> dict:
    return json.loads(Path(DASHBOARD).read_text())


def variable_queries(dash: dict) -> list[tuple[str, str]]:
    out = []
    for v in dash["templating"]["list"]:
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = re.fullmatch(r"\s*label_values\((.*),\s*([a-zA-Z_]+)\s*\)\s*", q or "")
            assert m, f"variable {v['name']}: unsupported query {q!r}"
            out.append((f"$${v['name']}", m.group(1)))
    return out


def all_exprs(dash: dict) -> list[tuple[str, str]]:
    return panel_exprs(dash) + variable_queries(dash)


# --------------------------------------------------------------------------- static checks


def test_extractor_understands_promql():
    e = ('histogram_quantile(0.99, sum by (namespace, le) (rate(tandem_request_duration_seconds_bucket'
         '{tier=~"$tier", service="a b"}[$__rate_interval]))) / on (tier) group_left '
         'sum(tandem_x{y="sum(z)"} offset 5m) - time() or vector(0) < 14 * 86400')
    assert promql_metric_names(e) == {"tandem_request_duration_seconds_bucket", "tandem_x"}


def test_dashboard_structure():
    dash = load()
    assert 36 <= dash["schemaVersion"] <= 41
    assert dash["uid"] and dash["title"]
    names = {v["name"]: v for v in dash["templating"]["list"]}
    assert names["DS_PROMETHEUS"]["type"] == "datasource" and names["DS_PROMETHEUS"]["query"] == "prometheus"
    assert {"tier", "namespace"} <= names.keys()
    ids = []

    def walk(panels):
        for p in panels:
            ids.append(p["id"])
            assert {"h", "w", "x", "y"} <= p["gridPos"].keys(), p["title"]
            assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
            if p["type"] != "row":
                assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
                assert p["targets"], f"panel {p['title']} has no query"
                for t in p["targets"]:
                    assert t["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
                    assert t["expr"].strip(), p["title"]
                    # balanced brackets: a cheap guard against broken hand edits
                    for o, c in ("()", "{}", "[]"):
                        assert t["expr"].count(o) == t["expr"].count(c), (p["title"], t["expr"])
            walk(p.get("panels", []))

    walk(dash["panels"])
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = " | ".join(p["title"] for p in dash["panels"]).lower()
    for needle in ("request rate", "error ratio", "latency", "upstream errors", "retries", "ready endpoints",
                   "config rebuilds", "config problems", "last config", "handshakes", "expir", "fallback share"):
        assert needle in titles, f"no panel about {needle!r}"
    # the migration panel: per-host fallback share over total traffic
    fb = [e for t, e in panel_exprs(dash) if "tandem_fallback_requests_total" in e and "/" in e]
    assert any("by (tier, host)" in e and "tandem_requests_total" in e for e in fb), fb


def test_every_expr_filters_by_tier():
    """Every panel honours the tier variable (so a two-tier install never double counts)."""
    for title, expr in panel_exprs(load()):
        for name in promql_metric_names(expr):
            for m in re.finditer(re.escape(name) + r"(\{[^}]*\})?", expr):
                assert m.group(1) and "$tier" in m.group(1), f"{title}: {name} not filtered by $tier in {expr}"


# --------------------------------------------------------------------------- against live binaries


@pytest.fixture(scope="module")
def live(module_env) -> dict[str, Exposition]:
    """A router and a tls-edge with tiny manifests and traffic that creates every lazily
    created series: a routed request, a fallback, an unrouted 404, a connect failure, TLS
    handshakes and a served certificate."""
    env = module_env
    legacy = env.echo("legacy", "legacy-1")
    comp = env.echo("component", "component-1")
    router = env.router({"m.yaml": [
        *backend_objects("legacy", [legacy], mode="endpoints"),
        *backend_objects("component", [comp, dead_endpoint()]),
        ingress("legacy-fallback", [rule(None, http_path("/", "legacy", 80))]),
        ingress("comp", [rule("app.example.com", http_path("/api", "component", 80))]),
        ingress("broken", [rule("broken.example.com", http_path("/", "missing", 80))]),
    ]})
    for i in range(4):
        assert router.get(f"/api/{i}", host="app.example.com").status == 200
    assert router.get("/legacy", host="app.example.com").status == 200
    assert router.get("/x", host="broken.example.com").status == 503
    wait_metric(router.admin_port, "tandem_requests_total", 6)

    pki = Pki(env.work_dir / "pki")
    cert = pki.leaf("brand", ["brand.example.com"])
    edge = start_edge(env, {
        "b.yaml": backend_objects("component", [comp]),
        "s.yaml": cert_secret("brand-tls", cert),
        "e.yaml": edge_ingress("brand", [(["brand.example.com"], "brand-tls")], "component", 80),
    })
    assert curl_https(edge, "brand.example.com", "/", cacert=pki.ca_path).status == 200
    assert s_client(edge.https_port, "unknown.example.org").handshake_ok
    wait_metric(edge.admin_port, "tandem_tls_handshakes_total", 2)
    return {"router": scrape(router.admin_port), "tls-edge": scrape(edge.admin_port)}


def test_every_metric_the_dashboard_queries_exists(live):
    router, edge = live["router"], live["tls-edge"]
    missing = []
    used = set()
    for title, expr in all_exprs(load()):
        names = promql_metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        for name in names:
            used.add(name)
            fam_r, fam_e = router.family_of(name), edge.family_of(name)
            in_router = name in router.names() or fam_r in router.types
            in_edge = name in edge.names() or fam_e in edge.types
            if not (in_router or in_edge):
                missing.append((title, name))
            if name in EDGE_ONLY and not in_edge:
                missing.append((title, f"{name} (edge)"))
    assert not missing, f"dashboard queries metrics that do not exist: {missing}"
    # and the dashboard covers the metric families both tiers expose
    exposed = {f for exp in live.values() for f in exp.families() if f.startswith("tandem_")}
    used_families = {router.family_of(n) if n in router.names() else edge.family_of(n) for n in used}
    unused = exposed - used_families
    assert not unused, f"metrics no panel shows: {sorted(unused)}"


def test_every_label_the_dashboard_uses_exists(live):
    """Labels in `by (...)`, `on (...)` and `{...}` matchers belong to the selected metrics."""
    labels_of: dict[str, set[str]] = {}
    for exp in live.values():
        for s in exp.samples:
            fam = exp.family_of(s.name)
            for key in (s.name, fam):
                labels_of.setdefault(key, set()).update(s.labels)
    problems = []
    for title, expr in all_exprs(load()):
        names = promql_metric_names(expr)
        available = set().union(*(labels_of.get(n, set()) for n in names)) | SCRAPE_LABELS
        used = set()
        for m in re.finditer(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
            used |= {x.strip() for x in m.group(1).split(",") if x.strip()}
        for m in re.finditer(r"\{([^{}]*)\}", expr):
            used |= set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", re.sub(r'"(?:[^"\\]|\\.)*"', '""', m.group(1))))
        for m in re.finditer(r"\{\{\s*([a-zA-Z_]+)\s*\}\}", expr):
            used.add(m.group(1))
        unknown = used - available
        if unknown:
            problems.append((title, sorted(unknown), expr))
    assert not problems, problems


def test_legend_labels_exist(live):
    """`{{label}}` in a legend names a label the query result keeps."""
    problems = []
    for p in load()["panels"]:
        for t in p.get("targets", []):
            legend = t.get("legendFormat") or ""
            wanted = set(re.findall(r"\{\{\s*([a-zA-Z_]+)\s*\}\}", legend))
            if not wanted:
                continue
            expr = t["expr"]
            kept: set[str] | None = None
            groups = re.findall(r"\b(?:sum|max|min|avg|count)\s+by\s*\(([^)]*)\)", expr)
            if groups:
                kept = set()
                for g in groups:
                    kept |= {x.strip() for x in g.split(",")}
            if kept is not None:
                lost = wanted - kept - {"instance"}
                if lost:
                    problems.append((p["title"], legend, sorted(lost)))
    assert not problems, f"legends use labels the aggregation drops: {problems}"


def test_migration_panels_add_up(live):
    """The per-host fallback bands (tandem_fallback_requests_total by host) must add up to the
    fallback share of requests_total, or the stacked migration panel lies. Evaluated on the
    live router's counters (a rate over a window holding all traffic is proportional to them)."""
    router = live["router"]
    total = router.sum("tandem_requests_total")
    per_host = {h: router.sum("tandem_fallback_requests_total", host=h)
                for h in router.label_values("tandem_fallback_requests_total", "host")}
    assert total > 0 and sum(per_host.values()) > 0
    assert sum(per_host.values()) == router.sum("tandem_requests_total", fallback="true"), per_host
    # the live traffic: 6 requests, of which 1 fallback for the configured host app.example.com
    assert per_host.get("app.example.com") == 1 and sum(per_host.values()) / total == pytest.approx(1 / 6)
