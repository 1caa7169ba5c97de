"""`python -m tests.cluster up|down|env|status [--dir DIR] [--layout default|scarce|a100=1x2,...]`

up      builds the tools if needed, starts the control plane in the background and prints how to use it
down    stops the cluster started from DIR
env     prints `export KUBECONFIG=...` for `eval "$(python -m tests.cluster env)"`
status  prints which components are running
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from . import tools
from .harness import Cluster, ClusterError
from .pools import parse_layout

DEFAULT_DIR = tools.cache_dir() / "cluster"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "env", "status"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"cluster directory (default {DEFAULT_DIR})")
    parser.add_argument("--layout", default="default",
                        help="node pools: default, scarce, or POOL=COUNTxGPUS,... (pools: a100, h100, l4, cpu)")
    parser.add_argument("--no-build", action="store_true", help="do not run hack/build-tools.sh first")
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            if (args.dir / "state.json").exists():
                existing = Cluster.attach(args.dir)
                if all(existing.alive().values()):
                    print(f"A cluster is already running from {args.dir}", file=sys.stderr)
                    print(f"export KUBECONFIG={existing.kubeconfig}")
                    return 0
                existing.stop()
            if not args.no_build:
                tools.ensure_built()
            if args.dir.exists():
                shutil.rmtree(args.dir)
            t0 = time.monotonic()
            cluster = Cluster(args.dir, parse_layout(args.layout), tie_to_parent=False).start()
            print(f"Started the control plane in {time.monotonic() - t0:.1f}s: {cluster.api_url}", file=sys.stderr)
            print(f"Nodes: {', '.join(n for p in cluster.pools for n in p.node_names())}", file=sys.stderr)
            print(f"Logs: {args.dir / 'logs'}; stop with: python -m tests.cluster down", file=sys.stderr)
            print(f"export KUBECONFIG={cluster.kubeconfig}")
        elif args.command == "down":
            if not (args.dir / "state.json").exists():
                print(f"No cluster running from {args.dir}", file=sys.stderr)
                return 0
            Cluster.attach(args.dir).stop()
            print(f"Stopped the cluster in {args.dir}", file=sys.stderr)
        elif args.command == "env":
            cluster = Cluster.attach(args.dir)
            print(f"export KUBECONFIG={cluster.kubeconfig}")
        elif args.command == "status":
            cluster = Cluster.attach(args.dir)
            for name, ok in cluster.alive().items():
                print(f"{name:26} {'running' if ok else 'STOPPED'}")
            return 0 if all(cluster.alive().values()) else 1
    except (ClusterError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
