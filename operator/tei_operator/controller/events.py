"""Events the operator records about what it did, and the words for them.

`describe_apply` is pure: from the object before an apply, the applied manifest and the object after, it says
what happened ("Created Deployment bge-m3", "Updated Deployment bge-m3: image a -> b") or None for a no-op, so
nothing is recorded when nothing changed. An apply with an unchanged spec is a hand edit put back, unless the
render stamp (render/stamp.py) changed too: then the operator's own rendering changed (an upgrade) and the event
says so, as a Normal event. `EventRecorder` logs the sentence and writes it as a Kubernetes Event on the service
(what `kubectl describe` shows).

Events name fields, never their values, except images and replica counts: an env value may be a secret pasted
into the spec, and Events are readable by anyone who can `kubectl describe` the service.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from typing import Any

from ..kube import KubeClient
from ..render.children import CONFIG_HASH_ANNOTATION
from ..render.stamp import STAMP_ANNOTATIONS, stamp_of
from .applied import APPLIED_HASH_ANNOTATION
from .ownership import ForeignField, describe_fields

logger = logging.getLogger("tei_operator.controller")

MAX_LISTED_FIELDS = 4
# Bookkeeping annotations change along with every real change: listing them would only crowd out the real ones.
_UNLISTED_SUFFIXES = tuple(f".annotations.{a}" for a in (*STAMP_ANNOTATIONS, CONFIG_HASH_ANNOTATION,
                                                           APPLIED_HASH_ANNOTATION))

REASON_DRIFT = "DriftReverted"
REASON_UPGRADED = "OperatorUpgraded"
REASON_SETTINGS = "SettingsChanged"


@dataclasses.dataclass(frozen=True)
class Change:
    """What an apply did to one child: reason (Created, Recreated, Updated, DriftReverted) and a sentence."""

    reason: str
    message: str
    type: str = "Normal"
    # For a DriftReverted: what was reverted, one phrase each, so two reverts of one object combine into one Event.
    parts: tuple[str, ...] = ()


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


def summarise(fields: list[tuple[str, Any, Any]], *, reverting: bool = False) -> str:
    """A short human list of changes (see field_parts), at most MAX_LISTED_FIELDS of them."""
    return join_parts(field_parts(fields, reverting=reverting))


def field_parts(fields: list[tuple[str, Any, Any]], *, reverting: bool = False) -> list[str]:
    """One phrase per changed field: `image a -> b`, `env NAME changed` (never an env value), `replicas 1 -> 2`,
    else the field's path. A variable missing from the live object was `added` by a spec change, or, when
    `reverting` a hand edit, `put back`."""
    parts: list[str] = []
    for path, old, new in fields:
        if path.endswith(_UNLISTED_SUFFIXES):
            continue
        if path.endswith(".image"):
            parts.append(f"image {_short(old)} -> {_short(new)}")
        elif (env := re.search(r"\.env\[([^\]]+)\](\.[A-Za-z.]+)?$", path)) is not None:
            missing = old is None and env.group(2) is None
            parts.append(f"env {env.group(1)} {('put back' if reverting else 'added') if missing else 'changed'}")
        elif path.endswith(".replicas"):
            parts.append(f"replicas {old} -> {new}")
        else:
            parts.append(path)
    return parts


def join_parts(parts: list[str]) -> str:
    """At most MAX_LISTED_FIELDS phrases, then how many more."""
    if len(parts) > MAX_LISTED_FIELDS:
        parts = parts[:MAX_LISTED_FIELDS] + [f"and {len(parts) - MAX_LISTED_FIELDS} more"]
    return ", ".join(parts)


# Written by the control plane on the objects we apply; never part of what we changed.
# Not a change of ours either: the applied hash (applied.py) alone changing is no news for anyone.
_SYSTEM_ANNOTATIONS = ("deployment.kubernetes.io/revision", APPLIED_HASH_ANNOTATION)


def _desired_state(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    """What an apply of ours can change: spec, labels, annotations (less the control plane's), owners."""
    meta = obj.get("metadata") or {}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in _SYSTEM_ANNOTATIONS}
    return obj.get("spec"), meta.get("labels") or {}, annotations, meta.get("ownerReferences") or []


def describe_apply(kind: str, name: str, before: Mapping[str, Any] | None, applied: Mapping[str, Any],
                   after: Mapping[str, Any], *, seen_before: bool = False, drift: bool = False) -> Change | None:
    """What one server-side apply did, or None when it changed nothing (same resourceVersion).

    `seen_before`: the controller had this child before, so a missing one was deleted by someone and is now
    recreated. `drift`: the service's spec did not change since the last reconcile, so a change we had to make
    undid someone's hand edit, unless the applied manifest's render stamp differs from the live one's: then the
    operator renders differently than whoever wrote the live object (an upgrade, or new operator settings)."""
    if before is None:
        if seen_before:
            return Change("Recreated", f"Recreated {kind} {name}, which had been deleted", "Warning")
        return Change("Created", f"Created {kind} {name}")
    rv_before = (before.get("metadata") or {}).get("resourceVersion")
    rv_after = (after.get("metadata") or {}).get("resourceVersion")
    if rv_before is not None and rv_before == rv_after:
        return None
    if _desired_state(before) == _desired_state(after):
        # Someone else wrote in between our read and our no-op apply (the Deployment controller's status and
        # revision annotation, during every rollout): not a change of ours.
        return None
    fields = changed_fields(dict(applied), dict(before))
    if drift:
        old, new = stamp_of(before), stamp_of(applied)
        what = summarise(fields)
        if new is not None and old != new:
            if old is None or old.version != new.version:
                text = (f"Updated {kind} {name} after an operator upgrade "
                        f"({old.version if old else 'unstamped'} -> {new.version})")
                return Change(REASON_UPGRADED, f"{text}: {what}" if what else text)
            text = f"Updated {kind} {name} after a change of the operator's settings"
            return Change(REASON_SETTINGS, f"{text}: {what}" if what else text)
        return revert_change(kind, name, [summarise(fields, reverting=True)])
    what = summarise(fields)
    text = f"Updated {kind} {name}"
    return Change("Updated", f"{text}: {what}" if what else text)


def revert_change(kind: str, name: str, parts: list[str]) -> Change:
    """The Warning for hand edits undone: `Reverted a hand edit of Deployment x: env FOO added by kubectl-set`."""
    kept = tuple(p for p in parts if p)
    text = f"Reverted a hand edit of {kind} {name}"
    what = ", ".join(kept)
    return Change(REASON_DRIFT, f"{text}: {what}" if what else text, "Warning", kept)


def describe_removal(kind: str, name: str, removed: list[ForeignField], applied: Change | None
                     ) -> list[Change]:
    """The events of one reconcile of a child once foreign fields were removed as well.

    A drift revert by the apply and the removal are one hand edit as far as a person is concerned: one Warning
    lists both. Otherwise (a spec change or an upgrade happened at the same time) the removal gets its own."""
    if not removed:
        return [applied] if applied is not None else []
    foreign = join_parts(describe_fields(removed))
    if applied is not None and applied.reason == REASON_DRIFT:
        return [revert_change(kind, name, [*applied.parts, foreign])]
    return ([applied] if applied is not None else []) + [revert_change(kind, name, [foreign])]


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
