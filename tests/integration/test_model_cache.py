"""The managed model cache on the real control plane: PVC and download Job created, the Job's completion makes
status.cache Ready and only then does the Deployment appear, its pods mounting the claim read-only; a failed
download says why (status.cache, CacheReady, a Warning event) and takes nothing away from what already serves.

What is simulated (docs/model-cache.md): kwok runs no container, so the download pod is moved to Succeeded or
Failed by kwok stages (tests/cluster/kwok-stages.yaml; Failed when the pod is annotated
sim.tei-operator.io/download: fail, which it inherits from spec.podAnnotations). The local cluster has no storage
provisioner: each test creates a static hostPath PersistentVolume of a class of its own for the claim to bind
to (the scheduler does not place a pod whose claim is unbound). The operator runs with a Job backoffLimit of 0
(conftest), so a failed download fails its Job at once rather than after the Job controller's back-off.
"""

from __future__ import annotations

import pytest

from .conftest import wait_for
from .test_reconcile import embedding, tei_container

pytestmark = pytest.mark.cluster

SHA = "5617a9f61b028005a4858fdac845db406aefb181"
SHA2 = "0123456789abcdef0123456789abcdef01234567"
FAIL = {"sim.tei-operator.io/download": "fail"}


@pytest.fixture
def storage(kube, namespace):
    """A static PersistentVolume (hostPath; nothing mounts it under kwok) of a StorageClass name of its own."""
    name = f"cache-{namespace}"
    kube.apply({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
                "spec": {"capacity": {"storage": "20Gi"}, "accessModes": ["ReadWriteMany"],
                         "storageClassName": name, "persistentVolumeReclaimPolicy": "Delete",
                         "hostPath": {"path": f"/tmp/{name}"}}})
    yield name
    kube.kubectl("delete", "pv", name, "--wait=false", check=False)


def managed(name, namespace, storage_class, revision=SHA, **spec):
    return embedding(name, namespace, model={"id": "BAAI/bge-m3", "revision": revision},
                     cache={"managed": {"size": "10Gi", "storageClassName": storage_class}}, **spec)


def cache_status(kube, namespace, name):
    return ((kube.get("embsvc", name, namespace) or {}).get("status") or {}).get("cache") or {}


def test_cache_is_filled_once_then_pods_mount_it_read_only(operator, kube, namespace, storage):
    kube.apply(managed("cached", namespace, storage))
    ready = wait_for(lambda: (c := cache_status(kube, namespace, "cached")).get("phase") == "Ready" and c, 90,
                     what="status.cache Ready")
    assert ready["revision"] == SHA and ready["claimName"] == "cached-model-cache"
    pvc = kube.get("pvc", "cached-model-cache", namespace)
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"] and pvc["spec"]["storageClassName"] == storage
    assert pvc["status"]["phase"] == "Bound"
    job = kube.get("job", ready["jobName"], namespace)
    assert job["metadata"]["ownerReferences"][0]["name"] == "cached"
    assert any(c["type"] == "Complete" and c["status"] == "True" for c in job["status"]["conditions"])
    (download,) = job["spec"]["template"]["spec"]["containers"]
    assert {e["name"]: e.get("value") for e in download["env"]}["REVISION"] == SHA
    cond = kube.condition("embsvc", "cached", namespace, "CacheReady")
    assert (cond["status"], cond["reason"]) == ("True", "CacheFilled")
    # The Deployment, then its pods: the claim read-only, MODEL_ID the revision's snapshot, no download.
    kube.wait_condition("embsvc", "cached", namespace, "Ready", timeout=90)
    deployment = kube.get("deployment", "cached", namespace)
    env = {e["name"]: e.get("value") for e in tei_container(deployment)["env"]}
    assert env["MODEL_ID"] == f"/data/models--BAAI--bge-m3/snapshots/{SHA}" and env["HF_HUB_OFFLINE"] == "1"
    pods = kube.list("pod", namespace, "tei-operator.io/service=cached")
    assert len(pods) == 1  # the download pod is not one of the service's pods
    volume = next(v for v in pods[0]["spec"]["volumes"] if v["name"] == "data")
    assert volume["persistentVolumeClaim"] == {"claimName": "cached-model-cache", "readOnly": True}
    tei = next(c for c in pods[0]["spec"]["containers"] if c["name"] == "tei")
    mount = next(m for m in tei["volumeMounts"] if m["name"] == "data")
    assert mount["readOnly"] is True
    events = kube.events(namespace, "cached")
    assert any(e["reason"] == "ModelCacheFilled" and ready["jobName"] in e["message"] for e in events)

    # A new revision: a new Job fills the same claim, then the model moves to it (blue/green, the default: a new
    # Deployment the Service switches to, docs/model-changes.md); the old Job is deleted.
    kube.apply(managed("cached", namespace, storage, revision=SHA2))
    second = wait_for(lambda: (c := cache_status(kube, namespace, "cached")).get("revision") == SHA2
                      and c.get("phase") == "Ready" and c, 90, what="status.cache Ready for the new revision")
    assert second["jobName"] != ready["jobName"] and second["claimName"] == ready["claimName"]

    def serving_model_id():
        status = kube.get("embsvc", "cached", namespace)["status"]
        serving = kube.get("deployment", status["rollout"]["active"]["deployment"], namespace)
        return {e["name"]: e.get("value") for e in tei_container(serving)["env"]}["MODEL_ID"]

    wait_for(lambda: serving_model_id().endswith(SHA2), 60, what="the serving Deployment on the new snapshot")
    wait_for(lambda: kube.get("job", ready["jobName"], namespace) is None, 60, what="the old revision's Job deleted")


def test_failed_download_is_reported_and_keeps_what_serves(operator, kube, namespace, storage):
    kube.apply(managed("keep", namespace, storage))
    kube.wait_condition("embsvc", "keep", namespace, "Ready", timeout=90)
    first_job = cache_status(kube, namespace, "keep")["jobName"]
    before = kube.get("deployment", "keep", namespace)
    # A new revision whose download fails (the annotation reaches the download pod through podAnnotations).
    kube.apply(managed("keep", namespace, storage, revision=SHA2, podAnnotations=FAIL))
    failed = wait_for(lambda: (c := cache_status(kube, namespace, "keep")).get("phase") == "Failed" and c, 90,
                      what="status.cache Failed")
    assert failed["revision"] == SHA2 and failed["jobName"] != first_job
    assert "401 Client Error" in failed["message"] and f"delete Job {failed['jobName']} to retry" in failed["message"]
    stalled = kube.condition("embsvc", "keep", namespace, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "ModelCacheFailed")
    cache_ready = kube.condition("embsvc", "keep", namespace, "CacheReady")
    assert (cache_ready["status"], cache_ready["reason"]) == ("False", "DownloadFailed")
    warnings = wait_for(lambda: [e for e in kube.events(namespace, "keep")
                                 if e["type"] == "Warning" and e["reason"] == "ModelCacheFailed"], 30,
                        what="a ModelCacheFailed Warning event")
    assert "401 Client Error" in warnings[0]["message"]
    # Nothing that served is lost: the Deployment still runs the first revision, and the service is Available.
    after = kube.get("deployment", "keep", namespace)
    assert tei_container(after)["env"] == tei_container(before)["env"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    available = kube.condition("embsvc", "keep", namespace, "Available")
    assert available["status"] == "True"
    assert kube.get("embsvc", "keep", namespace)["status"]["readyReplicas"] == 1


def test_new_service_waits_for_its_cache_and_unpinned_is_refused(operator, kube, namespace, storage):
    kube.apply(managed("waits", namespace, storage, podAnnotations=FAIL))
    failed = wait_for(lambda: (c := cache_status(kube, namespace, "waits")).get("phase") == "Failed" and c, 90,
                      what="status.cache Failed")
    ready = kube.condition("embsvc", "waits", namespace, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ModelCacheFailed")
    # The operator looked (status.cache above is its sign) and created no Deployment for a cache that never filled.
    assert kube.get("deployment", "waits", namespace) is None
    assert kube.get("service", "waits", namespace) is not None
    assert failed["claimName"] == "waits-model-cache"
    # The API server refuses a managed cache without a pinned commit, naming the field.
    result = kube.apply(managed("unpinned", namespace, storage, revision="main"), check=False)
    assert result.returncode != 0
    assert "spec.model.revision" in result.stderr and "40-character commit sha" in result.stderr
