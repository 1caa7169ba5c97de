"""The spec shared by EmbeddingService and RerankerService, and the two kinds' specs.

The kinds differ only in defaults (a reranker batches fewer tokens) and in embedding-only model fields (pooling,
prompts); everything else is one shape, so the controller and the autoscaler treat both alike.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, model_validator

from .autoscaling import AutoscalingSpec
from .base import ApiModel, FieldError
from .cache import MANAGED_CACHE_CEL_RULES, check_managed_cache
from .engine import EngineSpec, RerankerEngineSpec
from .gpu_spec import GpuSpec
from .model import EmbeddingModelSpec, ModelSpec
from .network import NetworkPolicySpec, default_network_policy
from .pod import Affinity, CacheSpec, ResourcesSpec, ServiceExposure, Toleration, default_cache
from .rollout import RolloutSpec
from .types import DnsSubdomain, FreeForm, LabelValue, AnnotationValue

# Labels the operator puts on every pod (render/labels.py); the selector depends on some of them.
RESERVED_POD_LABELS = (
    "app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by", "tei-operator.io/service",
)
# Annotation prefix the operator owns on the pod template (the config hash).
RESERVED_ANNOTATION_PREFIX = "tei-operator.io/"

LabelKey = Annotated[str, Field(max_length=317)]


class ServiceSpec(ApiModel):
    """What to serve, on which hardware, and how to scale it."""

    CEL_RULES: ClassVar[list[dict[str, str]]] = MANAGED_CACHE_CEL_RULES

    model: ModelSpec = Field(..., description="The model TEI serves.")
    gpu: GpuSpec = Field(default_factory=GpuSpec, description="GPUs per replica and their type.")
    engine: EngineSpec = Field(default_factory=EngineSpec, description="TEI image and launcher settings.")
    replicas: int = Field(
        1, ge=0, le=1000,
        description="Desired replicas (one GPU each), also the scale subresource's spec path (kubectl scale, HPA, "
        "KEDA). Ignored while autoscaling.enabled is true: the built-in autoscaler then owns the replica count.",
    )
    resources: ResourcesSpec | None = Field(
        None,
        description="CPU, memory and ephemeral storage of the TEI container. The GPU limit comes from gpu. Set a "
        "memory request large enough for the model's weights in host memory while it loads.",
    )
    node_selector: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=32, description="Node labels the pods require, as in a Pod.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32,
        description="Tolerations of the pods. One for the nvidia.com/gpu NoSchedule taint is added when GPUs are "
        "requested (not duplicated if present).",
    )
    affinity: Affinity | None = Field(None, description="Scheduling affinity, merged with the GPU type's.")
    priority_class_name: DnsSubdomain | None = Field(None, description="PriorityClass of the pods.")
    pod_labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=64,
        json_schema_extra={"x-kubernetes-validations": [{
            "rule": "self.all(k, !(k in [" + ", ".join(f"'{k}'" for k in RESERVED_POD_LABELS) + "]))",
            "message": "podLabels must not set the labels the operator manages (app.kubernetes.io/name, "
            "app.kubernetes.io/instance, app.kubernetes.io/component, app.kubernetes.io/managed-by, "
            "tei-operator.io/service)",
        }]},
        description="Extra labels of the pods. The operator's own labels (app.kubernetes.io/name, instance, "
        "component, managed-by, tei-operator.io/service) are refused.",
    )
    pod_annotations: dict[LabelKey, AnnotationValue] = Field(
        default_factory=dict, max_length=64,
        json_schema_extra={"x-kubernetes-validations": [{
            "rule": f"self.all(k, !k.startsWith('{RESERVED_ANNOTATION_PREFIX}'))",
            "message": f"podAnnotations must not use the {RESERVED_ANNOTATION_PREFIX} prefix (the operator's own)",
        }]},
        description="Extra annotations of the pods. They may override the prometheus.io/* scrape annotations; "
        f"keys with the {RESERVED_ANNOTATION_PREFIX} prefix are the operator's and refused.",
    )
    min_available: int = Field(
        1, ge=1, le=1000,
        description="Ready replicas at which the service counts as serving: the Available condition, which Argo "
        "CD's health check and kstatus (Flux, kubectl wait) follow, so a scale-up or a replica waiting for a GPU is "
        "not an outage. Capped at the desired replica count. Ready, by contrast, needs every desired replica.",
    )
    topology_spread_constraints: list[FreeForm] | None = Field(
        None, max_length=16,
        description="Topology spread constraints of the pods, as in a Pod (passed through unchanged). Unset: replicas "
        "are spread across nodes (kubernetes.io/hostname, maxSkew 1, ScheduleAnyway, so a spread that cannot be met "
        "never leaves a pod Pending; rendered whatever the replica count, so scaling never restarts pods). [] "
        "turns spreading off.",
    )
    service_account_name: DnsSubdomain | None = Field(None, description="ServiceAccount the pods run as.")
    automount_service_account_token: bool = Field(
        False,
        description="Mount the ServiceAccount's API token into the pods. TEI never calls the Kubernetes API, so "
        "off by default: a compromised TEI process then holds no credential.",
    )
    pod_security_context: FreeForm | None = Field(
        None, description="Pod security context, as in a Pod (passed through unchanged). Default: seccompProfile "
        "RuntimeDefault; keys set here replace the default's. See docs/security.md to reach the restricted Pod "
        "Security level (runAsNonRoot, runAsUser, fsGroup).",
    )
    security_context: FreeForm | None = Field(
        None, description="Security context of the TEI container, as in a container. Default: "
        "allowPrivilegeEscalation false, capabilities drop ALL (add NET_BIND_SERVICE: TEI listens on port 80), "
        "seccompProfile RuntimeDefault; keys set here replace the default's key by key. TEI images run as root "
        "and write to /data.",
    )
    cache: CacheSpec = Field(
        default_factory=default_cache,
        description="Where /data, the model cache, lives. Default: a per-pod emptyDir.",
    )
    service: ServiceExposure = Field(default_factory=ServiceExposure, description="The Service in front of the pods.")
    rollout: RolloutSpec = Field(
        default_factory=RolloutSpec,
        description="Rolling update strategy of the pods. Default maxSurge 1 / maxUnavailable 0: serving capacity "
        "never drops, since a new TEI pod needs minutes to download and load its model; the price is one spare GPU "
        "while each new pod starts (without one the new pod waits Pending and the old ones keep serving). On a "
        "pool with no spare GPU set maxSurge 0 / maxUnavailable 1: one replica less during the rollout. A change "
        "of the model goes blue/green by default (modelChange, docs/model-changes.md).",
    )
    autoscaling: AutoscalingSpec = Field(
        default_factory=AutoscalingSpec, description="The built-in autoscaler, driven by TEI's queue and batch metrics.",
    )
    network_policy: NetworkPolicySpec = Field(
        default_factory=default_network_policy,
        description="An optional NetworkPolicy admitting only clients, Prometheus and the operator's metrics "
        "scraper to the pods.",
    )

    @model_validator(mode="after")
    def _reserved_pod_metadata(self) -> "ServiceSpec":
        for key in self.pod_labels:
            if key in RESERVED_POD_LABELS:
                raise FieldError(f"podLabels.{key}", "is managed by the operator and may not be set")
        for key in self.pod_annotations:
            if key.startswith(RESERVED_ANNOTATION_PREFIX):
                raise FieldError(f"podAnnotations.{key}", f"the {RESERVED_ANNOTATION_PREFIX} prefix is the "
                                 "operator's own")
        if self.cache.managed is not None:
            check_managed_cache(self.model.id, self.model.revision)
        return self


class EmbeddingServiceSpec(ServiceSpec):
    """An embedding model served by TEI: /embed, /embed_sparse, /v1/embeddings."""

    model: EmbeddingModelSpec = Field(..., description="The embedding model TEI serves.")


class RerankerServiceSpec(ServiceSpec):
    """A reranker (a *ForSequenceClassification model with one label) served by TEI: /rerank, /predict."""

    model: ModelSpec = Field(
        ..., description="The reranker TEI serves: a *ForSequenceClassification model with a single label "
        "(for example BAAI/bge-reranker-v2-m3).",
    )
    engine: RerankerEngineSpec = Field(
        default_factory=RerankerEngineSpec, description="TEI image and launcher settings.",
    )


