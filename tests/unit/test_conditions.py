"""The one conditions module shared by the controller and the autoscaler."""

import pytest

from tei_operator.conditions import (condition_differs, condition_of, find_condition, make_condition, merge_condition,
                                     merge_conditions, remove_condition)


def test_make_condition_takes_a_truth_or_a_kubernetes_status_and_refuses_anything_else():
    assert make_condition("Ready", True, "AllReplicasReady", "2 of 2", 3) == {
        "type": "Ready", "status": "True", "reason": "AllReplicasReady", "message": "2 of 2", "observedGeneration": 3}
    assert make_condition("Ready", 0, "R", "m", 1)["status"] == "False"
    assert make_condition("ModelMismatch", "Unknown", "R", "m", 1)["status"] == "Unknown"
    with pytest.raises(ValueError, match="condition Ready: status must be True, False or Unknown, got 'yes'"):
        make_condition("Ready", "yes", "R", "m", 1)


def test_merge_keeps_the_transition_time_while_the_status_holds_and_other_writers_conditions_in_place():
    stored = [{"type": "ScalingLimited", "status": "True", "reason": "MaxReplicas", "lastTransitionTime": "t0"},
              {"type": "Ready", "status": "False", "reason": "WaitingForReady", "lastTransitionTime": "t0"},
              {"type": "Stalled", "status": "False", "reason": "NotStalled", "lastTransitionTime": "t0"}]
    ready = make_condition("Ready", True, "AllReplicasReady", "ok", 2)
    degraded = make_condition("Degraded", False, "Healthy", "ok", 2)
    merged = merge_conditions(stored, [ready, degraded], "t1", owned=("Ready", "Degraded", "Stalled"))
    assert [c["type"] for c in merged] == ["ScalingLimited", "Ready", "Degraded"]  # Stalled no longer desired
    assert merged[0] == stored[0] and merged[1]["lastTransitionTime"] == "t1"  # Ready flipped
    assert merged[2]["lastTransitionTime"] == "t1"  # new
    again = merge_conditions(merged, [{**ready, "message": "still ok"}], "t2")
    assert find_condition(again, "Ready")["lastTransitionTime"] == "t1" and len(again) == 3

    one = merge_condition(stored, {**stored[0], "message": "held"}, "t3")
    assert one[0]["lastTransitionTime"] == "t0" and one[1:] == stored[1:]
    assert remove_condition(one, "ScalingLimited") == stored[1:]


def test_lookups_and_differs():
    status = {"conditions": [make_condition("Ready", True, "R", "m", 1)]}
    assert condition_of(status, "Ready")["reason"] == "R" and condition_of(None, "Ready") is None
    assert find_condition(None, "Ready") is None
    stored = {**status["conditions"][0], "lastTransitionTime": "t0"}
    assert not condition_differs(stored, make_condition("Ready", True, "R", "m", 1))
    assert condition_differs(stored, make_condition("Ready", True, "R", "m", 2))
    assert condition_differs(None, make_condition("Ready", True, "R", "m", 1))
