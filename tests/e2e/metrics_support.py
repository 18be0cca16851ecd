"""Helpers for the observability end-to-end tests: a Prometheus text-format parser,
``/metrics`` scraping, access-log extraction and PromQL metric-name extraction.

Reuses ``e2e_lib`` (processes, ports, HTTP clients) and never edits it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from e2e_lib import http_request, json_log_lines, wait_until

# --------------------------------------------------------------------------- exposition format

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE_RX = re.compile(rf"^(?P<name>{_NAME})(?:\{{(?P<labels>.*)\}})?\s+(?P<value>\S+)(?:\s+(?P<ts>-?\d+))?\s*$")
_LABEL_RX = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _unescape(v: str) -> str:
    out, i = [], 0
    while i < len(v):
        c = v[i]
        if c == "\\" and i + 1 < len(v):
            n = v[i + 1]
            out.append({"n": "\n", "\\": "\\", '"': '"'}.get(n, "\\" + n))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _LABEL_RX.match(text, pos)
        if not m:
            raise ValueError(f"bad label set at {pos}: {text!r}")
        key = m.group(1)
        if key in labels:
            raise ValueError(f"duplicate label {key} in {text!r}")
        labels[key] = _unescape(m.group(2))
        pos = m.end()
    return labels


def _parse_value(v: str) -> float:
    special = {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}
    return special[v] if v in special else float(v)


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float

    def matches(self, labels: dict[str, str]) -> bool:
        return all(self.labels.get(k, "") == v for k, v in labels.items())


@dataclass
class Exposition:
    """A parsed ``/metrics`` page."""
    text: str
    samples: list[Sample] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)   # family -> counter/gauge/histogram/...
    helps: dict[str, str] = field(default_factory=dict)

    # -- lookups
    def names(self) -> set[str]:
        return {s.name for s in self.samples}

    def families(self) -> set[str]:
        """Metric family names: TYPE'd families plus every sample name with histogram/summary
        suffixes folded into their family."""
        fams = set(self.types)
        for s in self.samples:
            fams.add(self.family_of(s.name))
        return fams

    def family_of(self, sample_name: str) -> str:
        for suf in HISTOGRAM_SUFFIXES:
            base = sample_name[: -len(suf)]
            if sample_name.endswith(suf) and self.types.get(base) in ("histogram", "summary"):
                return base
        return sample_name

    def select(self, name: str, **labels: str) -> list[Sample]:
        """Samples of ``name`` whose labels include ``labels`` (a missing label equals "")."""
        return [s for s in self.samples if s.name == name and s.matches(labels)]

    def value(self, name: str, default: float | None = 0.0, **labels: str) -> float | None:
        """The one sample of ``name`` with exactly these label values (plus any others); 
        ``default`` when there is none. More than one match is an error: use :meth:`sum`."""
        got = self.select(name, **labels)
        if not got:
            return default
        if len(got) > 1:
            raise AssertionError(f"{len(got)} samples of {name}{labels}: {got}")
        return got[0].value

    def sum(self, name: str, **labels: str) -> float:
        return sum(s.value for s in self.select(name, **labels))

    def label_values(self, name: str, label: str, **labels: str) -> set[str]:
        return {s.labels.get(label, "") for s in self.select(name, **labels)}


def parse_exposition(text: str) -> Exposition:
    """Parse the Prometheus text exposition format (0.0.4): HELP/TYPE comments, samples
    with escaped label values, special float values and optional timestamps. Raises
    ValueError on anything malformed, so a broken /metrics page fails the test."""
    exp = Exposition(text)
    seen: set[tuple[str, tuple]] = set()
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] == "TYPE":
                if len(parts) != 4:
                    raise ValueError(f"line {lineno}: bad TYPE: {raw!r}")
                exp.types[parts[2]] = parts[3].strip()
            elif len(parts) >= 3 and parts[1] == "HELP":
                exp.helps[parts[2]] = parts[3] if len(parts) > 3 else ""
            continue
        m = _SAMPLE_RX.match(line)
        if not m:
            raise ValueError(f"line {lineno}: not a sample: {raw!r}")
        labels = _parse_labels(m.group("labels") or "")
        try:
            value = _parse_value(m.group("value"))
        except ValueError:
            raise ValueError(f"line {lineno}: bad value: {raw!r}") from None
        key = (m.group("name"), tuple(sorted(labels.items())))
        if key in seen:
            raise ValueError(f"line {lineno}: duplicate series {raw!r}")
        seen.add(key)
        exp.samples.append(Sample(m.group("name"), labels, value))
    return exp


def scrape(admin_port: int, timeout: float = 5.0) -> Exposition:
    """GET /metrics on an admin port and parse it (asserts 200 and a text/plain type)."""
    r = http_request(admin_port, "/metrics", timeout=timeout)
    assert r.status == 200, f"/metrics answered {r.status}: {r.text[:300]}"
    ctype = r.header("content-type", "") or ""
    assert ctype.startswith("text/plain"), f"/metrics content-type {ctype!r}"
    return parse_exposition(r.text)


def wait_metric(admin_port: int, name: str, want: float, timeout: float = 5.0, **labels: str) -> Exposition:
    """Poll /metrics until ``name{labels}`` (summed) equals ``want``; return that scrape.

    Counters are updated in the proxy's logging phase, which may run just after the client
    got its response, hence a short poll instead of one scrape."""
    last: dict[str, Any] = {}

    def ok():
        exp = scrape(admin_port)
        last["v"] = exp.sum(name, **labels)
        return exp if last["v"] == want else None

    try:
        return wait_until(ok, timeout, interval=0.05, desc=f"{name}{labels} == {want}")
    except AssertionError as e:
        raise AssertionError(f"{e} (last value {last.get('v')})") from None


def assert_histogram_consistent(exp: Exposition, family: str) -> None:
    """Buckets are cumulative (non-decreasing in ``le``), end in +Inf, and +Inf == _count."""
    series: dict[tuple, list[tuple[float, float]]] = {}
    for s in exp.select(family + "_bucket"):
        key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        series.setdefault(key, []).append((_parse_value(s.labels["le"]), s.value))
    assert series, f"no {family}_bucket series"
    for key, buckets in series.items():
        buckets.sort()
        values = [v for _, v in buckets]
        assert values == sorted(values), f"{family}{dict(key)} buckets not cumulative: {buckets}"
        assert buckets[-1][0] == math.inf, f"{family}{dict(key)} has no +Inf bucket"
        count = exp.value(family + "_count", None, **dict(key))
        assert count == buckets[-1][1], f"{family}{dict(key)} _count {count} != +Inf bucket {buckets[-1][1]}"
        assert exp.value(family + "_sum", None, **dict(key)) is not None, f"{family}{dict(key)} has no _sum"


# --------------------------------------------------------------------------- access log

ACCESS_TARGET = "tandem::access"


def json_lines(text: str) -> list[dict]:
    """Every log line that is a JSON object (tracing's nested ``fields`` merged in)."""
    return json_log_lines(text.splitlines())


def access_lines(proc_or_text: Any) -> list[dict]:
    """Access-log entries (target ``tandem::access``, message ``request``) of a process."""
    text = proc_or_text if isinstance(proc_or_text, str) else proc_or_text.log_text()
    return [e for e in json_lines(text) if e.get("target") == ACCESS_TARGET and e.get("message") == "request"]


def stdout_access_lines(proc) -> list[dict]:
    """Access-log entries from stdout only (where the brief says they go)."""
    try:
        text = proc.stdout_path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    return access_lines(text)


def wait_access_line(proc, timeout: float = 5.0, **fields: Any) -> dict:
    """Poll until an access line with all ``fields`` equal appears; return it."""
    def find():
        for e in access_lines(proc):
            if all(e.get(k) == v for k, v in fields.items()):
                return e
        return None

    try:
        return wait_until(find, timeout, interval=0.05, desc=f"access line with {fields}")
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- access lines ---\n"
                             + "\n".join(json.dumps(x) for x in access_lines(proc)[-10:])) from None


# --------------------------------------------------------------------------- PromQL

_PROMQL_KEYWORDS = {
    # aggregation operators and keywords that look like identifiers
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
    "quantile", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "atan2", "inf", "nan",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects.

    Strips string literals, label matchers ``{...}``, grouping clauses ``by (...)`` /
    ``on (...)`` etc., range/offset durations ``[5m]`` and Grafana ``$variables``; what is left
    that is an identifier not followed by ``(`` (a function) and not a keyword is a metric name.
    """
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"'(?:[^'\\]|\\.)*'", "''", e)
    e = re.sub(r"\{[^{}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_:]*\}?", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![A-Za-z0-9_:.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", e):
        ident, call = m.group(1), m.group(2)
        if call or ident in _PROMQL_KEYWORDS:
            continue
        if re.fullmatch(r"\d+[smhdwy]", ident):
            continue
        names.add(ident)
    return names


def panel_exprs(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, expr) for every target of every panel, rows' nested panels included."""
    out = []

    def walk(panels: Iterable[dict]):
        for p in panels:
            for t in p.get("targets", []) or []:
                if t.get("expr"):
                    out.append((p.get("title", "?"), t["expr"]))
            walk(p.get("panels", []) or [])

    walk(dashboard.get("panels", []))
    return out
