"""The periodic resync leaves out a service none of whose namespace's objects changed since its last reconcile
(runner.Reconciled), and still reconciles it once every full period."""

from __future__ import annotations

import asyncio

from tei_operator.controller.cache import ObjectStore
from tei_operator.controller.reconcile import OwnerKey, owner_types
from tei_operator.controller.runner import Reconciled, key_phase, resync_once
from tei_operator.metrics import METRICS


def service(name: str, namespace: str, rv: int) -> dict:
    return {"apiVersion": "tei-operator.io/v1alpha1", "kind": "EmbeddingService",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": str(rv)}, "spec": {}}


class Queue:
    """The reconcile queue's `request_and_wait`, running the work wrapper as runner.run_controller does."""

    def __init__(self, reconciled: Reconciled) -> None:
        self.reconciled = reconciled
        self.ran: list[OwnerKey] = []

    async def request_and_wait(self, key: OwnerKey, *, apply: bool = True) -> None:
        version = self.reconciled.started(key)
        self.ran.append(key)
        self.reconciled.succeeded(key, version, apply=apply)


def test_a_resync_reconciles_only_services_whose_namespace_changed_and_all_once_a_full_period():
    store = ObjectStore()
    for n, ns in enumerate(("a", "a", "b")):
        store.put(service(f"s{n}", ns, n + 1))
    clock = [0.0]
    reconciled = Reconciled(store, full_seconds=100, clock=lambda: clock[0], phase=lambda key: 0.0)
    queue = Queue(reconciled)
    kinds = owner_types()
    loop = asyncio.new_event_loop()
    try:
        def resync() -> set[str]:
            queue.ran.clear()
            loop.run_until_complete(resync_once(store, queue, kinds, reconciled))
            return {key.name for key in queue.ran}

        skips = METRICS.value("tei_operator_resync_skips_total")
        assert resync() == {"s0", "s1", "s2"}  # never reconciled yet
        clock[0] += 20
        assert resync() == set()  # nothing changed anywhere
        assert METRICS.value("tei_operator_resync_skips_total") == skips + 3
        # A pod of namespace b changed: only b's service is reconciled again.
        store.put({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "b",
                                                                   "resourceVersion": "9"}})
        clock[0] += 20
        assert resync() == {"s2"}
        # A status-only refresh does not count as a reconcile that checked the children.
        store.put({**service("s0", "a", 10), "spec": {"replicas": 2}})
        key = OwnerKey("EmbeddingService", "a", "s0")
        reconciled.succeeded(key, reconciled.started(key), apply=False)
        clock[0] += 20
        assert resync() == {"s0", "s1"}
        # A full period after its last reconcile by a resync, a service is reconciled however unchanged.
        clock[0] += 100
        assert resync() == {"s0", "s1", "s2"}
        # A failed reconcile is never taken as seen.
        reconciled.failed(OwnerKey("EmbeddingService", "b", "s2"))
        clock[0] += 20
        assert resync() == {"s2"}
    finally:
        loop.close()


class Fleet:
    """1,000 services over 20 namespaces that all succeeded at t=0 (an operator's start), on a hand-moved clock."""

    def __init__(self) -> None:
        self.store = ObjectStore()
        self.keys = [OwnerKey("EmbeddingService", f"ns{n % 20}", f"s{n}") for n in range(1000)]
        for n, key in enumerate(self.keys):
            self.store.put(service(key.name, key.namespace, n + 1))
        self.clock = [0.0]
        self.reconciled = Reconciled(self.store, full_seconds=600, clock=lambda: self.clock[0])
        for key in self.keys:
            self.reconciled.succeeded(key, self.reconciled.started(key), apply=True)

    def due_per_minute(self, start: float) -> list[int]:
        """For each of the 10 minutes after `start`: how many full passes a resync at its end runs."""
        counts = []
        for minute in range(1, 11):
            self.clock[0] = start + 60.0 * minute
            due = [key for key in self.keys if not self.reconciled.unchanged(key)]
            for key in due:
                self.reconciled.resynced(key)
            counts.append(len(due))
        return counts


def test_the_full_passes_of_services_started_together_are_spread_over_the_period():
    # Their full passes must not come as one wave.
    fleet = Fleet()
    due_per_minute = fleet.due_per_minute(0.0)
    assert sum(due_per_minute) == 1000  # every service had its full pass within the period, once
    assert max(due_per_minute) <= 150, due_per_minute  # ~100 a minute, not 1,000 at once
    # And the phase is the same in every process (a restart keeps each service's place).
    keys = fleet.keys
    assert key_phase(keys[0]) == key_phase(OwnerKey("EmbeddingService", "ns0", "s0"))
    assert all(0.0 <= key_phase(key) < 1.0 for key in keys)


def test_services_a_change_reconciled_together_keep_their_own_full_pass_slots():
    # Then reconciled by the same resync because their namespaces changed (created or edited together): their next
    # full passes stay spread, not one wave a period after the change.
    fleet = Fleet()
    fleet.clock[0] = 300.0
    for n in range(20):  # every namespace changed: the resync reconciles every service
        fleet.store.put({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": f"ns{n}",
                                                                         "resourceVersion": str(2000 + n)}})
    loop = asyncio.new_event_loop()
    try:
        queue = Queue(fleet.reconciled)
        loop.run_until_complete(resync_once(fleet.store, queue, owner_types(), fleet.reconciled))
    finally:
        loop.close()
    assert len(queue.ran) == 1000
    due_per_minute = fleet.due_per_minute(300.0)
    assert sum(due_per_minute) == 1000  # each once within the period after the change
    assert max(due_per_minute) <= 150, due_per_minute  # ~100 a minute (a wave: 1,000 in the 10th minute)
