"""Which TEI image a service runs: one image per GPU architecture (TEI.md), so the tag follows spec.gpu."""

from __future__ import annotations

from ..api.gpu import GPU_TYPES
from ..api.spec import ServiceSpec
from ..settings import Settings

CPU_PREFIX = "cpu-"
RUNTIME_DETECT_PREFIX = "cuda-"


def image_prefix(spec: ServiceSpec) -> str:
    """The tag prefix: cpu- without GPUs, the type's architecture prefix, or cuda- (detects it at start)."""
    if spec.gpu.count == 0:
        return CPU_PREFIX
    if spec.gpu.type is None:
        return RUNTIME_DETECT_PREFIX
    return GPU_TYPES[spec.gpu.type].image_prefix


def image_for(spec: ServiceSpec, settings: Settings) -> str:
    """`{imageRepository}:{prefix}{version}`, or engine.image verbatim when set."""
    if spec.engine.image:
        return spec.engine.image
    version = spec.engine.version or settings.tei_version
    return f"{settings.image_repository}:{image_prefix(spec)}{version}"
