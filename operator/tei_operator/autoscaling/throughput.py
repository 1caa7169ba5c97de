"""The throughput objective (spec.autoscaling.objective: Throughput): size a pool of bulk ingestion for cost.

A pool that serves only bulk traffic (closed-loop workers re-sending as soon as they get an answer, retrying 429s)
has no latency to protect: what it pays for is GPU time its replicas spend idle. The latency objective sizes such a
pool by its queue and batch fill, which a closed loop always fills, so it grows to maxReplicas while the workers
cannot keep that many replicas busy (random routing of W requests in flight over N replicas leaves about
N x (1 - 1/N)^W of them idle at any moment); the benchmark measured 18% of the ingest pool's GPU-hours idle during a
24 h diurnal's bulk job that way.

The throughput objective sizes by the share of time the Ready replicas' GPUs are busy, read from TEI's own metrics:

    busy = (non-empty batches per second over the fleet) x (mean batch time) / ready replicas

where the mean batch time is te_request_inference_duration's mean (the time an input spent in its batch). The work
arriving needs `busy x arrivals / completions` of the fleet (more when requests arrive faster than they complete);
the replicas it needs at BUSY_TARGET busy are ready x that / BUSY_TARGET. Fewer replicas than that leave work
waiting; more leave GPUs idle. With a closed loop the busy share rises as replicas go away (the same workers feed
fewer of them), so the count settles where each replica's queue stays non-empty. A backlog the busy fleet does not
drain (queue per replica above targetQueueSize while busy is at target) adds one replica at a time; 429s add one too.

Scale-down is prompt: unless the user sets them, the scale-down window is THROUGHPUT_SCALE_DOWN_WINDOW_SECONDS
(not 300 s) and a period may remove everything above the recommendation, so replicas go when the backlog drains.
The fast scale-up path does not run (it exists to protect latency).

Pure functions, no I/O; `policy.decide` calls `effective_spec` and `recommend` when the objective is Throughput.
"""

from __future__ import annotations

import math

from ..api.autoscaling import AutoscalingSpec
from .reading import Reading
from .signals import Signals

BUSY_TARGET = 1.0
"""Busy share (as `busy_share` reads it) a Ready replica should run at. The reading is an input-weighted mean batch
time times the batch rate, so it reads 4-8% above the true busy share when full and partial batches alternate
(measured on the benchmark's simulator with 16 closed-loop workers on 3-12 replicas); 1.0 on it is about 0.93 true.
Scale-down happens below 1 - tolerance; scale-up never from the busy share alone (it cannot exceed 1), but from
arrivals beyond completions, a backlog on busy replicas, or 429s."""
THROUGHPUT_SCALE_DOWN_WINDOW_SECONDS = 60
"""The scale-down stabilization window unless spec.autoscaling.scaleDown.stabilizationWindowSeconds is set: one
rate window, enough to tell a drained backlog from a gap between two requests."""
_EPS = 1e-9


def effective_spec(spec: AutoscalingSpec) -> AutoscalingSpec:
    """The spec with the throughput objective's scale-down defaults where the user left them unset: a short window
    and no per-period step limit (everything above the recommendation may go at once)."""
    down = spec.scale_down
    changes = {}
    if "stabilization_window_seconds" not in down.model_fields_set:
        changes["stabilization_window_seconds"] = THROUGHPUT_SCALE_DOWN_WINDOW_SECONDS
    if "max_percent_step" not in down.model_fields_set:
        changes["max_percent_step"] = 100
    if not changes:
        return spec
    return spec.model_copy(update={"scale_down": down.model_copy(update=changes)})


def busy_share(s: Signals) -> float | None:
    """Mean share of time a Ready replica ran batches over the window (0-1), or None when unknown."""
    if s.ready_replicas <= 0 or s.batch_rate_count is None or not math.isfinite(s.batch_rate_count):
        return None
    if s.batch_rate_count <= 0:
        return 0.0  # no batch ran in the window: idle (no request completed, so no batch time either)
    if s.mean_batch_seconds is None:
        return None
    if not math.isfinite(s.mean_batch_seconds):
        return None
    return max(0.0, min(1.0, s.batch_rate_count * s.mean_batch_seconds / s.ready_replicas))


def recommend(s: Signals, spec: AutoscalingSpec, max_batch_tokens: int, current: int,
              peak: float | None) -> Reading:
    """The recommendation of one tick with healthy metrics and at least one Ready replica (module docstring)."""
    r = s.ready_replicas
    capacity = r + s.starting_replicas
    q_per = float(s.queue_size_total or 0.0) / r
    overloaded = (s.overloaded_rate or 0.0) > 0
    mbt = s.mean_batch_tokens()
    fill = None if mbt is None else min(1.0, mbt / max_batch_tokens)
    served = s.batch_tokens_rate_sum
    tpr = None if served is None or not math.isfinite(served) else served / r
    busy = busy_share(s)
    if busy is None:
        # No batch yet in the window (or no inference histogram): nothing says the replicas are busy; a queue does.
        ratio = q_per / spec.target_queue_size if q_per > 0 else 1.0
        rec = max(current, capacity + 1) if overloaded and not s.starting_replicas else current
        if ratio > 1 + spec.tolerance and not s.starting_replicas:
            rec = max(rec, r + 1)
        why = f"busy share unknown (no batches in the window), queue {q_per:.1f}/replica on {r} ready: held"
        if rec > current:
            why = f"busy share unknown, queue {q_per:.1f}/replica on {r} ready: one more replica"
        return Reading(rec, why, q_per, fill, tpr, ratio, peak, ratio, ratio, overloaded)
    growth = 1.0
    demand = s.demand_tokens_rate()
    if demand is not None and served and served > 0:
        growth = max(1.0, demand / served)
    work = busy * growth
    ratio = work / BUSY_TARGET
    need = math.ceil(r * ratio - _EPS)
    seen = (f"replicas busy {100 * busy:.0f}% of the time (target {100 * BUSY_TARGET:.0f}%)"
            + (f", arrivals {growth:.2f}x completions" if growth > 1 + _EPS else "")
            + f", queue {q_per:.1f}/replica on {r} ready" + (f" + {s.starting_replicas} loading"
                                                            if s.starting_replicas else ""))
    backlog = busy >= BUSY_TARGET - spec.tolerance / 2 and q_per > spec.target_queue_size
    if overloaded:
        rec = max(current, need, capacity + 1 if not s.starting_replicas else 0)
        why = f"{s.overloaded_rate:.2f} overloaded (429) requests/s: {seen}"
    elif ratio > 1 + spec.tolerance or (backlog and not s.starting_replicas):
        rec = max(current, need, r + 1 if backlog and not s.starting_replicas else 0)
        why = (f"backlog {q_per:.1f} > targetQueueSize {spec.target_queue_size:g} per busy replica: {seen}"
               if backlog and ratio <= 1 + spec.tolerance else f"throughput load {ratio:.2f}x of target: {seen}")
    elif ratio < 1 - spec.tolerance:
        rec = min(current, max(1, need))
        why = f"throughput load {ratio:.2f}x of target (GPUs idle): {seen}"
    else:
        rec = current
        why = f"throughput load {ratio:.2f}x of target within tolerance {spec.tolerance:g}: {seen}"
    return Reading(rec, why, q_per, fill, tpr, ratio, peak, ratio, ratio, overloaded, ratio)


__all__ = ["BUSY_TARGET", "THROUGHPUT_SCALE_DOWN_WINDOW_SECONDS", "busy_share",
           "effective_spec", "recommend"]
