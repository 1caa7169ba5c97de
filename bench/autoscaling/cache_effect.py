"""The managed model cache's effect on scale-up, measured on the autoscaling simulator.

Runs a trace with a load step (default: the test set's `step`) under the same autoscaling policy three times per
seed, with the same arrivals:
- **emptyDir** (spec.cache's default): every new pod downloads and loads the model, the profile's cold start
  (uniform in [cold_min, cold_max]), whichever node it lands on (the emptyDir is new with every pod);
- **bench default**: what docs/benchmarks/autoscaling.md assumes: cold on a GPU new to the model, the profile's
  warm time on one that held it before (image and files still on the node);
- **managed cache** (spec.cache.managed): every pod only loads the model from the filled claim, the profile's
  warm time, wherever it lands.
and prints, per mode, the median over seeds of the requests refused (429/503), the query p99 latency and SLO
attainment, the replica-seconds that were wanted but still loading after the step, and GPU-hours, with the ratio
managed cache / emptyDir.

    python -m bench.autoscaling.cache_effect [--trace step] [--family operator] [--seeds 3] [--quick]

docs/model-cache.md quotes the default run. `--quick` compresses the trace's time axis (tests only).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classes import QUERY
from .experiment import make_policy
from .run import ONLINE, load_bench_profile, simulate
from .traces import load_trace
from .workload import make_workload

TRACES = Path(__file__).resolve().parent.parent / "traces"
MODES = ("emptyDir", "bench default", "managed cache")


@dataclass(frozen=True)
class Run:
    mode: str
    seed: int
    refused: int
    p99_ms: float
    attainment: float
    loading_replica_s: float
    gpu_hours: float


def managed_profile(profile):
    """The profile with every start a warm one: the model is read from the filled claim, never downloaded."""
    from tei_operator.emulator.batching import LoadSeconds

    warm = profile.load_seconds.warm
    return profile.with_limits(load_seconds=LoadSeconds(cold_min=warm, cold_max=warm, warm=warm))


@contextlib.contextmanager
def every_start_cold():
    """Runs of `run.simulate` inside draw every pod's load as a cold one (the simulator's warm_cache=False): with a
    per-pod emptyDir a pod on a node that ran the model before downloads it again. run.simulate builds its
    Simulator from the simulator module at call time, so a subclass put there for the duration is what it builds."""
    from . import simulator as module

    original = module.Simulator

    class ColdSimulator(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "warm_cache": False})

    module.Simulator = ColdSimulator
    try:
        yield
    finally:
        module.Simulator = original


def loading_replica_seconds(result, step_at: float) -> float:
    """Replica-seconds after the step during which a wanted replica was not Ready yet (its model loading, or its
    pod waiting), from the 10 s timeline."""
    tl = result.timeline
    t, desired, ready = (np.asarray(tl[k]) for k in ("t", "desired", "ready"))
    after = t >= step_at
    return float(np.sum(np.clip(desired[after] - ready[after], 0, None)) * 10.0)


def run(trace_name: str, family: str, knob: float | None, seeds: list[int], quick: bool) -> list[Run]:
    trace = load_trace(TRACES / "test" / f"{trace_name}.csv")
    if quick:
        trace = trace.scaled(0.2)
    base = load_bench_profile()
    profiles = {MODES[0]: base, MODES[1]: base, MODES[2]: managed_profile(base)}
    out = []
    for seed in seeds:
        workload = make_workload(trace, seed)
        for mode, profile in profiles.items():
            policy = make_policy(family, knob, ONLINE, trace, profile)
            with every_start_cold() if mode == MODES[0] else contextlib.nullcontext():
                r = simulate(policy, trace, workload, ONLINE, profile, seed, "test", family, keep_timeline=True)
            q = r.classes[QUERY]
            out.append(Run(mode, seed, q.failed, q.p99 * 1000.0, q.attainment,
                           loading_replica_seconds(r, trace.step_at or 0.0), r.gpu_hours))
    return out


def table(runs: list[Run]) -> str:
    def med(mode: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in runs if r.mode == mode)

    rows = [("refused requests (429/503)", "refused", "{:.0f}"),
            ("query p99 (ms; inf: over 1% unanswered)", "p99_ms", "{:.0f}"),
            ("queries within SLO", "attainment", "{:.4f}"),
            ("replica-s loading after the step", "loading_replica_s", "{:.0f}"), ("GPU-hours", "gpu_hours", "{:.2f}")]
    lines = [f"| metric (median of {len({r.seed for r in runs})} seeds) | " + " | ".join(MODES)
             + " | managed cache / emptyDir |", "|---|" + "---:|" * (len(MODES) + 1)]
    for label, field, fmt in rows:
        values = [med(mode, field) for mode in MODES]
        a, b = values[0], values[-1]
        ratio = "n/a" if a == 0 or not (math.isfinite(a) and math.isfinite(b)) else f"{b / a:.2f}"
        lines.append(f"| {label} | " + " | ".join(fmt.format(v) for v in values) + f" | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.autoscaling.cache_effect",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--trace", default="step", help="a trace of bench/traces/test (default step)")
    parser.add_argument("--family", default="operator", help="autoscaling policy family (default operator)")
    parser.add_argument("--knob", type=float, default=None,
                        help="the family's knob (operator: spec.autoscaling.headroom, default 0.3 at latencyTargetMs "
                        "100; required for the other families)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--quick", action="store_true", help="time axis compressed 5x (tests only)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds: must be at least 1")
    if args.knob is None:
        if args.family != "operator":
            parser.error(f"--knob: required for --family {args.family} (its knob in bench/autoscaling/experiment.py)")
        args.knob = 0.3
    runs = run(args.trace, args.family, args.knob, list(range(args.seeds)), args.quick)
    base = load_bench_profile()
    ls = base.load_seconds
    print(f"trace {args.trace}{' (quick)' if args.quick else ''}, policy {args.family} (knob {args.knob:g}), pool "
          f"{ONLINE.name}, profile {base.name}: emptyDir = every start cold ({ls.cold_min:.0f}-{ls.cold_max:.0f} s); "
          f"bench default = cold on a GPU new to the model, {ls.warm:.0f} s on one that held it; managed cache = "
          f"{ls.warm:.0f} s load for every pod")
    print(table(runs))
    bad = [r for r in runs if math.isnan(r.p99_ms)]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
