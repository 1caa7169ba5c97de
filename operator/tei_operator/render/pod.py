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
from .cache import use_managed_cache
from .gpu import gpu_limits
from .image import image_for
from .labels import common_labels, selector_labels
from .placement import placement

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

# Secure defaults (docs/security.md): what Pod Security's `restricted` level asks of a container, except running as
# non-root, which TEI's images do not do. NET_BIND_SERVICE stays: TEI binds port 80, which a root process without
# that capability may not do unless the runtime lowers net.ipv4.ip_unprivileged_port_start (not every one does);
# `restricted` allows exactly this one capability to be added.
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
POD_SECURITY_CONTEXT: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
HOSTNAME_TOPOLOGY_KEY = "kubernetes.io/hostname"

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
    container["securityContext"] = {**CONTAINER_SECURITY_CONTEXT, **(spec.security_context or {})}
    return container


def cache_volume(spec: ServiceSpec) -> dict[str, Any]:
    """The /data volume: an emptyDir (optionally size-limited) or the given PersistentVolumeClaim."""
    cache = spec.cache
    if cache.persistent_volume_claim is not None:
        return {"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": cache.persistent_volume_claim.claim_name}}
    empty_dir = cache.empty_dir.to_wire() if cache.empty_dir is not None else {}
    return {"name": CACHE_VOLUME, "emptyDir": empty_dir}


def topology_spread(spec: ServiceSpec, selector: dict[str, str]) -> list[dict[str, Any]]:
    """The pods' topology spread constraints: the user's when set (even []), else a soft spread across nodes.

    Rendered whatever the replica count: the count changes through the scale subresource or the autoscaler, and a
    pod template that depended on it would restart every replica (a model download each) on `kubectl scale 1 -> 2`;
    with one replica the constraint has nothing to spread and changes nothing. Soft (ScheduleAnyway): GPU pools are
    small, and a hard spread would leave a replica Pending on a pool of one node. pod-template-hash in
    matchLabelKeys spreads each revision on its own, so a rollout's new pods are not pushed onto the nodes its old
    pods are leaving."""
    if spec.topology_spread_constraints is not None:
        return [dict(c) for c in spec.topology_spread_constraints]
    return [{
        "maxSkew": 1,
        "topologyKey": HOSTNAME_TOPOLOGY_KEY,
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": dict(selector)},
        "matchLabelKeys": ["pod-template-hash"],
    }]


def pod_spec(spec: ServiceSpec, settings: Settings, selector: dict[str, str] | None = None) -> dict[str, Any]:
    """The pod spec: the TEI container, the cache volume, the scheduling fields and the secure defaults.
    `selector` (the pods' selector labels) is what the default topology spread counts."""
    pod: dict[str, Any] = {
        "containers": [tei_container(spec, settings)],
        "volumes": [cache_volume(spec)],
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        # Service links put a dozen variables per Service of the namespace into the environment: not needed.
        "enableServiceLinks": False,
        # TEI never calls the Kubernetes API: no token for a compromised process to use.
        "automountServiceAccountToken": spec.automount_service_account_token,
        "securityContext": {**POD_SECURITY_CONTEXT, **(spec.pod_security_context or {})},
    }
    spread = topology_spread(spec, selector or {})
    if spread:
        pod["topologySpreadConstraints"] = spread
    pod.update(placement(spec, priority=True))
    return pod



def pod_template(resource: ServiceResource, settings: Settings) -> dict[str, Any]:
    """The pod template, without the config hash annotation (the Deployment adds it)."""
    spec = resource.spec
    labels = {**spec.pod_labels, **common_labels(resource)}
    annotations = {**PROMETHEUS_ANNOTATIONS, **spec.pod_annotations}
    pod = pod_spec(spec, settings, selector_labels(resource))
    if spec.cache.managed is not None:
        use_managed_cache(pod, resource, CONTAINER_NAME)
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod}
