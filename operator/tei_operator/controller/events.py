"""Events the operator records about what it did, and the words for them.

`describe_apply` is pure: from the object before an apply, the applied manifest and the object after, it says
what happened ("Created Deployment bge-m3", "Updated Deployment bge-m3: image a -> b") or None for a no-op, so
nothing is recorded when nothing changed. `EventRecorder` logs the sentence and writes it as a Kubernetes Event
on the service (what `kubectl describe` shows).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from typing import Any

from ..kube import KubeClient

logger = logging.getLogger("tei_operator.controller")

MAX_LISTED_FIELDS = 4


@dataclasses.dataclass(frozen=True)
class Change:
    """What an apply did to one child: reason (Created, Recreated, Updated, DriftReverted) and a sentence."""

    reason: str
    message: str
    type: str = "Normal"


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_named_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and "name" in v for v in value)


def changed_fields(applied: Any, live: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(path, live value, applied value) for every field of `applied` whose value `live` does not hold.

    Only fields the manifest sets are compared (server defaults are not drift). Lists of named items
    (containers, env, ports) are matched by name, other lists compared whole."""
    if isinstance(applied, dict):
        out: list[tuple[str, Any, Any]] = []
        live_map = live if isinstance(live, dict) else {}
        for key, value in applied.items():
            if path == "" and key in ("status", "apiVersion", "kind"):
                continue
            if path == "metadata" and key in ("ownerReferences", "resourceVersion", "managedFields"):
                continue
            sub = f"{path}.{key}" if path else key
            out.extend(changed_fields(value, live_map.get(key), sub))
        return out
    if _is_named_list(applied):
        live_items = {v.get("name"): v for v in live if isinstance(v, dict)} if isinstance(live, list) else {}
        out = []
        for item in applied:
            sub = f"{path}[{item['name']}]"
            if item["name"] not in live_items:
                out.append((sub, None, item))
            else:
                out.extend(changed_fields(item, live_items[item["name"]], sub))
        return out
    if _normalise(applied) != _normalise(live):
        return [(path, live, applied)]
    return []


def _normalise(value: Any) -> Any:
    """Compare quantities and ports the way the API server stores them (1 and "1" are the same GPU count)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return str(value)
    return value


def summarise(fields: list[tuple[str, Any, Any]]) -> str:
    """A short human list of changes: images as `image a -> b`, other fields by path."""
    parts: list[str] = []
    for path, old, new in fields:
        if path.endswith(".image"):
            parts.append(f"image {_short(old)} -> {_short(new)}")
        elif (env := re.search(r"\.env\[([^\]]+)\]\.value$", path)) is not None:
            parts.append(f"env {env.group(1)} {_short(old)} -> {_short(new)}")
        elif path.endswith(".replicas"):
            parts.append(f"replicas {old} -> {new}")
        else:
            parts.append(path)
    if len(parts) > MAX_LISTED_FIELDS:
        parts = parts[:MAX_LISTED_FIELDS] + [f"and {len(parts) - MAX_LISTED_FIELDS} more"]
    return ", ".join(parts)


def describe_apply(kind: str, name: str, before: Mapping[str, Any] | None, applied: Mapping[str, Any],
                   after: Mapping[str, Any], *, seen_before: bool = False, drift: bool = False) -> Change | None:
    """What one server-side apply did, or None when it changed nothing (same resourceVersion).

    `seen_before`: the controller had this child before, so a missing one was deleted by someone and is now
    recreated. `drift`: the service's spec did not change since the last reconcile, so a change we had to make
    undid someone's hand edit."""
    if before is None:
        if seen_before:
            return Change("Recreated", f"Recreated {kind} {name}, which had been deleted", "Warning")
        return Change("Created", f"Created {kind} {name}")
    rv_before = (before.get("metadata") or {}).get("resourceVersion")
    rv_after = (after.get("metadata") or {}).get("resourceVersion")
    if rv_before is not None and rv_before == rv_after:
        return None
    what = summarise(changed_fields(dict(applied), dict(before)))
    if drift:
        text = f"Reverted a change of {kind} {name} made outside the operator"
        return Change("DriftReverted", f"{text}: {what}" if what else text, "Warning")
    text = f"Updated {kind} {name}"
    return Change("Updated", f"{text}: {what}" if what else text)


class EventRecorder:
    """Logs what the operator did and records it as an Event on the service."""

    def __init__(self, kube: KubeClient) -> None:
        self._kube = kube

    async def record(self, owner: Mapping[str, Any], reason: str, message: str, type: str = "Normal") -> None:
        meta = owner.get("metadata") or {}
        level = logging.WARNING if type == "Warning" else logging.INFO
        logger.log(level, message, extra={"object": f"{owner.get('kind')}/{meta.get('namespace')}/{meta.get('name')}",
                                          "reason": reason})
        await self._kube.create_event(owner, reason=reason, message=message, type=type)

    async def change(self, owner: Mapping[str, Any], change: Change | None) -> None:
        if change is not None:
            await self.record(owner, change.reason, change.message, change.type)
