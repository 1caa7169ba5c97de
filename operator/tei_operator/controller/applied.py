"""Whether a child needs a server-side apply: pure functions over the rendered manifest and the cached object.

A child is applied when
- the hash of what we would apply differs from the one stamped on the object by our last apply
  (`tei-operator.io/applied-hash`: a spec change, an operator upgrade, new settings; it also catches fields the
  new render no longer sets, which only an apply removes), or
- the object no longer holds a field our manifest sets, with our value (a hand edit of one of our fields, a field
  deleted): `drift()`.
Fields someone else added to a Deployment's pod template are found apart (ownership.py) and removed by a patch.

Values are compared as the API server stores them: a resource quantity may come back in another spelling
("0.5" -> "500m"), defaults it adds are not drift, and list items are matched by name (containers, env, ports)
or, without names, by content (an item of ours must still be there).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from ..json_tree import without_annotations

APPLIED_HASH_ANNOTATION = "tei-operator.io/applied-hash"
# Not part of what we compare: set by the API server, or compared elsewhere.
_IGNORED_META = frozenset({"resourceVersion", "managedFields", "uid", "generation", "creationTimestamp"})
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")
_SUFFIX = {"": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
           "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def applied_hash(manifest: Mapping[str, Any]) -> str:
    """A stable hash of what we apply, leaving out the hash annotation itself."""
    body = without_annotations(manifest, (APPLIED_HASH_ANNOTATION,), drop_empty=False)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def with_applied_hash(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `manifest` carrying its hash in `tei-operator.io/applied-hash`: its top level, metadata and
    annotations are copied, the rest (spec, labels, ...) is shared with `manifest` (change neither)."""
    meta = dict(manifest.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), APPLIED_HASH_ANNOTATION: applied_hash(manifest)}
    return {**manifest, "metadata": meta}


def hash_of(obj: Mapping[str, Any] | None) -> str | None:
    return (((obj or {}).get("metadata") or {}).get("annotations") or {}).get(APPLIED_HASH_ANNOTATION)


def quantity(value: Any) -> Decimal | None:
    """A Kubernetes resource quantity as a number, or None when `value` is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    match = _QUANTITY.match(str(value).strip())
    if not match:
        return None
    try:
        return Decimal(match.group(1)) * Decimal(_SUFFIX[match.group(2) or ""])
    except InvalidOperation:
        return None


def _same_scalar(want: Any, have: Any) -> bool:
    if want == have and type(want) is type(have):
        return True
    if isinstance(want, bool) or isinstance(have, bool):
        return False
    a, b = quantity(want), quantity(have)
    return a is not None and a == b


def _empty(value: Any) -> bool:
    return value is None or value == {} or value == []


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, Mapping) and "name" in i for i in items)


def drift(want: Any, have: Any, path: str = "") -> list[str]:
    """The paths of fields `want` (our manifest) sets that `have` (the live object) does not hold with our value."""
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            return [] if _empty(want) and have is None else [path or "."]
        out: list[str] = []
        for key, value in want.items():
            if path == "" and key in ("status",):
                continue
            if path == "metadata" and key in _IGNORED_META:
                continue
            sub = f"{path}.{key}" if path else str(key)
            if key not in have:
                if not _empty(value):
                    out.append(sub)
                continue
            out.extend(drift(value, have[key], sub))
        return out
    if isinstance(want, list):
        if not isinstance(have, list):
            return [] if not want and have is None else [path]
        if _named(want):
            live = {i.get("name"): i for i in have if isinstance(i, Mapping)}
            out = []
            for item in want:
                sub = f"{path}[{item['name']}]"
                out.extend(drift(item, live[item["name"]], sub) if item["name"] in live else [sub])
            return out
        if all(isinstance(i, Mapping) for i in want):
            # Unnamed items (ownerReferences, tolerations, ports without names): each must still be there.
            return [f"{path}[{n}]" for n, item in enumerate(want)
                    if not any(not drift(item, other, "") for other in have)]
        if len(want) != len(have) or any(not _same_scalar(a, b) for a, b in zip(want, have)):
            return [path]
        return []
    return [] if _same_scalar(want, have) else [path]


def apply_reason(manifest: Mapping[str, Any], live: Mapping[str, Any] | None) -> str | None:
    """Why `manifest` (carrying its applied hash) must be applied over `live`, or None when `live` already is what
    applying it would make of our fields."""
    if live is None:
        return "missing"
    if hash_of(live) != hash_of(manifest):
        return "rendered differently"
    fields = drift(manifest, live)
    if fields:
        return "drift in " + ", ".join(fields[:5]) + (" ..." if len(fields) > 5 else "")
    return None


class ApplyReasons:
    """`apply_reason`, remembering the object versions it found nothing to apply to.

    `drift()` walks every field of a manifest (most of a full reconcile's CPU once nothing is copied needlessly),
    and at rest a service's full pass finds the same children it found last time. Its answer depends only on the
    manifest, which its applied hash stands for, and the object, which its uid and resourceVersion stand for: when
    both are the ones of the last "nothing to apply" for that child, that is the answer again. At most `size`
    children are remembered (the least recently checked are forgotten first)."""

    def __init__(self, size: int = 20_000) -> None:
        self.size = size
        self._clean: dict[tuple[str, str, str], tuple[str, str, str]] = {}
        self.remembered = 0  # answers given from memory (tests)

    def reason(self, manifest: Mapping[str, Any], live: Mapping[str, Any] | None) -> str | None:
        meta, live_meta = manifest.get("metadata") or {}, (live or {}).get("metadata") or {}
        child = (str(manifest.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        version = (str(live_meta.get("uid") or ""), str(live_meta.get("resourceVersion") or ""),
                   str(hash_of(manifest) or ""))
        known = all(version)
        if known and self._clean.get(child) == version:
            self._clean[child] = self._clean.pop(child)  # recently checked: forgotten last
            self.remembered += 1
            return None
        reason = apply_reason(manifest, live)
        self._clean.pop(child, None)
        if reason is None and known:
            self._clean[child] = version
            while len(self._clean) > self.size:
                del self._clean[next(iter(self._clean))]
        return reason
