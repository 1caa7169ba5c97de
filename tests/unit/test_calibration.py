"""Calibration: the simulator agrees with the TEI emulator within 10% at three loads (issue #9).

The emulator runs TEI's router in real time behind real HTTP; the load generator drives it with Poisson arrivals;
the simulator replays the send times the load generator recorded, with the same profile (`cpu-small`) and request
sizes. Throughput, p50 and p99 must agree within 10% at 30%, 60% and 85% of the profile's capacity. The emulator's
HTTP round trip, measured in the same run on an emulator whose batches cost nothing, is added to the simulator's
latencies (bench/autoscaling/calibrate.py explains why) and must itself stay small, so it cannot hide a model
error. About 40 s: real time is the point of this test.

It runs the calibration as a user does (`python -m bench.autoscaling.calibrate`), in a process of its own: the
emulator's event loop then shares the interpreter with nothing else. In pytest's own process, a thread left running by
an earlier test holds the GIL for up to the switch interval (5 ms) at a time, which made the emulator's answers late
by a few milliseconds that are no part of either model (a clean-clone CI run: p50 at 30% off by -10.9%).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.autoscaling.calibrate import LOADS, load_points, table

pytestmark = [pytest.mark.calibration, pytest.mark.slow]  # ~40 s of real time: `make test` runs it, `make test-unit` not

ROOT = Path(__file__).resolve().parents[2]


def test_simulator_matches_the_emulator_at_three_loads(tmp_path):
    out = tmp_path / "points.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT)])}
    subprocess.run([sys.executable, "-m", "bench.autoscaling.calibrate", "--seconds", "10,10,15", "--seed", "0",
                    "--no-report", "--json", str(out)], cwd=ROOT, env=env, check=True, timeout=180,
                   stdout=subprocess.DEVNULL)
    points = load_points(out)
    report = "\n".join("  ".join(row) for row in table(points))
    assert [p.load for p in points] == list(LOADS)
    for p in points:
        assert p.http_s < 0.010, report  # the correction is a few ms, far below the latencies compared
        assert p.emulator.answered >= 50, report
        for measure, error in p.errors().items():
            assert abs(error) <= 0.10, f"{measure} at {p.load:.0%} off by {error:+.1%}\n{report}"
    # the loads are what they claim: latency grows with load on both sides
    assert points[0].emulator.p50 < points[1].emulator.p50 < points[2].emulator.p50
    assert points[0].simulator.p50 < points[1].simulator.p50 < points[2].simulator.p50
