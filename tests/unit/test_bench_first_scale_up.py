"""bench/first_scale_up.py's figures and report from the runs the e2e test records (the measuring needs the control
plane: `python -m bench.first_scale_up` runs tests/e2e/test_fast_scale_up.py, which CI runs once)."""

from __future__ import annotations

import json

import pytest

from bench.first_scale_up import GOAL_SECONDS, Run, figures, read_runs, report, table

FAST = "Scaled up from 1 to 3: Fast path (queue load 3.10x of target: queue 50/replica > target 16 on 1 ready)"


def runs(*seconds: float, event: str = FAST) -> list[Run]:
    return [Run(i + 1, 0.5 + i / 10, s, event) for i, s in enumerate(seconds)]


def test_the_runs_are_read_from_the_test_s_json_lines_in_run_order(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text("\n".join(json.dumps({"run": n, "step_to_seen_s": 0.4, "seen_to_scale_up_s": s, "event": FAST})
                              for n, s in ((2, 3.1), (1, 1.7))) + "\n")
    got = read_runs(path)
    assert [(r.run, r.seen_to_scale_up_s) for r in got] == [(1, 1.7), (2, 3.1)]
    assert read_runs(tmp_path / "absent.jsonl") == []


def test_figures_are_the_median_and_the_slowest_run():
    fig = figures(runs(2.4, 1.1, 3.9, 2.0, 2.2), 5, "python -m bench.first_scale_up")
    assert (fig["runs"], fig["median_s"], fig["max_s"], fig["fast_path_runs"]) == (5, 2.2, 3.9, 5)
    assert fig["met"] is True


def test_one_run_over_the_goal_is_not_met():
    fig = figures(runs(1.0, GOAL_SECONDS + 0.1, 1.2), 3, "c")
    assert fig["max_s"] == pytest.approx(GOAL_SECONDS + 0.1) and fig["met"] is False
    assert "**NOT met**" in report(runs(1.0, GOAL_SECONDS + 0.1, 1.2), fig, 60.0)


def test_a_run_that_failed_before_its_measurement_is_not_met_and_the_report_says_so():
    fig = figures(runs(1.0, 1.2), 3, "c")
    assert fig["met"] is False
    assert "1 of the 3 runs failed before their scale-up was measured" in report(runs(1.0, 1.2), fig, 60.0)


def test_nothing_measured_is_an_error_not_a_report():
    with pytest.raises(ValueError, match="no run was measured"):
        figures([], 5, "c")


def test_table_says_which_path_scaled_and_ends_with_the_medians():
    lines = table(runs(2.0, 4.0, event="Scaled up from 1 to 2: Queue load 2.00x of target")).splitlines()
    assert len(lines) == 2 + 2 + 1
    assert lines[2].startswith("| 1 | 0.50 | 2.00 | main tick |")
    assert lines[-1].startswith("| **median** | 0.55 | 3.00 |")
    assert "median" not in table(runs(2.0))


def test_the_autoscaling_report_reads_the_figures_written_beside_the_page(tmp_path):
    from bench.autoscaling.report import FIRST_SCALE_UP_PAGE, first_scale_up_figures

    assert first_scale_up_figures(tmp_path) is None  # not run: the goal row says NOT MEASURED
    fig = figures(runs(1.5, 2.5), 2, "python -m bench.first_scale_up --runs 2")
    path = tmp_path / FIRST_SCALE_UP_PAGE.replace(".md", ".json")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(fig))
    assert first_scale_up_figures(tmp_path) == fig
