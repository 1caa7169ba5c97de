"""Simulated node pools: GPU nodes with the labels NVIDIA's GPU feature discovery (GFD) puts on real nodes,
`nvidia.com/gpu` capacity, and the `nvidia.com/gpu=present:NoSchedule` taint many real clusters use. kwok
manages every node created here (annotation `kwok.x-k8s.io/node: fake`): nothing runs on them for real."""

from __future__ import annotations

from dataclasses import dataclass

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


@dataclass(frozen=True)
class NodePool:
    """`count` identical nodes. `gpus` = 0 makes a CPU-only pool (no GPU labels, no taint)."""

    name: str
    count: int
    gpus: int = 0
    product: str = ""
    family: str = ""
    memory_mib: int = 0
    compute_major: int = 0
    compute_minor: int = 0
    cpu: str = "64"
    memory: str = "512Gi"
    pods: str = "110"

    def node_names(self) -> list[str]:
        return [f"{self.name}-{i}" for i in range(self.count)]

    def labels(self, node_name: str) -> dict[str, str]:
        labels = {
            "kubernetes.io/hostname": node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "kwok",
            "tei-operator.io/pool": self.name,
        }
        if self.gpus:
            labels.update({
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": self.product,
                "nvidia.com/gpu.family": self.family,
                "nvidia.com/gpu.count": str(self.gpus),
                "nvidia.com/gpu.memory": str(self.memory_mib),
                "nvidia.com/gpu.compute.major": str(self.compute_major),
                "nvidia.com/gpu.compute.minor": str(self.compute_minor),
            })
        return labels

    def manifests(self) -> list[dict]:
        nodes = []
        for node_name in self.node_names():
            capacity = {"cpu": self.cpu, "memory": self.memory, "pods": self.pods}
            if self.gpus:
                capacity["nvidia.com/gpu"] = str(self.gpus)
            nodes.append({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": node_name,
                    "labels": self.labels(node_name),
                    "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                },
                "spec": {"taints": [dict(GPU_TAINT)] if self.gpus else []},
                "status": {"capacity": capacity, "allocatable": dict(capacity)},
            })
        return nodes


A100 = NodePool("a100", 2, gpus=8, product="NVIDIA-A100-SXM4-80GB", family="ampere", memory_mib=81920,
                compute_major=8, compute_minor=0)
H100 = NodePool("h100", 1, gpus=4, product="NVIDIA-H100-80GB-HBM3", family="hopper", memory_mib=81559,
                compute_major=9, compute_minor=0)
L4 = NodePool("l4", 1, gpus=1, product="NVIDIA-L4", family="ada-lovelace", memory_mib=23034,
              compute_major=8, compute_minor=9)
CPU = NodePool("cpu", 1)

# The default layout: two A100 nodes with 8 GPUs each, one H100 node with 4, one L4 node with 1, one CPU-only node.
DEFAULT_POOLS: tuple[NodePool, ...] = (A100, H100, L4, CPU)
# A scarce cluster: one A100 node with 2 GPUs and a CPU node (capacity limits show up quickly).
SCARCE_POOLS: tuple[NodePool, ...] = (NodePool("a100", 1, gpus=2, product=A100.product, family=A100.family,
                                               memory_mib=A100.memory_mib, compute_major=8, compute_minor=0), CPU)

LAYOUTS = {"default": DEFAULT_POOLS, "scarce": SCARCE_POOLS}


def parse_layout(text: str) -> tuple[NodePool, ...]:
    """`default`, `scarce`, or `POOL=COUNTxGPUS,...` over the known products, e.g. `a100=1x2,h100=1x4,cpu=1`."""
    if text in LAYOUTS:
        return LAYOUTS[text]
    known = {p.name: p for p in DEFAULT_POOLS}
    pools = []
    for part in text.split(","):
        name, _, shape = part.partition("=")
        name = name.strip()
        if name not in known:
            raise ValueError(f"unknown pool {name!r} in layout {text!r}; known: {', '.join(known)} "
                             f"or one of the layouts {', '.join(LAYOUTS)}")
        count_s, _, gpus_s = shape.partition("x")
        try:
            count = int(count_s)
            gpus = int(gpus_s) if gpus_s else known[name].gpus
        except ValueError:
            raise ValueError(f"pool {name!r}: expected COUNTxGPUS like 2x8, got {shape!r}") from None
        base = known[name]
        pools.append(NodePool(name, count, gpus=gpus if base.gpus else 0, product=base.product, family=base.family,
                              memory_mib=base.memory_mib, compute_major=base.compute_major,
                              compute_minor=base.compute_minor))
    return tuple(pools)
