"""Conditions from Deployment and pod fixtures (plain dicts, shaped like what the API server returns)."""

from __future__ import annotations

import copy

import pytest

from tei_operator.controller import status as st
from tei_operator.controller.events import changed_fields, describe_apply

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:05:00Z"

SCHEDULER_MESSAGE = (
    "0/5 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
    "4 Insufficient nvidia.com/gpu. preemption: 0/5 nodes are available: 5 No preemption victims found."
)
TERMINATION_MESSAGE = "Error: Could not download model artifacts: repository BAAI/no-such-model not found"


def deployment(*, replicas=2, generation=3, observed=3, total=2, updated=2, ready=2, conditions=()):
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "bge-m3", "namespace": "search", "generation": generation, "resourceVersion": "10"},
        "spec": {"replicas": replicas},
        "status": {"observedGeneration": observed, "replicas": total, "updatedReplicas": updated,
                   "readyReplicas": ready, "availableReplicas": ready, "conditions": list(conditions)},
    }


def pod(name="bge-m3-7d9f-abcde", *, phase="Running", conditions=(), containers=(), deleting=False):
    meta = {"name": name, "namespace": "search"}
    if deleting:
        meta["deletionTimestamp"] = T0
    return {"metadata": meta, "status": {"phase": phase, "conditions": list(conditions),
                                         "containerStatuses": list(containers)}}


def unschedulable_pod(name="bge-m3-7d9f-pend1"):
    return pod(name, phase="Pending", conditions=[{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": SCHEDULER_MESSAGE}])


def crashloop_pod(name="bge-m3-7d9f-crash"):
    return pod(name, containers=[{
        "name": "tei", "ready": False, "restartCount": 4,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s restarting failed container"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": TERMINATION_MESSAGE}},
    }])


def by_type(conditions):
    return {c["type"]: c for c in conditions}


def test_ready_when_all_replicas_ready_and_generation_observed():
    conds = by_type(st.desired_conditions(generation=5, deployment=deployment(), pods=[pod()]))
    assert conds["Ready"]["status"] == "True"
    assert conds["Ready"]["reason"] == "AllReplicasReady"
    assert "2 of 2" in conds["Ready"]["message"]
    assert conds["Progressing"]["status"] == "False"
    assert conds["Progressing"]["reason"] == "RolloutComplete"
    assert conds["Degraded"]["status"] == "False"
    assert all(c["observedGeneration"] == 5 for c in conds.values())


def test_not_ready_while_deployment_has_not_observed_its_generation():
    conds = by_type(st.desired_conditions(generation=5, deployment=deployment(generation=4, observed=3)))
    assert conds["Ready"]["status"] == "False"
    assert conds["Progressing"]["status"] == "True"
    assert conds["Progressing"]["reason"] == "RollingOut"
    assert "generation 4" in conds["Progressing"]["message"]


@pytest.mark.parametrize("kwargs,reason", [
    ({"replicas": 3, "total": 3, "updated": 1, "ready": 3}, "RollingOut"),        # new template on 1 of 3
    ({"replicas": 2, "total": 3, "updated": 2, "ready": 2}, "RollingOut"),        # an old pod still terminating
    ({"replicas": 3, "total": 3, "updated": 3, "ready": 1}, "WaitingForReady"),   # scaled up, pods loading
])
def test_progressing_during_a_rollout(kwargs, reason):
    conds = by_type(st.desired_conditions(generation=1, deployment=deployment(**kwargs)))
    assert conds["Ready"]["status"] == "False"
    assert conds["Progressing"] == {**conds["Progressing"], "status": "True", "reason": reason}
    assert conds["Degraded"]["status"] == "False"


def test_missing_deployment_is_not_ready():
    conds = by_type(st.desired_conditions(generation=1, deployment=None))
    assert conds["Ready"]["status"] == "False"
    assert conds["Ready"]["reason"] == "DeploymentMissing"


def test_scaled_to_zero_is_ready():
    conds = by_type(st.desired_conditions(generation=1, deployment=deployment(replicas=0, total=0, updated=0, ready=0)))
    assert conds["Ready"]["status"] == "True"
    assert conds["Ready"]["reason"] == "ScaledToZero"


def test_unschedulable_pod_gives_degraded_with_the_scheduler_message():
    dep = deployment(replicas=2, total=2, updated=2, ready=1)
    conds = by_type(st.desired_conditions(generation=2, deployment=dep, pods=[pod(), unschedulable_pod()]))
    assert conds["Degraded"]["status"] == "True"
    assert conds["Degraded"]["reason"] == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in conds["Degraded"]["message"]
    assert "bge-m3-7d9f-pend1" in conds["Degraded"]["message"]
    assert conds["Ready"]["status"] == "False"
    assert conds["Ready"]["reason"] == "Unschedulable"


def test_several_unschedulable_pods_are_counted():
    dep = deployment(replicas=3, total=3, updated=3, ready=0)
    problem = st.diagnose_pods([unschedulable_pod("a"), unschedulable_pod("b"), unschedulable_pod("c")])
    assert problem is not None and problem.message.startswith("3 pods (e.g. a) cannot be scheduled: 0/5 nodes")
    conds = by_type(st.desired_conditions(generation=1, deployment=dep,
                                          pods=[unschedulable_pod("a"), unschedulable_pod("b")]))
    assert conds["Degraded"]["reason"] == "Unschedulable"


def test_crashloop_gives_degraded_with_the_termination_message():
    dep = deployment(replicas=1, total=1, updated=1, ready=0)
    conds = by_type(st.desired_conditions(generation=1, deployment=dep, pods=[crashloop_pod()]))
    degraded = conds["Degraded"]
    assert degraded["status"] == "True"
    assert degraded["reason"] == "CrashLoopBackOff"
    assert TERMINATION_MESSAGE in degraded["message"]
    assert "exit code 1" in degraded["message"] and "4 restarts" in degraded["message"]
    assert "container tei" in degraded["message"].lower()


def test_crashloop_wins_over_unschedulable():
    problem = st.diagnose_pods([unschedulable_pod(), crashloop_pod()])
    assert problem is not None and problem.reason == "CrashLoopBackOff"


def test_crashloop_without_termination_message_uses_the_waiting_message():
    p = crashloop_pod()
    p["status"]["containerStatuses"][0]["lastState"] = {}
    problem = st.diagnose_pods([p])
    assert problem is not None and "back-off 1m20s" in problem.message


def test_image_pull_failure_is_reported():
    p = pod(containers=[{"name": "tei", "restartCount": 0, "state": {"waiting": {
        "reason": "ImagePullBackOff", "message": 'Back-off pulling image "ghcr.io/x:nope"'}}}])
    problem = st.diagnose_pods([p])
    assert problem is not None and problem.reason == "ImagePullBackOff" and "ghcr.io/x:nope" in problem.message


def test_terminating_pods_are_ignored():
    p = crashloop_pod()
    p["metadata"]["deletionTimestamp"] = T0
    assert st.diagnose_pods([p]) is None


def test_pod_problems_do_not_unset_ready_when_the_deployment_is_ready():
    # e.g. a surge pod of a rollout that was since rolled back: the service still serves.
    conds = by_type(st.desired_conditions(generation=1, deployment=deployment(), pods=[unschedulable_pod()]))
    assert conds["Ready"]["status"] == "True"
    assert conds["Degraded"]["status"] == "False"


def test_progress_deadline_exceeded_is_degraded():
    dep = deployment(replicas=2, total=2, updated=2, ready=1, conditions=[{
        "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "bge-m3-7d9f" has timed out progressing.'}])
    conds = by_type(st.desired_conditions(generation=1, deployment=dep, pods=[pod()]))
    assert conds["Degraded"]["reason"] == "ProgressDeadlineExceeded"
    assert "timed out progressing" in conds["Degraded"]["message"]


def test_invalid_spec():
    conds = by_type(st.desired_conditions(generation=7, deployment=deployment(),
                                          invalid_spec="spec.gpu.count: must be >= 1"))
    assert conds["Ready"] == {**conds["Ready"], "status": "False", "reason": "InvalidSpec"}
    assert conds["Degraded"]["status"] == "True"
    assert conds["Degraded"]["reason"] == "InvalidSpec"
    assert "spec.gpu.count: must be >= 1" in conds["Degraded"]["message"]
    assert conds["Progressing"]["status"] == "False"


def test_last_transition_time_kept_when_status_unchanged_and_moved_when_it_flips():
    first = st.merge_conditions([], st.desired_conditions(generation=1, deployment=deployment(ready=1)), T0)
    assert by_type(first)["Ready"]["lastTransitionTime"] == T0
    # Same status, new message and generation: the transition time stays.
    second = st.merge_conditions(first, st.desired_conditions(generation=2, deployment=deployment(
        replicas=3, total=3, updated=3, ready=2)), T1)
    assert by_type(second)["Ready"]["status"] == "False"
    assert by_type(second)["Ready"]["lastTransitionTime"] == T0
    assert by_type(second)["Ready"]["observedGeneration"] == 2
    # Ready flips to True: the transition time moves; Degraded stayed False: it does not.
    third = st.merge_conditions(second, st.desired_conditions(generation=2, deployment=deployment()), T1)
    assert by_type(third)["Ready"]["lastTransitionTime"] == T1
    assert by_type(third)["Degraded"]["lastTransitionTime"] == T0


def test_merge_keeps_other_writers_conditions_in_place():
    scaling = {"type": "ScalingLimited", "status": "True", "reason": "MaxReplicas", "message": "at 8",
               "lastTransitionTime": T0, "observedGeneration": 1}
    current = [scaling] + st.merge_conditions([], st.desired_conditions(generation=1, deployment=deployment()), T0)
    merged = st.merge_conditions(current, st.desired_conditions(generation=1, deployment=deployment()), T1)
    assert merged == current  # nothing changed: the very same list, so no write
    assert merged[0] == scaling


def test_build_status_and_changed_status():
    current = {"autoscaling": {"desiredReplicas": 4}}
    built = st.build_status(generation=3, deployment=deployment(total=3, ready=2), pods=[], current=current, now=T0,
                            selector="app.kubernetes.io/instance=bge-m3", endpoint="http://bge-m3.search.svc:80",
                            image="ghcr.io/huggingface/text-embeddings-inference:1.9")
    assert built["replicas"] == 3 and built["readyReplicas"] == 2 and built["observedGeneration"] == 3
    assert "autoscaling" not in built
    patch = st.changed_status(current, built)
    assert set(patch) == {"observedGeneration", "replicas", "readyReplicas", "selector", "endpoint", "image",
                          "conditions"}
    written = {**current, **patch}
    again = st.build_status(generation=3, deployment=deployment(total=3, ready=2), pods=[], current=written, now=T1,
                            selector="app.kubernetes.io/instance=bge-m3", endpoint="http://bge-m3.search.svc:80",
                            image="ghcr.io/huggingface/text-embeddings-inference:1.9")
    assert st.changed_status(written, again) == {}


def test_transitions_only_report_flips():
    before = st.merge_conditions([], st.desired_conditions(generation=1, deployment=deployment()), T0)
    same = st.merge_conditions(before, st.desired_conditions(generation=1, deployment=deployment()), T1)
    assert st.transitions(before, same) == []
    worse = st.merge_conditions(before, st.desired_conditions(
        generation=1, deployment=deployment(ready=0), pods=[crashloop_pod()]), T1)
    flipped = {c["type"] for c in st.transitions(before, worse)}
    assert flipped == {"Ready", "Progressing", "Degraded"}


def test_changed_fields_and_describe_apply():
    applied = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bge-m3"}, "spec": {
        "template": {"spec": {"containers": [{"name": "tei", "image": "img:1.9",
                                               "env": [{"name": "MODEL_ID", "value": "BAAI/bge-m3"}],
                                               "resources": {"limits": {"nvidia.com/gpu": 1}}}]}}}}
    live = copy.deepcopy(applied)
    live["metadata"]["resourceVersion"] = "5"
    live["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "1"
    live["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] = "/dev/termination-log"
    assert changed_fields(applied, live) == []  # "1" and 1 are the same quantity; defaults are not drift
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "img:hacked"
    live["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = "evil/model"
    fields = changed_fields(applied, live)
    assert [f[0] for f in fields] == ["spec.template.spec.containers[tei].image",
                                      "spec.template.spec.containers[tei].env[MODEL_ID].value"]
    after = {**live, "metadata": {"name": "bge-m3", "resourceVersion": "6"}}
    change = describe_apply("Deployment", "bge-m3", live, applied, after)
    assert change is not None and change.reason == "Updated"
    assert change.message == ("Updated Deployment bge-m3: image img:hacked -> img:1.9, "
                              "env MODEL_ID evil/model -> BAAI/bge-m3")
    drift = describe_apply("Deployment", "bge-m3", live, applied, after, drift=True)
    assert drift is not None and drift.reason == "DriftReverted" and drift.type == "Warning"
    assert describe_apply("Deployment", "bge-m3", live, applied, live) is None  # same resourceVersion: no-op
    assert describe_apply("Service", "bge-m3", None, applied, after).message == "Created Service bge-m3"
    recreated = describe_apply("Service", "bge-m3", None, applied, after, seen_before=True)
    assert recreated.reason == "Recreated" and recreated.message.startswith("Recreated Service bge-m3")


def test_built_status_is_valid_against_the_status_schema():
    from tei_operator.api import ServiceStatus

    for kwargs in ({"deployment": deployment()}, {"deployment": None},
                   {"deployment": deployment(ready=0), "pods": [crashloop_pod(), unschedulable_pod()]},
                   {"deployment": None, "invalid_spec": "spec.gpu.count: must be <= 1 (got 2)"}):
        built = st.build_status(generation=1, current=None, now=T0, pods=kwargs.pop("pods", []), **kwargs)
        parsed = ServiceStatus.model_validate(built)
        assert {c.type for c in parsed.conditions} == {"Ready", "Progressing", "Degraded"}


def test_children_and_pods_are_routed_to_their_service():
    from tei_operator.controller.reconcile import OwnerKey, controller_owner, deployment_of_pod, owner_of_pod, owner_types

    kinds = owner_types()
    child = {"metadata": {"name": "bge-m3", "namespace": "search", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x", "uid": "1", "controller": False},
        {"apiVersion": "tei-operator.io/v1alpha1", "kind": "RerankerService", "name": "rr", "uid": "2",
         "controller": True}]}}
    assert controller_owner(child, kinds) == OwnerKey("RerankerService", "search", "rr")
    child["metadata"]["ownerReferences"][1]["apiVersion"] = "tei-operator.io/v2"  # another version: not ours
    assert controller_owner(child, kinds) is None
    pod = {"metadata": {"name": "bge-m3-6c45fb9999-abcde", "namespace": "search", "labels": {
        "tei-operator.io/service": "bge-m3", "app.kubernetes.io/component": "embedding",
        "pod-template-hash": "6c45fb9999"}, "ownerReferences": [
        {"kind": "ReplicaSet", "name": "bge-m3-6c45fb9999", "controller": True}]}}
    assert owner_of_pod(pod, kinds) == OwnerKey("EmbeddingService", "search", "bge-m3")
    assert deployment_of_pod(pod) == "bge-m3"
    del pod["metadata"]["labels"]["tei-operator.io/service"]
    assert owner_of_pod(pod, kinds) is None
