"""`status.model`: which model the service asks for, and which commit each Ready pod serves.

Embeddings of two revisions of a model are not comparable, so a service whose pods serve different commits gives
its clients vectors that do not belong in one index. The operator reads each Ready pod's TEI `/info` (its
`model_id` and `model_sha`: the commit TEI resolved the revision to at download) and reports them here; the
`ModelMismatch` condition says when they differ.
"""

from __future__ import annotations

from pydantic import Field

from .base import StatusModel

MAX_REPORTED_PODS = 200


class PodModel(StatusModel):
    """What one Ready pod reported in TEI's /info."""

    name: str = Field(..., max_length=253, description="Pod name.")
    model_id: str | None = Field(None, max_length=256, description="model_id the pod's TEI reports.")
    sha: str | None = Field(
        None, max_length=128,
        description="model_sha the pod's TEI reports: the commit its revision resolved to. Unset while not read.",
    )


class ServedModel(StatusModel):
    """The model asked for and the commits the Ready pods serve."""

    id: str = Field(..., max_length=256, description="spec.model.id.")
    requested_revision: str | None = Field(
        None, max_length=128, description="spec.model.revision; unset: the default branch at download time.",
    )
    served_shas: list[str] = Field(
        default_factory=list, max_length=MAX_REPORTED_PODS,
        description="The distinct model commits the Ready pods report, sorted. More than one: ModelMismatch.",
    )
    pods: list[PodModel] = Field(
        default_factory=list, max_length=MAX_REPORTED_PODS,
        description=f"Each Ready pod and what it reported (at most {MAX_REPORTED_PODS}, by name).",
    )
