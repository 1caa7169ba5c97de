"""`python -m bench.autoscaling`: compare tei-operator's scaling policy with HPA, KEDA, static fleets and an oracle.

    python -m bench.autoscaling                      # every trace in bench/traces, 3 seeds, writes the report
    python -m bench.autoscaling --quick              # step + spike traces, 1 seed, no report (< 60 s)
    python -m bench.autoscaling --trace prod.csv --service my-embedding.yaml --tokens-per-second 55000 \\
        --gpu-price 2.01 --slo-ms 150 --out /tmp/report.md     # replay your own load with your own spec
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .report import plot, table, write_markdown
from .run import POLICIES, BenchSettings, Result, run_one
from .traces import Trace, TraceError, generate_arrivals, load_trace

ROOT = Path(__file__).resolve().parents[2]
TRACES = ROOT / "bench" / "traces"
QUICK_TRACES = ("step", "spike")


def _series(r: Result) -> dict:
    """Downsampled plot data: replicas over time and p95 latency per 30 s bin (failed requests = +inf)."""
    tl = r.timeline
    t, lat = tl["arrivals"], tl["latency"]
    bins = np.arange(0, (t.max() if len(t) else 0) + 30, 30.0)
    idx = np.digitize(t, bins) - 1
    order = np.argsort(idx, kind="stable")
    splits = np.searchsorted(idx[order], np.arange(len(bins)))
    groups = np.split(lat[order], splits[1:])
    p95 = np.array([np.percentile(g, 95) if len(g) else np.nan for g in groups])
    return {"t": tl["t"], "replicas": tl["replicas"], "bins": bins, "p95": p95}


def run_task(trace: Trace, seed: int, policies: tuple[str, ...], settings: BenchSettings, keep_series: bool):
    """All policies on one trace and seed, on the same arrivals."""
    mean_tokens = settings.mix.mean_tokens()
    arrivals = generate_arrivals(trace, seed, settings.mix)
    out, series = [], {}
    for name in policies:
        r = run_one(name, trace, seed, settings, arrivals, mean_tokens)
        if keep_series:
            series[name] = _series(r)
        r.timeline = {}
        out.append(r)
    return out, series


def run_all(traces: list[Trace], seeds: list[int], policies: tuple[str, ...], settings: BenchSettings,
            jobs: int = 1) -> tuple[list[Result], dict[str, dict]]:
    """Every (trace, seed) in parallel processes; plot series kept for the first seed."""
    tasks = [(tr, sd, policies, settings, sd == seeds[0]) for tr in traces for sd in seeds]
    results: list[Result] = []
    series: dict[str, dict] = {}
    if jobs <= 1:
        outs = [run_task(*t) for t in tasks]
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            outs = list(pool.map(run_task, *zip(*tasks)))
    for (tr, *_), (rs, ser) in zip(tasks, outs):
        results += rs
        if ser:
            series[tr.name] = ser
    return results, series


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.autoscaling", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", action="append", help="trace CSV (repeatable); default: every file in bench/traces")
    ap.add_argument("--service", help="an EmbeddingService/RerankerService manifest: its spec.autoscaling and "
                    "spec.engine are used (default: the operator's defaults, maxReplicas 12)")
    ap.add_argument("--tokens-per-second", type=float, help="one replica's throughput (default 60000: BGE-M3, A100)")
    ap.add_argument("--gpu-price", type=float, help="price of one GPU per hour in $ (default 1.04)")
    ap.add_argument("--slo-ms", type=float, help="latency target in ms (default 100)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per trace (default 3)")
    ap.add_argument("--policies", default=",".join(POLICIES), help=f"comma-separated subset of {','.join(POLICIES)}")
    ap.add_argument("--quick", action="store_true", help="step and spike traces, 1 seed, no report: under 60 s")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "autoscaling.md"), help="report path")
    ap.add_argument("--no-report", action="store_true", help="print the table only")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="parallel processes (default 2)")
    args = ap.parse_args(argv)

    policies = tuple(p.strip() for p in args.policies.split(",") if p.strip())
    bad = [p for p in policies if p not in POLICIES]
    if bad:
        ap.error(f"--policies: unknown {bad}; choose from {', '.join(POLICIES)}")
    if args.seeds < 1:
        ap.error("--seeds: must be >= 1")
    overrides = {"tokens_per_second": args.tokens_per_second, "gpu_price_per_hour": args.gpu_price,
                 "slo_seconds": args.slo_ms / 1000 if args.slo_ms else None}
    try:
        if args.service:
            settings = BenchSettings.from_yaml(args.service, **overrides)
        else:
            base = BenchSettings.default()
            settings = BenchSettings.from_yaml_dict(base, overrides)
        paths = [Path(p) for p in args.trace] if args.trace else sorted(TRACES.glob("*.csv"))
        if args.quick and not args.trace:
            paths = [TRACES / f"{n}.csv" for n in QUICK_TRACES]
        traces = [load_trace(p) for p in paths]
    except (TraceError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seeds = [0] if args.quick else list(range(args.seeds))
    t0 = time.time()
    results, series = run_all(traces, seeds, policies, settings, args.jobs)
    elapsed = time.time() - t0
    print(table(results, markdown=False))
    print(f"\n{len(results)} runs in {elapsed:.0f} s")
    if not (args.quick or args.no_report):
        out = Path(args.out)
        images = [plot(name, s, out.parent / "img", settings.slo_seconds) for name, s in series.items()]
        cmd = "python -m bench.autoscaling " + " ".join(argv if argv is not None else sys.argv[1:])
        write_markdown(out, results, settings, images, len(seeds), cmd.strip(), elapsed)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
