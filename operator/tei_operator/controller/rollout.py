"""Blue/green model changes, the decision side: a pure state machine over the observed Deployments and Service.

Nothing is remembered between reconciles except what the cluster holds:
- the *active* Deployment is the one the Service selects (its `app.kubernetes.io/instance`); with no Service yet, the
  Deployment named like the service (created before blue/green existed, or a new service's first), or the one
  serving when the Service was deleted;
- which model a Deployment serves is read from its TEI container's environment (render/rollout.py);
- a Deployment the Service switched away from carries `tei-operator.io/retired-at`; it drains until that time plus
  spec.rollout.drainSeconds and is then deleted.

Each reconcile: `plan_rollout` names the Deployment to render from the spec (`target`), the one the Service selects
meanwhile (`active`) and what to delete; the controller applies the target, and `switch_ready` tells from the
applied target whether the Service may switch to it now. Phases (status.rollout.phase):
- Stable: the active Deployment serves what the spec asks for (or modelChange is InPlace: it rolls in place);
- Switching: a candidate Deployment for the new model is coming up beside the active one, with the active's replica
  count (the autoscaler's, which scales the active one); the Service switches once every replica is Ready. A
  candidate that never gets Ready leaves the old model serving; status says why; reverting the spec deletes it;
- Draining: the Service switched; the old Deployment is deleted `drainSeconds` after the switch.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..api.rollout import BLUE_GREEN
from ..render.rollout import (INSTANCE_LABEL, RETIRED_AT_ANNOTATION, deployment_identity, deployment_name,
                              describe_model, model_hash)
from . import status as st

STABLE, SWITCHING, DRAINING = "Stable", "Switching", "Draining"
REASON_MODEL_CHANGE = "ModelChangeInProgress"


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


def format_time(when: datetime.datetime) -> str:
    return when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True)
class Deletion:
    """A Deployment to delete now, and why (the Event's message)."""

    name: str
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class RolloutPlan:
    """What one reconcile does about the service's Deployments."""

    target: str                      # rendered from the spec and applied
    active: str                      # what the Service selects unless the target is ready to take over
    identity: dict[str, str]         # the spec's model identity (what `target` serves)
    active_identity: dict[str, str]  # what `active` serves
    switching: bool                  # target != active: a candidate for a new model is coming up
    candidate_replicas: int | None   # the replica count the candidate must reach (the active's), when switching
    delete: tuple[Deletion, ...] = ()
    draining: tuple[tuple[str, datetime.datetime], ...] = ()  # (name, delete after)
    unretire: bool = False           # the target carries a retired-at annotation to take off (switching back)

    def requeue_after(self, now: datetime.datetime) -> float | None:
        """Seconds until the next drained Deployment may be deleted (the reconcile to schedule), if any."""
        if not self.draining:
            return None
        return max(0.0, min((when - now).total_seconds() for _, when in self.draining))


def active_name(service_name: str, service: Mapping[str, Any] | None, deployments: Mapping[str, Mapping[str, Any]]
                ) -> str | None:
    """The Deployment the Service selects, when it exists. Without one (the Service deleted, or selecting a
    Deployment that is gone): the one not switched away from with the most Ready replicas, the one named like the
    service first among equals; else None (nothing exists yet)."""
    selected = (((service or {}).get("spec") or {}).get("selector") or {}).get(INSTANCE_LABEL)
    if selected in deployments:
        return str(selected)
    serving = [n for n, d in deployments.items() if RETIRED_AT_ANNOTATION not in _annotations(d)] or list(deployments)
    if not serving:
        return None
    return max(serving, key=lambda n: (int((deployments[n].get("status") or {}).get("readyReplicas") or 0),
                                       n == service_name, n))


def plan_rollout(*, service_name: str, mode: str, identity: Mapping[str, str], drain_seconds: int,
                 deployments: Sequence[Mapping[str, Any]], service: Mapping[str, Any] | None,
                 now: datetime.datetime) -> RolloutPlan:
    """Decide which Deployment to render from the spec, which one serves meanwhile, and which to delete.

    `deployments` are the service's own (controller ownerReference to it); `service` is its live Service."""
    identity = dict(identity)
    by_name = {_name(d): d for d in deployments}
    active = active_name(service_name, service, by_name)
    if active is None:
        # Nothing serves yet: the first Deployment is named like the service.
        active, active_identity = service_name, identity
    else:
        active_identity = deployment_identity(by_name[active])
    switching = mode == BLUE_GREEN and model_hash(active_identity) != model_hash(identity)
    if switching:
        # A Deployment that already serves this model (one draining after a switch away from it) is taken back.
        same = sorted(n for n, d in by_name.items()
                      if n != active and model_hash(deployment_identity(d)) == model_hash(identity))
        target = same[0] if same else deployment_name(service_name, identity)
    else:
        target = active
    candidate_replicas = None
    if switching and active in by_name:
        candidate_replicas = st.desired_replicas(by_name[active])

    deletions: list[Deletion] = []
    draining: list[tuple[str, datetime.datetime]] = []
    for name, dep in sorted(by_name.items()):
        if name in (active, target):
            continue
        retired = parse_time(_annotations(dep).get(RETIRED_AT_ANNOTATION))
        model = describe_model(deployment_identity(dep))
        if retired is not None:
            delete_after = retired + datetime.timedelta(seconds=drain_seconds)
            if now >= delete_after:
                deletions.append(Deletion(name, "Drained", f"Deleted Deployment {name} (model {model}) after "
                                          f"draining for {drain_seconds} s"))
            else:
                draining.append((name, delete_after))
        else:
            # A candidate of a model change the spec no longer asks for (reverted, or changed again).
            deletions.append(Deletion(name, "ModelChangeAbandoned", f"Deleted Deployment {name} (model {model}): "
                                      f"the spec no longer asks for that model"))
    unretire = target in by_name and RETIRED_AT_ANNOTATION in _annotations(by_name[target])
    return RolloutPlan(target=target, active=active, identity=identity, active_identity=active_identity,
                       switching=switching, candidate_replicas=candidate_replicas, delete=tuple(deletions),
                       draining=tuple(draining), unretire=unretire)


def switch_ready(candidate: Mapping[str, Any] | None, wanted_replicas: int | None) -> tuple[bool, str]:
    """Whether the Service may switch to `candidate` (the target as applied): its rollout observed and done, at
    least `wanted_replicas` (the active's count) desired, and every desired replica Ready. Returns the reason in
    words either way."""
    progress = st.deployment_progress(candidate)
    if not progress.ready:
        return False, progress.message
    desired = st.desired_replicas(candidate or {})
    if wanted_replicas is not None and desired < wanted_replicas:
        return False, f"Deployment {_name(candidate or {})}: {desired} of {wanted_replicas} replicas asked for yet"
    return True, progress.message


def rollout_status(plan: RolloutPlan, *, mode: str, active: str, deployments: Mapping[str, Mapping[str, Any]],
                   waiting: str | None) -> dict[str, Any]:
    """status.rollout: the phase, the serving Deployment and its model, the candidate and the draining ones.
    `active` is the Deployment the Service selects after this reconcile (the target once it switched).

    Every key is present, None when it does not apply: status is merge-patched, and a nested key left out would
    stay as last written (a candidate after its switch)."""
    def entry(name: str, **extra: Any) -> dict[str, Any]:
        dep = deployments.get(name) or {}
        identity = deployment_identity(dep) if dep else plan.identity
        dep_status = dep.get("status") or {}
        return {"deployment": name, "model": describe_model(identity), "modelHash": model_hash(identity),
                "replicas": int(dep_status.get("replicas") or 0),
                "readyReplicas": int(dep_status.get("readyReplicas") or 0),
                "startedTime": None, "waitingFor": None, "deleteAfter": None, **extra}

    candidate = None
    if plan.target != active:
        created = ((deployments.get(plan.target) or {}).get("metadata") or {}).get("creationTimestamp")
        candidate = entry(plan.target, startedTime=created, waitingFor=waiting or None)
    draining = [entry(name, deleteAfter=format_time(when)) for name, when in plan.draining]
    if active != plan.active and plan.active in deployments:
        # Switched in this reconcile: the previous active drains from now on (the plan did not know yet).
        draining.append(entry(plan.active))
    phase = SWITCHING if candidate is not None else DRAINING if draining else STABLE
    return {"modelChange": mode, "phase": phase, "active": entry(active), "candidate": candidate,
            "draining": draining or None}


def adjust_conditions(conditions: list[dict[str, Any]], *, plan: RolloutPlan,
                      active_deployment: Mapping[str, Any] | None, min_available: int, generation: int, waiting: str) -> list[dict[str, Any]]:
    """The conditions while a candidate comes up (computed from the candidate, which is what the spec asks for):
    Available follows the active Deployment, which still serves; Ready and Progressing say a model change is on its
    way unless the candidate has a problem of its own (a crash loop: Ready keeps that reason, Degraded and Stalled
    say it, and the old model keeps serving)."""
    message = (f"Switching from Deployment {plan.active} (model {describe_model(plan.active_identity)}) to "
               f"Deployment {plan.target} (model {describe_model(plan.identity)}) once all its replicas are Ready: "
               f"{waiting}")
    availability = st.assess_availability(active_deployment, min_available)
    out = []
    for cond in conditions:
        cond = dict(cond)
        if cond["type"] == st.AVAILABLE:
            cond.update(status="True" if availability.available else "False", reason=availability.reason,
                        message=availability.message)
        elif cond["type"] == st.PROGRESSING:
            cond.update(status="True", reason=REASON_MODEL_CHANGE, message=message)
        elif cond["type"] == st.READY and cond.get("reason") in (st.REASON_ROLLING_OUT, st.REASON_WAITING_FOR_READY,
                                                                   st.REASON_DEPLOYMENT_MISSING, st.REASON_ALL_READY,
                                                                   st.REASON_SCALED_TO_ZERO):
            cond.update(status="False", reason=REASON_MODEL_CHANGE, message=message)
        elif cond["type"] == st.RECONCILING and cond.get("reason") not in st.STALLING_REASONS | st.WAITING_REASONS:
            # On its way (kstatus InProgress) until the Service switched, even with every candidate replica Ready.
            cond.update(status="True", reason=REASON_MODEL_CHANGE, message=message)
        cond["observedGeneration"] = generation
        out.append(cond)
    return out


@dataclasses.dataclass(frozen=True)
class ServingView:
    """What the status is built from after this reconcile's writes."""

    serving_deployment: Mapping[str, Any] | None  # the Deployment the Service selects: replicas, Available, cost
    serving_pods: list[Mapping[str, Any]]         # its pods: status.model reads their /info
    target_pods: list[Mapping[str, Any]]          # the pods of the Deployment the spec renders to: the conditions
    served_identity: dict[str, str]               # the model the Service serves (status.model)
    status: dict[str, Any]                        # status.rollout
    adjust: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None  # the conditions while switching


def _instance(pod: Mapping[str, Any]) -> str | None:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(INSTANCE_LABEL)


def serving_view(plan: RolloutPlan, *, mode: str, serving: str, deployment: Mapping[str, Any] | None,
                 deployments: Mapping[str, Mapping[str, Any]], pods: Sequence[Mapping[str, Any]], waiting: str,
                 min_available: int, generation: int) -> ServingView:
    """Split the service's pods and Deployments into the serving and the target side. `serving` is what the
    Service selects after this reconcile, `deployment` the target as applied (or read), `pods` every pod of the
    service."""
    switching = serving != plan.target
    serving_deployment = deployments.get(serving) if switching else deployment
    adjust = None
    if switching:
        adjust = functools.partial(adjust_conditions, plan=plan, active_deployment=serving_deployment,
                                   min_available=min_available, generation=generation,
                                   waiting=waiting or "waiting for its replicas")
    return ServingView(
        serving_deployment=serving_deployment,
        serving_pods=[p for p in pods if _instance(p) == serving],
        target_pods=[p for p in pods if _instance(p) == plan.target],
        served_identity=plan.active_identity if switching else plan.identity,
        status=rollout_status(plan, mode=mode, active=serving,
                              deployments={**deployments, **({plan.target: deployment} if deployment else {})},
                              waiting=waiting or None),
        adjust=adjust)
