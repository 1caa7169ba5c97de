"""The scaling policy: a pure function from (signals, memory, spec) to a replica count and the reason for it.

No I/O and no clock: the caller passes `now` and keeps the returned `PolicyState` for the next tick, so the same
code runs in the live loop, in unit tests and in the benchmark's simulator. docs/autoscaling.md explains the policy
and every knob; in short, one tick does this:

1. Unknown metrics (an error, no te_queue_size, or older than metricsMaxAgeSeconds) hold the current count and
   never scale down; after failureThreshold failures in a row the count is raised to fallbackReplicas if set.
2. The load ratio is the largest of three observed/target ratios, all measured on the Ready replicas:
   queue (te_queue_size per replica / targetQueueSize), batch fill (mean tokens per non-empty batch /
   maxBatchTokens / targetBatchFill) and throughput (tokens/s per replica / (learned peak tokens/s per replica *
   targetUtilization)). The demand is ceil(ready * ratio) replicas.
3. Inside the tolerance band (|ratio - 1| <= tolerance) the count holds. Above it the count rises to the demand,
   but pods still loading their model (starting, within startupGraceSeconds) count as capacity already on its way,
   so a demand they cover adds nothing. Below it the demand is the recommendation for scaling down.
4. 429s (overloaded) mean capacity is short now: never scale down, and add at least one replica unless replicas
   are already starting. While 5% or more of arrivals get 429, a demand that rose since the previous tick is
   projected: the rates cover four ticks, so right after a load step they show a quarter of it (`_project_demand`).
5. Scale-up takes the lowest recommendation of its stabilization window (0 s by default: at once), scale-down the
   highest of its window (300 s), and a window the policy has not watched entirely yet does not allow a scale-down.
   Steps are bounded per period: max(maxPodsStep, maxPercentStep% of the replicas at the period's start).
6. Clamp to [minReplicas, maxReplicas], and never ask for more than the GPU nodes can hold (schedulable_capacity)
   plus max_pending pods, so a cluster autoscaler still sees a pending pod to add a node for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

from ..api.autoscaling import AutoscalingSpec
from .signals import Signals

Action = Literal["ScaleUp", "ScaleDown", "Hold"]
LimitedBy = Literal["MaxReplicas", "MinReplicas", "GpuCapacity", "MetricsUnavailable", "ScaleUpLimit", "ScaleDownLimit"]

# Saturation: when one of these holds, the Ready replicas run at their peak throughput, so the tokens/s per replica
# observed then is a sample of the peak (the policy keeps the largest sample).
_EPS = 1e-9

# The live loop's rates and averaged queue cover four ticks (`loop.rate_window_seconds`; the benchmark's Prometheus
# the same 1 minute at a 15 s tick). A load step that started one tick ago fills a quarter of the window.
RATE_WINDOW_TICKS = 4
# Share of arrivals refused with 429 from which a rising demand is projected (see `_project_demand`). A stray 429
# in bursty traffic (a few per minute) is not a load step: projecting on it cost 3-8% GPU-hours on the benchmark's
# noisy and ramp traces for nothing; a step beyond the fleet's capacity refuses a third or more at once.
PROJECT_FROM_429_SHARE = 0.05


@dataclass(frozen=True)
class PolicyState:
    """What the policy remembers between ticks. Immutable: `decide` returns a new one; keep it for the next tick.

    The live loop keeps one per service in memory. Losing it (operator restart) is safe: the scale-down window then
    has to be watched again before any scale-down, and the peak throughput is learned again.
    """

    recommendations: tuple[tuple[float, int], ...] = ()
    """(time, recommended replicas) of recent ticks, for the stabilization windows."""
    scale_events: tuple[tuple[float, int, int], ...] = ()
    """(time, from, to) of recent replica changes, for the per-period step limits."""
    consecutive_failures: int = 0
    """Ticks in a row with unknown metrics."""
    first_tick_at: float | None = None
    """When the policy first ran for this service (a scale-down window must be watched entirely)."""
    last_scale_time: float | None = None
    last_scale_up_time: float | None = None
    last_scale_down_time: float | None = None
    previous_demand: float | None = None
    """Demand (arrivals, tokens/s) read at the previous tick with healthy metrics; None after a tick without one.
    Its rise to this tick tells how much of a load step the rate window has not caught up with yet."""
    peak_tokens_per_replica: float | None = None
    """Largest tokens/s per Ready replica seen while the replicas were saturated: the learned throughput of one
    replica for this model, GPU and input mix. None until the fleet has been saturated once."""


@dataclass(frozen=True)
class Decision:
    """The outcome of one tick: the replica count to ask for and why, in words with the numbers."""

    desired_replicas: int
    action: Action
    reason: str
    limited_by: LimitedBy | None = None
    limited_message: str | None = None
    load_ratio: float | None = None
    queue_per_replica: float | None = None
    batch_fill: float | None = None
    tokens_per_replica: float | None = None
    notes: tuple[str, ...] = field(default=())


def _fmt(x: float) -> str:
    """A number for a human sentence: integers without decimals, the rest with at most two."""
    return f"{x:.0f}" if abs(x - round(x)) < 0.005 else f"{x:.2f}"


def _cmp(a: float, b: float) -> str:
    """The comparison sign between an observed value and its target, for reasons such as "queue 37 > 16"."""
    return ">" if a > b else "<" if a < b else "="


def _metrics_problem(s: Signals, spec: AutoscalingSpec, now: float) -> str | None:
    """Why this tick's metrics cannot be trusted, or None. A missing queue is unknown, never an empty queue."""
    if s.error:
        return s.error
    if s.ready_replicas <= 0:
        return None  # handled separately: nothing serves, so nothing can report
    if s.queue_size_total is None or not math.isfinite(s.queue_size_total):
        return "te_queue_size has no value for the ready pods"
    age = now - s.observed_at
    if age > spec.metrics_max_age_seconds:
        return f"metrics are {age:.0f}s old (more than metricsMaxAgeSeconds {spec.metrics_max_age_seconds})"
    return None


def _window_values(recs: tuple[tuple[float, int], ...], now: float, window: float) -> list[int]:
    return [r for t, r in recs if t > now - window - _EPS]


def _project_demand(demand: float | None, previous: float | None, shedding: bool) -> float | None:
    """The arrival rate a rate window is still catching up with, while 429s say capacity is short now; or None.

    A rate over a window of W ticks that rose by `d` since the previous tick moves by a W-th of a load step per tick,
    so a step that began within the last tick is up to (W - 1) x d above the reading. Applied only while `shedding`
    (at least PROJECT_FROM_429_SHARE of arrivals get 429): then the fleet is already short, under-sizing costs
    refused requests for a whole model load (30-120 s), and over-sizing costs a few replica-minutes that the
    scale-down window gives back. Otherwise the reading stands (a rate that wanders in noisy traffic would be read
    as a step every tick).
    """
    if not shedding or demand is None or previous is None or demand <= previous:
        return None
    return demand + (RATE_WINDOW_TICKS - 1) * (demand - previous)


def _recommend(
    s: Signals, spec: AutoscalingSpec, max_batch_tokens: int, current: int, peak: float | None,
    previous_demand: float | None = None,
) -> tuple[int, str, float, float | None, float | None, float, float | None]:
    """The recommendation of one tick with healthy metrics and at least one Ready replica.

    Returns (recommended replicas, reason, queue per replica, batch fill, demand tokens/s per replica, load ratio,
    learned peak tokens/s per replica).
    """
    r = s.ready_replicas
    capacity = r + s.starting_replicas
    q_per = float(s.queue_size_total) / r  # type: ignore[arg-type]  (checked by _metrics_problem)
    q_ratio = q_per / spec.target_queue_size
    overloaded = (s.overloaded_rate or 0.0) > 0
    mbt = s.mean_batch_tokens()
    fill = None if mbt is None else min(1.0, mbt / max_batch_tokens)
    f_ratio = None if fill is None else fill / spec.target_batch_fill
    # Learn one replica's peak throughput: while saturated, what a Ready replica batches per second is its peak.
    served = s.batch_tokens_rate_sum
    if served is not None and math.isfinite(served) and served > 0:
        # saturated = batches near full, or 429s (every concurrency permit taken); a queue above target is not
        # enough: bursts queue a few inputs on replicas that are far from their peak
        saturated = overloaded or (fill is not None and fill >= spec.target_batch_fill)
        if saturated and (peak is None or served / r > peak):
            peak = served / r
    demand = s.demand_tokens_rate()
    refused = (s.overloaded_rate or 0.0) / s.request_rate if s.request_rate else 0.0
    projected = _project_demand(demand, previous_demand, overloaded and refused >= PROJECT_FROM_429_SHARE)
    tpr = None if demand is None else (projected or demand) / r
    d_ratio = None if tpr is None or not peak else tpr / (peak * spec.target_utilization)

    parts = [f"queue {_fmt(q_per)}/replica {_cmp(q_per, spec.target_queue_size)} target {_fmt(spec.target_queue_size)}"]
    if fill is not None:
        parts.append(f"batch fill {fill:.2f} {_cmp(fill, spec.target_batch_fill)} {_fmt(spec.target_batch_fill)}")
    if d_ratio is not None:
        goal = peak * spec.target_utilization  # type: ignore[operator]
        what = "demand"
        if projected is not None:
            what = f"demand projected from {demand / r:.0f} (rising under 429s) to"  # type: ignore[operator]
        parts.append(f"{what} {tpr:.0f} tokens/s/replica {_cmp(tpr, goal)} {goal:.0f}")  # type: ignore[str-format]
    seen = ", ".join(parts) + f" on {r} ready"
    if s.starting_replicas:
        seen += f" + {s.starting_replicas} loading"

    # Scale-up ratio: the largest of batch fill, demand (arrivals / learned peak, once learned) and the queue.
    # The queue is a backlog, not a rate: while replicas are loading it grows whatever the fleet's size, and
    # reading it as demand then overshoots; so it only counts when nothing is loading.
    ups = {"batch fill": f_ratio, "demand": d_ratio}
    if s.starting_replicas == 0:
        ups["queue"] = q_ratio
    ups = {k: v for k, v in ups.items() if v is not None}
    downs = dict(ups, queue=q_ratio)
    up_driver = max(ups, key=lambda k: ups[k]) if ups else None
    up_ratio = ups[up_driver] if up_driver else 0.0
    down_driver = max(downs, key=lambda k: downs[k])
    down_ratio = downs[down_driver]
    need = math.ceil(r * up_ratio - _EPS)
    # 429s mean capacity is short now: at least one more replica, unless replicas are already loading.
    short = s.starting_replicas == 0 and overloaded

    if overloaded:
        rec = max(current, need, capacity + 1 if short else 0)
        why = f"{_fmt(s.overloaded_rate)} overloaded (429) requests/s: {seen}"  # type: ignore[arg-type]
        ratio = max(up_ratio, down_ratio)
    elif up_ratio > 1 + spec.tolerance:
        rec = max(current, need)
        why = f"{up_driver} load {up_ratio:.2f}x of target: {seen}"
        ratio = up_ratio
        if rec <= current and need <= capacity and s.starting_replicas:
            why += f"; the loading replicas cover the demand of {need}"
    elif down_ratio < 1 - spec.tolerance:
        rec = min(current, max(1, math.ceil(r * down_ratio - _EPS)))
        why = f"{down_driver} load {down_ratio:.2f}x of target: {seen}"
        ratio = down_ratio
    elif down_ratio > 1 + spec.tolerance:  # only the queue is high, and replicas are loading
        rec = current
        ratio = down_ratio
        why = (f"queue load {q_ratio:.2f}x of target while {s.starting_replicas} replicas load their model: "
               f"they cover the demand ({seen})")
    else:
        rec = current
        ratio = max(up_ratio, down_ratio)
        why = f"load {ratio:.2f}x of target within tolerance {_fmt(spec.tolerance)}: {seen}"
    return rec, why, q_per, fill, tpr, ratio, peak


def decide(
    signals: Signals,
    state: PolicyState,
    spec: AutoscalingSpec,
    max_batch_tokens: int,
    now: float,
    max_pending: int = 0,
) -> tuple[Decision, PolicyState]:
    """Decide this tick's replica count for one service. Pure: same inputs, same outputs.

    `max_batch_tokens` is the engine's --max-batch-tokens (batch fill is measured against it); `max_pending` is how
    many pods beyond `signals.schedulable_capacity` may be left pending for a cluster autoscaler to act on.
    """
    if spec.max_replicas is None:
        raise ValueError("spec.autoscaling.maxReplicas: required when the autoscaler runs (set a number >= 1)")
    if max_batch_tokens <= 0:
        raise ValueError(f"engine.maxBatchTokens: must be > 0, got {max_batch_tokens}")
    if max_pending < 0:
        raise ValueError(f"max_pending: must be >= 0, got {max_pending}")

    s = signals
    current = s.current_replicas
    first = state.first_tick_at if state.first_tick_at is not None else now
    peak = state.peak_tokens_per_replica
    notes: list[str] = []
    problem = _metrics_problem(s, spec, now)
    failures = state.consecutive_failures + 1 if problem else 0
    ratio = q_per = fill = tpr = None
    limited: tuple[LimitedBy, str] | None = None

    if problem:
        rec = current
        reason = f"metrics unavailable ({problem}), failure {failures} of {spec.failure_threshold}: held {current}"
        if failures >= spec.failure_threshold and spec.fallback_replicas is not None and spec.fallback_replicas > rec:
            rec = spec.fallback_replicas
            reason += f", raised to fallbackReplicas {rec}"
        limited = ("MetricsUnavailable", f"Metrics unavailable for {failures} tick(s): {problem}; never scaling down "
                   "on unknown metrics")
    elif s.ready_replicas <= 0:
        rec = current
        if s.starting_replicas > 0:
            reason = f"0 ready, {s.starting_replicas} loading their model: waiting for them"
        else:
            reason = f"0 ready replicas of {current}: no metrics to act on, held {current}"
    else:
        rec, reason, q_per, fill, tpr, ratio, peak = _recommend(s, spec, max_batch_tokens, current, peak,
                                                                state.previous_demand)

    # Stabilization windows (HPA semantics): up takes the window's lowest, down the window's highest.
    up_b, down_b = spec.scale_up, spec.scale_down
    keep = max(up_b.stabilization_window_seconds, down_b.stabilization_window_seconds) + 1
    recs = tuple((t, v) for t, v in state.recommendations if t > now - keep) + ((now, rec),)
    target = rec
    if rec > current and up_b.stabilization_window_seconds > 0:
        target = max(current, min(_window_values(recs, now, up_b.stabilization_window_seconds)))
    elif rec < current:
        if now - first < down_b.stabilization_window_seconds - _EPS:
            target = current
            notes.append(f"scale-down to {rec} waits: watched {now - first:.0f}s of the "
                         f"{down_b.stabilization_window_seconds}s stabilization window")
        else:
            target = min(current, max(_window_values(recs, now, down_b.stabilization_window_seconds)))
            if target > rec:
                notes.append(f"scale-down stabilized at {target}: highest recommendation of the last "
                             f"{down_b.stabilization_window_seconds}s")

    # Step limits per period, counted from the replicas at the period's start.
    keep_ev = max(up_b.period_seconds, down_b.period_seconds) + 1
    events = tuple(e for e in state.scale_events if e[0] > now - keep_ev)
    if target > current:
        added = sum(to - fr for t, fr, to in events if t > now - up_b.period_seconds + _EPS and to > fr)
        base = max(0, current - added)
        limit = base + max(up_b.max_pods_step, math.ceil(base * up_b.max_percent_step / 100))
        if target > limit:
            limited = limited or ("ScaleUpLimit", f"Wanted {target} replicas; scale-up limited to {limit} this "
                                  f"{up_b.period_seconds}s period")
            target = max(current, limit)
    elif target < current:
        removed = sum(fr - to for t, fr, to in events if t > now - down_b.period_seconds + _EPS and to < fr)
        base = current + removed
        limit = base - max(down_b.max_pods_step, math.floor(base * down_b.max_percent_step / 100))
        if target < limit:
            notes.append(f"scale-down to {target} limited to {limit} this {down_b.period_seconds}s period")
            target = min(current, limit)

    # Bounds: maxReplicas, then what the GPU nodes can hold, then minReplicas (the user's floor wins).
    hi, lo = spec.max_replicas, spec.min_replicas
    if target > hi:
        limited = ("MaxReplicas", f"Wanted {target} replicas; maxReplicas is {hi}")
        target = hi
    if s.schedulable_capacity is not None and target > current:
        cap = s.schedulable_capacity + max_pending
        if target > cap:
            limited = ("GpuCapacity", f"Wanted {target} replicas; the matching GPU nodes can hold "
                       f"{s.schedulable_capacity} (+{max_pending} pending allowed)")
            target = max(current, cap)
    if target < lo:
        limited = ("MinReplicas", f"Wanted {target} replicas; minReplicas is {lo}")
        target = lo

    if notes:
        reason = reason + "; " + "; ".join(notes)
    action: Action = "ScaleUp" if target > current else "ScaleDown" if target < current else "Hold"
    new_state = replace(
        state,
        recommendations=recs,
        scale_events=events + (((now, current, target),) if target != current else ()),
        consecutive_failures=failures,
        first_tick_at=first,
        peak_tokens_per_replica=peak,
        previous_demand=None if problem or s.ready_replicas <= 0 else s.demand_tokens_rate(),
    )
    if action != "Hold":
        new_state = replace(new_state, last_scale_time=now)
        new_state = replace(new_state, **({"last_scale_up_time": now} if action == "ScaleUp"
                                          else {"last_scale_down_time": now}))
    decision = Decision(
        desired_replicas=target,
        action=action,
        reason=reason[0].upper() + reason[1:],
        limited_by=limited[0] if limited else None,
        limited_message=limited[1] if limited else None,
        load_ratio=ratio,
        queue_per_replica=q_per,
        batch_fill=fill,
        tokens_per_replica=tpr,
        notes=tuple(notes),
    )
    return decision, new_state
