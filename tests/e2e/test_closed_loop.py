"""The closed scaling loop on a real control plane: operator + scarce GPU cluster + Prometheus + emulated TEI.

What it shows, with assertions on the Deployment's replicas over time (the timeline is printed on failure):
1. Prometheus source: a load step scales up within two ticks of Prometheus seeing it; replicas stop at the GPU
   capacity of the matching nodes (4 A100 GPUs) and ScalingLimited says GpuCapacity; load ending scales down only
   after the stabilization window (20 s), not before; stopping Prometheus mid-run never scales down, and
   ScalingLimited says MetricsUnavailable; metrics coming back clear it.
2. The built-in scrape source (scrape_via=podip, no Prometheus) drives the same loop: up under load, held at
   maxReplicas (ScalingLimited MaxReplicas), down after the window once the load ends.

scrape_via=proxy (through the API server's pod proxy) is tested against emulated pods in
tests/integration/test_service_routing.py.

TEI facts relied on: te_queue_size counts inputs waiting; 429 when the concurrency permits are used up; /health
answers only once the model is loaded (the emulator models it).
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from tei_operator.emulator.loadgen import run_load
from tests.kstatus import kstatus

from .conftest import TICK_SECONDS, Timeline, start_operator

pytestmark = [pytest.mark.cluster, pytest.mark.e2e, pytest.mark.timeout(600)]

WINDOW = 20  # spec.autoscaling.scaleDown.stabilizationWindowSeconds
TARGET_QUEUE = 16
GPU_CAPACITY = 4  # LAYOUT: one A100 node with 4 GPUs
# The test's own reading of "Prometheus sees the step": the operator's queue signal (rate window = 4 ticks = 10 s).
RATE_WINDOW = "10s"
# API round trips, the 0.5 s sampling of the timeline and a loaded 2-core machine, on top of the two ticks.
SLACK = 3.0


def autoscaled(name: str, namespace: str, max_replicas: int) -> dict:
    return {
        "apiVersion": "tei-operator.io/v1alpha1", "kind": "EmbeddingService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"id": "BAAI/bge-m3"},
            "gpu": {"count": 1, "type": "a100"},
            # kwok leaves the pods not Ready until their emulator answers /health (emulated_pods marks them)
            "podAnnotations": {"sim.tei-operator.io/readiness": "external"},
            "autoscaling": {
                "enabled": True, "minReplicas": 1, "maxReplicas": max_replicas,
                "targetQueueSize": TARGET_QUEUE, "startupGraceSeconds": 30, "metricsMaxAgeSeconds": 10,
                "scaleUp": {"periodSeconds": 2},
                "scaleDown": {"stabilizationWindowSeconds": WINDOW, "periodSeconds": 2, "maxPodsStep": 1},
            },
        },
    }


class Load:
    """An open-loop load whose rate the test sets (0 = off), sent round-robin to the Ready emulators."""

    def __init__(self, pods, namespace: str) -> None:
        self.rate = 0.0
        self.summary = None
        self.task = asyncio.create_task(self._run(pods, namespace))

    async def _run(self, pods, namespace: str) -> None:
        self.summary = await run_load(lambda: pods.urls(namespace=namespace), lambda _t: self.rate, duration=3600,
                                      inputs_per_request=8, words_per_input=50, max_in_flight=800, timeout=10,
                                      seed=7)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def wait(predicate, timeout: float, what: str, timeline: Timeline, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        await asyncio.sleep(interval)
    pytest.fail(f"Timed out after {timeout:.0f}s waiting for {what}\n{timeline.format()}")


def replicas_of(reader, namespace, name) -> int | None:
    dep = reader.deployment(namespace, name)
    return None if dep is None else dep["spec"].get("replicas")


def ready_of(reader, namespace, name) -> int:
    dep = reader.deployment(namespace, name) or {}
    return int((dep.get("status") or {}).get("readyReplicas") or 0)


def metric_failures(reader, namespace, name) -> int:
    svc = reader.service(namespace, name) or {}
    return int(((svc.get("status") or {}).get("autoscaling") or {}).get("consecutiveMetricFailures") or 0)


def limited(reader, namespace, name) -> tuple[str, str] | None:
    svc = reader.service(namespace, name) or {}
    cond = next((c for c in (svc.get("status") or {}).get("conditions") or []
                 if c["type"] == "ScalingLimited"), None)
    return None if cond is None else (cond["status"], cond["reason"])


@pytest.fixture
def namespace(scarce_cluster):
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    scarce_cluster.kubectl("create", "namespace", name)
    yield name
    scarce_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
    # Free the 4 GPUs for the next test: wait for the pods to be gone (kwok deletes them at once).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = scarce_cluster.kubectl("get", "pods", "-n", name, "-o", "name", check=False).stdout.strip()
        if not out:
            break
        time.sleep(0.5)


async def test_prometheus_source_closed_loop(request, scarce_cluster, prometheus, emulated_pods, reader, workdir,
                                            namespace):
    operator = start_operator(scarce_cluster, workdir, "operator-prometheus", {
        "TEI_OPERATOR_METRICS_SOURCE": "prometheus", "TEI_OPERATOR_PROMETHEUS_URL": prometheus.url})
    request.node._e2e_operator = operator
    name = "bge"
    timeline = Timeline(reader, namespace, name, prometheus)
    request.node._e2e_timeline = timeline
    load = Load(emulated_pods, namespace)
    try:
        scarce_cluster.apply(autoscaled(name, namespace, max_replicas=8))
        await wait(lambda: ready_of(reader, namespace, name) >= 1, 60, "the first replica to be Ready", timeline)
        await wait(lambda: prometheus.scalar(f'up{{namespace="{namespace}"}}') == 1, 30,
                   "Prometheus to scrape the first replica", timeline)
        await wait(lambda: limited(reader, namespace, name) == ("False", "WithinLimits"), 30,
                   "the autoscaler's first status", timeline)
        assert replicas_of(reader, namespace, name) == 1

        # 1. Load step: 40 requests/s against ~7.7/s per replica.
        t_step = timeline.mark("load step to 40 requests/s")
        load.rate = 40.0
        seen_query = (f'sum(avg_over_time(te_queue_size{{namespace="{namespace}"}}[{RATE_WINDOW}])) > '
                      f'{TARGET_QUEUE * 1.1} or sum(rate(te_request_failure{{namespace="{namespace}",'
                      f'err="overloaded"}}[{RATE_WINDOW}])) > 0')
        await wait(lambda: prometheus.scalar(seen_query) is not None, 30, "Prometheus to see the load step",
                   timeline, interval=0.1)
        t_seen = timeline.mark("Prometheus sees the step (queue/replica > target or 429s)")
        await wait(lambda: (replicas_of(reader, namespace, name) or 0) > 1, 2 * TICK_SECONDS + SLACK + 5,
                   "a scale-up", timeline)
        t_up = timeline.mark("scaled up")
        assert t_up - t_seen <= 2 * TICK_SECONDS + SLACK, (
            f"scale-up {t_up - t_seen:.1f}s after Prometheus saw the step (want <= 2 ticks + {SLACK}s)\n"
            f"{timeline.format()}")
        assert t_up > t_step

        # 2. Growth stops at the GPU capacity, and ScalingLimited says why.
        await wait(lambda: limited(reader, namespace, name) == ("True", "GpuCapacity"), 60,
                   "ScalingLimited=True/GpuCapacity", timeline)
        await wait(lambda: ready_of(reader, namespace, name) == GPU_CAPACITY, 30, "4 Ready replicas", timeline)
        t_cap = timeline.mark("at GPU capacity")
        await asyncio.sleep(4 * TICK_SECONDS)  # keep the pressure on for a few more ticks
        over = [(t, r) for t, r in timeline.replicas_at_or_after(t_step) if r > GPU_CAPACITY]
        assert not over, f"asked for more replicas than the 4 GPUs hold: {over}\n{timeline.format()}"
        assert limited(reader, namespace, name) == ("True", "GpuCapacity")
        # The STATUS column says so, and the service at capacity is serving and done for kstatus (Flux, Argo CD).
        at_capacity = reader.service(namespace, name)
        assert at_capacity["status"]["summary"] == "LimitedByGpuCapacity"
        assert kstatus(at_capacity) == "Current"
        pending = scarce_cluster.kubectl("get", "pods", "-n", namespace, "--field-selector=status.phase=Pending",
                                         "-o", "name").stdout.split()
        assert pending == [], f"pods left Pending: {pending}"
        assert t_cap > t_up

        # 3. Load ends: no scale-down before the stabilization window, then one.
        load.rate = 0.0
        t_end = timeline.mark("load off")
        await wait(lambda: (replicas_of(reader, namespace, name) or 0) < GPU_CAPACITY, WINDOW + 40,
                   "the scale-down after the load ended", timeline)
        t_down = timeline.mark("first scale-down")
        assert t_down - t_end >= WINDOW - 1.0, (
            f"scaled down {t_down - t_end:.1f}s after the load ended, before the {WINDOW}s window\n"
            f"{timeline.format()}")

        # 4. Prometheus stops mid-run: never scale down on missing metrics; say so.
        at_outage = replicas_of(reader, namespace, name)
        prometheus.stop()
        t_out = timeline.mark(f"Prometheus stopped at {at_outage} replicas")
        await wait(lambda: limited(reader, namespace, name) == ("True", "MetricsUnavailable"), 4 * TICK_SECONDS + 5,
                   "ScalingLimited=True/MetricsUnavailable", timeline)
        # The autoscaler looks every tick and counts each tick it could not read in its own metrics (the status
        # counts only up to failureThreshold, so an outage does not rewrite it every tick): wait until it has failed
        # for longer than a full scale-down window (plus four ticks), then check it held.
        failed_ticks = int(WINDOW / TICK_SECONDS) + 4
        unavailable = lambda: operator.metric_sum("tei_operator_autoscaler_decisions_total",  # noqa: E731
                                                  limit="MetricsUnavailable")
        before = unavailable()
        await wait(lambda: unavailable() - before >= failed_ticks, (failed_ticks + 10) * TICK_SECONDS,
                   f"{failed_ticks} failed metric reads in a row", timeline)
        assert metric_failures(reader, namespace, name) == 3  # the default failureThreshold: counted up to it
        during = [r for t, r in timeline.replicas_at_or_after(t_out)]
        assert during and min(during) == at_outage, (
            f"replicas changed during the metrics outage: {sorted(set(during))} (had {at_outage})\n"
            f"{timeline.format()}")

        # 5. Metrics back: the condition clears.
        prometheus.start()
        timeline.mark("Prometheus restarted")
        await wait(lambda: (limited(reader, namespace, name) or ("", ""))[1] != "MetricsUnavailable", 30,
                   "ScalingLimited to leave MetricsUnavailable", timeline)
        events = scarce_cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                                        f"involvedObject.name={name},involvedObject.kind=EmbeddingService",
                                        "-o", "jsonpath={range .items[*]}{.reason}|{.message}{'\\n'}{end}").stdout
        assert "ScaledUp|Scaled up from 1 to" in events
        assert "ScaledDown|Scaled down from 4 to 3" in events
    finally:
        await load.close()
        timeline.stop()
        operator.stop()
        if prometheus.proc is None:
            prometheus.start()
    print(timeline.format())


async def test_scrape_source_drives_the_same_loop(request, scarce_cluster, emulated_pods, reader, workdir,
                                                  namespace):
    operator = start_operator(scarce_cluster, workdir, "operator-scrape", {
        "TEI_OPERATOR_METRICS_SOURCE": "scrape", "TEI_OPERATOR_SCRAPE_VIA": "podip"})
    request.node._e2e_operator = operator
    name = "bge-scrape"
    timeline = Timeline(reader, namespace, name, None)
    request.node._e2e_timeline = timeline
    load = Load(emulated_pods, namespace)
    try:
        scarce_cluster.apply(autoscaled(name, namespace, max_replicas=3))
        await wait(lambda: ready_of(reader, namespace, name) >= 1, 60, "the first replica to be Ready", timeline)
        await wait(lambda: limited(reader, namespace, name) == ("False", "WithinLimits"), 30,
                   "the autoscaler's first status", timeline)
        load.rate = 30.0
        t_step = timeline.mark("load step to 30 requests/s")
        await wait(lambda: (replicas_of(reader, namespace, name) or 0) > 1, 8 * TICK_SECONDS, "a scale-up",
                   timeline)
        timeline.mark("scaled up")
        await wait(lambda: limited(reader, namespace, name) == ("True", "MaxReplicas"), 60,
                   "ScalingLimited=True/MaxReplicas", timeline)
        await wait(lambda: ready_of(reader, namespace, name) == 3, 30, "3 Ready replicas", timeline)
        assert max(r for _, r in timeline.replicas_at_or_after(t_step)) == 3
        load.rate = 0.0
        t_end = timeline.mark("load off")
        await wait(lambda: (replicas_of(reader, namespace, name) or 0) < 3, WINDOW + 40,
                   "the scale-down after the load ended", timeline)
        t_down = timeline.mark("first scale-down")
        assert t_down - t_end >= WINDOW - 1.0, (
            f"scaled down {t_down - t_end:.1f}s after the load ended, before the {WINDOW}s window\n"
            f"{timeline.format()}")
    finally:
        await load.close()
        timeline.stop()
        operator.stop()
    print(timeline.format())
