"""The autoscaler's own CPU per tick at N services, without a cluster: `python -m bench.scale.profile_autoscaler`.

Fills the operator's watch-fed store (controller/cache.py) with what the scale benchmark's fleet looks like once
Ready (N services of both kinds over 20 namespaces, half autoscaled, one Ready pod each, their Deployments rendered
by the operator's own render functions, GPU nodes), then runs the real `Autoscaler.tick()` and `fast_tick()` against
that store with a fetcher that answers every pod with the scale benchmark's idle TEI page (no HTTP: what is measured
is the operator's Python around the network). Prints the CPU seconds per main tick and per fast tick, and the top
functions of a cProfile of each (`--profile`).

`--http` reads the pods over HTTP instead, as the operator does (`KeepAliveFetcher`, one kept connection a pod): one
`bench.scale.fakepods` process answers at every pod address (127.0.x.y on loopback, a port of its own), and the
fast tick's CPU then includes the requests (the pods' side is another process, not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import subprocess
import sys
import time
import urllib.request
import uuid

from tei_operator.api import ServiceResource
from tei_operator.autoscaling.loop import FAST_SOURCE, Autoscaler, service_types
from tei_operator.autoscaling.sources.scrape import KeepAliveFetcher, ScrapeSource
from tei_operator.controller.cache import ObjectStore
from tei_operator.controller.heap import HeapFreezer
from tei_operator.render import render_children
from tei_operator.settings import load_settings

from .fakepods import IDLE_METRICS
from .fleet import plan

NOW = 1_800_000_000.0


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def fill(store: ObjectStore, n: int, settings, port: int | None = None) -> int:
    """The fleet of the scale benchmark, Ready, in `store`. Returns the number of autoscaled services. With `port`,
    the pods are at 127.0.x.y:port (where `--http`'s fakepods answers), else at 198.18.x.y on their TEI port."""
    rv = 1000
    kinds = service_types()
    autoscaled = 0
    for i, planned in enumerate(plan(n, "prof")):
        rv += 1
        body = planned.manifest()
        rtype = kinds[planned.kind]
        body["apiVersion"] = rtype.api_version
        body["metadata"].update(uid=str(uuid.uuid4()), resourceVersion=str(rv), generation=1)
        store.put(body)
        autoscaled += planned.autoscaled
        resource = ServiceResource.from_body(body)
        for child in render_children(resource, settings).all():
            rv += 1
            child["metadata"]["resourceVersion"] = str(rv)
            child["metadata"]["uid"] = str(uuid.uuid4())
            store.put(child)
            if child["kind"] != "Deployment":
                continue
            template = child["spec"]["template"]
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {**template["metadata"], "name": f"{child['metadata']['name']}-abc{i}",
                                "namespace": planned.namespace, "uid": str(uuid.uuid4()),
                                "resourceVersion": str(rv + 1), "creationTimestamp": _stamp(NOW - 3600)},
                   "spec": {**template["spec"], "nodeName": f"gpu-{i % 10}"},
                   "status": {"phase": "Running", "podIP": f"{'127.0' if port else '198.18'}.{i // 250}.{i % 250 + 1}",
                              "conditions": [{"type": "Ready", "status": "True",
                                              "lastTransitionTime": _stamp(NOW - 3000)}]}}
            if port:
                pod["spec"] = {**pod["spec"], "containers": [
                    {**c, "ports": [{**x, "containerPort": port} for x in c.get("ports") or []]}
                    for c in pod["spec"]["containers"]]}
            rv += 1
            store.put(pod)
    for node in range(10):
        store.put({"apiVersion": "v1", "kind": "Node",
                   "metadata": {"name": f"gpu-{node}", "uid": str(uuid.uuid4()), "resourceVersion": "1",
                                "labels": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}},
                   "status": {"allocatable": {"nvidia.com/gpu": "100", "pods": "110", "cpu": "64",
                                              "memory": "512Gi"}}})
    store.nodes_watched = True
    return autoscaled


class StoreWrites:
    """A KubeClient stand-in: status patches go into the store (the first ticks write each service's status once),
    any other request fails. `writes` counts the patches: an idle tick after those must send none."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.writes = 0

    def register(self, rtype) -> None:
        return None

    async def patch(self, rtype, name, namespace, document, **kwargs):
        self.writes += 1
        body = self.store.get_now(rtype, name, namespace)
        status = dict(body.get("status") or {})
        for key, value in document["status"].items():
            if value is None:
                status.pop(key, None)
            elif key == "autoscaling":
                status[key] = {k: ({x: y for x, y in v.items() if y is not None} if isinstance(v, dict) else v)
                               for k, v in value.items() if v is not None}
            else:
                status[key] = value
        meta = {**body["metadata"], "resourceVersion": str(int(body["metadata"]["resourceVersion"]) + 100000)}
        return {**body, "metadata": meta, "status": status}

    def __getattr__(self, name):
        async def refuse(*args, **kwargs):
            raise AssertionError(f"the idle tick called kube.{name}")
        return refuse


async def idle_page(pod) -> str:
    return IDLE_METRICS


def start_fakepods() -> tuple[subprocess.Popen, int]:
    """`bench.scale.fakepods` on a free port of 0.0.0.0, once it answers."""
    from tests.cluster.harness import free_port

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "bench.scale.fakepods", "--port", str(port)])
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
            return process, port
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("bench.scale.fakepods did not start") from None
            time.sleep(0.1)


def cpu(work, profile: bool) -> tuple[float, str]:
    profiler = cProfile.Profile() if profile else None
    started = time.process_time()
    if profiler:
        profiler.enable()
    asyncio.get_event_loop().run_until_complete(work())
    if profiler:
        profiler.disable()
    seconds = time.process_time() - started
    text = ""
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
        text = out.getvalue()
    return seconds, text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale.profile_autoscaler", description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=5, help="ticks of each kind measured (after one warm-up)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the last tick of each kind")
    parser.add_argument("--no-freeze", action="store_true", help="leave the filled store in the garbage collector's "
                        "generations (the operator freezes it: controller/heap.py)")
    parser.add_argument("--http", action="store_true", help="the fast tick reads the pods over HTTP from one "
                        "bench.scale.fakepods process (127.0.x.y), as the operator does")
    args = parser.parse_args(argv)
    settings = load_settings(metrics_source="scrape")
    store = ObjectStore()
    pods, port = start_fakepods() if args.http else (None, None)
    try:
        return _run(args, settings, store, port)
    finally:
        if pods is not None:
            pods.terminate()
            pods.wait(10)


def _run(args, settings, store: ObjectStore, port: int | None) -> int:
    autoscaled = fill(store, args.services, settings, port)
    if not args.no_freeze:  # as the operator does once its store is filled (controller/heap.py)
        HeapFreezer().install()
    clock = [NOW]
    sources = {"scrape": ScrapeSource(idle_page, timeout=5, window=60),
               FAST_SOURCE: ScrapeSource(KeepAliveFetcher() if port else idle_page, timeout=2, window=10)}
    kube = StoreWrites(store)
    scaler = Autoscaler(kube, settings, sources=sources, clock=lambda: clock[0], cache=store)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    results = {}
    for _ in range(3):  # warm-up: every status written once, the rates of two scrapes known
        clock[0] += 15
        loop.run_until_complete(scaler.tick())
    settled = kube.writes
    for what, tick, period in (("main tick", scaler.tick, 15.0), ("fast tick", scaler.fast_tick, 2.0)):
        times = []
        text = ""
        for i in range(args.ticks + 1):
            clock[0] += period
            seconds, text = cpu(tick, args.profile and i == args.ticks)
            if i:
                times.append(seconds)
        times.sort()
        results[what] = (times[len(times) // 2], period)
        if text:
            print(f"--- {what} ---\n{text}")
    how = "the fast tick over HTTP (fakepods)" if port else "no HTTP"
    print(f"N = {args.services} services ({autoscaled} autoscaled, one Ready pod each), store only, {how}; "
          f"status writes after the warm-up: {kube.writes - settled}")
    for what, (seconds, period) in results.items():
        print(f"  {what}: {seconds * 1000:.1f} ms CPU (median of {args.ticks}), every {period:g} s: "
              f"{seconds * 60 / period:.2f} CPU-s per minute")
    loop.run_until_complete(scaler.close())
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
