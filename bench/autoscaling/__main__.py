"""`python -m bench.autoscaling`: does tei-operator's autoscaler serve users better than what a competent platform
team would deploy (HPA, KEDA, Knative's KPA, static fleets), at equal SLO attainment?

    python -m bench.autoscaling                 # train sweeps, test set, pools; writes docs/benchmarks/autoscaling.md
    python -m bench.autoscaling --long          # and the 24 h diurnal (5 seeds) and mixed vs split on it
    python -m bench.autoscaling --quick         # a small compressed subset, no report (well under 60 s)
    python -m bench.autoscaling --trace prod.csv --out /tmp/report.md   # your own load as the test set

Policies are tuned on bench/traces/train/ only and reported on bench/traces/test/ (or on --trace files).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .experiment import BASELINES, Plan, default_jobs, execute, families
from .traces import TraceError, load_trace

ROOT = Path(__file__).resolve().parents[2]
TRACES = ROOT / "bench" / "traces"
REPORT = ROOT / "docs" / "benchmarks" / "autoscaling.md"
QUICK_TRAIN = ("step",)
QUICK_TEST = ("step", "ingest")
QUICK_TIME_FACTOR = 0.25
SIMULATOR_SECTION = """## How the simulator works

A per-batch discrete-event simulation of TEI's router on every replica (the batching model the TEI emulator
shares), with pod lifecycle, routing and a simulated Prometheus: see [simulator.md](simulator.md)."""


def summary(out, train, test) -> str:
    from .report import at_tuned, med, pct

    lines = [f"{'policy':<12} {'knob':>8}  " + "  ".join(f"{t.name:>18}" for t in test)]
    for f, (k, _) in out.tuned.items():
        cells = []
        for t in test:
            rs = at_tuned(out.test, t.name, f, k)
            cells.append(f"{pct(med([r.query_attainment for r in rs])):>8} {med([r.gpu_hours for r in rs]):6.2f} GPUh"
                         if rs else f"{'-':>18}")
        lines.append(f"{f:<12} {k if k is not None else '-':>8}  " + "  ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None, outcome: list | None = None) -> int:
    """Run the benchmark; `outcome`, when given, receives the Outcome (for tests)."""
    ap = argparse.ArgumentParser(prog="python -m bench.autoscaling", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", action="append", help="a trace CSV to test on (repeatable); default: bench/traces/test")
    ap.add_argument("--quick", action="store_true", help="a small compressed subset, 1 seed, no report (< 60 s)")
    ap.add_argument("--long", action="store_true", help="also the 24 h diurnal: every policy on 5 seeds, and mixed vs "
                    "split pools on it (tei-operator's live path reads every pod's page every 2 s: slow)")
    ap.add_argument("--test-seeds", type=int, help="seeds per test trace (default 5)")
    ap.add_argument("--long-seeds", type=int, help="with --long: seeds of the 24 h diurnal (default 5)")
    ap.add_argument("--out", default=str(REPORT), help="report path (default docs/benchmarks/autoscaling.md)")
    ap.add_argument("--no-report", action="store_true", help="print the summary only")
    ap.add_argument("--jobs", type=int, default=default_jobs(), help="parallel processes (default 2)")
    args = ap.parse_args(argv)
    if args.test_seeds is not None and args.test_seeds < 1:
        ap.error("--test-seeds: must be >= 1")
    if args.long_seeds is not None and (args.long_seeds < 1 or not args.long):
        ap.error("--long-seeds: must be >= 1, and needs --long")
    if args.jobs < 1:
        ap.error("--jobs: must be >= 1")
    try:
        train = [load_trace(p) for p in sorted((TRACES / "train").glob("*.csv"))]
        test_paths = [Path(p) for p in args.trace] if args.trace else sorted((TRACES / "test").glob("*.csv"))
        test = [load_trace(p) for p in test_paths]
    except TraceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    plan = Plan.quick_plan() if args.quick else Plan.long_plan() if args.long else Plan()
    if args.quick:
        train = [t.scaled(QUICK_TIME_FACTOR) for t in train if t.name in QUICK_TRAIN]
        if not args.trace:
            test = [t.scaled(QUICK_TIME_FACTOR) for t in test if t.name in QUICK_TEST]
    if args.test_seeds:
        seeds = tuple(range(1, args.test_seeds + 1))
        plan.test_seeds = plan.curve_seeds = seeds
    if args.long_seeds:
        plan.long_seeds = tuple(range(1, args.long_seeds + 1))
    t0 = time.time()
    out = execute(train, test, plan, args.jobs, log=lambda m: print(m, flush=True))
    if outcome is not None:
        outcome.append(out)
    print(summary(out, train, test))
    print(f"\n{len(out.train) + len(out.test) + len(out.pools)} runs in {time.time() - t0:.0f} s, "
          f"{out.cpu_seconds:.0f} CPU-s (policies: {', '.join(families())})")
    if args.quick or args.no_report:
        return 0
    from .report import write
    from .run import load_bench_profile

    cmd = "python -m bench.autoscaling " + " ".join(argv if argv is not None else sys.argv[1:])
    write(Path(args.out), out, train, test, load_bench_profile(), plan, cmd.strip(), SIMULATOR_SECTION)
    print(f"wrote {args.out}")
    return 0


__all__ = ["main", "BASELINES"]

if __name__ == "__main__":
    raise SystemExit(main())
