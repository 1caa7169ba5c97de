"""Where the GPU-hours of a pool that serves bulk ingestion go, against the physical limit (every GPU busy with
full batches).

    python -m bench.autoscaling.bulk_breakdown                          # the 30-minute ingest trace, seed 1
    python -m bench.autoscaling.bulk_breakdown --trace diurnal --seeds 1 # the 24 h diurnal (slow: ~3 min a run)
    python -m bench.autoscaling.bulk_breakdown --objective Throughput    # the ingest pool in throughput mode

It runs one pool (default: the split deployment's ingest pool) under tei-operator's policy, exactly as the
benchmark does (`run.simulate`'s loop, the live code path), with the simulator's batch log on, and splits the
pool's billed GPU-seconds into:

- useful: served tokens / the physical limit's tokens/s (what the cost would be at the limit);
- partial batches: time the GPU ran batches, minus the useful part (batches below maxBatchTokens pay the
  per-batch overhead and serve fewer tokens per second);
- idle: Ready, nothing running (its queue empty), split into the bulk job's window and the rest of the trace;
- loading: scheduled, model still loading (billed, serves nothing);
- draining: terminating, finishing what it admitted.

The cost ratio against the limit is (sum of all) / useful. Busy time is rebuilt from the batch log with the
profile's batch time, the sum of squared input lengths taken as tokens x E[len^2]/E[len] of the classes' uniform
lengths (the only term the log does not hold; a few percent of a batch's time).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classes import BULK_CLASS, CLASSES
from .run import INGEST, Pool, initial_replicas, load_bench_profile, measure, physical_limit_tokens_per_s, tick_times
from .traces import Trace, load_trace
from .workload import make_workload, select

ROOT = Path(__file__).resolve().parents[2]
TRACES = ROOT / "bench" / "traces"
PARTS = ("useful", "partial batches", "idle (bulk window)", "idle (rest)", "loading", "draining")


@dataclass
class Breakdown:
    trace: str
    seed: int
    pool: str
    objective: str
    gpu_seconds: dict[str, float]
    tokens: float
    bulk_tokens: float
    cost_ratio: float
    bulk_done_s: float | None
    doc_attainment: float | None
    doc_p99: float | None
    wall_s: float
    replicas: dict[str, float]
    """Time-weighted mean replicas by phase, in the bulk window and outside it."""

    @property
    def total(self) -> float:
        return sum(self.gpu_seconds.values())


def _sq_per_token(pool: Pool) -> float:
    """E[len^2] / E[len] of the pool's inputs (uniform lengths): sum(len^2) ~ tokens x this."""
    lo_hi = [(CLASSES[c].tokens_min, CLASSES[c].tokens_max) for c in pool.classes]
    if pool.bulk:
        lo_hi.append((BULK_CLASS.tokens_min, BULK_CLASS.tokens_max))
    vals = []
    for lo, hi in lo_hi:
        n = np.arange(lo, hi + 1, dtype=float)
        vals.append(float((n * n).mean() / n.mean()))
    return float(np.mean(vals))


def bulk_window(trace: Trace) -> tuple[float, float]:
    w = trace.bulk_workers
    on = np.nonzero(w[:-1] > 0)[0]
    if not len(on):
        return (0.0, 0.0)
    return float(trace.times[on[0]]), float(trace.times[on[-1] + 1])


def run(trace: Trace, seed: int, pool: Pool, objective: str = "default", log_rows: int = 6_000_000) -> Breakdown:
    """Run tei-operator's policy on one pool with the batch log on and split its GPU-seconds (module docstring)."""
    from . import kernel as K
    from .experiment import make_policy
    from .simulator import Simulator

    t_wall = time.time()
    base = load_bench_profile()
    profile = pool.profile(base)
    workload = make_workload(trace, seed)
    arrivals = select(workload.arrivals, set(pool.classes))
    bulk = workload.bulk if pool.bulk else []
    policy = make_policy("operator", None, pool, trace, base)
    if objective != "default":
        from .bulk_pools import with_objective

        policy = with_objective(policy, objective)
    sim = Simulator(profile, replicas0=initial_replicas(trace, base, pool), quota=trace.gpu_quota, seed=seed,
                    routing=pool.routing, arrivals=arrivals, bulk=bulk[0] if bulk else None,
                    metrics_outage=trace.metrics_outage, batch_log=log_rows)
    view = sim.view
    actions: list[tuple[float, int, int]] = []
    drain_start: dict[int, float] = {}
    a, b = bulk_window(trace)
    sample = 5.0
    samples = np.arange(0.0, trace.duration, sample)
    ticks = tick_times(policy, trace.duration)
    times = np.unique(np.concatenate([ticks, samples]))
    tickset = set(np.round(ticks, 6).tolist())
    phase_time = {(ph, w): 0.0 for ph in ("Loading", "Ready", "Draining", "Pending") for w in ("bulk", "rest")}
    for t in times.tolist():
        sim.advance_to(t)
        if round(t, 6) in tickset:
            want = policy.tick(t, view)
            if want is not None and want != view.desired:
                actions.append((t, view.desired, int(want)))
                sim.set_desired(int(want), t)
        for rec in sim._pods:
            if rec.phase == K.DRAINING and rec.id not in drain_start:
                drain_start[rec.id] = t
        if abs(t / sample - round(t / sample)) < 1e-9:
            w = "bulk" if a <= t < b else "rest"
            for info in view.pods():
                phase_time[(info.phase, w)] = phase_time.get((info.phase, w), 0.0) + sample
    sim.advance_to(trace.duration)
    out = sim.results()
    res = measure(policy, trace, arrivals, pool, profile, out, actions, seed, "diag", "operator", {})
    end = trace.duration
    load = drain = 0.0
    for r in out.pods:
        if r.scheduled_at is None:
            continue
        stop = min(r.gone_at if r.gone_at is not None else end, end)
        ready = r.ready_at if r.ready_at is not None else stop
        load += max(0.0, min(ready, stop) - r.scheduled_at)
        if r.id in drain_start:
            drain += max(0.0, stop - drain_start[r.id])
    billed = float(out.gpu_seconds)
    blog = sim.batch_log()
    if len(blog) >= log_rows:
        raise RuntimeError(f"batch log full ({log_rows} rows): raise log_rows")
    nonempty = blog[:, 3] > 0
    sq = _sq_per_token(pool)
    dur = profile.overhead_s + profile.seconds_per_token * blog[:, 3] + profile.seconds_per_token_sq * sq * blog[:, 3]
    dur = np.where(nonempty, dur, 0.0)
    in_bulk = (blog[:, 1] >= a) & (blog[:, 1] < b)
    busy = float(dur.sum())
    busy_bulk = float(dur[in_bulk].sum())
    limit = physical_limit_tokens_per_s(base, pool)
    tokens = float(sum(c.tokens for c in res.classes.values()))
    useful = tokens / limit
    ready_bulk = phase_time[("Ready", "bulk")]
    ready_rest = phase_time[("Ready", "rest")]
    parts = {
        "useful": useful,
        "partial batches": busy - useful,
        "idle (bulk window)": max(0.0, ready_bulk - busy_bulk),
        "idle (rest)": max(0.0, ready_rest - (busy - busy_bulk)),
        "loading": load,
        "draining": drain,
    }
    # the 5 s sampling of Ready time is approximate: put the rounding into the idle parts so the sum is the bill
    diff = billed - sum(parts.values())
    idle = parts["idle (bulk window)"] + parts["idle (rest)"]
    if idle > 0:
        for k in ("idle (bulk window)", "idle (rest)"):
            parts[k] += diff * parts[k] / idle
    doc = res.classes.get(1)
    bw = max(b - a, 1e-9)
    rw = max(trace.duration - bw, 1e-9)
    reps = {f"{ph.lower()} ({w})": phase_time[(ph, w)] / (bw if w == "bulk" else rw)
            for ph in ("Ready", "Loading", "Draining") for w in ("bulk", "rest")}
    return Breakdown(trace.name, seed, pool.name, objective, parts, tokens, res.bulk_tokens, res.cost_ratio,
                     res.bulk_done_s, doc.attainment if doc else None, doc.p99 if doc else None,
                     time.time() - t_wall, reps)


def table(rows: list[Breakdown]) -> str:
    head = ("| trace | seed | objective | cost vs limit | GPU-h | " + " | ".join(PARTS) +
            " | bulk tokens (M) | bulk job done | documents within 2 s | document p99 s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        tot = r.total
        cells = [f"{r.gpu_seconds[p] / 3600:.1f} ({100 * r.gpu_seconds[p] / tot:.0f}%)" for p in PARTS]
        done = "not done" if r.bulk_done_s is None else f"{r.bulk_done_s / 60:.0f} min"
        da = "-" if r.doc_attainment is None else f"{100 * r.doc_attainment:.2f}%"
        dp = "-" if r.doc_p99 is None or not math.isfinite(r.doc_p99) else f"{r.doc_p99:.2f}"
        lines.append(f"| {r.trace} | {r.seed} | {r.objective} | {r.cost_ratio:.2f}x | {tot / 3600:.2f} | "
                     + " | ".join(cells) + f" | {r.bulk_tokens / 1e6:.0f} | {done} | {da} | {dp} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.autoscaling.bulk_breakdown", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", default="ingest", help="a test or train trace name, or a CSV path (default ingest)")
    ap.add_argument("--seeds", type=int, default=1, help="seeds 1..N (default 1)")
    ap.add_argument("--pool", default="ingest", help="ingest (documents + bulk) or bulk (bulk only)")
    ap.add_argument("--objective", action="append", help="default (the spec the benchmark deploys), Latency or "
                    "Throughput; repeatable (default: default)")
    ap.add_argument("--hours", type=float, help="only the first H hours of the trace (a cheaper iteration)")
    args = ap.parse_args(argv)
    path = Path(args.trace)
    if not path.exists():
        found = [p for p in (TRACES / "test" / f"{args.trace}.csv", TRACES / "train" / f"{args.trace}.csv")
                 if p.exists()]
        if not found:
            print(f"error: --trace: no trace {args.trace!r} in bench/traces/test or train", file=sys.stderr)
            return 2
        path = found[0]
    trace = load_trace(path)
    if args.hours:
        trace = _truncate(trace, args.hours * 3600)
    if args.pool == "ingest":
        pool = INGEST
    else:
        from .bulk_pools import BULK_POOL

        pool = BULK_POOL
    rows = []
    for obj in args.objective or ["default"]:
        for s in range(1, args.seeds + 1):
            r = run(trace, s, pool, obj)
            rows.append(r)
            print(f"{trace.name} seed {s} {obj}: {r.cost_ratio:.2f}x in {r.wall_s:.0f} s; mean replicas "
                  + ", ".join(f"{k} {v:.2f}" for k, v in r.replicas.items()), flush=True)
    print(table(rows))
    return 0


def _truncate(trace: Trace, seconds: float) -> Trace:
    from dataclasses import replace

    keep = trace.times < seconds
    times = np.concatenate([trace.times[keep], [seconds]])
    n = len(times)
    rates = {c: np.concatenate([r[keep], [r[keep][-1]]]) for c, r in trace.rates.items()}
    return replace(trace, times=times, rates=rates,
                   bulk_workers=np.concatenate([trace.bulk_workers[keep], [0]])[:n],
                   cv=np.concatenate([trace.cv[keep], [trace.cv[keep][-1]]])[:n])


if __name__ == "__main__":
    raise SystemExit(main())
