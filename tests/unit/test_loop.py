"""The autoscaler loop's pure parts: counting pods, building the policy's signals, and deciding which status keys
to write (merging ScalingLimited into the controller's conditions).

The loop itself (`Autoscaler.tick()`: listing, scaling the Deployment, writing status and events) runs against the
real control plane in tests/integration/test_autoscaler_loop.py.
"""

from __future__ import annotations

import datetime

import pytest

from tei_operator.autoscaling.loop import build_signals, count_pods
from tei_operator.autoscaling.sources import ServiceMetrics
from tei_operator.autoscaling.writer import merge_condition, status_patch

GPU = "nvidia.com/gpu"
T0 = 1_800_000_000.0


def ready_pod(name: str, svc: str, node: str, created: float = T0 - 600) -> dict:
    """A pod shaped like the API server's: scheduled, Running and Ready."""
    stamp = datetime.datetime.fromtimestamp(created, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"kind": "Pod", "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}",
                                        "creationTimestamp": stamp,
                                        "labels": {"tei-operator.io/service": svc,
                                                   "app.kubernetes.io/managed-by": "tei-operator"}},
            "spec": {"nodeName": node, "containers": [{"name": "tei", "resources": {"limits": {GPU: "1"}},
                                                       "ports": [{"containerPort": 80}]}]},
            "status": {"phase": "Running", "podIP": "127.1.0.9",
                       "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": stamp}]}}


def test_pods_just_ready_but_unread_count_as_starting():
    pods = [ready_pod("a", "s", "n"), ready_pod("b", "s", "n")]
    pods.append({**ready_pod("c", "s", "n", created=T0 - 10), "status": {"phase": "Running"}})  # loading
    pods.append({**ready_pod("d", "s", "n", created=T0 - 900), "status": {"phase": "Running"}})  # crash loop
    pending = ready_pod("e", "s", "n")
    del pending["spec"]["nodeName"]
    pending["status"] = {"phase": "Pending"}
    leaving = ready_pod("f", "s", "n")
    leaving["metadata"]["deletionTimestamp"] = "2027-01-15T08:00:00Z"
    counts = count_pods(pods + [pending, leaving], T0, startup_grace_seconds=60)
    assert (len(counts.ready), counts.starting, counts.pending) == (2, 1, 1)
    m = ServiceMetrics(observed_at=T0, pods_read=1, queue_size_total=10.0, unread_pods=("b",))
    s = build_signals(T0, 4, counts, m, schedulable=6)
    assert (s.ready_replicas, s.starting_replicas, s.pending_replicas) == (1, 2, 1)
    assert (s.queue_size_total, s.schedulable_capacity) == (10.0, 6)
    bad = build_signals(T0, 4, counts, ServiceMetrics(observed_at=T0, error="down"), schedulable=None)
    assert bad.queue_size_total is None and bad.error == "down"


def test_condition_merge_keeps_others_and_transition_time():
    live = [{"type": "Ready", "status": "True", "lastTransitionTime": "t0"},
            {"type": "ScalingLimited", "status": "True", "reason": "GpuCapacity", "lastTransitionTime": "t1"}]
    same = merge_condition(live, {"type": "ScalingLimited", "status": "True", "reason": "MaxReplicas"}, "t2")
    assert same[0] == live[0] and same[1]["lastTransitionTime"] == "t1" and same[1]["reason"] == "MaxReplicas"
    flipped = merge_condition(live, {"type": "ScalingLimited", "status": "False", "reason": "WithinLimits"}, "t2")
    assert flipped[1]["lastTransitionTime"] == "t2"
    added = merge_condition(live[:1], {"type": "ScalingLimited", "status": "False", "reason": "WithinLimits"}, "t3")
    assert [c["type"] for c in added] == ["Ready", "ScalingLimited"] and added[1]["lastTransitionTime"] == "t3"
    # The STATUS column (status.summary) is written with the list, from the list.
    assert status_patch({"conditions": live}, None, None, now="t3") == {
        "conditions": [live[0]], "summary": None}
    ready = {"type": "Ready", "status": "True", "reason": "AllReplicasReady", "lastTransitionTime": "t0"}
    held = {"type": "ScalingLimited", "status": "True", "reason": "MaxReplicas", "message": "Wanted 9 replicas"}
    assert status_patch({"conditions": [ready]}, None, held, now="t3")["summary"] == \
        "LimitedByMaxReplicas"
    within = {**held, "status": "False", "reason": "WithinLimits"}
    assert status_patch({"conditions": [ready, {**held, "lastTransitionTime": "t1"}]}, None, within, now="t3")["summary"] == "AllReplicasReady"


def test_status_patch_skips_a_tick_that_changed_only_its_time():
    condition = {"type": "ScalingLimited", "status": "False", "reason": "WithinLimits", "message": "m",
                 "observedGeneration": 2}
    live = {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "t0"},
                           {**condition, "lastTransitionTime": "t0"}],
            "autoscaling": {"signals": {"readyReplicas": 2}, "desiredReplicas": 2, "lastChangeTime": "t1"}}
    # What the loop sends: every key, None for unknown ones (the API server stores them as absent).
    wanted = {"signals": {"readyReplicas": 2, "queuePerReplica": None}, "desiredReplicas": 2,
              "lastScaleTime": None, "lastChangeTime": "t2", "lastTickTime": None}
    # However much later: an idle, settled service is never rewritten (no heartbeat).
    assert status_patch(live, wanted, condition, now="t2") == {}
    # A status from 0.1.x (its heartbeat lastTickTime) is not rewritten for that alone either ...
    old = {**live, "autoscaling": {**live["autoscaling"], "lastTickTime": "t0"}}
    assert status_patch(old, wanted, condition, now="t2") == {}
    # ... and at its next change the heartbeat goes away (None removes it in a merge patch).
    changed = {**wanted, "desiredReplicas": 3}
    assert status_patch(old, changed, condition, now="t2") == {"autoscaling": changed}
    assert changed["lastTickTime"] is None and changed["lastChangeTime"] == "t2"
    moved = {**condition, "observedGeneration": 3}
    patch = status_patch(live, wanted, moved, now="t2")
    assert list(patch) == ["conditions", "summary"] and patch["conditions"][0] == live["conditions"][0]


def test_status_patch_ignores_free_gpu_capacity_moving_elsewhere_in_the_cluster():
    condition = {"type": "ScalingLimited", "status": "False", "reason": "WithinLimits", "message": "m",
                 "observedGeneration": 2}
    live = {"conditions": [{**condition, "lastTransitionTime": "t0"}],
            "autoscaling": {"signals": {"readyReplicas": 2, "schedulableReplicas": 9}, "desiredReplicas": 2,
                            "lastChangeTime": "t1"}}
    # Another service's pod finished somewhere: one more GPU is free. Not a reason to write this service's status.
    wanted = {"signals": {"readyReplicas": 2, "schedulableReplicas": 10}, "desiredReplicas": 2,
              "lastChangeTime": "t2"}
    assert status_patch(live, wanted, condition, now="t2") == {}
    # With any other change the fresh capacity goes out too.
    changed = {**wanted, "desiredReplicas": 3}
    assert status_patch(live, changed, condition, now="t2") == {"autoscaling": changed}


def test_scaling_limited_is_true_only_for_the_reasons_the_docs_list():
    """docs/autoscaling.md names the True reasons; a step limit or the minReplicas floor leaves it False, with the
    sentence in the message."""
    from pathlib import Path

    from tei_operator.api.autoscaling import AutoscalingSpec
    from tei_operator.autoscaling.policy import PolicyState, decide
    from tei_operator.autoscaling.signals import Signals
    from tei_operator.autoscaling.writer import LIMITING_REASONS, scaling_limited_condition

    spec = AutoscalingSpec.model_validate({"enabled": True, "minReplicas": 1, "maxReplicas": 100,
                                           "targetQueueSize": 16, "scaleUp": {"maxPodsStep": 2,
                                                                              "maxPercentStep": 1}})
    step, _ = decide(Signals(observed_at=0, current_replicas=2, ready_replicas=2, queue_size_total=320), PolicyState(),
                     spec, 65536, 0)
    assert step.limited_by == "ScaleUpLimit" and step.desired_replicas == 4
    cond = scaling_limited_condition(step, 3)
    assert (cond["status"], cond["reason"], cond["observedGeneration"]) == ("False", "WithinLimits", 3)
    assert "scale-up limited to 4" in cond["message"]
    docs = (Path(__file__).resolve().parents[2] / "docs" / "autoscaling.md").read_text()
    sentence = docs[docs.index("`ScalingLimited` is True with one of"):].split("\n\n")[0]
    assert all(f"`{reason}`" in sentence for reason in LIMITING_REASONS), sentence
    assert "reason `ScaleUpLimit`" not in docs and "reason `MinReplicas`" not in docs


async def test_proxy_scraper_uses_the_scrape_timeout_and_close_stops_the_prometheus_threads():

    from tei_operator.autoscaling.loop import Autoscaler
    from tei_operator.kube import KubeClient
    from tei_operator.settings import load_settings

    kube = KubeClient.for_host("http://127.0.0.1:9")
    settings = load_settings(scrape_via="proxy", scrape_timeout_seconds=1.5, metrics_source="scrape",
                             prometheus_url="http://127.0.0.1:9")
    autoscaler = Autoscaler(kube, settings)
    fetcher = autoscaler.source("scrape")._fetch  # noqa: SLF001 - what the loop built from the settings
    prometheus = autoscaler.source("prometheus")
    assert fetcher.timeout == 1.5
    await autoscaler.close()
    assert not hasattr(fetcher, "_executor")  # the proxy scrape goes through the asyncio client
    with pytest.raises(RuntimeError, match="shutdown"):
        prometheus._executor.submit(print)  # noqa: SLF001


def test_load_time_is_the_median_of_creation_to_ready_over_the_ready_pods():
    def pod(name: str, created: float, ready: float) -> dict:
        p = ready_pod(name, "s", "n", created=created)
        p["status"]["conditions"][0]["lastTransitionTime"] = datetime.datetime.fromtimestamp(
            ready, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return p

    pods = [pod("a", T0 - 500, T0 - 440), pod("b", T0 - 300, T0 - 210), pod("c", T0 - 200, T0 - 80)]
    loading = {**ready_pod("d", "s", "n", created=T0 - 10), "status": {"phase": "Running"}}
    counts = count_pods(pods + [loading], T0, startup_grace_seconds=180)
    assert counts.load_seconds == 90.0  # of 60, 90, 120 s
    assert count_pods(pods[:2], T0, 180).load_seconds == 75.0
    assert count_pods([loading], T0, 180).load_seconds is None
    m = ServiceMetrics(observed_at=T0, pods_read=3, queue_size_total=1.0, mean_batch_seconds=0.03)
    s = build_signals(T0, 3, counts, m, schedulable=None)
    assert (s.load_seconds, s.mean_batch_seconds) == (90.0, 0.03)
