"""Fields of a Deployment's pod template that someone else added, and the JSON patch that takes them out again.

Server-side apply with force puts back every field the operator sets, but it cannot remove a field it does not
set: `kubectl set env deployment/x FOO=1`, an extra nodeSelector or a sidecar container survive every re-apply. The
API server records who set what in `metadata.managedFields`, so the fields under `spec.template` that only foreign
field managers own (not the operator's, not the autoscaler's, not the control plane's) are exactly the hand edits
left to undo. This module finds them (pure: a Deployment in, a list out) and builds the JSON patch that removes them,
guarded by the resourceVersion it was computed from, so a patch built from a stale read fails instead of removing
the wrong list item.

One edit is kept on purpose: `kubectl rollout restart` stamps `kubectl.kubernetes.io/restartedAt` on the pod
template, an operational action rather than drift. And the fields of field managers the platform team trusts
(setting `extra_field_managers`: a config reloader bumping a pod annotation, a mesh injector editing the template)
are left alone, so the two never fight; the operator still puts back the fields it sets itself.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Iterable, Mapping
from typing import Any

# Control-plane managers never count as hand edits. Matched as prefixes: a locally built binary reports its file
# name (kube-controller-manager-v1.36.3).
SYSTEM_MANAGER_PREFIXES = ("kube-controller-manager", "kube-scheduler", "kube-apiserver", "kubelet")

# Pod template paths (in the template, as pointer tokens) that others may set: `kubectl rollout restart`.
ALLOWED_FOREIGN_PATHS: frozenset[tuple[str, ...]] = frozenset({
    ("metadata", "annotations", "kubectl.kubernetes.io/restartedAt"),
})

Token = str | int


@dataclasses.dataclass(frozen=True)
class ForeignField:
    """One field under spec.template that only a foreign manager owns.

    `pointer` is its location in the Deployment (JSON pointer tokens, list items by index), `path` the same with
    list items by their key (`spec.template.spec.containers[tei].env[FOO]`), `manager` who set it."""

    pointer: tuple[Token, ...]
    path: tuple[str, ...]
    manager: str
    # The value read (to tell whether a removal took effect); never shown: an env value may be a secret.
    value: Any = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def json_pointer(self) -> str:
        return "".join("/" + str(t).replace("~", "~0").replace("/", "~1") for t in self.pointer)


def is_system_manager(manager: str) -> bool:
    return any(manager == p or manager.startswith(p + "-") for p in SYSTEM_MANAGER_PREFIXES)


def matches_manager(manager: str, patterns: Iterable[str]) -> bool:
    """Whether `manager` is one of `patterns`: a name matches exactly, a pattern ending in `*` as a prefix
    (`istio-*` matches istio-sidecar-injector). Exact by default, so `reloader` does not also trust `reloader-test`."""
    for pattern in patterns:
        if pattern.endswith("*"):
            if manager.startswith(pattern[:-1]):
                return True
        elif manager == pattern:
            return True
    return False


def _merge(into: dict[str, Any], tree: Mapping[str, Any]) -> None:
    for key, value in tree.items():
        _merge(into.setdefault(key, {}), value if isinstance(value, Mapping) else {})


def _template_tree(entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
    fields = entry.get("fieldsV1") or {}
    return (fields.get("f:spec") or {}).get("f:template")


def _item_label(key: Mapping[str, Any]) -> str:
    """How a keyed list item is named in a path: its name, else its key values."""
    if "name" in key:
        return str(key["name"])
    return ",".join(f"{k}={v}" for k, v in sorted(key.items()))


def _resolve(key: str, live: Any) -> tuple[Token, str, Any] | None:
    """The child of `live` that a fieldsV1 key denotes: (pointer token, path element, value), None when absent."""
    kind, _, rest = key.partition(":")
    if kind == "f" and isinstance(live, Mapping):
        return (rest, rest, live[rest]) if rest in live else None
    if kind == "k" and isinstance(live, list):
        wanted = json.loads(rest)
        for index, item in enumerate(live):
            if isinstance(item, Mapping) and all(item.get(k) == v for k, v in wanted.items()):
                return index, f"[{_item_label(wanted)}]", item
        return None
    if kind == "v" and isinstance(live, list):
        wanted = json.loads(rest)
        for index, item in enumerate(live):
            if item == wanted:
                return index, f"[{rest}]", item
        return None
    if kind == "i" and isinstance(live, list) and rest.isdigit() and int(rest) < len(live):
        return int(rest), f"[{rest}]", live[int(rest)]
    return None


def _walk(foreign: Mapping[str, Any], ours: Mapping[str, Any] | None, live: Any, pointer: tuple[Token, ...],
          path: tuple[str, ...], template_path: tuple[str, ...], manager: str, out: list[ForeignField]) -> None:
    for key, sub in foreign.items():
        if key == ".":
            continue
        found = _resolve(key, live)
        if found is None:  # stale entry: the field is gone already
            continue
        token, element, value = found
        if value is None:  # a null the API server writes back on every read (creationTimestamp): nothing to remove
            continue
        ours_sub = ours.get(key) if ours is not None else None
        sub = sub if isinstance(sub, Mapping) else {}
        sub_template_path = template_path + (str(token),) if isinstance(token, str) else template_path + (element,)
        whole = not sub or "." in sub  # the manager owns this node itself, not only fields inside it
        if whole and ours_sub is None:
            if sub_template_path not in ALLOWED_FOREIGN_PATHS:
                out.append(ForeignField(pointer + (token,), path + (element,), manager, value))
            continue
        _walk(sub, ours_sub, value, pointer + (token,), path + (element,), sub_template_path, manager, out)


def foreign_template_fields(deployment: Mapping[str, Any], own_managers: Collection[str],
                            trusted_managers: Collection[str] = ()) -> list[ForeignField]:
    """The fields under the Deployment's spec.template that no manager in `own_managers`, none matching
    `trusted_managers` (names, or prefixes ending in `*`: see `matches_manager`) and not the control plane owns,
    one per outermost field: a foreign env item is reported once, not its name and value separately.

    A field a foreign manager shares with us or with a trusted manager (both set the same value) stays."""
    def kept(manager: str) -> bool:
        return manager in own_managers or is_system_manager(manager) or matches_manager(manager, trusted_managers)

    entries = [e for e in (deployment.get("metadata") or {}).get("managedFields") or []
               if not e.get("subresource")]
    ours: dict[str, Any] = {}
    for entry in entries:
        if kept(str(entry.get("manager", ""))):
            _merge(ours, _template_tree(entry) or {})
    template = (deployment.get("spec") or {}).get("template")
    out: list[ForeignField] = []
    seen: set[tuple[Token, ...]] = set()
    for entry in entries:
        manager = str(entry.get("manager", ""))
        if kept(manager):
            continue
        tree = _template_tree(entry)
        if not tree or template is None:
            continue
        found: list[ForeignField] = []
        _walk(tree, ours, template, ("spec", "template"), ("spec", "template"), (), manager, found)
        for field in found:
            if field.pointer not in seen:
                seen.add(field.pointer)
                out.append(field)
    # Two managers may own a field and a field inside it: removing the outer one removes both.
    return [f for f in out if not any(f.pointer[:n] in seen for n in range(len(f.pointer)))]


def still_present(obj: Mapping[str, Any], field: ForeignField) -> bool:
    """Whether `obj` still holds the field with the value it had (the API server may default a removed field back
    to the same value: then the removal changed nothing and is not worth reporting)."""
    node: Any = obj
    for token in field.pointer:
        if isinstance(node, list) and isinstance(token, int) and token < len(node):
            node = node[token]
        elif isinstance(node, Mapping) and isinstance(token, str) and token in node:
            node = node[token]
        else:
            return False
    return node == field.value


def _sort_key(field: ForeignField) -> tuple[Any, ...]:
    # Within one list, remove the higher index first so the lower ones stay where they were read.
    return tuple((0, t) if isinstance(t, int) else (1, t) for t in field.pointer)


def removal_patch(resource_version: str, fields: Iterable[ForeignField]) -> list[dict[str, Any]]:
    """A JSON patch removing `fields`, valid only against the resourceVersion they were read from.

    Setting metadata.resourceVersion makes the API server's optimistic concurrency check apply: against a newer
    object the patch fails with 409 Conflict (a `test` op would fail with an ambiguous 422) and changes nothing."""
    ops: list[dict[str, Any]] = [{"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version}]
    for field in sorted(fields, key=_sort_key, reverse=True):
        ops.append({"op": "remove", "path": field.json_pointer})
    return ops


def _describe_in_container(rest: tuple[str, ...], container: str) -> str:
    if rest and rest[0] == "env" and len(rest) >= 2:
        var = rest[1].strip("[]")
        return f"env {var} added" if len(rest) == 2 else f"env {var} changed"
    return f"{'.'.join(rest)} of container {container} set"


def describe_field(field: ForeignField) -> str:
    """A few words naming a foreign field (never its value: env values may be secrets)."""
    rel = field.path[2:]  # below spec.template
    if len(rel) >= 3 and rel[0] == "spec" and rel[1] in ("containers", "initContainers"):
        container = rel[2].strip("[]")
        what = "container" if rel[1] == "containers" else "init container"
        if len(rel) == 3:
            return f"{what} {container} added"
        return _describe_in_container(rel[3:], container)
    if len(rel) >= 2 and rel[0] == "metadata" and rel[1] in ("labels", "annotations"):
        noun = "pod label" if rel[1] == "labels" else "pod annotation"
        return f"{noun} {rel[2]} added" if len(rel) >= 3 else f"pod {rel[1]} set"
    if len(rel) >= 2 and rel[0] == "spec" and rel[1] in ("nodeSelector", "tolerations", "volumes", "affinity"):
        return f"{'.'.join(rel[1:]).replace('.[', '[')} added" if len(rel) > 2 else f"{rel[1]} set"
    return ".".join(rel).replace(".[", "[") + " set"


def describe_fields(fields: Iterable[ForeignField]) -> list[str]:
    """`env FOO added by kubectl-set`, one per field."""
    return [f"{describe_field(f)} by {f.manager}" for f in fields]
