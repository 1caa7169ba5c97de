"""What the controller and the autoscaler read instead of the API server: an in-memory store of the watched objects.

kopf already holds one watch per watched kind and namespace (handlers.py); every event it delivers also goes into
`ObjectStore.observe`, so a reconcile reads its service, the service's children and pods, and the autoscaler reads
GPU nodes and pods, from memory. A reconcile that finds nothing to change sends no request at all.

The store is write-through: what a write returns (an apply, a status patch) replaces the cached object at once, so
the next reconcile does not see its own write as missing. A newer resourceVersion always wins, whichever arrives
first (the write's response or the watch event).

kopf re-lists a kind after a watch expires (410 Gone) and delivers every listed object again, but it does not
report objects deleted while no watch was open. `replace()` drops those (the runner re-lists rarely, see
runner.audit_forever); without it such a child would look present until the next delete of its service.

`LiveReads` answers the same questions from the API server (one request each): for code paths that run without
watches (tests, one-off tools).

New child kinds are added in one place: `CHILD_TYPES` (their watches, their store and the prune of those the spec no
longer needs follow from it), or `EXTRA_CHILD_TYPES` for children whose own module deletes them.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from .. import kube as k

# Every kind of child a service owns; each is watched (label app.kubernetes.io/managed-by=tei-operator), cached and
# pruned when the spec no longer renders it. A new child kind: add its ResourceType here (and to kube's built-ins).
CHILD_TYPES: tuple[k.ResourceType, ...] = (k.DEPLOYMENT, k.SERVICE, k.PDB, k.NETWORK_POLICY)
# Children with a lifecycle of their own, watched and cached like the others but never pruned by kind: the managed
# model cache's claim and download Jobs (controller/model_cache.py creates and deletes them).
EXTRA_CHILD_TYPES: tuple[k.ResourceType, ...] = (k.JOB, k.PVC)
WATCHED_CHILD_TYPES: tuple[k.ResourceType, ...] = CHILD_TYPES + EXTRA_CHILD_TYPES
# Pods not of our services are kept only with what GPU capacity needs (autoscaling/capacity.py).
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "tei-operator"

TypeKey = tuple[str, str]  # (apiVersion, kind)
ObjKey = tuple[str, str]   # (namespace, name)


def type_key(rtype: k.ResourceType) -> TypeKey:
    return (rtype.api_version, rtype.kind)


def _rv(obj: Mapping[str, Any]) -> int | None:
    raw = (obj.get("metadata") or {}).get("resourceVersion")
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def labels_match(obj: Mapping[str, Any], labels: Mapping[str, str] | None) -> bool:
    have = (obj.get("metadata") or {}).get("labels") or {}
    return all(have.get(key) == value for key, value in (labels or {}).items())


def _slim_resources(containers: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": c.get("name"), "resources": c.get("resources") or {}} for c in containers or []]


def slim_pod(pod: Mapping[str, Any]) -> dict[str, Any]:
    """A pod not of our services, reduced to what GPU capacity reads: where it runs, what it requests, whether it
    ended or is going."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {key: meta[key] for key in ("name", "namespace", "uid", "resourceVersion", "labels",
                                                "deletionTimestamp") if key in meta},
        "spec": {"nodeName": spec.get("nodeName"), "containers": _slim_resources(spec.get("containers")),
                 "initContainers": _slim_resources(spec.get("initContainers"))},
        "status": {"phase": (pod.get("status") or {}).get("phase")},
    }


def slim_node(node: Mapping[str, Any]) -> dict[str, Any]:
    """A node reduced to what GPU capacity reads: labels, taints, cordon, allocatable."""
    meta, spec = node.get("metadata") or {}, node.get("spec") or {}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {key: meta[key] for key in ("name", "uid", "resourceVersion", "labels") if key in meta},
        "spec": {key: spec[key] for key in ("taints", "unschedulable") if key in spec},
        "status": {"allocatable": ((node.get("status") or {}).get("allocatable") or {})},
    }


# kopf's copy of the last spec it handled (runner.kopf_settings): its bookkeeping, read by kopf from its own events,
# never by the operator from the store.
KOPF_DIFFBASE_ANNOTATION = "tei-operator.io/last-handled-configuration"
# The parts of a Deployment's field sets the operator reads: spec.template (hand edits, ownership.py) and
# spec.replicas (who holds it: the autoscaler or not, reconcile's hand-over, kube.owns_field).
KEPT_SPEC_FIELDS = ("f:template", "f:replicas")


def slim_managed_fields(entries: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """A Deployment's metadata.managedFields reduced to what the operator reads: the entries of the object itself
    (not of a subresource) that own fields in `KEPT_SPEC_FIELDS`, each with its manager, operation and those
    subtrees only. (The rest, the metadata and status field sets of every manager, was the largest part of a stored
    Deployment.)"""
    out = []
    for entry in entries or []:
        if entry.get("subresource"):
            continue
        spec = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        kept = {key: spec[key] for key in KEPT_SPEC_FIELDS if key in spec}
        if not kept:
            continue
        out.append({"manager": entry.get("manager"), "operation": entry.get("operation"),
                    "fieldsV1": {"f:spec": kept}})
    return out


def slim_owned(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A service, child or pod of ours as stored: whole, less what no reader of the store reads. managedFields
    (kept for Deployments as `slim_managed_fields` says: the hand-edit detection reads them), kopf's diff-base
    annotation."""
    out = dict(obj)
    meta = dict(out.get("metadata") or {})
    fields = meta.pop("managedFields", None)
    if obj.get("kind") == "Deployment" and fields:
        meta["managedFields"] = slim_managed_fields(fields)
    annotations = meta.get("annotations")
    if annotations and KOPF_DIFFBASE_ANNOTATION in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != KOPF_DIFFBASE_ANNOTATION}
    out["metadata"] = meta
    return compact_copy(out)  # equal field sets of many Deployments are held once, like every equal subtree


def compact_copy(tree: Any) -> Any:
    """A deep copy of a JSON tree, as small as it can be held: dict keys and short strings interned, and every dict
    or list equal to one already stored (the same keys in the same order, the same values of the same types) is that
    stored one. The 1,000 Deployments of a fleet share one "metadata" key, one "apps/v1", one probe, one security
    context, one toleration list, instead of holding one each from their own parse (measured: ~60 % of the dicts
    and lists of a namespace's Deployments, pods and services are equal to one of another object). Everything the
    store holds is read-only, so sharing is invisible to readers. Numbers, booleans and None are immutable and
    shared; anything else (not from JSON) is deep-copied."""
    return _share(tree)[0]


def _share(tree: Any) -> tuple[Any, int]:
    """`compact_copy` of `tree`, and what a parent hashes it by: a dict or list by its identity (equal ones are one
    object once shared), anything else by type and value."""
    if isinstance(tree, Mapping):
        copied: dict[str, Any] = {}
        parts: list[Any] = ["d"]
        for key, value in tree.items():
            name = _intern(str(key))
            copied[name], hashed = _share(value)
            parts += (name, hashed)
        return _held_or(copied, hash(tuple(parts)))
    if isinstance(tree, list | tuple):
        items, parts = [], ["l"]
        for value in tree:
            item, hashed = _share(value)
            items.append(item)
            parts.append(hashed)
        return _held_or(items, hash(tuple(parts)))
    if isinstance(tree, str):
        held = _intern(tree) if len(tree) <= INTERN_MAX_CHARS else tree
        return held, hash(held)
    if tree is None or isinstance(tree, bool | int | float):
        return tree, hash((type(tree), tree))
    copied_other = copy.deepcopy(tree)
    return copied_other, id(copied_other)


def _same_node(a: Any, b: Any) -> bool:
    """Whether two copied children are the same: shared dicts and lists by identity, the rest by type and value."""
    return a is b or (type(a) is type(b) and not isinstance(a, dict | list) and a == b)


def _held_or(node: dict | list, hashed: int) -> tuple[Any, int]:
    held = _SHARED.get(hashed)
    if held is not None and type(held) is type(node) and len(held) == len(node):
        if isinstance(node, dict):
            same = all(k1 is k2 and _same_node(v1, v2) for (k1, v1), (k2, v2) in zip(held.items(), node.items()))
        else:
            same = all(_same_node(v1, v2) for v1, v2 in zip(held, node))
        if same:
            return held, id(held)
    if held is None:
        global _shared_limit
        if len(_SHARED) >= _shared_limit:
            _shared_limit = max(SHARED_MAX, 2 * purge_shared())
        _SHARED[hashed] = node
    return node, id(node)


def purge_shared() -> int:
    """Drop the shared subtrees nothing but the table holds any more (of objects the store replaced or dropped);
    returns how many are left. Run when the table reaches twice what was left the last time (at least
    `SHARED_MAX`), so it holds at most as many dead subtrees as live ones."""
    while True:
        # Referenced by the table and by getrefcount's argument only: nothing else holds it.
        dead = [hashed for hashed in list(_SHARED) if sys.getrefcount(_SHARED[hashed]) <= 2]
        if not dead:
            return len(_SHARED)
        for hashed in dead:
            del _SHARED[hashed]  # its children may now be held by the table alone: the next pass drops them


# Strings up to this length are interned by `compact_copy`: keys, kinds, labels, images, condition types and
# reasons, names. Longer ones (messages, annotations' JSON) are mostly unique. CPython frees an interned string
# with its last reference, so this holds nothing beyond what the store holds.
INTERN_MAX_CHARS = 64
_intern = sys.intern
# The stored dicts and lists `compact_copy` shares, by the hash of their contents. Holds a subtree after the store
# dropped it until the next `purge_shared`.
_SHARED: dict[int, Any] = {}
SHARED_MAX = 20_000
_shared_limit = SHARED_MAX


def _slim(obj: Mapping[str, Any]) -> dict[str, Any]:
    kind = obj.get("kind")
    if kind == "Node":
        return compact_copy(slim_node(obj))
    if kind == "Pod" and not labels_match(obj, {MANAGED_BY_LABEL: MANAGED_BY_VALUE}):
        return compact_copy(slim_pod(obj))  # (its labels and resources would be the parsed event's own dicts)
    return slim_owned(obj)


def _same_but_version(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    meta_a, meta_b = a.get("metadata") or {}, b.get("metadata") or {}
    if {k: v for k, v in meta_a.items() if k != "resourceVersion"} != \
            {k: v for k, v in meta_b.items() if k != "resourceVersion"}:
        return False
    return all(a[k] == b[k] for k in a if k != "metadata")


class Replacement:
    """One `ObjectStore.replace` fed page by page (see `ObjectStore.replacement`)."""

    def __init__(self, store: "ObjectStore", rtype: k.ResourceType, namespace: str | None) -> None:
        self.store, self.rtype, self.namespace = store, rtype, namespace
        self.listed: set[ObjKey] = set()
        self.changed: list[dict[str, Any]] = []

    def add(self, items: Iterable[Mapping[str, Any]]) -> None:
        for item in items:
            key, stored = self.store._replace_item(self.rtype, item)  # noqa: SLF001 - the store's own helper
            self.listed.add(key)
            if stored is not None:
                self.changed.append(stored)

    def finish(self) -> list[dict[str, Any]]:
        """The objects that changed or went away."""
        return self.changed + self.store._drop_unlisted(self.rtype, self.namespace, self.listed)  # noqa: SLF001


class Reads(Protocol):
    """What the reconciler and the autoscaler read: one object, or the objects of a kind with given labels."""

    async def get(self, rtype: k.ResourceType, name: str, namespace: str | None) -> dict | None: ...

    async def list(self, rtype: k.ResourceType, namespace: str | None = None,
                   labels: Mapping[str, str] | None = None) -> list[dict]: ...

    def put(self, obj: Mapping[str, Any] | None) -> object: ...

    def delete(self, obj: Mapping[str, Any]) -> object: ...


class ObjectStore:
    """The watched objects by kind, namespace and name, fed by watch events (`observe`) and by write results
    (`put`). Read-only for callers: what `get` and `list` return is the stored object itself."""

    def __init__(self) -> None:
        self._objects: dict[TypeKey, dict[str, dict[str, dict[str, Any]]]] = {}  # kind -> namespace -> name -> object
        self.nodes_watched = False  # False: the operator may not watch nodes, GPU capacity is unknown
        self.version = 0
        """Goes up with every change of what the store holds: equal versions, equal contents (what the autoscaler's
        fast path keys its per-tick work on)."""
        self._namespace_versions: dict[str, int] = {}  # the same, per namespace ("" for cluster-scoped objects)

    # -- feeding ------------------------------------------------------------------------------------------------
    def observe(self, event_type: str | None, obj: Mapping[str, Any]) -> bool:
        """One watch event (type ADDED, MODIFIED, DELETED, or None for kopf's listing). Returns whether the stored
        object changed."""
        if event_type == "DELETED":
            return self.delete(obj)
        return self.put(obj)

    def put(self, obj: Mapping[str, Any] | None) -> bool:
        """Store `obj` unless the store holds a newer version of it. Returns whether it was stored."""
        if not obj or not obj.get("kind"):
            return False
        meta = obj.get("metadata") or {}
        spaces = self._objects.setdefault((str(obj.get("apiVersion")), str(obj["kind"])), {})
        bucket = spaces.setdefault(str(meta.get("namespace") or ""), {})
        name = str(meta.get("name"))
        held = bucket.get(name)
        if held is not None:
            new_rv, held_rv = _rv(obj), _rv(held)
            if new_rv is not None and held_rv is not None and new_rv < held_rv:
                return False
            if new_rv is not None and new_rv == held_rv:
                return False
        slim = bucket[name] = _slim(obj)
        if held is None or not _same_but_version(held, slim):
            # A new version that changed nothing the store keeps (a node's or a foreign pod's status heartbeat,
            # slimmed away) is stored without counting as a change: the version-keyed work stays valid.
            self._changed(str(meta.get("namespace") or ""))
        return True

    def _changed(self, namespace: str) -> None:
        self.version += 1
        self._namespace_versions[namespace] = self._namespace_versions.get(namespace, 0) + 1

    def namespace_version(self, namespace: str | None) -> int:
        """Goes up with every change of an object in `namespace` (None: of a cluster-scoped one): equal versions,
        equal objects there (what the periodic resync uses to leave an unchanged service out, runner.py)."""
        return self._namespace_versions.get(namespace or "", 0)

    def delete(self, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        spaces = self._objects.get((str(obj.get("apiVersion")), str(obj.get("kind"))), {})
        namespace = str(meta.get("namespace") or "")
        gone = spaces.get(namespace, {}).pop(str(meta.get("name")), None) is not None
        if gone:
            self._changed(namespace)
        return gone

    def replace(self, rtype: k.ResourceType, namespace: str | None, items: Iterable[Mapping[str, Any]]
                ) -> list[dict[str, Any]]:
        """A fresh LIST of `rtype` in `namespace` (None: everywhere): store it, and drop what it no longer holds.
        Returns the objects that changed or went away (their services may need a reconcile)."""
        replacement = self.replacement(rtype, namespace)
        replacement.add(items)
        return replacement.finish()

    def replacement(self, rtype: k.ResourceType, namespace: str | None) -> "Replacement":
        """`replace` fed page by page: `add` each page of the LIST (stored at once, so no page is kept), then
        `finish` drops what no page held."""
        return Replacement(self, rtype, namespace)

    def _replace_item(self, rtype: k.ResourceType, item: Mapping[str, Any]) -> tuple[ObjKey, dict[str, Any] | None]:
        meta = item.get("metadata") or {}
        ns, name = str(meta.get("namespace") or ""), str(meta.get("name"))
        bucket = self._objects.setdefault(type_key(rtype), {}).setdefault(ns, {})
        held = bucket.get(name)
        if held is not None and _rv(held) == _rv(item):
            return (ns, name), None
        item = dict(item)
        item.setdefault("apiVersion", rtype.api_version)
        item.setdefault("kind", rtype.kind)
        bucket[name] = _slim(item)
        self._changed(ns)
        return (ns, name), bucket[name]

    def _drop_unlisted(self, rtype: k.ResourceType, namespace: str | None, listed: set[ObjKey]
                       ) -> list[dict[str, Any]]:
        gone: list[dict[str, Any]] = []
        for ns, bucket in self._objects.get(type_key(rtype), {}).items():
            if namespace is None or ns == namespace:
                for name in [name for name in bucket if (ns, name) not in listed]:
                    gone.append(bucket.pop(name))
                    self._changed(ns)
        return gone

    # -- reading ------------------------------------------------------------------------------------------------
    async def get(self, rtype: k.ResourceType, name: str, namespace: str | None) -> dict | None:
        return self.get_now(rtype, name, namespace)

    def get_now(self, rtype: k.ResourceType, name: str, namespace: str | None) -> dict | None:
        return self._objects.get(type_key(rtype), {}).get(namespace or "", {}).get(name)

    async def list(self, rtype: k.ResourceType, namespace: str | None = None,
                   labels: Mapping[str, str] | None = None) -> list[dict]:
        return self.list_now(rtype, namespace, labels)

    def list_now(self, rtype: k.ResourceType, namespace: str | None = None,
                 labels: Mapping[str, str] | None = None) -> list[dict]:
        """The stored objects of a kind, in one namespace or everywhere, whose labels include `labels`. Held by
        namespace: a reconcile lists its own namespace's objects, not the fleet's (quadratic at 1,000 services)."""
        spaces = self._objects.get(type_key(rtype), {})
        buckets = spaces.values() if namespace is None else [spaces.get(namespace, {})]
        if not labels:
            return [obj for bucket in buckets for obj in bucket.values()]
        return [obj for bucket in buckets for obj in bucket.values() if labels_match(obj, labels)]

    def count(self, rtype: k.ResourceType) -> int:
        return sum(len(bucket) for bucket in self._objects.get(type_key(rtype), {}).values())


class LiveReads:
    """The `Reads` of `ObjectStore`, answered by the API server (a GET or a LIST each); `put` does nothing."""

    def __init__(self, kube: k.KubeClient) -> None:
        self.kube = kube

    async def get(self, rtype: k.ResourceType, name: str, namespace: str | None) -> dict | None:
        obj = await self.kube.get_or_none(rtype, name, namespace)
        if obj is not None:
            obj.setdefault("apiVersion", rtype.api_version)
            obj.setdefault("kind", rtype.kind)
        return obj

    async def list(self, rtype: k.ResourceType, namespace: str | None = None,
                   labels: Mapping[str, str] | None = None) -> list[dict]:
        selector = ",".join(f"{key}={value}" for key, value in sorted((labels or {}).items())) or None
        return await self.kube.list(rtype, namespace, label_selector=selector)

    def put(self, obj: Mapping[str, Any] | None) -> None:
        return None

    def delete(self, obj: Mapping[str, Any]) -> None:
        return None
