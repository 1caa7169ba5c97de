"""The fault suite in the test run: a quick subset at small sizes (marked `cluster`, ~1.5 min with its control
plane), and every scenario at full size (marked `faults`, run only with `-m faults`; `make test-faults` runs the
same through `python -m tests.faults`, which also writes docs/reliability.md).

Each scenario returns its counts and the checks made on them (tests/faults/scenarios.py); a failed check fails the
test with the counts, so a regression shows what was counted."""

from __future__ import annotations

import pytest

from .suite import SCENARIOS

# `slow`: each scenario takes more than 10 s (main's convention: `-m "not slow"` / `make test-fast` leave them out).
pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(900)]

QUICK = ("operator-sigkill", "kube-apiserver-restart", "crash-loop", "rbac-missing")


def run(env, name: str, full: bool):
    function, full_size, quick_size = SCENARIOS[name]
    result = function(env, **(full_size if full else quick_size))
    assert result.checks, f"{name} made no checks"
    assert result.passed, f"{name}: failed {result.failures()}; counts {result.counts}; notes {result.notes}"
    return result


@pytest.mark.parametrize("name", QUICK)
def test_quick(faults_env, name):
    run(faults_env, name, full=False)


@pytest.mark.faults
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_full(request, faults_env, name):
    expression = request.config.getoption("-m") or ""
    if "faults" not in expression or "not faults" in expression:
        pytest.skip("the full fault suite runs with `-m faults` or `make test-faults`")
    run(faults_env, name, full=True)
