"""One idempotent reconcile of one service: render, server-side apply, prune, status.

Every trigger (a new or changed service, a child's or pod's event, the resync) ends up in `Reconciler.reconcile`
with the service's key (through the one work queue, queue.py). It reads the service, its children and its pods
from the watch-fed store (cache.py; `LiveReads` asks the API server instead), and holds a per-service lock, so two
triggers never interleave their writes. A reconcile that finds nothing to change sends nothing: a child is applied
only when its rendered hash or one of our fields differs from the cached object (applied.py), and status is
merge-patched only when a key we own differs.

The Deployment's pod template converges to exactly the rendered one: server-side apply puts back the fields we set,
and fields someone else added (an env variable, a toleration, a sidecar) are removed (ownership.py), unless a field
manager the settings trust (`extra_field_managers`) added them. Status is
written read-modify-write against the resourceVersion it was computed from, so a condition another writer (the
autoscaler's ScalingLimited) added in between is never dropped.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from .. import kube as k
from ..api import GROUP, KINDS, VERSION, ServiceResource
from ..api.rollout import active_deployment
from ..api.unsupported import refusal_message
from ..kube import KubeClient
from ..conditions import condition_of
from ..kube_retry import retry_on_conflict
from ..render import endpoint_url, render_children
from ..render.children import CONFIG_HASH_ANNOTATION
from ..render.labels import SERVICE_LABEL, selector_labels
from ..render.rollout import INSTANCE_LABEL, model_identity, retarget, serving_selector
from ..render.rollout import selector_string as rollout_selector_string
from ..settings import Settings
from . import status as st
from .applied import ApplyReasons, with_applied_hash
from .cache import CHILD_TYPES, LiveReads, Reads
from .errors import classify
from .events import Change, EventRecorder, describe_apply, describe_removal
from .cost import TokenRateMeter, cost_status
from .model_cache import sync_model_cache
from .model_info import ModelInfoReader, served_model_report
from .ownership import ForeignField, foreign_template_fields, removal_patch, still_present
from . import rollout_steps
from .rollout import plan_rollout, serving_view, switch_ready

logger = logging.getLogger("tei_operator.controller")

FIELD_MANAGER = "tei-operator"
AUTOSCALER_FIELD_MANAGER = "tei-operator-autoscaler"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "tei-operator"
# Writes computed from a read that went stale (409 Conflict) are recomputed from a fresh read this many times.
MAX_WRITE_ATTEMPTS = 5
# A status left for the Deployment controller's update (Reconciler._unobserved_deployment) is refreshed after this
# many seconds should no such update come.
UNOBSERVED_REFRESH_SECONDS = 5.0
# How long a reconcile waits for the /info of a pod that just turned Ready (a local HTTP round trip), so that
# status.model is written with Ready rather than right after it. A slower pod's answer comes in its own write.
INFO_WAIT_SECONDS = 0.5

StatusBuilder = Callable[[Mapping[str, Any]], dict[str, Any]]


@dataclasses.dataclass(frozen=True, order=True)
class OwnerKey:
    """Which service: kind, namespace, name."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclasses.dataclass
class Outcome:
    """What one reconcile did (for logs and tests)."""

    key: OwnerKey
    found: bool = True
    invalid_spec: str | None = None
    unsupported_model: str | None = None
    changes: list[Change] = dataclasses.field(default_factory=list)
    status_patch: dict[str, Any] = dataclasses.field(default_factory=dict)
    # This reconcile sent the Deployment a new spec (created or changed it).
    deployment_sent: bool = False


def owner_types() -> dict[str, k.ResourceType]:
    """The operator's own kinds as client resource types, keyed by kind."""
    return {kind: k.ResourceType(GROUP, VERSION, info.plural, kind) for kind, info in KINDS.items()}


def controller_owner(obj: Mapping[str, Any], kinds: Mapping[str, k.ResourceType]) -> OwnerKey | None:
    """The service that controls a child, from the child's ownerReferences."""
    meta = obj.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        rtype = kinds.get(ref.get("kind", ""))
        if rtype is not None and ref.get("apiVersion") == rtype.api_version and ref.get("controller"):
            return OwnerKey(rtype.kind, meta.get("namespace", ""), ref.get("name", ""))
    return None


def owner_of_pod(pod: Mapping[str, Any], kinds: Mapping[str, k.ResourceType]) -> OwnerKey | None:
    """The service a pod belongs to, from the labels render puts on every pod (service name and component)."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    name, component = labels.get(SERVICE_LABEL), labels.get("app.kubernetes.io/component")
    if not name:
        return None
    for kind, info in KINDS.items():
        if info.component == component and kind in kinds:
            return OwnerKey(kind, meta.get("namespace", ""), name)
    return None


def deployment_of_pod(pod: Mapping[str, Any]) -> str | None:
    """The Deployment a pod belongs to, without an API call: its ReplicaSet is named `<deployment>-<pod-template-hash>`."""
    meta = pod.get("metadata") or {}
    template_hash = (meta.get("labels") or {}).get("pod-template-hash")
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "ReplicaSet" and ref.get("controller"):
            rs_name = ref.get("name", "")
            if template_hash and rs_name.endswith(f"-{template_hash}"):
                return rs_name[: -len(template_hash) - 1]
            return rs_name.rsplit("-", 1)[0] or None
    return None


def _tei_image(deployment: Mapping[str, Any] | None) -> str | None:
    containers = (((deployment or {}).get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
    for container in containers:
        if container.get("name") == "tei":
            return container.get("image")
    return containers[0].get("image") if containers else None


def _ref(manifest: Mapping[str, Any]) -> tuple[str, str]:
    meta = manifest.get("metadata") or {}
    return manifest.get("kind", "?"), meta.get("name", "?")


class Reconciler:
    """Brings one service's children in line with its spec and reports how they are doing."""

    def __init__(self, kube: KubeClient, settings: Settings, recorder: EventRecorder | None = None,
                 cache: Reads | None = None) -> None:
        self.kube = kube
        # Where reads come from: the runner's watch-fed ObjectStore; the API server when none is given.
        self.cache: Reads = cache if cache is not None else LiveReads(kube)
        self.settings = settings
        self.recorder = recorder or EventRecorder(kube)
        self.kinds = owner_types()
        self.field_manager = settings.field_manager
        self.autoscaler_field_manager = settings.autoscaler_field_manager
        # Whose fields in a Deployment's pod template are not hand edits (besides the control plane's).
        self.own_managers = frozenset({self.field_manager, self.autoscaler_field_manager})
        # Managers whose pod template fields stay although we did not set them (TEI_OPERATOR_EXTRA_FIELD_MANAGERS).
        self.trusted_managers = tuple(settings.extra_field_managers)
        for rtype in self.kinds.values():
            kube.register(rtype)
        # Which model commit each Ready pod serves (status.model, ModelMismatch); the runner sets its `notify`.
        self.model_reader = ModelInfoReader(kube, scrape_via=settings.scrape_via,
                                            timeout=float(settings.scrape_timeout_seconds))
        # The token rate behind status.cost (sampled only for services whose GPU type has a price).
        self.token_meter = TokenRateMeter(kube, scrape_via=settings.scrape_via,
                                          timeout=float(settings.scrape_timeout_seconds),
                                          interval=float(settings.cost_sample_seconds))
        # The reconcile that deletes a drained Deployment (blue/green model changes); the runner sets its `notify`.
        self.rollout_timers = rollout_steps.RequeueTimers()
        self._locks: dict[OwnerKey, asyncio.Lock] = {}
        # Refresh a service's status after a delay (the runner sets it: a status-only request of the queue). Without
        # it, a status that would only say "the Deployment controller has not seen the new spec yet" is written.
        self.refresh_later: Callable[[OwnerKey, float], None] | None = None
        self._unobserved_since: dict[OwnerKey, float] = {}  # monotonic time a status was first left (see above)
        # Children this process has seen, by owner uid: a missing one was deleted by someone (-> "Recreated").
        self._seen: set[tuple[str, str, str]] = set()
        # Whether a child needs an apply, remembered per object version (a full pass at rest re-checks the same).
        self.apply_reasons = ApplyReasons()

    def lock(self, key: OwnerKey) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def reconcile(self, key: OwnerKey, *, apply: bool = True) -> Outcome:
        """Reconcile one service. `apply=False` only refreshes its status (a pod changed, nothing to apply)."""
        async with self.lock(key):
            try:
                outcome = await self._reconcile(key, apply=apply)
            except k.KubeApiError as exc:
                if not exc.namespace_terminating:
                    failure = classify(exc)
                    if failure.permanent:
                        await self._report_rejected(key, failure.message)
                    raise
                # The namespace is being deleted: the service and its children go with it.
                logger.debug("Skipped %s: its namespace is being deleted", key)
                outcome = Outcome(key, found=False)
        if not outcome.found:
            # The service is gone: forget its lock (a late trigger just finds it gone again) and its token rate.
            self._locks.pop(key, None)
            self._unobserved_since.pop(key, None)
            self.token_meter.forget(key)
        return outcome

    async def _report_rejected(self, key: OwnerKey, message: str) -> None:
        """The API server refused a child for good (400/422): say so in the conditions (Degraded and Stalled,
        reason ApplyRejected, with its answer) and, through them, in a Warning Event. The queue does not retry it;
        the next spec change, or the periodic resync, tries again."""
        owner = await self.cache.get(self.kinds[key.kind], key.name, key.namespace)
        if owner is None:
            return
        owner.setdefault("apiVersion", self.kinds[key.kind].api_version)
        owner.setdefault("kind", key.kind)
        generation = int((owner.get("metadata") or {}).get("generation") or 0)
        current = owner.get("status") or {}
        raw_min = (owner.get("spec") or {}).get("minAvailable")
        min_available = raw_min if isinstance(raw_min, int) and not isinstance(raw_min, bool) else 1
        try:
            live = await self.cache.get(k.DEPLOYMENT, active_deployment(key.name, current), key.namespace)
            await self.write_status(owner, Outcome(key), lambda latest: st.build_status(
                generation=generation, deployment=live, pods=[], current=latest, now=st.now_rfc3339(),
                rejected=message, min_available=min_available), keep_counts=True)
        except k.KubeApiError as exc:  # the failure itself is logged by the queue
            logger.warning("Failed to report the refusal in the status of %s: %s", key, classify(exc).message)

    async def _reconcile(self, key: OwnerKey, *, apply: bool) -> Outcome:
        owner_type = self.kinds[key.kind]
        owner = await self.cache.get(owner_type, key.name, key.namespace)
        if owner is None or (owner.get("metadata") or {}).get("deletionTimestamp"):
            # Gone or going: the garbage collector removes the children; nothing to do.
            return Outcome(key, found=False)
        owner.setdefault("apiVersion", owner_type.api_version)
        owner.setdefault("kind", owner_type.kind)
        meta = owner.get("metadata") or {}
        generation = int(meta.get("generation") or 0)
        current = owner.get("status") or {}
        outcome = Outcome(key)
        if not apply and current.get("observedGeneration") != generation:
            # A status refresh must not record a generation whose spec was never applied: kstatus would take the
            # service as reconciled (observedGeneration caught up, nothing Reconciling) before anything changed.
            apply = True

        try:
            resource = ServiceResource.from_body(owner)
            children = render_children(resource, self.settings)
        except ValueError as exc:  # InvalidSpecError is a ValueError naming the field
            outcome.invalid_spec = message = str(exc)
            # The last good spec's pods may still serve: Available says so.
            live = await self.cache.get(k.DEPLOYMENT, active_deployment(key.name, current), key.namespace)
            raw_min = (owner.get("spec") or {}).get("minAvailable")
            min_available = raw_min if isinstance(raw_min, int) and not isinstance(raw_min, bool) else 1
            await self.write_status(owner, outcome, lambda latest: st.build_status(
                generation=generation, deployment=live, pods=[], current=latest, now=st.now_rfc3339(),
                invalid_spec=message, min_available=min_available), keep_counts=True)
            return outcome

        refusal = refusal_message(resource.spec.model.id, meta.get("annotations"))
        if refusal is not None:
            # Known not to run on TEI: rolling it out would only crash-loop on GPUs. Nothing is applied (children
            # of an earlier, supported model keep serving it), as for an invalid spec.
            outcome.unsupported_model = refusal
            # The earlier model's pods may still serve: Available says so.
            live = await self.cache.get(k.DEPLOYMENT, active_deployment(key.name, current), key.namespace)
            await self.write_status(owner, outcome, lambda latest: st.build_status(
                generation=generation, deployment=live, pods=[], current=latest, now=st.now_rfc3339(),
                unsupported_model=refusal, min_available=resource.spec.min_available), keep_counts=True)
            return outcome

        # Blue/green model changes (controller/rollout.py): which Deployment the spec renders to, which one the
        # Service selects, and which ones go.
        deployments, live_service = await rollout_steps.observe(
            self.cache, owner, key.name, key.namespace, {MANAGED_BY_LABEL: MANAGED_BY_VALUE, SERVICE_LABEL: key.name})
        now = datetime.datetime.now(datetime.timezone.utc)
        plan = plan_rollout(service_name=key.name, mode=resource.spec.rollout.model_change,
                            identity=model_identity(resource.spec), drain_seconds=resource.spec.rollout.drain_seconds,
                            deployments=deployments, service=live_service, now=now)
        by_name = {d["metadata"]["name"]: d for d in deployments}
        children = retarget(children, key.name, deployment=plan.target, active=plan.active, identity=plan.identity)
        deployment_manifest = children.deployment
        serving, waiting = plan.active, ""
        apply = apply or plan.switching or bool(plan.delete)
        # spec.cache.managed: the claim and download Job; the Deployment the spec renders to (the serving one, or a
        # blue/green candidate) waits (`hold`) until the cache is filled.
        cache = await sync_model_cache(self, owner, resource, outcome, apply=apply)
        if apply:
            drift = current.get("observedGeneration") == generation
            deployment: dict | None
            if cache.hold:
                deployment = await self.cache.get(k.DEPLOYMENT, deployment_manifest["metadata"]["name"], key.namespace)
            else:
                deployment = await self._apply_child(owner, resource, deployment_manifest, outcome, drift=drift)
            if plan.unretire:
                await rollout_steps.set_retired(self.kube, plan.target, key.namespace, None, self.field_manager)
            if plan.switching:
                autoscaled = self._autoscaled(resource)
                if autoscaled and deployment is not None and not cache.hold:
                    deployment = await rollout_steps.match_replicas(self.kube, deployment, plan.candidate_replicas,
                                                                    self.autoscaler_field_manager)
                ready, waiting = switch_ready(deployment, plan.candidate_replicas if autoscaled else None)
                if ready:
                    serving = plan.target
                    children = retarget(children, key.name, deployment=plan.target, active=serving,
                                        identity=plan.identity)
                    if plan.active in by_name:
                        # Marked before the Service moves: a restart in between never takes it for an abandoned
                        # candidate (deleted at once); its drain starts a moment early instead.
                        await rollout_steps.set_retired(self.kube, plan.active, key.namespace, now, self.field_manager)
            for manifest in children.all()[1:]:
                # A switch moves the Service's and PDB's selectors: our change, not a hand edit undone.
                await self._apply_child(owner, resource, manifest, outcome, drift=drift and serving == plan.active)
            if serving != plan.active:
                outcome.changes.append(await rollout_steps.switched(self.recorder, owner, plan))
            outcome.changes += await rollout_steps.delete(self.kube, self.recorder, owner, key.namespace,
                                                          plan.delete, by_name)
            await self._prune(owner, children.all(), outcome)
        else:
            deployment = await self.cache.get(k.DEPLOYMENT, deployment_manifest["metadata"]["name"], key.namespace)
        requeue = plan.requeue_after(now)
        if serving != plan.active:
            requeue = min(requeue or float("inf"), float(resource.spec.rollout.drain_seconds))
        self.rollout_timers.schedule(key, requeue)

        serving_labels = serving_selector(key.name, selector_labels(resource), serving)
        selector = rollout_selector_string(serving_labels)
        all_pods = await self.cache.list(k.POD, key.namespace,
                                         labels={k_: v for k_, v in serving_labels.items() if k_ != INSTANCE_LABEL})
        view = serving_view(plan, mode=resource.spec.rollout.model_change, serving=serving, deployment=deployment,
                            deployments=by_name, pods=all_pods, waiting=waiting,
                            min_available=resource.spec.min_available, generation=generation)
        pods, served_identity = view.serving_pods, view.served_identity
        applied = deployment if cache.hold else deployment_manifest  # held: the live Deployment is what runs
        endpoint, image = endpoint_url(resource), _tei_image(applied) or _tei_image(deployment)
        template_hash = ((((applied or {}).get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
            "annotations", {}).get(CONFIG_HASH_ANNOTATION)
        protected = resource.spec.engine.api_key_secret_ref is not None  # TEI guards /info with the key
        reports = self.model_reader.report(key, key.namespace, pods, read=not protected)
        if await self.model_reader.settle(pods, INFO_WAIT_SECONDS):
            # A pod turned Ready: its /info (status.model) goes into the same status write as Ready, not a second.
            reports = self.model_reader.report(key, key.namespace, pods, read=not protected)
        served_model = served_model_report(
            model_id=served_identity.get("id", resource.spec.model.id), revision=served_identity.get("revision"),
            generation=generation, pods=reports, protected=protected)
        cost = self._cost(key, resource, view.serving_deployment, pods)
        if self._unobserved_deployment(outcome, deployment, plan.switching or cache.hold):
            return outcome
        await self.write_status(owner, outcome, lambda latest: st.build_status(
            generation=generation, deployment=deployment, pods=view.target_pods, current=latest,
            now=st.now_rfc3339(), selector=selector, endpoint=endpoint, image=image, template_hash=template_hash,
            min_available=resource.spec.min_available, served_model=served_model, cost=cost, rollout=view.status,
            adjust=view.adjust, counts_from=view.serving_deployment, cache=cache))
        return outcome

    def _unobserved_deployment(self, outcome: Outcome, deployment: Mapping[str, Any] | None, special: bool) -> bool:
        """Whether to leave the status for later: this reconcile has just sent the Deployment a new spec, which the
        Deployment controller has not observed yet. Its status says nothing about the new spec; the controller's
        update follows within moments, and its watch event refreshes the service's status (as it would anyway):
        the one status write then says what the controller made of it, instead of two writes (one saying "not
        observed yet"), a write and a watch event less per created or changed service, and Ready no later.
        Reconciles meanwhile (the watch event of our own apply) leave it too, for `UNOBSERVED_REFRESH_SECONDS`
        at most: the refresh then due writes whatever the Deployment says."""
        key = outcome.key
        if special or self.refresh_later is None or deployment is None:
            self._unobserved_since.pop(key, None)
            return False
        meta, status = deployment.get("metadata") or {}, deployment.get("status") or {}
        if int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0):
            self._unobserved_since.pop(key, None)
            return False
        now, since = time.monotonic(), self._unobserved_since.get(key)
        if since is None and outcome.deployment_sent:
            self._unobserved_since[key] = now
            self.refresh_later(key, UNOBSERVED_REFRESH_SECONDS)
            return True
        if since is not None and now - since < UNOBSERVED_REFRESH_SECONDS:
            return True
        self._unobserved_since.pop(key, None)
        return False

    def _cost(self, key: OwnerKey, resource: Any, deployment: Mapping[str, Any] | None,
              pods: list[dict]) -> dict[str, Any] | None:
        """status.cost: the GPU price (settings) x the GPUs held, and the Ready pods' measured token rate."""
        gpu = resource.spec.gpu
        if gpu.count <= 0 or (gpu.type or "default") not in self.settings.gpu_prices:
            self.token_meter.forget(key)
            return None
        replicas = int(((deployment or {}).get("status") or {}).get("replicas") or 0)
        return cost_status(gpu_type=gpu.type, gpus_per_replica=gpu.count, replicas=replicas,
                           prices=self.settings.gpu_prices,
                           tokens_per_second=self.token_meter.tokens_per_second(key, key.namespace, pods))

    # -- children -----------------------------------------------------------------------------------------------
    async def _apply_child(self, owner: Mapping[str, Any], resource: Any, manifest: dict, outcome: Outcome, *,
                           drift: bool) -> dict:
        rtype = self.kube.resource_type(manifest["apiVersion"], manifest["kind"])
        kind, name = _ref(manifest)
        namespace = manifest["metadata"].get("namespace") or outcome.key.namespace
        seen_key = ((owner.get("metadata") or {}).get("uid", ""), kind, name)
        manifest = with_applied_hash(manifest)
        before = await self.cache.get(rtype, name, namespace)
        if rtype == k.DEPLOYMENT and self._autoscaled(resource):
            before = await self._hand_replicas_to_autoscaler(resource, manifest, before)
        reason = self.apply_reasons.reason(manifest, before)
        if reason is None:  # the cached object already is what an apply would make of it: send nothing
            applied = before
        else:
            logger.debug("Applying %s %s/%s: %s", kind, namespace, name, reason)
            applied = await self.kube.apply(manifest, self.field_manager, force=True)
            self.cache.put(applied)
            outcome.deployment_sent = outcome.deployment_sent or rtype == k.DEPLOYMENT
        change = describe_apply(kind, name, before, manifest, applied, seen_before=seen_key in self._seen,
                                drift=drift) if reason is not None else None
        after, removed = applied, list[ForeignField]()
        if rtype == k.DEPLOYMENT:
            after, removed = await self._remove_foreign_fields(applied)
        self._seen.add(seen_key)
        for each in describe_removal(kind, name, removed, change):
            outcome.changes.append(each)
            await self.recorder.change(owner, each)
        return after

    async def _remove_foreign_fields(self, deployment: dict) -> tuple[dict, list[ForeignField]]:
        """Take out of the pod template what only other field managers set (hand edits the apply cannot undo).

        Returns the Deployment afterwards and what was removed. The patch is pinned to the resourceVersion it was
        computed from; when someone wrote in between (409), it is recomputed from a fresh read."""
        meta = deployment.get("metadata") or {}
        name, namespace = meta.get("name", ""), meta.get("namespace", "")

        async def remove(current: dict) -> tuple[dict, list[ForeignField]]:
            fields = foreign_template_fields(current, self.own_managers, self.trusted_managers)
            if not fields:
                return current, []
            rv = str((current.get("metadata") or {}).get("resourceVersion", ""))
            patched = await self.kube.patch(k.DEPLOYMENT, name, namespace, removal_patch(rv, fields),
                                            content_type=k.JSON_PATCH, field_manager=self.field_manager)
            self.cache.put(patched)
            # A field defaulted back to the same value was not really removed (and stays the other
            # manager's): leave it out of the event, so it is not reported again on every reconcile.
            return patched, [f for f in fields if not still_present(patched, f)]

        return await retry_on_conflict(remove, deployment,
                                       lambda: self.kube.get_or_none(k.DEPLOYMENT, name, namespace),
                                       attempts=MAX_WRITE_ATTEMPTS, gone=(deployment, []),
                                       what=f"Deployment {namespace}/{name}")

    @staticmethod
    def _autoscaled(resource: Any) -> bool:
        autoscaling = getattr(resource.spec, "autoscaling", None)
        return bool(autoscaling is not None and autoscaling.enabled)

    async def _hand_replicas_to_autoscaler(self, resource: Any, manifest: dict, live: dict | None) -> dict | None:
        """Make the autoscaler's field manager own spec.replicas before we apply a Deployment without it.

        Dropping a field from our apply while we still own it would reset it to the default (1 replica) and
        undo the autoscaler. So: a new Deployment is created with minReplicas and the field is then handed over;
        an existing one keeps its current count, handed over the same way. Returns the object to compare the
        following apply with (for the event)."""
        name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        if live is not None and k.owns_field(live, self.autoscaler_field_manager, "spec", "replicas"):
            return live
        min_replicas = int(resource.spec.autoscaling.min_replicas)
        if live is None:
            first = copy.deepcopy(manifest)
            first.setdefault("spec", {})["replicas"] = min_replicas
            created = await self.kube.apply(first, self.field_manager, force=True)
            self.cache.put(await self.kube.set_replicas(k.DEPLOYMENT, name, namespace, min_replicas,
                                                        field_manager=self.autoscaler_field_manager))
            logger.info("Handed replicas of new Deployment %s/%s (%d) to the autoscaler", namespace, name,
                        min_replicas)
            # Report the creation as such: compare the next apply with "nothing existed".
            del created
            return None
        replicas = (live.get("spec") or {}).get("replicas")
        replicas = min_replicas if replicas is None else int(replicas)
        handed = await self.kube.set_replicas(k.DEPLOYMENT, name, namespace, replicas,
                                              field_manager=self.autoscaler_field_manager)
        self.cache.put(handed)
        logger.info("Handed replicas of Deployment %s/%s (%d) to the autoscaler", namespace, name, replicas)
        return handed

    async def _prune(self, owner: Mapping[str, Any], wanted: list[dict], outcome: Outcome) -> None:
        """Delete children of a kind the spec no longer asks for (e.g. the PDB after scaling down to 1): the
        objects this service controls of each child kind (cache.CHILD_TYPES) of which `wanted` has none."""
        uid = (owner.get("metadata") or {}).get("uid")
        kinds = {m.get("kind") for m in wanted}
        for rtype in CHILD_TYPES:
            if rtype.kind not in kinds:
                await self._prune_kind(owner, uid, rtype, outcome)

    async def _prune_kind(self, owner: Mapping[str, Any], uid: str | None, rtype: k.ResourceType,
                          outcome: Outcome) -> None:
        for obj in await self.cache.list(rtype, outcome.key.namespace,
                                         labels={MANAGED_BY_LABEL: MANAGED_BY_VALUE}):
            refs = (obj.get("metadata") or {}).get("ownerReferences") or []
            if not any(r.get("uid") == uid and r.get("controller") for r in refs):
                continue
            name = obj["metadata"]["name"]
            deleted = await self.kube.delete(rtype, name, outcome.key.namespace, uid=obj["metadata"].get("uid"))
            self.cache.delete(obj)
            if deleted:
                change = Change("Deleted", f"Deleted {rtype.kind} {name}, which the spec no longer needs")
                outcome.changes.append(change)
                await self.recorder.change(owner, change)
            self._seen.discard((uid or "", rtype.kind, name))

    # -- status -------------------------------------------------------------------------------------------------
    async def write_status(self, owner: Mapping[str, Any], outcome: Outcome, build: StatusBuilder, *,
                            keep_counts: bool = False) -> None:
        """Write the status keys we own that differ, read-modify-write.

        `build` turns the stored status into the desired one (it merges our conditions into the stored list, keeping
        other writers' conditions). The merge patch carries the resourceVersion the status was read at; on 409 the
        service is read again and the status rebuilt from what is stored now, so a condition the autoscaler wrote
        in between survives."""
        rtype = self.kinds[owner["kind"]]

        async def write(owner: Mapping[str, Any]) -> None:
            current = owner.get("status") or {}
            desired = build(current)
            if keep_counts:  # invalid spec: nothing observed, leave what the last good reconcile wrote
                desired = {key: v for key, v in desired.items()
                           if key in ("observedGeneration", "conditions", "summary")}
            patch = st.changed_status(current, desired)
            if not patch:
                return
            meta = owner.get("metadata") or {}
            logger.debug("Writing the status of %s %s/%s: %s", owner["kind"], meta.get("namespace"), meta.get("name"),
                         str(patch)[:400])
            written = await self.kube.patch_status(rtype, meta["name"], meta["namespace"], patch,
                                                   field_manager=self.field_manager,
                                                   resource_version=meta.get("resourceVersion"))
            self.cache.put(written)
            outcome.status_patch = patch
            if "conditions" in patch:
                await self._condition_events(owner, current.get("conditions"), patch["conditions"])

        async def reread() -> dict | None:
            meta = owner.get("metadata") or {}
            fresh = await self.kube.get_or_none(rtype, meta["name"], meta["namespace"])
            if fresh is None or (fresh.get("metadata") or {}).get("deletionTimestamp"):
                return None
            fresh.setdefault("apiVersion", owner.get("apiVersion"))
            fresh.setdefault("kind", owner["kind"])
            return fresh

        meta = owner.get("metadata") or {}
        await retry_on_conflict(write, owner, reread, attempts=MAX_WRITE_ATTEMPTS,
                                what=f"{owner['kind']} {meta.get('namespace')}/{meta.get('name')} (status)")

    async def _condition_events(self, owner: Mapping[str, Any], before: Any, after: list[dict]) -> None:
        """An Event when the service turns Ready, Degraded or Stalled (or stops being so), not on every status
        write. A service that turns Degraded and Stalled for one reason gets one Warning, not two."""
        kind, name = owner.get("kind"), (owner.get("metadata") or {}).get("name")
        flipped = st.transitions(before, after)
        degraded_now = {c["reason"] for c in flipped if c["type"] == st.DEGRADED and c["status"] == "True"}
        for cond in flipped:
            if cond["type"] == st.STALLED and cond["status"] == "True" and cond["reason"] not in degraded_now:
                await self.recorder.record(owner, cond["reason"], f"{kind} {name} stalled: {cond['message']}",
                                           "Warning")
            elif cond["type"] == st.DEGRADED and cond["status"] == "True":
                await self.recorder.record(owner, cond["reason"], f"{kind} {name} is degraded: {cond['message']}",
                                           "Warning")
            elif cond["type"] == st.DEGRADED and (condition_of({"conditions": before}, st.DEGRADED) or {}).get(
                    "status") == "True":
                await self.recorder.record(owner, "Recovered", f"{kind} {name} recovered: no problem found")
            elif cond["type"] == st.MODEL_MISMATCH and cond["status"] == "True":
                await self.recorder.record(owner, st.MODEL_MISMATCH,
                                           f"{kind} {name} serves mixed models: {cond['message']}", "Warning")
            elif cond["type"] == st.READY and cond["status"] == "True":
                await self.recorder.record(owner, "Ready", f"{kind} {name} became Ready: {cond['message']}")
            elif cond["type"] == st.AVAILABLE and cond["status"] == "False" and (condition_of(
                    {"conditions": before}, st.AVAILABLE) or {}).get("status") == "True":
                # It served and no longer does: the moment on-call needs (a scale-up never causes it).
                await self.recorder.record(owner, "Unavailable", f"{kind} {name} stopped serving: {cond['message']}",
                                           "Warning")
