"""The kopf handlers: thin. Each one feeds the watch-fed store (cache.py) and requests its service's key in the one
work queue (queue.py); none reconciles by itself.

Registered into an explicit `kopf.OperatorRegistry` by `register()` (nothing is registered at import). No handler
needs a finalizer: there is no deletion handler, no daemon and no kopf timer (kopf timers force a finalizer);
children go with their service through the garbage collector, and the periodic resync is a plain task
(see runner.py).

- create / update / resume of a service: queue a full reconcile and wait for it (so kopf records the spec as
  handled only once it is, and a permanent failure is reported by kopf);
- every event of a service, a child (cache.WATCHED_CHILD_TYPES), a pod and a node updates the store; a child's event queues
  a full reconcile of its service (puts back hand edits, recreates a deleted child), a pod's a status refresh.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import kopf

from .. import kube as k
from .cache import WATCHED_CHILD_TYPES, ObjectStore
from .errors import kopf_errors
from .queue import ReconcileQueue
from .reconcile import (MANAGED_BY_LABEL, MANAGED_BY_VALUE, OwnerKey, Reconciler, controller_owner,
                        deployment_of_pod, owner_of_pod)

CHILD_LABELS = {MANAGED_BY_LABEL: MANAGED_BY_VALUE}


@dataclasses.dataclass
class ControllerMemo:
    """What the handlers share (passed to kopf as `memo`)."""

    reconciler: Reconciler
    queue: ReconcileQueue
    store: ObjectStore = dataclasses.field(default_factory=ObjectStore)


def _key(body: Mapping[str, Any]) -> OwnerKey:
    meta = body.get("metadata") or {}
    return OwnerKey(str(body.get("kind")), str(meta.get("namespace")), str(meta.get("name")))


def _raw(event: Mapping[str, Any], body: Mapping[str, Any]) -> Mapping[str, Any]:
    obj = event.get("object")
    return obj if isinstance(obj, Mapping) else body


async def reconcile_service(body: kopf.Body, memo: ControllerMemo, **_: Any) -> None:
    """create / update / resume of a service: reconcile it through the queue and wait (kopf retries what raises)."""
    memo.store.put(dict(body))
    with kopf_errors():
        await memo.queue.request_and_wait(_key(body))


async def service_event(event: Mapping[str, Any], body: kopf.Body, memo: ControllerMemo, **_: Any) -> None:
    """Any event of a service: keep the store current (spec changes are queued by `reconcile_service`); a deleted
    one is queued once more so the reconciler forgets it."""
    memo.store.observe(event.get("type"), _raw(event, body))
    if event.get("type") == "DELETED":
        memo.queue.request(_key(body), apply=False)


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
        kopf.on.create(**selector, id="reconcile-on-create", registry=registry)(reconcile_service)
        kopf.on.update(**selector, id="reconcile-on-update", registry=registry)(reconcile_service)
        kopf.on.resume(**selector, id="reconcile-on-resume", registry=registry)(reconcile_service)
    for rtype in WATCHED_CHILD_TYPES:
        kopf.on.event(rtype.api_version, rtype.plural, labels=CHILD_LABELS, id=f"watch-{rtype.plural}",
                      registry=registry)(child_event)
    kopf.on.event("v1", "pods", id="watch-pods", registry=registry)(pod_event)
    if nodes:
        kopf.on.event("v1", "nodes", id="watch-nodes", registry=registry)(node_event)
