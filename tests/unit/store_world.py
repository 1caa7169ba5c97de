"""An autoscaler over the watch-fed store filled like the scale benchmark's fleet (bench/scale/profile_autoscaler.py),
with its pods' /metrics answered by a function and its clock in the test's hands: what the store-level tests of the
main tick and the fast path share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bench.scale.profile_autoscaler import NOW, StoreWrites, fill
from tei_operator.autoscaling.loop import FAST_SOURCE, Autoscaler
from tei_operator.autoscaling.sources import PodTarget
from tei_operator.autoscaling.sources.scrape import ScrapeSource
from tei_operator.controller.cache import ObjectStore
from tei_operator.settings import load_settings


@dataclass
class StoreWorld:
    store: ObjectStore
    scaler: Autoscaler
    kube: StoreWrites
    clock: list[float]
    autoscaled: int


def store_world(services: int, page: Callable[[PodTarget], Awaitable[str]],
                kube: type[StoreWrites] = StoreWrites) -> StoreWorld:
    """`services` services (half autoscaled) with one Ready pod each; the main tick reads a 60 s window, the fast
    path a 10 s one, both through `page`; status writes land in the store (`kube`, counted)."""
    settings = load_settings(metrics_source="scrape")
    store = ObjectStore()
    autoscaled = fill(store, services, settings)
    clock = [NOW]
    writes = kube(store)
    scaler = Autoscaler(writes, settings, clock=lambda: clock[0], cache=store,
                        sources={"scrape": ScrapeSource(page, timeout=2, window=60),
                                 FAST_SOURCE: ScrapeSource(page, timeout=2, window=10)})
    return StoreWorld(store, scaler, writes, clock, autoscaled)
