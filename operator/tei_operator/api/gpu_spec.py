"""`spec.gpu`: how many GPUs each replica gets, and which kind."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from .base import ApiModel, FieldError
from .gpu import GPU_TYPES, GpuTypeName

RESOURCE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
# MIG slices as the NVIDIA device plugin's "mixed" strategy advertises them (nvidia.com/mig-1g.10gb). GPU feature
# discovery then labels the node's product `<product>-MIG-<profile>`, which no gpu.type's product list holds.
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
MIG_WITH_TYPE_MESSAGE = ("gpu.type selects whole GPUs by product; with a MIG resourceName leave type unset and use "
                         "nodeSelector/affinity")


class GpuSpec(ApiModel):
    """GPUs per replica. The type selects both the nodes (GPU feature discovery labels) and the TEI image built
    for that architecture, so the image always matches the GPU it lands on."""

    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "!has(self.type) || self.count > 0",
            "message": "type applies only when count > 0 (count 0 runs the CPU image)",
            "fieldPath": ".type",
        },
        {
            "rule": f"!has(self.type) || !has(self.resourceName) || "
                    f"!self.resourceName.startsWith('{MIG_RESOURCE_PREFIX}')",
            "message": MIG_WITH_TYPE_MESSAGE,
            "fieldPath": ".type",
        },
    ]

    count: int = Field(
        1, ge=0, le=1,
        description="GPUs per replica: 1, or 0 to run TEI's CPU image without GPUs. TEI serves one model on one "
        "GPU, so more per replica would sit idle: scale with replicas instead.",
    )
    type: GpuTypeName | None = Field(  # type: ignore[valid-type]
        None,
        description="GPU type. Pods are placed only on nodes whose nvidia.com/gpu.product label is one of the "
        "type's products, and run the TEI image built for its compute capability (" +
        ", ".join(f"{t.name} {t.compute_capability}" for t in GPU_TYPES.values()) +
        "). Unset: any GPU node, and the cuda- image that detects the architecture at start.",
    )
    resource_name: str = Field(
        "nvidia.com/gpu", max_length=253, pattern=RESOURCE_NAME_PATTERN,
        description="Extended resource requested per GPU, for example nvidia.com/gpu or a MIG profile such as "
        "nvidia.com/mig-1g.10gb. With a MIG profile leave type unset (the node's product label then names the MIG "
        "profile, not the card) and place pods with nodeSelector or affinity.",
    )

    @model_validator(mode="after")
    def _type_needs_gpu(self) -> "GpuSpec":
        if self.type is not None and self.count == 0:
            raise FieldError("type", "type applies only when count > 0 (count 0 runs the CPU image)")
        if self.type is not None and self.resource_name.startswith(MIG_RESOURCE_PREFIX):
            raise FieldError("type", MIG_WITH_TYPE_MESSAGE)
        return self
