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


def _cycle() -> tuple[weakref.ref, Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a), a


@pytest.fixture
def heap():
    freezer = HeapFreezer(refresh_seconds=3600, clock=lambda: now[0])
    now[0] = 0.0
    yield freezer
    freezer.release()


now = [0.0]


def test_what_survives_a_full_collection_is_frozen_and_left_to_the_refresh(heap) -> None:
    frozen_ref, frozen = _cycle()
    heap.install()
    assert heap.freezes == 1 and gc.get_freeze_count() > 0
    del frozen
    fresh_ref, fresh = _cycle()
    del fresh
    gc.collect()  # a full collection: frees the new cycle, freezes again
    assert fresh_ref() is None
    assert frozen_ref() is not None  # frozen: full collections no longer traverse it
    assert heap.freezes == 2
    heap.refresh()
    assert frozen_ref() is None  # the refresh unfreezes and collects in full


def test_young_collections_freeze_nothing(heap) -> None:
    heap.install()
    gc.collect(0)
    gc.collect(1)
    assert heap.freezes == 1


def test_refreshes_when_old(heap) -> None:
    heap.install()
    now[0] = 3599
    assert not heap.maybe_refresh()
    now[0] = 3600
    assert heap.maybe_refresh() and heap.frozen_at == 3600


def test_release_stops_freezing(heap) -> None:
    heap.install()
    heap.release()
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert gc.get_freeze_count() == 0 and heap.freezes == 1


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="refresh_seconds must be > 0"):
        HeapFreezer(refresh_seconds=0)


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
