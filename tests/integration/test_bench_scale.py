"""`python -m bench.scale --quick` (10 services, short windows) produces a sane table: the raw baseline ran, the
operator created every service's children and sent them through the API server, and the idle window saw the
operator's resyncs and autoscaler ticks. The benchmark starts its own control plane in its own network namespace
(~70 s); the figures themselves are the report's business (docs/benchmarks/scale.md), not this test's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def test_quick_scale_benchmark_measures_both_phases(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("bench.scale needs root: a private network namespace and port 80 for the pods' stand-in")
    out = tmp_path / "runs.json"
    proc = subprocess.run([sys.executable, "-m", "bench.scale", "--quick", "--no-report", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, f"bench.scale --quick failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    saved = json.loads(out.read_text())
    assert saved["code"].startswith("commit ")
    runs = saved["runs"]
    assert len(runs) == 1
    run = runs[0]
    assert run["n"] == 10 and run["children"] == 20
    assert 0 < run["raw_seconds"] < 240 and 0 < run["operator_seconds"] < 240  # both phases reached Ready
    # The operator applied every child at least once (10 Deployments + 10 Services, nobody else applies them).
    assert run["applies_per_child"] >= 1
    assert run["create"].get("APPLY deployments", 0) >= 1 and run["create"].get("APPLY services", 0) >= 1
    assert run["create_writes"] > 0
    # From the apply to the settle: at least the creating phase's writes (the span holds it), by the API server's
    # counts and by the operator's own client counter.
    assert run["settled_seconds"] > run["operator_seconds"]
    assert run["settled_writes"] >= run["create_writes"] - 0.5 and run["settled_client_writes"] >= 3
    # Idle: the window held autoscaler ticks that queried Prometheus, and the operator process was read.
    assert run["ticks"] >= 1 and 0 < run["tick_seconds"] < 30
    assert run["queries_per_tick"] >= 1
    assert run["rss_mib"] > 20 and run["cpu_seconds_per_minute"] > 0
    assert run["lease_requests_per_minute"] > 0  # the leader's renewals were seen in apiserver_request_total
    table = [line for line in proc.stdout.splitlines() if line.startswith("| 10 | 1 |")]
    assert table, f"no table row for N=10 in:\n{proc.stdout}"
