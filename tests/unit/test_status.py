"""Conditions from Deployment and pod fixtures (plain dicts, shaped like what the API server returns)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from tei_operator.controller import status as st
from tei_operator.controller.events import changed_fields, describe_apply
from tests.kstatus import kstatus

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


def test_a_child_refused_by_the_api_server_degrades_and_stalls_with_its_message():
    conds = by_type(st.desired_conditions(generation=3, deployment=None,
                                          rejected="The API server refused the request (422 Invalid: Too long)"))
    for ctype in ("Ready", "Progressing"):
        assert (conds[ctype]["status"], conds[ctype]["reason"]) == ("False", "ApplyRejected")
    for ctype in ("Degraded", "Stalled"):
        assert (conds[ctype]["status"], conds[ctype]["reason"]) == ("True", "ApplyRejected")
        assert "refused a child of this service" in conds[ctype]["message"]
        assert "422 Invalid: Too long" in conds[ctype]["message"]


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
                          "conditions", "summary"}
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
    # Reconciling stays False (done before, stuck now) but its reason moves from AllReplicasReady to the crash loop.
    assert flipped == {"Ready", "Available", "Progressing", "Degraded", "Reconciling", "Stalled"}


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
    after = {**copy.deepcopy(applied), "metadata": {"name": "bge-m3", "resourceVersion": "6"}}
    change = describe_apply("Deployment", "bge-m3", live, applied, after)
    assert change is not None and change.reason == "Updated"
    assert change.message == "Updated Deployment bge-m3: image img:hacked -> img:1.9, env MODEL_ID changed"
    drift = describe_apply("Deployment", "bge-m3", live, applied, after, drift=True)
    assert drift is not None and drift.reason == "DriftReverted" and drift.type == "Warning"
    assert drift.message == ("Reverted a hand edit of Deployment bge-m3: image img:hacked -> img:1.9, "
                             "env MODEL_ID changed")
    assert describe_apply("Deployment", "bge-m3", live, applied, live) is None  # same resourceVersion: no-op
    # The Deployment controller wrote status and its revision annotation between our read and our no-op apply.
    raced = copy.deepcopy(live)
    raced["metadata"].update(resourceVersion="7", annotations={"deployment.kubernetes.io/revision": "2"})
    raced["status"] = {"observedGeneration": 2}
    assert describe_apply("Deployment", "bge-m3", live, applied, raced) is None
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
        assert {c.type for c in parsed.conditions} == {"Ready", "Available", "Progressing", "Degraded", "Reconciling",
                                                       "Stalled"}
        assert parsed.summary == built["summary"] and built["summary"]


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


# -- events never print env values; an operator upgrade is not drift ------------------------------------------

SECRET = "hf_s3cr3t-token-value"


def _deployment_with_env(env, *, rv="5", stamp=None):
    meta = {"name": "bge-m3", "resourceVersion": rv}
    if stamp:
        meta["annotations"] = {"tei-operator.io/rendered-by": stamp[0], "tei-operator.io/rendered-hash": stamp[1]}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": {"template": {"spec": {"containers": [{"name": "tei", "image": "img:1.9", "env": env}]}}}}


@pytest.mark.parametrize("drift", [False, True])
def test_events_name_env_variables_but_never_print_their_values(drift):
    applied = _deployment_with_env([{"name": "MODEL_ID", "value": "BAAI/bge-m3"}, {"name": "HF_TOKEN", "value": SECRET}])
    live = _deployment_with_env([{"name": "MODEL_ID", "value": "evil/model"}])
    after = _deployment_with_env(applied["spec"]["template"]["spec"]["containers"][0]["env"], rv="6")
    change = describe_apply("Deployment", "bge-m3", live, applied, after, drift=drift)
    assert "MODEL_ID changed" in change.message
    assert ("HF_TOKEN put back" if drift else "HF_TOKEN added") in change.message
    for value in (SECRET, "evil/model", "BAAI/bge-m3"):
        assert value not in change.message


def test_a_changed_render_stamp_with_an_unchanged_spec_is_an_upgrade_not_drift():
    live = _deployment_with_env([], stamp=("0.1.0", "aaaa"))
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "img:1.8"
    upgraded = _deployment_with_env([], stamp=("0.2.0", "bbbb"))
    after = {**upgraded, "metadata": {**upgraded["metadata"], "resourceVersion": "6"}}
    change = describe_apply("Deployment", "bge-m3", live, upgraded, after, drift=True)
    assert (change.reason, change.type) == ("OperatorUpgraded", "Normal")
    # The stamp annotations themselves are bookkeeping, not worth listing.
    assert change.message == "Updated Deployment bge-m3 after an operator upgrade (0.1.0 -> 0.2.0): image img:1.8 -> img:1.9"
    # Same version, another hash: the operator's settings changed (e.g. its default TEI version).
    settings = _deployment_with_env([], stamp=("0.1.0", "cccc"))
    change = describe_apply("Deployment", "bge-m3", live, settings, {**settings, "metadata": {"resourceVersion": "6"}},
                            drift=True)
    assert (change.reason, change.type) == ("SettingsChanged", "Normal")
    assert change.message.startswith("Updated Deployment bge-m3 after a change of the operator's settings: image")
    # A Deployment from before stamps existed.
    unstamped = _deployment_with_env([])
    change = describe_apply("Deployment", "bge-m3", unstamped, upgraded, after, drift=True)
    assert change.reason == "OperatorUpgraded" and "(unstamped -> 0.2.0)" in change.message
    # Same stamp: whatever changed was changed by hand.
    same = _deployment_with_env([], stamp=("0.1.0", "aaaa"))
    change = describe_apply("Deployment", "bge-m3", live, same, {**same, "metadata": {"resourceVersion": "6"}},
                            drift=True)
    assert (change.reason, change.type) == ("DriftReverted", "Warning")
    # A spec change is an update whatever the stamps say.
    change = describe_apply("Deployment", "bge-m3", live, upgraded, after, drift=False)
    assert change.reason == "Updated"


# -- fields others added to the pod template -------------------------------------------------------------------

from tei_operator.controller.events import describe_removal  # noqa: E402
from tei_operator.controller.ownership import (  # noqa: E402
    describe_field, foreign_template_fields, removal_patch)

OURS = frozenset({"tei-operator", "tei-operator-autoscaler"})


def _k(**key):
    import json
    return "k:" + json.dumps(key, separators=(",", ":"))


def edited_deployment():
    """A Deployment as the API server returns it after hand edits, managedFields as recorded (shapes observed on
    kube-apiserver 1.36: `kubectl set env`, `kubectl patch` of an atomic map, a sidecar, `rollout restart`)."""
    env = [{"name": "MODEL_ID", "value": "BAAI/bge-m3"}, {"name": "PORT", "value": "80"},
           {"name": "FOO", "value": SECRET}]
    template = {
        "metadata": {"labels": {"app": "bge-m3"},
                     "annotations": {"tei-operator.io/config-hash": "abc",
                                     "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z",
                                     "team.example.com/cost-centre": "42"}},
        "spec": {
            "containers": [
                {"name": "tei", "image": "img:1.9", "env": env,
                 "resources": {"limits": {"nvidia.com/gpu": "1", "cpu": "4"}}},
                {"name": "sidecar", "image": "busybox"},
            ],
            "nodeSelector": {"zone": "a"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }
    tei = _k(name="tei")
    ours = {"f:metadata": {"f:labels": {"f:app": {}}, "f:annotations": {"f:tei-operator.io/config-hash": {}}},
            "f:spec": {"f:containers": {tei: {".": {}, "f:name": {}, "f:image": {}, "f:env": {
                _k(name="MODEL_ID"): {".": {}, "f:name": {}, "f:value": {}},
                _k(name="PORT"): {".": {}, "f:name": {}, "f:value": {}}},
                "f:resources": {"f:limits": {"f:nvidia.com/gpu": {}}}}},
                "f:tolerations": {}}}
    managed = [
        {"manager": "tei-operator", "operation": "Apply", "fieldsV1": {"f:spec": {"f:template": ours}}},
        {"manager": "kube-controller-manager-v1.36.3", "operation": "Update", "subresource": "status",
         "fieldsV1": {"f:status": {"f:replicas": {}}}},
        {"manager": "kubectl-set", "operation": "Update", "fieldsV1": {"f:spec": {"f:template": {"f:spec": {
            "f:containers": {tei: {"f:env": {_k(name="FOO"): {".": {}, "f:name": {}, "f:value": {}}}}}}}}}},
        {"manager": "kubectl-patch", "operation": "Update", "fieldsV1": {"f:spec": {"f:template": {
            "f:spec": {"f:nodeSelector": {}}}}}},
        {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:spec": {"f:template": {
            "f:metadata": {"f:annotations": {"f:team.example.com/cost-centre": {}}},
            "f:spec": {"f:containers": {_k(name="sidecar"): {".": {}, "f:name": {}, "f:image": {}},
                                        tei: {"f:resources": {"f:limits": {"f:cpu": {}}}}}}}}}},
        {"manager": "kubectl-rollout", "operation": "Update", "fieldsV1": {"f:spec": {"f:template": {
            "f:metadata": {"f:annotations": {"f:kubectl.kubernetes.io/restartedAt": {}}}}}}},
        # Someone applied the very image we set: shared ownership, ours.
        {"manager": "ci-bot", "operation": "Apply", "fieldsV1": {"f:spec": {"f:template": {"f:spec": {
            "f:containers": {tei: {".": {}, "f:name": {}, "f:image": {}}}}}}}},
    ]
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "bge-m3", "namespace": "search", "resourceVersion": "77", "managedFields": managed},
            "spec": {"replicas": 2, "template": template}}


def test_fields_only_foreign_managers_own_are_found_and_named_without_values():
    found = foreign_template_fields(edited_deployment(), OURS)
    by_pointer = {f.json_pointer: (describe_field(f), f.manager) for f in found}
    assert by_pointer == {
        "/spec/template/spec/containers/0/env/2": ("env FOO added", "kubectl-set"),
        "/spec/template/spec/nodeSelector": ("nodeSelector set", "kubectl-patch"),
        "/spec/template/metadata/annotations/team.example.com~1cost-centre":
            ("pod annotation team.example.com/cost-centre added", "kubectl-edit"),
        "/spec/template/spec/containers/1": ("container sidecar added", "kubectl-edit"),
        "/spec/template/spec/containers/0/resources/limits/cpu":
            ("resources.limits.cpu of container tei set", "kubectl-edit"),
    }
    # Kept: the rollout restart stamp, our own fields, the one the CI bot shares with us, the control plane's.
    assert foreign_template_fields(edited_deployment(), OURS | {"kubectl-set", "kubectl-patch", "kubectl-edit"}) == []


def test_a_field_we_share_with_a_foreign_manager_is_ours():
    dep = edited_deployment()
    # Our apply now also sets the nodeSelector kubectl-patch set: shared, so it stays.
    dep["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:nodeSelector"] = {}
    assert "/spec/template/spec/nodeSelector" not in {f.json_pointer for f in foreign_template_fields(dep, OURS)}


def test_a_stale_managed_fields_entry_for_a_field_that_is_gone_is_ignored():
    dep = edited_deployment()
    dep["spec"]["template"]["spec"]["containers"][0]["env"].pop()  # FOO is gone already
    assert "env FOO added" not in {describe_field(f) for f in foreign_template_fields(dep, OURS)}


def test_removal_patch_is_pinned_to_the_resource_version_and_removes_higher_indexes_first():
    dep = edited_deployment()
    found = foreign_template_fields(dep, OURS)
    patch = removal_patch("77", found)
    assert patch[0] == {"op": "replace", "path": "/metadata/resourceVersion", "value": "77"}
    paths = [op["path"] for op in patch[1:]]
    assert all(op["op"] == "remove" for op in patch[1:]) and len(paths) == len(found)
    # Container 1 goes before anything inside container 0, so container 0's pointers stay valid.
    assert paths.index("/spec/template/spec/containers/1") < paths.index("/spec/template/spec/containers/0/env/2")
    # Applying the patch the way the API server does leaves exactly the rendered template.
    _apply_removals(dep, paths)
    template = dep["spec"]["template"]
    assert [c["name"] for c in template["spec"]["containers"]] == ["tei"]
    assert [e["name"] for e in template["spec"]["containers"][0]["env"]] == ["MODEL_ID", "PORT"]
    assert template["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert "nodeSelector" not in template["spec"]
    assert set(template["metadata"]["annotations"]) == {"tei-operator.io/config-hash",
                                                        "kubectl.kubernetes.io/restartedAt"}


def _apply_removals(doc, paths):
    """RFC 6902 `remove`, applied in order (a small stand-in for the API server's JSON patch)."""
    for path in paths:
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")[1:]]
        parent = doc
        for token in tokens[:-1]:
            parent = parent[int(token)] if isinstance(parent, list) else parent[token]
        last = tokens[-1]
        del parent[int(last) if isinstance(parent, list) else last]


def test_nested_foreign_fields_are_removed_once():
    dep = edited_deployment()
    tei = _k(name="tei")
    # A second manager owns FOO's value inside the item kubectl-set added: one removal of the item.
    dep["metadata"]["managedFields"].append({"manager": "other", "operation": "Update", "fieldsV1": {"f:spec": {
        "f:template": {"f:spec": {"f:containers": {tei: {"f:env": {_k(name="FOO"): {"f:value": {}}}}}}}}}})
    pointers = [f.json_pointer for f in foreign_template_fields(dep, OURS)]
    assert pointers.count("/spec/template/spec/containers/0/env/2") == 1
    assert not any(p.startswith("/spec/template/spec/containers/0/env/2/") for p in pointers)


def test_one_warning_lists_what_the_apply_and_the_removal_reverted():
    found = foreign_template_fields(edited_deployment(), OURS)
    applied = _deployment_with_env([{"name": "MODEL_ID", "value": "BAAI/bge-m3"}])
    live = _deployment_with_env([{"name": "MODEL_ID", "value": "evil/model"}])
    drift = describe_apply("Deployment", "bge-m3", live, applied, {**applied, "metadata": {"resourceVersion": "9"}},
                           drift=True)
    (merged,) = describe_removal("Deployment", "bge-m3", found[:1], drift)
    assert merged.reason == "DriftReverted" and merged.type == "Warning"
    assert merged.message == ("Reverted a hand edit of Deployment bge-m3: env MODEL_ID changed, "
                              "env FOO added by kubectl-set")
    assert SECRET not in merged.message
    # Only foreign fields (the apply was a no-op): the event of item 1 of issue #3.
    (alone,) = describe_removal("Deployment", "bge-m3", found[:1], None)
    assert alone.message == "Reverted a hand edit of Deployment bge-m3: env FOO added by kubectl-set"
    # A spec update at the same time stays an Updated event; the removal is its own Warning.
    update = describe_apply("Deployment", "bge-m3", live, applied, {**applied, "metadata": {"resourceVersion": "9"}})
    assert [c.reason for c in describe_removal("Deployment", "bge-m3", found, update)] == ["Updated", "DriftReverted"]
    assert describe_removal("Deployment", "bge-m3", [], None) == []


def test_nulls_are_not_foreign_fields_and_a_removal_defaulted_back_is_not_reported():
    from tei_operator.controller.ownership import still_present

    dep = edited_deployment()
    dep["spec"]["template"]["metadata"]["creationTimestamp"] = None
    dep["metadata"]["managedFields"].append({"manager": "kubectl-client-side-apply", "operation": "Update",
                                             "fieldsV1": {"f:spec": {"f:template": {"f:metadata": {
                                                 "f:creationTimestamp": {}}}}}})
    found = foreign_template_fields(dep, OURS)
    assert "/spec/template/metadata/creationTimestamp" not in {f.json_pointer for f in found}
    env_foo = next(f for f in found if f.json_pointer.endswith("/env/2"))
    assert SECRET not in repr(env_foo)
    assert still_present(dep, env_foo)
    dep["spec"]["template"]["spec"]["containers"][0]["env"].pop()
    assert not still_present(dep, env_foo)


# -- kstatus: Reconciling and Stalled ---------------------------------------------------------------------------

def service(generation, **build):
    """A service object as stored after the operator's status write for `generation`."""
    status = st.build_status(generation=generation, current=None, now=T0, **build)
    return {"metadata": {"name": "bge-m3", "generation": generation}, "status": status}


def test_the_kstatus_helper_reads_only_the_generic_fields():
    obj = {"metadata": {"generation": 2}, "status": {"observedGeneration": 1, "conditions": []}}
    assert kstatus(obj) == "InProgress"
    obj["status"]["observedGeneration"] = 2
    assert kstatus(obj) == "Current"
    obj["status"]["conditions"] = [{"type": "Ready", "status": "False"}, {"type": "Degraded", "status": "True"}]
    assert kstatus(obj) == "Current"  # why the operator writes Reconciling and Stalled at all
    obj["status"]["conditions"].append({"type": "Stalled", "status": "True"})
    assert kstatus(obj) == "Failed"
    obj["metadata"]["deletionTimestamp"] = T0
    assert kstatus(obj) == "Terminating"


def test_a_ready_service_is_neither_reconciling_nor_stalled():
    conds = by_type(st.desired_conditions(generation=4, deployment=deployment(), pods=[pod()]))
    assert conds["Reconciling"] == {"type": "Reconciling", "status": "False", "reason": "AllReplicasReady",
                                    "message": "Deployment bge-m3: 2 of 2 replicas ready", "observedGeneration": 4}
    assert conds["Stalled"] == {"type": "Stalled", "status": "False", "reason": "NotStalled",
                                "message": "Not stalled", "observedGeneration": 4}
    assert kstatus(service(4, deployment=deployment(), pods=[pod()])) == "Current"
    zero = deployment(replicas=0, total=0, updated=0, ready=0)
    assert kstatus(service(1, deployment=zero, pods=[])) == "Current"


@pytest.mark.parametrize("dep,reason", [
    (deployment(generation=4, observed=3), "RollingOut"),                       # Deployment behind its generation
    (deployment(replicas=3, total=3, updated=1, ready=3), "RollingOut"),        # new template on 1 of 3
    (deployment(replicas=2, total=3, updated=2, ready=2), "RollingOut"),        # an old pod still terminating
    (deployment(replicas=3, total=3, updated=3, ready=0), "WaitingForReady"),   # pods starting, model downloading
    (None, "DeploymentMissing"),
])
def test_a_service_on_its_way_is_reconciling(dep, reason):
    conds = by_type(st.desired_conditions(generation=2, deployment=dep, pods=[pod()]))
    assert (conds["Reconciling"]["status"], conds["Reconciling"]["reason"]) == ("True", reason)
    assert conds["Reconciling"]["message"] == conds["Progressing"]["message"]
    assert conds["Stalled"]["status"] == "False"
    assert kstatus(service(2, deployment=dep, pods=[pod()])) == "InProgress"


def image_pull_pod(reason):
    return pod(containers=[{"name": "tei", "restartCount": 0, "state": {"waiting": {
        "reason": reason, "message": 'Back-off pulling image "ghcr.io/x:nope"'}}}])


@pytest.mark.parametrize("bad_pod,reason,words", [
    (crashloop_pod(), "CrashLoopBackOff", TERMINATION_MESSAGE),
    (image_pull_pod("ImagePullBackOff"), "ImagePullBackOff", "ghcr.io/x:nope"),
    (image_pull_pod("ErrImagePull"), "ImagePullBackOff", "(ErrImagePull)"),
])
def test_a_crash_loop_or_an_image_pull_failure_stalls_at_once(bad_pod, reason, words):
    dep = deployment(replicas=1, total=1, updated=1, ready=0)
    conds = by_type(st.desired_conditions(generation=3, deployment=dep, pods=[bad_pod]))
    stalled = conds["Stalled"]
    assert (stalled["status"], stalled["reason"], stalled["observedGeneration"]) == ("True", reason, 3)
    assert words in stalled["message"]
    # kstatus reads Reconciling first: it must not also be True, or Flux would wait instead of failing.
    assert (conds["Reconciling"]["status"], conds["Reconciling"]["reason"]) == ("False", reason)
    assert kstatus(service(3, deployment=dep, pods=[bad_pod])) == "Failed"


def test_an_invalid_spec_stalls():
    conds = by_type(st.desired_conditions(generation=7, deployment=None, invalid_spec="spec.gpu.count: must be >= 1"))
    assert (conds["Stalled"]["status"], conds["Stalled"]["reason"]) == ("True", "InvalidSpec")
    assert "spec.gpu.count: must be >= 1" in conds["Stalled"]["message"]
    assert conds["Reconciling"]["status"] == "False"
    assert kstatus(service(7, deployment=None, pods=[], invalid_spec="spec.gpu.count: must be >= 1")) == "Failed"


def deadline(dep):
    dep["status"]["conditions"] = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                    "message": 'ReplicaSet "bge-m3-7d9f" has timed out progressing.'}]
    return dep


def test_an_unschedulable_pod_keeps_reconciling_until_the_progress_deadline_then_stalls():
    # minAvailable 2: with one of two replicas ready the service does not serve yet (see the Available tests).
    dep = deployment(replicas=2, total=2, updated=2, ready=1)
    conds = by_type(st.desired_conditions(generation=2, deployment=dep, pods=[pod(), unschedulable_pod()],
                                          min_available=2))
    # A GPU shortage may end when a cluster autoscaler adds a node: InProgress, with the scheduler's words.
    assert (conds["Reconciling"]["status"], conds["Reconciling"]["reason"]) == ("True", "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in conds["Reconciling"]["message"]
    assert (conds["Stalled"]["status"], conds["Stalled"]["reason"]) == ("False", "NotStalled")
    assert "progress deadline" in conds["Stalled"]["message"]
    assert conds["Degraded"]["status"] == "True"  # a human still hears about it at once
    assert kstatus(service(2, deployment=dep, pods=[pod(), unschedulable_pod()], min_available=2)) == "InProgress"
    # The Deployment controller gave up: Stalled, saying both what timed out and why.
    conds = by_type(st.desired_conditions(generation=2, deployment=deadline(dep), pods=[pod(), unschedulable_pod()],
                                          min_available=2))
    stalled = conds["Stalled"]
    assert (stalled["status"], stalled["reason"]) == ("True", "ProgressDeadlineExceeded")
    assert "timed out progressing" in stalled["message"] and "Insufficient nvidia.com/gpu" in stalled["message"]
    assert conds["Reconciling"]["status"] == "False"


def test_a_missing_secret_waits_and_a_refused_replica_set_stalls():
    config = pod(containers=[{"name": "tei", "restartCount": 0, "state": {"waiting": {
        "reason": "CreateContainerConfigError", "message": 'secret "hf-token" not found'}}}])
    dep = deployment(replicas=1, total=1, updated=1, ready=0)
    conds = by_type(st.desired_conditions(generation=1, deployment=dep, pods=[config]))
    assert (conds["Reconciling"]["status"], conds["Reconciling"]["reason"]) == ("True", "CreateContainerConfigError")
    assert conds["Stalled"]["status"] == "False"
    quota = deployment(replicas=1, total=0, updated=0, ready=0, conditions=[{
        "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
        "message": 'pods "bge-m3-7d9f-x" is forbidden: exceeded quota: gpus'}])
    conds = by_type(st.desired_conditions(generation=1, deployment=quota, pods=[]))
    assert (conds["Stalled"]["status"], conds["Stalled"]["reason"]) == ("True", "ReplicaFailure")
    assert "exceeded quota" in conds["Stalled"]["message"]


def test_a_deadline_of_the_previous_template_does_not_stall_the_new_one():
    # The spec was fixed: the Deployment has a new generation its controller has not acted on yet, and still
    # carries the old rollout's ProgressDeadlineExceeded.
    dep = deadline(deployment(replicas=1, generation=5, observed=4, total=1, updated=1, ready=0))
    conds = by_type(st.desired_conditions(generation=3, deployment=dep, pods=[]))
    assert (conds["Reconciling"]["status"], conds["Reconciling"]["reason"]) == ("True", "RollingOut")
    assert conds["Stalled"]["status"] == "False"


def hashed(p, template_hash):
    p = copy.deepcopy(p)
    p["metadata"]["annotations"] = {"tei-operator.io/config-hash": template_hash}
    return p


def test_only_pods_of_the_current_template_can_stall_the_service():
    # After a fix, the old template's crash-looping pod lingers until the Deployment replaces it: Reconciling,
    # not Failed (Flux would otherwise fail the very sync that fixes the service).
    dep = deployment(replicas=1, total=2, updated=1, ready=0)
    pods = [hashed(crashloop_pod("old"), "aaaa"), hashed(pod("new"), "bbbb")]
    conds = by_type(st.desired_conditions(generation=2, deployment=dep, pods=pods, template_hash="bbbb"))
    assert (conds["Reconciling"]["status"], conds["Stalled"]["status"]) == ("True", "False")
    assert conds["Degraded"]["reason"] == "CrashLoopBackOff"  # still visible to a human
    # The new template crashes too: stalled.
    pods[1] = hashed(crashloop_pod("new"), "bbbb")
    conds = by_type(st.desired_conditions(generation=2, deployment=dep, pods=pods, template_hash="bbbb"))
    assert (conds["Stalled"]["status"], conds["Stalled"]["reason"]) == ("True", "CrashLoopBackOff")
    assert "pod new" in conds["Stalled"]["message"]
    # Pods without the annotation (created before it existed) and an unknown hash count as current.
    assert len(st.current_template_pods([crashloop_pod("x")], "bbbb")) == 1
    assert len(st.current_template_pods(pods, None)) == 2


def test_a_ready_service_with_a_stray_bad_pod_is_not_stalled():
    conds = by_type(st.desired_conditions(generation=1, deployment=deployment(), pods=[crashloop_pod()]))
    assert (conds["Reconciling"]["status"], conds["Stalled"]["status"]) == ("False", "False")


def test_reconciling_and_stalled_transition_times():
    starting = deployment(replicas=2, total=2, updated=2, ready=0)
    first = st.merge_conditions([], st.desired_conditions(generation=1, deployment=starting), T0)
    assert by_type(first)["Reconciling"]["lastTransitionTime"] == T0
    assert by_type(first)["Stalled"]["lastTransitionTime"] == T0
    # Still on its way, for another reason: the time stays, the reason moves.
    rolling = deployment(replicas=2, total=3, updated=2, ready=0)
    second = st.merge_conditions(first, st.desired_conditions(generation=1, deployment=rolling), T1)
    assert (by_type(second)["Reconciling"]["reason"], by_type(second)["Reconciling"]["lastTransitionTime"]) == (
        "RollingOut", T0)
    # Crash loop: Reconciling turns False and Stalled True, both at T2; then Ready: only Stalled moves again.
    t2, t3 = "2026-01-01T00:10:00Z", "2026-01-01T00:15:00Z"
    third = st.merge_conditions(second, st.desired_conditions(generation=1, deployment=starting,
                                                              pods=[crashloop_pod()]), t2)
    assert by_type(third)["Reconciling"]["lastTransitionTime"] == t2
    assert (by_type(third)["Stalled"]["status"], by_type(third)["Stalled"]["lastTransitionTime"]) == ("True", t2)
    fourth = st.merge_conditions(third, st.desired_conditions(generation=1, deployment=deployment()), t3)
    assert (by_type(fourth)["Stalled"]["status"], by_type(fourth)["Stalled"]["lastTransitionTime"]) == ("False", t3)
    assert (by_type(fourth)["Reconciling"]["status"], by_type(fourth)["Reconciling"]["lastTransitionTime"]) == (
        "False", t2)
    # Nothing changed: the same list, so nothing is written.
    assert st.merge_conditions(fourth, st.desired_conditions(generation=1, deployment=deployment()), t3) == fourth


def test_conditions_written_before_reconciling_and_stalled_existed_get_them_appended():
    old = [c for c in st.merge_conditions([], st.desired_conditions(generation=1, deployment=deployment()), T0)
           if c["type"] in ("Ready", "Progressing", "Degraded")]
    merged = st.merge_conditions(old, st.desired_conditions(generation=1, deployment=deployment()), T1)
    assert [c["type"] for c in merged] == ["Ready", "Progressing", "Degraded", "Available", "Reconciling", "Stalled"]
    assert merged[:3] == old and {c["lastTransitionTime"] for c in merged[3:]} == {T1}


# -- field managers the settings trust ----------------------------------------------------------------------

def test_trusted_field_managers_match_by_name_or_by_prefix():
    from tei_operator.controller.ownership import matches_manager

    assert matches_manager("reloader", ["reloader"])
    assert not matches_manager("reloader-test", ["reloader"])   # a name is exact
    assert not matches_manager("Reloader", ["reloader"])        # and case-sensitive, like the API server's names
    assert matches_manager("istio-sidecar-injector", ["reloader", "istio-*"])
    assert not matches_manager("istio", ["istio-*"])
    assert not matches_manager("kubectl-edit", [])


def test_fields_of_trusted_managers_are_left_alone():
    all_found = {f.manager for f in foreign_template_fields(edited_deployment(), OURS)}
    assert all_found == {"kubectl-set", "kubectl-patch", "kubectl-edit"}
    found = foreign_template_fields(edited_deployment(), OURS, ["kubectl-patch", "kubectl-e*"])
    assert {(f.json_pointer, f.manager) for f in found} == {("/spec/template/spec/containers/0/env/2", "kubectl-set")}
    # A prefix that matches nothing changes nothing.
    assert len(foreign_template_fields(edited_deployment(), OURS, ["reloader", "istio-*"])) == 5


def test_a_field_a_trusted_manager_shares_with_a_foreign_one_stays():
    dep = edited_deployment()
    # The reloader also owns the annotation kubectl-edit added (it set the same value): kept.
    dep["metadata"]["managedFields"].append({"manager": "reloader", "operation": "Update", "fieldsV1": {"f:spec": {
        "f:template": {"f:metadata": {"f:annotations": {"f:team.example.com/cost-centre": {}}}}}}})
    pointers = {f.json_pointer for f in foreign_template_fields(dep, OURS, ["reloader"])}
    assert "/spec/template/metadata/annotations/team.example.com~1cost-centre" not in pointers
    assert "/spec/template/spec/containers/1" in pointers  # kubectl-edit's other additions still go


# -- the Argo CD health check in docs/gitops.md, run on the statuses the operator writes ---------------------------

def argocd_lua_bodies() -> dict[str, str]:
    """The health Lua of each kind, as Argo CD reads it: the argocd-cm ConfigMap of docs/gitops.md parsed as YAML."""
    import re

    import yaml

    doc = (Path(__file__).resolve().parents[2] / "docs" / "gitops.md").read_text()
    maps = [m for m in map(yaml.safe_load, re.findall(r"```yaml\n(.*?)```", doc, re.S))
            if isinstance(m, dict) and (m.get("metadata") or {}).get("name") == "argocd-cm"]
    assert len(maps) == 1, "docs/gitops.md must show one argocd-cm"
    prefix = "resource.customizations.health.tei-operator.io_"
    return {key[len(prefix):]: lua for key, lua in maps[0]["data"].items() if key.startswith(prefix)}


def argocd_health(kind="EmbeddingService"):
    """The Lua of docs/gitops.md's argocd-cm, as a Python function of a service object (Argo CD runs it with
    gopher-lua, a Lua 5.1: so does this test)."""
    import lupa.lua51 as lua51  # a test dependency (pyproject): a missing lupa fails, never skips
    body = argocd_lua_bodies().get(kind)
    assert body, f"docs/gitops.md lost its Argo CD health check of {kind}"
    runtime = lua51.LuaRuntime()
    check = runtime.eval("function(obj)\n" + body + "\nend")

    def health(obj):
        hs = check(runtime.table_from(obj, recursive=True))
        return hs["status"], hs["message"]
    return health


def test_the_argocd_health_check_is_spelled_out_for_both_kinds():
    bodies = argocd_lua_bodies()
    assert set(bodies) == {"EmbeddingService", "RerankerService"}
    assert bodies["EmbeddingService"] == bodies["RerankerService"]
    assert "the same Lua as above" not in (Path(__file__).resolve().parents[2] / "docs" / "gitops.md").read_text()


@pytest.mark.parametrize("kind", ["EmbeddingService", "RerankerService"])
def test_the_argocd_health_check_agrees_with_kstatus(kind):
    health = argocd_health(kind)
    scale_up = deployment(replicas=4, total=4, updated=4, ready=2)
    rolling = deployment(replicas=2, total=3, updated=1, ready=2)   # an old pod still serves, the new one loads
    cases = [
        ({"deployment": deployment(), "pods": [pod()]}, "Healthy", "Current"),
        # Serving while added replicas load or wait for a GPU: a scale-up is not an outage.
        ({"deployment": scale_up, "pods": [pod()]}, "Healthy", "Current"),
        ({"deployment": deployment(ready=1), "pods": [pod(), unschedulable_pod()]}, "Healthy", "Current"),
        # ... unless minAvailable asks for more.
        ({"deployment": scale_up, "pods": [pod()], "min_available": 3}, "Progressing", "InProgress"),
        ({"deployment": deployment(ready=0), "pods": [pod(), unschedulable_pod()]}, "Progressing", "InProgress"),
        ({"deployment": rolling, "pods": [pod()]}, "Progressing", "InProgress"),
        ({"deployment": deployment(replicas=1, total=1, updated=1, ready=0), "pods": [crashloop_pod()]},
         "Degraded", "Failed"),
        # A crash loop of the current spec stalls a serving service too: every new pod will fail the same way.
        ({"deployment": deployment(ready=1), "pods": [pod(), crashloop_pod()]}, "Degraded", "Failed"),
        ({"deployment": None, "pods": [], "invalid_spec": "spec.gpu.count: must be >= 1"}, "Degraded", "Failed"),
    ]
    for build, argo, ks in cases:
        obj = service(3, **build)
        status, message = health(obj)
        assert (status, kstatus(obj)) == (argo, ks), build
        reason = by_type(obj["status"]["conditions"])["Stalled" if argo == "Degraded" else "Reconciling"]["reason"]
        assert message.startswith(f"{reason}: ")
    assert health(service(3, deployment=deployment(), pods=[pod()]))[1].startswith("AllReplicasReady: ")
    # The serving service says what the other replicas wait for; the waiting one why it waits.
    _, message = health(service(3, deployment=deployment(ready=1), pods=[pod(), unschedulable_pod()]))
    assert message.startswith("MinimumReplicasReady: ") and "Insufficient nvidia.com/gpu" in message
    _, message = health(service(3, deployment=deployment(ready=0), pods=[pod(), unschedulable_pod()]))
    assert message.startswith("Unschedulable: ") and "Insufficient nvidia.com/gpu" in message
    # A generation the operator has not acted on yet, and no status at all: Progressing, like kstatus's InProgress.
    stale = service(3, deployment=deployment(), pods=[pod()])
    stale["metadata"]["generation"] = 4
    assert health(stale)[0] == "Progressing" and kstatus(stale) == "InProgress"
    assert health({"metadata": {"generation": 1}})[0] == "Progressing"
    # Written by an operator from before Reconciling/Stalled existed: Degraded=True still makes it Degraded,
    # Ready=True Healthy.
    old = service(3, deployment=deployment(replicas=1, total=1, updated=1, ready=0), pods=[crashloop_pod()])
    old["status"]["conditions"] = [c for c in old["status"]["conditions"] if c["type"] in ("Ready", "Degraded")]
    assert health(old)[0] == "Degraded"
    fine = service(3, deployment=deployment(), pods=[pod()])
    fine["status"]["conditions"] = [c for c in fine["status"]["conditions"] if c["type"] in ("Ready", "Degraded")]
    assert health(fine)[0] == "Healthy"


# -- Available: the service serves ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dep,min_available,expected,reason", [
    (deployment(replicas=4, total=4, updated=4, ready=1), 1, "True", "MinimumReplicasReady"),   # scale-up
    (deployment(replicas=4, total=4, updated=4, ready=1), 2, "False", "WaitingForReady"),
    (deployment(replicas=4, total=4, updated=4, ready=0), 1, "False", "WaitingForReady"),        # first start
    (deployment(replicas=2, total=2, updated=2, ready=2), 5, "True", "MinimumReplicasReady"),    # capped at desired
    (deployment(replicas=2, total=3, updated=1, ready=2), 1, "True", "MinimumReplicasReady"),    # old pods serve
    (deployment(replicas=0, total=0, updated=0, ready=0), 1, "True", "ScaledToZero"),
    (None, 1, "False", "DeploymentMissing"),
])
def test_available_counts_ready_replicas_against_min_available(dep, min_available, expected, reason):
    conds = by_type(st.desired_conditions(generation=2, deployment=dep, pods=[pod()], min_available=min_available))
    assert (conds["Available"]["status"], conds["Available"]["reason"]) == (expected, reason)
    assert conds["Available"]["observedGeneration"] == 2


def test_a_serving_service_that_is_scaling_up_is_available_and_done_for_kstatus_but_not_ready():
    dep = deployment(replicas=8, total=8, updated=8, ready=3)
    conds = by_type(st.desired_conditions(generation=2, deployment=dep, pods=[pod(), unschedulable_pod()]))
    assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == ("False", "Unschedulable")
    assert conds["Available"]["status"] == "True" and "3 of 8 replicas ready" in conds["Available"]["message"]
    assert (conds["Reconciling"]["status"], conds["Reconciling"]["reason"]) == ("False", "MinimumReplicasReady")
    assert "Insufficient nvidia.com/gpu" in conds["Reconciling"]["message"]
    assert conds["Stalled"]["status"] == "False"
    # The progress deadline passing for the added replicas does not stall a serving service either.
    conds = by_type(st.desired_conditions(generation=2, deployment=deadline(dep), pods=[pod(), unschedulable_pod()]))
    assert (conds["Stalled"]["status"], conds["Reconciling"]["status"]) == ("False", "False")
    assert kstatus(service(2, deployment=deadline(deployment(replicas=8, total=8, updated=8, ready=3)),
                           pods=[pod(), unschedulable_pod()])) == "Current"


def test_a_rollout_is_in_progress_even_while_old_pods_serve_and_stalls_at_its_deadline():
    dep = deployment(replicas=2, total=3, updated=1, ready=2)
    conds = by_type(st.desired_conditions(generation=2, deployment=dep, pods=[pod(), unschedulable_pod()]))
    assert conds["Available"]["status"] == "True"
    assert (conds["Reconciling"]["status"], conds["Reconciling"]["reason"]) == ("True", "Unschedulable")
    conds = by_type(st.desired_conditions(generation=2, deployment=deadline(dep), pods=[pod(), unschedulable_pod()]))
    assert (conds["Stalled"]["status"], conds["Stalled"]["reason"]) == ("True", "ProgressDeadlineExceeded")


def test_an_invalid_spec_still_says_whether_the_last_good_pods_serve():
    conds = by_type(st.desired_conditions(generation=7, deployment=deployment(), invalid_spec="spec.x: bad"))
    assert conds["Stalled"]["status"] == "True" and conds["Available"]["status"] == "True"


# -- status.summary, the STATUS column ---------------------------------------------------------------------------

def limited(reason, status="True"):
    return {"type": "ScalingLimited", "status": status, "reason": reason, "message": "Wanted 12 replicas",
            "lastTransitionTime": T0, "observedGeneration": 2}


@pytest.mark.parametrize("dep,pods,scaling,summary", [
    (deployment(), [pod()], None, "AllReplicasReady"),
    (deployment(), [pod()], limited("MaxReplicas"), "LimitedByMaxReplicas"),
    (deployment(), [pod()], limited("GpuCapacity"), "LimitedByGpuCapacity"),
    (deployment(), [pod()], limited("MetricsUnavailable"), "MetricsUnavailable"),
    (deployment(), [pod()], limited("WithinLimits", "False"), "AllReplicasReady"),
    (deployment(), [pod()], limited("MinReplicas"), "AllReplicasReady"),   # held at the floor: nothing to see
    # Serving while scaling up, held by the free GPUs.
    (deployment(replicas=4, total=4, updated=4, ready=2), [pod()], limited("GpuCapacity"), "LimitedByGpuCapacity"),
    (deployment(replicas=4, total=4, updated=4, ready=2), [pod()], None, "WaitingForReady"),
    # Not serving: why it does not serve matters more than the limit.
    (deployment(ready=0), [pod(), unschedulable_pod()], limited("MetricsUnavailable"), "Unschedulable"),
    # Stalled: the reason it needs a change.
    (deployment(ready=1), [pod(), crashloop_pod()], limited("MaxReplicas"), "CrashLoopBackOff"),
])
def test_the_status_column_shows_limits_and_stalls(dep, pods, scaling, summary):
    current = {"conditions": [scaling]} if scaling else None
    built = st.build_status(generation=2, deployment=dep, pods=pods, current=current, now=T1)
    assert built["summary"] == summary
    if scaling:  # the autoscaler's condition is kept as it was
        assert by_type(built["conditions"])["ScalingLimited"] == scaling


def test_summary_of_an_invalid_spec_and_of_nothing():
    from tei_operator.api.status import status_summary

    built = st.build_status(generation=2, deployment=None, pods=[], current=None, now=T0, invalid_spec="spec.x: bad")
    assert built["summary"] == "InvalidSpec"
    assert status_summary([]) is None and status_summary(None) is None


def test_summary_puts_a_model_mismatch_after_a_stall_and_before_limits():
    from tei_operator.api.status import status_summary

    ready = {"type": "Ready", "status": "True", "reason": "AllReplicasReady"}
    mismatch = {"type": "ModelMismatch", "status": "True", "reason": "MixedCommits"}
    held = {"type": "ScalingLimited", "status": "True", "reason": "MaxReplicas"}
    stalled = {"type": "Stalled", "status": "True", "reason": "CrashLoopBackOff"}
    assert status_summary([ready, mismatch, held]) == "ModelMismatch"
    assert status_summary([ready, mismatch, held, stalled]) == "CrashLoopBackOff"
    assert status_summary([ready, {**mismatch, "status": "False"}, held]) == "LimitedByMaxReplicas"
