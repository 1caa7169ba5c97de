"""How many replicas of a service the GPU nodes can still hold: pure functions over node and pod dicts.

The autoscaler must never ask for GPUs the cluster cannot schedule (a Pending pod holds nothing but a promise),
except for `max_pending_replicas` pods left for a cluster autoscaler to act on. One LIST of nodes and one LIST of
pods per tick serve every service: `ClusterUsage.from_lists` sums what is allocated on each node once, then
`schedulable_replicas` answers per service from its pod template.

A node counts for a service when the scheduler could put its pod there: not cordoned, every label of the pod's
nodeSelector matches, one of its required node affinity terms matches, and every NoSchedule/NoExecute taint is
tolerated. Allocated = the sum of the requests (a container's extended-resource request defaults to its limit) of
the non-terminated pods bound to the node, as the scheduler counts them (a pod being deleted still holds its GPU).
Not modelled: CPU/memory fit, pod (anti-)affinity, topology spread, pod count limits. GPUs are what run out first
for TEI; the others would show up as Pending pods, which the loop reports as such.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TERMINATED_PHASES = ("Succeeded", "Failed")
SCHEDULING_EFFECTS = ("NoSchedule", "NoExecute")


_MULTIPLIERS = (("Ki", 2**10), ("Mi", 2**20), ("Gi", 2**30), ("k", 10**3), ("M", 10**6), ("G", 10**9))
"""Quantity suffixes of whole numbers, the two-letter ones first ("Mi" before "M")."""


def parse_count(quantity: Any) -> int:
    """An extended-resource quantity as an integer (extended resources are whole numbers: "1", 2, "4", "1k").
    Raises ValueError for anything else."""
    if isinstance(quantity, bool):
        raise ValueError(f"not a resource quantity: {quantity!r}")
    if isinstance(quantity, int):
        return quantity
    text = str(quantity).strip()
    if text.isascii() and text.isdigit():  # "1", "8": nearly every GPU count (every tick reads each service's)
        return int(text)
    for suffix, factor in _MULTIPLIERS:
        if text.endswith(suffix):
            return int(text[: -len(suffix)]) * factor
    value = float(text)
    if value != int(value):
        raise ValueError(f"extended resource quantity must be a whole number, got {quantity!r}")
    return int(value)


def container_request(container: Mapping[str, Any], resource: str) -> int:
    """A container's request of `resource`; for extended resources the request defaults to the limit."""
    resources = container.get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    value = requests.get(resource, limits.get(resource))
    return 0 if value is None else parse_count(value)


def pod_request(pod_spec: Mapping[str, Any], resource: str) -> int:
    """What the scheduler reserves for a pod: the larger of the sum over its containers and its largest init
    container (init containers run one at a time, before the others)."""
    main = sum(container_request(c, resource) for c in pod_spec.get("containers") or [])
    init = max((container_request(c, resource) for c in pod_spec.get("initContainers") or []), default=0)
    return max(main, init)


def is_terminated(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in TERMINATED_PHASES


def tolerates(tolerations: Sequence[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    """Whether one of the tolerations tolerates the taint (Kubernetes' rules: empty effect matches all effects,
    Exists matches any value, an empty key with Exists matches every taint)."""
    for tol in tolerations:
        effect = tol.get("effect") or ""
        if effect and effect != taint.get("effect"):
            continue
        operator = tol.get("operator") or "Equal"
        key = tol.get("key") or ""
        if operator == "Exists":
            if not key or key == taint.get("key"):
                return True
        elif operator == "Equal":
            if key == taint.get("key") and (tol.get("value") or "") == (taint.get("value") or ""):
                return True
    return False


def _match_expression(values_of: Mapping[str, str], expr: Mapping[str, Any]) -> bool:
    key, operator, wanted = expr.get("key"), expr.get("operator"), list(expr.get("values") or [])
    present = key in values_of
    value = values_of.get(key, "")
    if operator == "In":
        return present and value in wanted
    if operator == "NotIn":
        return not present or value not in wanted
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt"):
        try:
            have, bound = int(value), int(wanted[0])
        except (ValueError, IndexError):
            return False
        return present and (have > bound if operator == "Gt" else have < bound)
    return False  # an operator we do not know: the scheduler would refuse the pod; do not count the node


def matches_term(node: Mapping[str, Any], term: Mapping[str, Any]) -> bool:
    """One nodeSelectorTerm: all its matchExpressions (labels) and matchFields (metadata.name) hold. An empty term
    matches nothing (Kubernetes' rule)."""
    exprs, fields = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not exprs and not fields:
        return False
    meta = node.get("metadata") or {}
    labels = meta.get("labels") or {}
    return (all(_match_expression(labels, e) for e in exprs)
            and all(_match_expression({"metadata.name": meta.get("name", "")}, f) for f in fields))


def node_fits(node: Mapping[str, Any], pod_spec: Mapping[str, Any]) -> bool:
    """Whether the scheduler could put a pod with this spec on the node (labels, affinity, taints, cordon)."""
    spec = node.get("spec") or {}
    if spec.get("unschedulable"):
        return False
    labels = (node.get("metadata") or {}).get("labels") or {}
    for key, value in (pod_spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = (((pod_spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms")
    if terms is not None and not any(matches_term(node, t) for t in terms):
        return False
    tolerations = pod_spec.get("tolerations") or []
    for taint in spec.get("taints") or []:
        if taint.get("effect") in SCHEDULING_EFFECTS and not tolerates(tolerations, taint):
            return False
    return True


@dataclass(frozen=True)
class NodeFree:
    """What is left of one resource on one node."""

    name: str
    allocatable: int
    allocated: int

    @property
    def free(self) -> int:
        return max(0, self.allocatable - self.allocated)


@dataclass
class ClusterUsage:
    """Nodes and the pods bound to them, from one LIST of each: shared by every service in a tick."""

    nodes: list[Mapping[str, Any]]
    pods_by_node: dict[str, list[Mapping[str, Any]]] = field(default_factory=dict)
    _allocated: dict[tuple[str, str], int] = field(default_factory=dict)
    _free: dict[str, list[NodeFree]] = field(default_factory=dict)
    _placements: dict[tuple[int, str], tuple[Mapping[str, Any], int, list[NodeFree]]] = field(default_factory=dict)

    @classmethod
    def from_lists(cls, nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]) -> "ClusterUsage":
        usage = cls(nodes=list(nodes))
        for pod in pods:
            node_name = (pod.get("spec") or {}).get("nodeName")
            if node_name and not is_terminated(pod):
                usage.pods_by_node.setdefault(node_name, []).append(pod)
        return usage

    def allocated(self, node_name: str, resource: str) -> int:
        key = (node_name, resource)
        if key not in self._allocated:
            self._allocated[key] = sum(pod_request(p.get("spec") or {}, resource)
                                       for p in self.pods_by_node.get(node_name, []))
        return self._allocated[key]

    def free_on_matching_nodes(self, pod_spec: Mapping[str, Any], resource: str) -> list[NodeFree]:
        """Each node the pod may use, with its allocatable and allocated amount of `resource`. Remembered per
        placement (node selector, affinity, tolerations) and resource: a fleet's services mostly share one, and
        matching every node for each of 1,000 services was most of a tick."""
        key = repr((pod_spec.get("nodeSelector"), pod_spec.get("affinity"), pod_spec.get("tolerations"), resource))
        if key not in self._free:
            self._free[key] = self._match(pod_spec, resource)
        return self._free[key]

    def placement(self, pod_spec: Mapping[str, Any], resource: str) -> tuple[int, list[NodeFree]]:
        """(what one pod of `pod_spec` requests of `resource`, `free_on_matching_nodes` when that is more than 0),
        remembered per pod spec object: the autoscaler keeps one usage while the watch-fed store is unchanged, whose
        objects are read-only, so at rest each service's answer is a lookup. The memo holds the spec it was made
        for, so an object that took a freed one's id is never taken for it."""
        key = (id(pod_spec), resource)
        held = self._placements.get(key)
        if held is None or held[0] is not pod_spec:
            per_pod = pod_request(pod_spec, resource)
            nodes = self.free_on_matching_nodes(pod_spec, resource) if per_pod > 0 else []
            held = self._placements[key] = (pod_spec, per_pod, nodes)
        return held[1], held[2]

    def _match(self, pod_spec: Mapping[str, Any], resource: str) -> list[NodeFree]:
        out = []
        for node in self.nodes:
            allocatable = ((node.get("status") or {}).get("allocatable") or {}).get(resource)
            if allocatable is None or not node_fits(node, pod_spec):
                continue
            name = (node.get("metadata") or {}).get("name", "")
            out.append(NodeFree(name, parse_count(allocatable), self.allocated(name, resource)))
        return out


@dataclass(frozen=True)
class Capacity:
    """How many replicas a service's pods can occupy: those already placed plus what the free GPUs fit."""

    placed: int
    fits: int
    matching_nodes: int

    @property
    def schedulable(self) -> int:
        return self.placed + self.fits


def schedulable_replicas(usage: ClusterUsage, pod_spec: Mapping[str, Any], resource: str,
                         service_pods: Iterable[Mapping[str, Any]]) -> Capacity | None:
    """The replicas of one service the matching nodes can hold: its pods already bound to a node, plus, per
    matching node, free // (GPUs per pod) (a pod cannot span nodes). None when the pod requests none of the
    resource (a CPU service: GPU capacity sets no limit)."""
    per_pod, nodes = usage.placement(pod_spec, resource)
    if per_pod <= 0:
        return None
    placed = sum(1 for p in service_pods if (p.get("spec") or {}).get("nodeName") and not is_terminated(p)
                 and not (p.get("metadata") or {}).get("deletionTimestamp"))
    return Capacity(placed=placed, fits=sum(n.free // per_pod for n in nodes), matching_nodes=len(nodes))
