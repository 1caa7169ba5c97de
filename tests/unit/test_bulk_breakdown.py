"""The bulk class's GPU-hour breakdown (bench/autoscaling/bulk_breakdown.py) and the bulk pool under the
throughput objective, on the real simulator and tei-operator's live code path (a compressed ingest trace)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.autoscaling.bulk_breakdown import PARTS, run, table
from bench.autoscaling.bulk_pools import BULK_POOL, ObjectivePool
from bench.autoscaling.traces import load_trace

TRACE = Path(__file__).resolve().parents[2] / "bench" / "traces" / "test" / "ingest.csv"


@pytest.fixture(scope="module")
def runs():
    trace = load_trace(TRACE).scaled(0.5)
    latency = ObjectivePool("bulk", BULK_POOL.classes, True, BULK_POOL.max_batch_tokens, 1, BULK_POOL.max_replicas,
                            objective="Latency")
    # minReplicas 1 on both: scale to zero (BULK_POOL's) is tested in test_bulk_zero.py
    throughput = ObjectivePool("bulk", BULK_POOL.classes, True, BULK_POOL.max_batch_tokens, 1, BULK_POOL.max_replicas,
                               objective="Throughput")
    return run(trace, 1, latency), run(trace, 1, throughput)


def test_parts_add_up_to_the_bill_and_the_ratio_is_the_runs(runs):
    for bd in runs:
        billed = bd.result.gpu_hours * 3600
        assert bd.total() == pytest.approx(billed, rel=1e-6)
        assert bd.ratio() == pytest.approx(bd.result.cost_ratio, rel=0.02)
        assert all(bd.parts[w][p] >= -1.0 for w in bd.parts for p in PARTS)
        assert bd.parts["job"]["useful"] > 0 and bd.parts["rest"]["useful"] < 0.05 * bd.parts["job"]["useful"]
    assert "| bulk job (" in table(list(runs))


def test_throughput_objective_leaves_fewer_gpus_idle_per_token(runs):
    latency, throughput = runs
    assert throughput.objective == "Throughput" and latency.objective == "Latency"
    assert throughput.ratio("job") < latency.ratio("job")
    idle = lambda bd: bd.parts["job"]["idle"] / bd.tokens["job"]  # noqa: E731
    assert idle(throughput) < 0.5 * idle(latency)
    # and it lets replicas go once the job ends: the hours after it cost less than under Latency's 300 s window
    assert throughput.total("rest") < latency.total("rest")
