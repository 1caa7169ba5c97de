"""A coalescing work queue of reconciles, for triggers that are not kopf handlers of the service itself.

A rollout produces dozens of Deployment and pod events within seconds; each asks for its service to be
reconciled. The queue runs at most one reconcile per service at a time, folds requests that arrive while one is
waiting or running into a single follow-up, waits a short debounce first so a burst costs one reconcile, and
retries failures after the delay `errors.classify` gives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, Hashable, TypeVar

from .errors import classify

logger = logging.getLogger("tei_operator.controller")

K = TypeVar("K", bound=Hashable)
Worker = Callable[[K, bool], Awaitable[object]]


class ReconcileQueue(Generic[K]):
    """`request(key, apply=...)`: reconcile soon; `apply=False` only refreshes status (a full request wins)."""

    def __init__(self, worker: Worker, *, debounce: float = 0.3, max_retry_delay: float = 300.0) -> None:
        self._worker = worker
        self._debounce = debounce
        self._max_retry_delay = max_retry_delay
        self._pending: dict[K, bool] = {}          # key -> apply wanted, for requests not yet started
        self._tasks: dict[K, asyncio.Task] = {}
        self._failures: dict[K, int] = {}
        self._closed = False

    def request(self, key: K, *, apply: bool = True) -> None:
        if self._closed:
            return
        self._pending[key] = self._pending.get(key, False) or apply
        if key not in self._tasks:
            self._tasks[key] = asyncio.get_running_loop().create_task(self._run(key), name=f"reconcile {key}")

    async def _run(self, key: K) -> None:
        try:
            delay = self._debounce
            while True:
                await asyncio.sleep(delay)
                if key not in self._pending:
                    return
                apply = self._pending.pop(key)
                try:
                    await self._worker(key, apply)
                    self._failures.pop(key, None)
                    delay = self._debounce
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - every failure is classified and logged
                    kind = classify(exc)
                    if kind.permanent:
                        logger.error("Failed to reconcile %s, not retrying: %s", key, kind.message)
                        continue
                    failures = self._failures[key] = self._failures.get(key, 0) + 1
                    delay = min(kind.delay * (2 ** min(failures - 1, 6)), self._max_retry_delay)
                    logger.warning("Failed to reconcile %s (attempt %d), retrying in %.0f s: %s", key, failures,
                                   delay, kind.message)
                    self._pending[key] = self._pending.get(key, False) or apply
        finally:
            self._tasks.pop(key, None)
            if key in self._pending and not self._closed:  # a request raced with our exit
                self._tasks[key] = asyncio.get_running_loop().create_task(self._run(key), name=f"reconcile {key}")

    @property
    def waiting(self) -> int:
        """Keys requested and not started yet (the queue depth the operator's metrics report)."""
        return len(self._pending)

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._pending.clear()
