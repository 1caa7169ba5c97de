"""The autoscaler's status writes are bounded by the states a service goes through, not by how long each lasts
(issue #10): while it is created (at 1,000 services creation takes four minutes) and while its metrics cannot be
read (a Prometheus outage: one write per tick per autoscaled service would be ~2,000 writes a minute at 1,000
services). The main tick runs over the watch-fed store as the scale benchmark's fleet fills it
(bench/scale/profile_autoscaler.py)."""

from __future__ import annotations

import asyncio
import copy

from bench.scale.fakepods import IDLE_METRICS
from bench.scale.profile_autoscaler import StoreWrites, _stamp
from tei_operator.autoscaling.sources import PodTarget
from tei_operator.autoscaling.sources.scrape import ScrapeError
from tei_operator.kube import POD

from .store_world import store_world

TICK = 15.0
HELD = 3  # ticks each state lasts


def _ticks(w, loop: asyncio.AbstractEventLoop, n: int) -> list[int]:
    """`n` main ticks, TICK apart; the status writes of each."""
    out = []
    for _ in range(n):
        before = w.kube.writes
        w.clock[0] += TICK
        outcomes = loop.run_until_complete(w.scaler.tick())
        assert len(outcomes) == w.autoscaled and not any(o.error for o in outcomes), outcomes
        out.append(w.kube.writes - before)
    return out


def test_each_creation_state_is_written_once_however_long_it_lasts():
    serving = [False]

    async def page(pod: PodTarget) -> str:
        if not serving[0]:
            raise ScrapeError("connection refused")  # the server is not up before the pod is Ready
        return IDLE_METRICS

    w = store_world(4, page)
    store, clock, autoscaled = w.store, w.clock, w.autoscaled
    ready = [copy.deepcopy(p) for p in store.list_now(POD)]
    for p in ready:
        store.delete(p)
    version = [10**7]

    def pods(phase: str, is_ready: bool) -> None:
        for p in ready:
            version[0] += 1
            q = copy.deepcopy(p)
            q["metadata"]["resourceVersion"] = str(version[0])
            q["status"]["phase"] = phase
            q["status"]["conditions"] = [{"type": "Ready", "status": "True" if is_ready else "False",
                                          "lastTransitionTime": _stamp(clock[0])}]
            store.put(q)

    writes: list[list[int]] = []
    loop = asyncio.new_event_loop()
    try:
        def state(change) -> None:
            change()
            writes.append(_ticks(w, loop, HELD))

        state(lambda: None)                        # the Deployment, no pod yet
        state(lambda: pods("Pending", False))      # scheduled, pulling
        state(lambda: pods("Running", False))      # loading the model
        state(lambda: pods("Running", True))       # Ready, its /metrics not answering yet
        state(lambda: serving.__setitem__(0, True))  # read: rates from the second read on
    finally:
        loop.close()
    # Nothing is written while a state lasts: only its first tick (and the rates' first tick) may write.
    assert all(sum(per_tick[2:]) == 0 for per_tick in writes), writes
    total = sum(sum(per_tick) for per_tick in writes)
    assert total <= 4 * autoscaled, writes
    assert total >= 2 * autoscaled, writes  # it does say what it sees: waiting, then the rates


class _CountEvents(StoreWrites):
    events = 0

    async def create_event(self, *args, **kwargs):
        self.events += 1


def test_a_metrics_outage_writes_each_service_failure_threshold_times_not_every_tick():
    up = [True]

    async def page(pod: PodTarget) -> str:
        if not up[0]:
            raise ScrapeError("connection refused")
        return IDLE_METRICS

    w = store_world(4, page, kube=_CountEvents)
    scaler, kube, autoscaled = w.scaler, w.kube, w.autoscaled
    loop = asyncio.new_event_loop()
    try:
        def ticks(n: int) -> list[int]:
            return _ticks(w, loop, n)

        ticks(4)  # settled: the first reads' statuses written
        assert ticks(2) == [0, 0]
        up[0] = False  # the pods' /metrics stop answering: stale after metrics_stale_seconds (60 s, four ticks)
        during = ticks(20)
        limited = [o.decision.limited_by for o in loop.run_until_complete(scaler.tick())]
    finally:
        loop.close()
    assert limited == ["MetricsUnavailable"] * autoscaled  # the outage is seen, and said
    threshold = 3  # spec.autoscaling.failureThreshold's default
    assert sum(during) == threshold * autoscaled, during  # failure 1, 2, then "3 or more"
    assert sum(during[-10:]) == 0, during
    assert kube.events == autoscaled  # one Warning each when it began
