#!/usr/bin/env python3
"""Parses wrk / h2load output into TSV lines and summarizes results.tsv into markdown tables.

  parse.py wrk RAW BENCH CONFIG RUN               -> one TSV line
  parse.py h2load RAW BENCH CONFIG RUN REQLOG      -> one TSV line
  parse.py summary RESULTS.tsv                     -> markdown (medians, spread, ratios)
  parse.py scale SCALE.tsv                         -> markdown table of bench/scale.sh

TSV columns: bench config run tool req_per_s p50_ms p99_ms errors raw_file
"""
import os
import re
import statistics
import sys

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def to_ms(value):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value.strip())
    return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")


def parse_wrk(raw):
    text = open(raw).read()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(x) for x in m.groups())
    return (
        float(rps.group(1)) if rps else 0.0,
        to_ms(p50.group(1)) if p50 else float("nan"),
        to_ms(p99.group(1)) if p99 else float("nan"),
        errors,
    )


def parse_h2load(raw, reqlog):
    text = open(raw).read()
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text)
    errors = 0
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", text)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"status codes: \d+ 2xx, \d+ 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        errors += sum(int(x) for x in m.groups())
    durations = []
    if os.path.exists(reqlog):
        with open(reqlog) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 3:
                    durations.append(int(parts[2]) / 1000.0)  # microseconds -> ms
    durations.sort()

    def pct(p):
        if not durations:
            return float("nan")
        return durations[min(len(durations) - 1, int(p / 100.0 * len(durations)))]

    return (float(rps.group(1)) if rps else 0.0, pct(50), pct(99), errors)


def fmt_line(bench, config, run, tool, res, raw):
    rps, p50, p99, errors = res
    return f"{bench}\t{config}\t{run}\t{tool}\t{rps:.1f}\t{p50:.3f}\t{p99:.3f}\t{errors}\t{os.path.basename(raw)}"


# Which ratios each table shows: (numerator config, denominator config).
RATIOS = {
    "proxy": [
        ("router-default", "direct"), ("router-default", "nginx"), ("router-default", "haproxy"),
        ("router-nolog", "nginx"), ("router-nolog", "haproxy"),
        ("router-nolog-nometrics", "nginx"), ("router-nolog-nometrics", "haproxy"),
        ("nginx", "direct"), ("haproxy", "direct"),
    ],
    "cost": [
        ("router-nolog", "router-default"), ("router-nolog-nometrics", "router-default"),
        ("router-nolog-nometrics", "router-nolog"),
    ],
    "tiers-wrk": [
        ("edge-http1", "nginx-tls"), ("edge-h2c", "nginx-tls"), ("edge-h2c", "edge-http1"),
    ],
    "tiers-h2load": [
        ("edge-http1", "nginx-tls"), ("edge-h2c", "nginx-tls"), ("edge-h2c", "edge-http1"),
    ],
}


def summary(path):
    rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]
    benches = {}
    for r in rows:
        benches.setdefault((r[0], r[3]), {}).setdefault(r[1], []).append(
            (float(r[4]), float(r[5]), float(r[6]), int(r[7])))
    out = []
    for (bench, tool), configs in benches.items():
        out.append(f"### {bench} ({tool})\n")
        out.append("| config | runs | req/s median | req/s min–max (spread) | p50 ms | p99 ms | errors |")
        out.append("|---|---|---|---|---|---|---|")
        med = {}
        for config, runs in configs.items():
            rps = [x[0] for x in runs]
            p50 = statistics.median(x[1] for x in runs)
            p99 = statistics.median(x[2] for x in runs)
            m = statistics.median(rps)
            med[config] = (m, p50, p99)
            spread = (max(rps) - min(rps)) / m * 100 if m else float("nan")
            out.append(f"| {config} | {len(runs)} | {m:,.0f} | {min(rps):,.0f}–{max(rps):,.0f} "
                       f"(±{spread / 2:.0f}%) | {p50:.2f} | {p99:.2f} | {sum(x[3] for x in runs)} |")
        pairs = RATIOS.get(bench, [])
        if bench == "proxy":
            pairs = pairs + RATIOS["cost"]
        pairs = [(a, b) for a, b in pairs if a in med and b in med]
        if pairs:
            out.append("")
            out.append("| ratio | req/s | p99 |")
            out.append("|---|---|---|")
            for a, b in pairs:
                rr = med[a][0] / med[b][0] if med[b][0] else float("nan")
                pr = med[a][2] / med[b][2] if med[b][2] else float("nan")
                out.append(f"| {a} / {b} | {rr:.2f} | {pr:.2f} |")
        out.append("")
    print("\n".join(out))


def scale_summary(path):
    data = {}
    for line in open(path):
        if not line.strip():
            continue
        n, metric, run, value = line.rstrip("\n").split("\t")
        data.setdefault(int(n), {}).setdefault(metric, []).append(float(value))
    sizes = sorted(data)
    base = sizes[0]
    metrics = ["ready_ms", "add_ms", "delete_ms", "rss_kb_start", "rss_kb_after"]
    print(f"| Ingresses | " + " | ".join(metrics) + " |")
    print("|---|" + "---|" * len(metrics))
    for n in sizes:
        cells = []
        for m in metrics:
            vals = data[n].get(m, [])
            if not vals:
                cells.append("–")
                continue
            med = statistics.median(vals)
            bmed = statistics.median(data[base].get(m, [float("nan")]))
            rng = f" ({min(vals):.0f}–{max(vals):.0f})" if len(vals) > 1 else ""
            ratio = f", ×{med / bmed:.1f} vs {base}" if n != base and bmed > 0 else ""
            cells.append(f"{med:,.0f}{rng}{ratio}")
        print(f"| {n} | " + " | ".join(cells) + " |")


def main():
    kind = sys.argv[1]
    if kind == "wrk":
        raw, bench, config, run = sys.argv[2:6]
        print(fmt_line(bench, config, run, "wrk", parse_wrk(raw), raw))
    elif kind == "h2load":
        raw, bench, config, run, reqlog = sys.argv[2:7]
        print(fmt_line(bench, config, run, "h2load", parse_h2load(raw, reqlog), raw))
    elif kind == "scale":
        scale_summary(sys.argv[2])
    elif kind == "summary":
        summary(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
