"""The kopf handlers: thin. Each one feeds the watch-fed store (cache.py) and requests its service's key in the one
work queue (queue.py); none reconciles by itself.

Registered into an explicit `kopf.OperatorRegistry` by `register()` (nothing is registered at import). Every handler
is an event handler (`kopf.on.event`): kopf keeps no per-object state for them, computes no diff and writes nothing
to the objects (no `last-handled-configuration` or progress annotation, no finalizer). There is no deletion handler,
no daemon and no kopf timer (kopf timers force a finalizer); children go with their service through the garbage
collector, and the periodic resync is a plain task (see runner.py).

- every event of a service updates the store; a full reconcile is queued when the service is new to this process
  (created, or listed when the operator starts: what kopf's resume was) or when what a reconcile reads from it
  changed: its generation (the spec), its labels or its annotations (`SpecSeen`). The events our own status writes
  cause change none of these and queue nothing. Failures are retried by the queue (rate-limited backoff); a
  permanent one is reported in the service's conditions and Events by the reconciler;
- every event of a child (cache.WATCHED_CHILD_TYPES), a pod and a node updates the store; a child's event queues
  a full reconcile of its service (puts back hand edits, recreates a deleted child), a pod's a status refresh.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

import kopf

from .. import kube as k
from .cache import WATCHED_CHILD_TYPES, ObjectStore
from .queue import ReconcileQueue
from .reconcile import (MANAGED_BY_LABEL, MANAGED_BY_VALUE, OwnerKey, Reconciler, controller_owner,
                        deployment_of_pod, owner_of_pod)

logger = logging.getLogger("tei_operator.controller")

CHILD_LABELS = {MANAGED_BY_LABEL: MANAGED_BY_VALUE}


class SpecSeen(NamedTuple):
    """What a full reconcile reads from a service besides its status, as last queued: its uid (a service deleted and
    created again under the same name is new), its generation (the API server bumps it on every spec change, never
    on a status or metadata write) and a hash of its labels and annotations (the model-support override is one)."""

    uid: str
    generation: int
    metadata: int


def spec_seen(body: Mapping[str, Any]) -> SpecSeen:
    meta = body.get("metadata") or {}
    marks = json.dumps([meta.get("labels") or {}, meta.get("annotations") or {}], sort_keys=True)
    return SpecSeen(str(meta.get("uid") or ""), int(meta.get("generation") or 0), hash(marks))


@dataclasses.dataclass
class ControllerMemo:
    """What the handlers share (passed to kopf as `memo`)."""

    reconciler: Reconciler
    queue: ReconcileQueue
    store: ObjectStore = dataclasses.field(default_factory=ObjectStore)
    # Per service, what its last queued full reconcile was for (service_event).
    seen: dict[OwnerKey, SpecSeen] = dataclasses.field(default_factory=dict)


def _key(body: Mapping[str, Any]) -> OwnerKey:
    meta = body.get("metadata") or {}
    return OwnerKey(str(body.get("kind")), str(meta.get("namespace")), str(meta.get("name")))


def _raw(event: Mapping[str, Any], body: Mapping[str, Any]) -> Mapping[str, Any]:
    obj = event.get("object")
    return obj if isinstance(obj, Mapping) else body


async def service_event(event: Mapping[str, Any], body: kopf.Body, memo: ControllerMemo, **_: Any) -> None:
    """Any event of a service: keep the store current, and queue a full reconcile when the service is new to this
    process or its spec, labels or annotations changed (not for the events our own status writes cause). A deleted
    one is queued once more so the reconciler forgets it.

    A change of labels or annotations alone (no new generation) is waited for and logged once reconciled: it is
    rare (someone annotated the service), and the line is what tells them, and the tests, that it was looked at."""
    raw = _raw(event, body)
    key = _key(raw)
    memo.store.observe(event.get("type"), raw)
    if event.get("type") == "DELETED":
        memo.seen.pop(key, None)
        memo.queue.request(key, apply=False)
        return
    seen, before = spec_seen(raw), memo.seen.get(key)
    if seen == before:
        return
    memo.seen[key] = seen
    if before is None or before[:2] != seen[:2]:
        memo.queue.request(key, apply=True)
        return
    try:
        await memo.queue.request_and_wait(key, apply=True)
    except Exception:  # noqa: BLE001 - the queue logged it and retries it (or reported it, when permanent)
        return
    logger.info("Reconciled %s after its labels or annotations changed", key)


def _status_only(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> bool:
    """Whether two stored versions of a child differ in nothing but status (and resourceVersion): what the control
    plane writes while a Deployment rolls out, which no apply could change."""
    if before is None or after is None:
        return False

    def rest(obj: Mapping[str, Any]) -> tuple:
        meta = {k_: v for k_, v in (obj.get("metadata") or {}).items() if k_ != "resourceVersion"}
        return meta, {k_: v for k_, v in obj.items() if k_ not in ("metadata", "status")}
    return rest(before) == rest(after)


async def child_event(event: Mapping[str, Any], body: kopf.Body, memo: ControllerMemo, **_: Any) -> None:
    """A child we manage changed or went away: re-apply its service if needed (puts back hand edits, recreates a
    deleted one; nothing is sent when the cached child is as rendered) and refresh the status. A change of the
    Deployment's status alone (the Deployment controller's, during a rollout) only refreshes the service's status:
    nothing to render, compare or apply (a full reconcile per such event was a tenth of the operator's CPU while
    1,000 services were created)."""
    raw = _raw(event, body)
    meta = raw.get("metadata") or {}
    rtype = next((t for t in WATCHED_CHILD_TYPES
                  if t.kind == raw.get("kind") and t.api_version == raw.get("apiVersion")), None)
    before = memo.store.get_now(rtype, str(meta.get("name")), meta.get("namespace")) if rtype else None
    memo.store.observe(event.get("type"), raw)
    owner = controller_owner(body, memo.reconciler.kinds)
    if owner is not None:
        after = memo.store.get_now(rtype, str(meta.get("name")), meta.get("namespace")) if rtype else None
        # Deployments only: a Job's status (a managed cache's download finished) does release a held Deployment.
        refresh = event.get("type") == "MODIFIED" and raw.get("kind") == "Deployment" and _status_only(before, after)
        memo.queue.request(owner, apply=not refresh)


async def pod_event(event: Mapping[str, Any], body: kopf.Body, memo: ControllerMemo, **_: Any) -> None:
    """A pod changed (scheduled, crashed, became Ready). Every pod is stored (GPU capacity counts them all); one of
    a service refreshes that service's status."""
    memo.store.observe(event.get("type"), _raw(event, body))
    labels = (body.get("metadata") or {}).get("labels") or {}
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE:
        return
    owner = owner_of_pod(body, memo.reconciler.kinds)
    if owner is None:  # a pod without our labels' service name: its Deployment (from the store) names the owner
        namespace = str((body.get("metadata") or {}).get("namespace"))
        deployment = memo.store.get_now(k.DEPLOYMENT, deployment_of_pod(body) or "", namespace)
        owner = controller_owner(deployment, memo.reconciler.kinds) if deployment else None
    if owner is not None:
        memo.queue.request(owner, apply=False)


async def node_event(event: Mapping[str, Any], body: kopf.Body, memo: ControllerMemo, **_: Any) -> None:
    """A node changed: the store's nodes are the autoscaler's GPU capacity."""
    memo.store.observe(event.get("type"), _raw(event, body))


def register(registry: kopf.OperatorRegistry, kinds: Mapping[str, k.ResourceType], *, nodes: bool = True) -> None:
    """Register every handler of the controller into `registry` (`nodes`: watch nodes too)."""
    for rtype in kinds.values():
        selector = {"group": rtype.group, "version": rtype.version, "plural": rtype.plural}
        kopf.on.event(**selector, id="observe-service", registry=registry)(service_event)
    for rtype in WATCHED_CHILD_TYPES:
        kopf.on.event(rtype.api_version, rtype.plural, labels=CHILD_LABELS, id=f"watch-{rtype.plural}",
                      registry=registry)(child_event)
    kopf.on.event("v1", "pods", id="watch-pods", registry=registry)(pod_event)
    if nodes:
        kopf.on.event("v1", "nodes", id="watch-nodes", registry=registry)(node_event)
