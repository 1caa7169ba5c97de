"""Blue/green model changes: the spec fields, the render side (identity, names, retargeted children) and the state
machine over observed Deployments and Service, field by field."""

from __future__ import annotations

import copy
import datetime
import json

import pytest

from tei_operator.api import InvalidSpecError, ServiceResource, parse_spec
from tei_operator.api.crd import generate_crds
from tei_operator.api.rollout import active_deployment
from tei_operator.controller import status as st
from tei_operator.controller.rollout import (DRAINING, REASON_MODEL_CHANGE, STABLE, SWITCHING, adjust_conditions,
                                             plan_rollout, rollout_status, switch_ready)
from tei_operator.render import render_children
from tei_operator.render.rollout import (INSTANCE_LABEL, MODEL_ANNOTATION, MODEL_HASH_LABEL, RETIRED_AT_ANNOTATION,
                                         deployment_identity, deployment_name, describe_model, model_hash,
                                         model_identity, retarget)
from tei_operator.settings import Settings

SETTINGS = Settings()
NOW = datetime.datetime(2026, 11, 30, 14, 0, 0, tzinfo=datetime.timezone.utc)
OLD_SHA = "a" * 40
NEW_SHA = "b" * 40


def resource(model: dict | None = None, name: str = "bge-m3", **spec) -> ServiceResource:
    body = {"apiVersion": "tei-operator.io/v1alpha1", "kind": "EmbeddingService",
            "metadata": {"name": name, "namespace": "search", "uid": "uid-1"},
            "spec": {"model": model or {"id": "BAAI/bge-m3", "revision": OLD_SHA}, "gpu": {"type": "a100"},
                     "replicas": 2, **spec}}
    return ServiceResource.from_body(body)


def live_deployment(res: ServiceResource, name: str | None = None, *, replicas: int = 2, ready: int = 2,
                    retired: str | None = None, observed: bool = True) -> dict:
    """A Deployment as the API server would return it: rendered for `res`, with a status."""
    identity = model_identity(res.spec)
    children = retarget(render_children(res, SETTINGS), res.name, deployment=name or res.name, active=res.name,
                        identity=identity)
    dep = copy.deepcopy(children.deployment)
    dep["metadata"].update(generation=3, uid=f"uid-{dep['metadata']['name']}",
                           creationTimestamp="2026-11-30T13:50:00Z")
    dep["spec"]["replicas"] = replicas
    if retired:
        dep["metadata"].setdefault("annotations", {})[RETIRED_AT_ANNOTATION] = retired
    dep["status"] = {"observedGeneration": 3 if observed else 2, "replicas": replicas, "updatedReplicas": replicas,
                     "readyReplicas": ready, "availableReplicas": ready}
    return dep


def live_service(active: str) -> dict:
    return {"spec": {"selector": {"app.kubernetes.io/name": "text-embeddings-inference", INSTANCE_LABEL: active,
                                  "tei-operator.io/service": "bge-m3"}}}


def plan(res: ServiceResource, deployments: list[dict], service: dict | None, now=NOW):
    return plan_rollout(service_name=res.name, mode=res.spec.rollout.model_change,
                        identity=model_identity(res.spec), drain_seconds=res.spec.rollout.drain_seconds,
                        deployments=deployments, service=service, now=now)


# -- spec ---------------------------------------------------------------------------------------------------------
def test_rollout_defaults_to_blue_green_with_a_60_s_drain():
    spec = parse_spec("EmbeddingService", {"model": {"id": "BAAI/bge-m3"}})
    assert (spec.rollout.model_change, spec.rollout.drain_seconds) == ("BlueGreen", 60)
    assert (spec.rollout.max_surge, spec.rollout.max_unavailable) == (1, 0)  # the pod rollout fields stay


@pytest.mark.parametrize("rollout, field", [({"modelChange": "Rolling"}, "spec.rollout.modelChange"),
                                            ({"drainSeconds": -1}, "spec.rollout.drainSeconds"),
                                            ({"drainSeconds": 86401}, "spec.rollout.drainSeconds")])
def test_bad_rollout_fields_are_refused_by_name(rollout, field):
    with pytest.raises(InvalidSpecError, match=field.replace(".", r"\.")):
        parse_spec("EmbeddingService", {"model": {"id": "BAAI/bge-m3"}, "rollout": rollout})


def test_the_crd_schema_has_the_fields_with_enum_bounds_and_descriptions():
    for crd in generate_crds():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        rollout = schema["properties"]["spec"]["properties"]["rollout"]["properties"]
        assert rollout["modelChange"]["enum"] == ["BlueGreen", "InPlace"]
        assert rollout["modelChange"]["default"] == "BlueGreen"
        assert (rollout["drainSeconds"]["minimum"], rollout["drainSeconds"]["maximum"]) == (0, 86400)
        assert all(rollout[f]["description"] for f in ("modelChange", "drainSeconds"))
        status = schema["properties"]["status"]["properties"]["rollout"]["properties"]
        assert set(status) >= {"phase", "active", "candidate", "draining", "modelChange"}


def test_the_autoscaler_finds_the_active_deployment_in_status():
    assert active_deployment("bge-m3", {"rollout": {"active": {"deployment": "bge-m3-1a2b3c4d"}}}) == "bge-m3-1a2b3c4d"
    assert active_deployment("bge-m3", {}) == "bge-m3"  # a status written before blue/green existed
    assert active_deployment("bge-m3", None) == "bge-m3"


# -- render ---------------------------------------------------------------------------------------------------------
def test_identity_holds_what_the_embeddings_depend_on_and_nothing_else():
    res = resource({"id": "BAAI/bge-m3", "revision": OLD_SHA, "dtype": "float16", "pooling": "cls",
                    "defaultPrompt": "query: "}, engine={"maxBatchTokens": 8192})
    assert model_identity(res.spec) == {"id": "BAAI/bge-m3", "revision": OLD_SHA, "dtype": "float16",
                                        "pooling": "cls", "defaultPrompt": "query: "}
    # ... and it reads back the same from the rendered Deployment's env (how a live Deployment's model is known).
    assert deployment_identity(render_children(res, SETTINGS).deployment) == model_identity(res.spec)
    # Batching is not identity: the same hash, so such a change rolls in place.
    other = resource({"id": "BAAI/bge-m3", "revision": OLD_SHA, "dtype": "float16", "pooling": "cls",
                      "defaultPrompt": "query: "}, engine={"maxBatchTokens": 65536})
    assert model_hash(model_identity(other.spec)) == model_hash(model_identity(res.spec))
    assert model_hash({"id": "BAAI/bge-m3", "revision": NEW_SHA}) != model_hash({"id": "BAAI/bge-m3",
                                                                                 "revision": OLD_SHA})
    assert len(model_hash({"id": "x"})) == 8


def test_reranker_identity_has_no_embedding_fields():
    body = {"apiVersion": "tei-operator.io/v1alpha1", "kind": "RerankerService",
            "metadata": {"name": "rr", "namespace": "search"},
            "spec": {"model": {"id": "BAAI/bge-reranker-v2-m3", "dtype": "float32"}}}
    assert model_identity(ServiceResource.from_body(body).spec) == {"id": "BAAI/bge-reranker-v2-m3",
                                                                    "dtype": "float32"}


def test_a_hand_edit_of_the_env_is_not_a_model_change():
    """The identity is the one the Deployment was rendered for (its annotation), not whatever its env says now; a
    Deployment without the annotation (rendered before blue/green existed) is read from its env."""
    res = resource()
    dep = live_deployment(res)
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    next(e for e in env if e["name"] == "MODEL_ID")["value"] = "someone/else"
    assert deployment_identity(dep) == model_identity(res.spec)
    p = plan(res, [dep], live_service("bge-m3"))
    assert (p.target, p.switching) == ("bge-m3", False)  # re-applied in place: the edit is reverted
    del dep["metadata"]["annotations"][MODEL_ANNOTATION]
    assert deployment_identity(dep)["id"] == "someone/else"


def test_describe_model():
    assert describe_model({"id": "BAAI/bge-m3", "revision": "abc123"}) == "BAAI/bge-m3@abc123"
    assert describe_model({"id": "BAAI/bge-m3"}) == "BAAI/bge-m3"
    assert describe_model({"id": "m", "pooling": "cls"}) == "m (pooling=cls)"


def test_deployment_name_is_the_service_name_plus_the_model_hash():
    identity = {"id": "BAAI/bge-m3", "revision": NEW_SHA}
    assert deployment_name("bge-m3", identity) == f"bge-m3-{model_hash(identity)}"
    # Too long for a label value: cut, and the suffix then tells two long names with one prefix apart.
    a, b = "a" * 60 + "x", "a" * 60 + "y"
    name_a, name_b = deployment_name(a, identity), deployment_name(b, identity)
    assert len(name_a) <= 63 and len(name_b) <= 63 and name_a != name_b
    assert name_a.startswith("a" * 54) and not name_a[:-9].endswith("-")


def test_the_deployment_named_like_the_service_renders_exactly_as_before():
    """The upgrade guarantee: a Deployment created before blue/green existed is re-applied unchanged (no
    restart), and the Service's selector is the one it had."""
    res = resource()
    before = render_children(res, SETTINGS)
    after = retarget(before, "bge-m3", deployment="bge-m3", active="bge-m3", identity=model_identity(res.spec))
    assert after.deployment["spec"] == before.deployment["spec"]  # pod template and selector: no restart
    assert after.deployment["metadata"]["labels"] == before.deployment["metadata"]["labels"]
    assert after.deployment["metadata"]["name"] == "bge-m3"
    # Only the metadata gains the identity it was rendered for (and the stamp hashes that).
    annotations = after.deployment["metadata"]["annotations"]
    assert json.loads(annotations[MODEL_ANNOTATION]) == {"id": "BAAI/bge-m3", "revision": OLD_SHA}
    assert after.service == before.service
    assert after.pdb == before.pdb


def test_a_candidate_gets_its_own_name_instance_and_model_hash():
    res = resource({"id": "BAAI/bge-m3", "revision": NEW_SHA})
    identity = model_identity(res.spec)
    name = deployment_name("bge-m3", identity)
    children = retarget(render_children(res, SETTINGS), "bge-m3", deployment=name, active="bge-m3",
                        identity=identity)
    dep = children.deployment
    assert dep["metadata"]["name"] == name
    assert dep["metadata"]["labels"][INSTANCE_LABEL] == name
    assert dep["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "text-embeddings-inference",
                                                      INSTANCE_LABEL: name, "tei-operator.io/service": "bge-m3"}
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels[INSTANCE_LABEL] == name and labels[MODEL_HASH_LABEL] == model_hash(identity)
    assert labels["tei-operator.io/service"] == "bge-m3"  # the pods still belong to the service
    assert json.loads(dep["metadata"]["annotations"][MODEL_ANNOTATION]) == identity
    (spread,) = dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"][INSTANCE_LABEL] == name
    # The Service and PDB still select the active one until the switch.
    assert children.service["spec"]["selector"][INSTANCE_LABEL] == "bge-m3"
    assert children.pdb["spec"]["selector"]["matchLabels"][INSTANCE_LABEL] == "bge-m3"
    switched = retarget(render_children(res, SETTINGS), "bge-m3", deployment=name, active=name, identity=identity)
    assert switched.service["spec"]["selector"][INSTANCE_LABEL] == name
    assert switched.pdb["spec"]["selector"]["matchLabels"][INSTANCE_LABEL] == name
    assert switched.deployment == dep


def test_the_network_policy_admits_to_every_pod_of_the_service_once_it_has_two_deployments():
    res = resource(networkPolicy={"enabled": True})
    rendered = render_children(res, SETTINGS)
    # Only the Deployment named like the service: as rendered (an upgrade does not touch it).
    same = retarget(rendered, "bge-m3", deployment="bge-m3", active="bge-m3", identity=model_identity(res.spec))
    assert same.network_policy == rendered.network_policy
    for deployment, active in (("bge-m3-1a2b3c4d", "bge-m3"), ("bge-m3-1a2b3c4d", "bge-m3-1a2b3c4d"),
                               ("bge-m3", "bge-m3-1a2b3c4d")):
        children = retarget(rendered, "bge-m3", deployment=deployment, active=active,
                            identity=model_identity(res.spec))
        assert children.network_policy["spec"]["podSelector"]["matchLabels"] == {
            "app.kubernetes.io/name": "text-embeddings-inference", "tei-operator.io/service": "bge-m3"}


# -- the state machine ----------------------------------------------------------------------------------------------
def test_a_new_service_gets_a_deployment_named_like_it():
    res = resource()
    p = plan(res, [], None)
    assert (p.target, p.active, p.switching, p.delete, p.draining) == ("bge-m3", "bge-m3", False, (), ())


def test_an_upgraded_service_keeps_its_deployment_as_the_active_one():
    res = resource()
    p = plan(res, [live_deployment(res)], live_service("bge-m3"))
    assert (p.target, p.active, p.switching) == ("bge-m3", "bge-m3", False)
    assert p.active_identity == model_identity(res.spec)


def test_a_revision_change_starts_a_candidate_with_the_active_replica_count():
    old = resource()
    new = resource({"id": "BAAI/bge-m3", "revision": NEW_SHA})
    p = plan(new, [live_deployment(old, replicas=5, ready=5)], live_service("bge-m3"))
    assert p.switching and p.active == "bge-m3"
    assert p.target == deployment_name("bge-m3", model_identity(new.spec))
    assert p.candidate_replicas == 5 and p.delete == ()
    assert p.active_identity["revision"] == OLD_SHA and p.identity["revision"] == NEW_SHA


def test_in_place_rolls_the_active_deployment():
    old = resource()
    new = resource({"id": "BAAI/bge-m3", "revision": NEW_SHA}, rollout={"modelChange": "InPlace"})
    p = plan(new, [live_deployment(old)], live_service("bge-m3"))
    assert (p.target, p.active, p.switching, p.candidate_replicas) == ("bge-m3", "bge-m3", False, None)


def test_a_non_model_change_rolls_in_place_even_with_blue_green():
    old = resource()
    new = resource(engine={"maxBatchTokens": 4096})
    p = plan(new, [live_deployment(old)], live_service("bge-m3"))
    assert (p.target, p.switching) == ("bge-m3", False)


def test_reverting_the_spec_during_a_switch_deletes_the_candidate():
    old = resource()
    new = resource({"id": "BAAI/bge-m3", "revision": NEW_SHA})
    candidate = live_deployment(new, deployment_name("bge-m3", model_identity(new.spec)), ready=0)
    p = plan(old, [live_deployment(old), candidate], live_service("bge-m3"))
    assert (p.target, p.switching) == ("bge-m3", False)
    (deletion,) = p.delete
    assert deletion.name == candidate["metadata"]["name"] and deletion.reason == "ModelChangeAbandoned"
    assert NEW_SHA in deletion.message


def test_a_second_change_during_a_switch_replaces_the_candidate():
    old = resource()
    mid = resource({"id": "BAAI/bge-m3", "revision": NEW_SHA})
    last = resource({"id": "BAAI/bge-m3", "revision": "c" * 40})
    stale = live_deployment(mid, deployment_name("bge-m3", model_identity(mid.spec)), ready=1)
    p = plan(last, [live_deployment(old), stale], live_service("bge-m3"))
    assert p.switching and p.target == deployment_name("bge-m3", model_identity(last.spec))
    assert [d.name for d in p.delete] == [stale["metadata"]["name"]]


def test_after_the_switch_the_old_deployment_drains_then_goes():
    old = resource()
    new = resource({"id": "BAAI/bge-m3", "revision": NEW_SHA})
    name = deployment_name("bge-m3", model_identity(new.spec))
    retired = live_deployment(old, retired="2026-11-30T13:59:30Z")
    deployments = [retired, live_deployment(new, name)]
    p = plan(new, deployments, live_service(name))
    assert (p.target, p.active, p.switching, p.delete) == (name, name, False, ())
    assert p.draining == (("bge-m3", datetime.datetime(2026, 11, 30, 14, 0, 30, tzinfo=datetime.timezone.utc)),)
    assert p.requeue_after(NOW) == 30.0
    later = plan(new, deployments, live_service(name), now=NOW + datetime.timedelta(seconds=30))
    (deletion,) = later.delete
    assert (deletion.name, deletion.reason) == ("bge-m3", "Drained") and later.draining == ()
    assert deletion.message == f"Deleted Deployment bge-m3 (model BAAI/bge-m3@{OLD_SHA}) after draining for 60 s"


def test_switching_back_while_the_old_one_drains_takes_it_back():
    old = resource()
    new = resource({"id": "BAAI/bge-m3", "revision": NEW_SHA})
    name = deployment_name("bge-m3", model_identity(new.spec))
    deployments = [live_deployment(old, retired="2026-11-30T13:59:30Z"), live_deployment(new, name)]
    p = plan(old, deployments, live_service(name))
    assert (p.target, p.active, p.switching, p.unretire) == ("bge-m3", name, True, True)
    assert p.delete == () and p.draining == ()


def test_the_service_selector_names_the_active_deployment():
    old = resource()
    new = resource({"id": "BAAI/bge-m3", "revision": NEW_SHA})
    name = deployment_name("bge-m3", model_identity(new.spec))
    # The Service selects a Deployment that no longer exists: the one named like the service takes over.
    p = plan(old, [live_deployment(old)], live_service(name))
    assert p.active == "bge-m3"


def test_a_deleted_service_does_not_lose_the_serving_deployment():
    """After a switch the Service is deleted: the Deployment that served stays the active one (it is not taken for
    an abandoned candidate), and the draining one keeps draining."""
    old = resource()
    new = resource({"id": "BAAI/bge-m3", "revision": NEW_SHA})
    name = deployment_name("bge-m3", model_identity(new.spec))
    deployments = [live_deployment(old, retired="2026-11-30T13:59:30Z"), live_deployment(new, name)]
    p = plan(new, deployments, None)
    assert (p.active, p.target, p.switching, p.delete) == (name, name, False, ())
    assert [n for n, _ in p.draining] == ["bge-m3"]
    # With none switched away from, the one with the most Ready replicas.
    p = plan(new, [live_deployment(old, ready=0), live_deployment(new, name, ready=2)], None)
    assert (p.active, p.switching) == (name, False)


def test_switch_ready_needs_every_replica_ready_and_the_active_count():
    new = resource({"id": "BAAI/bge-m3", "revision": NEW_SHA})
    assert switch_ready(None, 2)[0] is False
    assert switch_ready(live_deployment(new, "c", replicas=2, ready=1), 2) == (False, "Deployment c: 1 of 2 "
                                                                                      "replicas ready")
    assert switch_ready(live_deployment(new, "c", replicas=2, ready=2, observed=False), 2)[0] is False
    ok, why = switch_ready(live_deployment(new, "c", replicas=2, ready=2), 3)
    assert not ok and why == "Deployment c: 2 of 3 replicas asked for yet"
    assert switch_ready(live_deployment(new, "c", replicas=3, ready=3), 3)[0] is True
    assert switch_ready(live_deployment(new, "c", replicas=2, ready=2), None)[0] is True


def test_rollout_status_in_each_phase():
    old = resource()
    new = resource({"id": "BAAI/bge-m3", "revision": NEW_SHA})
    name = deployment_name("bge-m3", model_identity(new.spec))
    active, candidate = live_deployment(old, replicas=2, ready=2), live_deployment(new, name, replicas=2, ready=1)
    by_name = {"bge-m3": active, name: candidate}
    p = plan(new, [active, candidate], live_service("bge-m3"))
    switching = rollout_status(p, mode="BlueGreen", active="bge-m3", deployments=by_name, waiting="1 of 2 ready")
    assert switching["phase"] == SWITCHING
    # Every key present (None: not applicable), so a merge patch removes what no longer applies.
    assert switching["active"] == {"deployment": "bge-m3", "model": f"BAAI/bge-m3@{OLD_SHA}",
                                   "modelHash": model_hash(model_identity(old.spec)), "replicas": 2,
                                   "readyReplicas": 2, "startedTime": None, "waitingFor": None,
                                   "deleteAfter": None}
    assert switching["candidate"]["deployment"] == name and switching["candidate"]["readyReplicas"] == 1
    assert switching["candidate"]["startedTime"] == "2026-11-30T13:50:00Z"
    assert switching["candidate"]["waitingFor"] == "1 of 2 ready"
    # Switched in this reconcile: the old one is listed as draining at once.
    switched = rollout_status(p, mode="BlueGreen", active=name, deployments=by_name, waiting=None)
    assert switched["phase"] == DRAINING and switched["active"]["deployment"] == name
    assert [d["deployment"] for d in switched["draining"]] == ["bge-m3"] and switched["candidate"] is None
    stable = rollout_status(plan(old, [active], live_service("bge-m3")), mode="BlueGreen", active="bge-m3",
                            deployments={"bge-m3": active}, waiting=None)
    assert stable == {"modelChange": "BlueGreen", "phase": STABLE, "active": switching["active"],
                      "candidate": None, "draining": None}


def test_a_key_set_to_none_equals_its_absence_when_comparing_status():
    stored = {"rollout": {"phase": "Stable", "active": {"deployment": "a"}}}
    assert st.changed_status(stored, {"rollout": {"phase": "Stable", "active": {"deployment": "a",
                                                                                "waitingFor": None},
                                                  "candidate": None}}) == {}
    desired = {"rollout": {"phase": "Stable", "active": {"deployment": "a"}, "candidate": None}}
    switching = {"rollout": {"phase": "Switching", "active": {"deployment": "a"}, "candidate": {"deployment": "b"}}}
    assert st.changed_status(switching, desired) == desired  # the patch removes the candidate


def test_conditions_during_a_switch_follow_the_candidate_but_available_the_active():
    old = resource()
    new = resource({"id": "BAAI/bge-m3", "revision": NEW_SHA})
    name = deployment_name("bge-m3", model_identity(new.spec))
    active, candidate = live_deployment(old), live_deployment(new, name, replicas=2, ready=0)
    p = plan(new, [active, candidate], live_service("bge-m3"))
    from_candidate = st.desired_conditions(generation=4, deployment=candidate, pods=[])
    by_type = {c["type"]: c for c in adjust_conditions(from_candidate, plan=p, active_deployment=active,
                                                       min_available=1, generation=4, waiting="0 of 2 ready")}
    assert (by_type["Available"]["status"], by_type["Available"]["reason"]) == ("True", st.REASON_MIN_AVAILABLE)
    assert (by_type["Ready"]["status"], by_type["Ready"]["reason"]) == ("False", REASON_MODEL_CHANGE)
    assert (by_type["Progressing"]["status"], by_type["Progressing"]["reason"]) == ("True", REASON_MODEL_CHANGE)
    assert (by_type["Reconciling"]["status"], by_type["Reconciling"]["reason"]) == ("True", REASON_MODEL_CHANGE)
    assert by_type["Stalled"]["status"] == "False"
    assert f"from Deployment bge-m3 (model BAAI/bge-m3@{OLD_SHA}) to Deployment {name}" in by_type["Ready"]["message"]


def test_a_crash_looping_candidate_stalls_the_service_while_the_old_model_serves():
    old = resource()
    new = resource({"id": "BAAI/bge-m3", "revision": NEW_SHA})
    name = deployment_name("bge-m3", model_identity(new.spec))
    active, candidate = live_deployment(old), live_deployment(new, name, replicas=1, ready=0)
    crashing = {"metadata": {"name": f"{name}-abc"}, "status": {"phase": "Running", "containerStatuses": [{
        "name": "tei", "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "message": "model not found"}}}]}}
    p = plan(new, [active, candidate], live_service("bge-m3"))
    conditions = st.desired_conditions(generation=4, deployment=candidate, pods=[crashing])
    by_type = {c["type"]: c for c in adjust_conditions(conditions, plan=p, active_deployment=active,
                                                       min_available=1, generation=4, waiting="0 of 1 ready")}
    assert (by_type["Ready"]["status"], by_type["Ready"]["reason"]) == ("False", st.REASON_CRASH_LOOP)
    assert (by_type["Stalled"]["status"], by_type["Stalled"]["reason"]) == ("True", st.REASON_CRASH_LOOP)
    assert (by_type["Reconciling"]["status"], by_type["Reconciling"]["reason"]) == ("False", st.REASON_CRASH_LOOP)
    assert by_type["Degraded"]["status"] == "True"
    assert by_type["Available"]["status"] == "True"  # the old model still serves


def test_render_as_stored_uses_the_deployments_the_status_names():
    from tei_operator.render.rollout import render_as_stored
    res = resource({"id": "BAAI/bge-m3", "revision": NEW_SHA})
    name = deployment_name("bge-m3", model_identity(res.spec))
    fresh = render_as_stored(res, SETTINGS, None)
    assert fresh.deployment["metadata"]["name"] == "bge-m3"
    switching = render_as_stored(res, SETTINGS, {"rollout": {"active": {"deployment": "bge-m3"},
                                                             "candidate": {"deployment": name}}})
    assert switching.deployment["metadata"]["name"] == name
    assert switching.service["spec"]["selector"][INSTANCE_LABEL] == "bge-m3"
    done = render_as_stored(res, SETTINGS, {"rollout": {"active": {"deployment": name}, "candidate": None}})
    assert done.deployment["metadata"]["name"] == name and done.service["spec"]["selector"][INSTANCE_LABEL] == name


def test_the_autoscaler_sees_the_active_deployment_and_its_pods_only():
    """autoscaling/loop.py picks each service's Deployment from status.rollout.active: during a switch it scales the
    serving Deployment and counts its pods, not the candidate's."""
    from tei_operator.autoscaling.loop import Autoscaler

    old = resource()
    new = resource({"id": "BAAI/bge-m3", "revision": NEW_SHA})
    name = deployment_name("bge-m3", model_identity(new.spec))
    active, candidate = live_deployment(old, replicas=3), live_deployment(new, name, replicas=3, ready=0)

    def pod(dep):
        labels = dep["spec"]["template"]["metadata"]["labels"]
        return {"metadata": {"name": f"{dep['metadata']['name']}-x", "namespace": "search", "labels": labels}}

    body = {"metadata": {"name": "bge-m3", "namespace": "search", "uid": "uid-1"},
            "status": {"rollout": {"active": {"deployment": "bge-m3"}, "candidate": {"deployment": name}}}}
    deployments = {("search", "bge-m3"): active, ("search", name): candidate}
    (view,) = Autoscaler._views([(None, body, new)], deployments, [pod(active), pod(candidate)])
    assert view.deployment is active and [p["metadata"]["name"] for p in view.pods] == ["bge-m3-x"]
    body["status"]["rollout"] = {"active": {"deployment": name}}  # switched
    (view,) = Autoscaler._views([(None, body, new)], deployments, [pod(active), pod(candidate)])
    assert view.deployment is candidate and [p["metadata"]["name"] for p in view.pods] == [f"{name}-x"]


def test_serving_view_splits_pods_and_deployments_between_the_two_sides():
    from tei_operator.controller.rollout import serving_view

    old = resource()
    new = resource({"id": "BAAI/bge-m3", "revision": NEW_SHA})
    name = deployment_name("bge-m3", model_identity(new.spec))
    active, candidate = live_deployment(old), live_deployment(new, name, ready=1)
    pods = [{"metadata": {"name": f"{d['metadata']['name']}-p",
                          "labels": dict(d["spec"]["template"]["metadata"]["labels"])}} for d in (active, candidate)]
    p = plan(new, [active, candidate], live_service("bge-m3"))
    view = serving_view(p, mode="BlueGreen", serving="bge-m3", deployment=candidate,
                        deployments={"bge-m3": active, name: candidate}, pods=pods, waiting="1 of 2",
                        min_available=1, generation=4)
    assert view.serving_deployment is active and view.served_identity["revision"] == OLD_SHA
    assert [x["metadata"]["name"] for x in view.serving_pods] == ["bge-m3-p"]
    assert [x["metadata"]["name"] for x in view.target_pods] == [f"{name}-p"]
    assert view.status["phase"] == SWITCHING and view.adjust is not None
    done = serving_view(p, mode="BlueGreen", serving=name, deployment=candidate,
                        deployments={"bge-m3": active, name: candidate}, pods=pods, waiting="",
                        min_available=1, generation=4)
    assert done.serving_deployment is candidate and done.served_identity["revision"] == NEW_SHA
    assert done.serving_pods == done.target_pods and done.adjust is None and done.status["phase"] == DRAINING
