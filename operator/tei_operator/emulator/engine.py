"""The modelled GPU: TEI's FIFO queue, its batching task and one backend that runs one batch at a time.

The queue, batch formation, metric semantics, permits and batch time are the shared batching model
(`tei_operator.emulator.batching`, also used by the benchmark's simulator); this module runs that model in real time
on asyncio. The shape follows TEI's router (core/src/queue.rs and infer.rs), because the operator scales on what
this shape produces:
- every *input* (not every request) is one queue entry; a request's inputs are queued together, then the
  batching task is woken once;
- a batch takes entries from the head of the queue while their tokens fit in `max_batch_tokens` (and, if
  set, while there are fewer than `max_batch_requests`); entries whose client went away are dropped there
  and counted as `te_request_failure{err="dropped"}`;
- the batching task forms the *next* batch as soon as the backend has taken the current one (one parking
  slot), so under moderate load batches are smaller than under saturation, as in TEI;
- every formed batch is recorded in `te_batch_next_size` / `te_batch_next_tokens`, including the empty one
  that ends each wake-up; `te_queue_size` goes up by one per queued input and is reset to the remaining
  queue length whenever a batch is formed;
- a batch starts when it is formed and the backend is free (on the modelled clock, not when the event loop
  gets round to it); the backend "runs" a batch of inputs of lengths l_i for
  `batch_overhead + sum(l_i) / tokens_per_second + seconds_per_token_sq * sum(l_i^2)` seconds.

Concurrency permits (`max_concurrent_requests`, one per input) live here too, since TEI ties them to the
inference pipeline rather than to HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tei_operator.emulator.batching import Batch, Router, take_batch
from tei_operator.emulator.metrics import TeiMetrics

__all__ = ["Batch", "Engine", "EngineStopped", "InputTiming", "QueuedInput", "batch_seconds", "take_batch"]

log = logging.getLogger(__name__)


class EngineStopped(RuntimeError):
    """The engine was stopped while an input was still waiting (the emulator is shutting down)."""


@dataclass(frozen=True)
class InputTiming:
    """What the engine reports back for one input: seconds queued and seconds in the batch that ran it."""

    queue_seconds: float
    inference_seconds: float
    batch_size: int
    batch_tokens: int


@dataclass(eq=False)
class QueuedInput:
    """One input waiting in the queue; `future` gets its timing when its batch has run."""

    tokens: int
    queued_at: float
    future: asyncio.Future[InputTiming] = field(repr=False)

    @property
    def abandoned(self) -> bool:
        """True when nobody waits for the result any more (the request was cancelled or the engine stopped)."""
        return self.future.done()


def batch_seconds(tokens: int, tokens_per_second: float, overhead_seconds: float, tokens_sq: int = 0,
                  seconds_per_token_sq: float = 0.0) -> float:
    """The modelled time to run one batch of `tokens` tokens (squared input lengths summing to `tokens_sq`); the
    same formula as `batching.Profile.batch_seconds`."""
    return overhead_seconds + tokens / tokens_per_second + seconds_per_token_sq * tokens_sq


class Engine:
    """The queue, the batching task and the backend of one emulated TEI process."""

    def __init__(
        self,
        *,
        metrics: TeiMetrics,
        tokens_per_second: float,
        batch_overhead_seconds: float,
        max_batch_tokens: int,
        max_batch_requests: int | None,
        max_concurrent_requests: int,
        seconds_per_token_sq: float = 0.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._metrics = metrics
        self.tokens_per_second = tokens_per_second
        self.batch_overhead_seconds = batch_overhead_seconds
        self.seconds_per_token_sq = seconds_per_token_sq
        self._router = Router(max_batch_tokens=max_batch_tokens, max_batch_requests=max_batch_requests,
                              max_concurrent_requests=max_concurrent_requests, metrics=metrics)
        self._clock = clock
        self._queue: deque[QueuedInput] = self._router.queue
        self._arrival = asyncio.Event()
        self._slot: Batch | None = None
        self._running_batch: Batch | None = None
        self._slot_free = asyncio.Event()
        self._slot_free.set()
        self._slot_filled = asyncio.Event()
        self._backend = asyncio.Lock()  # held while a batch runs; /health waits for it, as TEI's health check does
        self._backend_free_at = 0.0
        self._tasks: list[asyncio.Task[None]] = []

    # ---- permits ---------------------------------------------------------------------------------------
    @property
    def free_permits(self) -> int:
        """Concurrency permits left (one is needed per input)."""
        return self._router.free_permits

    def try_acquire(self, count: int) -> bool:
        """Take `count` permits at once, or none: TEI refuses the whole request when they are not all free."""
        return self._router.try_acquire(count)

    def release(self, count: int = 1) -> None:
        """Give back permits taken by `try_acquire`."""
        self._router.release(count)

    # ---- lifecycle ---------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True between `start` and `stop`."""
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    def start(self) -> None:
        """Start the batching task and the backend on the running event loop."""
        if self._tasks:
            raise RuntimeError("engine already started")
        self._tasks = [
            asyncio.create_task(self._batching_loop(), name="tei-emulator-batching"),
            asyncio.create_task(self._backend_loop(), name="tei-emulator-backend"),
        ]

    async def stop(self) -> None:
        """Stop both tasks and fail every input still waiting with `EngineStopped`."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        waiting = list(self._queue)
        for batch in (self._slot, self._running_batch):
            if batch is not None:
                waiting.extend(batch.inputs)
        self._queue.clear()
        self._slot = self._running_batch = None
        for entry in waiting:
            if not entry.future.done():
                entry.future.set_exception(EngineStopped("the emulator is shutting down"))

    # ---- requests ------------------------------------------------------------------------------------------
    @property
    def queue_length(self) -> int:
        """Inputs waiting in the queue (not counting the parked next batch)."""
        return len(self._queue)

    def submit(self, token_counts: Sequence[int]) -> list[asyncio.Future[InputTiming]]:
        """Queue one request's inputs (already tokenised and truncated) and wake the batching task once."""
        if not self.running:
            raise EngineStopped("the engine is not running")
        loop = asyncio.get_running_loop()
        now = self._clock()
        entries = [QueuedInput(tokens, now, loop.create_future()) for tokens in token_counts]
        self._router.enqueue(entries)
        self._arrival.set()
        futures: list[asyncio.Future[InputTiming]] = [entry.future for entry in entries]
        return futures

    async def health(self) -> bool:
        """True when the backend is up; waits for the batch running now, like TEI's health check does."""
        if not self.running:
            return False
        async with self._backend:
            return self.running

    # ---- the two tasks ---------------------------------------------------------------------------------
    def _next_batch(self) -> Batch:
        return self._router.next_batch()

    async def _batching_loop(self) -> None:
        while True:
            await self._arrival.wait()
            self._arrival.clear()
            while True:
                await self._slot_free.wait()
                batch = self._next_batch()
                if not batch.inputs:
                    break
                batch.formed_at = self._clock()
                self._slot = batch
                self._slot_free.clear()
                self._slot_filled.set()

    async def _backend_loop(self) -> None:
        while True:
            await self._slot_filled.wait()
            batch, self._slot = self._slot, None
            self._slot_filled.clear()
            self._slot_free.set()
            if batch is None:
                continue
            async with self._backend:
                self._running_batch = batch
                await self._run(batch)
                self._running_batch = None

    async def _run(self, batch: Batch) -> None:
        # The modelled GPU starts the batch when it is both formed and free: a batch parked while the previous one ran
        # starts exactly when that one ended, however late the event loop wakes up, so lateness never adds up (a
        # busy machine would otherwise make the emulated GPU slower than its profile).
        start = max(self._backend_free_at, batch.formed_at)
        end = start + batch_seconds(batch.tokens, self.tokens_per_second, self.batch_overhead_seconds,
                                    batch.tokens_sq, self.seconds_per_token_sq)
        delay = end - self._clock()
        if delay > 0:
            await asyncio.sleep(delay)
        self._backend_free_at = end
        timing_end = max(end, self._clock())
        for entry in batch.inputs:
            if not entry.future.done():
                entry.future.set_result(
                    InputTiming(
                        queue_seconds=max(0.0, start - entry.queued_at),
                        inference_seconds=timing_end - start,
                        batch_size=len(batch.inputs),
                        batch_tokens=batch.tokens,
                    )
                )
