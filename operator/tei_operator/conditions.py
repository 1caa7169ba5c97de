"""Status conditions, the Kubernetes way, for every writer of them (the controller and the autoscaler).

A condition is `{type, status, reason, message, observedGeneration, lastTransitionTime}`. Writers build one without
lastTransitionTime (`make_condition`); merging it into the stored list sets lastTransitionTime to now when the
status flipped (or the type is new) and keeps the stored one otherwise, so the time says when the status last
changed, not when it was last written. Conditions of other types belong to other writers and are kept as they are,
in their place (the list is replaced whole by a merge patch, so the list written must be the stored one with ours
swapped in). Everything here is pure.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"
COMPARED_KEYS = ("status", "reason", "message", "observedGeneration")  # what a write is worth making for


def make_condition(ctype: str, status: Any, reason: str, message: str, generation: int) -> dict[str, Any]:
    """A condition of `ctype` as a writer wants it (no lastTransitionTime: the merge sets it). `status` is one of
    "True", "False", "Unknown", or anything else taken for its truth (True -> "True")."""
    if isinstance(status, str):
        if status not in (TRUE, FALSE, UNKNOWN):
            raise ValueError(f"condition {ctype}: status must be True, False or Unknown, got {status!r}")
        value = status
    else:
        value = TRUE if status else FALSE
    return {"type": ctype, "status": value, "reason": reason, "message": message, "observedGeneration": generation}


def find_condition(conditions: Sequence[Mapping[str, Any]] | None, ctype: str) -> Mapping[str, Any] | None:
    """The condition of `ctype` in a list, or None."""
    for cond in conditions or []:
        if cond.get("type") == ctype:
            return cond
    return None


def condition_of(status: Mapping[str, Any] | None, ctype: str) -> Mapping[str, Any] | None:
    """The condition of `ctype` in an object's status (its `conditions` list), or None."""
    return find_condition((status or {}).get("conditions"), ctype)


def condition_differs(stored: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    """Whether writing `wanted` would change what is stored (lastTransitionTime aside: it follows the status)."""
    if stored is None:
        return True
    return any(stored.get(key) != wanted.get(key) for key in COMPARED_KEYS)


def _transition_time(previous: Mapping[str, Any] | None, new: Mapping[str, Any], now: str) -> str:
    if previous is not None and previous.get("status") == new["status"] and previous.get("lastTransitionTime"):
        return previous["lastTransitionTime"]
    return now


def merge_conditions(current: Sequence[Mapping[str, Any]] | None, desired: Sequence[Mapping[str, Any]], now: str,
                     *, owned: Collection[str] = ()) -> list[dict[str, Any]]:
    """The conditions list to write: each desired condition in place of the stored one of its type (appended when
    new), lastTransitionTime kept unless the status flipped; stored conditions of the `owned` types that are not
    desired any more are dropped; conditions of other types (other writers') are kept as they are, in order."""
    current = list(current or [])
    by_type = {c.get("type"): c for c in current}
    wanted: dict[str, dict[str, Any]] = {}
    for cond in desired:
        wanted[cond["type"]] = {**cond, "lastTransitionTime": _transition_time(by_type.get(cond["type"]), cond, now)}
    # Keep the order already written (a stable list means no needless write), ours replaced in place.
    out: list[dict[str, Any]] = []
    for cond in current:
        ctype = cond.get("type")
        if ctype in wanted:
            out.append(wanted.pop(ctype))
        elif ctype not in owned:
            out.append(dict(cond))
    out.extend(wanted.values())
    return out


def merge_condition(conditions: Sequence[Mapping[str, Any]] | None, new: Mapping[str, Any],
                    now: str) -> list[dict[str, Any]]:
    """The stored list with `new` put in place of its type (appended when absent), every other condition kept as
    is; lastTransitionTime kept unless the status flipped."""
    return merge_conditions(conditions, [new], now)


def remove_condition(conditions: Sequence[Mapping[str, Any]] | None, ctype: str) -> list[dict[str, Any]]:
    """The stored list without the condition of `ctype`."""
    return [dict(c) for c in conditions or [] if c.get("type") != ctype]
