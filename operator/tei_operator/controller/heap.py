"""Keeping Python's cyclic garbage collector off the operator's long-lived objects.

At 1,000 services the operator holds over a million tracked objects that live as long as the process: the watch-fed
store (cache.py), kopf's per-object memories, the parsed services, the imported modules. CPython runs a full
collection whenever the objects that survived into its oldest generation since the last one grow by a quarter of
what the last one kept; the watch events and the autoscaler's ticks keep a steady trickle of such survivors, so at
idle a full collection came about twice a minute, and each traversed the whole heap: a cost that grows with N twice
(more survivors, a bigger heap), the super-linear part of the operator's idle CPU from 300 to 1,000 services, and
pauses of the event loop long enough, on a busy machine, to miss a Lease renewal.

`HeapFreezer` moves what survived each full collection into the collector's permanent generation (`gc.freeze()`
from a `gc.callbacks` hook, right after the collection: at that moment every tracked object is one the collection
found alive). The next full collection traverses only what survived since, and comes only once that is a quarter
of what the last one kept. Frozen objects are still freed by reference counting the moment nothing refers to them;
only a frozen object that later becomes part of a reference cycle waits, for at most `refresh_seconds`, when
everything is unfrozen and collected once in full (`maybe_refresh`, after a resync round).

`metrics.py` measures the collector's pauses (CPU seconds by generation) into `tei_operator_gc_pause_seconds_total`.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

logger = logging.getLogger("tei_operator.controller")

REFRESH_SECONDS = 3600.0
"""Unfreeze, collect in full and freeze again this often (the bound on how long frozen cyclic garbage waits)."""
FULL = 2  # the oldest generation: a full collection


class HeapFreezer:
    """While installed, freezes the heap after every full collection; `maybe_refresh` unfreezes, collects in full
    and freezes again every `refresh_seconds`."""

    def __init__(self, *, refresh_seconds: float = REFRESH_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if refresh_seconds <= 0:
            raise ValueError(f"HeapFreezer: refresh_seconds must be > 0 (got {refresh_seconds})")
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.frozen_at: float | None = None  # when everything was last collected in full (None: not installed)
        self.freezes = 0

    def _after_collection(self, phase: str, info: dict) -> None:
        if phase == "stop" and info.get("generation") == FULL:
            gc.freeze()  # the collection is over: what is tracked now survived it
            self.freezes += 1

    def install(self) -> None:
        """Collect in full now (and freeze what survives), and after every later full collection."""
        if self._after_collection not in gc.callbacks:
            gc.callbacks.append(self._after_collection)
        self.refresh()

    def refresh(self) -> None:
        """Unfreeze everything and collect in full (frozen objects that became cyclic garbage go now); the survivors
        are frozen again."""
        gc.unfreeze()
        gc.collect()
        self.frozen_at = self.clock()
        logger.debug("Collected the heap in full and froze %d objects", gc.get_freeze_count())

    def maybe_refresh(self) -> bool:
        """`refresh` when the last one is `refresh_seconds` old. Returns whether it ran."""
        if self.frozen_at is None or self.clock() - self.frozen_at < self.refresh_seconds:
            return False
        self.refresh()
        return True

    def release(self) -> None:
        """Stop freezing and unfreeze everything (the controller stopped: what it held is garbage from now on)."""
        if self._after_collection in gc.callbacks:
            gc.callbacks.remove(self._after_collection)
        gc.unfreeze()
        self.frozen_at = None
