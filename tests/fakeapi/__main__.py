"""Run the fake API server standalone:

    python -m tests.fakeapi --port 8001 --load examples/ingress [--kubeconfig /tmp/fake.kubeconfig]

Then point a binary at it: ``router --kubeconfig /tmp/fake.kubeconfig``. Control endpoints
(``/__fake/...``) are listed in tests/fakeapi/README.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .server import FakeApiServer


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
    args = ap.parse_args(argv)

    fake = FakeApiServer(args.port, args.host, history_limit=args.history,
                         bookmark_interval=args.bookmark_interval)
    for d in args.load:
        n = fake.load_dir(d)
        print(f"loaded {n} objects from {d}", flush=True)
    fake.start()
    if args.kubeconfig:
        fake.write_kubeconfig(args.kubeconfig)
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
