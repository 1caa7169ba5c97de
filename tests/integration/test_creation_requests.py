"""Creating a service costs few writes (issue #10): the status PATCHes of a service's way to Ready are counted on the
operator's own client (`tei_operator_api_requests_total`, every request it sent, by method and resource).

A pod's way to Ready is a burst of watch events (created, scheduled, running, Ready) and of Deployment status
updates by the control plane; the status refreshes they trigger are coalesced by the work queue
(`ReconcileQueue(status_debounce=...)`), so the status is written when it settles, not once per event.
"""

from __future__ import annotations

import pytest

from .conftest import service_manifest, wait_for
from .test_idle_requests import CPU_SPEC, requests_by_verb, scoped_operator  # noqa: F401 - a fixture
from .test_reconcile import deployment_settled

pytestmark = pytest.mark.cluster

SERVICES = 8
STATUS_PATCHES_PER_SERVICE = 3.0
"""At most this many status PATCHes per created service (autoscaling off, CPU: no cost or autoscaler status): the
first reconcile's (Progressing), at most one on the way, and Ready. Without coalescing it was 4 to 5."""


def test_creating_services_writes_their_status_few_times(scoped_operator, kube, namespace):
    operator = scoped_operator
    before = requests_by_verb(operator)
    for n in range(SERVICES):
        kube.apply(service_manifest("EmbeddingService", f"new-{n}", namespace, CPU_SPEC))
    for n in range(SERVICES):
        kube.wait_condition("embsvc", f"new-{n}", namespace, "Ready", timeout=120)
    for n in range(SERVICES):
        wait_for(lambda: deployment_settled(kube.get("deployment", f"new-{n}", namespace)), 60,
                 what=f"the rollout of new-{n} to be complete")
    # The positive sign that the operator saw the settled state: every service's status shows its ready replica.
    wait_for(lambda: all((kube.get("embsvc", f"new-{n}", namespace).get("status") or {}).get("readyReplicas") == 1
                         for n in range(SERVICES)), 60, what="every status to show its ready replica")
    after = requests_by_verb(operator)
    sent = {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}
    patches = sent.get(("PATCH", "embeddingservices/status"), 0) / SERVICES
    applies = sum(v for (verb, res), v in sent.items() if verb == "PATCH" and res == "deployments") / SERVICES
    assert applies >= 1, f"the operator applied every Deployment: {sent}"
    assert patches <= STATUS_PATCHES_PER_SERVICE, f"{patches:.2f} status PATCHes per created service: {sent}"
