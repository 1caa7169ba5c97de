"""Blue/green model changes, the I/O side: what the reconcile reads and writes for controller/rollout.py's plan.

Kept apart from the pure plan so that a cache-fed reconcile replaces only the two reads (`observe`) and every
write stays one small function: hand the candidate the active's replica count, take a retired-at annotation off, mark
the Deployment switched away from, delete drained and abandoned ones, and schedule the reconcile that deletes a
Deployment once it has drained.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Mapping
from typing import Any

from .. import kube as k
from ..kube import KubeClient
from ..render.rollout import RETIRED_AT_ANNOTATION, describe_model
from .events import Change, EventRecorder
from .rollout import Deletion, RolloutPlan, format_time

logger = logging.getLogger("tei_operator.controller")


async def observe(reads: Any, owner: Mapping[str, Any], service_name: str, namespace: str,
                  labels: Mapping[str, str]) -> tuple[list[dict], dict | None]:
    """The service's own Deployments (controller ownerReference to it, not being deleted) and its live Service, from
    `reads` (controller/cache.py: the watch-fed store, or the API server)."""
    uid = (owner.get("metadata") or {}).get("uid")
    deployments = [d for d in await reads.list(k.DEPLOYMENT, namespace, labels=labels)
                   if not (d.get("metadata") or {}).get("deletionTimestamp")  # already on its way out
                   and any(r.get("uid") == uid and r.get("controller")
                           for r in (d.get("metadata") or {}).get("ownerReferences") or [])]
    return deployments, await reads.get(k.SERVICE, service_name, namespace)


async def match_replicas(kube: KubeClient, candidate: dict, replicas: int | None, field_manager: str) -> dict:
    """Give the candidate the active's replica count (under the autoscaler's field manager, which owns it)."""
    if replicas is None or int((candidate.get("spec") or {}).get("replicas") or 0) == replicas:
        return candidate
    meta = candidate["metadata"]
    logger.info("Set replicas of candidate Deployment %s/%s to %d (the active one's)", meta["namespace"],
                meta["name"], replicas)
    return await kube.set_replicas(k.DEPLOYMENT, meta["name"], meta["namespace"], replicas,
                                   field_manager=field_manager)


async def set_retired(kube: KubeClient, name: str, namespace: str, when: datetime.datetime | None,
                      field_manager: str) -> None:
    """Mark a Deployment as switched away from at `when` (None: take the mark off, it serves again)."""
    value = None if when is None else format_time(when)
    await kube.patch(k.DEPLOYMENT, name, namespace, {"metadata": {"annotations": {RETIRED_AT_ANNOTATION: value}}},
                     content_type=k.MERGE_PATCH, field_manager=field_manager)


async def switched(recorder: EventRecorder, owner: Mapping[str, Any], plan: RolloutPlan) -> Change:
    """The Event of a switch: the Service now selects the plan's target."""
    meta = owner.get("metadata") or {}
    change = Change("Switched", f"Switched Service {meta.get('name')} to Deployment {plan.target} (model "
                    f"{describe_model(plan.identity)})")
    await recorder.change(owner, change)
    return change


async def delete(kube: KubeClient, recorder: EventRecorder, owner: Mapping[str, Any], namespace: str,
                 deletions: tuple[Deletion, ...], deployments: Mapping[str, Mapping[str, Any]]) -> list[Change]:
    changes = []
    for each in deletions:
        uid = ((deployments.get(each.name) or {}).get("metadata") or {}).get("uid")
        if await kube.delete(k.DEPLOYMENT, each.name, namespace, uid=uid):
            change = Change(each.reason, each.message)
            changes.append(change)
            await recorder.change(owner, change)
    return changes


class RequeueTimers:
    """One pending reconcile per service, at the time its next drained Deployment may go. `notify(key)` queues the
    reconcile (set by the runner); without it the periodic resync gets there."""

    def __init__(self) -> None:
        self.notify: Callable[[Any], None] | None = None
        self._timers: dict[Any, asyncio.TimerHandle] = {}

    def schedule(self, key: Any, delay: float | None) -> None:
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        if delay is None or self.notify is None:
            return
        # A second's margin: the deletion is due at the deadline, not a moment before it.
        self._timers[key] = asyncio.get_running_loop().call_later(delay + 1.0, self._fire, key)

    def _fire(self, key: Any) -> None:
        self._timers.pop(key, None)
        if self.notify is not None:
            self.notify(key)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
