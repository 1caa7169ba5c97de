"""bench/autoscaling/tail_curve.py and operator_runs.py: the growth of the late share with load that the latency
capacity's probe reads (policy.LATENCY_TAIL_ELASTICITY) is the simulator's, measured, not assumed."""

from __future__ import annotations

import math

from bench.autoscaling.tail_curve import late_share, main
from tei_operator.autoscaling.policy import LATENCY_TAIL_ELASTICITY


def test_the_late_share_grows_with_load_as_the_probe_assumes():
    # Bursty arrivals (CV 2) on 4 static query replicas, below the SLO capacity (~70 queries/s each): 60 -> 70.
    lo, hi = late_share(60, 2, seconds=600), late_share(70, 2, seconds=600)
    assert 0 < lo < hi < 0.01
    k = math.log(hi / lo) / math.log(70 / 60)
    # The probe's exponent is that of bursty arrivals, within a third of it (Poisson's grows faster: 6.6-9).
    assert abs(k - LATENCY_TAIL_ELASTICITY) < LATENCY_TAIL_ELASTICITY / 3, k


def test_bad_arguments_name_the_flag(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["--loads", "50,x"])
    assert "--loads" in capsys.readouterr().err


def test_operator_runs_refuses_what_it_cannot_run(capsys):
    import pytest

    from bench.autoscaling.operator_runs import main as runs

    for argv, flag in ((["--split", "validation"], "--split"), (["--knobs", "5"], "--knobs"),
                       (["--split", "test", "--traces", "nosuch"], "--traces")):
        with pytest.raises(SystemExit):
            runs(argv)
        assert flag in capsys.readouterr().err
