"""`python -m bench.autoscaling.operator_runs`: tei-operator's policy alone on the train and test traces, with the
latency capacity it learned, for iterating on the policy without the whole benchmark (about 2 minutes for the
train traces at four headroom values and the test traces at one on 5 seeds, 2 cores).

    python -m bench.autoscaling.operator_runs                           # train: every headroom; test: 0.15
    python -m bench.autoscaling.operator_runs --split test --knobs 0.15 --traces step,noisy --seeds 1,2,3

Each row: the medians over seeds (train runs its one seed, the benchmark's) of queries within 100 ms (and the worst
seed), GPU-hours, replicas held (GPU-hours over the trace's duration), the most direction reversals of any seed,
and the latency capacity (tokens/s per replica) over the main ticks: its median and its value at the end. Then the
total GPU-hours per split and headroom (sum of the per-trace medians), the figure the train set tunes on
(`sweep.pick_knob` picks the cheapest headroom reaching 99% on every train trace some headroom reaches it on).
The long traces (diurnal) and the bulk pools (ingest) are left out; `python -m bench.autoscaling` runs everything.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .experiment import Plan, default_jobs, make_policy
from .run import ONLINE, load_bench_profile, simulate
from .traces import load_trace
from .workload import make_workload

TRACES = Path(__file__).resolve().parents[2] / "bench" / "traces"
SKIP = ("ingest", "diurnal")


def run_one(job: tuple[str, str, int, float]) -> dict:
    """One (split, trace, seed, headroom) run of the simulated operator, with its latency capacity per main tick."""
    split, name, seed, knob = job
    trace = load_trace(TRACES / split / f"{name}.csv")
    profile = load_bench_profile()
    pol = make_policy("operator", knob, ONLINE, trace, profile)
    caps: list[float] = []
    main = pol._main

    def watched_main(now, view):
        want = main(now, view)
        caps.append(pol.state.latency_capacity or math.nan)
        return want

    pol._main = watched_main  # type: ignore[method-assign]
    r = simulate(pol, trace, make_workload(trace, seed), ONLINE, profile, seed, split, "operator")
    c = np.array(caps, float)
    known = np.isfinite(c).any()
    return {"split": split, "trace": name, "seed": seed, "knob": knob, "attainment": r.query_attainment,
            "gpu_hours": r.gpu_hours, "held": r.gpu_hours * 3600.0 / trace.duration, "reversals": r.reversals,
            "cap_median": float(np.nanmedian(c)) if known else math.nan,
            "cap_end": float(c[-1]) if len(c) else math.nan}


def table(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["split"], r["knob"], r["trace"])].append(r)
    out = [f"{'split':6} {'headroom':>8} {'trace':9} {'queries [worst]':>18} {'GPU-h':>6} {'held':>5} {'rev':>4} "
           f"{'cap med':>7} {'cap end':>7}"]
    for (split, knob, name), rs in sorted(groups.items()):
        att = [r["attainment"] for r in rs]
        out.append(f"{split:6} {knob:8.2f} {name:9} {100 * np.median(att):8.2f}% [{100 * min(att):6.2f}] "
                   f"{np.median([r['gpu_hours'] for r in rs]):6.2f} {np.median([r['held'] for r in rs]):5.2f} "
                   f"{max(r['reversals'] for r in rs):4d} {np.median([r['cap_median'] for r in rs]):7.0f} "
                   f"{np.median([r['cap_end'] for r in rs]):7.0f}")
    for split in ("train", "test"):
        for knob in sorted({r["knob"] for r in rows if r["split"] == split}):
            names = {n for (s, k, n) in groups if s == split and k == knob}
            total = sum(float(np.median([r["gpu_hours"] for r in groups[(split, knob, n)]])) for n in names)
            out.append(f"total {split} headroom {knob:.2f}: {total:.2f} GPU-h over {len(names)} traces")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.autoscaling.operator_runs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="train,test", help="train, test or both (default both)")
    ap.add_argument("--knobs", help="headroom values, comma-separated (default: train 0,0.15,0.3,0.6; test 0.15)")
    ap.add_argument("--seeds", default="1,2,3,4,5", help="test seeds (default 1-5); train runs the benchmark's")
    ap.add_argument("--traces", default="", help="trace names, comma-separated (default: every short trace)")
    ap.add_argument("--jobs", type=int, default=default_jobs())
    args = ap.parse_args(argv)
    splits = args.split.split(",")
    if not splits or any(s not in ("train", "test") for s in splits):
        ap.error(f"--split: {args.split!r}: choose train, test or train,test")
    try:
        knobs = [float(k) for k in args.knobs.split(",")] if args.knobs else None
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError as e:
        ap.error(f"--knobs/--seeds: comma-separated numbers ({e})")
    if knobs is not None and any(not 0 <= k <= 4 for k in knobs):
        ap.error("--knobs: headroom must be 0-4")
    if args.jobs < 1:
        ap.error("--jobs: must be >= 1")
    jobs = []
    for split in splits:
        names = [p.stem for p in sorted((TRACES / split).glob("*.csv")) if p.stem not in SKIP]
        if args.traces:
            unknown = set(args.traces.split(",")) - set(names)
            if unknown:
                ap.error(f"--traces: no {split} trace {', '.join(sorted(unknown))}; {split} has {', '.join(names)}")
            names = [n for n in names if n in args.traces.split(",")]
        split_seeds = list(Plan().train_seeds) if split == "train" else seeds
        split_knobs = knobs or ([0.0, 0.15, 0.3, 0.6] if split == "train" else [0.15])
        jobs += [(split, n, s, k) for k in split_knobs for n in names for s in split_seeds]
    t0 = time.time()
    if args.jobs == 1:
        rows = [run_one(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=args.jobs) as ex:
            rows = list(ex.map(run_one, jobs))
    print(table(rows))
    print(f"{len(rows)} runs in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
