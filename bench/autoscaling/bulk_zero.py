"""The bulk pool with scale to zero (spec.autoscaling.scaleToZero, operator/tei_operator/autoscaling/activation.py)
in the simulator.

The live operator reads an activation query from Prometheus each main tick; what a user points it at is the
ingestion pipeline's backlog (KEDA's model). Here the pipeline is the trace's bulk workers: each running worker
holds a batch to send, so the activation value is the number of bulk workers running (`trace.bulk_workers`), as
Prometheus would show it: sampled at its scrapes (every `ACTIVATION_SCRAPE_S`) and read one scrape late (the last
sample at least one interval old), so the operator sees a job's start 15-30 s after it began, and its end as late.

`ZeroOperatorPolicy` is the benchmark's simulated operator (operator_policy.OperatorPolicy: pages -> scrape
history -> aggregate -> build_signals) with the main tick going through `decide_scale_to_zero`, the function the
live loop calls for a service with scaleToZero. The pool starts at zero replicas: the previous day's job ended
hours before, and the pool went to zero after it (the steady state of a daily job), so the run pays the wake-up
(activation delay + model load) at the job's start.

    python -m bench.autoscaling.bulk_zero                      # the 24 h diurnal, seed 1 (about a minute)
    python -m bench.autoscaling.bulk_zero --hours 8 --seeds 2
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tei_operator.api.autoscaling import AutoscalingSpec
from tei_operator.autoscaling.activation import Activation, ZeroState, decide_scale_to_zero
from tei_operator.autoscaling.loop import build_signals

from .operator_policy import OperatorPolicy

ACTIVATION_SCRAPE_S = 15.0
"""Prometheus' scrape interval for the pipeline's backlog metric; the operator reads the sample one interval late."""
ACTIVATION_QUERY = 'sum(ingest_pipeline_batches_waiting{pipeline="bulk"})'
"""What the benchmark's spec says the query is (the simulator answers it from the trace, see the docstring)."""
IDLE_SECONDS = 600
WORKERS_PER_REPLICA = 4.0
"""activationPerReplica: a woken pool starts one replica per 4 waiting batches (16 workers -> 4 replicas); the
Throughput objective then sizes it."""


def zero_spec(pool, idle_seconds: int = IDLE_SECONDS) -> AutoscalingSpec:
    """The bulk pool's spec.autoscaling: objective Throughput, minReplicas 0, scaleToZero."""
    return AutoscalingSpec.model_validate({
        "enabled": True, "minReplicas": 0, "maxReplicas": pool.max_replicas, "objective": "Throughput",
        "scaleToZero": {"idleSeconds": idle_seconds, "activationQuery": ACTIVATION_QUERY,
                        "activationPerReplica": WORKERS_PER_REPLICA}})


def backlog_reader(trace, scrape_s: float = ACTIVATION_SCRAPE_S):
    """The activation value at time t as the operator reads it: the bulk workers running at the last scrape at
    least one interval before t (0 before the trace starts)."""
    times, workers = trace.times, trace.bulk_workers

    def at(t: float) -> float:
        sample = math.floor((t - scrape_s) / scrape_s) * scrape_s
        if sample < 0:
            return 0.0
        i = int(np.clip(np.searchsorted(times, sample, side="right") - 1, 0, len(times) - 1))
        return float(workers[i])

    return at


@dataclass
class ZeroOperatorPolicy(OperatorPolicy):
    """tei-operator with scaleToZero: the live loop's main tick for such a service (`scale_to_zero_tick`), with
    the activation query answered by `activation` (time -> value)."""

    activation: Any = None
    zero: ZeroState = field(default_factory=ZeroState)
    woke: list[tuple[float, int]] = field(default_factory=list)
    """(time, replicas) of each wake from zero."""
    slept: list[float] = field(default_factory=list)
    """Times of each scale to zero."""

    def _main(self, now: float, view: Any) -> int | None:
        counts, metrics = self._read(now, view, self.main_source, self.settings.metrics_stale_seconds)
        current = int(view.desired)
        signals = build_signals(now, current, counts, metrics, view.quota)
        decision, self.state, self.zero = decide_scale_to_zero(
            signals, self.state, self.zero, self.spec, self.max_batch_tokens, now, Activation(self.activation(now)),
            self.settings.max_pending_replicas)
        if current == 0 and decision.desired_replicas > 0:
            self.woke.append((now, decision.desired_replicas))
        elif current > 0 and decision.desired_replicas == 0:
            self.slept.append(now)
        self.decisions.append((now, decision))
        return decision.desired_replicas


def make_zero_policy(pool, trace, idle_seconds: int = IDLE_SECONDS) -> ZeroOperatorPolicy:
    return ZeroOperatorPolicy(zero_spec(pool, idle_seconds), pool.max_batch_tokens, activation=backlog_reader(trace))


def main(argv: list[str] | None = None) -> int:
    from pathlib import Path

    from .bulk_breakdown import TRACES, _truncate, run, table
    from .bulk_pools import BULK_POOL
    from .traces import load_trace

    ap = argparse.ArgumentParser(prog="python -m bench.autoscaling.bulk_zero", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", default="diurnal", help="a test trace name (default diurnal)")
    ap.add_argument("--seeds", type=int, default=1, help="seeds 1..N (default 1)")
    ap.add_argument("--hours", type=float, help="only the first H hours of the trace")
    args = ap.parse_args(argv)
    path = TRACES / "test" / f"{args.trace}.csv"
    if not path.exists():
        print(f"error: --trace: no trace {args.trace!r} in bench/traces/test", file=sys.stderr)
        return 2
    trace = load_trace(Path(path))
    if args.hours:
        trace = _truncate(trace, args.hours * 3600)
    rows = []
    for s in range(1, args.seeds + 1):
        policy = make_zero_policy(BULK_POOL, trace)
        r = run(trace, s, BULK_POOL, policy=policy, replicas0=0)
        rows.append(r)
        print(f"{trace.name} seed {s}: {r.ratio():.2f}x over the trace, {r.ratio('job'):.2f}x over the job in "
              f"{r.wall_s:.0f} s; job done {'never' if r.bulk_done_s is None else f'{r.bulk_done_s / 60:.0f} min'}"
              f"; woke at {[(round(t), n) for t, n in policy.woke]}, to zero at {[round(t) for t in policy.slept]}",
              flush=True)
    print(table(rows))
    return 0


__all__ = ["ACTIVATION_QUERY", "ZeroOperatorPolicy", "backlog_reader", "make_zero_policy", "zero_spec"]

if __name__ == "__main__":
    raise SystemExit(main())
