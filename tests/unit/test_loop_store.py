"""The autoscaler over the watch-fed store at rest (no cluster: the store filled as the scale benchmark's fleet is
once Ready, by bench/scale/profile_autoscaler.py): an idle tick writes nothing, the fast path reads only pods whose
service could still scale up, and rebuilds what it reads only when the store changed."""

from __future__ import annotations

import asyncio
import copy

from bench.scale.fakepods import IDLE_METRICS
from tei_operator.autoscaling.sources import PodTarget
from tei_operator.kube import DEPLOYMENT

from .store_world import store_world


def world(n: int):
    read: list[str] = []

    async def page(pod: PodTarget) -> str:
        read.append(pod.name)
        return IDLE_METRICS

    w = store_world(n, page)
    return w.store, w.scaler, w.kube, w.clock, read, w.autoscaled


def test_an_idle_tick_writes_no_status_once_the_first_ones_said_what_they_saw():
    store, scaler, kube, clock, read, autoscaled = world(8)
    loop = asyncio.new_event_loop()
    try:
        for _ in range(3):  # the first tick writes every status; the second the rates (two scrapes)
            clock[0] += 15
            loop.run_until_complete(scaler.tick())
        assert kube.writes >= autoscaled
        settled = kube.writes
        for _ in range(20):  # five idle minutes
            clock[0] += 15
            outcomes = loop.run_until_complete(scaler.tick())
            assert len(outcomes) == autoscaled and all(o.decision.action == "Hold" for o in outcomes)
        assert kube.writes == settled
    finally:
        loop.close()


def test_the_fast_path_reads_only_services_below_max_and_rebuilds_its_views_on_a_change():
    store, scaler, kube, clock, read, autoscaled = world(8)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(scaler.fast_tick())
        assert len(read) == autoscaled == 4
        kept = scaler._fast_kept  # noqa: SLF001 - what the next tick reuses
        read.clear()
        loop.run_until_complete(scaler.fast_tick())
        assert len(read) == 4 and scaler._fast_kept is kept  # noqa: SLF001 - nothing changed: reused
        # One service reaches maxReplicas (4): its pods are no longer read by the fast path.
        name = sorted({p.split("-abc")[0] for p in read})[0]
        deployment = copy.deepcopy(next(d for d in store.list_now(DEPLOYMENT) if d["metadata"]["name"] == name))
        deployment["spec"]["replicas"] = 4
        deployment["metadata"]["resourceVersion"] = str(int(deployment["metadata"]["resourceVersion"]) + 10**6)
        store.put(deployment)
        read.clear()
        loop.run_until_complete(scaler.fast_tick())
        assert len(read) == 3 and not any(p.startswith(name + "-") for p in read)
    finally:
        loop.close()


def test_the_main_tick_keeps_what_it_looks_at_while_the_store_is_unchanged_and_sees_a_new_gpu_node():
    store, scaler, kube, clock, read, autoscaled = world(8)
    loop = asyncio.new_event_loop()
    try:
        for _ in range(3):  # the first ticks write every status (a change of the store)
            clock[0] += 15
            loop.run_until_complete(scaler.tick())
        kept = scaler._kept  # noqa: SLF001 - what the next tick reuses
        services, _, usage, views = kept[1]
        assert len(views) == len(services) == autoscaled and usage is not None and len(usage.nodes) == 10
        clock[0] += 15
        loop.run_until_complete(scaler.tick())
        assert scaler._kept is kept  # noqa: SLF001 - nothing changed: reused
        node = copy.deepcopy(usage.nodes[0])
        node["metadata"].update(name="gpu-new", uid="new-node-uid")
        store.put(node)
        clock[0] += 15
        outcomes = loop.run_until_complete(scaler.tick())
        assert scaler._kept is not kept and len(scaler._kept[1][2].nodes) == 11  # noqa: SLF001
        assert len(outcomes) == autoscaled and all(o.error is None for o in outcomes)
    finally:
        loop.close()
