"""Which model each Ready pod serves: TEI's `/info`, read once per pod, and the report built from it.

A pod's TEI loads its model once at start, so what its `/info` says (`model_id`, `model_sha`) holds for the pod's
life: `ModelInfoReader` reads it once per pod (by uid) and caches the answer. Reconcile never waits on the
network for it: `report()` uses what is cached and starts reads of Ready pods not read yet (at most
`concurrency` at a time, each bounded by `timeout`) in the background; when one finishes, `notify` queues a status
refresh of the service. A failed read (TEI not answering yet, a network hiccup) is retried after a backoff that
doubles from `retry_seconds` up to `max_retry_seconds` (`notify` fires again when it is over, so the service's
next reconcile retries).

Pods are reached as the metrics scraper reaches them (`scrape_via`): directly by pod IP in a cluster, through the
API server's pod proxy from outside. A service with an API key (`spec.engine.apiKeySecretRef`) is not read: TEI
guards `/info` with the key, which the operator never reads (ModelMismatch Unknown says so).

`served_model_report()` is pure: pods and what they reported in, `status.model` and the `ModelMismatch` condition
out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import kube as k
from ..api.served_model import MAX_REPORTED_PODS
from ..conditions import make_condition
from ..autoscaling.sources.scrape import pod_ip_url, proxy_path, resolve_scrape_via
from ..render.cache import hub_id_from_snapshot

logger = logging.getLogger("tei_operator.controller")

MODEL_MISMATCH = "ModelMismatch"
REASON_ONE_SHA = "OneModelSha"
REASON_DIFFERENT_SHAS = "DifferentShas"
REASON_DIFFERENT_MODELS = "DifferentModels"
REASON_REVISION_NOT_SERVED = "RevisionNotServed"
REASON_NO_READY_PODS = "NoReadyPods"
REASON_READING = "ReadingModelInfo"
REASON_UNREADABLE = "ModelInfoUnreadable"
REASON_API_KEY = "ModelInfoNeedsApiKey"
MISMATCH_REASONS = frozenset({REASON_DIFFERENT_SHAS, REASON_DIFFERENT_MODELS, REASON_REVISION_NOT_SERVED})

_SHA = re.compile(r"^[0-9a-f]{40}$")
TEI_PORT = 80


@dataclasses.dataclass(frozen=True)
class PodInfo:
    """What is known of one Ready pod's model: what its /info said, or why it has not been read (yet)."""

    name: str
    model_id: str | None = None
    sha: str | None = None
    error: str | None = None

    @property
    def read(self) -> bool:
        return self.error is None and (self.model_id is not None or self.sha is not None)


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "unknown"


def _names(pods: Sequence[PodInfo], limit: int = 3) -> str:
    names = [p.name for p in pods]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def served_model_report(*, model_id: str, revision: str | None, pods: Sequence[PodInfo], generation: int,
                        protected: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """`status.model` and the `ModelMismatch` condition (without lastTransitionTime) for what the Ready pods said.

    ModelMismatch is True when the Ready pods serve more than one model id or commit, or when the revision asked
    for is a full commit sha and a pod serves another; False when every Ready pod was read and they agree (or no
    pod is Ready); Unknown while a pod is still to be read, when one cannot be read, or when /info needs the API
    key."""
    pods = sorted(pods, key=lambda p: p.name)
    status: dict[str, Any] = {"id": model_id}
    if revision:
        status["requestedRevision"] = revision
    read = [p for p in pods if p.read]
    status["servedShas"] = sorted({p.sha for p in read if p.sha})
    status["pods"] = [{k: v for k, v in (("name", p.name), ("modelId", p.model_id), ("sha", p.sha)) if v}
                      for p in pods[:MAX_REPORTED_PODS]]

    def condition(value: str, reason: str, message: str) -> dict[str, Any]:
        return make_condition(MODEL_MISMATCH, value, reason, message, generation)

    if protected:
        return status, condition("Unknown", REASON_API_KEY, "The pods' /info needs the service's API key "
                                 "(spec.engine.apiKeySecretRef), which the operator does not read: the served model "
                                 "commits are not checked")
    if not pods:
        return status, condition("False", REASON_NO_READY_PODS, "No Ready pod serves a model")
    models = sorted({p.model_id for p in read if p.model_id})
    if len(models) > 1:
        groups = "; ".join(f"{m} on {_names([p for p in read if p.model_id == m])}" for m in models)
        return status, condition("True", REASON_DIFFERENT_MODELS, f"Ready pods serve {len(models)} different "
                                 f"models ({groups}): their embeddings are not comparable")
    shas = status["servedShas"]
    if len(shas) > 1:
        groups = "; ".join(f"{_short(s)} on {_names([p for p in read if p.sha == s])}" for s in shas)
        return status, condition("True", REASON_DIFFERENT_SHAS, f"Ready pods serve {len(shas)} commits of "
                                 f"{model_id} ({groups}): their embeddings are not comparable; pin "
                                 "spec.model.revision to one commit sha")
    if revision and _SHA.match(revision) and shas and shas[0] != revision:
        return status, condition("True", REASON_REVISION_NOT_SERVED, f"spec.model.revision is {_short(revision)} "
                                 f"but the Ready pods serve {_short(shas[0])}")
    unread = [p for p in pods if not p.read]
    failed = [p for p in unread if p.error]
    if failed:
        return status, condition("Unknown", REASON_UNREADABLE, f"Could not read /info of {_names(failed)}: "
                                 f"{failed[0].error}")
    if unread:
        return status, condition("Unknown", REASON_READING, f"Reading /info of {_names(unread)}")
    served = f"{models[0] if models else model_id}@{_short(shas[0]) if shas else 'unknown'}"
    return status, condition("False", REASON_ONE_SHA, f"All {len(pods)} Ready pods serve {served}")


def is_ready(pod: Mapping[str, Any]) -> bool:
    """A pod that is Ready and not on its way out (so it serves through the Service)."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def tei_port(pod: Mapping[str, Any]) -> int:
    """The TEI container's port (the `tei` container's first port; 80, TEI's, when none is declared)."""
    containers = ((pod.get("spec") or {}).get("containers") or [])
    container = next((c for c in containers if c.get("name") == "tei"), containers[0] if containers else {})
    ports = container.get("ports") or []
    return int(ports[0].get("containerPort") or TEI_PORT) if ports else TEI_PORT


@dataclasses.dataclass
class _Failure:
    error: str
    retry_at: float
    backoff: float


class ModelInfoReader:
    """Reads each Ready pod's /info once (by pod uid), in the background, and remembers the answer."""

    def __init__(self, kube: k.KubeClient | None, *, scrape_via: str = "auto", timeout: float = 3.0,
                 concurrency: int = 8, retry_seconds: float = 2.0, max_retry_seconds: float = 60.0,
                 cache_size: int = 8192, clock: Callable[[], float] = time.monotonic) -> None:
        self.kube = kube
        self.via = resolve_scrape_via(scrape_via)
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self.max_retry_seconds = max_retry_seconds
        self.cache_size = cache_size
        self.clock = clock
        self.notify: Callable[[Any], None] | None = None  # called with the service key after each finished read
        self._semaphore = asyncio.Semaphore(concurrency)
        self._known: OrderedDict[str, PodInfo] = OrderedDict()
        self._failures: dict[str, _Failure] = {}
        self._reading: dict[str, asyncio.Task[None]] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._session: Any = None
        self.reads = 0  # /info requests sent (for tests and logs)

    def report(self, key: Any, namespace: str, pods: Sequence[Mapping[str, Any]], *, read: bool = True
               ) -> list[PodInfo]:
        """What is known of each Ready pod now; starts background reads of those not known yet (none when `read`
        is false: the service's /info needs an API key)."""
        out: list[PodInfo] = []
        now = self.clock()
        for pod in pods:
            if not is_ready(pod):
                continue
            meta = pod.get("metadata") or {}
            uid, name = str(meta.get("uid", "")), str(meta.get("name", ""))
            known = self._known.get(uid)
            if known is not None:
                self._known.move_to_end(uid)
                out.append(known)
                continue
            failure = self._failures.get(uid)
            if read and uid not in self._reading and (failure is None or now >= failure.retry_at):
                self._reading[uid] = asyncio.create_task(self._read(key, namespace, pod), name=f"read-info-{name}")
            out.append(PodInfo(name, error=failure.error if failure else None))
        return out

    async def settle(self, pods: Sequence[Mapping[str, Any]], timeout: float) -> bool:
        """Wait up to `timeout` seconds for the reads under way of these pods; whether there were any."""
        uids = {str((pod.get("metadata") or {}).get("uid", "")) for pod in pods}
        reading = [task for uid, task in self._reading.items() if uid in uids]
        if reading:
            await asyncio.wait(reading, timeout=timeout)
        return bool(reading)

    async def _read(self, key: Any, namespace: str, pod: Mapping[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        uid, name = str(meta.get("uid", "")), str(meta.get("name", ""))
        try:
            async with self._semaphore:
                self.reads += 1
                info = await asyncio.wait_for(self._fetch(namespace, pod), self.timeout)
            if not isinstance(info, Mapping):
                raise ValueError(f"/info answered {type(info).__name__}, not a JSON object")
            sha, model_id = info.get("model_sha"), info.get("model_id")
            if model_id:  # a pod on the managed cache loads its snapshot directory: report (and compare) the hub id
                model_id = hub_id_from_snapshot(str(model_id)) or model_id
            self._known[uid] = PodInfo(name, str(model_id) if model_id else None, str(sha) if sha else None)
            self._failures.pop(uid, None)
            while len(self._known) > self.cache_size:
                self._known.popitem(last=False)
            logger.debug("Read /info of pod %s/%s: %s@%s", namespace, name, model_id, sha)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure: retried after the backoff
            previous = self._failures.get(uid)
            backoff = min(self.max_retry_seconds, previous.backoff * 2 if previous else self.retry_seconds)
            detail = "timed out" if isinstance(exc, asyncio.TimeoutError) else f"{type(exc).__name__}: {exc}"
            self._failures[uid] = _Failure(detail[:300], self.clock() + backoff, backoff)
            if len(self._failures) > self.cache_size:
                self._failures.pop(next(iter(self._failures)))
            logger.debug("Failed to read /info of pod %s/%s (retry in %.0f s): %s", namespace, name, backoff, detail)
            # Come back when the backoff is over: the service's next reconcile (report) starts the retry.
            self._timers.add(asyncio.get_running_loop().call_later(backoff, self._notify, key))
        finally:
            self._reading.pop(uid, None)
        self._notify(key)

    def _notify(self, key: Any) -> None:
        self._timers = {t for t in self._timers if not t.cancelled() and t.when() > asyncio.get_running_loop().time()}
        if self.notify is not None:
            self.notify(key)

    async def _fetch(self, namespace: str, pod: Mapping[str, Any]) -> Any:
        port = tei_port(pod)
        if self.via == "podip":
            import aiohttp

            ip = (pod.get("status") or {}).get("podIP")
            if not ip:
                raise ValueError("the pod has no IP yet")
            if self._session is None:
                self._session = aiohttp.ClientSession()
            async with self._session.get(pod_ip_url(ip, port, "/info")) as response:
                if response.status != 200:
                    raise ValueError(f"GET /info answered {response.status}")
                return await response.json(content_type=None)
        if self.kube is None:
            raise ValueError("no Kubernetes client to reach the pod through the API server")
        name = str((pod.get("metadata") or {}).get("name", ""))
        return await self.kube.request("GET", proxy_path(namespace, name, port, "/info"))

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for task in list(self._reading.values()):
            task.cancel()
        await asyncio.gather(*self._reading.values(), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
