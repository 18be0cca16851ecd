#!/usr/bin/env python3
"""Parses wrk / h2load output into TSV lines and summarizes results.tsv into markdown tables.

  parse.py wrk RAW BENCH CONFIG RUN               -> one TSV line
  parse.py h2load RAW BENCH CONFIG RUN REQLOG      -> one TSV line
  parse.py summary RESULTS.tsv                     -> markdown (medians, spread, ratios)
  parse.py scale SCALE.tsv                         -> markdown table of bench/scale.sh
  parse.py changes CHANGES.tsv                     -> markdown tables of bench/changes.py
  parse.py cpu RAW CONFIG RUN UTIME STIME CLK_TCK DURATION CPU1_BUSY CPU0_BUSY LOAD0 LOAD1
           MAX_FOREIGN PARTS                       -> one cpu.tsv line (bench/cpu.sh)
  parse.py cpusummary CPU.tsv                      -> markdown: CPU us per request, ratios
  parse.py rate RAW CONFIG RUN PIDS                -> one rate.tsv line (bench/cpu.sh, fixed rate)
  parse.py ratesummary RATE.tsv                    -> markdown: latency at a fixed rate, ratios
  parse.py perf CONFIG CPU_US REPORT TOP           -> markdown: a `perf report --sort dso,sym`
                                                      converted to us per request (bench/profile.sh)
  parse.py perfphases CONFIG CPU_US SCRIPT         -> markdown: inclusive shares from `perf script`

TSV columns: bench config run tool req_per_s p50_ms p99_ms errors raw_file
"""
import math
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


# bench/changes.py: change kinds in table order, and the target of issue #10 (p99, ms).
CHANGE_KINDS = ["add", "update", "delete", "endpoint", "rotate", "update-inplace"]
CHANGE_P99_TARGET = 30.0


def nearest_rank(sorted_vals, p):
    """Nearest-rank percentile of an ascending list (p99 of 100 values is the 99th)."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, -(-p * len(sorted_vals) // 100) - 1))
    return sorted_vals[int(k)]


def changes_summary(path):
    """Tables of bench/changes.py: latency per (source, tier, kind) x size, RSS after load, soak.
    Timed-out changes (-1) count as infinitely slow in the percentiles."""
    lat, one, soak = {}, {}, {}
    for line in open(path):
        if not line.strip():
            continue
        source, tier, size, metric, run, value = line.rstrip("\n").split("\t")
        size, value = int(size), float(value)
        if metric in ("soak_rss_kb", "soak_rebuilds"):
            soak.setdefault((source, tier, size), {}).setdefault(metric, []).append((int(run), value))
        elif metric.endswith("_ms") and metric[:-3] in CHANGE_KINDS:
            lat.setdefault((source, tier, metric[:-3]), {}).setdefault(size, []).append(value)
        else:
            one[(source, tier, size, metric)] = value
    sizes = sorted({s for d in lat.values() for s in d})
    out = []
    if lat:
        out += [f"Change → served, ms: p50 / p99 / max (n changes; **bold** p99 > {CHANGE_P99_TARGET:.0f} ms)", "",
                "| source | tier | change | " + " | ".join(f"{s:,} Ingresses" for s in sizes) + " |",
                "|---|---|---|" + "---|" * len(sizes)]
        order = sorted(lat, key=lambda k: (k[0] != "manifests", k[1] != "router", CHANGE_KINDS.index(k[2])))
        for source, tier, kind in order:
            cells = []
            for s in sizes:
                vals = lat[(source, tier, kind)].get(s)
                if not vals:
                    cells.append("–")
                    continue
                timeouts = sum(1 for v in vals if v < 0)
                v = sorted(float("inf") if x < 0 else x for x in vals)

                def f(x):
                    return "timeout" if x == float("inf") else f"{x:.1f}"

                p99 = nearest_rank(v, 99)
                p99s = f"**{f(p99)}**" if p99 > CHANGE_P99_TARGET else f(p99)
                extra = f", {timeouts} timed out" if timeouts else ""
                cells.append(f"{f(nearest_rank(v, 50))} / {p99s} / {f(v[-1])} (n={len(v)}{extra})")
            label = kind + (" (file rewritten in place, not renamed in)" if kind == "update-inplace" else "")
            out.append(f"| {source} | {tier} | {label} | " + " | ".join(cells) + " |")
        out.append("")
    loads = sorted({(k[0], k[2]) for k in one if k[3].endswith("rss_kb_loaded")},
                   key=lambda k: (k[0] != "manifests", k[1]))
    if loads:
        out += ["RSS (MiB) after load (and after the changes above), ready time after start (s)", "",
                "| source | Ingresses per tier | certificates | router ready | router RSS | edge ready | edge RSS |",
                "|---|---|---|---|---|---|---|"]
        for source, size in loads:
            def get(tier, metric):
                return one.get((source, tier, size, metric), one.get((source, tier, size, "soak_" + metric)))

            def rss(tier):
                a, b = get(tier, "rss_kb_loaded"), one.get((source, tier, size, "rss_kb_after"))
                if a is None:
                    return "–"
                return f"{a / 1024:.1f}" + (f" → {b / 1024:.1f}" if b is not None else "")

            def ready(tier):
                r = get(tier, "ready_ms")
                return "–" if r is None else f"{r / 1000:.1f}"

            certs = get("edge", "certs")
            soak_only = (source, "router", size, "rss_kb_loaded") not in one and \
                (source, "edge", size, "rss_kb_loaded") not in one
            out.append(f"| {source} | {size:,}{' (soak)' if soak_only else ''} | {'–' if certs is None else f'{certs:,.0f}'} | {ready('router')} | "
                       f"{rss('router')} | {ready('edge')} | {rss('edge')} |")
        out.append("")
    if soak:
        out += ["Soak: RSS (MiB) sampled every 1,000 changes (router add/delete, edge add/delete, Secret "
                "rotation, in turn); rebuilds = tandem_config_rebuilds_total over the soak", "",
                "| source | tier | hosts | changes | rebuilds | RSS start | end | max | end − start |",
                "|---|---|---|---|---|---|---|---|---|"]
        for (source, tier, size), m in sorted(soak.items(), key=lambda kv: (kv[0][0] != "manifests", kv[0][1] != "router")):
            rss = [v for _, v in sorted(m.get("soak_rss_kb", []))]
            reb = sorted(m.get("soak_rebuilds", []))
            changes = max(r for r, _ in m["soak_rss_kb"])
            if not rss:
                continue
            out.append(f"| {source} | {tier} | {size:,} | {changes:,} | {reb[-1][1]:.0f} | {rss[0] / 1024:.1f} | "
                       f"{rss[-1] / 1024:.1f} | {max(rss) / 1024:.1f} | {(rss[-1] - rss[0]) / 1024:+.1f} |")
        out.append("")
    print("\n".join(out))


def wrk_requests(raw):
    """Requests completed and the measured seconds, from wrk's "N requests in 10.00s"."""
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", open(raw).read())
    if not m:
        return 0, float("nan")
    return int(m.group(1)), to_ms(m.group(2) + m.group(3)) / 1000.0


# cpu.tsv columns (bench/cpu.sh): ticks are CLK_TCK units; foreign = share of CPU 1 used by
# anything but the measured proxy during the run (other work on the machine).
CPU_COLS = ["config", "run", "requests", "seconds", "req_per_s", "utime_ticks", "stime_ticks",
            "clk_tck", "cpu_us_per_req", "p50_ms", "p99_ms", "errors", "foreign_cpu1",
            "cpu1_busy_ticks", "cpu0_busy_ticks", "load_before", "load_after", "disturbed",
            "parts", "raw_file"]


def cpu_line(args):
    raw, config, run, utime, stime, clk, duration, b1, b0, la0, la1, max_foreign, parts = args
    utime, stime, clk, b1, b0 = int(utime), int(stime), int(clk), int(b1), int(b0)
    rps, p50, p99, errors = parse_wrk(raw)
    requests, seconds = wrk_requests(raw)
    proxy = utime + stime
    us = proxy / clk * 1e6 / requests if requests and parts != "-" else float("nan")
    window = float(duration) * clk
    foreign = max(0.0, (b1 - proxy) / window) if window else float("nan")
    # Only a proxy's run can be disturbed this way (direct leaves CPU 1 to whoever wants it).
    disturbed = 1 if parts != "-" and foreign > float(max_foreign) else 0
    vals = [config, run, requests, f"{seconds:.2f}", f"{rps:.1f}", utime, stime, clk, f"{us:.2f}",
            f"{p50:.3f}", f"{p99:.3f}", errors, f"{foreign:.3f}", b1, b0, la0, la1, disturbed,
            parts, os.path.basename(raw)]
    return "\t".join(str(v) for v in vals)


# Ratios of the CPU table: (numerator, denominator).
CPU_RATIOS = [
    ("router-default", "nginx"), ("router-default", "haproxy"), ("router-default", "floor"),
    ("router-nolog", "nginx"), ("router-nolog", "haproxy"), ("router-nolog", "floor"),
    ("router-default", "nginx-jsonlog"), ("router-default", "router-nolog"),
    ("nginx-jsonlog", "nginx"), ("floor", "nginx"), ("floor", "haproxy"), ("haproxy", "nginx"),
    ("edge-tls", "nginx-tls"), ("edge-tls-nolog", "nginx-tls"),
    ("chain", "nginx-tls"), ("chain-nolog", "nginx-tls"), ("chain", "edge-tls"),
    ("floor-mimalloc", "floor"), ("lean", "floor-mimalloc"), ("lean", "nginx"),
    ("lean", "nginx-jsonlog"), ("hyper", "nginx"), ("hyper", "lean"), ("raw", "nginx"),
    ("raw", "lean"), ("floor-ingress", "floor-mimalloc"), ("floor-ingress", "nginx"),
    ("floor-ingress", "nginx-jsonlog"), ("router-nolog", "floor-ingress"),
]


def rows_by_config(path, cols):
    """A TSV's rows as dicts by config, and the configs in order of first appearance."""
    rows = [dict(zip(cols, l.rstrip("\n").split("\t"))) for l in open(path) if l.strip()]
    order, by = [], {}
    for r in rows:
        if r["config"] not in by:
            order.append(r["config"])
        by.setdefault(r["config"], []).append(r)
    return order, by


def cpu_summary(path):
    order, by = rows_by_config(path, CPU_COLS)
    out = ["| config | runs used (disturbed) | req/s | **CPU µs/req** (min–max) | user µs | sys µs "
           "| proxy CPU % | p50 ms | p99 ms | errors | others on CPU 1 % |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    med = {}
    for config in order:
        all_runs = by[config]
        runs = [r for r in all_runs if r["disturbed"] == "0"] or all_runs
        ndist = sum(1 for r in all_runs if r["disturbed"] == "1")

        def col(name, f=float):
            return [f(r[name]) for r in runs]

        def per_req(ticks_col):
            return [int(r[ticks_col]) / int(r["clk_tck"]) * 1e6 / int(r["requests"])
                    if int(r["requests"]) else float("nan") for r in runs]

        has_proxy = runs[0]["parts"] != "-"
        us = col("cpu_us_per_req")
        user = statistics.median(per_req("utime_ticks"))
        sys_ = statistics.median(per_req("stime_ticks"))
        util = statistics.median([(int(r["utime_ticks"]) + int(r["stime_ticks"])) / int(r["clk_tck"])
                                  / float(r["seconds"]) * 100 for r in runs])
        m = {"us": statistics.median(us), "rps": statistics.median(col("req_per_s")),
             "p50": statistics.median(col("p50_ms")), "p99": statistics.median(col("p99_ms"))}
        med[config] = m
        foreign = statistics.median(col("foreign_cpu1")) * 100
        errors = sum(col("errors", int))
        if has_proxy:
            cells = [f"**{m['us']:.1f}** ({min(us):.1f}–{max(us):.1f})", f"{user:.1f}", f"{sys_:.1f}",
                     f"{util:.0f}"]
        else:
            cells = ["– (no proxy)", "–", "–", "–"]
        out.append(f"| {config} | {len(runs)} ({ndist}) | {m['rps']:,.0f} | " + " | ".join(cells) +
                   f" | {m['p50']:.2f} | {m['p99']:.2f} | {errors} | {foreign:.0f} |")
        # Per-tier split of a chain (edge + router).
        if has_proxy and "," in runs[0]["parts"]:
            split = {}
            for r in runs:
                for part in r["parts"].split(","):
                    name, t = part.split("=")
                    u, s = (int(x) for x in t.split("+"))
                    split.setdefault(name, []).append(
                        (u + s) / int(r["clk_tck"]) * 1e6 / int(r["requests"]))
            for name, vals in split.items():
                out.append(f"| &nbsp;&nbsp;↳ {name} part | | | {statistics.median(vals):.1f} | | | | | | | |")
    pairs = [(a, b) for a, b in CPU_RATIOS if a in med and b in med]
    if pairs:
        out += ["", "| ratio (medians) | CPU µs/req | p99 | req/s |", "|---|---|---|---|"]
        for a, b in pairs:
            cr = med[a]["us"] / med[b]["us"] if med[b]["us"] else float("nan")
            pr = med[a]["p99"] / med[b]["p99"] if med[b]["p99"] else float("nan")
            rr = med[a]["rps"] / med[b]["rps"] if med[b]["rps"] else float("nan")
            out.append(f"| {a} / {b} | **{cr:.2f}** | {pr:.2f} | {rr:.2f} |")
    print("\n".join(out))


def crate_of(dso, sym):
    """Where a sample's time goes: the kernel, a shared library, or the Rust crate of the symbol."""
    if dso.startswith("[kernel"):
        return "kernel"
    if sym.startswith("0x") or sym.startswith("[unknown"):
        return "[unknown]"
    if sym.startswith("mi_") or sym.startswith("_mi_") or "mimalloc" in sym:
        return "mimalloc"
    if ".so" in dso:
        return dso
    m = re.match(r"core::ptr::drop_in_place<(.*)>$", sym)
    if m:
        sym = m.group(1)
    # `<&mut W as core::fmt::Write>::write_str`: a generic self type; the trait's crate says more.
    m = re.match(r"<[&\s]*(?:mut )?[A-Z]\w{0,2} as ([^>]*)>", sym)
    if m:
        sym = m.group(1)
    m = re.match(r"[<&\s]*(?:dyn |mut )?([A-Za-z_][A-Za-z0-9_]*)", sym)
    return m.group(1) if m else sym


# Inclusive shares from `perf script` call chains: where tandem's own phases and the big shared
# costs sit (a sample counts once per pattern if any frame of its chain matches).
PHASES = [(f"phase {n}", re.compile(r"<proxy::proxy::Proxy as pingora_proxy::proxy_trait::ProxyHttp>::"
                                     + n + r"\b"))
          for n in ["early_request_filter", "request_filter", "upstream_peer", "upstream_request_filter",
                    "connected_to_upstream", "response_filter", "upstream_response_filter", "logging",
                    "fail_to_proxy", "new_ctx"]] + [
    ("forwarded headers (proxy::forwarded::apply_for_client)", re.compile(r"proxy::forwarded::apply_for_client")),
    ("any frame of crate proxy (tandem's data path)", re.compile(r"(^|[<\s&])proxy::")),
    ("tracing (access log formatting and writer)", re.compile(r"tracing")),
    ("allocator (malloc/free, mimalloc)", re.compile(
        r"^(mi_|_mi_|malloc|_int_malloc|_int_free|cfree|free|__libc_malloc|__GI___libc_malloc|__libc_free|"
        r"realloc|malloc_consolidate|unlink_chunk)")),
    ("tokio runtime (scheduler, tasks)", re.compile(r"tokio::runtime::(scheduler|task)")),
    ("system calls (kernel, inclusive)", re.compile(r"entry_SYSCALL_64")),
]


def perf_chains(path):
    chain = None
    for line in open(path, errors="replace"):
        if not line.strip():
            if chain:
                yield chain
            chain = None
        elif not line[0].isspace():
            chain = []
        elif chain is not None:
            parts = line.split(None, 1)
            chain.append(parts[1].strip() if len(parts) > 1 else "?")
    if chain:
        yield chain


def perf_phases(config, cpu_us, script):
    cpu_us = float(cpu_us)
    n, inc, calls = 0, {}, {}
    for chain in perf_chains(script):
        n += 1
        for name, pat in PHASES:
            if any(pat.search(f) for f in chain):
                inc[name] = inc.get(name, 0) + 1
        for f in chain:
            m = re.search(r"__x64_sys_(\w+)", f)
            if m:
                calls[m.group(1)] = calls.get(m.group(1), 0) + 1
                break
    if not n:
        return
    out = [f"Inclusive (call chains, {n} samples):", "", "| what | % of samples | µs/req |", "|---|---|---|"]
    for name, _ in PHASES:
        if inc.get(name):
            out.append(f"| {name} | {inc[name] / n * 100:.1f} | {inc[name] / n * cpu_us:.2f} |")
    for name, v in sorted(calls.items(), key=lambda kv: -kv[1])[:4]:
        out.append(f"| syscall {name} | {v / n * 100:.1f} | {v / n * cpu_us:.2f} |")
    print("\n".join(out) + "\n")


def perf_summary(config, cpu_us, report, top):
    cpu_us, top = float(cpu_us), int(top)
    rows = []
    for line in open(report):
        m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*\S)", line)
        if m:
            rows.append((float(m.group(1)), m.group(2), m.group(4)))
    total = sum(r[0] for r in rows) or 1.0
    groups = {}
    for pct, dso, sym in rows:
        g = crate_of(dso, sym)
        groups[g] = groups.get(g, 0.0) + pct
    out = [f"#### {config}: {cpu_us:.1f} CPU µs per request", "",
           f"Self time by crate / library ({total:.0f} % of the samples attributed):", "",
           "| where | % of samples | µs/req |", "|---|---|---|"]
    for g, pct in sorted(groups.items(), key=lambda kv: -kv[1]):
        if pct >= 0.5:
            out.append(f"| {g} | {pct:.1f} | {pct / 100 * cpu_us:.2f} |")
    out += ["", f"Top {top} symbols (self time):", "", "| % | µs/req | where | symbol |", "|---|---|---|---|"]
    for pct, dso, sym in sorted(rows, key=lambda r: -r[0])[:top]:
        short = sym if len(sym) <= 110 else sym[:107] + "..."
        short = short.replace("|", "\\|")
        out.append(f"| {pct:.1f} | {pct / 100 * cpu_us:.2f} | {crate_of(dso, sym)} | `{short}` |")
    print("\n".join(out) + "\n")


# tls.tsv (bench/tls.sh): server, load, run, count (connections or requests), full and resumed
# handshakes seen by s_time, utime and stime ticks, CLK_TCK, CPU µs per connection/request, raw.
TLS_COLS = ["server", "load", "run", "count", "full", "resumed", "utime", "stime", "clk", "us", "raw"]
TLS_LOAD_NAMES = {"new13": "new connection, full handshake, TLS 1.3",
                  "new12": "new connection, full handshake, TLS 1.2",
                  "resumed13": "new connection, resumed (ticket), TLS 1.3",
                  "resumed12": "new connection, resumed (ticket), TLS 1.2",
                  "keepalive": "keep-alive request (wrk; -c32, -c1 under callgrind)",
                  "plain": "keep-alive request, plain HTTP (same process)"}


def tls_summary(results):
    """Medians per server and load: CPU µs per connection (s_time loads) or per request
    (keepalive), and, with TLS_CALLGRIND=1, instructions per connection/request."""
    rows, cg = [], {}
    tsv, cgtsv = os.path.join(results, "tls.tsv"), os.path.join(results, "tls-callgrind.tsv")
    if os.path.exists(tsv):
        rows = [dict(zip(TLS_COLS, l.rstrip("\n").split("\t"))) for l in open(tsv) if l.strip()]
    if os.path.exists(cgtsv):
        for l in open(cgtsv):
            f = l.rstrip("\n").split("\t")
            if len(f) >= 7:
                cg[(f[0], f[1])] = (int(f[2]), int(f[3]), int(f[4]), int(f[6]))
    servers, loads, by = [], [], {}
    for r in rows:
        servers += [r["server"]] if r["server"] not in servers else []
        loads += [r["load"]] if r["load"] not in loads else []
        by.setdefault((r["server"], r["load"]), []).append(r)
    for s, l in cg:
        servers += [s] if s not in servers else []
        loads += [l] if l not in loads else []
    print("| load | server | CPU µs per conn/req, median (min–max) | conn or req per run | resumed share "
          "| instructions per conn/req (callgrind) |")
    print("|---|---|---|---|---|---|")
    med = {}
    for l in loads:
        for s in servers:
            rs = by.get((s, l), [])
            us = [float(r["us"]) for r in rs]
            cell = "–"
            if us:
                med[(s, l)] = statistics.median(us)
                cell = f"**{med[(s, l)]:.1f}** ({min(us):.1f}–{max(us):.1f})"
            count = statistics.median([int(r["count"]) for r in rs]) if rs else 0
            res = [int(r["resumed"]) / max(1, int(r["full"]) + int(r["resumed"])) for r in rs if l not in ("keepalive", "plain")]
            share = f"{statistics.median(res) * 100:.0f} %" if res else "–"
            ins = f"{cg[(s, l)][3] / 1e3:,.0f} k" if (s, l) in cg else "–"
            print(f"| {TLS_LOAD_NAMES.get(l, l)} | {s} | {cell} | {count:,.0f} | {share} | {ins} |")
    print()
    print("| load | ratio | CPU (medians) | instructions |")
    print("|---|---|---|---|")
    for l in loads:
        for a, b in (("edge-ring", "nginx"), ("edge-aws", "nginx"), ("edge-aws", "edge-ring"),
                     ("floor", "nginx"), ("edge-ring", "floor")):
            c = f"{med[(a, l)] / med[(b, l)]:.2f}" if (a, l) in med and (b, l) in med and med[(b, l)] else "–"
            i = f"{cg[(a, l)][3] / cg[(b, l)][3]:.2f}" if (a, l) in cg and (b, l) in cg and cg[(b, l)][3] else "–"
            if c != "–" or i != "–":
                print(f"| {TLS_LOAD_NAMES.get(l, l)} | {a} / {b} | {c} | {i} |")


RATE_COLS = ["config", "run", "requests", "errors", "late", "rate", "p50_us", "p90_us", "p99_us",
             "p999_us", "max_us", "cpu_us_per_req", "utime_ticks", "stime_ticks", "clk_tck", "load"]


def rate_line(raw, config, run, pids):
    """One fixed-rate run (bench-load's key=value line plus the proxy's ticks) as a TSV line."""
    kv = dict(f.split("=", 1) for f in open(raw).read().split() if "=" in f)
    requests = int(kv["requests"])
    ticks = int(kv["utime"]) + int(kv["stime"])
    us = ticks / int(kv["clk"]) * 1e6 / requests if requests and pids != "-" else float("nan")
    vals = [config, run, requests, kv["errors"], kv["late"], kv["rate"], kv["p50_us"], kv["p90_us"],
            kv["p99_us"], kv["p999_us"], kv["max_us"], f"{us:.2f}", kv["utime"], kv["stime"],
            kv["clk"], kv["load"]]
    return "\t".join(str(v) for v in vals)


RATE_RATIOS = [("router-default", "nginx-jsonlog"), ("router-default", "nginx"),
               ("router-nolog", "nginx"), ("router-default", "haproxy"), ("floor", "nginx"),
               ("router-default", "floor"), ("lean", "floor-mimalloc"), ("lean", "nginx"),
               ("hyper", "nginx"), ("raw", "nginx"), ("floor-mimalloc", "nginx-jsonlog"),
               ("floor-ingress", "nginx-jsonlog"), ("floor-ingress", "floor-mimalloc"),
               ("router-default", "floor-ingress")]


def rate_summary(path):
    order, by = rows_by_config(path, RATE_COLS)
    out = ["| config | runs | req/s | p50 µs | p90 µs | **p99 µs** (min–max) | p99.9 µs | max µs "
           "| CPU µs/req | errors | late |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    med = {}
    for c in order:
        runs = by[c]

        def m(col, f=float):
            return statistics.median(f(r[col]) for r in runs)
        p99s = [int(r["p99_us"]) for r in runs]
        med[c] = {"p99": m("p99_us"), "p50": m("p50_us"), "us": m("cpu_us_per_req")}
        cpu = "–" if math.isnan(med[c]["us"]) else f"{med[c]['us']:.1f}"
        out.append(f"| {c} | {len(runs)} | {m('rate'):,.0f} | {m('p50_us'):.0f} | {m('p90_us'):.0f} | "
                   f"**{med[c]['p99']:.0f}** ({min(p99s)}–{max(p99s)}) | {m('p999_us'):.0f} | "
                   f"{m('max_us'):.0f} | {cpu} | {sum(int(r['errors']) for r in runs)} | "
                   f"{sum(int(r['late']) for r in runs)} |")
    pairs = [(a, b) for a, b in RATE_RATIOS if a in med and b in med]
    if pairs:
        # Rounds are interleaved, so a round's configurations ran minutes apart at most: the
        # paired comparison (in how many rounds a's p99 was above b's) is steadier than the
        # ratio of medians on a noisy machine.
        out += ["", "| ratio (medians) | p50 | **p99** | CPU µs/req | rounds with a's p99 > b's |",
                "|---|---|---|---|---|"]
        for a, b in pairs:
            cpu = med[a]["us"] / med[b]["us"] if med[b]["us"] else float("nan")
            pa = {r["run"]: int(r["p99_us"]) for r in by[a]}
            pb = {r["run"]: int(r["p99_us"]) for r in by[b]}
            both = [r for r in pa if r in pb]
            above = sum(pa[r] > pb[r] for r in both)
            out.append(f"| {a} / {b} | {med[a]['p50'] / med[b]['p50']:.2f} | "
                       f"**{med[a]['p99'] / med[b]['p99']:.2f}** | {cpu:.2f} | {above} of {len(both)} |")
    print("\n".join(out))


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
    elif kind == "changes":
        changes_summary(sys.argv[2])
    elif kind == "cpu":
        print(cpu_line(sys.argv[2:15]))
    elif kind == "perf":
        perf_summary(*sys.argv[2:6])
    elif kind == "perfphases":
        perf_phases(*sys.argv[2:5])
    elif kind == "rate":
        print(rate_line(*sys.argv[2:6]))
    elif kind == "ratesummary":
        rate_summary(sys.argv[2])
    elif kind == "cpusummary":
        cpu_summary(sys.argv[2])
    elif kind == "tlssummary":
        tls_summary(sys.argv[2])
    elif kind == "summary":
        summary(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
