"""`status` of both kinds: what the operator observed, following the Kubernetes API conventions (and so kstatus,
which Flux, Argo CD and `kubectl wait` read)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import Field

from .autoscaling import AutoscalingStatus
from .base import SchemaHint, StatusModel
from .cache import CacheStatus
from .cost import CostStatus
from .rollout import RolloutStatus
from .served_model import ServedModel

# Ready/Available/Progressing/Degraded for people and kubectl wait; Reconciling/Stalled (abnormal-true) for kstatus
# (Flux, kpt, Config Sync) and Argo CD's health check; ScalingLimited from the autoscaler; ModelMismatch
# (abnormal-true) when Ready pods serve different model commits; CacheReady with spec.cache.managed.
CONDITION_TYPES = ("Ready", "Available", "Progressing", "Degraded", "Reconciling", "Stalled", "ScalingLimited",
                   "ModelMismatch", "CacheReady")

# What the STATUS column says while a serving service is held back by the autoscaler's limits (ScalingLimited=True):
# the load is above target and more replicas are wanted than maxReplicas or the free GPUs allow, or the metrics
# are missing (so the autoscaler holds).
LIMIT_SUMMARIES = {
    "MaxReplicas": "LimitedByMaxReplicas",
    "GpuCapacity": "LimitedByGpuCapacity",
    "MetricsUnavailable": "MetricsUnavailable",
    "ActivationUnavailable": "ActivationUnavailable",  # scale to zero's activation query (autoscaling/activation.py)
}


def status_summary(conditions: Sequence[Mapping[str, Any]] | None) -> str | None:
    """status.summary, the STATUS column, from the conditions (both the controller and the autoscaler write it
    with any change of the list, so it follows whichever condition changed last):

    1. Stalled=True: its reason (CrashLoopBackOff, InvalidSpec, ...): the service needs a change;
    1b. ModelMismatch=True (Ready pods serving different model commits, where a controller writes it): ModelMismatch,
       since mixed embeddings behind one Service matter more than capacity;
    2. serving (Ready or Available True) and ScalingLimited=True: LimitedByMaxReplicas, LimitedByGpuCapacity or
       MetricsUnavailable, since an AllReplicasReady service held at maxReplicas under a long queue is not fine;
    3. otherwise Ready's reason (AllReplicasReady, WaitingForReady, Unschedulable, RollingOut, ...)."""
    by_type = {c.get("type"): c for c in conditions or []}

    def true(ctype: str) -> Mapping[str, Any] | None:
        cond = by_type.get(ctype)
        return cond if cond is not None and cond.get("status") == "True" else None

    stalled = true("Stalled")
    if stalled is not None and stalled.get("reason"):
        return str(stalled["reason"])
    if true("ModelMismatch") is not None:
        return "ModelMismatch"
    limited = true("ScalingLimited")
    if (true("Ready") or true("Available")) and limited is not None and limited.get("reason") in LIMIT_SUMMARIES:
        return LIMIT_SUMMARIES[str(limited["reason"])]
    for ctype in ("Ready", "Available"):
        reason = (by_type.get(ctype) or {}).get("reason")
        if reason:
            return str(reason)
    return None


REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

DateTime = Annotated[str, SchemaHint(format="date-time")]


class Condition(StatusModel):
    """One aspect of the service's state (Ready, Available, Progressing, Degraded, Reconciling, Stalled,
    ScalingLimited, ModelMismatch)."""

    type: str = Field(
        ..., min_length=1, max_length=316,
        description="Ready (every desired replica ready, rollout done), Available (at least spec.minAvailable "
        "replicas ready: the service serves), Progressing, Degraded, Reconciling, Stalled, ScalingLimited or "
        "ModelMismatch. Reconciling=True (on its way) and Stalled=True (stuck until something changes) are what "
        "kstatus-based tools (Flux, kpt, Config Sync) read; they follow Available, so a scale-up is not an outage. "
        "ModelMismatch=True: Ready pods serve different model commits. CacheReady (with spec.cache.managed): the "
        "managed model cache holds spec.model.revision.",
    )
    status: Literal["True", "False", "Unknown"] = Field(..., description="True, False or Unknown.")
    reason: str | None = Field(
        None, max_length=1024, pattern=REASON_PATTERN, description="Why, as one PascalCase word.",
    )
    message: str | None = Field(None, max_length=32768, description="Why, in words.")
    last_transition_time: DateTime | None = Field(None, description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        None, ge=0, description="The metadata.generation this condition was computed from.",
    )


class ServiceStatus(StatusModel):
    """What the operator last observed of the service and its children."""

    observed_generation: int | None = Field(None, ge=0, description="The metadata.generation last reconciled.")
    replicas: int | None = Field(None, ge=0, description="Replicas of the Deployment (the scale subresource's status).")
    ready_replicas: int | None = Field(None, ge=0, description="Replicas Ready to serve.")
    selector: str | None = Field(
        None, max_length=1024, description="Label selector of the pods, as a string (the scale subresource's).",
    )
    endpoint: str | None = Field(None, max_length=1024, description="In-cluster URL of the service.")
    image: str | None = Field(None, max_length=1024, description="TEI image the pods run.")
    conditions: list[Condition] = Field(
        default_factory=list, max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description="Current state: Ready, Available, Progressing, Degraded, Reconciling, Stalled, ScalingLimited, "
        "ModelMismatch, CacheReady.",
    )
    summary: str | None = Field(
        None, max_length=64,
        description="One word for the STATUS column: Stalled's reason when stalled; ModelMismatch when Ready pods "
        "serve different model commits; LimitedByMaxReplicas, LimitedByGpuCapacity, MetricsUnavailable or "
        "ActivationUnavailable while serving and the autoscaler is held back; else Ready's reason (ScaledToZero for a "
        "pool at zero).",
    )
    model: ServedModel | None = Field(
        None, description="The model asked for and the commit (sha) each Ready pod reports in TEI's /info.",
    )
    cost: CostStatus | None = Field(
        None, description="The fleet's $/hour and $ per 1M tokens at the measured token rate (when the GPU type has "
        "a price in the operator's settings).",
    )
    cache: CacheStatus | None = Field(
        None, description="The managed model cache (spec.cache.managed): its phase, revision, claim and download Job.",
    )
    autoscaling: AutoscalingStatus | None = Field(None, description="What the autoscaler last saw and decided.")
    rollout: RolloutStatus | None = Field(
        None, description="Which Deployment serves, and during a blue/green model change the candidate and the "
        "draining ones (docs/model-changes.md).",
    )
