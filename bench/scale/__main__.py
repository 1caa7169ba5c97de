"""Command line of bench/scale: `python -m bench.scale [--sizes 100,300,1000] [--runs 3] [--quick] [--no-report]`."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import __doc__ as PACKAGE_DOC
from .footprint import baseline_mib
from .report import breakdown, by_size, fast_path_cost, goals, median, table
from .run import QUICK, ROOT, TARGETS_SECONDS, RunResult, Timing, log, measure

REPORT = ROOT / "docs" / "benchmarks" / "scale.md"


def own_network() -> str:
    """A private network namespace of this process's own (pod IPs from 198.18.0.0/15, local on lo; the fake pods'
    server binds 0.0.0.0:80 there without meeting anyone else's), even when started from one (pytest)."""
    from tests.cluster import netns

    if os.geteuid() == 0 and threading.active_count() == 1:
        try:
            netns._unshare_net()
            netns.configure_loopback()
            return "private network namespace (pod IPs from 198.18.0.0/15)"
        except OSError as exc:
            log(f"No private network namespace ({exc}): trying the shared setup")
    network = netns.enter_private_namespace()
    return network.describe()


def code_described() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        # The reports under docs/benchmarks are what benchmark runs write (an earlier or aborted run's), not code.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)docs/benchmarks"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return f"commit {sha}" + (" with uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "an unknown commit"


def load_runs(path: Path) -> tuple[list[RunResult], dict]:
    """Runs saved by --json: (the runs, what else the file says: code, command)."""
    data = json.loads(path.read_text())
    return [RunResult.from_json(r) for r in data["runs"]], {k: v for k, v in data.items() if k != "runs"}


def saved_section(path: Path | None) -> str:
    """A larger run saved by --json (too long to repeat in every report run): its table, goals and requests."""
    if path is None:
        return ""
    runs, info = load_runs(path)
    sizes = by_size(runs)
    last = sizes[max(sizes)][-1]
    return f"""
## Saved runs: {', '.join(str(n) for n in sizes)} services on {info.get('code', 'an earlier commit')}

Measured by `{info.get('command', 'python -m bench.scale')}` (saved in [{path.name}]({path.name})) on the operator at
{info.get('code', 'an earlier commit')}, with the same method; totals recomputed from the saved rows by today's rule.

{table(runs)}

{goals(runs)}

Requests at N = {max(sizes)}, while creating (per created service) and idle (per service per minute):

{breakdown(last, "create")}

{breakdown(last, "idle", floor=0.001)}
"""


def fast_path_section(results: list[RunResult], timing: Timing) -> str:
    table_text = fast_path_cost(results)
    if not table_text:
        return ""
    return f"""
## What the fast scale-up path costs

After the idle window, the operator is restarted with `TEI_OPERATOR_AUTOSCALER_FAST_TICK_SECONDS=0` (no fast path;
everything else the same), and once its first resync is done and {timing.settle_seconds:g} s more have passed, its
CPU is measured over {timing.fast_off_seconds:g} s. The fast path reads every Ready pod of an autoscaled service
below its maxReplicas every 2 s (here ~1 pod per autoscaled service, N / 2 pods). Of each window also the CPU of
Python's garbage collector (`tei_operator_gc_pause_seconds_total`, part of the CPU) and the reconciles the operator
ran (`tei_operator_reconciles_total`): at rest these are the resync's full passes, every service once every 10
minutes, each in its own slot of that period (~N / 10 a minute); more than that in the window with the fast path off
means the restarted operator was still working through its start (kopf resumes every service once), and "the fast
path" column then understates the fast path by that work. The parts, in-process and without a cluster (the store filled
like this fleet once Ready): `python -m bench.scale.profile_autoscaler --http` measures the CPU of one main tick and
one fast tick (its pod reads over HTTP), `python -m bench.scale.profile_reconcile` the CPU of one full pass.

{table_text}
"""


def before_section(path: Path | None) -> str:
    if path is None:
        return ""
    runs, info = load_runs(path)
    return f"""
## Before: the same benchmark on {info.get('code', 'an earlier commit')}

For comparison, the runs saved in [{path.name}]({path.name}) by `{info.get('command', 'python -m bench.scale')}` on
the operator at {info.get('code', 'an earlier commit')} (check it out and run that command to reproduce them):

{table(runs)}
"""


def _settled_client(results: list[RunResult]) -> str:
    """The operator's own count of its writes per service from the apply to the settle, per N (medians)."""
    parts = [f"{median(runs, 'settled_client_writes'):.1f} at N = {n}" for n, runs in by_size(results).items()
             if not math.isnan(median(runs, "settled_client_writes"))]
    return ", ".join(parts) or "not measured"


def report(results: list[RunResult], command: str, timing: Timing, network: str, runtime: float,
           before: Path | None = None, also: Path | None = None, code: str = "") -> str:
    sizes = by_size(results)
    n_max = max(sizes)
    last = sizes[n_max][-1]
    runs_text = ", ".join(f"{len(r)} at N = {n}" for n, r in sizes.items())
    return f"""# Scale: one operator, many services

Generated by `{command}` (bench/scale/) in {runtime / 60:.0f} min on the local control plane (tests/cluster: etcd,
kube-apiserver, kube-controller-manager, kube-scheduler, kwok), {os.cpu_count()} CPU cores shared with other work,
measuring the operator at {code or code_described()}. Runs: {runs_text}; every figure is the median over the runs at its N,
each run on a fresh control plane. Network: {network}.

What runs: N services over 20 namespaces, alternating EmbeddingService and RerankerService, half of each kind
autoscaled (1..4 replicas, metrics from Prometheus), the other half at 1 replica; each asks for one simulated A100
(kwok nodes of 100 GPUs and 110 pods). Pods are simulated by kwok; one process (bench/scale/fakepods.py) answers as an
idle TEI at every pod IP (/health, /info, /metrics), and a real Prometheus scrapes them every
{timing.scrape_interval:g} s (file_sd targets the benchmark writes from a LIST of the operator's pods every
{TARGETS_SECONDS} s while they are created and once more when all are Ready, as Kubernetes discovery would find
them: Debian's Prometheus has none). The operator is a real `tei-operator run` process outside the
cluster with its defaults except: resync every **{timing.resync_seconds:g} s** (`TEI_OPERATOR_RESYNC_SECONDS`, so an
idle window of {timing.idle_seconds:g} s holds {timing.idle_seconds / timing.resync_seconds:.0f} resyncs), autoscaler
tick {timing.tick_seconds:g} s, `TEI_OPERATOR_METRICS_SOURCE=prometheus`, and `TEI_OPERATOR_SCRAPE_VIA=podip` (pods
read directly, as an in-cluster operator does, not through the API server's proxy).

{table(results)}

- **raw client -> Ready**: the same children (rendered by the operator's own `render_children`, owner references
  dropped) applied once each by a plain client, 4 at a time, until every Deployment is Ready; **operator -> Ready**:
  the N services applied the same way until every one has `Ready=True`. Polled every {timing.poll_seconds:g} s, in
  the same run, on the same control plane (the raw children stay while the operator runs).
- **Requests** come from kube-apiserver's `apiserver_request_total`, scraped before and after each phase. Creating:
  the phase's requests less the benchmark's own (its applies and polls, counted by its client) and less what the
  control plane (controller-manager, scheduler, kwok) sent for the raw baseline's identical children, its idle rate
  taken out for the difference in duration. **applies per child** needs no subtraction: nobody else writes
  Deployments or Services (status writes are a separate subresource). **writes / service (to settled)**: from the
  apply until the operator went quiet after all were Ready (the settle of the idle window below), subtracted the same
  way: every write that creating a service caused. The creating phase alone is ~10x longer at 10x the services and so
  holds more of each service's later writes (the cost status's first token rate a minute after Ready, the
  autoscaler's first status with Prometheus metrics), which the small N's shorter phase leaves out; the goal of
  linear cost is read on this column. The operator's own client counter (`tei_operator_api_requests_total`) over the
  same span, as a cross-check without subtraction: {_settled_client(results)}. Idle: a window of {timing.idle_seconds:g} s
  that starts {timing.settle_seconds:g} s after all are Ready and once the operator has sent no write for
  {timing.quiet_seconds:g} s (what creating left to do is done, e.g. the cost status's first token rates a minute
  later; waited for at most {timing.settle_max_seconds:g} s); its requests less the control plane's idle rate,
  measured for {timing.noise_seconds:g} s before the operator started; per service per minute.
  Writes are POST/PUT/PATCH/APPLY/DELETE, reads GET/LIST/WATCH; the leader election Lease (one renewal a second,
  a single PUT each, whatever N) is left out of both and shown here: {last.lease_requests_per_minute:.0f} Lease requests per minute.
- **RSS** at the end of the idle window and **CPU-s / idle min** from the operator process's /proc; **tick** is the
  mean of `tei_operator_autoscaler_tick_duration_seconds` over the idle window (the main tick: lists, Prometheus
  queries, decisions and status writes of every autoscaled service); **Prometheus queries / tick** from
  Prometheus's own `prometheus_http_requests_total`. Besides, the operator read the pods directly
  {last.pod_reads_per_minute:.0f} times per idle minute at N = {n_max} (the fast scale-up path every 2 s and the
  cost sampler: not API requests). Of the RSS, ~{baseline_mib():.0f} MiB is there before any object is watched (the imported modules,
  `python -m bench.scale.footprint`); the rest grows with the services and with what creating them peaked at, as
  [install.md](../install.md#the-operators-own-memory) explains. The operator runs as its image does: the malloc
  arena cap is set by `tei-operator run` itself, not by the benchmark.

{fast_path_section(results, timing)}
## Goals of the issue

{goals(results)}

## Requests by verb and resource at N = {n_max} (last run)

While creating, per created service (the operator's share, after the subtractions above; small negative values are
the noise of the subtraction):

{breakdown(last, "create")}

Idle, per service per minute:

{breakdown(last, "idle", floor=0.001)}
{saved_section(also)}{before_section(before)}"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=PACKAGE_DOC.splitlines()[0],
                                     epilog="Needs root for its private network namespace and port 80.")
    parser.add_argument("--sizes", default="100,300,1000", help="comma-separated N (default 100,300,1000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per N; medians are reported (default 3)")
    parser.add_argument("--runs-largest", type=int, default=None,
                        help="runs at the largest N only (default: --runs), for a 2-core machine")
    parser.add_argument("--quick", action="store_true", help="N=10, one run, short windows (what the test runs)")
    parser.add_argument("--no-report", action="store_true", help=f"print the table only, do not write {REPORT}")
    parser.add_argument("--json", metavar="FILE", help="also write every run's figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--before", metavar="FILE", type=Path,
                        help="runs saved by --json from an earlier commit: the report shows their table too")
    parser.add_argument("--also", metavar="FILE", type=Path,
                        help="runs saved by --json (e.g. a long 1,000-service run): the report shows their table, "
                        "goals and requests in a section of their own")
    args = parser.parse_args(argv)
    try:
        sizes = [10] if args.quick else sorted({int(x) for x in args.sizes.split(",") if x.strip()})
    except ValueError:
        parser.error(f"--sizes: expected numbers separated by commas, got {args.sizes!r}")
    if not sizes or min(sizes) < 2:
        parser.error("--sizes: each N must be at least 2 (half of the services are autoscaled)")
    for option, path in (("--before", args.before), ("--also", args.also)):
        if path is not None and not path.exists():
            parser.error(f"{option}: {path} does not exist")
    if args.runs < 1 or (args.runs_largest is not None and args.runs_largest < 1):
        parser.error("--runs and --runs-largest must be at least 1")
    timing = QUICK if args.quick else Timing()
    network = own_network()
    workdir = Path(tempfile.mkdtemp(prefix="tei-bench-scale-"))
    log(f"Work directory {workdir}; {network}")
    started = time.monotonic()
    code = code_described()  # what is measured: the code when the run starts
    results: list[RunResult] = []
    command = "make bench-scale" if argv is None and sys.argv[1:] == [] else \
        "python -m bench.scale " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        for n in sizes:
            runs = 1 if args.quick else (args.runs_largest if n == max(sizes) and args.runs_largest else args.runs)
            for i in range(runs):
                results.append(measure(n, workdir / f"n{n}-r{i + 1}", timing))
                print(table(results), flush=True)
    finally:
        if args.json:
            Path(args.json).write_text(json.dumps({"code": code, "command": command.strip(),
                                                   "runs": [r.to_json() for r in results]}, indent=1))
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(results))
    if not args.no_report:
        REPORT.write_text(report(results, command.strip(), timing, network, time.monotonic() - started,
                                 args.before, args.also, code))
        print(f"wrote {REPORT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
