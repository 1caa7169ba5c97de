"""The TEI container and its pod template.

TEI settings travel as environment variables (TEI.md: env var = the flag in UPPER_SNAKE case); secrets only as
`valueFrom.secretKeyRef`, so the operator never holds a token or key. TEI logs its parsed arguments at start with
the API key in clear (its router's main logs `{args:?}` at INFO), so when an API key is configured the router's
own log target is lowered to WARN; the backend's logs stay at INFO.
"""

from __future__ import annotations

from typing import Any

from ..api.model import EmbeddingModelSpec, SecretKeyRef
from ..api.resource import ServiceResource
from ..api.spec import ServiceSpec
from ..settings import Settings
from .gpu import gpu_limits, merge_affinity, merge_tolerations
from .image import image_for
from .labels import common_labels

CONTAINER_NAME = "tei"
TEI_PORT = 80  # TEI images listen on PORT=80
PORT_NAME = "http"
CACHE_VOLUME = "data"
CACHE_PATH = "/data"  # TEI images keep HUGGINGFACE_HUB_CACHE here
HEALTH_PATH = "/health"
METRICS_PATH = "/metrics"

# The HTTP listener binds only once the model is downloaded, loaded and warmed up (TEI.md): allow an hour.
STARTUP_PERIOD_SECONDS = 10
STARTUP_BUDGET_SECONDS = 3600
# /health shares the inference loop, so a running batch can slow it: generous timeouts, several failures.
READINESS = {"periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3, "successThreshold": 1}
LIVENESS = {"periodSeconds": 20, "timeoutSeconds": 10, "failureThreshold": 3, "successThreshold": 1}
# On SIGTERM TEI stops taking requests and finishes those in flight (no limit of its own). The preStop pause lets
# endpoints drop the pod before that, so no new request arrives at a closing listener.
PRE_STOP_SLEEP_SECONDS = 5
TERMINATION_GRACE_SECONDS = 60
# Lowers the router's own log target, which logs the API key at start (see the module docstring).
QUIET_ARGS_LOG_LEVEL = "info,text_embeddings_router=warn"

PROMETHEUS_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(TEI_PORT),
    "prometheus.io/path": METRICS_PATH,
}


def _secret_env(name: str, ref: SecretKeyRef) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def tei_env(spec: ServiceSpec) -> list[dict[str, Any]]:
    """The TEI container's environment: the launcher settings, the secrets by reference, then the user's."""
    model, engine = spec.model, spec.engine
    values: list[tuple[str, Any]] = [
        ("MODEL_ID", model.id),
        ("REVISION", model.revision),
        ("DTYPE", model.dtype),
        ("SERVED_MODEL_NAME", model.served_model_name),
    ]
    if isinstance(model, EmbeddingModelSpec):
        values += [
            ("POOLING", model.pooling),
            ("DEFAULT_PROMPT_NAME", model.default_prompt_name),
            ("DEFAULT_PROMPT", model.default_prompt),
        ]
    values += [
        ("MAX_BATCH_TOKENS", engine.max_batch_tokens),
        ("MAX_CONCURRENT_REQUESTS", engine.max_concurrent_requests),
        ("MAX_BATCH_REQUESTS", engine.max_batch_requests),
        ("MAX_CLIENT_BATCH_SIZE", engine.max_client_batch_size),
        ("AUTO_TRUNCATE", None if engine.auto_truncate is None else str(engine.auto_truncate).lower()),
        ("TOKENIZATION_WORKERS", engine.tokenization_workers),
        ("PAYLOAD_LIMIT", engine.payload_limit),
        ("PORT", TEI_PORT),
        ("HUGGINGFACE_HUB_CACHE", CACHE_PATH),
        ("JSON_OUTPUT", "true"),
    ]
    env: list[dict[str, Any]] = [{"name": n, "value": str(v)} for n, v in values if v is not None]
    if model.token_secret_ref is not None:
        env.append(_secret_env("HF_TOKEN", model.token_secret_ref))
    user_names = {var.name for var in engine.env}
    if engine.api_key_secret_ref is not None:
        env.append(_secret_env("API_KEY", engine.api_key_secret_ref))
        if "LOG_LEVEL" not in user_names:
            env.append({"name": "LOG_LEVEL", "value": QUIET_ARGS_LOG_LEVEL})
    env += [var.to_wire() for var in engine.env]
    return env


def _probe(**timing: int) -> dict[str, Any]:
    return {"httpGet": {"path": HEALTH_PATH, "port": PORT_NAME, "scheme": "HTTP"}, **timing}


def tei_container(spec: ServiceSpec, settings: Settings) -> dict[str, Any]:
    """The TEI container: image for the GPU, env, port 80 named http, GPU limits, /data, probes."""
    resources: dict[str, Any] = {}
    user = spec.resources.to_wire() if spec.resources is not None else {}
    if user.get("requests"):
        resources["requests"] = dict(user["requests"])
    limits = {**(user.get("limits") or {}), **gpu_limits(spec.gpu)}
    if limits:
        resources["limits"] = limits
    container: dict[str, Any] = {"name": CONTAINER_NAME, "image": image_for(spec, settings)}
    if spec.engine.image_pull_policy:
        container["imagePullPolicy"] = spec.engine.image_pull_policy
    if spec.engine.extra_args:
        container["args"] = list(spec.engine.extra_args)
    container.update({
        "env": tei_env(spec),
        "ports": [{"name": PORT_NAME, "containerPort": TEI_PORT, "protocol": "TCP"}],
        "resources": resources,
        "volumeMounts": [{"name": CACHE_VOLUME, "mountPath": CACHE_PATH}],
        "startupProbe": _probe(periodSeconds=STARTUP_PERIOD_SECONDS, timeoutSeconds=5,
                               failureThreshold=STARTUP_BUDGET_SECONDS // STARTUP_PERIOD_SECONDS, successThreshold=1),
        "readinessProbe": _probe(**READINESS),
        "livenessProbe": _probe(**LIVENESS),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_SLEEP_SECONDS)]}}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
    })
    if spec.security_context:
        container["securityContext"] = dict(spec.security_context)
    return container


def cache_volume(spec: ServiceSpec) -> dict[str, Any]:
    """The /data volume: an emptyDir (optionally size-limited) or the given PersistentVolumeClaim."""
    cache = spec.cache
    if cache.persistent_volume_claim is not None:
        return {"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": cache.persistent_volume_claim.claim_name}}
    empty_dir = cache.empty_dir.to_wire() if cache.empty_dir is not None else {}
    return {"name": CACHE_VOLUME, "emptyDir": empty_dir}


def pod_spec(spec: ServiceSpec, settings: Settings) -> dict[str, Any]:
    """The pod spec: the TEI container, the cache volume and the scheduling fields."""
    pod: dict[str, Any] = {
        "containers": [tei_container(spec, settings)],
        "volumes": [cache_volume(spec)],
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        # Service links put a dozen variables per Service of the namespace into the environment: not needed.
        "enableServiceLinks": False,
    }
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    tolerations = merge_tolerations([t.to_wire() for t in spec.tolerations], spec.gpu)
    if tolerations:
        pod["tolerations"] = tolerations
    affinity = merge_affinity(spec.affinity, spec.gpu)
    if affinity:
        pod["affinity"] = affinity
    if spec.priority_class_name:
        pod["priorityClassName"] = spec.priority_class_name
    if spec.service_account_name:
        pod["serviceAccountName"] = spec.service_account_name
    if spec.pod_security_context:
        pod["securityContext"] = dict(spec.pod_security_context)
    if spec.engine.image_pull_secrets:
        pod["imagePullSecrets"] = [s.to_wire() for s in spec.engine.image_pull_secrets]
    return pod


def pod_template(resource: ServiceResource, settings: Settings) -> dict[str, Any]:
    """The pod template, without the config hash annotation (the Deployment adds it)."""
    spec = resource.spec
    labels = {**spec.pod_labels, **common_labels(resource)}
    annotations = {**PROMETHEUS_ANNOTATIONS, **spec.pod_annotations}
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec(spec, settings)}
