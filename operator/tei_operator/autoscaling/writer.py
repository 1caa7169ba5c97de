"""Applying the autoscaler's decisions: the Deployment's replicas, status.autoscaling, the ScalingLimited
condition, Events.

The pure part (`autoscaling_status`, `scaling_limited_condition`, `merge_condition`, `status_patch`) decides what
to write; `StatusWriter` writes it.

Sharing status with the controller. The controller owns the conditions Ready/Progressing/Degraded and the top-level
counts; the autoscaler owns `status.autoscaling` and the `ScalingLimited` condition. A JSON merge patch of
`status.conditions` replaces the whole list, so the autoscaler does a read-modify-write of the list from the live
object, keeping every other condition as it is, and sends `metadata.resourceVersion` with the patch: if the
controller wrote in between, the API server answers 409 Conflict and the write is redone on the fresh object.
A patch that only changes `status.autoscaling` (the usual case) does not touch the list and needs no lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from ..api.status import status_summary
from ..conditions import (condition_differs, find_condition, make_condition, merge_condition,  # noqa: F401
                          remove_condition)
from ..kube import DEPLOYMENT, KubeClient, MERGE_PATCH, ResourceType
from ..kube_retry import retry_on_conflict
from ..timestamps import rfc3339
from .policy import Decision
from .signals import Signals

logger = logging.getLogger("tei_operator.autoscaler")


SCALING_LIMITED = "ScalingLimited"
LIMITING_REASONS = ("MaxReplicas", "GpuCapacity", "MetricsUnavailable", "ActivationUnavailable")
WITHIN_LIMITS = "WithinLimits"
EVENT_COMPONENT = "tei-operator-autoscaler"
CONFLICT_RETRIES = 4
UNCOMPARED = ("lastChangeTime", "lastTickTime")
"""Keys of status.autoscaling whose difference alone is no reason to write (a tick's own time)."""


def _round(value: float | None, digits: int) -> float | None:
    # Rounded so that noise in the last digits does not count as a change worth a status write.
    return None if value is None else round(float(value), digits)


def last_decision(decision: Decision) -> str:
    """ScaleUp, ScaleDown, Hold, or Limited (held back by maxReplicas, GPU capacity or missing metrics)."""
    if decision.action == "Hold" and decision.limited_by in LIMITING_REASONS:
        return "Limited"
    return decision.action


def autoscaling_status(decision: Decision, signals: Signals, *, last_scale_time: float | None, now: float,
                       failures: int) -> dict[str, Any]:
    """status.autoscaling for one tick, camelCase, every key present (None removes a key in a merge patch, so a
    signal that became unknown disappears instead of showing its last value)."""
    per_replica_queue = decision.queue_per_replica
    rate = signals.request_rate if signals.error is None else None
    return {
        "signals": {
            "queuePerReplica": _round(per_replica_queue, 2),
            "batchFill": _round(decision.batch_fill, 3),
            "overloadedPerSecond": _round(signals.overloaded_rate if signals.error is None else None, 2),
            "requestsPerSecond": _round(rate, 2),
            "readyReplicas": signals.ready_replicas,
            "startingReplicas": signals.starting_replicas,
            "schedulableReplicas": signals.schedulable_capacity,
        },
        "currentReplicas": signals.current_replicas,
        "desiredReplicas": decision.desired_replicas,
        "lastDecision": last_decision(decision),
        "reason": decision.reason[:1024],
        "lastScaleTime": rfc3339(last_scale_time) if last_scale_time is not None else None,
        # When this status last changed. Written only with a change, so it never claims a look that did not change
        # anything; that the autoscaler runs is the operator's own metrics (metrics.py), not a status heartbeat.
        "lastChangeTime": rfc3339(now),
        "lastTickTime": None,  # 0.1.x wrote a heartbeat here; removed from the status at its next change
        "consecutiveMetricFailures": failures,
    }


def scaling_limited_condition(decision: Decision, generation: int) -> dict[str, Any]:
    """ScalingLimited: True with MaxReplicas / GpuCapacity / MetricsUnavailable when one of them holds the count
    back this tick; False with WithinLimits otherwise (no lastTransitionTime: `merge_condition` sets it)."""
    if decision.limited_by in LIMITING_REASONS:
        return make_condition(SCALING_LIMITED, True, decision.limited_by,
                              decision.limited_message or decision.reason, generation)
    message = f"Desired {decision.desired_replicas} replicas: within maxReplicas, GPU capacity and metrics"
    if decision.limited_by and decision.limited_message:
        message += f" ({decision.limited_message})"
    return make_condition(SCALING_LIMITED, False, WITHIN_LIMITS, message, generation)


def _without_tick(status: Mapping[str, Any] | None) -> dict[str, Any]:
    """What counts as a change of status.autoscaling: everything but its timestamps and the free GPU capacity.

    Free capacity moves whenever any GPU pod anywhere starts or stops; counting it would make every autoscaled GPU
    service write its status on such ticks. It is refreshed with any other change, and when it binds the
    ScalingLimited condition changes (GpuCapacity), which is written at once."""
    out = {k: v for k, v in (status or {}).items() if k not in UNCOMPARED}
    if isinstance(out.get("signals"), Mapping):
        out["signals"] = {k: v for k, v in out["signals"].items() if k != "schedulableReplicas"}
    return out


def _normalised(autoscaling: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the API server stores for a status.autoscaling we wrote: keys set to None are absent."""
    out: dict[str, Any] = {}
    for key, value in (autoscaling or {}).items():
        if isinstance(value, Mapping):
            value = {k: v for k, v in value.items() if v is not None}
        if value is not None:
            out[key] = value
    return out


def status_patch(live_status: Mapping[str, Any] | None, autoscaling: Mapping[str, Any] | None,
                 condition: Mapping[str, Any] | None, *, now: str) -> dict[str, Any]:
    """The status keys to merge-patch, or {} when nothing but the tick's time changed: an idle, settled service is
    never written.

    `autoscaling`/`condition` None means: remove ours (autoscaling turned off)."""
    live = live_status or {}
    patch: dict[str, Any] = {}
    live_auto = live.get("autoscaling")
    if autoscaling is None:
        if live_auto is not None:
            patch["autoscaling"] = None
    elif _without_tick(_normalised(autoscaling)) != _without_tick(live_auto):
        patch["autoscaling"] = dict(autoscaling)
    live_conditions = live.get("conditions")
    live_cond = find_condition(live_conditions, SCALING_LIMITED)
    if condition is None:
        if live_cond is not None:
            patch["conditions"] = remove_condition(live_conditions, SCALING_LIMITED)
    elif condition_differs(live_cond, condition):
        patch["conditions"] = merge_condition(live_conditions, condition, now)
    if "conditions" in patch:
        # The STATUS column follows ScalingLimited too (api/status.py): written with the list, from the list.
        patch["summary"] = status_summary(patch["conditions"])
    return patch


def changed_keys(live_status: Mapping[str, Any] | None, patch: Mapping[str, Any]) -> list[str]:
    """The keys a status patch changes (for the debug log: why an idle service was written)."""
    live = live_status or {}
    out = []
    for key, value in patch.items():
        if key == "autoscaling" and isinstance(value, Mapping):
            before = _normalised(live.get("autoscaling"))
            after = _normalised(value)
            for sub in sorted(set(before) | set(after)):
                if sub in UNCOMPARED:
                    continue
                if sub == "signals":
                    b, a = before.get(sub) or {}, after.get(sub) or {}
                    out += [f"signals.{k}: {b.get(k)!r} -> {a.get(k)!r}" for k in sorted(set(a) | set(b))
                            if a.get(k) != b.get(k)]
                elif before.get(sub) != after.get(sub):
                    out.append(f"{sub}: {before.get(sub)!r} -> {after.get(sub)!r}"[:300])
        elif live.get(key) != value:
            out.append(key)
    return out


class StatusWriter:
    """Writes replicas, status and events for the autoscaler.

    `cache` (the controller's watch-fed store) gets what each write returns, so the next tick reads it; `notify`
    gets (kind, namespace, name) of the service after each write (the controller queues a status refresh)."""

    def __init__(self, kube: KubeClient, field_manager: str, *, cache: Any = None,
                 notify: Callable[[tuple[str, str, str]], None] | None = None) -> None:
        self.kube = kube
        self.field_manager = field_manager
        self.cache = cache
        self.notify = notify

    def _written(self, obj: Mapping[str, Any] | None, service: tuple[str, str, str] | None) -> None:
        if self.cache is not None and obj:
            self.cache.put(obj)
        if self.notify is not None and service is not None:
            self.notify(service)

    async def set_replicas(self, namespace: str, name: str, replicas: int, *, kind: str | None = None,
                           service: str | None = None) -> None:
        """Server-side apply of the Deployment's spec.replicas under the autoscaler's own field manager (force:
        it takes the field over from whoever held it). `kind` and `service` (default: the Deployment's name; a
        blue/green Deployment has its own name) name the service, for `notify`."""
        written = await self.kube.set_replicas(DEPLOYMENT, name, namespace, replicas,
                                               field_manager=self.field_manager)
        self._written(written, (kind, namespace, service or name) if kind else None)

    async def write_status(self, rtype: ResourceType, body: Mapping[str, Any],
                           autoscaling: Mapping[str, Any] | None, condition: Mapping[str, Any] | None, *,
                           now: str) -> dict[str, Any]:
        """Merge-patch status.autoscaling and ScalingLimited when they changed; returns the patch sent ({} if none).

        When the conditions list is part of the patch, it carries the resourceVersion the list was read at, and a
        409 Conflict re-reads the object and tries again."""
        meta = body.get("metadata") or {}
        name, namespace = meta["name"], meta["namespace"]

        async def write(live: Mapping[str, Any]) -> dict[str, Any]:
            patch = status_patch(live.get("status"), autoscaling, condition, now=now)
            if not patch:
                return {}
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("Writing the autoscaling status of %s %s/%s: %s changed", rtype.kind, namespace, name,
                             changed_keys(live.get("status"), patch))
            document: dict[str, Any] = {"status": patch}
            if "conditions" in patch:
                document["metadata"] = {"resourceVersion": (live.get("metadata") or {}).get("resourceVersion")}
            written = await self.kube.patch(rtype, name, namespace, document, content_type=MERGE_PATCH,
                                            subresource="status", field_manager=self.field_manager)
            self._written(written, (rtype.kind, namespace, name))
            return patch

        return await retry_on_conflict(write, body, lambda: self.kube.get_or_none(rtype, name, namespace),
                                       attempts=CONFLICT_RETRIES, gone={},
                                       what=f"{rtype.kind} {namespace}/{name} (autoscaler status)")

    async def event(self, body: Mapping[str, Any], reason: str, message: str, type: str = "Normal") -> None:
        await self.kube.create_event(body, reason=reason, message=message, type=type, component=EVENT_COMPONENT)
