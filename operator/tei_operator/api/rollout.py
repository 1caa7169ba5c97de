"""`spec.rollout`: how a change rolls out, and how a change of the served model does (blue/green or in place).

Embeddings of two models, or of two revisions of one, are not comparable: a vector index built with one cannot be
searched with the other. So by default (`modelChange: BlueGreen`) a change of what the pods embed with comes up in
a new Deployment beside the serving one, and the Service switches to it only once all its replicas are Ready
(docs/model-changes.md). `InPlace` rolls the one Deployment as any other change, mixing old and new pods behind
the Service for the length of the rollout.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field

from .base import SchemaHint, StatusModel
from .pod import RolloutSpec as PodRolloutSpec

DateTime = Annotated[str, SchemaHint(format="date-time")]

BLUE_GREEN = "BlueGreen"
IN_PLACE = "InPlace"
DEFAULT_DRAIN_SECONDS = 60


class RolloutSpec(PodRolloutSpec):
    """How a change of the pod template rolls out (maxSurge, maxUnavailable), and how a change of the model does
    (modelChange, drainSeconds)."""

    model_change: Literal["BlueGreen", "InPlace"] = Field(
        BLUE_GREEN,
        description="How a change of what the embeddings depend on (model.id, model.revision, model.dtype, and for "
        "embedding models model.pooling, model.defaultPromptName and model.defaultPrompt) rolls out. BlueGreen "
        "(default): a new Deployment for the new model comes up beside the serving one, with as many replicas; the "
        "Service switches to it only once all of them are Ready, and the old Deployment is deleted drainSeconds "
        "later, so clients never get vectors of two models from one Service (it needs twice the GPUs during the "
        "switch). InPlace: the Deployment rolls as for any other change, old and new pods serving side by side "
        "until the rollout ends.",
    )
    drain_seconds: int = Field(
        DEFAULT_DRAIN_SECONDS, ge=0, le=86400,
        description="BlueGreen only: seconds the old Deployment keeps running after the Service switched away from "
        "it (requests in flight finish, clients and proxies that cached its pod addresses move on), before it is "
        "deleted. Default 60.",
    )


class RolloutDeployment(StatusModel):
    """One of the service's Deployments and the model it serves."""

    deployment: str = Field(..., max_length=253, description="Name of the Deployment.")
    model: str | None = Field(
        None, max_length=8192,
        description="The model it serves: id@revision (the id alone when unpinned), then dtype, pooling and default "
        "prompt when set.",
    )
    model_hash: str | None = Field(
        None, max_length=64, description="Hash of that model identity (the pods' tei-operator.io/model-hash label).",
    )
    replicas: int | None = Field(None, ge=0, description="Its replicas.")
    ready_replicas: int | None = Field(None, ge=0, description="Its Ready replicas.")
    started_time: DateTime | None = Field(None, description="Candidate only: when it was created (RFC 3339).")
    waiting_for: str | None = Field(
        None, max_length=4096, description="Candidate only: what the switch still waits for.",
    )
    delete_after: str | None = Field(
        None, max_length=64,
        description="Draining only: when it is deleted (RFC 3339; empty in the moment of the switch).",
    )


class RolloutStatus(StatusModel):
    """Which Deployment serves, and during a blue/green model change the one coming up and the ones draining."""

    model_change: str | None = Field(None, max_length=32, description="spec.rollout.modelChange.")
    phase: Literal["Stable", "Switching", "Draining"] | None = Field(
        None,
        description="Stable: the serving Deployment runs what the spec asks for. Switching: a candidate Deployment "
        "for a new model is coming up; the Service switches once all its replicas are Ready. Draining: the Service "
        "switched; the old Deployment is deleted after spec.rollout.drainSeconds.",
    )
    active: RolloutDeployment | None = Field(None, description="The Deployment the Service selects.")
    candidate: RolloutDeployment | None = Field(None, description="The Deployment for the new model (Switching).")
    draining: list[RolloutDeployment] = Field(
        default_factory=list, max_length=16, description="Deployments switched away from, until deleted.",
    )


def active_deployment(service_name: str, status: Mapping[str, Any] | None) -> str:
    """The Deployment that serves a service (status.rollout.active), for the autoscaler: it scales that one. A
    service whose status predates blue/green is served by the Deployment named like it."""
    active = (((status or {}).get("rollout") or {}).get("active") or {}).get("deployment")
    return str(active) if active else service_name
