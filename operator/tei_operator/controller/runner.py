"""Starting the operator: kopf configured for this project, the reconciler, the queue and the periodic resync,
behind leader election.

`run(settings)` is what `tei-operator run` calls. It blocks until SIGINT/SIGTERM.

With leader election on (the default), a replica serves its health and metrics endpoints at once, then waits for
the Lease (leader.py). Only while it leads does it run kopf (the controller: handlers, queue, resync) and the
autoscaler, and its KubeClient refuses writes the moment the Lease is no longer its own. When it loses the Lease it
stops them and stands by again; on SIGTERM it stops them and releases the Lease, so a standby takes over at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from ..render.stamp import operator_version
from ..autoscaling.loop import start_autoscaler
from ..kube import NODE, POD, KubeApiError, KubeClient, ResourceType
from ..metrics import METRICS
from ..kube_credentials import CredentialsError
from ..process_memory import (fix_mmap_threshold, limit_malloc_arenas, release_free_memory_forever,
                              trace_allocations_on_request)
from ..settings import Settings
from .access import may_watch_nodes, readable_namespaces
from .endpoints import EndpointError, Endpoints
from .errors import classify
from .handlers import ControllerMemo, register
from .heap import HeapFreezer
from .kopf_login import connection_info
from .leader import LeaderElector, LeaseConfig, lease_client
from .logs import configure_logging
from .cache import WATCHED_CHILD_TYPES, ObjectStore
from .queue import ReconcileQueue
from .reconcile import OwnerKey, Outcome, Reconciler, controller_owner, owner_of_pod, owner_types

logger = logging.getLogger("tei_operator.controller")

ANNOTATION_PREFIX = "tei-operator.io"
RECONCILE_WORKERS = 8  # reconciles running at once (each mostly waits on the API server)


def watched_namespaces(settings: Settings) -> list[str]:
    """The namespaces to watch; empty means the whole cluster."""
    return [ns for ns in settings.namespaces if ns]


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's "last handled" state, kept nowhere. Every handler is an event handler (handlers.py), which needs no
    diff; kopf would still deep-copy every watched object (each pod, Deployment and service event) to build one,
    and read it back from an annotation, only to compare it with nothing."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:  # noqa: ARG002 - kopf's signature
        return None

    def fetch(self, *, body: kopf.Body) -> None:  # noqa: ARG002
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:  # noqa: ARG002
        return None


def kopf_settings() -> kopf.OperatorSettings:
    """kopf configured for this project: no bookkeeping on the objects (event handlers only: no diff base, no
    progress, no finalizer), its per-handler Events only for warnings, no kopf peering (one writer is ensured by our
    own Lease, leader.py)."""
    ks = kopf.OperatorSettings()
    # Unused with event handlers only; under our prefix should a handler that needs them ever be added.
    ks.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    ks.persistence.diffbase_storage = NoDiffBase()
    ks.persistence.finalizer = f"{ANNOTATION_PREFIX}/finalizer"  # never added: no handler requires one
    ks.posting.level = logging.WARNING
    ks.peering.standalone = True
    ks.peering.mandatory = False
    ks.watching.server_timeout = 300
    ks.watching.client_timeout = 330
    ks.watching.connect_timeout = 10
    ks.networking.request_timeout = 60
    ks.batching.worker_limit = 32
    # kopf's per-object worker keeps the last event it processed (a whole object) until it exits; the default 5 s
    # held ~55 MiB of events at the peak of creating 1,000 services (tracemalloc at 300), memory the process kept.
    ks.batching.idle_timeout = 0.5
    # kopf's initial LIST of each watched kind in pages (by default in one piece): a fleet's pods parsed at once
    # were a peak of hundreds of MiB that the process never gave back (the store keeps slim copies interleaved).
    ks.watching.chunk_size = LIST_PAGE
    return ks


# How often the store is checked against a fresh LIST of every watched kind (see cache.py: kopf does not report
# objects deleted while a watch was being re-established). Rare: at 20 services per namespace this is 0.002 reads
# per service and minute.
AUDIT_SECONDS = 3600.0
LIST_PAGE = 100  # objects per page of a LIST (kopf's and the store's): a page of pods parses to ~8 MiB, held while kopf dispatches it
# A service whose namespace did not change is still reconciled by a resync once every this many resync periods, and
# at least every FULL_RESYNC_SECONDS (see Reconciled).
FULL_RESYNC_PERIODS = 10
FULL_RESYNC_SECONDS = 600.0


def key_phase(key: OwnerKey) -> float:
    """A service's fixed place in the full-resync period, a fraction in [0, 1) (CRC-32 of its key: the same in
    every process and run, spread evenly over many services)."""
    return zlib.crc32(f"{key.kind}/{key.namespace}/{key.name}".encode()) / 2**32


def service_keys(store: ObjectStore, kinds: Mapping[str, ResourceType]) -> list[OwnerKey]:
    """Every service the store holds."""
    return [OwnerKey(kind, (obj.get("metadata") or {}).get("namespace", ""), (obj.get("metadata") or {}).get("name", ""))
            for kind, rtype in kinds.items() for obj in store.list_now(rtype)]


class Reconciled:
    """What each service's last successful reconcile saw: the store's version of its namespace when it started, and
    when (monotonic seconds) the last one the resync did not leave out ran.

    The resync reconciles from the store, so a service none of whose namespace's objects changed since its last
    successful reconcile would get the same answer: the resync leaves it out (at 1,000 idle services, reconciling
    each from an unchanged store every resync was most of the operator's idle CPU), except once every
    `full_seconds`, the safety net for what depends on time rather than on objects. Whatever else makes a reconcile
    due (a watch event, a model read, a token rate, a rollout timer) requests it directly, as before.

    The services' full passes are spread over the period, each at its own phase (`phase(key)`, a fraction in
    [0, 1) stable per service): the services an operator starts with all succeed within moments of each other, and
    their full passes then came together, one wave of every service every `full_seconds` (a burst of CPU and of
    reconciles, at 1,000 services, on top of the idle operator's steady work). A service's full passes stay in its
    slots whatever else reconciles it (`_slot`): many services created or changed together are reconciled by the
    same resyncs, and would otherwise line up again."""

    def __init__(self, store: ObjectStore, *, full_seconds: float, clock: Callable[[], float] = time.monotonic,
                 phase: Callable[[OwnerKey], float] | None = None) -> None:
        self.store = store
        self.full_seconds = full_seconds
        self.clock = clock
        self.phase = phase or key_phase
        self._seen: dict[OwnerKey, int] = {}
        self._full: dict[OwnerKey, float] = {}

    def started(self, key: OwnerKey) -> int:
        return self.store.namespace_version(key.namespace)

    def _slot(self, key: OwnerKey) -> float:
        """The latest of `key`'s full-pass times at or before now: they are `phase(key)` of a period past every
        multiple of the period, so each service keeps its place whatever made its last reconcile run."""
        now, offset = self.clock(), self.phase(key) * self.full_seconds
        return now - (now - offset) % self.full_seconds

    def succeeded(self, key: OwnerKey, version: int, *, apply: bool) -> None:
        if apply:  # a status-only refresh does not say the children are as they should be
            self._seen[key] = version
            # Its first full pass comes at its next slot, within one period.
            self._full.setdefault(key, self._slot(key))

    def failed(self, key: OwnerKey) -> None:
        self._seen.pop(key, None)

    def unchanged(self, key: OwnerKey) -> bool:
        """Whether a resync may leave `key` out now."""
        if self._seen.get(key) != self.store.namespace_version(key.namespace):
            return False
        return self.clock() - self._full.get(key, float("-inf")) < self.full_seconds

    def resynced(self, key: OwnerKey) -> None:
        # Its next full pass at its next slot, not a period after now: services that a change of their namespace
        # had the resync reconcile together (1,000 created at once) must not come back as one wave a period later.
        self._full[key] = self._slot(key)


async def resync_once(store: ObjectStore, queue: ReconcileQueue, kinds: Mapping[str, ResourceType],
                      reconciled: Reconciled | None = None) -> int:
    """Queue a full reconcile of every service in the store (but those `reconciled` says are unchanged) and wait
    until each has run once. Sends nothing by itself: a service whose children and status are as they should be
    costs no API request. Returns the number of services reconciled."""
    keys = service_keys(store, kinds)
    if reconciled is not None:
        skipped = {key for key in keys if reconciled.unchanged(key)}
        METRICS.resync_skipped(len(skipped))
        keys = [key for key in keys if key not in skipped]
        for key in keys:
            reconciled.resynced(key)
    results = await asyncio.gather(*(queue.request_and_wait(key, apply=True) for key in keys),
                                   return_exceptions=True)
    for result in results:
        if isinstance(result, asyncio.CancelledError):
            raise result
    return len(keys)


async def resync_forever(store: ObjectStore, queue: ReconcileQueue, kinds: Mapping[str, ResourceType],
                         interval: float, reconciled: Reconciled | None = None,
                         heap: HeapFreezer | None = None) -> None:
    """The periodic safety net: every `interval` seconds, a reconcile of every service (from the store: no LIST).

    Drift is normally caught at once by the child watches; this covers what a watch can miss (an edit of a field
    that emits no event we watch). `tei_operator_resyncs_total` counts the completed rounds. After each round,
    `heap` refreshes its frozen objects when due (heap.py)."""
    while True:
        await asyncio.sleep(interval)
        try:
            count = await resync_once(store, queue, kinds, reconciled)
            METRICS.resynced()
            logger.debug("Resynced %d services", count)
            if heap is not None:
                heap.maybe_refresh()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed resync is retried at the next interval
            logger.warning("Failed the periodic resync: %s", classify(exc).message)


def watched_types(kinds: Mapping[str, ResourceType]) -> list[ResourceType]:
    """Every namespaced kind the store holds: the services, their children, pods."""
    return [*kinds.values(), *WATCHED_CHILD_TYPES, POD]


async def _replace_paged(kube: KubeClient, store: ObjectStore, rtype: ResourceType, namespace: str | None
                         ) -> list[dict]:
    """`store.replace` from a LIST read page by page, each page slimmed into the store before the next is read
    (`KubeClient.list` holds every page at once: at 1,000 services, a peak the process never gave back)."""
    replacement = store.replacement(rtype, namespace)
    token: str | None = None
    while True:
        result = await kube.request("GET", rtype.path(namespace), query={"limit": LIST_PAGE, "continue": token})
        replacement.add(result.get("items") or [])
        token = (result.get("metadata") or {}).get("continue")
        if not token:
            return replacement.finish()


async def refresh_store(kube: KubeClient, store: ObjectStore, types: list[ResourceType], namespaces: list[str],
                        *, nodes: bool) -> list[dict]:
    """LIST every watched kind (per namespace; nodes once) into the store, dropping what is gone. Returns what
    changed. A kind that cannot be listed is logged and left as it is."""
    changed: list[dict] = []
    jobs = [(rtype, ns) for rtype in types for ns in namespaces or [None]] + ([(NODE, None)] if nodes else [])
    for rtype, namespace in jobs:
        try:
            changed.extend(await _replace_paged(kube, store, rtype, namespace))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the watches and the next audit fill it in
            logger.warning("Failed to list %s into the cache: %s", rtype.plural, classify(exc).message)
    return changed


async def audit_forever(kube: KubeClient, store: ObjectStore, queue: ReconcileQueue,
                        kinds: Mapping[str, ResourceType], namespaces: list[str], interval: float, *,
                        nodes: bool) -> None:
    """Every `interval` seconds, LIST each watched kind and replace the store's copy (drops objects whose deletion
    no watch reported); the services whose objects differed are queued."""
    while True:
        await asyncio.sleep(interval)
        for obj in await refresh_store(kube, store, watched_types(kinds), namespaces, nodes=nodes):
            meta = obj.get("metadata") or {}
            owner = (OwnerKey(str(obj.get("kind")), meta.get("namespace", ""), meta.get("name", ""))
                     if obj.get("kind") in kinds else controller_owner(obj, kinds) or owner_of_pod(obj, kinds))
            if owner is not None:
                queue.request(owner, apply=True)


class MeasuredReconciler(Reconciler):
    """The Reconciler, counted: every reconcile by kind and result, and its duration (metrics.py)."""

    async def reconcile(self, key: OwnerKey, *, apply: bool = True) -> Outcome:
        started = time.monotonic()
        try:
            outcome = await super().reconcile(key, apply=apply)
        except asyncio.CancelledError:
            raise
        except Exception:
            METRICS.reconciled(key.kind, "error", time.monotonic() - started)
            raise
        refused = outcome.invalid_spec or outcome.unsupported_model  # the spec is refused: Degraded says why
        result = "not_found" if not outcome.found else "invalid_spec" if refused else "success"
        METRICS.reconciled(key.kind, result, time.monotonic() - started)
        return outcome


async def run_controller(kube: KubeClient, settings: Settings, *, stop: asyncio.Event,
                         ready: asyncio.Event | None = None) -> None:
    """Run kopf (handlers, queue, resync) and the autoscaler until `stop` is set or a signal stops kopf."""
    store = ObjectStore()  # fed by kopf's watches (handlers.py); what reconciles and the autoscaler read
    reconciler = MeasuredReconciler(kube, settings, cache=store)
    # Namespaces without a Role are left out (and logged): one of them would stop kopf for all of them.
    namespaces = await readable_namespaces(kube, watched_namespaces(settings))

    interval = float(settings.resync_seconds)
    reconciled = Reconciled(store, full_seconds=max(FULL_RESYNC_PERIODS * interval, FULL_RESYNC_SECONDS))

    async def work(key: OwnerKey, apply: bool) -> None:
        version = reconciled.started(key)
        try:
            await reconciler.reconcile(key, apply=apply)
        except BaseException:
            reconciled.failed(key)
            raise
        reconciled.succeeded(key, version, apply=apply)

    queue: ReconcileQueue[OwnerKey] = ReconcileQueue(work, workers=RECONCILE_WORKERS)
    # A pod's /info read in the background finished: refresh that service's status (status.model).
    reconciler.model_reader.notify = lambda key: queue.request(key, apply=False)
    reconciler.token_meter.notify = lambda key: queue.request(key, apply=False)  # a token-rate round is done or due
    reconciler.rollout_timers.notify = lambda key: queue.request(key, apply=True)  # a drained Deployment is due
    reconciler.refresh_later = lambda key, delay: asyncio.get_running_loop().call_later(  # outside the running key
        delay, functools.partial(queue.request, key, apply=False))
    memo = ControllerMemo(reconciler=reconciler, queue=queue, store=store)
    registry = kopf.OperatorRegistry()
    nodes = await may_watch_nodes(kube)
    register(registry, owner_types(), nodes=nodes)

    logins = 0

    @kopf.on.login(id="login", registry=registry)
    async def _login(**_: Any) -> kopf.ConnectionInfo:
        # The same credentials as KubeClient (kube_credentials.py: kubeconfig, exec plugin or in-cluster service
        # account); no Kubernetes client library is installed for kopf to log in with (kubernetes_asyncio alone was
        # ~38 MiB of the operator's memory). kopf logs in again when its credentials expire or are refused (401):
        # the second and later calls fetch fresh ones (a re-read token file, a new run of the exec plugin).
        nonlocal logins
        logins += 1
        if logins > 1:
            kube.credentials.invalidate()
        return connection_info(await kube.credentials.get())

    tasks: list[asyncio.Task] = []
    heap = HeapFreezer()

    @kopf.on.startup(id="start-resync", registry=registry)
    async def _start(**_: Any) -> None:
        # One LIST per kind before anything reads the store (the watches then keep it current): the autoscaler's
        # first tick must not take a store still filling for an empty cluster.
        await refresh_store(kube, store, watched_types(reconciler.kinds), namespaces, nodes=nodes)
        store.nodes_watched = nodes
        heap.install()  # the store is filled: keep it out of the collector's full collections (heap.py)
        tasks.append(asyncio.create_task(resync_forever(store, queue, reconciler.kinds, interval, reconciled,
                                                        heap), name="resync"))
        tasks.append(asyncio.create_task(audit_forever(kube, store, queue, reconciler.kinds, namespaces,
                                                       AUDIT_SECONDS, nodes=nodes), name="cache-audit"))
        # One loop for every autoscaled service; it reads services, pods and nodes from the store and queues a
        # service after writing its replicas or status.
        tasks.append(start_autoscaler(reconciler.kube, settings, cache=store,
                                      notify=lambda key: queue.request(OwnerKey(*key), apply=False)))
        METRICS.autoscaler_started()
        METRICS.watch_queue(lambda: queue.waiting)
        logger.info("Started tei-operator watching %s (resync every %.0f s)",
                    ", ".join(namespaces) if namespaces else "all namespaces", interval)

    @kopf.on.cleanup(id="stop-resync", registry=registry)
    async def _stop(**_: Any) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await queue.close()
        # The background /info reads and token-rate rounds write status through reconciles: they end with the
        # leadership term, like the queue (a new term's Reconciler starts its own).
        await reconciler.model_reader.close()
        await reconciler.token_meter.close()
        reconciler.rollout_timers.close()
        heap.release()
        METRICS.autoscaler_stopped()
        METRICS.watch_queue(None)
        # Stopped by a signal, kopf would wait 5 s at exit for its own task waiting on `stop`: end that wait.
        stop.set()
        logger.info("Stopped tei-operator")

    await kopf.operator(
        registry=registry,
        settings=kopf_settings(),
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True,
        memo=memo,
        stop_flag=stop,
        ready_flag=ready,
    )


class _Signals:
    """SIGINT/SIGTERM set `stopping` while kopf does not run (kopf installs its own handlers while it runs and
    stops on them; `restore()` takes the signals back after it returned)."""

    def __init__(self, stopping: asyncio.Event) -> None:
        self.stopping = stopping
        self.restore()

    def restore(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._received, sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests)
                return

    def _received(self, sig: signal.Signals) -> None:
        logger.info("Received %s: stopping", sig.name)
        self.stopping.set()


async def _set_when_any(target: asyncio.Event, waiters: list[asyncio.Task]) -> None:
    """Set `target` when the first of `waiters` ends. The waiters are created by the caller before kopf starts:
    kopf waits 5 s at exit for every task created while it ran, and these would not end on a signal."""
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        target.set()
    finally:
        for waiter in waiters:
            waiter.cancel()


async def run_async(settings: Settings, *, stop_flag: asyncio.Event | None = None,
                    ready_flag: asyncio.Event | None = None) -> None:
    """Run the operator in the current event loop until stopped (by signal or `stop_flag`).

    `ready_flag` is set when this replica's controller has started (after it became the leader)."""
    kube = KubeClient.from_environment(pool_size=settings.api_connections)
    METRICS.watch_gc()
    stopping = stop_flag or asyncio.Event()
    signals = _Signals(stopping)
    elector: LeaderElector | None = None
    controller_ready = asyncio.Event()

    def readiness() -> tuple[bool, str]:
        if elector is None:
            return (True, "ready: controller started") if controller_ready.is_set() else \
                (False, "controller starting")
        if not elector.healthy():
            return False, f"cannot read the leader Lease {elector.where}"
        if elector.is_leader():
            return (True, f"ready: leader {elector.identity}") if controller_ready.is_set() else \
                (False, f"leader {elector.identity}, controller starting")
        return True, f"ready: standby {elector.identity}, Lease held by {elector.holder or 'nobody'}"

    endpoints = Endpoints(settings.health_host, settings.health_port, settings.metrics_port, readiness)
    await endpoints.start()
    trimming = asyncio.create_task(release_free_memory_forever(), name="release-free-memory")  # process_memory.py
    try:
        if not settings.leader_election:
            METRICS.set_identity(operator_version(), "")
            METRICS.set_leader(True)
            await _run_once(kube, settings, stopping, None, controller_ready, ready_flag)
            return
        config = LeaseConfig.from_settings(settings)
        elector = LeaderElector(lease_client(timeout=max(1.0, config.renew_deadline / 2)), config)
        METRICS.set_identity(operator_version(), config.identity)
        METRICS.set_leader(False)
        kube.write_guard = elector.is_leader  # a replica that is not the leader sends no write at all
        logger.info("Electing a leader on Lease %s as %s (lease %.0f s, renew deadline %.0f s, retry %.0f s)",
                    elector.where, config.identity, config.lease_duration, config.renew_deadline,
                    config.retry_period)
        try:
            while not stopping.is_set():
                if not await elector.acquire(stopping):
                    break
                lost = asyncio.Event()
                keeper = asyncio.create_task(elector.keep(lost), name="leader-lease")
                try:
                    await _run_once(kube, settings, stopping, lost, controller_ready, ready_flag)
                finally:
                    keeper.cancel()
                    await asyncio.gather(keeper, return_exceptions=True)
                    signals.restore()
                if not lost.is_set():  # stopped by a signal or by stop_flag
                    break
                logger.info("Standing by for the leader Lease %s again", elector.where)
        finally:
            await elector.release()
            await elector.kube.close()
    finally:
        trimming.cancel()
        await endpoints.close()
        await kube.close()


async def _run_once(kube: KubeClient, settings: Settings, stopping: asyncio.Event, lost: asyncio.Event | None,
                    controller_ready: asyncio.Event, ready_flag: asyncio.Event | None) -> None:
    """One run of the controller, until `stopping` or `lost` (when given) is set, or a signal stops kopf."""
    stop = asyncio.Event()
    waiters = [asyncio.create_task(e.wait(), name="controller-stop-waiter") for e in (stopping, lost)
               if e is not None]
    bridge = asyncio.create_task(_set_when_any(stop, waiters), name="controller-stop")
    ready = asyncio.Event()

    async def forward_ready() -> None:
        await ready.wait()
        controller_ready.set()
        if ready_flag is not None:
            ready_flag.set()

    forwarder = asyncio.create_task(forward_ready(), name="controller-ready")
    try:
        await run_controller(kube, settings, stop=stop, ready=ready)
    finally:
        controller_ready.clear()
        for task in (bridge, forwarder):
            task.cancel()
        await asyncio.gather(bridge, forwarder, return_exceptions=True)


def run(settings: Settings) -> None:
    """Entry point of `tei-operator run`: cap malloc's arenas, configure logging, run until SIGINT/SIGTERM."""
    arenas = limit_malloc_arenas()  # before the first thread (process_memory.py)
    fix_mmap_threshold()
    trace_allocations_on_request()  # a debugging aid, off unless TEI_OPERATOR_DEBUG_TRACEMALLOC is set
    configure_logging(settings.log_format, settings.log_level)
    logger.debug("Capped malloc arenas at %s", arenas if arenas is not None else "glibc's default (not glibc)")
    try:
        asyncio.run(run_async(settings))
    except EndpointError as exc:
        logger.error("Stopped tei-operator: %s", exc)
        raise SystemExit(1) from exc
    except (KubeApiError, CredentialsError) as exc:
        logger.error("Stopped tei-operator: %s", exc)
        raise SystemExit(1) from exc
