"""Scale-down memory for a load that wanders: the fewest replicas a scale-down may leave.

A stationary noisy load (a rate that wanders by +-25% every half minute, bursty arrivals, bursts of 1.5x for a few
minutes) goes back to its earlier peaks again and again. The stabilization window (300 s) only remembers the highest
recommendation of its own span: five minutes after a burst the fleet followed the load down, and the next swing
asked the replica back, a reversal and a model load each time (the benchmark's test noisy trace: 1-2 per run; a
replica cancelled while still loading, 130 s after the burst asked for it, then asked back 75 s later).

So a scale-down (and a cancel of replicas still loading) keeps a longer memory than a scale-up, of
NOISE_MEMORY_WINDOWS scale-down windows (900 s by default): the count left must serve, at today's demand target per
replica, the highest demand of the memory (the target moves: a latency capacity moved down raises it, a probe up
lowers it), and after a scale-up within the memory it must be at least the memory's highest recommendation (the
stabilization window, stretched: replicas added stay the memory's length, whatever asked for them). The memory applies
while the load is still at the level it peaked at: its recent peak at least LEVEL_SHIFT_SHARE of the remembered one.
A load that fell below that has changed level (a step back down, the end of a spike): then the stabilization window
alone decides, as before, and the memory costs nothing on those. What it costs: replicas a scale-up asked for beyond
what the load then needed (growth headroom on a step, a projection) stay the memory's length, not one window.

Pure, like policy.py: `decide` calls `noise_floor` with the demand history it keeps (PolicyState.demand_history).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# How long a scale-down remembers the demand's peak, in scale-down stabilization windows (300 s by default: 900 s).
# A noisy load's bursts come back within minutes; one window (the stabilization window itself) forgot a 5-minute
# burst by the time the load swung back.
NOISE_MEMORY_WINDOWS = 3.0
# The load is at the same level as its remembered peak while its recent peak is at least this share of it. On the
# benchmark's noisy traces the load between bursts stays at 0.55-0.9 of the burst's peak; after a step back down
# (5 Q -> 1.5 Q) it is 0.3, after a 6x spike 0.2-0.4: those scale down as fast as before.
LEVEL_SHIFT_SHARE = 0.5
_EPS = 1e-9


@dataclass(frozen=True)
class NoiseFloor:
    """The fewest replicas a scale-down may leave, and why."""

    replicas: int
    peak: float
    """The highest demand (tokens/s) of the memory."""
    peak_at: float
    """When it was read."""
    note: str


def memory_seconds(window_seconds: float) -> float:
    """How far back the scale-down memory reaches, for a scale-down stabilization window of `window_seconds`."""
    return NOISE_MEMORY_WINDOWS * window_seconds


def noise_floor(history: tuple[tuple[float, float], ...], now: float, recent_seconds: float, goal: float | None,
                window_seconds: float, recommendations: tuple[tuple[float, int], ...] = (),
                last_scale_up: float | None = None) -> NoiseFloor | None:
    """The replicas that serve the memory's peak demand at `goal` tokens/s per replica, while the load is still at
    that level; None when it is not (a level shift down), or nothing is known.

    `history`: (time, demand tokens/s) of the main ticks with healthy metrics, this tick included; `recent_seconds`:
    the span whose highest demand says where the load is now (the stabilization window for a scale-down, the few
    seconds a cancel confirms the low load over); `goal`: the demand target per Ready replica (the learned peak x
    targetUtilization, or the latency capacity); `recommendations`: (time, replicas) the ticks recommended, which
    count when the fleet was scaled up within the memory (`last_scale_up`): replicas added stay the memory's length.
    """
    if goal is None or not math.isfinite(goal) or goal <= 0:
        return None
    memory = memory_seconds(window_seconds)
    kept = [(t, d) for t, d in history if t > now - memory - _EPS and math.isfinite(d)]
    recent = [d for t, d in kept if t > now - recent_seconds - _EPS]
    if not kept or not recent:
        return None
    peak_at, peak = max(kept, key=lambda p: p[1])
    if peak <= 0 or max(recent) < LEVEL_SHIFT_SHARE * peak:
        return None
    replicas = max(1, math.ceil(peak / goal - _EPS))
    # after a scale-up within the memory: the recommendations made since the demand was watched (a state restored
    # without its history has none to weigh)
    recommended = 0
    if last_scale_up is not None and now - last_scale_up < memory - _EPS:
        recommended = max((r for t, r in recommendations if t > max(now - memory, kept[0][0]) - _EPS), default=0)
    if recommended > replicas:
        replicas = recommended
        why = f"the highest recommendation of the last {memory:.0f}s"
    else:
        why = (f"{replicas} replicas serve the peak demand of the last {memory:.0f}s ({peak:.0f} tokens/s, "
               f"{now - peak_at:.0f}s ago) at {goal:.0f} tokens/s/replica")
    note = (f"{why}, and the load is still at that level (its last {recent_seconds:.0f}s peaked at "
            f"{max(recent) / peak:.2f}x of it, at least {LEVEL_SHIFT_SHARE:.2f}x)")
    return NoiseFloor(replicas, peak, peak_at, note)
