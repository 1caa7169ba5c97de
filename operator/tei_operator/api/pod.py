"""Pod-level fields of the spec: resources, scheduling, the cache volume, the Service and the rollout strategy.

Fields the operator interprets (tolerations, node affinity, resources, cache) have faithful schemas so a bad
manifest is refused by name; fields it only passes through (security contexts, pod affinity) stay free-form.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from .base import ApiModel, FieldError
from .cache import ManagedCache
from .types import AnnotationValue, DnsSubdomain, FreeForm, IntOrPercent, LabelValue, Quantity


class ResourceList(ApiModel):
    """CPU, memory and ephemeral storage amounts. GPUs are not set here: they come from spec.gpu."""

    cpu: Quantity | None = Field(None, description="CPU, for example 2 or 500m.")
    memory: Quantity | None = Field(None, description="Memory, for example 16Gi.")
    ephemeral_storage: Quantity | None = Field(
        None, alias="ephemeral-storage", description="Node-local scratch space, for example 10Gi.",
    )


class ResourcesSpec(ApiModel):
    """Requests and limits of the TEI container, besides the GPU (which spec.gpu sets)."""

    requests: ResourceList | None = Field(None, description="Amounts the scheduler reserves.")
    limits: ResourceList | None = Field(None, description="Amounts the container may not exceed.")


class Toleration(ApiModel):
    """A toleration of the TEI pods, as in a Pod. A toleration of the nvidia.com/gpu taint is added when GPUs are
    requested."""

    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
            "message": "value must be empty when operator is Exists",
            "fieldPath": ".value",
        },
        {
            "rule": "(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
            "message": "operator must be Exists when key is empty",
            "fieldPath": ".operator",
        },
    ]

    key: str | None = Field(None, max_length=316, description="Taint key; empty with Exists matches every taint.")
    operator: Literal["Exists", "Equal"] | None = Field(None, description="Exists or Equal. Unset: Equal.")
    value: str | None = Field(None, max_length=63, description="Taint value, for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match. Unset: all effects.",
    )
    toleration_seconds: int | None = Field(
        None, description="For NoExecute: how long the pod stays bound after the taint appears.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> "Toleration":
        if self.operator == "Exists" and self.value:
            raise FieldError("value", "value must be empty when operator is Exists")
        if not self.key and self.operator != "Exists":
            raise FieldError("operator", "operator must be Exists when key is empty")
        return self


class NodeSelectorRequirement(ApiModel):
    """One label requirement of a node selector term."""

    key: str = Field(..., min_length=1, max_length=316, description="Node label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(
        ..., description="How the label's value is compared with values.",
    )
    values: list[LabelValue] = Field(
        default_factory=list, max_length=64, description="Values to compare with (In/NotIn: any; Gt/Lt: one integer).",
    )


class NodeSelectorTerm(ApiModel):
    """Requirements that must all hold (terms of a node selector are alternatives)."""

    match_expressions: list[NodeSelectorRequirement] = Field(
        default_factory=list, max_length=32, description="Requirements on node labels.",
    )
    match_fields: list[NodeSelectorRequirement] = Field(
        default_factory=list, max_length=32, description="Requirements on node fields (metadata.name).",
    )


class NodeSelector(ApiModel):
    """Node selector terms, any one of which must match."""

    node_selector_terms: list[NodeSelectorTerm] = Field(
        ..., min_length=1, max_length=32,
        description="Alternatives. The GPU type's requirement is added to every term.",
    )


class NodeAffinity(ApiModel):
    """Node affinity. The GPU type's product requirement is merged into the required terms."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = Field(
        None, description="Nodes the pods may run on; the GPU type's requirement is added to each term.",
    )
    preferred_during_scheduling_ignored_during_execution: list[FreeForm] = Field(
        default_factory=list, max_length=32,
        description="Weighted preferences, as in a Pod (passed through unchanged).",
    )


class Affinity(ApiModel):
    """Scheduling affinity of the TEI pods, as in a Pod."""

    node_affinity: NodeAffinity | None = Field(None, description="Node affinity, merged with the GPU type's.")
    pod_affinity: FreeForm | None = Field(None, description="Pod affinity, as in a Pod (passed through unchanged).")
    pod_anti_affinity: FreeForm | None = Field(
        None, description="Pod anti-affinity, as in a Pod (passed through unchanged); for example to spread "
        "replicas across nodes or zones.",
    )


class EmptyDirCache(ApiModel):
    """A model cache that lives and dies with the pod: every new pod downloads the model again."""

    size_limit: Quantity | None = Field(
        None, description="Most space the cache may use, for example 20Gi (the model's size plus margin). Unset: "
        "no limit beyond the node's ephemeral storage.",
    )


class PvcCache(ApiModel):
    """A model cache on an existing PersistentVolumeClaim, shared by every replica: the model is downloaded once."""

    claim_name: DnsSubdomain = Field(
        ..., description="Name of the PersistentVolumeClaim, in the service's namespace. With more than one "
        "replica it must be ReadWriteMany (or ReadOnlyMany with the model already in it).",
    )


class CacheSpec(ApiModel):
    """Where /data, TEI's model cache, lives: exactly one of emptyDir, persistentVolumeClaim or managed."""

    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "(has(self.emptyDir) ? 1 : 0) + (has(self.persistentVolumeClaim) ? 1 : 0) + "
            "(has(self.managed) ? 1 : 0) == 1",
            "message": "set exactly one of emptyDir, persistentVolumeClaim or managed",
        },
    ]

    empty_dir: EmptyDirCache | None = Field(None, description="A per-pod emptyDir (the default).")
    persistent_volume_claim: PvcCache | None = Field(None, description="An existing PersistentVolumeClaim.")
    managed: ManagedCache | None = Field(
        None, description="A PersistentVolumeClaim the operator creates and fills once per pinned revision with a "
        "download Job; pods mount it read-only and start without downloading (docs/model-cache.md). Needs "
        "spec.model.revision pinned to a commit sha.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> "CacheSpec":
        if sum(x is not None for x in (self.empty_dir, self.persistent_volume_claim, self.managed)) != 1:
            raise FieldError("emptyDir", "set exactly one of emptyDir, persistentVolumeClaim or managed")
        return self


def default_cache() -> CacheSpec:
    """The default cache: a per-pod emptyDir."""
    return CacheSpec(empty_dir=EmptyDirCache())


class ServiceExposure(ApiModel):
    """The Kubernetes Service in front of the TEI pods (named like the resource)."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field("ClusterIP", description="Service type.")
    port: int = Field(80, ge=1, le=65535, description="Service port, forwarded to TEI's port 80 (named http).")
    annotations: dict[str, AnnotationValue] = Field(
        default_factory=dict, max_length=64, description="Annotations of the Service (load balancer settings).",
    )


class RolloutSpec(ApiModel):
    """How a change of the pod template rolls out.

    Default maxSurge 1 / maxUnavailable 0: serving capacity never drops during a rollout, which matters because a
    new TEI pod needs minutes to download and load its model. The price is one spare GPU while each new pod
    starts; when none is free the new pod waits Pending and the old ones keep serving. On a pool with no spare GPU,
    set maxSurge 0 / maxUnavailable 1: the rollout then proceeds one pod at a time with one replica less.
    """

    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "!(has(self.maxSurge) && has(self.maxUnavailable) && string(self.maxSurge) in ['0', '0%'] && "
            "string(self.maxUnavailable) in ['0', '0%'])",
            "message": "maxSurge and maxUnavailable must not both be zero",
            "fieldPath": ".maxUnavailable",
        },
    ]

    max_surge: IntOrPercent = Field(
        1,
        description="Pods above the desired count during a rollout (integer or percentage). Default 1: capacity "
        "never drops, at the cost of one spare GPU per step; set 0 (with maxUnavailable 1) when no GPU is spare.",
    )
    max_unavailable: IntOrPercent = Field(
        0,
        description="Pods below the desired count during a rollout (integer or percentage). Default 0 (see "
        "maxSurge); 1 lets a rollout proceed without a spare GPU at the cost of one replica's capacity.",
    )

    @model_validator(mode="after")
    def _progress(self) -> "RolloutSpec":
        if str(self.max_surge) in ("0", "0%") and str(self.max_unavailable) in ("0", "0%"):
            raise FieldError("maxUnavailable", "maxSurge and maxUnavailable must not both be zero")
        return self
