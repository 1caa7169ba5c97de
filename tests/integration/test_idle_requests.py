"""Idle means silent (issue #10): with N Ready, unchanged services, the operator's periodic resyncs send no API request
at all, neither a write nor a read. It reconciles from its watch-fed store and applies a child only on difference.

A dedicated operator watches only this test's namespace with a short resync period; the positive sign that it looked
is its own `tei_operator_resyncs_total` going up (each resync ends once every service was reconciled), and the
requests are its own `tei_operator_api_requests_total` (every request of its client, by method and resource).

The autoscaler is silent too on an idle, settled fleet: no status heartbeat, its status is written only when it
changes. The sign that it looked is `tei_operator_autoscaler_decisions_total` (one decision per service per tick).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.cluster.emulated_pods import EmulatedPods

from .conftest import OperatorProcess, service_manifest, wait_for
from .test_model_cache import managed, storage  # noqa: F401 - `storage` is a fixture
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


AUTOSCALED = 3
TICK_SECONDS = 2


@pytest.fixture
def scoped_operator(operator, kubeconfig, namespace):
    """An operator of its own for `namespace` only, resyncing every few seconds (its autoscaler ticking every
    `TICK_SECONDS`). The session's operator (all namespaces) is stopped meanwhile: two operators writing one
    service's status would not be idle."""
    workdir = Path(tempfile.mkdtemp(prefix="tei-operator-idle-"))
    process = OperatorProcess(kubeconfig, workdir, {
        "TEI_OPERATOR_NAMESPACES": namespace, "TEI_OPERATOR_LEADER_ELECTION": "false",
        "TEI_OPERATOR_RESYNC_SECONDS": str(RESYNC_SECONDS), "TEI_OPERATOR_SCRAPE_VIA": "podip",
        "TEI_OPERATOR_AUTOSCALER_TICK_SECONDS": str(TICK_SECONDS), "TEI_OPERATOR_METRICS_SOURCE": "scrape"})
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
    # The resyncs did look at every service: reconciled it (and found nothing to do), or left it out because nothing
    # in its namespace changed since its last reconcile.
    reconciles = operator.metric_sum("tei_operator_reconciles_total", result="success")
    skipped = operator.metric_sum("tei_operator_resync_skips_total")
    assert reconciles + skipped >= SERVICES * 4


def test_resyncs_after_a_model_switch_and_with_a_managed_cache_send_no_request(scoped_operator, kube, namespace,
                                                                               storage):
    # The children other features add are read from the store too: a managed cache's claim and download Job, and
    # the Deployment a blue/green model change created (its predecessor drained and deleted).
    operator = scoped_operator
    kube.apply(managed("idle-cached", namespace, storage))
    switched = {**CPU_SPEC, "model": {"id": "BAAI/bge-small-en-v1.5", "revision": "main"},
                "rollout": {"drainSeconds": 0}}
    kube.apply(service_manifest("EmbeddingService", "idle-switched", namespace, switched))
    for name in ("idle-cached", "idle-switched"):
        kube.wait_condition("embsvc", name, namespace, "Ready", timeout=120)
    kube.apply(service_manifest("EmbeddingService", "idle-switched", namespace,
                                {**switched, "model": {"id": "BAAI/bge-small-en-v1.5", "revision": "v2"}}))

    def switched_and_drained():
        status = kube.get("embsvc", "idle-switched", namespace).get("status") or {}
        rollout = status.get("rollout") or {}
        active = (rollout.get("active") or {}).get("deployment")
        names = {d["metadata"]["name"] for d in kube.list("deployment", namespace)
                 if d["metadata"]["name"].startswith("idle-switched")}
        return (rollout.get("phase") == "Stable" and active != "idle-switched" and names == {active}
                and deployment_settled(kube.get("deployment", active, namespace)))

    wait_for(switched_and_drained, 120, what="the model switch of idle-switched to end with one Deployment")
    assert kube.list("job", namespace) and kube.list("pvc", namespace), "the managed cache's children take part"

    after_resyncs(operator, 1)
    before = requests_by_verb(operator)
    done = after_resyncs(operator, 3)
    after = requests_by_verb(operator)
    sent = {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}
    assert sent == {}, f"the operator sent requests during {done:.0f} idle resyncs: {sent}"


def decisions(operator: OperatorProcess) -> float:
    return operator.metric_sum("tei_operator_autoscaler_decisions_total")


def test_an_idle_autoscaled_fleet_gets_no_write_from_the_autoscaler(scoped_operator, kube, kubeconfig, namespace,
                                                                     tmp_path):
    # Autoscaled services whose pods answer as idle TEIs (one emulator each, read directly by the built-in scraper,
    # the fast scale-up path on): every tick reads real metrics, decides Hold, and has nothing new to say.
    operator = scoped_operator
    names = [f"idle-auto-{n}" for n in range(AUTOSCALED)]
    autoscaling = {"enabled": True, "minReplicas": 1, "maxReplicas": 3, "metricsSource": "scrape"}
    with EmulatedPods(kubeconfig, f"tei-operator.io/service in ({','.join(names)})", log_dir=tmp_path):
        for name in names:
            kube.apply(service_manifest("EmbeddingService", name, namespace, {**CPU_SPEC, "autoscaling": autoscaling}))
        for name in names:
            kube.wait_condition("embsvc", name, namespace, "Ready", timeout=120)

        def metrics_read(name: str) -> bool:
            auto = ((kube.get("embsvc", name, namespace) or {}).get("status") or {}).get("autoscaling") or {}
            signals = auto.get("signals") or {}
            return (signals.get("requestsPerSecond") is not None and signals.get("readyReplicas") == 1
                    and not auto.get("consecutiveMetricFailures") and bool(auto.get("lastChangeTime")))

        for name in names:  # a rate needs two scrapes: the first ticks do write (None -> 0.0), then it settles
            wait_for(lambda: metrics_read(name), 90, what=f"the autoscaler to read {name}'s metrics")
        after_resyncs(operator, 1)
        start = decisions(operator)
        wait_for(lambda: decisions(operator) >= start + 2 * AUTOSCALED, 60, interval=0.2,
                 what="two more autoscaler ticks")  # what the settling left to do is done
        before, changed = requests_by_verb(operator), {n: kube.get("embsvc", n, namespace)["status"] for n in names}
        start = decisions(operator)
        wait_for(lambda: decisions(operator) >= start + 5 * AUTOSCALED, 90, interval=0.2,
                 what="five more autoscaler ticks over every service")
        after = requests_by_verb(operator)
        sent = {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}
        assert sent == {}, f"the operator sent requests while its autoscaler ticked an idle fleet: {sent}"
        # The status still tells what the last change was, and nothing claims a later look.
        for name in names:
            status = kube.get("embsvc", name, namespace)["status"]
            assert status["autoscaling"] == changed[name]["autoscaling"]
            assert status["autoscaling"]["lastDecision"] == "Hold" and "lastTickTime" not in status["autoscaling"]
        assert operator.metric_sum("tei_operator_autoscaler_decisions_total", action="Hold") >= 5 * AUTOSCALED
