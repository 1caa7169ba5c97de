"""What a core/v1 Event the operator records looks like, and how a repeat of it is folded into the first one.

Kubernetes' own event recorder aggregates: the same event about the same object (same reason, type, message and
reporting component) does not pile up a new Event object each time, it bumps `count` and `lastTimestamp` of the
existing one, and `kubectl describe` shows "(x5 over 10m)". A reconcile that reverts the same hand edit every few
minutes, or an autoscaler that is limited by GPU capacity every tick, would otherwise fill the namespace with
copies until the API server's event TTL removes them.

The operator gets the same effect without listing anything: the Event's name is derived from what makes two
events "the same" (`event_name`), so a repeat finds its predecessor by name. Everything here is pure; the requests
(create, patch with a resourceVersion precondition, re-read on a conflict) are in `KubeClient.create_event`.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import re
from collections.abc import Mapping
from typing import Any

EVENT_TYPES = ("Normal", "Warning")
MAX_MESSAGE_CHARS = 1024  # the API server's limit for an Event's note
MAX_NAME_CHARS = 253  # an Event's name is a DNS subdomain
HASH_CHARS = 16  # 64 bits of sha256: collisions among one object's distinct events are not a practical concern
MAX_REPORTING_INSTANCE_CHARS = 128


@dataclasses.dataclass(frozen=True)
class EventKey:
    """What makes two events the same Event: the object they are about, and what they say, and who says it.

    The uid tells a service from a deleted-and-recreated one of the same name (their events must not merge); kind,
    namespace and name keep objects without a uid apart. `message` is the message as sent (already truncated)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str
    reason: str
    type: str
    message: str
    action: str
    component: str

    def digest(self) -> str:
        # A separator that cannot occur in names, and length-prefixed fields, so ("a|b", "c") != ("a", "b|c").
        text = "\x00".join(f"{len(v)}:{v}" for v in dataclasses.astuple(self))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_CHARS]


def event_key(involved: Mapping[str, Any], *, reason: str, message: str, type: str, action: str | None,
              component: str) -> EventKey:
    """The key of an event about `involved` (a manifest or kopf body). Raises ValueError for a `type` Kubernetes
    does not know, or an empty `reason` (kubectl shows both in columns; a typo would otherwise be recorded)."""
    if type not in EVENT_TYPES:
        raise ValueError(f"Event type {type!r} is not one of {', '.join(EVENT_TYPES)}")
    if not reason:
        raise ValueError("Event reason must not be empty (a short PascalCase word such as ScaledUp)")
    meta = involved.get("metadata") or {}
    return EventKey(
        api_version=str(involved.get("apiVersion") or ""), kind=str(involved.get("kind") or ""),
        namespace=str(meta.get("namespace") or ""), name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""), reason=reason, type=type, message=message[:MAX_MESSAGE_CHARS],
        action=action or reason, component=component,
    )


_NOT_IN_SUBDOMAIN = re.compile(r"[^a-z0-9.-]+")


def event_name(key: EventKey) -> str:
    """`<object name>.<hash of the key>`: the same event about the same object always gets the same name.

    Kubernetes' recorder names events `<object>.<timestamp>`; the object name keeps the same prefix so events sort
    next to their object in `kubectl get events`. The name part is cut so the whole stays a valid DNS subdomain."""
    suffix = "." + key.digest()
    base = _NOT_IN_SUBDOMAIN.sub("-", key.name.lower())[: MAX_NAME_CHARS - len(suffix)]
    base = base.strip(".-") or "object"
    # Each dot-separated label of a subdomain must start and end with a letter or digit.
    base = ".".join(label.strip("-") or "x" for label in base.split("."))
    return base + suffix


def event_namespace(key: EventKey) -> str:
    """Events about cluster-scoped objects (a Node) live in `default`, as Kubernetes' own recorder puts them."""
    return key.namespace or "default"


def new_event(key: EventKey, *, now: str, reporting_instance: str) -> dict[str, Any]:
    """The body of the first occurrence (count 1, first = last timestamp)."""
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": event_name(key), "namespace": event_namespace(key)},
        "involvedObject": {
            "apiVersion": key.api_version or None, "kind": key.kind or None, "name": key.name or None,
            "namespace": key.namespace or None, "uid": key.uid or None,
        },
        "reason": key.reason, "message": key.message, "type": key.type,
        "source": {"component": key.component},
        "reportingComponent": key.component,
        "reportingInstance": reporting_instance[:MAX_REPORTING_INSTANCE_CHARS],
        "action": key.action,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }


def repeat_patch(existing: Mapping[str, Any], *, now: str) -> dict[str, Any]:
    """The merge patch that records one more occurrence on `existing` (the Event as last read or written).

    It carries the resourceVersion it was computed from, so two writers that both saw count N cannot both write
    N+1: the second gets 409 Conflict, re-reads and writes N+2. An Event without a count (written by a client that
    does not set it) counts as one occurrence."""
    meta = existing.get("metadata") or {}
    count = existing.get("count") or 1
    patch: dict[str, Any] = {"count": int(count) + 1, "lastTimestamp": now}
    if meta.get("resourceVersion"):
        patch["metadata"] = {"resourceVersion": str(meta["resourceVersion"])}
    if not existing.get("firstTimestamp"):
        # Keeps "x N over T" meaningful in kubectl describe for an Event that lacked a first timestamp.
        patch["firstTimestamp"] = existing.get("lastTimestamp") or now
    return patch


class RecentEvents:
    """The Events this process wrote last, by namespace and name, so a repeat can be a single PATCH.

    Bounded (least recently used dropped first): a forgotten Event costs one extra request on its next repeat
    (create -> 409 -> read -> patch), never a wrong count, because every patch carries a resourceVersion."""

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        self._events: collections.OrderedDict[tuple[str, str], dict[str, Any]] = collections.OrderedDict()

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        event = self._events.get((namespace, name))
        if event is not None:
            self._events.move_to_end((namespace, name))
        return event

    def put(self, event: Mapping[str, Any]) -> None:
        meta = event.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        # Only what repeat_patch needs: a full Event (managedFields and all) per entry would be wasted memory.
        self._events[key] = {"metadata": {"resourceVersion": meta.get("resourceVersion")},
                             "count": event.get("count"), "firstTimestamp": event.get("firstTimestamp"),
                             "lastTimestamp": event.get("lastTimestamp")}
        self._events.move_to_end(key)
        while len(self._events) > self._capacity:
            self._events.popitem(last=False)

    def forget(self, namespace: str, name: str) -> None:
        self._events.pop((namespace, name), None)

    def __len__(self) -> int:
        return len(self._events)
