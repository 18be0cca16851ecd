"""Run the fake API server standalone:

    python -m tests.fakeapi --port 8001 --load examples/ingress [--kubeconfig /tmp/fake.kubeconfig]
        [--authorization --load rbac/ --token TOKEN=system:serviceaccount:NS:NAME]

Then point a binary at it: ``router --kubeconfig /tmp/fake.kubeconfig``. Control endpoints
(``/__fake/...``) are listed in tests/fakeapi/README.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .server import FakeApiServer, resource_for


def load_known(fake: FakeApiServer, directory: str) -> tuple[int, set[str]]:
    """Load the manifests under ``directory`` (e.g. a `helm template` output), skipping the kinds
    the fake does not serve (Deployment, PodDisruptionBudget...)."""
    import os

    import yaml

    docs, skipped = [], set()
    for root, _dirs, files in os.walk(directory):
        for f in sorted(files):
            if f.endswith((".yaml", ".yml", ".json")):
                with open(os.path.join(root, f)) as fh:
                    for d in yaml.safe_load_all(fh):
                        for o in (d.get("items") or [] if d and str(d.get("kind", "")).endswith("List") else [d]):
                            if not o:
                                continue
                            try:
                                resource_for(o)
                                docs.append(o)
                            except KeyError:
                                skipped.add(f"{o.get('apiVersion')}/{o.get('kind')}")
    return fake.put_many(docs), skipped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fakeapi", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--load", action="append", default=[], metavar="DIR",
                    help="load every *.yaml/*.yml/*.json manifest under DIR (repeatable)")
    ap.add_argument("--kubeconfig", help="write a kubeconfig pointing at the fake to this path")
    ap.add_argument("--bookmark-interval", type=float, default=1.0)
    ap.add_argument("--history", type=int, default=10_000, help="watch events kept for resumption")
    ap.add_argument("--authorization", action="store_true",
                    help="authenticate bearer tokens and authorize every request by the RBAC objects loaded")
    ap.add_argument("--token", action="append", default=[], metavar="TOKEN=USER[:GROUP,...]",
                    help="a bearer token and its user (system:serviceaccount:NS:NAME for a ServiceAccount); repeatable")
    args = ap.parse_args(argv)

    fake = FakeApiServer(args.port, args.host, history_limit=args.history,
                         bookmark_interval=args.bookmark_interval, authorization=args.authorization)
    for spec in args.token:
        tok, _, who = spec.partition("=")
        if who.startswith("system:serviceaccount:"):
            fake.add_token(tok, who)
        else:
            name, _, groups = who.partition(":")
            fake.add_token(tok, name, [g for g in groups.split(",") if g])
    for d in args.load:
        n, skipped = load_known(fake, d)
        print(f"loaded {n} objects from {d}" + (f" (skipped kinds the fake does not serve: {', '.join(sorted(skipped))})"
                                               if skipped else ""), flush=True)
    fake.start()
    if args.kubeconfig:
        # with --token, the kubeconfig carries the first one
        fake.write_kubeconfig(args.kubeconfig, token=args.token[0].partition("=")[0] if args.token else "x")
        print(f"kubeconfig: {args.kubeconfig}", flush=True)
    print(f"fake kube-apiserver on {fake.url} (resourceVersion {fake.resource_version})", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
