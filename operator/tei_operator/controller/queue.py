"""The one work queue of reconciles: every trigger (a service created or changed, a child's or a pod's event, the
periodic resync, the autoscaler's writes) requests its service's key here.

The shape of controller-runtime's workqueue:
- de-duplication: a key requested while it waits is queued once (`apply=True` wins over a status-only request);
- one reconcile per key at a time: a key requested while it runs is queued again after it ends (dirty/processing);
- a short debounce before a key becomes ready, so a burst of events (a rollout) costs one reconcile;
- rate-limited retries: a failure is retried after the delay `errors.classify` gives, doubled per failure of the
  same key up to `max_retry_delay`; a success resets it; a permanent error is logged and not retried;
- a bounded number of workers (`workers`) take ready keys in the order they became ready.

`request_and_wait(key)` also returns when a reconcile of the key that started after the request has ended, and
raises what it raised: kopf's handlers wait for it (kopf records a spec change as handled only once it is, and
retries a failed one itself, which only requests the key again), and so does the resync. A waiter never waits for
the retries: a key that keeps failing must not hold kopf's worker of that service (its next spec change would wait
behind it) nor the resync of every other service.
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
DEFAULT_WORKERS = 8


class ReconcileQueue(Generic[K]):
    """`request(key, apply=...)`: reconcile soon; `apply=False` only refreshes status (a full request wins)."""

    def __init__(self, worker: Worker, *, workers: int = DEFAULT_WORKERS, debounce: float = 0.3,
                 max_retry_delay: float = 300.0) -> None:
        if workers < 1:
            raise ValueError(f"workers: must be at least 1, got {workers}")
        self._worker = worker
        self._workers = workers
        self._debounce = debounce
        self._max_retry_delay = max_retry_delay
        self._pending: dict[K, bool] = {}             # requested, not started: key -> apply wanted
        self._timers: dict[K, asyncio.TimerHandle] = {}  # pending keys waiting out their debounce or backoff
        self._ready: asyncio.Queue[K] | None = None
        self._queued: set[K] = set()                  # pending keys in _ready
        self._processing: set[K] = set()
        self._waiters: dict[K, list[asyncio.Future]] = {}   # futures of pending requests
        self._failures: dict[K, int] = {}
        self._tasks: list[asyncio.Task] = []
        self._closed = False

    # -- requests ----------------------------------------------------------------------------------------------
    def request(self, key: K, *, apply: bool = True, delay: float | None = None) -> None:
        """Reconcile `key` after the debounce (or `delay`), once however often it is requested meanwhile."""
        if self._closed:
            return
        self._pending[key] = self._pending.get(key, False) or apply
        if key in self._processing or key in self._queued:
            return  # runs again after the current run ends / already ready
        wait = self._debounce if delay is None else delay
        timer = self._timers.get(key)
        if timer is not None:
            if timer.when() <= asyncio.get_running_loop().time() + wait:
                return  # already due as soon or sooner
            timer.cancel()
        self._start()
        self._timers[key] = asyncio.get_running_loop().call_later(wait, self._make_ready, key)

    async def request_and_wait(self, key: K, *, apply: bool = True) -> None:
        """`request`, then wait until a reconcile of `key` that started after now has ended; raises what it raised
        (the queue retries a transient failure by itself all the same)."""
        future = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(future)
        self.request(key, apply=apply)
        await future

    # -- machinery --------------------------------------------------------------------------------------------
    def _start(self) -> None:
        if self._ready is None:
            self._ready = asyncio.Queue()
            self._tasks = [asyncio.get_running_loop().create_task(self._work(), name=f"reconcile worker {n}")
                           for n in range(self._workers)]

    def _make_ready(self, key: K) -> None:
        self._timers.pop(key, None)
        if self._closed or key not in self._pending or key in self._processing or key in self._queued:
            return
        self._queued.add(key)
        assert self._ready is not None
        self._ready.put_nowait(key)

    async def _work(self) -> None:
        assert self._ready is not None
        while True:
            key = await self._ready.get()
            self._queued.discard(key)
            if key not in self._pending:
                continue
            apply = self._pending.pop(key)
            waiters = self._waiters.pop(key, [])
            self._processing.add(key)
            retry: float | None = None
            try:
                await self._worker(key, apply)
                self._failures.pop(key, None)
                for future in waiters:
                    if not future.done():
                        future.set_result(None)
            except asyncio.CancelledError:
                for future in waiters:
                    future.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is classified and logged
                kind = classify(exc)
                for future in waiters:
                    if not future.done():
                        future.set_exception(exc)
                if kind.permanent:
                    logger.error("Failed to reconcile %s, not retrying: %s", key, kind.message)
                else:
                    failures = self._failures[key] = self._failures.get(key, 0) + 1
                    retry = self.retry_delay(kind.delay, failures)
                    logger.warning("Failed to reconcile %s (attempt %d), retrying in %.0f s: %s", key, failures,
                                   retry, kind.message)
                    self._pending[key] = self._pending.get(key, False) or apply
            finally:
                self._processing.discard(key)
            if key in self._pending and not self._closed:
                if retry is not None:
                    timer = self._timers.pop(key, None)
                    if timer is not None:
                        timer.cancel()
                    self._timers[key] = asyncio.get_running_loop().call_later(retry, self._make_ready, key)
                else:  # requested again while it ran
                    self.request(key, apply=self._pending[key])

    def retry_delay(self, base: float, failures: int) -> float:
        """The backoff after the `failures`-th failure in a row: `base` doubled per failure, capped."""
        return min(base * (2 ** min(failures - 1, 10)), self._max_retry_delay)

    # -- state --------------------------------------------------------------------------------------------------
    @property
    def waiting(self) -> int:
        """Keys requested and not started yet (the queue depth the operator's metrics report)."""
        return len(self._pending)

    @property
    def busy(self) -> bool:
        return bool(self._pending or self._processing)

    @property
    def running(self) -> int:
        return len(self._processing)

    async def close(self) -> None:
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for futures in self._waiters.values():
            for future in futures:
                future.cancel()
        self._waiters.clear()
        self._pending.clear()
        self._queued.clear()
