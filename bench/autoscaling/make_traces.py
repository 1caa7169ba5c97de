"""Write the benchmark's traces to bench/traces/train/ and bench/traces/test/ (deterministic: run it again, get
the same files).

    python -m bench.autoscaling.make_traces

Policies are tuned on train/ only; the report shows test/ separately. The two sets differ in shape and in the
random seeds of their noise: step sizes and timing, spike length (the test spike is shorter than a model load),
noise seed and level, the periodic load's cycle. Outage, quota, ingest and the 24 h diurnal are test-only shapes.

Rates are in queries/s of the online pool. `Q` is the query rate one A100 replica of BGE-M3 with the online pool's
maxBatchTokens serves at about 60% of its capacity (see bench/autoscaling/scenario.py), so "4 Q" needs about 4
replicas. Time axes are real seconds; nothing is compressed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .traces import write_trace

TRACES_DIR = Path(__file__).resolve().parents[1] / "traces"
Q = 100.0
"""Queries/s per replica-unit of load (one replica at ~60% of its capacity on the online pool's profile)."""
DOC = 1.3
"""Document requests/s per replica-unit (1-32 inputs x 128-512 tokens: ~5,300 tokens each)."""


def _r(x: float) -> float:
    return round(x, 2)


def step_rows(lo: float, hi: float, at: float, length: float, end: float) -> list[dict]:
    return [{"time_s": 0, "query_rps": _r(lo * Q)}, {"time_s": at, "query_rps": _r(hi * Q)},
            {"time_s": at + length, "query_rps": _r(lo * Q)}, {"time_s": end, "query_rps": _r(lo * Q)}]


def noisy_rows(seed: int, level: float, end: float, every: float = 30.0, sigma: float = 0.12) -> list[dict]:
    """A stationary rate wandering around `level` (lognormal AR(1) every 30 s, +-25% typical), bursty arrivals."""
    rng = np.random.default_rng(seed)
    rows, x = [], 0.0
    for t in np.arange(0, end, every):
        x = 0.7 * x + rng.normal(0, sigma)
        rows.append({"time_s": t, "query_rps": _r(level * Q * math.exp(x)), "cv": 2.0})
    rows.append({"time_s": end, "query_rps": rows[-1]["query_rps"], "cv": 2.0})
    return rows


def periodic_rows(lo: float, hi: float, cycle: float, end: float, every: float = 15.0) -> list[dict]:
    """A sawtooth: from lo up to hi over the cycle, then back down at once."""
    rows = [{"time_s": t, "query_rps": _r((lo + (hi - lo) * ((t % cycle) / cycle)) * Q)}
            for t in np.arange(0, end, every)]
    rows.append({"time_s": end, "query_rps": rows[-1]["query_rps"]})
    return rows


def ramp_rows(points: list[tuple[float, float]], every: float = 30.0) -> list[dict]:
    """Linear interpolation between (time, level) points, sampled every 30 s."""
    ts, ls = zip(*points)
    grid = np.arange(0, ts[-1], every)
    rows = [{"time_s": t, "query_rps": _r(float(np.interp(t, ts, ls)) * Q)} for t in grid]
    rows.append({"time_s": ts[-1], "query_rps": _r(ls[-1] * Q)})
    return rows


def diurnal_level(h: np.ndarray) -> np.ndarray:
    """Online load over a day (hours 0-24): night 0.4, morning peak ~3.5, lunch dip, afternoon peak 4.5."""
    load = 0.4 + 3.1 * np.exp(-((h - 10.5) / 2.2) ** 2) + 4.1 * np.exp(-((h - 15.5) / 2.4) ** 2)
    return np.minimum(load - 0.7 * np.exp(-((h - 13) / 0.6) ** 2), 4.5)


def make_all(out: Path = TRACES_DIR) -> list[Path]:
    """Write every trace; return their paths."""
    written: list[Path] = []

    def w(split: str, name: str, desc: str, rows: list[dict], extra: dict | None = None) -> None:
        p = out / split / f"{name}.csv"
        write_trace(p, name, desc, rows, {"set": split, **(extra or {})})
        written.append(p)

    # ---- train: what policies (and the baselines' targets) are tuned on
    w("train", "step", "queries 1 Q for 10 min, 4 Q for 20 min, back to 1 Q for 10 min (Q = 100 queries/s)",
      step_rows(1, 4, 600, 1200, 2400), {"step_at": 600, "step_seconds": 1200})
    w("train", "spike", "1.5 Q, a 5x spike for 150 s (longer than a model load) at 10 min, then 1.5 Q",
      step_rows(1.5, 7.5, 600, 150, 1800), {"step_at": 600, "step_seconds": 150})
    w("train", "noisy", "a stationary rate around 3 Q, wandering every 30 s (seed 11), bursty arrivals (CV 2)",
      noisy_rows(11, 3.0, 1800))
    w("train", "periodic", "a 6-minute sawtooth from 1 Q to 4 Q: shorter than a model load + scale-down window",
      periodic_rows(1, 4, 360, 2160))
    w("train", "ramp", "a 1-hour morning: 0.5 Q rising to 4 Q over 30 min, holding 15 min, easing to 2.5 Q",
      ramp_rows([(0, 0.5), (300, 0.5), (2100, 4.0), (3000, 4.0), (3600, 2.5)]))

    # ---- test: other shapes and seeds, reported separately
    w("test", "step", "queries 1.5 Q for 10 min, 3 Q for 7 min, 5 Q for 10 min, back to 1.5 Q for 8 min (two steps)",
      [{"time_s": 0, "query_rps": _r(1.5 * Q)}, {"time_s": 600, "query_rps": _r(3 * Q)},
       {"time_s": 1020, "query_rps": _r(5 * Q)}, {"time_s": 1620, "query_rps": _r(1.5 * Q)},
       {"time_s": 2100, "query_rps": _r(1.5 * Q)}], {"step_at": 600, "step_seconds": 1020})
    w("test", "spike", "1 Q, a 6x spike for 25 s at 8 min (shorter than the fastest model load), then 1 Q",
      step_rows(1, 6, 480, 25, 1200), {"step_at": 480, "step_seconds": 25})
    w("test", "noisy", "a stationary rate around 2.5 Q, wandering every 30 s (seed 29), bursty arrivals (CV 2)",
      noisy_rows(29, 2.5, 1500))
    w("test", "periodic", "a 4-minute sawtooth from 0.5 Q to 3.5 Q: shorter than a model load + scale-down window",
      periodic_rows(0.5, 3.5, 240, 1440))
    w("test", "outage", "1 Q rising to 4 Q from 8 to 23 min, then falling to 2 Q; metrics are gone from 10 to 20 "
      "min (longer than HPA's 5-minute scale-down window)",
      ramp_rows([(0, 1.0), (480, 1.0), (1380, 4.0), (1800, 2.0), (2100, 2.0)]),
      {"step_at": 480, "metrics_outage": "600-1200"})
    w("test", "quota", "the train step's shape (1 Q -> 4.5 Q) with a GPU quota of 4 replicas, below the peak's need",
      step_rows(1, 4.5, 480, 900, 1800), {"step_at": 480, "step_seconds": 900, "gpu_quota": 4})

    # The 24 h day: online queries follow the diurnal curve; interactive documents follow it too; a nightly bulk
    # ingestion job (16 closed-loop workers, 00:00-06:00) fills the night. Queries run at half the short traces'
    # scale (Q/2 per unit of load) to keep 24 h of them affordable to simulate.
    rows = []
    for t in np.arange(0, 86400, 300.0):
        h = t / 3600
        lvl = float(diurnal_level(np.array([h]))[0])
        rows.append({"time_s": t, "query_rps": _r(lvl * Q * 0.5), "document_rps": _r(lvl * DOC),
                     "bulk_workers": 16 if h < 6 else 0})
    rows.append(dict(rows[-1], time_s=86400))
    w("test", "diurnal", "24 h (not compressed): queries and documents follow a day (night 0.4, peaks 3.5 and 4.5 "
      "at 10:30 and 15:30; queries at Q/2 per unit), a bulk job of 16 workers 00:00-06:00", rows,
      {"bulk_job_tokens": 1.0e9, "bulk_deadline_s": 21600})
    # Half an hour of mixed load: steady queries and documents, a bulk job from 5 to 20 min (mixed vs split pools).
    rows = [{"time_s": 0, "query_rps": _r(1.5 * Q), "document_rps": DOC, "bulk_workers": 0},
            {"time_s": 300, "query_rps": _r(1.5 * Q), "document_rps": DOC, "bulk_workers": 8},
            {"time_s": 1200, "query_rps": _r(1.5 * Q), "document_rps": DOC, "bulk_workers": 0},
            {"time_s": 1800, "query_rps": _r(1.5 * Q), "document_rps": DOC, "bulk_workers": 0}]
    w("test", "ingest", "30 min: 1.5 Q queries and 1 unit of documents throughout, a bulk job of 8 workers from 5 to "
      "20 min", rows, {"bulk_job_tokens": 3.0e7, "bulk_deadline_s": 1200})
    return written


if __name__ == "__main__":
    for p in make_all():
        print(p)
