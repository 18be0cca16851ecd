#!/usr/bin/env python3
"""Markdown results table from a local run's results file:

    TANDEM_CONFORMANCE_RESULTS=/tmp/conformance.json .venv/bin/python -m pytest conformance/test_conformance.py -q
    python3 conformance/report.py /tmp/conformance.json
"""

from __future__ import annotations

import json
import sys

SETUPS = ("router", "edge", "edge-router")
MARK = {"pass": "pass", "deviates": "**differs (by design)**", "fail": "FAIL"}


def main(path: str) -> None:
    run = json.load(open(path))
    rows: dict[tuple[str, str], dict[str, dict]] = {}
    for r in run["results"]:
        rows.setdefault((r["scenario"], r["case"]), {})[r["setup"]] = r
    dirty = " plus uncommitted changes" if run.get("dirty") else ""
    bins = ", ".join(f"`{b}` {t}" for b, t in run.get("binaries", {}).items())
    print(f"Run of {run['date']} at commit `{run['commit']}`{dirty}; binaries built {bins}.\n")
    print("| set-up | cases | pass | differs by design | fail | requests | seconds in requests |")
    print("|---|---|---|---|---|---|---|")
    for s in SETUPS:
        rs = [r for r in run["results"] if r["setup"] == s]
        count = {o: sum(r["outcome"] == o for r in rs) for o in MARK}
        print(f"| {s} | {len(rs)} | {count['pass']} | {count['deviates']} | {count['fail']} | "
              f"{sum(r['requests'] for r in rs)} | {sum(r['seconds'] for r in rs):.1f} |")
    print()
    print("| scenario file | case | router | edge | edge → router |")
    print("|---|---|---|---|---|")
    for (scn, case), by_setup in rows.items():
        cells = [MARK[by_setup[s]["outcome"]] if s in by_setup else "—" for s in SETUPS]
        print(f"| `{scn}` | {case} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
