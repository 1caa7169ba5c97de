"""The GPU types a service can ask for, and what each one means for scheduling and for the TEI image.

TEI ships one image per CUDA compute capability (TEI.md), so a GPU type pins both the nodes a pod may land on
(NVIDIA GPU feature discovery's `nvidia.com/gpu.product` label) and the image tag prefix. Every product listed under
a type has that type's compute capability, which is what keeps the image and the card in step.

Product values are GFD's label values: the name `nvidia-smi` reports with spaces replaced by dashes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class GpuType:
    """One friendly GPU type: its GFD product names, architecture family, compute capability and TEI image prefix."""

    name: str
    products: tuple[str, ...]
    family: str
    compute: tuple[int, int]
    image_prefix: str

    @property
    def compute_capability(self) -> str:
        """The compute capability as `major.minor`, as TEI.md and nvidia-smi write it."""
        return f"{self.compute[0]}.{self.compute[1]}"


def _t(name: str, products: tuple[str, ...], family: str, compute: tuple[int, int], prefix: str) -> GpuType:
    return GpuType(name, products, family, compute, prefix)


GPU_TYPES: dict[str, GpuType] = {
    t.name: t
    for t in (
        _t("t4", ("Tesla-T4", "NVIDIA-T4"), "turing", (7, 5), "turing-"),
        _t("a100", ("NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-PCIE-40GB",
                    "NVIDIA-A100-80GB-PCIe", "A100-SXM4-40GB", "A100-SXM4-80GB"), "ampere", (8, 0), ""),
        _t("a30", ("NVIDIA-A30",), "ampere", (8, 0), ""),
        _t("a10", ("NVIDIA-A10",), "ampere", (8, 6), "86-"),
        _t("a10g", ("NVIDIA-A10G",), "ampere", (8, 6), "86-"),
        _t("a40", ("NVIDIA-A40",), "ampere", (8, 6), "86-"),
        _t("rtxa6000", ("NVIDIA-RTX-A6000",), "ampere", (8, 6), "86-"),
        _t("rtx3090", ("NVIDIA-GeForce-RTX-3090",), "ampere", (8, 6), "86-"),
        _t("l4", ("NVIDIA-L4",), "ada-lovelace", (8, 9), "89-"),
        _t("l40", ("NVIDIA-L40",), "ada-lovelace", (8, 9), "89-"),
        _t("l40s", ("NVIDIA-L40S",), "ada-lovelace", (8, 9), "89-"),
        _t("rtx4090", ("NVIDIA-GeForce-RTX-4090",), "ada-lovelace", (8, 9), "89-"),
        _t("h100", ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe", "NVIDIA-H100-NVL"), "hopper", (9, 0), "hopper-"),
        _t("h200", ("NVIDIA-H200", "NVIDIA-H200-NVL"), "hopper", (9, 0), "hopper-"),
        _t("h20", ("NVIDIA-H20",), "hopper", (9, 0), "hopper-"),
        _t("b200", ("NVIDIA-B200",), "blackwell", (10, 0), "100-"),
        _t("rtx5090", ("NVIDIA-GeForce-RTX-5090",), "blackwell", (12, 0), "120-"),
    )
}

GpuTypeName = Literal[tuple(GPU_TYPES)]  # type: ignore[valid-type]  # the enum of spec.gpu.type
