"""GPU type -> where pods may run (node affinity, tolerations) and what they request (resource limits).

Node selection uses only `nvidia.com/gpu.product`: every product of a type has the type's compute capability, so
the product pins the card (an a100 request must not land on an a30 with a third of the memory) and the image's
architecture at once. The compute.major/minor labels are not added: they would say nothing the product does not,
and clusters with older GPU feature discovery lack them, which would leave the pods Pending.
"""

from __future__ import annotations

import copy
from typing import Any

from ..api.gpu import GPU_TYPES
from ..api.gpu_spec import GpuSpec
from ..api.pod import Affinity

PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}


def uses_gpu(gpu: GpuSpec) -> bool:
    """Whether replicas request GPUs (count 0 runs the CPU image)."""
    return gpu.count > 0


def gpu_limits(gpu: GpuSpec) -> dict[str, str]:
    """The container limits for the GPUs (extended resources: the request defaults to the limit), as the quantity
    string the API server stores, so a re-read object compares equal."""
    return {gpu.resource_name: str(gpu.count)} if uses_gpu(gpu) else {}


def product_requirement(gpu: GpuSpec) -> dict[str, Any] | None:
    """The node selector requirement of the GPU type, or None when any node will do."""
    if not uses_gpu(gpu) or gpu.type is None:
        return None
    return {"key": PRODUCT_LABEL, "operator": "In", "values": list(GPU_TYPES[gpu.type].products)}


def _tolerates_gpu_taint(toleration: dict[str, Any]) -> bool:
    """Whether a toleration already covers the nvidia.com/gpu:NoSchedule taint (whatever its value)."""
    if toleration.get("effect") not in (None, "", "NoSchedule"):
        return False
    key, operator = toleration.get("key") or "", toleration.get("operator") or "Equal"
    return operator == "Exists" and key in ("", GPU_TAINT_KEY)


def merge_tolerations(user: list[dict[str, Any]], gpu: GpuSpec) -> list[dict[str, Any]]:
    """The user's tolerations (duplicates dropped, order kept), plus the GPU taint's when GPUs are requested and no
    user toleration covers it already."""
    merged: list[dict[str, Any]] = []
    for toleration in user:
        if toleration not in merged:
            merged.append(toleration)
    if uses_gpu(gpu) and not any(_tolerates_gpu_taint(t) for t in merged):
        merged.append(dict(GPU_TOLERATION))
    return merged


def merge_affinity(affinity: Affinity | None, gpu: GpuSpec) -> dict[str, Any] | None:
    """The user's affinity with the GPU type's requirement added to every required node selector term (terms are
    alternatives, so each one must carry it)."""
    # Defaults (empty matchFields, preferred terms) are left out; free-form parts pass through unchanged.
    wire = (affinity.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True, mode="json")
            if affinity is not None else {})
    requirement = product_requirement(gpu)
    if requirement is not None:
        node = wire.setdefault("nodeAffinity", {})
        required = node.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {"nodeSelectorTerms": [{}]})
        for term in required["nodeSelectorTerms"]:
            expressions = term.setdefault("matchExpressions", [])
            if requirement not in expressions:
                expressions.append(copy.deepcopy(requirement))
    return wire or None

