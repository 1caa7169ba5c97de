"""Hand edits and deletions of children are undone promptly (child watches, not the periodic resync: the session's
operator resyncs only every 10 minutes and these tests allow 15 s), additive ones too (an env variable, a toleration,
a sidecar: the pod template converges to exactly the rendered one); a restarted operator converges without
duplicates."""

from __future__ import annotations

import json

import pytest

from .conftest import wait_for
from .test_reconcile import embedding, tei_container

pytestmark = pytest.mark.cluster

PROMPT = 15  # seconds: "within seconds, not minutes"


def _env(deployment):
    return {e["name"]: e.get("value") for e in tei_container(deployment).get("env") or []}


def test_hand_edited_image_is_reverted(operator, kube, namespace):
    kube.apply(embedding("drift", namespace))
    kube.wait_condition("embsvc", "drift", namespace, "Ready")
    original = tei_container(kube.get("deployment", "drift", namespace))["image"]
    kube.kubectl("set", "image", "deployment/drift", "-n", namespace, f"{tei_container(kube.get('deployment', 'drift', namespace))['name']}=example.com/hacked:1")
    wait_for(lambda: tei_container(kube.get("deployment", "drift", namespace))["image"] == original, PROMPT,
             what="the image to be put back")
    events = [e for e in kube.events(namespace, "drift") if e["reason"] == "DriftReverted"]
    assert events and "example.com/hacked:1" in events[-1]["message"]


def test_hand_edited_env_value_is_reverted(operator, kube, namespace):
    kube.apply(embedding("envdrift", namespace))
    kube.wait_condition("embsvc", "envdrift", namespace, "Ready")
    dep = kube.get("deployment", "envdrift", namespace)
    env = _env(dep)
    name = next(n for n, v in env.items() if v is not None)
    container = tei_container(dep)["name"]
    kube.kubectl("set", "env", "deployment/envdrift", "-n", namespace, "-c", container, f"{name}=tampered")
    wait_for(lambda: _env(kube.get("deployment", "envdrift", namespace)).get(name) == env[name], PROMPT,
             what=f"env {name} to be put back")


def test_deleted_deployment_is_recreated(operator, kube, namespace):
    kube.apply(embedding("phoenix", namespace))
    kube.wait_condition("embsvc", "phoenix", namespace, "Ready")
    uid = kube.get("deployment", "phoenix", namespace)["metadata"]["uid"]
    kube.kubectl("delete", "deployment", "phoenix", "-n", namespace, "--wait=false")
    wait_for(lambda: (kube.get("deployment", "phoenix", namespace) or {"metadata": {"uid": uid}})["metadata"]["uid"]
             != uid, PROMPT, what="a new Deployment")
    kube.wait_condition("embsvc", "phoenix", namespace, "Ready")
    assert any(e["reason"] == "Recreated" and "Deployment phoenix" in e["message"]
               for e in kube.events(namespace, "phoenix"))


def test_deleted_service_is_recreated(operator, kube, namespace):
    kube.apply(embedding("svcgone", namespace))
    kube.wait_condition("embsvc", "svcgone", namespace, "Ready")
    uid = kube.get("service", "svcgone", namespace)["metadata"]["uid"]
    kube.kubectl("delete", "service", "svcgone", "-n", namespace, "--wait=false")
    wait_for(lambda: (kube.get("service", "svcgone", namespace) or {"metadata": {"uid": uid}})["metadata"]["uid"]
             != uid, PROMPT, what="a new Service")


@pytest.mark.slow  # restarts the operator: ~13 s
def test_restart_mid_way_converges_without_duplicates(operator, kube, namespace):
    kube.apply(embedding("restart", namespace))
    kube.apply(embedding("restart2", namespace, gpu_type="h100"))
    operator.stop()  # possibly in the middle of reconciling
    try:
        # While it is down: a spec change and a deleted child, to be caught up with on resume.
        kube.apply(embedding("restart", namespace, replicas=2))
        kube.kubectl("delete", "service", "restart2", "-n", namespace, "--ignore-not-found", "--wait=false")
    finally:
        operator.start()
    for name in ("restart", "restart2"):
        kube.wait_condition("embsvc", name, namespace, "Ready", timeout=60)
    wait_for(lambda: kube.get("service", "restart2", namespace), 30, what="Service restart2 recreated")
    assert kube.get("deployment", "restart", namespace)["spec"]["replicas"] == 2
    for kind in ("deployments", "services", "replicasets"):
        names = [o["metadata"]["name"] for o in kube.list(kind, namespace)]
        if kind == "replicasets":
            assert len(names) == len(set(names))
            continue
        assert sorted(names) == ["restart", "restart2"], f"{kind}: {json.dumps(names)}"


# -- additive hand edits: fields server-side apply alone would leave in place ------------------------------------

def _pod_spec(kube, name, namespace):
    return kube.get("deployment", name, namespace)["spec"]["template"]["spec"]


def _reverts(kube, namespace, name):
    return [e["message"] for e in kube.events(namespace, name) if e["reason"] == "DriftReverted"]


def test_added_env_variable_is_removed_and_the_event_names_it_without_its_value(operator, kube, namespace):
    kube.apply(embedding("addenv", namespace))
    kube.wait_condition("embsvc", "addenv", namespace, "Ready")
    original = _env(kube.get("deployment", "addenv", namespace))
    kube.kubectl("set", "env", "deployment/addenv", "-n", namespace, "FOO=s3cr3t-value")
    wait_for(lambda: "FOO" not in _env(kube.get("deployment", "addenv", namespace)), PROMPT,
             what="env FOO to be removed")
    assert _env(kube.get("deployment", "addenv", namespace)) == original
    messages = wait_for(lambda: _reverts(kube, namespace, "addenv"), PROMPT, what="a DriftReverted event")
    assert "Reverted a hand edit of Deployment addenv: env FOO added by kubectl-set" in messages
    assert not any("s3cr3t-value" in m for m in messages)


def test_added_toleration_node_selector_and_sidecar_are_removed(operator, kube, namespace):
    kube.apply(embedding("addmore", namespace))
    kube.wait_condition("embsvc", "addmore", namespace, "Ready")
    rendered = _pod_spec(kube, "addmore", namespace)
    assert "nodeSelector" not in rendered
    kube.kubectl("patch", "deployment", "addmore", "-n", namespace, "--type=json", "-p", json.dumps([
        {"op": "add", "path": "/spec/template/spec/tolerations/-",
         "value": {"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}},
        {"op": "add", "path": "/spec/template/spec/nodeSelector", "value": {"zone": "eu-1a"}},
        {"op": "add", "path": "/spec/template/spec/containers/-", "value": {"name": "sidecar", "image": "busybox"}},
    ]))
    wait_for(lambda: _pod_spec(kube, "addmore", namespace) == rendered, PROMPT,
             what="the pod template to be exactly the rendered one again")
    messages = wait_for(lambda: _reverts(kube, namespace, "addmore"), PROMPT, what="a DriftReverted event")
    assert any("container sidecar added by kubectl-patch" in m and "nodeSelector set by kubectl-patch" in m
               for m in messages), messages


def test_rollout_restart_is_not_drift(operator, kube, namespace):
    kube.apply(embedding("restarted", namespace))
    kube.wait_condition("embsvc", "restarted", namespace, "Ready")
    kube.kubectl("rollout", "restart", "deployment/restarted", "-n", namespace)
    annotation = "kubectl.kubernetes.io/restartedAt"
    # The edit triggers a reconcile at once (Deployment watch). The control: a hand edit of the template after it;
    # once the operator has reverted that, it has reconciled a Deployment carrying the restart too.
    kube.wait_condition("embsvc", "restarted", namespace, "Ready", timeout=30)
    kube.kubectl("patch", "deployment", "restarted", "-n", namespace, "--type=merge", "-p",
                 json.dumps({"spec": {"template": {"metadata": {"annotations": {"team.example.com/control": "1"}}}}}))
    wait_for(lambda: "team.example.com/control" not in (kube.get("deployment", "restarted", namespace)["spec"][
        "template"]["metadata"].get("annotations") or {}), PROMPT, what="the control edit to be reverted")
    template = kube.get("deployment", "restarted", namespace)["spec"]["template"]
    assert annotation in template["metadata"]["annotations"]
    reverts = wait_for(lambda: _reverts(kube, namespace, "restarted"), PROMPT, what="the control's DriftReverted")
    assert any("team.example.com/control" in m for m in reverts), reverts
    assert not any("restartedAt" in m for m in reverts), reverts


# -- an operator upgrade re-renders Deployments: reported as such, not as drift ------------------------------------

@pytest.mark.slow  # restarts the operator as a new version: ~15 s
def test_an_operator_upgrade_is_reported_as_an_update_not_as_drift(operator, kube, namespace):
    from tei_operator.render.stamp import operator_version

    for name in ("upgraded", "resettled"):
        kube.apply(embedding(name, namespace))
    for name in ("upgraded", "resettled"):
        kube.wait_condition("embsvc", name, namespace, "Ready")
    old_image = tei_container(kube.get("deployment", "upgraded", namespace))["image"]
    operator.stop()
    try:
        # What an older operator would have left: its own version and hash, and shorter readiness probes.
        kube.kubectl("annotate", "deployment", "upgraded", "-n", namespace, "--overwrite",
                     "tei-operator.io/rendered-by=0.0.1", "tei-operator.io/rendered-hash=0123456789abcdef")
        kube.kubectl("patch", "deployment", "upgraded", "-n", namespace, "--type=json", "-p", json.dumps([
            {"op": "replace", "path": "/spec/template/spec/containers/0/readinessProbe/timeoutSeconds", "value": 1}]))
        # And the new operator comes with a new default TEI version (a settings change for "resettled").
        operator.extra_env["TEI_OPERATOR_TEI_VERSION"] = "1.9.2"
    finally:
        operator.start()
    try:
        dep = wait_for(lambda: (d := kube.get("deployment", "upgraded", namespace)) and
                       tei_container(d)["image"].endswith("1.9.2") and d, 30, what="the new render")
        assert tei_container(dep)["readinessProbe"]["timeoutSeconds"] == 5
        assert dep["metadata"]["annotations"]["tei-operator.io/rendered-by"] == operator_version()

        def event(name, reason):
            return next((e for e in kube.events(namespace, name) if e["reason"] == reason), None)

        upgraded = wait_for(lambda: event("upgraded", "OperatorUpgraded"), PROMPT, what="an OperatorUpgraded event")
        assert upgraded["type"] == "Normal"
        assert upgraded["message"].startswith(
            f"Updated Deployment upgraded after an operator upgrade (0.0.1 -> {operator_version()}): "
            f"image {old_image} -> {old_image.rsplit(':', 1)[0]}:")
        assert "readinessProbe.timeoutSeconds" in upgraded["message"]
        settled = wait_for(lambda: event("resettled", "SettingsChanged"), PROMPT, what="a SettingsChanged event")
        assert settled["type"] == "Normal" and "after a change of the operator's settings: image" in settled["message"]
        for name in ("upgraded", "resettled"):
            assert event(name, "DriftReverted") is None
    finally:
        operator.stop()
        operator.extra_env.pop("TEI_OPERATOR_TEI_VERSION", None)
        operator.start()
