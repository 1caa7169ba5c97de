"""The heap freezer (controller/heap.py) and the garbage collector's pause counter (metrics.py)."""

from __future__ import annotations

import gc
import weakref

import pytest

from tei_operator.controller.heap import HeapFreezer
from tei_operator.metrics import OperatorMetrics


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def _cycle() -> weakref.ref:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a), a


@pytest.fixture(autouse=True)
def _unfrozen():
    yield
    gc.unfreeze()


def test_a_frozen_cycle_is_left_to_the_refresh_and_a_new_one_is_collected() -> None:
    size = [10]
    heap = HeapFreezer(lambda: size[0])
    frozen_ref, frozen = _cycle()
    assert heap.freeze() >= 2 and gc.get_freeze_count() >= 2
    del frozen
    fresh_ref, fresh = _cycle()
    del fresh
    gc.collect()
    assert fresh_ref() is None  # created after the freeze: collected as before
    assert frozen_ref() is not None  # frozen: the full collections no longer traverse it
    heap.refresh()
    assert frozen_ref() is None  # the refresh unfreezes, collects, freezes again


def test_freezes_when_the_store_grew_by_a_quarter_and_refreshes_when_old() -> None:
    size, now = [100], [0.0]
    heap = HeapFreezer(lambda: size[0], refresh_seconds=3600, clock=lambda: now[0])
    assert heap.maybe_freeze() and heap.freezes == 1  # never frozen
    size[0] = 124
    now[0] = 60
    assert not heap.maybe_freeze() and heap.freezes == 1
    size[0] = 125
    assert heap.maybe_freeze() and heap.frozen_size == 125 and heap.freezes == 2
    now[0] = 60 + 3599
    assert not heap.maybe_freeze()
    now[0] = 60 + 3600
    assert heap.maybe_freeze() and heap.freezes == 3 and heap.frozen_at == 3660


def test_release_unfreezes() -> None:
    heap = HeapFreezer(lambda: 1)
    heap.freeze()
    heap.release()
    assert gc.get_freeze_count() == 0 and heap.frozen_size is None


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="growth must be > 1"):
        HeapFreezer(lambda: 1, growth=1.0)


def test_gc_pauses_are_counted_by_generation() -> None:
    metrics = OperatorMetrics(process_collectors=False)
    metrics.watch_gc()
    metrics.watch_gc()  # once only
    try:
        assert gc.callbacks.count(metrics._gc_callback) == 1
        garbage = [[i] for i in range(200_000)]  # something for a full collection to traverse
        gc.collect()
        full = metrics.value("tei_operator_gc_pause_seconds_total", {"generation": "2"})
        assert full > 0
        gc.collect(0)
        assert metrics.value("tei_operator_gc_pause_seconds_total", {"generation": "2"}) == full
        del garbage
    finally:
        gc.callbacks.remove(metrics._gc_callback)
