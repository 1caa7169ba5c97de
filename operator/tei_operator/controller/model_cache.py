"""The managed model cache (spec.cache.managed): from what is observed (the claim, the download Jobs, the last
status.cache) to what to do, and how the service's status reads while the cache fills.

`plan_cache` is pure: it decides which manifests to create, which Jobs to delete, the phase of status.cache, the
CacheReady condition and whether the Deployment must wait (`hold`). `sync_model_cache` observes, acts through the
reconciler's apply helper and returns the plan; reconcile.py calls it once and skips the Deployment while `hold`.

Choices (docs/model-cache.md says why):
- The Deployment waits for the cache: it is not created (a new service) or not moved to the new revision (an
  existing one: its pods keep serving the revision they loaded, which stays in the cache) until the download Job of
  the pinned revision succeeded. So a failed download never takes away what is serving.
- Job completion is the readiness signal: a Job is created once per (service, model id, revision) and never
  re-applied (its pod template is immutable); it stays after success as the record of the fill. Deleting a failed
  Job retries it. Once Ready, status.cache remembers the revision, so a Job deleted afterwards is not re-run.
- The claim is created once and not re-applied either (its access modes and class are immutable); a claim whose
  access modes or class differ from the spec is reported, not replaced: it holds the model.
- Old revisions are kept in the claim (a blue/green switch or a rollback needs the previous one); their Jobs are
  deleted once a newer revision's Job exists.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from .. import kube as k
from ..api.resource import ServiceResource
from ..conditions import make_condition
from ..render.cache import (CACHE_COMPONENT, claim_name, job_name, render_cache_pvc, render_download_job)
from ..render.labels import SERVICE_LABEL
from ..settings import Settings

logger = logging.getLogger("tei_operator.controller")

JOB, PVC = k.JOB, k.PVC

CACHE_READY = "CacheReady"
REASON_CACHE_PENDING = "CachePending"
REASON_DOWNLOADING = "Downloading"
REASON_CACHE_FILLED = "CacheFilled"
REASON_DOWNLOAD_FAILED = "DownloadFailed"
# Ready/Progressing/Reconciling/Stalled/Degraded reasons while the Deployment waits for the cache.
REASON_WAITING_FOR_CACHE = "WaitingForModelCache"
REASON_CACHE_FAILED = "ModelCacheFailed"
EVENT_CACHE_FILLED = "ModelCacheFilled"

_PHASE_REASONS = {"Pending": REASON_CACHE_PENDING, "Downloading": REASON_DOWNLOADING, "Ready": REASON_CACHE_FILLED,
                  "Failed": REASON_DOWNLOAD_FAILED}


def _job_condition(job: Mapping[str, Any], ctype: str) -> Mapping[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype and cond.get("status") == "True":
            return cond
    return None


def job_phase(job: Mapping[str, Any] | None) -> str:
    """A download Job's phase: Ready (Complete), Failed, Downloading (its pod runs) or Pending."""
    if not job:
        return "Pending"
    if _job_condition(job, "Complete") or _job_condition(job, "SuccessCriteriaMet"):
        return "Ready"
    if _job_condition(job, "Failed") or _job_condition(job, "FailureTarget"):
        return "Failed"
    status = job.get("status") or {}
    if int(status.get("ready") or 0) > 0:
        return "Downloading"
    return "Pending"


def _short(revision: str | None) -> str:
    return (revision or "")[:12]


@dataclasses.dataclass(frozen=True)
class CachePlan:
    """What to do about the managed cache, and what status says."""

    create_pvc: dict[str, Any] | None = None
    create_job: dict[str, Any] | None = None
    delete_jobs: tuple[str, ...] = ()
    delete_pvc: str | None = None
    status: dict[str, Any] | None = None
    condition: dict[str, Any] | None = None
    hold: bool = False

    @property
    def phase(self) -> str | None:
        return (self.status or {}).get("phase")

    def adjust(self, conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The service's conditions with CacheReady added and, while the Deployment waits for the cache, Ready,
        Progressing, Reconciling and Stalled (and Degraded on failure) saying so. Available is left as observed:
        pods of an earlier revision may serve."""
        out = [dict(c) for c in conditions]
        if self.condition is not None:
            out.append(dict(self.condition))
        if not self.hold or self.status is None:
            return out
        failed = self.phase == "Failed"
        reason = REASON_CACHE_FAILED if failed else REASON_WAITING_FOR_CACHE
        message = self.status.get("message") or ""
        wanted = {
            "Ready": ("False", reason, message),
            "Progressing": ("False" if failed else "True", reason, message),
            "Reconciling": ("False" if failed else "True", reason, message),
            "Stalled": ("True", reason, message) if failed else ("False", "NotStalled",
                                                                  "Not stalled: the model cache is being filled"),
        }
        if failed:
            wanted["Degraded"] = ("True", reason, message)
        for cond in out:
            if cond["type"] in wanted:
                cond["status"], cond["reason"], cond["message"] = wanted[cond["type"]]
        return out


def _pvc_mismatch(live: Mapping[str, Any], desired: Mapping[str, Any]) -> str | None:
    """Why a live claim differs from the spec in a field that cannot change, or None."""
    live_spec, want = live.get("spec") or {}, desired["spec"]
    problems = []
    if sorted(live_spec.get("accessModes") or []) != sorted(want["accessModes"]):
        problems.append(f"accessModes {live_spec.get('accessModes')} (spec: {want['accessModes']})")
    if "storageClassName" in want and live_spec.get("storageClassName") != want["storageClassName"]:
        problems.append(f"storageClassName {live_spec.get('storageClassName')!r} (spec: {want['storageClassName']!r})")
    if not problems:
        return None
    return (f"PersistentVolumeClaim {live['metadata']['name']} has {' and '.join(problems)}, which cannot change: "
            "delete the claim to have it recreated")


def plan_cache(resource: ServiceResource, settings: Settings, *, pvc: Mapping[str, Any] | None,
               jobs: Sequence[Mapping[str, Any]], current: Mapping[str, Any] | None, generation: int,
               failure_detail: str | None = None) -> CachePlan:
    """What to do, from the observed claim, the service's cache Jobs and the last status.cache.

    `failure_detail` is the failed download pod's termination message, when one was read."""
    managed = resource.spec.cache.managed
    if managed is None:
        # Not (or no longer) managed: remove what the operator created for it; status.cache goes away.
        return CachePlan(delete_jobs=tuple(j["metadata"]["name"] for j in jobs),
                         delete_pvc=pvc["metadata"]["name"] if pvc else None)
    model = resource.spec.model
    revision = model.revision
    name, claim = job_name(resource), claim_name(resource)
    desired_pvc = render_cache_pvc(resource)
    ours = next((j for j in jobs if j["metadata"]["name"] == name), None)
    stale = tuple(j["metadata"]["name"] for j in jobs if j["metadata"]["name"] != name)
    if pvc is None and ours is not None:
        # The claim is gone (deleted by hand) and is created again, empty: the Job's fill went with it. Delete the
        # Job; once it is gone, the next reconcile creates it again for the new claim.
        return CachePlan(create_pvc=desired_pvc, delete_jobs=stale + (name,), hold=True,
                         status={"phase": "Pending", "revision": revision, "claimName": claim, "jobName": name,
                                 "message": f"PersistentVolumeClaim {claim} was gone: it is created again and Job "
                                 f"{name} will fill it with {model.id}@{_short(revision)}"},
                         condition=make_condition(CACHE_READY, False, REASON_CACHE_PENDING,
                                                  f"PersistentVolumeClaim {claim} was gone and is created again",
                                                  generation))
    remembered = (current or {}).get("phase") == "Ready" and (current or {}).get("revision") == revision
    phase = job_phase(ours)
    create_job = None
    if ours is None and remembered and pvc is not None:
        phase = "Ready"  # filled earlier; its Job was deleted since
    elif ours is None:
        create_job = render_download_job(resource, settings)
    what = f"{model.id}@{_short(revision)}"
    if phase == "Ready":
        message = f"PersistentVolumeClaim {claim} holds {what}"
    elif phase == "Failed":
        cond = _job_condition(ours or {}, "Failed") or _job_condition(ours or {}, "FailureTarget") or {}
        why = (cond.get("message") or cond.get("reason") or "failed").strip()
        message = f"Job {name} could not download {what}: {why}"
        if failure_detail:
            message += f"; the download pod said: {failure_detail.strip()[:1000]}"
        message += f" (delete Job {name} to retry)"
    elif phase == "Downloading":
        message = f"Job {name} is downloading {what} into PersistentVolumeClaim {claim}"
    else:
        message = f"Job {name} will download {what} into PersistentVolumeClaim {claim} once its pod runs"
        pvc_phase = ((pvc or {}).get("status") or {}).get("phase")
        if pvc is not None and pvc_phase != "Bound":
            message += (f"; the claim is {pvc_phase or 'not bound'} (no volume yet: is there a StorageClass "
                        f"that provisions {'/'.join(managed.access_modes)} volumes?)")
    mismatch = _pvc_mismatch(pvc, desired_pvc) if pvc is not None else None
    if mismatch:
        message = f"{message}. {mismatch}"
    status = {"phase": phase, "revision": revision, "claimName": claim, "jobName": name, "message": message}
    condition = make_condition(CACHE_READY, phase == "Ready", _PHASE_REASONS[phase], message, generation)
    return CachePlan(create_pvc=desired_pvc if pvc is None else None, create_job=create_job,
                     delete_jobs=stale, status=status, condition=condition, hold=phase != "Ready")


async def _failure_detail(kube: k.KubeClient, namespace: str, job: Mapping[str, Any]) -> str | None:
    """The termination message of the Job's last failed pod (what `hf download` printed), if any."""
    pods = await kube.list(k.POD, namespace, label_selector=f"batch.kubernetes.io/job-name={job['metadata']['name']}")
    messages = []
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated") or {}
            if term.get("exitCode") not in (None, 0) and term.get("message"):
                messages.append((term.get("finishedAt") or "", term["message"]))
    return max(messages)[1] if messages else None


async def sync_model_cache(reconciler: Any, owner: Mapping[str, Any], resource: ServiceResource, outcome: Any, *,
                           apply: bool) -> CachePlan:
    """Observe the claim and the cache Jobs, act on the plan (only when `apply`), record the fill as an Event.

    Nothing is read for a service that has no managed cache and had none (no status.cache): the common case costs
    no request."""
    current = (owner.get("status") or {}).get("cache")
    if resource.spec.cache.managed is None and not current:
        return CachePlan()
    kube: k.KubeClient = reconciler.kube
    reads = reconciler.cache  # the watch-fed store (controller/cache.py): no request while nothing changes
    namespace = resource.namespace
    uid = (owner.get("metadata") or {}).get("uid")
    pvc = await reads.get(PVC, claim_name(resource), namespace)
    owned = pvc is not None and any(r.get("uid") == uid and r.get("controller")
                                    for r in (pvc.get("metadata") or {}).get("ownerReferences") or [])
    if resource.spec.cache.managed is None and not owned:
        pvc = None  # never delete a claim the operator did not create
    labels = {"app.kubernetes.io/component": CACHE_COMPONENT, SERVICE_LABEL: resource.name}
    # A Job on its way out (deleted with its claim, or a stale revision's) counts as gone.
    jobs = [j for j in await reads.list(JOB, namespace, labels=labels)
            if not (j.get("metadata") or {}).get("deletionTimestamp")
            and any(r.get("uid") == uid and r.get("controller")
                    for r in (j.get("metadata") or {}).get("ownerReferences") or [])]
    generation = int((owner.get("metadata") or {}).get("generation") or 0)
    plan = plan_cache(resource, reconciler.settings, pvc=pvc, jobs=jobs, current=current, generation=generation)
    if plan.phase == "Failed":
        ours = next(j for j in jobs if j["metadata"]["name"] == plan.status["jobName"])
        detail = await _failure_detail(kube, namespace, ours)
        if detail:
            plan = plan_cache(resource, reconciler.settings, pvc=pvc, jobs=jobs, current=current,
                              generation=generation, failure_detail=detail)
    if not apply:
        return plan
    drift = (owner.get("status") or {}).get("observedGeneration") == generation
    for manifest in (plan.create_pvc, plan.create_job):
        if manifest is not None:
            await reconciler._apply_child(owner, resource, manifest, outcome, drift=drift)
    for name in plan.delete_jobs:
        if await kube.delete(JOB, name, namespace, propagation="Background"):
            await reconciler.recorder.record(owner, "Deleted", f"Deleted Job {name}: its download is no longer "
                                             "wanted (another revision, or a claim created again)")
    if plan.delete_pvc and await kube.delete(PVC, plan.delete_pvc, namespace):
        await reconciler.recorder.record(owner, "Deleted", f"Deleted PersistentVolumeClaim {plan.delete_pvc}: "
                                         "spec.cache.managed is no longer set")
    if plan.phase == "Ready" and ((current or {}).get("phase"), (current or {}).get("revision")) != (
            "Ready", plan.status["revision"]):
        await reconciler.recorder.record(owner, EVENT_CACHE_FILLED, plan.status["message"].replace(
            "holds", "was filled with", 1) + f" by Job {plan.status['jobName']}")
    return plan
