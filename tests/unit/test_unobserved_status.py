"""Reconciler._unobserved_deployment: a status that would only say "the Deployment controller has not seen the new
spec yet" is left to the refresh its update causes, for a few seconds at most."""

from __future__ import annotations

import pytest

from tei_operator.controller import reconcile as rc
from tei_operator.controller.reconcile import Outcome, OwnerKey, Reconciler
from tei_operator.kube import KubeClient
from tei_operator.settings import Settings

KEY = OwnerKey("EmbeddingService", "ns", "e")


def deployment(generation: int, observed: int) -> dict:
    return {"metadata": {"name": "e", "generation": generation}, "status": {"observedGeneration": observed}}


@pytest.fixture
def reconciler(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(rc.time, "monotonic", lambda: clock[0])
    reconciler = Reconciler(KubeClient.for_host("http://127.0.0.1:9"), Settings())
    reconciler.refreshes = []
    reconciler.refresh_later = lambda key, delay: reconciler.refreshes.append((key, delay))
    reconciler.clock = clock
    return reconciler


def test_a_just_sent_unobserved_deployment_leaves_the_status_to_the_next_refresh(reconciler):
    sent = Outcome(KEY, deployment_sent=True)
    assert reconciler._unobserved_deployment(sent, deployment(1, 0), special=False)
    assert reconciler.refreshes == [(KEY, rc.UNOBSERVED_REFRESH_SECONDS)]
    # The watch event of our own apply: still unobserved, still left (no second timer).
    reconciler.clock[0] += 1.0
    assert reconciler._unobserved_deployment(Outcome(KEY), deployment(1, 0), special=False)
    assert len(reconciler.refreshes) == 1
    # The controller's update: written.
    assert not reconciler._unobserved_deployment(Outcome(KEY), deployment(1, 1), special=False)


def test_the_due_refresh_writes_even_when_the_controller_never_observed(reconciler):
    assert reconciler._unobserved_deployment(Outcome(KEY, deployment_sent=True), deployment(2, 1), special=False)
    reconciler.clock[0] += rc.UNOBSERVED_REFRESH_SECONDS
    assert not reconciler._unobserved_deployment(Outcome(KEY), deployment(2, 1), special=False)


def test_nothing_is_left_without_a_new_spec_sent_during_a_switch_or_without_a_timer(reconciler):
    assert not reconciler._unobserved_deployment(Outcome(KEY), deployment(2, 1), special=False)
    assert not reconciler._unobserved_deployment(Outcome(KEY, deployment_sent=True), deployment(2, 1), special=True)
    assert not reconciler._unobserved_deployment(Outcome(KEY, deployment_sent=True), deployment(2, 2), special=False)
    reconciler.refresh_later = None
    assert not reconciler._unobserved_deployment(Outcome(KEY, deployment_sent=True), deployment(2, 1), special=False)
    assert reconciler.refreshes == []
