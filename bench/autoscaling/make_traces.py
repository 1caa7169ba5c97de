"""Write the benchmark's standard traces to bench/traces/*.csv (deterministic: run it again, get the same files).

    python -m bench.autoscaling.make_traces

The base load (1x) is 60 requests/s, about 1.2 A100s of BGE-M3 work with the default request mix.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .traces import COLUMNS, write_trace

TRACES_DIR = Path(__file__).resolve().parents[1] / "traces"
BASE = 60.0


def make_all(out: Path = TRACES_DIR) -> list[Path]:
    """Write every standard trace; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def w(name: str, desc: str, rows: list[tuple], extra: dict | None = None, columns=COLUMNS[:2]) -> None:
        p = out / f"{name}.csv"
        write_trace(p, name, desc, rows, extra, columns)
        written.append(p)

    w("step", "1x (60 req/s) for 10 min, 5x for 30 min, back to 1x for 20 min",
      [(0, BASE), (600, 5 * BASE), (2400, BASE), (3600, BASE)], {"step_at": 600})
    w("spike", "1x, a 10x spike for 60 s at 10 min, then 1x for 19 min",
      [(0, BASE), (600, 10 * BASE), (660, BASE), (1800, BASE)], {"step_at": 600})

    # A compressed day (24 h -> 80 min): quiet night, morning ramp, lunch dip, afternoon peak at 5x, evening decline.
    day = 4800.0
    rows = []
    for t in np.arange(0, day, 60.0):
        h = 24 * t / day
        load = 0.4 + 4.6 * math.exp(-((h - 11) / 2.5) ** 2) * 0.8 + 4.6 * math.exp(-((h - 15.5) / 2.5) ** 2)
        load -= 0.8 * math.exp(-((h - 13) / 0.6) ** 2)
        rows.append((t, round(BASE * min(load, 5.0), 1)))
    rows.append((day, rows[-1][1]))
    w("diurnal", "a day compressed to 80 min: night 0.4x, morning peak 3.7x, lunch dip, afternoon peak 5x", rows)

    # Bursty: the rate wanders every 30 s (lognormal AR(1) around 2.5x) and inter-arrivals have CV 3.
    rng = np.random.default_rng(2024)
    rows, x = [], 0.0
    for t in np.arange(0, 1800, 30.0):
        x = 0.8 * x + rng.normal(0, 0.25)
        rows.append((t, round(2.5 * BASE * math.exp(x), 1), 3.0))
    rows.append((1800.0, rows[-1][1], 3.0))
    w("noisy", "rate wandering around 2.5x every 30 s, bursty inter-arrivals (CV 3)", rows, None, COLUMNS[:3])

    rows = [(0.0, BASE)] + [(600.0 + 60 * i, BASE * (1 + 4 * (i + 1) / 20)) for i in range(20)] + [(2400.0, 5 * BASE)]
    w("outage_ramp", "1x for 10 min, ramp to 5x over 20 min, hold; Prometheus returns no series from 15 to 20 min",
      rows, {"step_at": 600, "metrics_outage": "900-1200"})

    w("quota", "the step trace with a GPU quota of 5 replicas, below the peak demand (about 7)",
      [(0, BASE), (600, 5 * BASE), (2400, BASE), (3600, BASE)], {"step_at": 600, "gpu_quota": 5})
    return written


if __name__ == "__main__":
    for p in make_all():
        print(p)
