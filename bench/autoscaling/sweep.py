"""Cost-vs-SLO curves and GPU-hours at equal attainment (issue #9 item 4).

A policy's curve is its (GPU-hours, attainment) points over its knob's values, each the median over seeds.
Comparing two policies at one knob each says little (one may buy attainment with GPU-hours); comparing the
GPU-hours each needs to reach the same attainment does: `gpu_hours_at` reads it off the curve's efficient
frontier by linear interpolation, and says when a policy never reaches the goal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Point:
    knob: float
    gpu_hours: float
    attainment: float


@dataclass(frozen=True)
class AtGoal:
    """GPU-hours a policy needs to reach `goal` attainment on one curve."""

    goal: float
    gpu_hours: float | None
    """None: no point of the curve reaches the goal."""
    bound: str = "="
    """"=": interpolated between two points that bracket the goal; "<=": the cheapest point already reaches it
    (the policy may need less; the sweep did not go lower)."""
    knob: float | None = None
    """The knob value at (or just above) the goal."""
    best: Point | None = None
    """When the goal is never reached: the point with the highest attainment."""

    def text(self, fmt: str = "{:.2f}") -> str:
        if self.gpu_hours is None:
            b = self.best
            return f"never (best {b.attainment:.1%} at {fmt.format(b.gpu_hours)})" if b else "never"
        return ("<= " if self.bound == "<=" else "") + fmt.format(self.gpu_hours)


def median_points(rows: list[tuple[float, int, float, float]]) -> list[Point]:
    """(knob, seed, gpu_hours, attainment) rows -> one Point per knob value, medians over seeds."""
    by: dict[float, list[tuple[float, float]]] = {}
    for knob, _seed, g, a in rows:
        by.setdefault(knob, []).append((g, a))
    return sorted((Point(k, float(np.median([g for g, _ in v])), float(np.median([a for _, a in v])))
                   for k, v in by.items()), key=lambda p: (p.gpu_hours, -p.attainment))


def frontier(points: list[Point]) -> list[Point]:
    """The efficient frontier: by increasing GPU-hours, each point strictly better than every cheaper one."""
    out: list[Point] = []
    for p in sorted(points, key=lambda p: (p.gpu_hours, -p.attainment)):
        if not out or p.attainment > out[-1].attainment:
            out.append(p)
    return out


def gpu_hours_at(points: list[Point], goal: float) -> AtGoal:
    """GPU-hours needed to reach `goal` attainment, interpolated linearly on the frontier."""
    if not points:
        return AtGoal(goal, None)
    f = frontier(points)
    for i, p in enumerate(f):
        if p.attainment >= goal:
            if i == 0:
                return AtGoal(goal, p.gpu_hours, "<=", p.knob)
            q = f[i - 1]
            w = (goal - q.attainment) / (p.attainment - q.attainment)
            return AtGoal(goal, q.gpu_hours + w * (p.gpu_hours - q.gpu_hours), "=", p.knob)
    return AtGoal(goal, None, best=max(points, key=lambda p: (p.attainment, -p.gpu_hours)))


def pick_knob(per_trace: dict[str, list[Point]], goal: float) -> tuple[float, str]:
    """Tuning on the train set, a rule a user can follow on their own traces: the knob value that reaches `goal`
    on every train trace on which some value of the sweep reaches it, at the lowest total GPU-hours. A trace on
    which no value reaches the goal (a spike no reactive fleet survives) is named in the answer and does not decide
    the knob: letting it decide (the value with the best worst-trace attainment) picked the most conservative value,
    which bought a few points on that trace with twice the GPU-hours everywhere else. When no value reaches the
    goal on every reachable trace, or on none, the one with the best worst-trace attainment. Returns (knob, why)."""
    knobs = sorted({p.knob for pts in per_trace.values() for p in pts})
    names = list(per_trace)
    table = {k: [next((p for p in pts if p.knob == k), None) for pts in per_trace.values()] for k in knobs}
    table = {k: v for k, v in table.items() if all(p is not None for p in v)}
    if not table:
        raise ValueError("pick_knob: no knob value was run on every train trace")
    reachable = [i for i, n in enumerate(names) if any(v[i].attainment >= goal for v in table.values())]
    unreached = [n for i, n in enumerate(names) if i not in reachable]
    ok = [k for k, v in table.items() if reachable and all(v[i].attainment >= goal for i in reachable)]
    if ok:
        k = min(ok, key=lambda k: sum(p.gpu_hours for p in table[k]))
        if not unreached:
            return k, f"cheapest value reaching {goal:.0%} on every train trace"
        return k, (f"cheapest value reaching {goal:.0%} on every train trace some value reaches it on (none does on "
                   f"{', '.join(unreached)})")
    k = max(table, key=lambda k: (min(p.attainment for p in table[k]), -sum(p.gpu_hours for p in table[k])))
    return k, f"no value reaches {goal:.0%} on every train trace: best worst-trace attainment"
