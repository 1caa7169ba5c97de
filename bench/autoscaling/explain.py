"""`python -m bench.autoscaling.explain SPLIT/TRACE [--knob HEADROOM] [--seed N]`: why tei-operator held the replicas it held
on one run.

Runs the simulated operator (the live code path, bench/autoscaling/operator_policy.py) once on one trace and
prints: attainment and GPU-hours; the replicas it held against the replicas the offered load needs (at 100% of
`run.replica_capacity` and at the oracle's 40%); how many main ticks each kind of reason decided (the reason's
first words, with the clause that held the count: the scale-down window, "no scale-down" while late, a hold under
the fast path's threshold); every scaling action (time, from, to, main tick or fast path, its reason), marked where
it reverses the direction of the one before (what the report counts as a reversal); and the latency capacity's
moves and probes. This is how the over-provisioning of
issue #9 was traced (docs/autoscaling.md, "Choosing latencyTargetMs").
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

import numpy as np

from .experiment import OPERATOR_LATENCY_TARGET_MS, make_policy
from .run import ONLINE, START_UTILIZATION, demand_replicas, load_bench_profile, replica_capacity, simulate
from .traces import load_trace
from .workload import make_workload

TRACES = Path(__file__).resolve().parents[2] / "bench" / "traces"
HOLDS = (("stabilized at", "scale-down window"), ("no scale-down", "no scale-down while late"),
         ("held: under", "held under the fast threshold"), ("waits: watched", "first scale-down window"),
         ("cycles every", "periodic hold"), ("scale-down held at", "scale-down memory"),
         ("replicas still loading kept", "cancel held by the scale-down memory"))


def reason_kind(reason: str) -> str:
    """A decision's reason reduced to its kind: the first clause with numbers masked, and what held the count."""
    head = re.sub(r"[0-9]+(\.[0-9]+)?", "#", reason.split(":")[0])
    held = [name for key, name in HOLDS if key in reason]
    return head + (f" [{', '.join(held)}]" if held else "")


def action_lines(acts: list[tuple[float, int, int, str]]) -> list[str]:
    """One line per scaling action (time, from, to, reason), REVERSAL where its direction differs from the previous
    action's (run.measure's count)."""
    out, prev = [], 0
    for t, a, b, reason in acts:
        d = 1 if b > a else -1
        mark = "REVERSAL " if prev and d != prev else ""
        out.append(f"  t={t:6.0f}s  {a:2d} -> {b:2d}  {mark}{reason}")
        prev = d
    return out


def explain(split: str, name: str, knob: float, seed: int) -> str:
    trace = load_trace(TRACES / split / f"{name}.csv")
    profile = load_bench_profile()
    pol = make_policy("operator", knob, ONLINE, trace, profile)
    acts: list[tuple[float, int, int, str]] = []
    tick = pol.tick

    def recording_tick(now, view):  # the driver's own test for an action (run.simulate), with the decision's reason
        want = tick(now, view)
        if want is not None and want != view.desired:
            acts.append((now, view.desired, int(want), pol.decisions[-1][1].reason))
        return want

    pol.tick = recording_tick  # type: ignore[method-assign]
    r = simulate(pol, trace, make_workload(trace, seed), ONLINE, profile, seed, split, "operator", keep_timeline=True)
    tl = r.timeline
    need = demand_replicas(trace, profile, ONLINE)(tl["t"])
    lines = [f"{split}/{name} headroom {knob:g} seed {seed}: queries within 100 ms "
             f"{100 * r.query_attainment:.2f}%, {r.gpu_hours:.2f} GPU-h, {r.actions} actions, {r.reversals} reversals",
             f"replica capacity (run.replica_capacity): {replica_capacity(profile, ONLINE):.0f} tokens/s",
             f"replicas held: desired {np.mean(tl['desired']):.2f}, ready {np.mean(tl['ready']):.2f} (mean); the load "
             f"needs {np.mean(need):.2f} at 100%, {np.mean(need) / START_UTILIZATION:.2f} at "
             f"{START_UTILIZATION:.0%} (peak {np.max(need):.2f} at 100%)", "main ticks by reason:"]
    kinds = collections.Counter(reason_kind(d.reason) for _, d in pol.decisions if not d.fast)
    lines += [f"  {n:5d}  {k}" for k, n in kinds.most_common()]
    lines.append(f"fast-path scale-ups: {sum(1 for _, d in pol.decisions if d.fast)}")
    lines.append("actions (REVERSAL: the opposite direction of the action before):")
    lines += action_lines(acts)
    lines.append("latency capacity moves and probes:")
    for t, d in pol.decisions:
        for note in d.notes:
            if "latency capacity" in note or "did not help" in note:
                lines.append(f"  t={t:6.0f}s  {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.autoscaling.explain", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace", help="SPLIT/NAME of a trace under bench/traces, e.g. test/noisy")
    ap.add_argument("--knob", type=float, default=0.3,
                    help="spec.autoscaling.headroom (default 0.3); latencyTargetMs is the benchmark's "
                    f"{OPERATOR_LATENCY_TARGET_MS}")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    split, _, name = args.trace.partition("/")
    if not name or not (TRACES / split / f"{name}.csv").exists():
        ap.error(f"trace: {args.trace!r} is not SPLIT/NAME of a file under bench/traces (e.g. test/noisy)")
    if not 0 <= args.knob <= 4:
        ap.error("--knob: headroom must be 0-4")
    print(explain(split, name, args.knob, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
