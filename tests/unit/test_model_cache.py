"""The managed model cache (spec.cache.managed): the API's rules, the PVC, download Job and pod changes rendered
field by field, and the decision from observed claim/Jobs/status to actions and conditions (pure, no cluster)."""

from __future__ import annotations

import copy

import pytest

from tei_operator.api import ServiceResource
from tei_operator.api.resource import InvalidSpecError
from tei_operator.controller.model_cache import (CACHE_READY, CachePlan, job_phase, plan_cache)
from tei_operator.render import render_children
from tei_operator.render.cache import (claim_name, hub_id_from_snapshot, job_name, render_cache_pvc,
                                       render_download_job, snapshot_path)
from tei_operator.render.labels import selector_labels
from tei_operator.settings import Settings

SHA = "5617a9f61b028005a4858fdac845db406aefb181"
SHA2 = "0123456789abcdef0123456789abcdef01234567"
SETTINGS = Settings()


def spec(**cache) -> dict:
    return {"model": {"id": "BAAI/bge-m3", "revision": SHA, "tokenSecretRef": {"name": "hf", "key": "token"}},
            "gpu": {"count": 1, "type": "a100"}, "cache": {"managed": {"size": "20Gi", **cache}},
            "podAnnotations": {"sidecar.istio.io/inject": "false"}, "nodeSelector": {"pool": "gpu"}}


def resource(body_spec: dict | None = None, name: str = "bge-m3") -> ServiceResource:
    return ServiceResource.from_body({
        "apiVersion": "tei-operator.io/v1alpha1", "kind": "EmbeddingService",
        "metadata": {"name": name, "namespace": "search", "uid": "uid-1"}, "spec": body_spec or spec()})


# --- API -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model, expected", [
    ({"id": "BAAI/bge-m3"}, "spec.model.revision: spec.cache.managed needs spec.model.revision pinned"),
    ({"id": "BAAI/bge-m3", "revision": "main"}, "spec.model.revision: spec.cache.managed needs"),
    ({"id": "BAAI/bge-m3", "revision": SHA[:12]}, "spec.model.revision: spec.cache.managed needs"),
    ({"id": "/data/my-model", "revision": SHA}, "spec.model.id: spec.cache.managed downloads spec.model.id"),
])
def test_a_managed_cache_needs_a_pinned_hub_model(model, expected):
    body = spec()
    body["model"] = model
    with pytest.raises(InvalidSpecError) as err:
        resource(body)
    assert expected in str(err.value)


@pytest.mark.parametrize("cache, expected", [
    ({"managed": {"size": "20Gi"}, "emptyDir": {}}, "set exactly one of emptyDir, persistentVolumeClaim or managed"),
    ({"managed": {}}, "spec.cache.managed.size"),
    ({"managed": {"size": "20Gi", "accessModes": ["ReadOnlyMany"]}}, "spec.cache.managed.accessModes"),
    ({"managed": {"size": "20Gi", "accessModes": ["ReadWriteOnce", "ReadWriteOnce"]}},
     "spec.cache.managed.accessModes: each access mode may appear once"),
    ({"managed": {"size": "lots"}}, "spec.cache.managed.size"),
])
def test_bad_managed_cache_names_the_field(cache, expected):
    body = spec()
    body["cache"] = cache
    with pytest.raises(InvalidSpecError) as err:
        resource(body)
    assert expected in str(err.value)


def test_existing_cache_modes_are_unchanged():
    plain = resource({"model": {"id": "BAAI/bge-m3"}})
    assert plain.spec.cache.managed is None and plain.spec.cache.empty_dir is not None
    volumes = render_children(plain, SETTINGS).deployment["spec"]["template"]["spec"]["volumes"]
    assert volumes == [{"name": "data", "emptyDir": {}}]


# --- render ----------------------------------------------------------------------------------------------------------

def test_pvc_field_by_field():
    pvc = render_cache_pvc(resource(spec(storageClassName="nfs", accessModes=["ReadWriteOnce"])))
    assert pvc["apiVersion"] == "v1" and pvc["kind"] == "PersistentVolumeClaim"
    assert pvc["metadata"]["name"] == "bge-m3-model-cache" == claim_name(resource())
    assert pvc["metadata"]["namespace"] == "search"
    assert pvc["metadata"]["labels"]["app.kubernetes.io/component"] == "model-cache"
    assert pvc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "tei-operator"
    assert pvc["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert pvc["metadata"]["ownerReferences"][0]["controller"] is True
    assert pvc["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}},
                           "volumeMode": "Filesystem", "storageClassName": "nfs"}


def test_pvc_defaults_to_read_write_many_and_the_default_class():
    pvc = render_cache_pvc(resource())
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "storageClassName" not in pvc["spec"]


def test_download_job_field_by_field():
    res = resource()
    job = render_download_job(res, SETTINGS)
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert job["metadata"]["name"] == job_name(res)
    assert job["metadata"]["name"].startswith("bge-m3-cache-") and len(job["metadata"]["name"]) <= 63
    assert job["metadata"]["annotations"] == {"tei-operator.io/model-id": "BAAI/bge-m3",
                                              "tei-operator.io/model-revision": SHA}
    assert job["metadata"]["ownerReferences"][0]["kind"] == "EmbeddingService"
    assert job["spec"]["backoffLimit"] == SETTINGS.cache_job_backoff_limit == 3
    assert job["spec"]["activeDeadlineSeconds"] == SETTINGS.cache_job_deadline_seconds
    template = job["spec"]["template"]
    # the download pod never carries the TEI pods' selector labels (the Service would route to it)
    labels = template["metadata"]["labels"]
    assert not set(selector_labels(res).items()) <= set(labels.items())
    assert "tei-operator.io/service" not in labels
    assert labels == {"app.kubernetes.io/managed-by": "tei-operator", "app.kubernetes.io/component": "model-cache",
                      "tei-operator.io/cache-of": "bge-m3"}
    assert template["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    pod = template["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "bge-m3-model-cache"}}]
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert any(t.get("key") == "nvidia.com/gpu" for t in pod["tolerations"])  # scheduled like the TEI pods
    (container,) = pod["containers"]
    assert container["image"] == "python:3.12-slim"
    assert container["command"][:2] == ["/bin/sh", "-c"]
    assert 'hf download "$MODEL_ID" --revision "$REVISION" --cache-dir "$HF_HUB_CACHE"' in container["command"][2]
    assert container["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    assert "nvidia.com/gpu" not in str(container["resources"])
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    env = {e["name"]: e for e in container["env"]}
    assert env["MODEL_ID"]["value"] == "BAAI/bge-m3"
    assert env["REVISION"]["value"] == SHA
    assert env["HF_HUB_CACHE"]["value"] == "/data"
    assert env["SNAPSHOT"]["value"] == f"/data/models--BAAI--bge-m3/snapshots/{SHA}"
    assert "onnx/*" in env["SKIP_FILES"]["value"].split()  # a GPU service never reads the ONNX weights
    # the token only by reference, never inline
    assert env["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
    assert "value" not in env["HF_TOKEN"]


def test_download_job_is_placed_like_the_tei_pods_without_their_priority():
    body = spec()
    body.update({"tolerations": [{"key": "team", "operator": "Equal", "value": "search", "effect": "NoSchedule"}],
                 "priorityClassName": "serving-high", "serviceAccountName": "tei",
                 "engine": {"imagePullSecrets": [{"name": "regcred"}]}})
    res = resource(body)
    job_pod = render_download_job(res, SETTINGS)["spec"]["template"]["spec"]
    tei_pod = render_children(res, SETTINGS).deployment["spec"]["template"]["spec"]
    for field in ("nodeSelector", "tolerations", "affinity", "serviceAccountName", "imagePullSecrets"):
        assert job_pod[field] == tei_pod[field], field
    assert tei_pod["priorityClassName"] == "serving-high"
    assert "priorityClassName" not in job_pod  # a download never preempts serving pods


def test_download_job_keeps_onnx_for_cpu_and_takes_the_image_from_settings():
    body = spec()
    body["gpu"] = {"count": 0}
    job = render_download_job(resource(body), Settings(cache_download_image="mirror.local/hf-cli:1",
                                                       cache_job_backoff_limit=0))
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "mirror.local/hf-cli:1"
    assert "onnx/*" not in {e["name"]: e for e in container["env"]}["SKIP_FILES"]["value"].split()
    assert job["spec"]["backoffLimit"] == 0


def test_a_new_revision_is_a_new_job_and_long_names_fit():
    body = spec()
    first = job_name(resource(body))
    body["model"]["revision"] = SHA2
    assert job_name(resource(body)) != first
    long = resource(spec(), name="a" * 63)
    assert len(job_name(long)) <= 63
    assert job_name(long) != job_name(resource(spec(), name="a" * 62))


def test_tei_pods_mount_the_claim_read_only_and_load_the_snapshot_offline():
    res = resource()
    template = render_children(res, SETTINGS).deployment["spec"]["template"]["spec"]
    assert template["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "bge-m3-model-cache",
                                                                              "readOnly": True}}]
    (tei,) = template["containers"]
    assert tei["volumeMounts"] == [{"name": "data", "mountPath": "/data", "readOnly": True}]
    env = {e["name"]: e.get("value") for e in tei["env"]}
    assert env["MODEL_ID"] == snapshot_path("BAAI/bge-m3", SHA) == f"/data/models--BAAI--bge-m3/snapshots/{SHA}"
    assert env["REVISION"] == SHA  # still reported by /info as model_sha
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["SERVED_MODEL_NAME"] == "BAAI/bge-m3"


def test_user_env_still_wins_and_a_served_name_is_kept():
    body = spec()
    body["model"]["servedModelName"] = "bge"
    body["engine"] = {"env": [{"name": "HF_HUB_OFFLINE", "value": "0"}]}
    (tei,) = render_children(resource(body), SETTINGS).deployment["spec"]["template"]["spec"]["containers"]
    names = [e["name"] for e in tei["env"]]
    assert names.count("SERVED_MODEL_NAME") == 1
    assert {e["name"]: e.get("value") for e in tei["env"]}["SERVED_MODEL_NAME"] == "bge"
    assert names.index("HF_HUB_OFFLINE") < len(names) - 1 and tei["env"][-1] == {"name": "HF_HUB_OFFLINE",
                                                                                 "value": "0"}


def test_hub_id_from_snapshot():
    assert hub_id_from_snapshot(f"/data/models--BAAI--bge-m3/snapshots/{SHA}") == "BAAI/bge-m3"
    assert hub_id_from_snapshot(f"/data/models--bert-base-uncased/snapshots/{SHA}") == "bert-base-uncased"
    assert hub_id_from_snapshot("BAAI/bge-m3") is None
    assert hub_id_from_snapshot("/data/my-model") is None


# --- decision --------------------------------------------------------------------------------------------------------

def job(name: str, *, complete: bool = False, failed: str | None = None, ready: int = 0, active: int = 0) -> dict:
    conditions = []
    if complete:
        conditions.append({"type": "Complete", "status": "True"})
    if failed:
        conditions.append({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": failed})
    return {"metadata": {"name": name}, "status": {"conditions": conditions, "ready": ready, "active": active}}


def bound_pvc(res: ServiceResource, **spec_over) -> dict:
    pvc = copy.deepcopy(render_cache_pvc(res))
    pvc["spec"].update(spec_over)
    pvc["status"] = {"phase": "Bound"}
    return pvc


def plan(res: ServiceResource, **kw) -> CachePlan:
    kw.setdefault("pvc", None)
    kw.setdefault("jobs", [])
    kw.setdefault("current", None)
    return plan_cache(res, SETTINGS, generation=4, **kw)


def test_first_reconcile_creates_claim_and_job_and_holds_the_deployment():
    res = resource()
    p = plan(res)
    assert p.create_pvc == render_cache_pvc(res)
    assert p.create_job == render_download_job(res, SETTINGS)
    assert p.hold is True and p.delete_jobs == () and p.delete_pvc is None
    assert p.status["phase"] == "Pending" and p.status["revision"] == SHA
    assert p.status["claimName"] == "bge-m3-model-cache" and p.status["jobName"] == job_name(res)
    assert p.condition == {"type": CACHE_READY, "status": "False", "reason": "CachePending",
                           "message": p.status["message"], "observedGeneration": 4}


def test_phases_follow_the_job():
    res = resource()
    name = job_name(res)
    pvc = bound_pvc(res)
    assert plan(res, pvc=pvc, jobs=[job(name, active=1)]).status["phase"] == "Pending"
    downloading = plan(res, pvc=pvc, jobs=[job(name, active=1, ready=1)])
    assert downloading.status["phase"] == "Downloading" and downloading.hold
    assert downloading.create_job is None and downloading.create_pvc is None  # both exist: nothing re-applied
    ready = plan(res, pvc=pvc, jobs=[job(name, complete=True)])
    assert ready.status["phase"] == "Ready" and ready.hold is False
    assert ready.condition["status"] == "True" and ready.condition["reason"] == "CacheFilled"
    assert "holds BAAI/bge-m3@5617a9f61b02" in ready.status["message"]


def test_a_failed_download_says_why_and_keeps_holding():
    res = resource()
    name = job_name(res)
    p = plan_cache(res, SETTINGS, pvc=bound_pvc(res), jobs=[job(name, failed="Job has reached the specified backoff "
                                                                 "limit")], current=None, generation=2,
                   failure_detail="401 Client Error: gated repo")
    assert p.status["phase"] == "Failed" and p.hold is True and p.create_job is None
    assert "Job has reached the specified backoff limit" in p.status["message"]
    assert "401 Client Error: gated repo" in p.status["message"]
    assert f"delete Job {name} to retry" in p.status["message"]
    assert p.condition["reason"] == "DownloadFailed"


def test_an_unbound_claim_is_explained():
    res = resource()
    pvc = bound_pvc(res)
    pvc["status"] = {"phase": "Pending"}
    p = plan(res, pvc=pvc, jobs=[job(job_name(res), active=1)])
    assert "the claim is Pending" in p.status["message"] and "ReadWriteMany" in p.status["message"]


def test_a_new_revision_creates_a_new_job_and_deletes_the_old_one():
    old = resource()
    old_name = job_name(old)
    body = spec()
    body["model"]["revision"] = SHA2
    new = resource(body)
    current = {"phase": "Ready", "revision": SHA, "jobName": old_name}
    p = plan(new, pvc=bound_pvc(new), jobs=[job(old_name, complete=True)], current=current)
    assert p.create_job is not None and p.create_job["metadata"]["name"] == job_name(new) != old_name
    assert p.delete_jobs == (old_name,)
    assert p.hold is True and p.status["revision"] == SHA2 and p.status["phase"] == "Pending"


def test_a_filled_revision_is_remembered_when_its_job_is_gone():
    res = resource()
    current = {"phase": "Ready", "revision": SHA}
    p = plan(res, pvc=bound_pvc(res), current=current)
    assert p.status["phase"] == "Ready" and p.create_job is None and p.hold is False
    # ... but not when the claim is gone too (it is recreated empty), nor for a failed one (deleting retries)
    assert plan(res, pvc=None, current=current).create_job is not None
    assert plan(res, pvc=bound_pvc(res), current={"phase": "Failed", "revision": SHA}).create_job is not None


def test_an_immutable_claim_mismatch_is_reported_not_replaced():
    res = resource(spec(storageClassName="nfs"))
    p = plan(res, pvc=bound_pvc(res, storageClassName="standard", accessModes=["ReadWriteOnce"]),
             jobs=[job(job_name(res), complete=True)])
    assert p.create_pvc is None
    assert "cannot change" in p.status["message"] and "storageClassName 'standard'" in p.status["message"]
    assert "accessModes ['ReadWriteOnce']" in p.status["message"]


def test_leaving_managed_mode_removes_jobs_and_claim_and_status():
    res = resource({"model": {"id": "BAAI/bge-m3"}})
    managed = resource()
    p = plan(res, pvc=bound_pvc(managed), jobs=[job("bge-m3-cache-x", complete=True)])
    assert p.delete_jobs == ("bge-m3-cache-x",) and p.delete_pvc == "bge-m3-model-cache"
    assert p.status is None and p.condition is None and p.hold is False


def test_job_phase():
    assert job_phase(None) == "Pending"
    assert job_phase({"status": {}}) == "Pending"
    assert job_phase(job("j", active=1, ready=1)) == "Downloading"
    assert job_phase(job("j", complete=True)) == "Ready"
    assert job_phase(job("j", failed="x")) == "Failed"
    assert job_phase({"status": {"conditions": [{"type": "Complete", "status": "False"}]}}) == "Pending"


# --- conditions while the Deployment waits ---------------------------------------------------------------------

BASE = [{"type": t, "status": s, "reason": r, "message": "m", "observedGeneration": 4} for t, s, r in [
    ("Ready", "True", "AllReplicasReady"), ("Available", "True", "MinimumReplicasReady"),
    ("Progressing", "False", "RolloutComplete"), ("Degraded", "False", "NoProblems"),
    ("Reconciling", "False", "AllReplicasReady"), ("Stalled", "False", "NotStalled")]]


def by_type(conditions):
    return {c["type"]: (c["status"], c["reason"]) for c in conditions}


def test_conditions_while_downloading_keep_available():
    res = resource()
    p = plan(res, pvc=bound_pvc(res), jobs=[job(job_name(res), active=1, ready=1)])
    got = by_type(p.adjust(BASE))
    assert got["Ready"] == ("False", "WaitingForModelCache")
    assert got["Progressing"] == ("True", "WaitingForModelCache")
    assert got["Reconciling"] == ("True", "WaitingForModelCache")
    assert got["Stalled"] == ("False", "NotStalled")
    assert got["Available"] == ("True", "MinimumReplicasReady")  # the earlier revision's pods still serve
    assert got["Degraded"] == ("False", "NoProblems")
    assert got["CacheReady"] == ("False", "Downloading")


def test_conditions_after_a_failed_download_stall_and_degrade():
    res = resource()
    p = plan(res, pvc=bound_pvc(res), jobs=[job(job_name(res), failed="backoff")])
    got = by_type(p.adjust(BASE))
    assert got["Stalled"] == ("True", "ModelCacheFailed") and got["Degraded"] == ("True", "ModelCacheFailed")
    assert got["Ready"] == ("False", "ModelCacheFailed") and got["Progressing"] == ("False", "ModelCacheFailed")
    assert got["Available"] == ("True", "MinimumReplicasReady")


def test_conditions_once_ready_are_the_deployments():
    res = resource()
    p = plan(res, pvc=bound_pvc(res), jobs=[job(job_name(res), complete=True)])
    got = by_type(p.adjust(BASE))
    assert got == {**by_type(BASE), "CacheReady": ("True", "CacheFilled")}
    assert by_type(CachePlan().adjust(BASE)) == by_type(BASE)


def test_build_status_writes_status_cache_and_the_summary_says_why():
    from tei_operator.controller.status import build_status, changed_status

    res = resource()
    p = plan(res)
    status = build_status(generation=4, deployment=None, pods=[], current={}, now="2026-11-30T13:00:00Z", cache=p)
    assert status["cache"] == p.status
    assert status["summary"] == "WaitingForModelCache"
    assert {c["type"]: c["reason"] for c in status["conditions"]}["CacheReady"] == "CachePending"
    # no managed cache (and none before): status.cache is neither written nor removed
    plain = build_status(generation=4, deployment=None, pods=[], current={}, now="2026-11-30T13:00:00Z",
                         cache=CachePlan())
    assert "cache" not in changed_status({}, plain)
    # leaving managed mode removes status.cache and the CacheReady condition
    after = build_status(generation=5, deployment=None, pods=[], current=status, now="2026-11-30T13:01:00Z",
                         cache=CachePlan())
    assert changed_status(status, after)["cache"] is None
    assert "CacheReady" not in {c["type"] for c in after["conditions"]}


def test_a_claim_deleted_by_hand_is_recreated_and_refilled():
    res = resource()
    name = job_name(res)
    p = plan(res, pvc=None, jobs=[job(name, complete=True)], current={"phase": "Ready", "revision": SHA})
    assert p.create_pvc == render_cache_pvc(res)
    assert p.delete_jobs == (name,) and p.create_job is None  # created again once the old one is gone
    assert p.hold is True and p.status["phase"] == "Pending"


async def test_model_info_reports_the_hub_id_of_a_pod_on_the_managed_cache():
    """A pod on the managed cache reports its snapshot directory as /info's model_id (TEI reports the MODEL_ID it
    loaded); status.model compares hub ids, so it is read back as the hub id, not a second model."""
    import asyncio

    from tei_operator.controller.model_info import ModelInfoReader
    from tei_operator.emulator.config import EmulatorConfig
    from tei_operator.emulator.server import EmulatorServer

    config = EmulatorConfig(port=0, dimensions=8, model_id=snapshot_path("BAAI/bge-m3", SHA), revision=SHA)
    async with EmulatorServer(config) as server:
        reader = ModelInfoReader(None, scrape_via="podip", timeout=2)
        done = asyncio.Event()
        reader.notify = lambda key: done.set()
        pod = {"metadata": {"name": "p", "uid": "uid-p", "namespace": "ns"},
               "spec": {"containers": [{"name": "tei", "ports": [{"name": "http", "containerPort": server.port}]}]},
               "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}}
        reader.report("svc", "ns", [pod])
        await asyncio.wait_for(done.wait(), 5)
        (info,) = reader.report("svc", "ns", [pod])
        assert (info.model_id, info.sha) == ("BAAI/bge-m3", SHA)
        await reader.close()


def test_cli_render_prints_the_claim_and_job_first(tmp_path, capsys):
    import yaml

    from tei_operator import cli

    manifest = tmp_path / "svc.yaml"
    manifest.write_text(yaml.safe_dump({"apiVersion": "tei-operator.io/v1alpha1", "kind": "EmbeddingService",
                                        "metadata": {"name": "bge-m3", "namespace": "search"}, "spec": spec()}))
    assert cli.main(["render", "-f", str(manifest)]) == 0
    kinds = [d["kind"] for d in yaml.safe_load_all(capsys.readouterr().out)]
    assert kinds[:3] == ["PersistentVolumeClaim", "Job", "Deployment"]
