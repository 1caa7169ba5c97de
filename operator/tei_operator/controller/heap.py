"""Keeping Python's cyclic garbage collector off the operator's long-lived objects.

At 1,000 services the operator holds over a million tracked objects that live as long as the process: the watch-fed
store (cache.py), kopf's per-object memories, the parsed services, the imported modules. CPython's collector runs a
full collection whenever the objects that survived into its oldest generation since the last one grow by a quarter
of that generation; the autoscaler's ticks and the watch events keep a steady trickle of such survivors, so a full
collection came every ~30 s at idle, and each one traversed the whole heap: a cost that grows with N twice (more
survivors, a bigger heap), the super-linear part of the operator's idle CPU from 300 to 1,000 services.

`HeapFreezer` moves what is alive into the collector's permanent generation (`gc.freeze()`) after a collection, once
the store is filled and again whenever the store grew by a quarter since: later collections traverse only what was
created since. Frozen objects are still freed by reference counting the moment nothing refers to them; only a
frozen object that later becomes part of a reference cycle waits, for at most `refresh_seconds`, when everything is
unfrozen, collected once in full and frozen again (`refresh`).

`gc.callbacks` also measure the collector's pauses (CPU seconds of the thread that ran them, by generation) into
`tei_operator_gc_pause_seconds_total` (metrics.py), so what collections cost shows in the operator's own metrics.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

logger = logging.getLogger("tei_operator.controller")

GROWTH = 1.25
"""Freeze again when the store holds this many times the objects it held at the last freeze."""
REFRESH_SECONDS = 3600.0
"""Unfreeze, collect in full and freeze again this often (the bound on how long frozen cyclic garbage waits)."""


class HeapFreezer:
    """Freezes the heap after the store is filled and whenever it grew by `growth` since (`maybe_freeze`), and
    refreshes the frozen set every `refresh_seconds` (`refresh`). `size()` is the store's object count."""

    def __init__(self, size: Callable[[], int], *, growth: float = GROWTH, refresh_seconds: float = REFRESH_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if growth <= 1.0 or refresh_seconds <= 0:
            raise ValueError(f"HeapFreezer: growth must be > 1 and refresh_seconds > 0 (got {growth}, "
                             f"{refresh_seconds})")
        self.size = size
        self.growth = growth
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.frozen_size: int | None = None  # the store's size at the last freeze (None: never frozen)
        self.frozen_at: float | None = None
        self.freezes = 0

    def freeze(self) -> int:
        """Collect what is garbage among the objects not frozen yet, then freeze the rest. Returns the number of
        objects now frozen."""
        gc.collect()
        gc.freeze()
        self.frozen_size = self.size()
        self.frozen_at = self.clock()
        self.freezes += 1
        frozen = gc.get_freeze_count()
        logger.debug("Froze the heap: %d objects, the store holding %d", frozen, self.frozen_size)
        return frozen

    def maybe_freeze(self) -> bool:
        """Freeze when never frozen, when the store grew by `growth` since the last freeze, or refresh when the
        last freeze is `refresh_seconds` old. Returns whether it did either."""
        if self.frozen_size is None or self.size() >= max(1, self.frozen_size) * self.growth:
            self.freeze()
            return True
        if self.frozen_at is not None and self.clock() - self.frozen_at >= self.refresh_seconds:
            self.refresh()
            return True
        return False

    def refresh(self) -> int:
        """Unfreeze everything, collect in full (frozen objects that became cyclic garbage go now), freeze again."""
        gc.unfreeze()
        return self.freeze()

    def release(self) -> None:
        """Unfreeze everything (the controller stopped: what it held is garbage from now on)."""
        gc.unfreeze()
        self.frozen_size = self.frozen_at = None
