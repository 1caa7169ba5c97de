"""`status` of both kinds: what the operator observed, following the Kubernetes API conventions (and so kstatus,
which Flux, Argo CD and `kubectl wait` read)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .autoscaling import AutoscalingStatus
from .base import SchemaHint, StatusModel
from .cost import CostStatus
from .served_model import ServedModel

# Ready/Progressing/Degraded for people, kubectl wait and Argo CD; Reconciling/Stalled (abnormal-true) for kstatus
# (Flux, kpt, Config Sync); ScalingLimited from the autoscaler; ModelMismatch (abnormal-true) when Ready pods serve
# different model commits.
CONDITION_TYPES = ("Ready", "Progressing", "Degraded", "Reconciling", "Stalled", "ScalingLimited", "ModelMismatch")
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

DateTime = Annotated[str, SchemaHint(format="date-time")]


class Condition(StatusModel):
    """One aspect of the service's state (Ready, Progressing, Degraded, Reconciling, Stalled, ScalingLimited,
    ModelMismatch)."""

    type: str = Field(
        ..., min_length=1, max_length=316,
        description="Ready, Progressing, Degraded, Reconciling, Stalled, ScalingLimited or ModelMismatch. "
        "Reconciling=True (on its way) and Stalled=True (stuck until something changes) are what kstatus-based "
        "tools (Flux, kpt, Config Sync) read. ModelMismatch=True: Ready pods serve different model commits.",
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
        description="Current state: Ready, Progressing, Degraded, Reconciling, Stalled, ScalingLimited, "
        "ModelMismatch.",
    )
    model: ServedModel | None = Field(
        None, description="The model asked for and the commit (sha) each Ready pod reports in TEI's /info.",
    )
    cost: CostStatus | None = Field(
        None, description="The fleet's $/hour and $ per 1M tokens at the measured token rate (when the GPU type has "
        "a price in the operator's settings).",
    )
    autoscaling: AutoscalingStatus | None = Field(None, description="What the autoscaler last saw and decided.")
