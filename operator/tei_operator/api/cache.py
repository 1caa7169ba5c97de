"""The managed model cache: `spec.cache.managed` and `status.cache`.

With `spec.cache.managed` the operator creates a PersistentVolumeClaim and a download Job that fills it once for
the pinned revision (spec.model.revision, a full commit sha); the TEI pods mount the claim read-only and load the
model from it without downloading (docs/model-cache.md). The decision of what to create and what the cache's phase
is lives in controller/model_cache.py, the manifests in render/cache.py.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from .base import ApiModel, FieldError, StatusModel
from .types import DnsSubdomain, Quantity

# A managed cache is filled once for one commit: a branch or tag would move while the cache stays where it was.
PINNED_REVISION_PATTERN = r"^[0-9a-f]{40}$"
_PINNED = re.compile(PINNED_REVISION_PATTERN)

AccessMode = Literal["ReadWriteMany", "ReadWriteOnce"]
CachePhase = Literal["Pending", "Downloading", "Ready", "Failed"]

# The spec-level rules (they span spec.model and spec.cache), attached to ServiceSpec's schema.
MANAGED_CACHE_CEL_RULES = [
    {
        "rule": "!has(self.cache) || !has(self.cache.managed) || (has(self.model.revision) && "
        f"self.model.revision.matches('{PINNED_REVISION_PATTERN}'))",
        "message": "spec.cache.managed needs spec.model.revision pinned to a full 40-character commit sha: the cache "
        "is filled once, for that commit",
        "fieldPath": ".model.revision",
    },
    {
        "rule": "!has(self.cache) || !has(self.cache.managed) || !self.model.id.startsWith('/')",
        "message": "spec.cache.managed downloads spec.model.id from the Hugging Face Hub: it must be a hub id, not a "
        "path under /data",
        "fieldPath": ".model.id",
    },
]


class ManagedCache(ApiModel):
    """A model cache the operator creates and fills: a PersistentVolumeClaim named `<service>-model-cache` and a
    download Job that fills it once for spec.model.revision. The pods mount it read-only and start without
    downloading; the Deployment is created (or moved to a new revision) only once the download succeeded."""

    size: Quantity = Field(
        ..., description="Size of the PersistentVolumeClaim, for example 20Gi: the model's files (weights in every "
        "format the repository holds, minus the skipped ones, see docs/model-cache.md) plus the previous revision's "
        "while a new one is downloaded (old revisions are kept).",
    )
    storage_class_name: DnsSubdomain | None = Field(
        None, description="StorageClass of the claim. Unset: the cluster's default StorageClass. With the default "
        "accessModes it must provision ReadWriteMany volumes (NFS, CephFS, EFS, Filestore, Azure Files ...).",
    )
    access_modes: list[AccessMode] = Field(
        default_factory=lambda: ["ReadWriteMany"], min_length=1, max_length=2,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Access modes of the claim. Default ReadWriteMany: replicas on any node mount the one copy. "
        "ReadWriteOnce attaches the volume to one node at a time: every replica (and the download pod) must then "
        "run on that node, so use it only for a single-node pool.",
    )

    @model_validator(mode="after")
    def _distinct_modes(self) -> "ManagedCache":
        if len(set(self.access_modes)) != len(self.access_modes):
            raise FieldError("accessModes", "each access mode may appear once")
        return self


def check_managed_cache(model_id: str, revision: str | None) -> None:
    """The pydantic side of MANAGED_CACHE_CEL_RULES (paths relative to spec)."""
    if revision is None or not _PINNED.match(revision):
        raise FieldError("model.revision", "spec.cache.managed needs spec.model.revision pinned to a full "
                         f"40-character commit sha: the cache is filled once, for that commit (got {revision!r})")
    if model_id.startswith("/"):
        raise FieldError("model.id", "spec.cache.managed downloads spec.model.id from the Hugging Face Hub: it must "
                         "be a hub id, not a path under /data")


class CacheStatus(StatusModel):
    """How the managed model cache is doing (only with spec.cache.managed)."""

    phase: CachePhase = Field(
        ..., description="Pending (claim or download pod not running yet), Downloading, Ready (the revision is in "
        "the cache: pods may start) or Failed (the download Job failed; delete the Job to retry).",
    )
    revision: str | None = Field(None, max_length=128, description="The revision the cache holds or is being filled "
                                 "with (spec.model.revision).")
    claim_name: str | None = Field(None, max_length=253, description="The PersistentVolumeClaim.")
    job_name: str | None = Field(None, max_length=63, description="The download Job of this revision.")
    message: str | None = Field(None, max_length=4096, description="What is happening, in words.")
