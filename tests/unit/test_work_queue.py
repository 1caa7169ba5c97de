"""The one work queue (controller/queue.py): de-duplication, one run per key at a time, bounded workers, backoff,
waiting for a reconcile; and the watch-fed store (controller/cache.py)."""

from __future__ import annotations

import asyncio

import pytest

from tei_operator import kube as k
from tei_operator.controller.cache import ObjectStore
from tei_operator.controller.queue import ReconcileQueue
from tei_operator.kube import KubeApiError


class Gate:
    """A worker that records each call and blocks until released; tracks how many run at once."""

    def __init__(self, failures: dict | None = None) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.running = 0
        self.peak = 0
        self.release = asyncio.Event()
        self.failures = dict(failures or {})

    async def __call__(self, key: str, apply: bool) -> None:
        self.calls.append((key, apply))
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.release.wait()
            remaining = self.failures.get(key, [])
            if remaining:
                raise remaining.pop(0)
        finally:
            self.running -= 1


async def idle(queue: ReconcileQueue, timeout: float = 5.0) -> None:
    async def wait() -> None:
        while queue.busy:
            await asyncio.sleep(0.005)
    await asyncio.wait_for(wait(), timeout)


async def test_requests_of_a_waiting_key_are_folded_into_one():
    gate = Gate()
    gate.release.set()
    queue = ReconcileQueue(gate, debounce=0.02)
    for _ in range(50):
        queue.request("a", apply=False)
    queue.request("a")
    assert queue.waiting == 1
    await idle(queue)
    assert gate.calls == [("a", True)]
    await queue.close()


async def test_workers_are_bounded_and_one_key_never_runs_twice_at_once():
    gate = Gate()
    queue = ReconcileQueue(gate, workers=3, debounce=0.0)
    for n in range(10):
        queue.request(f"k{n}")
    while queue.running < 3:
        await asyncio.sleep(0.005)
    queue.request("k0")  # k0 is running: it runs once more afterwards, not alongside
    await asyncio.sleep(0.05)
    assert gate.peak == 3 and queue.running == 3
    gate.release.set()
    await idle(queue)
    assert gate.peak == 3
    assert sorted(gate.calls).count(("k0", True)) == 2 and len(gate.calls) == 11
    await queue.close()


async def test_failures_back_off_exponentially_and_a_waiter_sees_the_first_outcome():
    conflict = KubeApiError(409, "Conflict", "modified")
    gate = Gate({"a": [conflict, conflict]})
    gate.release.set()
    queue = ReconcileQueue(gate, debounce=0.0)
    assert queue.retry_delay(1.0, 1) == 1.0 and queue.retry_delay(1.0, 3) == 4.0
    assert queue.retry_delay(1.0, 30) == 300.0
    queue.retry_delay = lambda base, failures: 0.01 * 2 ** (failures - 1)  # fast, same shape
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(KubeApiError):  # the waiter (kopf's handler, the resync) is not held by the retries
        await asyncio.wait_for(queue.request_and_wait("a"), 5)
    assert gate.calls == [("a", True)]
    await idle(queue)  # the queue retries by itself until the reconcile succeeds
    assert gate.calls == [("a", True)] * 3 and loop.time() - started >= 0.03
    await asyncio.wait_for(queue.request_and_wait("a"), 5)  # and a later waiter sees the success
    await queue.close()


async def test_a_permanent_failure_is_raised_to_the_waiter_and_not_retried():
    gate = Gate({"a": [KubeApiError(422, "Invalid", "spec.x: bad")]})
    gate.release.set()
    queue = ReconcileQueue(gate, debounce=0.0)
    with pytest.raises(KubeApiError):
        await asyncio.wait_for(queue.request_and_wait("a"), 5)
    await idle(queue)
    assert len(gate.calls) == 1
    await queue.close()


async def test_close_cancels_waiting_work():
    gate = Gate()
    queue = ReconcileQueue(gate, debounce=10)
    queue.request("a")
    await queue.close()
    queue.request("b")
    assert not queue.busy and gate.calls == []


def pod(name: str, rv: int, *, ours: bool = True, node: str = "n1") -> dict:
    labels = {"app.kubernetes.io/managed-by": "tei-operator", "app": "x"} if ours else {"app": "other"}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": str(rv), "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i", "env": [{"name": "SECRET"}],
                                                       "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
            "status": {"phase": "Running"}}


def test_store_keeps_the_newest_version_and_forgets_deleted_objects():
    store = ObjectStore()
    assert store.observe("ADDED", pod("a", 5))
    assert not store.put(pod("a", 4))  # an older write result never replaces a newer event
    assert store.get_now(k.POD, "a", "ns")["metadata"]["resourceVersion"] == "5"
    store.observe("MODIFIED", pod("a", 6))
    assert store.list_now(k.POD, "ns", {"app": "x"})[0]["metadata"]["resourceVersion"] == "6"
    assert store.list_now(k.POD, "other-ns") == []
    store.observe("DELETED", pod("a", 7))
    assert store.get_now(k.POD, "a", "ns") is None


def test_store_slims_foreign_pods_and_a_relist_drops_what_a_watch_missed():
    store = ObjectStore()
    store.put(pod("ours", 1))
    store.put(pod("theirs", 1, ours=False))
    theirs = store.get_now(k.POD, "theirs", "ns")
    assert theirs["spec"]["containers"] == [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]
    assert "env" in store.get_now(k.POD, "ours", "ns")["spec"]["containers"][0]
    changed = store.replace(k.POD, "ns", [pod("theirs", 1, ours=False), pod("new", 3)])
    assert {c["metadata"]["name"] for c in changed} == {"ours", "new"}
    assert {p["metadata"]["name"] for p in store.list_now(k.POD)} == {"theirs", "new"}


class Requests:
    """The queue as the handlers see it: records what they request."""

    def __init__(self) -> None:
        self.requested: list[tuple[object, bool]] = []

    def request(self, key, *, apply: bool = True) -> None:
        self.requested.append((key, apply))

    async def request_and_wait(self, key, *, apply: bool = True) -> None:
        self.requested.append((key, apply))


def _handler_memo():
    """A ControllerMemo over an empty store and a recording queue, and the owner reference of service ns/e."""
    from tei_operator.controller.handlers import ControllerMemo
    from tei_operator.controller.reconcile import owner_types

    class Reconciler:
        kinds = owner_types()

    memo = ControllerMemo(reconciler=Reconciler(), queue=Requests(), store=ObjectStore())
    owner_ref = {"apiVersion": "tei-operator.io/v1alpha1", "kind": "EmbeddingService", "name": "e", "uid": "u",
                 "controller": True}
    return memo, owner_ref


async def test_handlers_feed_the_store_and_queue_the_owner():
    from tei_operator.controller.handlers import child_event, pod_event
    from tei_operator.controller.reconcile import OwnerKey

    memo, owner_ref = _handler_memo()
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "e", "namespace": "ns", "resourceVersion": "1",
                               "labels": {"app.kubernetes.io/managed-by": "tei-operator"},
                               "ownerReferences": [owner_ref]}}
    await child_event(event={"type": "ADDED", "object": deployment}, body=deployment, memo=memo)
    assert memo.store.get_now(k.DEPLOYMENT, "e", "ns") == deployment
    # A pod without the service label finds its service through its Deployment in the store, not an API call.
    orphan = pod("e-5d9f-abcde", 3)
    orphan["metadata"]["labels"]["pod-template-hash"] = "5d9f"
    orphan["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": "e-5d9f", "controller": True}]
    await pod_event(event={"type": "ADDED", "object": orphan}, body=orphan, memo=memo)
    foreign = pod("other", 4, ours=False)
    await pod_event(event={"type": "ADDED", "object": foreign}, body=foreign, memo=memo)
    key = OwnerKey("EmbeddingService", "ns", "e")
    assert memo.queue.requested == [(key, True), (key, False)]
    assert len(memo.store.list_now(k.POD)) == 2  # the foreign pod is stored too (GPU capacity), slimmed


async def test_a_deployment_status_change_only_refreshes_the_status_and_a_spec_change_reapplies():
    from tei_operator.controller.handlers import child_event
    from tei_operator.controller.reconcile import OwnerKey

    memo, owner_ref = _handler_memo()

    def deployment(version: int, *, replicas: int = 1, ready: int = 0) -> dict:
        return {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "e", "namespace": "ns", "resourceVersion": str(version),
                             "labels": {"app.kubernetes.io/managed-by": "tei-operator"},
                             "ownerReferences": [owner_ref]},
                "spec": {"replicas": replicas}, "status": {"readyReplicas": ready}}

    events = [("ADDED", deployment(1)), ("MODIFIED", deployment(2, ready=1)),  # the controller's status update
              ("MODIFIED", deployment(3, replicas=2, ready=1)),  # someone edited the spec: apply again
              ("DELETED", deployment(4, replicas=2, ready=1))]
    for kind, body in events:
        await child_event(event={"type": kind, "object": body}, body=body, memo=memo)
    key = OwnerKey("EmbeddingService", "ns", "e")
    assert memo.queue.requested == [(key, True), (key, False), (key, True), (key, True)]


async def test_a_service_is_queued_when_new_or_changed_and_not_for_its_own_status_writes(caplog):
    from tei_operator.controller.handlers import service_event
    from tei_operator.controller.reconcile import OwnerKey

    memo, _ = _handler_memo()

    def service(version: int, *, uid: str = "u", generation: int = 1, annotations: dict | None = None,
                status: dict | None = None) -> dict:
        return {"apiVersion": "tei-operator.io/v1alpha1", "kind": "EmbeddingService",
                "metadata": {"name": "e", "namespace": "ns", "uid": uid, "resourceVersion": str(version),
                             "generation": generation, "annotations": annotations or {}},
                "spec": {"model": {"id": "m"}}, "status": status or {}}

    key = OwnerKey("EmbeddingService", "ns", "e")
    events = [
        (None, service(1)),                                           # listed at start: first sight (resume)
        ("MODIFIED", service(2, status={"observedGeneration": 1})),   # our own status write: nothing
        ("MODIFIED", service(3, status={"readyReplicas": 1})),        # again: nothing
        ("MODIFIED", service(4, generation=2)),                       # spec change: one full reconcile
        ("MODIFIED", service(5, generation=2, annotations={"x": "1"})),  # an annotation: reconciled and logged
        ("DELETED", service(6, generation=2, annotations={"x": "1"})),   # gone: queued once more (forget)
        ("ADDED", service(7, uid="v")),                               # created again under the same name
    ]
    with caplog.at_level("INFO", logger="tei_operator.controller"):
        for kind, body in events:
            await service_event(event={"type": kind, "object": body}, body=body, memo=memo)
    assert memo.queue.requested == [(key, True), (key, True), (key, True), (key, False), (key, True)]
    assert memo.store.get_now(memo.reconciler.kinds["EmbeddingService"], "e", "ns")["metadata"]["uid"] == "v"
    assert [r.getMessage() for r in caplog.records] == [
        "Reconciled EmbeddingService ns/e after its labels or annotations changed"]
