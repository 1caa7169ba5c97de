"""The kopf handlers: thin, each one names its trigger and hands the work to the reconciler or the queue.

Registered into an explicit `kopf.OperatorRegistry` by `register()` (nothing is registered at import). No handler
needs a finalizer: there is no deletion handler, no daemon and no kopf timer (kopf timers force a finalizer);
children go with their service through the garbage collector, and the periodic resync is a plain task
(see runner.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import kopf

from .. import kube as k
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
    # (namespace, Deployment name) -> its service: lets a pod event find its service without an API call.
    deployments: dict[tuple[str, str], OwnerKey] = dataclasses.field(default_factory=dict)


def _key(body: Mapping[str, Any]) -> OwnerKey:
    meta = body.get("metadata") or {}
    return OwnerKey(str(body.get("kind")), str(meta.get("namespace")), str(meta.get("name")))


async def reconcile_service(body: kopf.Body, memo: ControllerMemo, **_: Any) -> None:
    """create / update / resume of a service: reconcile it now (kopf retries on TemporaryError)."""
    with kopf_errors():
        await memo.reconciler.reconcile(_key(body))


async def deployment_event(event: Mapping[str, Any], body: kopf.Body, memo: ControllerMemo, **_: Any) -> None:
    """A Deployment we manage changed or went away: re-apply (puts back hand edits, recreates a deleted one) and
    refresh the status (rollout progress)."""
    owner = controller_owner(body, memo.reconciler.kinds)
    if owner is None:
        return
    meta = body.get("metadata") or {}
    index_key = (str(meta.get("namespace")), str(meta.get("name")))
    if event.get("type") == "DELETED":
        memo.deployments.pop(index_key, None)
    else:
        memo.deployments[index_key] = owner
    memo.queue.request(owner, apply=True)


async def child_event(body: kopf.Body, memo: ControllerMemo, **_: Any) -> None:
    """A Service, PodDisruptionBudget or NetworkPolicy we manage changed or went away: re-apply its service."""
    owner = controller_owner(body, memo.reconciler.kinds)
    if owner is not None:
        memo.queue.request(owner, apply=True)


async def pod_event(body: kopf.Body, memo: ControllerMemo, **_: Any) -> None:
    """A pod of a service changed (scheduled, crashed, became Ready): refresh that service's status."""
    owner = owner_of_pod(body, memo.reconciler.kinds)
    if owner is None:  # a pod without our labels' service name: fall back to its Deployment
        deployment = deployment_of_pod(body)
        owner = memo.deployments.get((str((body.get("metadata") or {}).get("namespace")), deployment or ""))
    if owner is not None:
        memo.queue.request(owner, apply=False)


def register(registry: kopf.OperatorRegistry, kinds: Mapping[str, k.ResourceType]) -> None:
    """Register every handler of the controller into `registry`."""
    for rtype in kinds.values():
        selector = {"group": rtype.group, "version": rtype.version, "plural": rtype.plural}
        kopf.on.create(**selector, id="reconcile-on-create", registry=registry)(reconcile_service)
        kopf.on.update(**selector, id="reconcile-on-update", registry=registry)(reconcile_service)
        kopf.on.resume(**selector, id="reconcile-on-resume", registry=registry)(reconcile_service)
    kopf.on.event("apps", "v1", "deployments", labels=CHILD_LABELS, id="watch-deployments",
                  registry=registry)(deployment_event)
    kopf.on.event("v1", "services", labels=CHILD_LABELS, id="watch-services", registry=registry)(child_event)
    kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=CHILD_LABELS, id="watch-pdbs",
                  registry=registry)(child_event)
    kopf.on.event("networking.k8s.io", "v1", "networkpolicies", labels=CHILD_LABELS, id="watch-networkpolicies",
                  registry=registry)(child_event)
    kopf.on.event("v1", "pods", labels=CHILD_LABELS, id="watch-pods", registry=registry)(pod_event)
    # The managed model cache's download Jobs (model_cache.py): their completion is the cache's readiness.
    kopf.on.event("batch", "v1", "jobs", labels=CHILD_LABELS, id="watch-jobs", registry=registry)(child_event)
