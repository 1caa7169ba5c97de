"""bench/autoscaling/cache_effect.py in quick mode: the managed cache's runs load every pod warm, so replicas
wanted after the step wait less for a model load than with a per-pod download (emptyDir)."""

from __future__ import annotations

import pytest

from bench.autoscaling.cache_effect import MODES, managed_profile, run, table
from bench.autoscaling.run import load_bench_profile


def test_managed_profile_makes_every_start_warm():
    base = load_bench_profile()
    ls = managed_profile(base).load_seconds
    assert ls.cold_min == ls.cold_max == ls.warm == base.load_seconds.warm < base.load_seconds.cold_min


@pytest.mark.slow  # the step trace at full length, three storage modes: ~7 s
def test_step_run_shows_less_loading_with_the_managed_cache():
    # full length: compressed 5x (--quick) the trace's load step is shorter than a cold load, and which replicas
    # the policy asks for while loads finish depends on each load's timing, so the modes can swap places
    runs = run("step", "operator", 0.3, [0], quick=False)
    by_mode = {r.mode: r for r in runs}
    assert set(by_mode) == set(MODES)
    assert by_mode["managed cache"].loading_replica_s < by_mode["emptyDir"].loading_replica_s
    assert by_mode["managed cache"].loading_replica_s <= by_mode["bench default"].loading_replica_s
    text = table(runs)
    assert "| refused requests (429/503) |" in text and "managed cache / emptyDir" in text
