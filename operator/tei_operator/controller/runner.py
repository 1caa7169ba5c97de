"""Starting the operator: kopf configured for this project, the reconciler, the queue and the periodic resync.

`run(settings)` is what `tei-operator run` calls. It blocks until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from ..autoscaling.loop import start_autoscaler
from ..kube import KubeApiError, KubeClient
from ..settings import Settings
from .errors import classify
from .handlers import ControllerMemo, register
from .logs import configure_logging
from .queue import ReconcileQueue
from .reconcile import OwnerKey, Reconciler, owner_types

logger = logging.getLogger("tei_operator.controller")

ANNOTATION_PREFIX = "tei-operator.io"


def watched_namespaces(settings: Settings) -> list[str]:
    """The namespaces to watch; empty means the whole cluster."""
    return [ns for ns in settings.namespaces if ns]


def kopf_settings() -> kopf.OperatorSettings:
    """kopf configured for this project: its bookkeeping under our own annotation prefix, no finalizer, its
    per-handler Events only for warnings, no peering (one operator replica; see docs/troubleshooting.md)."""
    ks = kopf.OperatorSettings()
    ks.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    ks.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
    ks.persistence.finalizer = f"{ANNOTATION_PREFIX}/finalizer"  # never added: no handler requires one
    ks.posting.level = logging.WARNING
    ks.peering.standalone = True
    ks.peering.mandatory = False
    ks.watching.server_timeout = 300
    ks.watching.client_timeout = 330
    ks.watching.connect_timeout = 10
    ks.networking.request_timeout = 60
    ks.batching.worker_limit = 32
    return ks


async def resync_forever(reconciler: Reconciler, queue: ReconcileQueue, namespaces: list[str],
                         interval: float) -> None:
    """The periodic safety net: every `interval` seconds, queue a reconcile of every service.

    Drift is normally caught at once by the child watches; this covers what a watch can miss (a dropped stream,
    an edit of a field that emits no event we watch)."""
    while True:
        await asyncio.sleep(interval)
        try:
            for kind, rtype in reconciler.kinds.items():
                for namespace in namespaces or [None]:
                    for item in await reconciler.kube.list(rtype, namespace):
                        meta = item.get("metadata") or {}
                        queue.request(OwnerKey(kind, meta.get("namespace", ""), meta.get("name", "")), apply=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed resync is retried at the next interval
            logger.warning("Failed to list services for the periodic resync: %s", classify(exc).message)


async def run_async(settings: Settings, *, stop_flag: asyncio.Event | None = None,
                    ready_flag: asyncio.Event | None = None) -> None:
    """Run the operator in the current event loop until stopped (by signal or `stop_flag`)."""
    kube = KubeClient.from_environment()
    reconciler = Reconciler(kube, settings)
    namespaces = watched_namespaces(settings)

    async def work(key: OwnerKey, apply: bool) -> None:
        await reconciler.reconcile(key, apply=apply)

    queue: ReconcileQueue[OwnerKey] = ReconcileQueue(work)
    # A pod's /info read in the background finished: refresh that service's status (status.model).
    reconciler.model_reader.notify = lambda key: queue.request(key, apply=False)
    reconciler.token_meter.notify = lambda key: queue.request(key, apply=False)  # a token-rate round is done or due
    memo = ControllerMemo(reconciler=reconciler, queue=queue)
    registry = kopf.OperatorRegistry()
    register(registry, owner_types())

    @kopf.on.login(id="login", registry=registry)
    def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The same credentials as KubeClient: the in-cluster service account, or the kubeconfig.
        return kopf.login_via_client(**kwargs)
    interval = float(settings.resync_seconds)
    tasks: list[asyncio.Task] = []

    @kopf.on.startup(id="start-resync", registry=registry)
    async def _start(**_: Any) -> None:
        tasks.append(asyncio.create_task(resync_forever(reconciler, queue, namespaces, interval), name="resync"))
        tasks.append(start_autoscaler(reconciler.kube, settings))  # one loop for every autoscaled service
        logger.info("Started tei-operator watching %s (resync every %.0f s)",
                    ", ".join(namespaces) if namespaces else "all namespaces", interval)

    @kopf.on.cleanup(id="stop-resync", registry=registry)
    async def _stop(**_: Any) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await queue.close()
        await reconciler.model_reader.close()
        await reconciler.token_meter.close()
        logger.info("Stopped tei-operator")

    try:
        await kopf.operator(
            registry=registry,
            settings=kopf_settings(),
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=True,
            liveness_endpoint=f"http://{settings.health_host}:{settings.health_port}/healthz",
            memo=memo,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        kube.close()


def run(settings: Settings) -> None:
    """Entry point of `tei-operator run`: configure logging, run until SIGINT/SIGTERM."""
    configure_logging(settings.log_format, settings.log_level)
    try:
        asyncio.run(run_async(settings))
    except KubeApiError as exc:
        logger.error("Stopped tei-operator: %s", exc)
        raise SystemExit(1) from exc
