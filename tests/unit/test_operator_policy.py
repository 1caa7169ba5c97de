"""The benchmark's simulated operator (bench/autoscaling/operator_policy.py) runs the live autoscaler's code path.

The proof: from the same pods and the same /metrics pages, the adapter's Signals equal those of the live loop
(`Autoscaler._metrics` with a ScrapeSource whose fetcher serves the pages, then `Autoscaler.service_signals`), tick
by tick, and its decisions are `decide`'s and `decide_fast`'s on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from bench.autoscaling.operator_policy import NAMESPACE, SERVICE, OperatorPolicy, pod_objects
from tei_operator.api import ServiceResource
from tei_operator.api.autoscaling import AutoscalingSpec
from tei_operator.autoscaling.loop import Autoscaler, ServiceView, service_types
from tei_operator.autoscaling.sources.scrape import ScrapeSource
from tei_operator.kube import KubeClient
from tei_operator.settings import load_settings

SPEC = {"enabled": True, "minReplicas": 1, "maxReplicas": 8, "targetQueueSize": 16}


@dataclass
class PodInfo:
    id: int
    phase: str
    created_at: float
    ready_at: float | None


def tei_page(t: float, pod: int, step_at: float) -> str:
    """A TEI /metrics page at time t: counters growing with the load, which steps up at `step_at`."""
    busy = max(0.0, t - step_at)
    requests = 3 * t + 20 * busy + pod
    tokens = 900 * t + 9000 * busy
    batches = 2 * t + 4 * busy
    refused = 2 * busy
    queue = 4 + (30 if busy else 0) + (t % 7)
    return (
        "# TYPE te_queue_size gauge\n"
        f"te_queue_size {queue:g}\n"
        "# TYPE te_batch_next_tokens histogram\n"
        f'te_batch_next_tokens_bucket{{le="1.0"}} {int(t / 3)}\n'
        f'te_batch_next_tokens_bucket{{le="+Inf"}} {batches + int(t / 3):g}\n'
        f"te_batch_next_tokens_sum {tokens:g}\n"
        f"te_batch_next_tokens_count {batches + int(t / 3):g}\n"
        "# TYPE te_request_count counter\n"
        f'te_request_count{{method="batch"}} {requests:g}\n'
        "# TYPE te_request_success counter\n"
        f'te_request_success{{method="batch"}} {requests - refused:g}\n'
        "# TYPE te_request_failure counter\n"
        f'te_request_failure{{err="overloaded"}} {refused:g}\n'
        "# TYPE te_request_inference_duration histogram\n"
        f"te_request_inference_duration_sum {0.02 * requests:g}\n"
        f"te_request_inference_duration_count {requests - refused:g}\n"
    )


class FakeView:
    """What a policy may look at (the simulator's FleetView interface), with scripted pods and pages."""

    def __init__(self, step_at: float) -> None:
        self.now = 0.0
        self.desired = 4
        self.quota = 6
        self.step_at = step_at
        self.reads: list[tuple[float, int]] = []
        self._pods = [PodInfo(1, "Ready", 0.0, 41.0), PodInfo(2, "Ready", 3.0, 52.0),
                      PodInfo(3, "Loading", 100.0, None), PodInfo(4, "Pending", 100.0, None)]

    def pods(self):
        return list(self._pods)

    def metrics_page(self, pod_id: int) -> str:
        self.reads.append((self.now, pod_id))
        return tei_page(self.now, pod_id, self.step_at)


def test_the_adapter_and_the_live_loop_build_the_same_signals_from_the_same_pages():
    spec = AutoscalingSpec.model_validate(SPEC)
    policy = OperatorPolicy(spec, 65536, keep_signals=True)
    view = FakeView(step_at=80.0)
    times = sorted({policy.phase + k * 15.0 for k in range(10)} | {policy.phase + k * 2.0 for k in range(70)})
    for t in times:
        view.now = t
        want = policy.tick(t, view)
        if want is not None:
            view.desired = want
    main = [(t, s) for t, kind, s in policy.signals if kind == "main"]
    assert [t for t, _ in main] == [policy.phase + k * 15.0 for k in range(10)]
    fast = [t for t, kind, _ in policy.signals if kind == "fast"]
    assert len(fast) == 70 and policy.intervals == (2.0,)

    # The live loop on the same pages: its own scrape source (fetcher = the view's pages), its own aggregation.
    settings = load_settings(metrics_source="scrape")
    kube = KubeClient.for_host("http://127.0.0.1:9")
    replay = FakeView(step_at=80.0)

    async def fetcher(pod):
        return tei_page(replay.now, int(pod.uid), replay.step_at)

    autoscaler = Autoscaler(kube, settings, sources={"scrape": ScrapeSource(fetcher, timeout=1, window=60.0)})
    assert autoscaler.window == policy.window == 60.0
    body = {"apiVersion": "tei-operator.io/v1alpha1", "kind": "EmbeddingService",
            "metadata": {"name": SERVICE, "namespace": NAMESPACE, "uid": "svc-uid"},
            "spec": {"model": {"id": "BAAI/bge-m3"}, "autoscaling": SPEC}}
    resource = ServiceResource.from_body(body)
    import asyncio

    async def live() -> list:
        out = []
        for t, adapter_signals in main:
            replay.now = t
            pods, _ = pod_objects(replay)
            sview = ServiceView(service_types()["EmbeddingService"], body, resource, {"spec": {}}, pods)
            metrics = await autoscaler._metrics([sview], t)  # noqa: SLF001 - the loop's own metrics step
            out.append(autoscaler.service_signals(sview, adapter_signals.current_replicas, metrics["svc-uid"],
                                                  replay.quota, t))
        return out

    live_signals = asyncio.run(live())
    for (t, adapter_signals), loop_signals in zip(main, live_signals):
        assert adapter_signals == loop_signals, f"at t={t}"
    # The signals say something: the loading and pending pods, the load time, the rates, the step's 429s.
    last = main[-1][1]
    assert (last.ready_replicas, last.starting_replicas, last.pending_replicas) == (2, 1, 1)
    assert last.load_seconds == pytest.approx((41 + 49) / 2)
    assert last.overloaded_rate == pytest.approx(4.0) and last.request_rate > 40
    assert last.mean_batch_seconds == pytest.approx(0.02 * last.request_rate / last.success_rate, rel=1e-6)
    before = [s for t, s in main if t < 80][-1]
    assert before.overloaded_rate == 0


def test_the_fast_path_scales_up_within_one_fast_tick_of_429s():
    """After the step (429s on the pages), the first fast tick that has two samples showing it scales up; the main
    tick alone would wait for its next 15 s tick."""
    spec = AutoscalingSpec.model_validate(SPEC)
    policy = OperatorPolicy(spec, 65536)
    view = FakeView(step_at=60.0)
    view._pods = view._pods[:2]
    view.desired = 2
    ups = []
    t = policy.phase
    while t < 100:
        view.now = t
        want = policy.tick(t, view)
        if want is not None and want > view.desired:
            ups.append((t, want))
            view.desired = want
        t += 1.0
    first = ups[0][0]
    assert 60 < first <= 60 + 2 * 2.0 + 1e-9, ups
    assert any(d.fast for _, d in policy.decisions if d.action == "ScaleUp")
    # The fast path off: the first scale-up waits for a main tick (7 + 15k).
    slow = OperatorPolicy(AutoscalingSpec.model_validate({**SPEC, "fastScaleUp": {"enabled": False}}), 65536)
    assert slow.intervals == ()
    view = FakeView(step_at=60.0)
    view._pods = view._pods[:2]
    view.desired = 2
    t, first_slow = slow.phase, None
    while t < 120 and first_slow is None:
        view.now = t
        if slow._due(t, slow.interval):  # noqa: SLF001 - the driver calls only at due times
            want = slow.tick(t, view)
            if want is not None and want > view.desired:
                first_slow = t
        t += 1.0
    assert first_slow == 67.0
