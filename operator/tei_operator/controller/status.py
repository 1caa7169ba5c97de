"""A service's status from what its children look like: pure functions, no API calls.

The controller observes the Deployment and its pods and hands them here; this module decides the conditions
and which status keys need writing. It never touches keys other writers own (`status.autoscaling`, and conditions
of other types such as the autoscaler's `ScalingLimited`).

Two sets of conditions, for two kinds of readers:
- `Ready`, `Available`, `Progressing`, `Degraded` (normal-true): what `kubectl wait` and people read. `Ready` = every
  desired replica ready and the rollout done; `Available` = the service serves: at least `spec.minAvailable`
  replicas (capped at the desired count) ready, of any template. A scale-up leaves a serving service Available.
- `Reconciling`, `Stalled` (abnormal-true): the only conditions kstatus reads (sigs.k8s.io/cli-utils, behind Flux's
  default health checks, `kpt live status` and Config Sync). `Reconciling=True` means "not there yet, on its way"
  (kstatus: InProgress), `Stalled=True` means "stopped, needs a change" (kstatus: Failed). Both are always written,
  with status False when normal, so their lastTransitionTime says when the service last finished or unstuck.

kstatus and Argo CD's health check (docs/gitops.md) follow serving: a service that is Available and whose current pod
template is rolled out (no pod of an older template left) is done (`Reconciling=False`) even while added replicas
load or wait for a GPU; only a crash loop or an image that cannot be pulled stalls it then. A rollout of a new
template, or a service not yet serving, is on its way until every desired replica is ready.

Which problems stall a service (docs/gitops.md explains the choice): an invalid spec, a crash loop, an image that
cannot be pulled, the API server refusing the pods (ReplicaFailure) and the Deployment's progress deadline. An
unschedulable pod and a missing Secret (CreateContainerConfigError) only make it wait: a cluster autoscaler adds the
GPU node, another controller creates the Secret. They stay `Reconciling=True` with the scheduler's or kubelet's
message until the Deployment's progress deadline passes, and then become `Stalled` (ProgressDeadlineExceeded).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..api.status import status_summary
from ..conditions import condition_of, make_condition
from ..conditions import merge_conditions as merge_with_owned
from ..render.children import CONFIG_HASH_ANNOTATION

READY = "Ready"
AVAILABLE = "Available"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
RECONCILING = "Reconciling"
STALLED = "Stalled"
MODEL_MISMATCH = "ModelMismatch"  # built in model_info.py from what the pods' /info report
CACHE_READY = "CacheReady"  # built in model_cache.py (spec.cache.managed)
OWNED_CONDITION_TYPES = (READY, AVAILABLE, PROGRESSING, DEGRADED, RECONCILING, STALLED, MODEL_MISMATCH, CACHE_READY)

# Reasons (PascalCase, API conventions); docs/troubleshooting.md has one section per reason.
REASON_INVALID_SPEC = "InvalidSpec"
REASON_UNSUPPORTED_MODEL = "UnsupportedModel"
REASON_APPLY_REJECTED = "ApplyRejected"
REASON_UNSCHEDULABLE = "Unschedulable"
REASON_CRASH_LOOP = "CrashLoopBackOff"
REASON_IMAGE_PULL = "ImagePullBackOff"
REASON_CONTAINER_CONFIG = "CreateContainerConfigError"
REASON_DEADLINE = "ProgressDeadlineExceeded"
REASON_REPLICA_FAILURE = "ReplicaFailure"
REASON_DEPLOYMENT_MISSING = "DeploymentMissing"
REASON_ROLLING_OUT = "RollingOut"
REASON_WAITING_FOR_READY = "WaitingForReady"
REASON_ALL_READY = "AllReplicasReady"
REASON_SCALED_TO_ZERO = "ScaledToZero"
REASON_ROLLOUT_COMPLETE = "RolloutComplete"
REASON_HEALTHY = "NoProblems"
REASON_NOT_STALLED = "NotStalled"
REASON_MIN_AVAILABLE = "MinimumReplicasReady"

# Problems that stop progress until someone changes something (kstatus: Stalled=True, Failed). The others
# (Unschedulable, CreateContainerConfigError) may resolve on their own and stall only at the progress deadline.
STALLING_REASONS = frozenset({REASON_INVALID_SPEC, REASON_UNSUPPORTED_MODEL, REASON_APPLY_REJECTED, REASON_CRASH_LOOP,
                              REASON_IMAGE_PULL, REASON_DEADLINE, REASON_REPLICA_FAILURE})
WAITING_REASONS = frozenset({REASON_UNSCHEDULABLE, REASON_CONTAINER_CONFIG})

# Status keys this controller writes; everything else under status belongs to someone else.
OWNED_STATUS_KEYS = ("observedGeneration", "replicas", "readyReplicas", "selector", "endpoint", "image", "conditions",
                     "summary", "model", "cost", "cache", "rollout")

#: `build_status(cost=KEEP)`: leave status.cost as it is (a refused spec observed nothing to price).
KEEP = object()

_IMAGE_PULL_REASONS = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"}
_CONFIG_REASONS = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}


@dataclasses.dataclass(frozen=True)
class Problem:
    """Why a service cannot be Ready on its own: becomes Degraded=True with this reason and message."""

    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Progress:
    """Where the Deployment's rollout stands."""

    ready: bool
    progressing: bool
    reason: str
    message: str


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", "?"))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _live_pods(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Pods that count: not on their way out and not finished."""
    return [
        p for p in pods
        if not (p.get("metadata") or {}).get("deletionTimestamp")
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]


def _container_problem(pod: Mapping[str, Any]) -> Problem | None:
    status = pod.get("status") or {}
    for cs in list(status.get("initContainerStatuses") or []) + list(status.get("containerStatuses") or []):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if not reason:
            continue
        container = cs.get("name", "?")
        if reason == "CrashLoopBackOff":
            terminated = (cs.get("lastState") or {}).get("terminated") or {}
            detail = (terminated.get("message") or "").strip() or (waiting.get("message") or "").strip()
            exit_code = terminated.get("exitCode")
            restarts = cs.get("restartCount", 0)
            facts = ", ".join(
                part for part in (f"exit code {exit_code}" if exit_code is not None else "",
                                  _plural(int(restarts or 0), "restart")) if part
            )
            message = f"Container {container} of pod {_name(pod)} is crash-looping ({facts})"
            return Problem(REASON_CRASH_LOOP, f"{message}: {detail}" if detail else message)
        if reason in _IMAGE_PULL_REASONS:
            detail = (waiting.get("message") or "").strip()
            message = f"Container {container} of pod {_name(pod)} cannot pull its image ({reason})"
            return Problem(REASON_IMAGE_PULL, f"{message}: {detail}" if detail else message)
        if reason in _CONFIG_REASONS:
            detail = (waiting.get("message") or "").strip()
            message = f"Container {container} of pod {_name(pod)} cannot start ({reason})"
            return Problem(REASON_CONTAINER_CONFIG, f"{message}: {detail}" if detail else message)
    return None


def _unschedulable(pod: Mapping[str, Any]) -> str | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
            return (cond.get("message") or "").strip() or "no node fits the pod"
    return None


def diagnose_pods(pods: Sequence[Mapping[str, Any]]) -> Problem | None:
    """The most telling problem among the pods, or None.

    A crash loop or an image that cannot be pulled is reported before an unschedulable pod: those say what is
    wrong with the service itself, while a pending pod may just be waiting for a GPU to free up."""
    live = _live_pods(pods)
    for pod in live:
        problem = _container_problem(pod)
        if problem is not None and problem.reason == REASON_CRASH_LOOP:
            return problem
    for pod in live:
        problem = _container_problem(pod)
        if problem is not None:
            return problem
    pending = [(pod, msg) for pod in live if (msg := _unschedulable(pod)) is not None]
    if pending:
        pod, message = pending[0]
        who = f"Pod {_name(pod)}" if len(pending) == 1 else f"{len(pending)} pods (e.g. {_name(pod)})"
        return Problem(REASON_UNSCHEDULABLE, f"{who} cannot be scheduled: {message}")
    return None


def desired_replicas(deployment: Mapping[str, Any]) -> int:
    """The Deployment's spec.replicas (the API server defaults a missing value to 1)."""
    value = (deployment.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def deployment_problem(deployment: Mapping[str, Any] | None) -> Problem | None:
    """Problems the Deployment controller itself reports (deadline exceeded, ReplicaSet cannot create pods)."""
    if not deployment:
        return None
    progressing = condition_of(deployment.get("status"), "Progressing")
    if progressing and progressing.get("status") == "False" and progressing.get("reason") == REASON_DEADLINE:
        return Problem(REASON_DEADLINE, f"Deployment {_name(deployment)}: {progressing.get('message', '').strip()}")
    failure = condition_of(deployment.get("status"), "ReplicaFailure")
    if failure and failure.get("status") == "True":
        return Problem(REASON_REPLICA_FAILURE,
                       f"Deployment {_name(deployment)} cannot create pods: {failure.get('message', '').strip()}")
    return None


def deployment_progress(deployment: Mapping[str, Any] | None) -> Progress:
    """Whether the Deployment is rolled out and all its desired replicas are ready.

    Ready requires the Deployment controller to have seen the latest spec (observedGeneration caught up), every
    replica on the new template, no old replica left, and the desired count ready."""
    if not deployment:
        return Progress(False, True, REASON_DEPLOYMENT_MISSING, "The Deployment does not exist yet")
    name = _name(deployment)
    meta, status = deployment.get("metadata") or {}, deployment.get("status") or {}
    desired = desired_replicas(deployment)
    generation = int(meta.get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    total = int(status.get("replicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    if observed < generation:
        return Progress(False, True, REASON_ROLLING_OUT,
                        f"Deployment {name} has not yet observed generation {generation} (at {observed})")
    if updated < desired:
        return Progress(False, True, REASON_ROLLING_OUT,
                        f"Deployment {name} is rolling out: {updated} of {desired} replicas updated")
    if total > updated:
        return Progress(False, True, REASON_ROLLING_OUT,
                        f"Deployment {name} is rolling out: {_plural(total - updated, 'old replica')} "
                        f"still terminating")
    if ready < desired:
        return Progress(False, True, REASON_WAITING_FOR_READY,
                        f"Deployment {name}: {ready} of {desired} replicas ready")
    if desired == 0:
        return Progress(True, False, REASON_SCALED_TO_ZERO, f"Deployment {name} is scaled to zero")
    return Progress(True, False, REASON_ALL_READY, f"Deployment {name}: {ready} of {desired} replicas ready")


@dataclasses.dataclass(frozen=True)
class Availability:
    """Whether the service serves: at least `needed` replicas Ready (any template: old pods serve during a rollout)."""

    available: bool
    reason: str
    message: str


def assess_availability(deployment: Mapping[str, Any] | None, min_available: int,
                        problem: Problem | None = None) -> Availability:
    """Available when the Deployment's ready replicas reach min(minAvailable, desired). Scaled to zero on purpose
    counts as available (as a Deployment's own Available condition does): nothing is asked to serve."""
    if not deployment:
        return Availability(False, REASON_DEPLOYMENT_MISSING, "The Deployment does not exist yet")
    name = _name(deployment)
    desired = desired_replicas(deployment)
    ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
    if desired == 0:
        return Availability(True, REASON_SCALED_TO_ZERO, f"Deployment {name} is scaled to zero")
    needed = min(max(1, int(min_available)), desired)
    counts = f"{ready} of {desired} replicas ready, {needed} needed to serve"
    if ready >= needed:
        return Availability(True, REASON_MIN_AVAILABLE, f"Deployment {name}: {counts}")
    if problem is not None:
        return Availability(False, problem.reason, f"Deployment {name}: {counts}; {problem.message}")
    return Availability(False, REASON_WAITING_FOR_READY, f"Deployment {name}: {counts}")


def template_rolled_out(deployment: Mapping[str, Any] | None) -> bool:
    """Whether the Deployment runs only its current pod template: it has seen its latest spec and no pod of an
    older template is left. Replicas may still be missing or loading (a scale-up); the rollout itself is done."""
    if not _deployment_caught_up(deployment):
        return False
    status = (deployment or {}).get("status") or {}
    return int(status.get("replicas") or 0) <= int(status.get("updatedReplicas") or 0)


@dataclasses.dataclass(frozen=True)
class Standing:
    """Where a service stands for kstatus: on its way (`reconciling`), stuck (`stalled`) or neither (done)."""

    reconciling: bool
    stalled: bool
    reason: str
    message: str


def current_template_pods(pods: Sequence[Mapping[str, Any]], template_hash: str | None
                          ) -> list[Mapping[str, Any]]:
    """The pods of the pod template the operator rendered last (its config-hash annotation), or every pod when the
    hash is not known. Pods of an older template are on their way out: after a fix, the old crash-looping pods must
    not make the fixed service look stalled while the Deployment replaces them."""
    if not template_hash:
        return list(pods)
    return [p for p in pods
            if ((p.get("metadata") or {}).get("annotations") or {}).get(CONFIG_HASH_ANNOTATION, template_hash)
            == template_hash]


def _deployment_caught_up(deployment: Mapping[str, Any] | None) -> bool:
    """Whether the Deployment controller has seen the Deployment's latest spec: only then do its conditions speak
    about the current template (a ProgressDeadlineExceeded of the previous one is cleared once it has)."""
    if not deployment:
        return False
    generation = int((deployment.get("metadata") or {}).get("generation") or 0)
    return int((deployment.get("status") or {}).get("observedGeneration") or 0) >= generation


def assess_standing(progress: Progress, deployment: Mapping[str, Any] | None,
                    current_pods: Sequence[Mapping[str, Any]], availability: Availability | None = None) -> Standing:
    """Reconciling or Stalled, from the rollout's progress and the problems of the current template's pods.

    A stalling pod problem (crash loop, image pull) wins; then a service that serves (`availability`) with its
    template rolled out is done: replicas still loading or waiting for a GPU (a scale-up) are capacity on its way,
    not a rollout, and neither a pending pod nor the progress deadline stalls it. Otherwise what the Deployment
    controller declared (progress deadline, ReplicaFailure), with the pods' problem added to say why; a problem
    that may resolve by itself (unschedulable, missing Secret) keeps the service Reconciling with that message;
    otherwise the rollout's own reason (RollingOut, WaitingForReady, DeploymentMissing)."""
    if progress.ready:
        return Standing(False, False, progress.reason, progress.message)
    pod_problem = diagnose_pods(current_pods)
    if pod_problem is not None and pod_problem.reason in STALLING_REASONS:
        return Standing(False, True, pod_problem.reason, pod_problem.message)
    if availability is not None and availability.available and template_rolled_out(deployment):
        waiting = pod_problem or deployment_problem(deployment)
        message = f"{availability.message}; the others: {waiting.message if waiting else progress.message}"
        return Standing(False, False, availability.reason, message)
    declared = deployment_problem(deployment) if _deployment_caught_up(deployment) else None
    if declared is not None:
        message = f"{declared.message}; {pod_problem.message}" if pod_problem is not None else declared.message
        return Standing(False, True, declared.reason, message)
    if pod_problem is not None:
        return Standing(True, False, pod_problem.reason, pod_problem.message)
    return Standing(True, False, progress.reason, progress.message)


def _kstatus_conditions(standing: Standing, generation: int) -> list[dict[str, Any]]:
    reconciling = make_condition(RECONCILING, standing.reconciling, standing.reason, standing.message, generation)
    if standing.stalled:
        stalled = make_condition(STALLED, True, standing.reason, standing.message, generation)
    elif standing.reconciling and standing.reason in WAITING_REASONS:
        stalled = make_condition(STALLED, False, REASON_NOT_STALLED,
                             f"Not stalled: {standing.reason} may resolve by itself (a node added, a Secret "
                             "created); Stalled once the Deployment's progress deadline passes", generation)
    else:
        stalled = make_condition(STALLED, False, REASON_NOT_STALLED, "Not stalled", generation)
    return [reconciling, stalled]



def _stopped_conditions(reason: str, message: str, progressing: str, deployment: Mapping[str, Any] | None,
                        min_available: int, generation: int) -> list[dict]:
    """The conditions of a service whose reconcile stopped before applying (a spec that cannot be rendered, a model
    TEI cannot run, a child the API server refused): not Ready, not Progressing (`progressing` says why), Degraded
    and Stalled with `message`; Available still tells whether the pods of the last good spec serve."""
    availability = assess_availability(deployment, min_available)
    return [
        make_condition(READY, False, reason, message, generation),
        make_condition(AVAILABLE, availability.available, availability.reason, availability.message, generation),
        make_condition(PROGRESSING, False, reason, progressing, generation),
        make_condition(DEGRADED, True, reason, message, generation),
        *_kstatus_conditions(Standing(False, True, reason, message), generation),
    ]


def desired_conditions(*, generation: int, deployment: Mapping[str, Any] | None,
                       pods: Sequence[Mapping[str, Any]] = (), invalid_spec: str | None = None,
                       template_hash: str | None = None, min_available: int = 1,
                       unsupported_model: str | None = None, rejected: str | None = None) -> list[dict[str, Any]]:
    """Ready, Available, Progressing, Degraded, Reconciling and Stalled (without lastTransitionTime) for what was
    observed.

    `invalid_spec` is the parse error when the spec could not be rendered: nothing was applied, so the service is
    neither Ready nor Progressing, Degraded and Stalled say which field is wrong (Available still tells whether the
    pods of the last good spec serve). `template_hash` is the config hash of the rendered pod template: only its
    pods can stall the service (see `current_template_pods`). `min_available` is spec.minAvailable.
    `unsupported_model` says why the model cannot run on TEI (api/unsupported.py): nothing was applied either, and
    Available again tells whether pods of an earlier spec still serve. `rejected` is the API server's answer when it
    refused a child for good (400/422): the reconcile stopped there and is not retried until something changes."""
    if rejected is not None:
        return _stopped_conditions(REASON_APPLY_REJECTED,
                                   f"The API server refused a child of this service: {rejected}",
                                   "Stopped: the API server refused a child", deployment, min_available, generation)
    if unsupported_model is not None:
        return _stopped_conditions(REASON_UNSUPPORTED_MODEL, unsupported_model,
                                   "Nothing was applied: the model is known not to run on TEI", deployment,
                                   min_available, generation)
    if invalid_spec is not None:
        return _stopped_conditions(REASON_INVALID_SPEC, f"The spec cannot be rendered: {invalid_spec}",
                                   "Nothing was applied: the spec is invalid", deployment, min_available, generation)
    progress = deployment_progress(deployment)
    problem = None if progress.ready else (diagnose_pods(pods) or deployment_problem(deployment))
    if progress.ready:
        ready = make_condition(READY, True, progress.reason, progress.message, generation)
    elif problem is not None:
        ready = make_condition(READY, False, problem.reason, problem.message, generation)
    else:
        ready = make_condition(READY, False, progress.reason, progress.message, generation)
    availability = assess_availability(deployment, min_available, problem)
    available = make_condition(AVAILABLE, availability.available, availability.reason, availability.message, generation)
    progressing = make_condition(
        PROGRESSING, progress.progressing,
        progress.reason if progress.progressing else REASON_ROLLOUT_COMPLETE,
        progress.message, generation,
    )
    if problem is not None:
        degraded = make_condition(DEGRADED, True, problem.reason, problem.message, generation)
    else:
        degraded = make_condition(DEGRADED, False, REASON_HEALTHY, "No problem found", generation)
    standing = assess_standing(progress, deployment, current_template_pods(pods, template_hash), availability)
    return [ready, available, progressing, degraded, *_kstatus_conditions(standing, generation)]


def merge_conditions(current: Sequence[Mapping[str, Any]] | None, desired: Sequence[Mapping[str, Any]],
                     now: str) -> list[dict[str, Any]]:
    """The conditions list the controller writes: conditions.merge_conditions with the controller's types
    (OWNED_CONDITION_TYPES) dropped when not desired any more, other writers' conditions kept."""
    return merge_with_owned(current, desired, now, owned=OWNED_CONDITION_TYPES)


def _without_nulls(value: Any) -> Any:
    """A value as stored after a merge patch: keys set to None (removed by the patch) left out, at any depth."""
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def changed_status(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of `desired` whose value differs from `current` (an empty dict means: write nothing). A nested
    key set to None in `desired` removes it (merge patch) and equals its absence."""
    current = current or {}
    return {k: v for k, v in desired.items() if _without_nulls(current.get(k)) != _without_nulls(v)}


def transitions(current: Sequence[Mapping[str, Any]] | None, merged: Sequence[Mapping[str, Any]]
                ) -> list[dict[str, Any]]:
    """Conditions whose status or reason changed: the moments worth an Event."""
    before = {c.get("type"): c for c in current or []}
    out = []
    for cond in merged:
        old = before.get(cond["type"])
        if old is None or old.get("status") != cond["status"] or old.get("reason") != cond["reason"]:
            out.append(dict(cond))
    return out


def build_status(*, generation: int, deployment: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]],
                 current: Mapping[str, Any] | None, now: str, selector: str | None = None,
                 endpoint: str | None = None, image: str | None = None, invalid_spec: str | None = None,
                 template_hash: str | None = None, min_available: int = 1, unsupported_model: str | None = None,
                 rejected: str | None = None, served_model: tuple[dict[str, Any], dict[str, Any]] | None = None,
                 cost: dict[str, Any] | None | object = KEEP, cache: Any = None,
                 rollout: dict[str, Any] | None | object = KEEP,
                 adjust: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
                 counts_from: Mapping[str, Any] | None | object = KEEP) -> dict[str, Any]:
    """The status keys this controller owns, ready to compare with `changed_status` and merge-patch.

    replicas/readyReplicas come from the Deployment's status (the scale subresource reads status.replicas);
    `summary` (the STATUS column) from every condition, the autoscaler's ScalingLimited and ModelMismatch included.
    `served_model` is `status.model` and the ModelMismatch condition (model_info.served_model_report); `cost` is
    `status.cost` (cost.cost_status; None removes a cost that no longer applies, KEEP leaves it alone); `cache` is
    the managed cache's plan (model_cache.CachePlan: status.cache, CacheReady, and the conditions while the
    Deployment waits for it), None leaving status.cache alone.
    During a blue/green model change (controller/rollout.py) `deployment` and `pods` are the candidate's,
    `adjust` rewrites the conditions before they are merged, `counts_from` is the Deployment the Service selects
    (replicas, readyReplicas) and `rollout` is status.rollout."""
    dep_status = ((deployment if counts_from is KEEP else counts_from) or {}).get("status") or {}
    desired = desired_conditions(generation=generation, deployment=deployment, pods=pods, invalid_spec=invalid_spec,
                                 template_hash=template_hash, min_available=min_available,
                                 unsupported_model=unsupported_model, rejected=rejected)
    if adjust is not None:
        desired = adjust(desired)
    if served_model is not None:
        desired.append(served_model[1])
    if cache is not None:
        desired = cache.adjust(desired)
    conditions = merge_conditions((current or {}).get("conditions"), desired, now)
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "replicas": int(dep_status.get("replicas") or 0),
        "readyReplicas": int(dep_status.get("readyReplicas") or 0),
        "conditions": conditions,
        "summary": status_summary(conditions),
    }
    if selector is not None:
        status["selector"] = selector
    if endpoint is not None:
        status["endpoint"] = endpoint
    if image is not None:
        status["image"] = image
    if served_model is not None:
        status["model"] = served_model[0]
    if cost is not KEEP:
        status["cost"] = cost
    if cache is not None:
        status["cache"] = cache.status
    if rollout is not KEEP:
        status["rollout"] = rollout
    return status
