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
- idle: Ready, nothing running (its queue empty);
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .classes import BULK_CLASS, CLASSES
from .run import INGEST, Pool, initial_replicas, load_bench_profile, measure, physical_limit_tokens_per_s, tick_times
from .traces import Trace, load_trace
from .workload import make_workload, select

ROOT = Path(__file__).resolve().parents[2]
TRACES = ROOT / "bench" / "traces"
PARTS = ("useful", "partial batches", "idle", "loading", "draining")


@dataclass
class Breakdown:
    trace: str
    seed: int
    pool: str
    objective: str
    parts: dict[str, dict[str, float]]
    """window ("job": while the bulk workers run, "rest": the other hours) -> part (PARTS) -> GPU-seconds."""
    tokens: dict[str, float]
    """window -> tokens served (answered) in it."""
    limit: float
    """The physical limit's tokens/s per GPU."""
    bulk_tokens: float
    bulk_done_s: float | None
    doc_attainment: float | None
    doc_p99: float | None
    wall_s: float
    replicas: dict[str, float]
    """Time-weighted mean replicas by phase and window."""
    window: tuple[float, float]
    duration: float = 0.0
    result: Any = field(default=None, repr=False)

    def total(self, window: str | None = None) -> float:
        ws = [window] if window else list(self.parts)
        return sum(v for w in ws for v in self.parts[w].values())

    def ratio(self, window: str | None = None) -> float:
        """Cost per token against the physical limit: GPU-seconds billed / (tokens / limit)."""
        tok = self.tokens[window] if window else sum(self.tokens.values())
        if tok < 0.01 * sum(self.tokens.values()):
            return math.inf  # (answers of requests in flight when the job stopped: no cost per token to speak of)
        return self.total(window) / (tok / self.limit) if tok > 0 else math.inf

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("trace", "seed", "pool", "objective", "parts", "tokens", "limit",
                                            "bulk_tokens", "bulk_done_s", "doc_attainment", "doc_p99", "wall_s",
                                            "replicas", "window", "duration")}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Breakdown":
        return cls(**d)


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
    """[start, end) of the hours bulk workers run (the first to the last row with workers)."""
    w = trace.bulk_workers
    on = np.nonzero(w[:-1] > 0)[0]
    if not len(on):
        return (0.0, 0.0)
    return float(trace.times[on[0]]), float(trace.times[on[-1] + 1])


def _overlap(lo: float, hi: float, a: float, b: float) -> float:
    return max(0.0, min(hi, b) - max(lo, a))


def run(trace: Trace, seed: int, pool: Pool, objective: str = "default", log_rows: int = 8_000_000,
        policy=None, workload=None, replicas0: int | None = None) -> Breakdown:
    """Run tei-operator's policy on one pool with the batch log on and split its GPU-seconds (module docstring).
    `objective`: "default" deploys the benchmark's spec (run.operator_spec) as it is; Latency or Throughput sets
    spec.autoscaling.objective. `replicas0`: replicas at the start (default: what a tuned fleet runs at the trace's
    starting load, as for every dynamic policy; 0 for a pool with scale to zero, bulk_zero.py)."""
    from . import kernel as K
    from .experiment import make_policy
    from .simulator import Simulator

    t_wall = time.time()
    base = load_bench_profile()
    profile = pool.profile(base)
    workload = workload or make_workload(trace, seed)
    arrivals = select(workload.arrivals, set(pool.classes))
    bulk = workload.bulk if pool.bulk else []
    if policy is None:
        policy = make_policy("operator", None, pool, trace, base)
        if objective != "default":
            from .bulk_pools import with_objective

            policy = with_objective(policy, objective)
    start = initial_replicas(trace, base, pool) if replicas0 is None else replicas0
    sim = Simulator(profile, replicas0=start, quota=trace.gpu_quota, seed=seed,
                    routing=pool.routing, arrivals=arrivals, bulk=bulk[0] if bulk else None,
                    metrics_outage=trace.metrics_outage, batch_log=log_rows)
    view = sim.view
    actions: list[tuple[float, int, int]] = []
    drain_start: dict[int, float] = {}
    a, b = bulk_window(trace)
    sample = 5.0
    ticks = tick_times(policy, trace.duration)
    times = np.unique(np.round(np.concatenate([ticks, np.arange(0.0, trace.duration, sample)]), 6))
    tickset = set(np.round(ticks, 6).tolist())
    phase_time: dict[tuple[str, str], float] = {}
    for t in times.tolist():
        sim.advance_to(t)
        if t in tickset:
            want = policy.tick(t, view)
            if want is not None and want != view.desired:
                actions.append((t, view.desired, int(want)))
                sim.set_desired(int(want), t)
        for rec in sim._pods:
            if rec.phase == K.DRAINING and rec.id not in drain_start:
                drain_start[rec.id] = t
        if abs(t / sample - round(t / sample)) < 1e-6:
            w = "job" if a <= t < b else "rest"
            for info in view.pods():
                phase_time[(info.phase, w)] = phase_time.get((info.phase, w), 0.0) + sample
    sim.advance_to(trace.duration)
    out = sim.results()
    res = measure(policy, trace, arrivals, pool, profile, out, actions, seed, "pools", "operator", {})
    end = trace.duration
    spans = {"loading": [], "draining": []}
    for r in out.pods:
        if r.scheduled_at is None:
            continue
        stop = min(r.gone_at if r.gone_at is not None else end, end)
        ready = r.ready_at if r.ready_at is not None else stop
        spans["loading"].append((r.scheduled_at, min(ready, stop)))
        if r.id in drain_start:
            spans["draining"].append((drain_start[r.id], stop))
    blog = sim.batch_log()
    if len(blog) >= log_rows:
        raise RuntimeError(f"batch log full ({log_rows} rows): raise log_rows")
    sq = _sq_per_token(pool)
    dur = profile.overhead_s + profile.seconds_per_token * blog[:, 3] + profile.seconds_per_token_sq * sq * blog[:, 3]
    dur = np.where(blog[:, 3] > 0, dur, 0.0)
    in_job = (blog[:, 1] >= a) & (blog[:, 1] < b)
    limit = physical_limit_tokens_per_s(base, pool)
    # tokens served in each window: the answered tokens, split as the batches that ran them (by the time each batch
    # was formed: a request answered just after the job's end ran inside it)
    served = float(sum(c.tokens for c in res.classes.values()))
    batched = {"job": float(blog[in_job, 3].sum()), "rest": float(blog[~in_job, 3].sum())}
    all_batched = sum(batched.values()) or 1.0
    tokens = {w: served * batched[w] / all_batched for w in batched}
    parts: dict[str, dict[str, float]] = {}
    length = {"job": b - a, "rest": end - (b - a)}
    for w in ("job", "rest"):
        busy = float(dur[in_job].sum() if w == "job" else dur[~in_job].sum())
        useful = tokens[w] / limit
        ov = {k: sum(_overlap(lo, hi, a, b) if w == "job" else (hi - lo) - _overlap(lo, hi, a, b)
                     for lo, hi in v) for k, v in spans.items()}
        ready = phase_time.get(("Ready", w), 0.0)
        parts[w] = {"useful": useful, "partial batches": busy - useful, "idle": max(0.0, ready - busy),
                    "loading": ov["loading"], "draining": ov["draining"]}
    # Ready time is sampled every 5 s: put the rounding into the idle parts so the parts sum to the bill
    billed = float(out.gpu_seconds)
    diff = billed - sum(sum(p.values()) for p in parts.values())
    idle = sum(p["idle"] for p in parts.values())
    if idle > 0:
        for p in parts.values():
            p["idle"] += diff * p["idle"] / idle
    doc = res.classes.get(1)
    reps = {f"{ph.lower()} ({w})": phase_time.get((ph, w), 0.0) / max(length[w], 1e-9)
            for ph in ("Ready", "Loading", "Draining") for w in ("job", "rest")}
    name = objective if objective != "default" else getattr(policy.spec, "objective", "Latency")
    if getattr(policy.spec, "scale_to_zero", None) is not None:
        name += " + scale to zero"
    return Breakdown(trace.name, seed, pool.name, name, parts, tokens, limit, res.bulk_tokens, res.bulk_done_s,
                     doc.attainment if doc else None, doc.p99 if doc else None, time.time() - t_wall, reps, (a, b),
                     trace.duration, res)


def table(rows: list[Breakdown]) -> str:
    """GPU-hours by part and window, and the cost ratio over the job's hours, the rest and the whole trace."""
    head = ("| trace | pool | objective | seed | hours | cost vs limit | GPU-h | " + " | ".join(PARTS) +
            " | tokens (M) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        a, b = r.window
        span = (f"{a / 3600:.0f}-{b / 3600:.0f} h" if b >= 7200 else f"{a / 60:.0f}-{b / 60:.0f} min")
        for w, label in (("job", f"bulk job ({span})"),
                         ("rest", "the other hours"), (None, "whole trace")):
            tot = r.total(w)
            if tot <= 0:
                continue
            vals = {p: (r.parts[w][p] if w else sum(r.parts[x][p] for x in r.parts)) for p in PARTS}
            cells = [f"{vals[p] / 3600:.1f} ({100 * vals[p] / tot:.0f}%)" for p in PARTS]
            tok = r.tokens[w] if w else sum(r.tokens.values())
            ratio = r.ratio(w)
            lines.append(f"| {r.trace} | {r.pool} | {r.objective} | {r.seed} | {label} | "
                         f"{'-' if math.isinf(ratio) else f'{ratio:.2f}x'} | {tot / 3600:.2f} | "
                         + " | ".join(cells) + f" | {tok / 1e6:.0f} |")
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
            if getattr(pool, "scale_to_zero", False):  # the bulk pool: minReplicas 0, scaleToZero (bulk_zero.py)
                from .bulk_zero import make_zero_policy

                r = run(trace, s, pool, policy=make_zero_policy(pool, trace), replicas0=0)
            else:
                r = run(trace, s, pool, obj)
            rows.append(r)
            print(f"{trace.name} seed {s} {obj}: {r.ratio():.2f}x in {r.wall_s:.0f} s; bulk {r.bulk_tokens / 1e6:.0f}M "
                  f"tokens, job done {'never' if r.bulk_done_s is None else f'{r.bulk_done_s / 60:.0f} min'}; "
                  f"documents {r.doc_attainment}, p99 {r.doc_p99}; mean replicas "
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
