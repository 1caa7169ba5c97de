"""`python -m tests.cluster up|down|env|status|exec [--dir DIR] [--layout default|scarce|a100=1x2,...] [-- CMD]`

up      builds the tools if needed, starts the control plane in the background and prints how to use it
down    stops the cluster started from DIR
env     prints `export KUBECONFIG=...` for `eval "$(python -m tests.cluster env)"`
status  prints which components are running
exec    runs CMD in the cluster's network namespace (e.g. `-- kubectl get pods -A`)

As root, `up` runs the cluster in a network namespace of its own, named after DIR (`ip netns list` shows it), where
pod IPs come from 198.18.0.0/15 (see netns.py): reach the API server and the pods from inside it, with `exec` or
`ip netns exec NAME CMD`. Without root or iproute2 it runs in the caller's namespace with loopback pod IPs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

from . import netns, tools
from .harness import Cluster, ClusterError
from .pools import parse_layout

DEFAULT_DIR = tools.cache_dir() / "cluster"


def netns_name(directory: Path) -> str:
    """The network namespace of the cluster in `directory`: tei-<dir name>-<hash of the path>, at most 32 chars."""
    digest = hashlib.sha1(str(directory.resolve()).encode()).hexdigest()[:6]
    return f"tei-{directory.resolve().name[:20]}-{digest}"


def enter(cluster: Cluster) -> None:
    """Move this process into the cluster's network namespace, if it has one."""
    if cluster.state.netns:
        netns.enter_named(cluster.state.netns)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "env", "status", "exec"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"cluster directory (default {DEFAULT_DIR})")
    parser.add_argument("--layout", default="default",
                        help="node pools: default, scarce, or POOL=COUNTxGPUS,... (pools: a100, h100, l4, cpu)")
    parser.add_argument("--no-build", action="store_true", help="do not run hack/build-tools.sh first")
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.cmd = cmd
    if args.command == "exec" and not args.cmd:
        parser.error("exec: give the command to run after --, e.g. exec -- kubectl get pods -A")
    if args.command != "exec" and args.cmd:
        parser.error(f"{args.command}: takes no command, got {' '.join(args.cmd)!r}")

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
                tools.ensure_built()  # (before entering the namespace: the build needs the Go module proxy)
            if args.dir.exists():
                shutil.rmtree(args.dir)
            name = netns_name(args.dir)
            network = netns.create_named(name)
            t0 = time.monotonic()
            cluster = Cluster(args.dir, parse_layout(args.layout), tie_to_parent=False)
            cluster.state.netns = network.netns if network.mode == "private" else ""
            cluster.start()
            print(f"Started the control plane in {time.monotonic() - t0:.1f}s: {cluster.api_url}", file=sys.stderr)
            print(f"Nodes: {', '.join(n for p in cluster.pools for n in p.node_names())}", file=sys.stderr)
            print(f"Network: {network.describe()}; pod CIDR {cluster.pod_cidr}", file=sys.stderr)
            dir_arg = "" if args.dir == DEFAULT_DIR else f" --dir {args.dir}"
            if cluster.state.netns:
                print(f"Reach it from network namespace {name}: python -m tests.cluster exec{dir_arg} -- kubectl ... "
                      f"(or ip netns exec {name} kubectl ...)", file=sys.stderr)
            print(f"Logs: {args.dir / 'logs'}; stop with: python -m tests.cluster down{dir_arg}", file=sys.stderr)
            print(f"export KUBECONFIG={cluster.kubeconfig}")
        elif args.command == "down":
            if not (args.dir / "state.json").exists():
                print(f"No cluster running from {args.dir}", file=sys.stderr)
                return 0
            cluster = Cluster.attach(args.dir)
            cluster.stop()
            if cluster.state.netns:
                netns.delete_named(os.path.basename(cluster.state.netns))
            print(f"Stopped the cluster in {args.dir}", file=sys.stderr)
        elif args.command == "env":
            cluster = Cluster.attach(args.dir)
            print(f"export KUBECONFIG={cluster.kubeconfig}")
        elif args.command == "status":
            cluster = Cluster.attach(args.dir)
            for name, ok in cluster.alive().items():
                print(f"{name:26} {'running' if ok else 'STOPPED'}")
            return 0 if all(cluster.alive().values()) else 1
        elif args.command == "exec":
            cluster = Cluster.attach(args.dir)
            enter(cluster)
            os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
            if args.cmd[0] in ("kubectl", "helm") and shutil.which(args.cmd[0]) is None:
                args.cmd[0] = str(tools.binary(args.cmd[0]))  # the built one, ~/.cache/tei-operator/bin/NAME-VERSION
            try:
                os.execvp(args.cmd[0], args.cmd)
            except OSError as exc:
                print(f"error: exec {args.cmd[0]}: {exc}", file=sys.stderr)
                return 127
    except (ClusterError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
