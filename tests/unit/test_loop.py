"""The autoscaler loop over an in-memory API server: per-service isolation, never scaling down on unknown metrics,
status written only when it changed, the controller's conditions kept, optimistic locking on the conditions list.

The objects are the real rendered Deployment (tei_operator.render) and pods shaped like the API server's; the
policy is the real `decide()`. Only the API server is in memory (the closed loop on a real control plane is
tests/e2e), and the metrics come from a static source so each test sets exactly what the pods report.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from tei_operator.api import ServiceResource
from tei_operator.autoscaling.loop import Autoscaler, build_signals, count_pods
from tei_operator.autoscaling.sources import (MetricsSource, PodMetrics, ServiceMetrics, ServiceTarget,
                                              SourceResult)
from tei_operator.autoscaling.writer import merge_condition, status_patch
from tei_operator.kube import KubeApiError, ResourceType
from tei_operator.render import render_children
from tei_operator.settings import load_settings

GPU = "nvidia.com/gpu"
T0 = 1_800_000_000.0


class MemoryApi:
    """Just enough of KubeClient, over dicts: list with label selectors, merge patches with resourceVersion
    checks, server-side apply of replicas, events. `fail` maps (verb, name) to an exception to raise."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.events: list[dict] = []
        self.status_patches: list[tuple[str, dict]] = []
        self.fail: dict[tuple[str, str], Exception] = {}
        self.conflicts_left = 0
        self._rv = itertools.count(1)

    def register(self, rtype: ResourceType) -> None:
        pass

    def put(self, obj: dict) -> dict:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(next(self._rv))
        self.objects[(obj["kind"], meta.get("namespace", ""), meta["name"])] = obj
        return obj

    async def list(self, rtype: ResourceType, namespace: str | None = None, *, label_selector: str | None = None,
                   field_selector: str | None = None) -> list[dict]:
        wanted = dict(part.split("=", 1) for part in label_selector.split(",")) if label_selector else {}
        out = []
        for (kind, ns, _), obj in self.objects.items():
            labels = obj["metadata"].get("labels") or {}
            if kind == rtype.kind and (namespace is None or ns == namespace) and \
                    all(labels.get(k) == v for k, v in wanted.items()):
                out.append(copy.deepcopy(obj))
        return out

    async def get_or_none(self, rtype: ResourceType, name: str, namespace: str | None = None) -> dict | None:
        obj = self.objects.get((rtype.kind, namespace or "", name))
        return copy.deepcopy(obj) if obj else None

    async def patch(self, rtype, name, namespace, patch, *, content_type, subresource=None, field_manager=None):
        if ("patch", name) in self.fail:
            raise self.fail[("patch", name)]
        obj = self.objects[(rtype.kind, namespace, name)]
        rv = (patch.get("metadata") or {}).get("resourceVersion")
        if self.conflicts_left:
            self.conflicts_left -= 1
            self.put(obj)  # someone else wrote in between
            obj = self.objects[(rtype.kind, namespace, name)]
        if rv is not None and rv != obj["metadata"]["resourceVersion"]:
            raise KubeApiError(409, "Conflict", "the object has been modified")
        status = obj.setdefault("status", {})
        for key, value in patch["status"].items():
            if value is None:
                status.pop(key, None)
            elif isinstance(value, Mapping) and key == "autoscaling":
                status[key] = {k: ({kk: vv for kk, vv in v.items() if vv is not None} if isinstance(v, Mapping)
                                   else v) for k, v in value.items() if v is not None}
            else:
                status[key] = copy.deepcopy(value)
        self.status_patches.append((name, copy.deepcopy(patch)))
        self.put(obj)
        return obj

    async def set_replicas(self, rtype, name, namespace, replicas, *, field_manager):
        if ("scale", name) in self.fail:
            raise self.fail[("scale", name)]
        assert field_manager == "tei-operator-autoscaler"
        obj = self.objects[("Deployment", namespace, name)]
        obj["spec"]["replicas"] = replicas
        self.put(obj)

    async def create_event(self, involved, *, reason, message, type="Normal", action=None, component="x"):
        self.events.append({"name": involved["metadata"]["name"], "reason": reason, "message": message,
                            "type": type})


class StaticSource(MetricsSource):
    """Every Ready pod reports `queue` (None: the source is down)."""

    name = "scrape"

    def __init__(self) -> None:
        self.queue: dict[str, float | None] = {}
        self.clock = lambda: T0

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


def service(name: str, uid: str, *, window: int = 20, max_replicas: int = 8) -> dict:
    return {"apiVersion": "tei-operator.io/v1alpha1", "kind": "EmbeddingService",
            "metadata": {"name": name, "namespace": "ns", "uid": uid, "generation": 3},
            "spec": {"model": {"id": "BAAI/bge-m3"}, "gpu": {"count": 1, "type": "a100"},
                     "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": max_replicas,
                                     "targetQueueSize": 16, "startupGraceSeconds": 60,
                                     "scaleDown": {"stabilizationWindowSeconds": window, "periodSeconds": 1}}},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "AllReplicasReady",
                                       "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}


def ready_pod(name: str, svc: str, node: str, created: float = T0 - 600) -> dict:
    import datetime

    stamp = datetime.datetime.fromtimestamp(created, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"kind": "Pod", "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}",
                                        "creationTimestamp": stamp,
                                        "labels": {"app.kubernetes.io/name": "text-embeddings-inference",
                                                   "app.kubernetes.io/instance": svc,
                                                   "tei-operator.io/service": svc,
                                                   "app.kubernetes.io/managed-by": "tei-operator"}},
            "spec": {"nodeName": node, "containers": [{"name": "tei", "resources": {"limits": {GPU: "1"}},
                                                       "ports": [{"containerPort": 80}]}]},
            "status": {"phase": "Running", "podIP": "127.1.0.9",
                       "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": stamp}]}}


def a100_node(name: str, gpus: int) -> dict:
    alloc = {GPU: str(gpus)}
    return {"kind": "Node", "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}},
            "spec": {"taints": [{"key": GPU, "value": "present", "effect": "NoSchedule"}]},
            "status": {"allocatable": alloc, "capacity": alloc}}


@pytest.fixture
def world():
    settings = load_settings(autoscaler_tick_seconds=2, metrics_stale_seconds=30, metrics_source="scrape")
    api = MemoryApi()
    source = StaticSource()
    clock = [T0]
    scaler = Autoscaler(api, settings, sources={"scrape": source}, clock=lambda: clock[0])  # type: ignore[arg-type]
    api.put(a100_node("a100-0", 8))

    def add(name: str, uid: str, replicas: int, **kw: Any) -> None:
        body = service(name, uid, **kw)
        api.put(body)
        dep = render_children(ServiceResource.from_body(body), settings).deployment
        dep["spec"]["replicas"] = replicas
        api.put(dep)
        for i in range(replicas):
            api.put(ready_pod(f"{name}-{i}", name, "a100-0"))
    return api, source, scaler, clock, add


def replicas(api: MemoryApi, name: str) -> int:
    return api.objects[("Deployment", "ns", name)]["spec"]["replicas"]


def status(api: MemoryApi, name: str) -> dict:
    return api.objects[("EmbeddingService", "ns", name)].get("status") or {}


def condition(api: MemoryApi, name: str, ctype: str) -> dict | None:
    return next((c for c in status(api, name).get("conditions", []) if c["type"] == ctype), None)


async def test_one_failing_service_does_not_stop_the_others(world):
    api, source, scaler, clock, add = world
    add("good", "u-good", 2)
    add("broken", "u-broken", 2)
    source.queue = {"good": 64.0, "broken": 64.0}
    api.fail[("scale", "broken")] = KubeApiError(500, "InternalError", "etcd is sad")
    outcomes = {o.service: o for o in await scaler.tick()}
    assert replicas(api, "good") > 2
    assert outcomes["EmbeddingService ns/good"].scaled_to == replicas(api, "good")
    assert "etcd is sad" in outcomes["EmbeddingService ns/broken"].error
    assert replicas(api, "broken") == 2
    scaled = [e for e in api.events if e["reason"] == "ScaledUp"]
    assert [e["name"] for e in scaled] == ["good"]
    assert scaled[0]["message"].startswith("Scaled up from 2 to ")
    assert status(api, "good")["autoscaling"]["lastDecision"] == "ScaleUp"


async def test_unknown_metrics_never_scale_down_and_say_so(world):
    api, source, scaler, clock, add = world
    add("svc", "u1", 4, window=4)
    source.queue = {"svc": None}  # the source is down
    for _ in range(10):  # well past the 4 s scale-down window
        await scaler.tick()
        clock[0] += 2
    assert replicas(api, "svc") == 4
    cond = condition(api, "svc", "ScalingLimited")
    assert cond["status"] == "True" and cond["reason"] == "MetricsUnavailable"
    assert "connection refused" in cond["message"] and cond["observedGeneration"] == 3
    auto = status(api, "svc")["autoscaling"]
    assert "queuePerReplica" not in auto["signals"]  # unknown is absent, not 0
    assert auto["consecutiveMetricFailures"] == 10
    assert [e["type"] for e in api.events if e["reason"] == "ScalingLimited"] == ["Warning"]
    # Metrics back and idle: scale-down is allowed again, after the window.
    source.queue = {"svc": 0.0}
    for _ in range(6):
        await scaler.tick()
        clock[0] += 2
    assert replicas(api, "svc") < 4
    assert condition(api, "svc", "ScalingLimited")["reason"] == "WithinLimits"


async def test_a_fresh_autoscaler_waits_a_full_window_before_scaling_down(world):
    api, source, scaler, clock, add = world
    add("svc", "u1", 4, window=20)
    source.queue = {"svc": 0.0}
    for _ in range(10):  # ticks at 0, 2, ..., 18 s: less than the 20 s window watched
        await scaler.tick()
        clock[0] += 2
        assert replicas(api, "svc") == 4
    await scaler.tick()  # 20 s: the window has been watched entirely
    assert replicas(api, "svc") == 3  # one step at a time (maxPodsStep 1)
    assert any(e["reason"] == "ScaledDown" and e["message"].startswith("Scaled down from 4 to 3")
               for e in api.events)


async def test_gpu_capacity_stops_the_growth_and_is_reported(world):
    api, source, scaler, clock, add = world
    add("svc", "u1", 2, max_replicas=20)
    api.put(ready_pod("stranger", "other", "a100-0"))  # another workload holds 1 GPU: 8 - 2 - 1 = 5 free
    source.queue = {"svc": 1000.0}
    for _ in range(4):  # whatever the step limits, never past 2 placed + 5 free
        await scaler.tick()
        clock[0] += 20
        assert replicas(api, "svc") <= 7
    assert replicas(api, "svc") == 7
    cond = condition(api, "svc", "ScalingLimited")
    assert cond["status"] == "True" and cond["reason"] == "GpuCapacity"
    assert status(api, "svc")["autoscaling"]["signals"]["schedulableReplicas"] == 7


async def test_status_is_written_only_when_it_changed_and_keeps_the_controllers_conditions(world):
    api, source, scaler, clock, add = world
    add("svc", "u1", 2)
    source.queue = {"svc": 16.0}  # at target: hold
    await scaler.tick()
    first = len(api.status_patches)
    assert first == 1 and "conditions" in api.status_patches[0][1]["status"]
    sent_rv = api.status_patches[0][1]["metadata"]["resourceVersion"]
    assert sent_rv is not None
    for _ in range(5):
        clock[0] += 2
        await scaler.tick()
    assert len(api.status_patches) == first  # nothing changed but lastTickTime: no write
    clock[0] += 60
    await scaler.tick()
    assert len(api.status_patches) == first + 1  # heartbeat
    assert "conditions" not in api.status_patches[-1][1]["status"]
    types = [c["type"] for c in status(api, "svc")["conditions"]]
    assert types == ["Ready", "ScalingLimited"]


async def test_a_conflict_on_the_conditions_list_is_retried_on_the_fresh_object(world):
    api, source, scaler, clock, add = world
    add("svc", "u1", 2)
    source.queue = {"svc": 16.0}
    api.conflicts_left = 1
    await scaler.tick()
    assert condition(api, "svc", "ScalingLimited")["status"] == "False"
    assert condition(api, "svc", "Ready")["status"] == "True"


async def test_turning_autoscaling_off_clears_our_status(world):
    api, source, scaler, clock, add = world
    add("svc", "u1", 2)
    await scaler.tick()
    assert "autoscaling" in status(api, "svc")
    body = api.objects[("EmbeddingService", "ns", "svc")]
    body["spec"]["autoscaling"]["enabled"] = False
    await scaler.tick()
    assert "autoscaling" not in status(api, "svc")
    assert [c["type"] for c in status(api, "svc")["conditions"]] == ["Ready"]
    assert "u1" not in scaler.memory


def test_pods_just_ready_but_unread_count_as_starting():
    pods = [ready_pod("a", "s", "n"), ready_pod("b", "s", "n")]
    pods.append({**ready_pod("c", "s", "n", created=T0 - 10), "status": {"phase": "Running"}})  # loading
    pods.append({**ready_pod("d", "s", "n", created=T0 - 900), "status": {"phase": "Running"}})  # crash loop
    pending = ready_pod("e", "s", "n")
    del pending["spec"]["nodeName"]
    pending["status"] = {"phase": "Pending"}
    counts = count_pods(pods + [pending], T0, startup_grace_seconds=60)
    assert (len(counts.ready), counts.starting, counts.pending) == (2, 1, 1)
    m = ServiceMetrics(observed_at=T0, pods_read=1, queue_size_total=10.0, unread_pods=("b",))
    s = build_signals(T0, 4, counts, m, schedulable=6)
    assert (s.ready_replicas, s.starting_replicas, s.pending_replicas) == (1, 2, 1)
    bad = build_signals(T0, 4, counts, ServiceMetrics(observed_at=T0, error="down"), schedulable=None)
    assert bad.queue_size_total is None and bad.error == "down"


def test_condition_merge_keeps_others_and_transition_time():
    live = [{"type": "Ready", "status": "True", "lastTransitionTime": "t0"},
            {"type": "ScalingLimited", "status": "True", "reason": "GpuCapacity", "lastTransitionTime": "t1"}]
    same = merge_condition(live, {"type": "ScalingLimited", "status": "True", "reason": "MaxReplicas"}, "t2")
    assert same[0] == live[0] and same[1]["lastTransitionTime"] == "t1" and same[1]["reason"] == "MaxReplicas"
    flipped = merge_condition(live, {"type": "ScalingLimited", "status": "False", "reason": "WithinLimits"}, "t2")
    assert flipped[1]["lastTransitionTime"] == "t2"
    assert status_patch({"conditions": live}, None, None, now="t3", heartbeat_due=False) == {
        "conditions": [live[0]]}
