"""The autoscaler loop (`Autoscaler.tick()`) against the real control plane: one failing service does not stop the
others, unknown metrics never scale down, a fresh autoscaler watches a full window before scaling down, GPU
capacity stops the growth, status is written only when it changed and keeps the controller's conditions, a conflict
on the conditions list is retried on the fresh object, and turning autoscaling off clears the autoscaler's status.

Everything the loop reads and writes is real: the EmbeddingService objects, the rendered Deployments (the
Deployment controller makes the pods, the scheduler places them on the simulated A100 nodes, kwok makes them
Ready), the nodes' GPU allocatable, status writes and their resourceVersions, Events. Two things are the test's:
- the metrics: a static `MetricsSource` (metrics are not the API server; each test sets what the pods report);
- the clock: epoch seconds that move only when the test says so, caught up to real time once a service's pods are
  Ready, so pod timestamps from the API server are never in its future and the windows are exact.

The session's operator is stopped for this module (as in test_status_writes.py): its own autoscaler and controller
would otherwise act on these services at the same time. The test plays the controller where one is needed: it
writes the Ready condition and applies the rendered Deployment.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from tei_operator.api import ServiceResource
from tei_operator.autoscaling.loop import Autoscaler, TickOutcome, is_ready, service_types
from tei_operator.autoscaling.sources import MetricsSource, PodMetrics, ServiceTarget, SourceResult
from tei_operator.kube import DEPLOYMENT, EVENT, NAMESPACE, NODE, POD, KubeApiError, KubeClient
from tei_operator.render import labels, render_children
from tei_operator.settings import Settings, load_settings

from .conftest import API_VERSION

pytestmark = pytest.mark.cluster

GPU = "nvidia.com/gpu"
A100_PRODUCT = "NVIDIA-A100-SXM4-80GB"
CONTROLLER = "tei-operator"
AUTOSCALER = "tei-operator-autoscaler"
SVC = service_types()["EmbeddingService"]
READY = {"type": "Ready", "status": "True", "reason": "AllReplicasReady", "message": "All replicas are ready",
         "lastTransitionTime": "2026-01-01T00:00:00Z"}
WAIT_SECONDS = 30.0


class StaticSource(MetricsSource):
    """Every Ready pod of a service reports `queue[name]` inputs waiting; None: the whole source is down."""

    name = "scrape"

    def __init__(self) -> None:
        self.queue: dict[str, float | None] = {}

    async def fetch(self, services: Sequence[ServiceTarget], now: float) -> SourceResult:
        pods: dict[str, PodMetrics] = {}
        for service in services:
            q = self.queue.get(service.name, 0.0)
            if q is None:
                return SourceResult(pods={}, error="connection refused")
            for pod in service.pods:
                pods[pod.uid] = PodMetrics(observed_at=now, queue_size=q, batch_tokens_rate=1000.0,
                                           batch_count_rate=1.0, zero_batch_rate=0.0, overloaded_rate=0.0,
                                           request_rate=1.0, success_rate=1.0)
        return SourceResult(pods=pods)


class StepClock:
    """Epoch seconds that move only by `advance()`, or to real time by `catch_up()` (never backwards)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def catch_up(self) -> None:
        self.now = max(self.now, time.time())


def embedding(name: str, namespace: str, *, enabled: bool = True, window: int = 20, max_replicas: int = 8,
              target_queue: int = 16) -> dict:
    """An autoscaled A100 EmbeddingService with a short scale-down window and period."""
    return {"apiVersion": API_VERSION, "kind": "EmbeddingService", "metadata": {"name": name, "namespace": namespace},
            "spec": {"model": {"id": "BAAI/bge-m3"}, "gpu": {"count": 1, "type": "a100"},
                     "autoscaling": {"enabled": enabled, "minReplicas": 1, "maxReplicas": max_replicas,
                                     "targetQueueSize": target_queue, "startupGraceSeconds": 60,
                                     "scaleDown": {"stabilizationWindowSeconds": window, "periodSeconds": 1}}}}


async def poll(check: Callable[[], Awaitable[Any]], what: str, timeout: float = WAIT_SECONDS) -> Any:
    """Await `check()` until it returns something truthy; fail the test naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"Timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.2)


async def gpus_held_on_a100(kube: KubeClient, namespace: str) -> tuple[int, int] | None:
    """(allocatable GPUs of the A100 nodes, GPUs held there by pods of other namespaces); None while pods of
    other tests are still going away (their namespaces are deleted without waiting), which would move the numbers."""
    nodes = await kube.list(NODE, label_selector=f"nvidia.com/gpu.product={A100_PRODUCT}")
    names = {n["metadata"]["name"] for n in nodes}
    allocatable = sum(int(n["status"]["allocatable"][GPU]) for n in nodes)
    active = {ns["metadata"]["name"] for ns in await kube.list(NAMESPACE) if ns["status"].get("phase") == "Active"}
    held = 0
    for pod in await kube.list(POD):
        if pod["spec"].get("nodeName") not in names or pod["status"].get("phase") in ("Succeeded", "Failed") \
                or pod["metadata"]["namespace"] == namespace:
            continue
        if pod["metadata"].get("deletionTimestamp") or pod["metadata"]["namespace"] not in active:
            return None
        held += sum(int((c.get("resources") or {}).get("limits", {}).get(GPU, 0)) for c in pod["spec"]["containers"])
    return allocatable, held


class World:
    """One test's namespace, its client, the static metrics, the clock and the autoscaler under test."""

    def __init__(self, cluster: Any, kube: KubeClient, namespace: str) -> None:
        self.cluster = cluster
        self.kube = kube
        self.namespace = namespace
        self.settings: Settings = load_settings(autoscaler_tick_seconds=2, metrics_stale_seconds=30,
                                                metrics_source="scrape", namespaces=[namespace])
        self.source = StaticSource()
        self.clock = StepClock()
        self.scaler = self.autoscaler(kube)

    def autoscaler(self, kube: Any) -> Autoscaler:
        return Autoscaler(kube, self.settings, sources={"scrape": self.source}, clock=self.clock)

    async def add(self, name: str, replicas: int, **spec: Any) -> dict:
        """Create the service (kubectl apply), write the controller's Ready condition, apply the rendered Deployment
        with `replicas`, and wait until that many pods are Ready. Returns the live service."""
        self.cluster.apply(embedding(name, self.namespace, **spec))
        live = await self.kube.get(SVC, name, self.namespace)
        ready = {**READY, "observedGeneration": live["metadata"]["generation"]}
        await self.kube.patch_status(SVC, name, self.namespace, {"conditions": [ready]}, field_manager=CONTROLLER)
        deployment = render_children(ServiceResource.from_body(live), self.settings).deployment
        deployment["spec"]["replicas"] = replicas  # the autoscaler's force-apply takes the field over
        await self.kube.apply(deployment, CONTROLLER)
        await self.settle(name)
        return await self.kube.get(SVC, name, self.namespace)

    async def quiet_a100(self) -> tuple[int, int]:
        """Wait until no pod of another test is leaving the A100 nodes (their free GPUs are part of what the loop
        reports and decides on); returns (allocatable GPUs, GPUs held by other namespaces)."""
        return await poll(lambda: gpus_held_on_a100(self.kube, self.namespace),
                          "the pods of earlier tests to leave the A100 nodes")

    async def pods(self, name: str) -> list[dict]:
        selector = labels.selector_string(ServiceResource.from_body(await self.kube.get(SVC, name, self.namespace)))
        return [p for p in await self.kube.list(POD, self.namespace, label_selector=selector)
                if not p["metadata"].get("deletionTimestamp")]

    async def no_pods(self) -> bool:
        return not await self.kube.list(POD, self.namespace)

    async def settle(self, name: str) -> None:
        """Wait until the Deployment's replicas are all there and Ready (and no others), then catch the clock up."""
        async def settled() -> bool:
            pods = await self.pods(name)
            return len(pods) == await self.replicas(name) and all(is_ready(p) for p in pods)
        await poll(settled, f"the pods of {self.namespace}/{name} to be Ready")
        self.clock.catch_up()

    async def tick(self) -> dict[str, TickOutcome]:
        return {o.service.rsplit("/", 1)[-1]: o for o in await self.scaler.tick()}

    async def replicas(self, name: str) -> int:
        return int((await self.kube.get(DEPLOYMENT, name, self.namespace))["spec"]["replicas"])

    async def service(self, name: str) -> dict:
        return await self.kube.get(SVC, name, self.namespace)

    async def status(self, name: str) -> dict:
        return (await self.service(name)).get("status") or {}

    async def condition(self, name: str, ctype: str) -> dict | None:
        return next((c for c in (await self.status(name)).get("conditions") or [] if c["type"] == ctype), None)

    async def events(self, name: str, reason: str) -> list[dict]:
        items = await self.kube.list(EVENT, self.namespace, field_selector=f"involvedObject.name={name}")
        return sorted((e for e in items if e.get("reason") == reason), key=lambda e: e["metadata"]["creationTimestamp"])


@pytest.fixture(scope="module")
def operator_stopped(operator):
    """Stop the session's operator for this module; start it again afterwards."""
    operator.stop()
    try:
        yield
    finally:
        if not operator.alive():
            operator.start()


@pytest.fixture
async def world(cluster, crds, kubeconfig, namespace, operator_stopped):
    kube = KubeClient.from_environment(kubeconfig)
    try:
        yield World(cluster, kube, namespace)
    finally:
        kube.close()


async def test_one_failing_service_does_not_stop_the_others(world, cluster):
    # An admission policy (as Gatekeeper or Kyverno would) refuses any change of broken's replicas: a real 422.
    name = f"freeze-{world.namespace}"
    await world.add("good", 2)
    await world.add("broken", 2)
    cluster.apply([
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
         "metadata": {"name": name},
         "spec": {"failurePolicy": "Fail",
                  "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                                                          "operations": ["UPDATE"], "resources": ["deployments"]}]},
                  "matchConditions": [{"name": "broken-only", "expression": "object.metadata.name == 'broken'"}],
                  "validations": [{"expression": "object.spec.replicas == oldObject.spec.replicas",
                                   "message": "replicas of broken are frozen by the test's policy"}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
         "metadata": {"name": name},
         "spec": {"policyName": name, "validationActions": ["Deny"],
                  "matchResources": {"namespaceSelector": {
                      "matchLabels": {"kubernetes.io/metadata.name": world.namespace}}}}},
    ])
    try:
        async def refused() -> bool:  # the API server picks policies up a moment after they are written
            try:
                await world.kube.apply({"apiVersion": "apps/v1", "kind": "Deployment",
                                        "metadata": {"name": "broken", "namespace": world.namespace},
                                        "spec": {"replicas": 3}}, "probe", dry_run=True)
            except KubeApiError as exc:
                return "frozen by the test's policy" in exc.message
            return False
        await poll(refused, "the admission policy to be in force")

        world.source.queue = {"good": 64.0, "broken": 64.0}
        outcomes = await world.tick()
        assert list(outcomes) == ["broken", "good"]  # the failing one first: the loop went on after it
        assert await world.replicas("good") > 2
        assert outcomes["good"].scaled_to == await world.replicas("good")
        assert "frozen by the test's policy" in outcomes["broken"].error
        assert await world.replicas("broken") == 2
        scaled = await world.events("good", "ScaledUp")
        assert len(scaled) == 1 and scaled[0]["message"].startswith("Scaled up from 2 to ")
        assert scaled[0]["type"] == "Normal" and scaled[0]["involvedObject"]["kind"] == "EmbeddingService"
        assert await world.events("broken", "ScaledUp") == []
        assert (await world.status("good"))["autoscaling"]["lastDecision"] == "ScaleUp"
    finally:
        cluster.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name,
                        "--ignore-not-found", check=False)


async def test_unknown_metrics_never_scale_down_and_say_so(world, cluster):
    await world.add("svc", 4, window=4)
    cluster.apply(embedding("svc", world.namespace, window=4, target_queue=12))  # generation 2
    generation = (await world.service("svc"))["metadata"]["generation"]
    assert generation == 2
    world.source.queue = {"svc": None}  # the source is down
    for _ in range(10):  # well past the 4 s scale-down window
        await world.tick()
        world.clock.advance(2)
    assert await world.replicas("svc") == 4
    cond = await world.condition("svc", "ScalingLimited")
    assert cond["status"] == "True" and cond["reason"] == "MetricsUnavailable"
    assert "connection refused" in cond["message"] and cond["observedGeneration"] == generation
    auto = (await world.status("svc"))["autoscaling"]
    assert "queuePerReplica" not in auto["signals"]  # unknown is absent, not 0
    # counted up to failureThreshold (3 by default), then left there: ten failed ticks, three status writes
    assert auto["consecutiveMetricFailures"] == 3 and auto["lastDecision"] == "Limited"
    assert "3 or more failures in a row" in auto["reason"] and "for 3 or more ticks" in cond["message"]
    assert [e["type"] for e in await world.events("svc", "ScalingLimited")] == ["Warning"]  # one, not one per tick
    # Metrics back and idle: scale-down is allowed again, after the window.
    world.source.queue = {"svc": 0.0}
    for _ in range(6):
        await world.tick()
        world.clock.advance(2)
    assert await world.replicas("svc") < 4
    assert (await world.condition("svc", "ScalingLimited"))["reason"] == "WithinLimits"


async def test_a_fresh_autoscaler_waits_a_full_window_before_scaling_down(world):
    await world.add("svc", 4, window=20)
    world.source.queue = {"svc": 0.0}
    for _ in range(10):  # ticks at 0, 2, ..., 18 s: less than the 20 s window watched
        await world.tick()
        world.clock.advance(2)
        assert await world.replicas("svc") == 4
    outcome = (await world.tick())["svc"]  # 20 s: the window has been watched entirely
    assert (outcome.scaled_from, outcome.scaled_to) == (4, 3)  # one step at a time (maxPodsStep 1)
    assert await world.replicas("svc") == 3
    down = await world.events("svc", "ScaledDown")
    assert len(down) == 1 and down[0]["message"].startswith("Scaled down from 4 to 3")
    await world.settle("svc")  # the Deployment controller really removes the pod
    assert len(await world.pods("svc")) == 3


async def test_gpu_capacity_stops_the_growth_and_is_reported(world):
    allocatable, held = await world.quiet_a100()
    # Another workload holds 1 GPU on the A100 nodes: it counts against the service's capacity.
    await world.kube.create({"apiVersion": "v1", "kind": "Pod",
                             "metadata": {"name": "stranger", "namespace": world.namespace},
                             "spec": {"nodeSelector": {"nvidia.com/gpu.product": A100_PRODUCT},
                                      "tolerations": [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}],
                                      "containers": [{"name": "work", "image": "busybox",
                                                      "resources": {"limits": {GPU: "1"}}}]}})
    try:
        await world.add("svc", 2, max_replicas=40)  # more than the cluster's GPUs: capacity binds, not maxReplicas
        stranger = await world.kube.get(POD, "stranger", world.namespace)
        assert is_ready(stranger) and stranger["spec"]["nodeName"].startswith("a100-")
        capacity = allocatable - held - 1  # one GPU per replica
        assert capacity > 10  # the scale-up step limit (2 -> 10) binds first, then capacity
        world.source.queue = {"svc": 1000.0}
        for _ in range(4):  # whatever the step limits, never past what the nodes hold
            await world.tick()
            assert await world.replicas("svc") <= capacity
            await world.settle("svc")  # every pod asked for is placed and Ready
            world.clock.advance(20)
        assert await world.replicas("svc") == capacity
        cond = await world.condition("svc", "ScalingLimited")
        assert cond["status"] == "True" and cond["reason"] == "GpuCapacity"
        # The STATUS column follows: Ready (all replicas ready) but held back by the GPUs.
        assert (await world.status("svc"))["summary"] == "LimitedByGpuCapacity"
        assert (await world.status("svc"))["autoscaling"]["signals"]["schedulableReplicas"] == capacity
        limited = await world.events("svc", "ScalingLimited")
        assert [(e["type"], "(GpuCapacity)" in e["message"]) for e in limited] == [("Normal", True)]
    finally:
        # Give the A100 GPUs back before the next test (the namespace's deletion would, but later).
        await world.kube.delete(DEPLOYMENT, "svc", world.namespace)
        await world.kube.delete(POD, "stranger", world.namespace)
        await poll(world.no_pods, f"the pods of {world.namespace} to be gone")


async def test_status_is_written_only_when_it_changed_and_keeps_the_controllers_conditions(world):
    await world.quiet_a100()  # free GPUs are a signal: pods of other tests leaving would be a real change
    await world.add("svc", 2)
    world.source.queue = {"svc": 16.0}  # at target: hold
    assert (await world.tick())["svc"].status_written
    first = await world.service("svc")
    rv = first["metadata"]["resourceVersion"]
    assert [c["type"] for c in first["status"]["conditions"]] == ["Ready", "ScalingLimited"]
    for _ in range(5):
        world.clock.advance(2)
        assert not (await world.tick())["svc"].status_written
    assert (await world.service("svc"))["metadata"]["resourceVersion"] == rv  # nothing but the tick's time changed
    world.clock.advance(600)
    assert not (await world.tick())["svc"].status_written  # no heartbeat, however long idle
    world.source.queue = {"svc": 40.0}  # a real change: the status says so, and when
    world.clock.advance(2)
    assert (await world.tick())["svc"].status_written
    after = await world.service("svc")
    assert after["metadata"]["resourceVersion"] != rv
    assert after["status"]["autoscaling"]["lastChangeTime"] > first["status"]["autoscaling"]["lastChangeTime"]
    assert "lastTickTime" not in after["status"]["autoscaling"]
    assert after["status"]["conditions"][0] == first["status"]["conditions"][0]  # the controller's Ready kept
    assert after["status"]["conditions"][0] == {**READY, "observedGeneration": 1}


class InterleavingKube:
    """The real client, except that just before the loop's first status write carrying the conditions list,
    `between()` writes the service's status through the API (as the controller would at that moment), so the
    loop's write meets a real 409 Conflict. Records the API errors the loop's patches got."""

    def __init__(self, real: KubeClient, between: Callable[[], Awaitable[None]]) -> None:
        self.real = real
        self.between: Callable[[], Awaitable[None]] | None = between
        self.errors: list[KubeApiError] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def patch(self, rtype: Any, name: str, namespace: str | None, patch: Any, **kwargs: Any) -> dict:
        if self.between and kwargs.get("subresource") == "status" and "conditions" in patch.get("status", {}):
            between, self.between = self.between, None
            await between()
        try:
            return await self.real.patch(rtype, name, namespace, patch, **kwargs)
        except KubeApiError as exc:
            self.errors.append(exc)
            raise


async def test_a_conflict_on_the_conditions_list_is_retried_on_the_fresh_object(world):
    await world.add("svc", 2)
    progressing = {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                   "message": "Rolled out", "lastTransitionTime": "2026-01-02T00:00:00Z", "observedGeneration": 1}

    async def controller_writes() -> None:
        live = await world.service("svc")
        conditions = live["status"]["conditions"] + [progressing]
        await world.kube.patch_status(SVC, "svc", world.namespace, {"conditions": conditions},
                                      field_manager=CONTROLLER,
                                      resource_version=live["metadata"]["resourceVersion"])

    kube = InterleavingKube(world.kube, controller_writes)
    world.scaler = world.autoscaler(kube)
    world.source.queue = {"svc": 16.0}
    outcome = (await world.tick())["svc"]
    assert outcome.error is None and outcome.status_written
    assert [(e.status, e.reason) for e in kube.errors] == [(409, "Conflict")]  # the first write was stale
    conditions = {c["type"]: c for c in (await world.status("svc"))["conditions"]}
    assert conditions["Progressing"] == progressing  # the controller's write survived the retry
    assert conditions["Ready"]["status"] == "True"
    assert conditions["ScalingLimited"]["status"] == "False"


async def test_turning_autoscaling_off_clears_our_status(world, cluster):
    live = await world.add("svc", 2)
    world.source.queue = {"svc": 16.0}  # at target: hold
    await world.tick()
    assert "autoscaling" in await world.status("svc")
    assert world.scaler.memory.keys() == {live["metadata"]["uid"]}
    cluster.apply(embedding("svc", world.namespace, enabled=False))
    outcome = (await world.tick())["svc"]
    assert outcome.status_written and outcome.error is None
    status = await world.status("svc")
    assert "autoscaling" not in status
    assert [c["type"] for c in status["conditions"]] == ["Ready"]
    assert world.scaler.memory == {}
    assert await world.replicas("svc") == 2  # replicas are not the autoscaler's business any more
