"""Idle means silent (issue #10): with N Ready, unchanged services, the operator's periodic resyncs send no API request
at all, neither a write nor a read. It reconciles from its watch-fed store and applies a child only on difference.

A dedicated operator watches only this test's namespace with a short resync period; the positive sign that it looked
is its own `tei_operator_resyncs_total` going up (each resync ends once every service was reconciled), and the
requests are its own `tei_operator_api_requests_total` (every request of its client, by method and resource).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from .conftest import OperatorProcess, service_manifest, wait_for
from .test_reconcile import deployment_settled

pytestmark = pytest.mark.cluster

SERVICES = 10
RESYNC_SECONDS = 3
CPU_SPEC = {"model": {"id": "BAAI/bge-small-en-v1.5"}, "gpu": {"count": 0}}
POLICY = {"enabled": True, "clients": [{"podSelector": {"matchLabels": {"app": "retriever"}}}]}


def requests_by_verb(operator: OperatorProcess) -> dict[tuple[str, str], float]:
    return {(dict(labels)["method"], dict(labels)["resource"]): value
            for (name, labels), value in operator.metrics().items() if name == "tei_operator_api_requests_total"}


def resyncs(operator: OperatorProcess) -> float:
    return operator.metric_sum("tei_operator_resyncs_total")


def after_resyncs(operator: OperatorProcess, count: int) -> float:
    """Wait until `count` more resyncs have completed; return the new total."""
    start = resyncs(operator)
    return wait_for(lambda: (now := resyncs(operator)) >= start + count and now, RESYNC_SECONDS * count * 10 + 30,
                    interval=0.2, what=f"{count} resyncs of the operator")


@pytest.fixture
def scoped_operator(operator, kubeconfig, namespace):
    """An operator of its own for `namespace` only, resyncing every few seconds. The session's operator (all
    namespaces) is stopped meanwhile: two operators writing one service's status would not be idle."""
    workdir = Path(tempfile.mkdtemp(prefix="tei-operator-idle-"))
    process = OperatorProcess(kubeconfig, workdir, {
        "TEI_OPERATOR_NAMESPACES": namespace, "TEI_OPERATOR_LEADER_ELECTION": "false",
        "TEI_OPERATOR_RESYNC_SECONDS": str(RESYNC_SECONDS), "TEI_OPERATOR_SCRAPE_VIA": "podip"})
    operator.stop()
    try:
        process.start()
        try:
            yield process
        finally:
            process.stop()
    finally:
        operator.start()


def test_resyncs_of_ready_services_send_no_request(scoped_operator, kube, namespace):
    operator = scoped_operator
    for n in range(SERVICES):
        extra = {"networkPolicy": POLICY} if n % 3 == 0 else {"replicas": 2} if n % 3 == 1 else {}
        kube.apply(service_manifest("EmbeddingService", f"idle-{n}", namespace, {**CPU_SPEC, **extra}))
    for n in range(SERVICES):
        kube.wait_condition("embsvc", f"idle-{n}", namespace, "Ready", timeout=120)
    for n in range(SERVICES):
        wait_for(lambda: deployment_settled(kube.get("deployment", f"idle-{n}", namespace)), 60,
                 what=f"the rollout of idle-{n} to be complete")
    pdbs = kube.list("pdb", namespace)
    policies = kube.list("networkpolicy", namespace)
    assert pdbs and policies, "every child kind takes part"  # replicas 2 -> a PDB; networkPolicy -> a NetworkPolicy

    after_resyncs(operator, 1)  # what the settling left to do is done
    before = requests_by_verb(operator)
    done = after_resyncs(operator, 3)
    after = requests_by_verb(operator)
    sent = {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}
    assert sent == {}, f"the operator sent requests during {done:.0f} idle resyncs: {sent}"
    # The resyncs did reconcile every service (and found nothing to do).
    reconciles = operator.metric_sum("tei_operator_reconciles_total", result="success")
    assert reconciles >= SERVICES * 4
