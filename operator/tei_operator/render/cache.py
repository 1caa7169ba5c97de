"""The managed model cache's manifests (spec.cache.managed): the PersistentVolumeClaim, the download Job, and what
changes in the TEI pods that read from it. Pure functions, like the rest of render/.

Layout of the cache: the Hugging Face hub cache (`hf download --cache-dir /data`), so one claim holds several
revisions side by side and files common to two revisions are stored once (blobs are content-addressed):
`/data/models--{org}--{name}/snapshots/{commit}/...`. The TEI pods get MODEL_ID set to that snapshot directory:
TEI loads a model from a local directory without contacting the Hub (its router takes a MODEL_ID that is an
existing directory as a local model), which is what lets them start from a read-only volume with no network.
The revision is passed on as REVISION, so /info still reports it as model_sha (status.model keeps working), and
SERVED_MODEL_NAME defaults to the hub id, so OpenAI-style responses name the model, not the path.
HF_HUB_OFFLINE=1 is set too: TEI's own launcher does not read it, but nothing in the pod may reach the Hub.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..api.resource import ServiceResource
from ..settings import Settings
from .labels import MANAGED_BY, common_labels
from .placement import placement

CACHE_PATH = "/data"
CACHE_VOLUME = "data"
CLAIM_SUFFIX = "-model-cache"
JOB_INFIX = "-cache-"
DOWNLOAD_CONTAINER = "download"
# Labels of the download pod: the service's name under a key of its own, never the TEI pods' selector labels (the
# Service and status.selector must not count a download pod as a TEI replica).
CACHE_OF_LABEL = "tei-operator.io/cache-of"
CACHE_COMPONENT = "model-cache"
REVISION_ANNOTATION = "tei-operator.io/model-revision"
MODEL_ANNOTATION = "tei-operator.io/model-id"
JOB_NAME_MAX = 63  # the Job controller copies the name into a label value
# Files TEI never reads on a GPU: other frameworks' weights. ONNX weights are what the CPU images load, so they are
# skipped only for GPU services.
SKIPPED_FILES = ("*.h5", "*.msgpack", "*.ot", "tf_model*", "flax_model*", "rust_model*", "coreml/*", "openvino/*")
GPU_ONLY_SKIPPED_FILES = ("onnx/*", "*.onnx", "*.onnx_data")
# The download: `hf` from the image, or huggingface_hub installed into /tmp (works as non-root and on any image
# with Python and pip). The model id, revision and token arrive as environment variables, never in the command.
DOWNLOAD_SCRIPT = """set -eu
if ! command -v hf >/dev/null 2>&1; then
  pip install --quiet --no-cache-dir --disable-pip-version-check --target /tmp/hf 'huggingface_hub>=0.34'
  export PATH="/tmp/hf/bin:$PATH" PYTHONPATH=/tmp/hf
fi
set -- hf download "$MODEL_ID" --revision "$REVISION" --cache-dir "$HF_HUB_CACHE"
for pattern in $SKIP_FILES; do set -- "$@" --exclude "$pattern"; done
"$@"
test -f "$SNAPSHOT/config.json"
echo "Downloaded $MODEL_ID@$REVISION into $SNAPSHOT"
"""
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
DOWNLOAD_RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "4Gi"}}


def claim_name(resource: ServiceResource) -> str:
    """The managed cache's PersistentVolumeClaim: `<service>-model-cache`."""
    return f"{resource.name}{CLAIM_SUFFIX}"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:10]


def job_name(resource: ServiceResource) -> str:
    """The download Job of the service's current model and revision: `<service>-cache-<hash>`, the hash of the
    service, model id and revision (a new revision is a new Job), at most 63 characters."""
    model = resource.spec.model
    digest = _digest(resource.name, model.id, model.revision or "")
    prefix = resource.name[: JOB_NAME_MAX - len(JOB_INFIX) - len(digest)].rstrip("-")
    return f"{prefix}{JOB_INFIX}{digest}"


def repo_folder(model_id: str) -> str:
    """The hub cache's folder of a model: `models--{org}--{name}`."""
    return "models--" + model_id.replace("/", "--")


def snapshot_path(model_id: str, revision: str) -> str:
    """Where `hf download --cache-dir /data` puts the files of one commit."""
    return f"{CACHE_PATH}/{repo_folder(model_id)}/snapshots/{revision}"


def hub_id_from_snapshot(path: str | None) -> str | None:
    """The hub id of a snapshot path (`/data/models--BAAI--bge-m3/snapshots/<sha>` -> `BAAI/bge-m3`); None for
    anything else. TEI reports the path it loaded as /info's model_id; status.model compares hub ids."""
    if not path or not path.startswith(f"{CACHE_PATH}/models--"):
        return None
    parts = path[len(CACHE_PATH) + 1:].split("/")
    if len(parts) != 3 or parts[1] != "snapshots" or not parts[2]:
        return None
    return parts[0][len("models--"):].replace("--", "/")


def _metadata(resource: ServiceResource, name: str) -> dict[str, Any]:
    from .children import owner_references  # children renders the pods, which import this module

    meta: dict[str, Any] = {"name": name, "namespace": resource.namespace,
                            "labels": {**common_labels(resource), "app.kubernetes.io/component": CACHE_COMPONENT}}
    refs = owner_references(resource)
    if refs:
        meta["ownerReferences"] = refs
    return meta


def render_cache_pvc(resource: ServiceResource) -> dict[str, Any]:
    """The claim the cache lives on. Owned by the service: deleting the service deletes the cache."""
    managed = resource.spec.cache.managed
    assert managed is not None, "render_cache_pvc needs spec.cache.managed"
    spec: dict[str, Any] = {
        "accessModes": list(managed.access_modes),
        "resources": {"requests": {"storage": str(managed.size)}},
        "volumeMode": "Filesystem",
    }
    if managed.storage_class_name:
        spec["storageClassName"] = managed.storage_class_name
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _metadata(resource, claim_name(resource)),
            "spec": spec}


def skipped_files(resource: ServiceResource) -> list[str]:
    """Files the download leaves out: other frameworks' weights, and ONNX weights on GPUs."""
    skipped = list(SKIPPED_FILES)
    if resource.spec.gpu.count > 0:
        skipped += GPU_ONLY_SKIPPED_FILES
    return skipped


def render_download_job(resource: ServiceResource, settings: Settings) -> dict[str, Any]:
    """The Job that fills the claim with spec.model.id at spec.model.revision, once.

    The pod is scheduled like the TEI pods (their nodeSelector, tolerations and GPU-type affinity), so a
    ReadWriteOnce volume is attached where they will run; it requests no GPU. The Hugging Face token reaches it
    through secretKeyRef only. Its pod carries spec.podAnnotations (sidecar opt-outs, cost labels) but none of the
    TEI pods' selector labels."""
    spec = resource.spec
    model = spec.model
    assert spec.cache.managed is not None and model.revision, "render_download_job needs a managed cache and revision"
    env: list[dict[str, Any]] = [
        {"name": "MODEL_ID", "value": model.id},
        {"name": "REVISION", "value": model.revision},
        {"name": "HF_HUB_CACHE", "value": CACHE_PATH},
        {"name": "HF_HOME", "value": "/tmp/hf-home"},
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
        {"name": "SNAPSHOT", "value": snapshot_path(model.id, model.revision)},
        {"name": "SKIP_FILES", "value": " ".join(skipped_files(resource))},
    ]
    if model.token_secret_ref is not None:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": model.token_secret_ref.name, "key": model.token_secret_ref.key}}})
    container: dict[str, Any] = {
        "name": DOWNLOAD_CONTAINER,
        "image": settings.cache_download_image,
        "command": ["/bin/sh", "-c", DOWNLOAD_SCRIPT],
        "env": env,
        "resources": DOWNLOAD_RESOURCES,
        "volumeMounts": [{"name": CACHE_VOLUME, "mountPath": CACHE_PATH}],
        "securityContext": dict(CONTAINER_SECURITY_CONTEXT),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": [{"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": claim_name(resource)}}],
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}, **(spec.pod_security_context or {})},
    }
    # Scheduled like the TEI pods, without their priority class: a download must not preempt serving pods.
    pod.update(placement(spec, priority=False))
    pod_meta: dict[str, Any] = {"labels": {"app.kubernetes.io/managed-by": MANAGED_BY,
                                           "app.kubernetes.io/component": CACHE_COMPONENT,
                                           CACHE_OF_LABEL: resource.name}}
    if spec.pod_annotations:
        pod_meta["annotations"] = dict(spec.pod_annotations)
    meta = _metadata(resource, job_name(resource))
    meta["annotations"] = {MODEL_ANNOTATION: model.id, REVISION_ANNOTATION: model.revision}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": settings.cache_job_backoff_limit,
            "activeDeadlineSeconds": settings.cache_job_deadline_seconds,
            "template": {"metadata": pod_meta, "spec": pod},
        },
    }


def use_managed_cache(pod: dict[str, Any], resource: ServiceResource, tei_container: str) -> None:
    """Point a rendered TEI pod spec at the managed cache, in place: the claim mounted read-only, MODEL_ID the
    revision's snapshot directory (TEI loads it without the Hub), HF_HUB_OFFLINE=1, SERVED_MODEL_NAME the hub id
    unless set."""
    model = resource.spec.model
    assert model.revision, "a managed cache needs a pinned revision"
    pod["volumes"] = [{"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": claim_name(resource),
                                                                       "readOnly": True}}
                      if v.get("name") == CACHE_VOLUME else v for v in pod["volumes"]]
    for container in pod["containers"]:
        if container["name"] != tei_container:
            continue
        container["volumeMounts"] = [{**m, "readOnly": True} if m.get("name") == CACHE_VOLUME else m
                                     for m in container.get("volumeMounts", [])]
        env = container["env"]
        names = {e["name"] for e in env}
        for var in env:
            if var["name"] == "MODEL_ID":
                var["value"] = snapshot_path(model.id, model.revision)
        extra = [{"name": "HF_HUB_OFFLINE", "value": "1"}]
        if "SERVED_MODEL_NAME" not in names:
            extra.append({"name": "SERVED_MODEL_NAME", "value": model.id})
        # Before the user's own variables (spec.engine.env), which come last and so still win.
        at = next((i for i, e in enumerate(env) if e["name"] == "JSON_OUTPUT"), len(env) - 1) + 1
        env[at:at] = extra

