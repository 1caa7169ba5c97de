"""bench/autoscaling/explain.py: the reason kinds it counts, and its CLI's errors (the run itself is the benchmark's)."""

from __future__ import annotations

import pytest

from bench.autoscaling.explain import main, reason_kind


def test_reason_kind_masks_numbers_and_names_what_held_the_count():
    r = ("Demand load 0.58x of target: queue 0.16/replica < target 16, demand 757 tokens/s/replica < 1298 on 9 ready; "
         "no scale-down: 1.2% of requests took longer than 70 ms")
    assert reason_kind(r) == "Demand load #x of target [no scale-down while late]"
    r = "Demand load 0.80x of target: ...; scale-down stabilized at 5: highest recommendation of the last 300s"
    assert reason_kind(r) == "Demand load #x of target [scale-down window]"
    assert reason_kind("Load 1.02x of target within tolerance 0.10: ...") == "Load #x of target within tolerance #"


def test_cli_names_the_bad_argument(capsys):
    with pytest.raises(SystemExit):
        main(["noisy"])
    assert "SPLIT/NAME" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["test/noisy", "--knob", "5"])
    assert "--knob" in capsys.readouterr().err


def test_action_lines_mark_each_change_of_direction_as_run_counts_it():
    from bench.autoscaling.explain import action_lines

    lines = action_lines([(22.0, 4, 5, "Demand up"), (157.0, 5, 6, "Demand up"), (1027.0, 6, 5, "Cancelled"),
                          (1100.0, 5, 4, "Down"), (1200.0, 4, 6, "Fast path")])
    assert [("REVERSAL" in line) for line in lines] == [False, False, True, False, True]
    assert lines[2] == "  t=  1027s   6 ->  5  REVERSAL Cancelled"
