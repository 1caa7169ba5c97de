"""Two operator replicas on the real control plane: exactly one writes, and the standby takes over within 15 s of
the leader's SIGKILL. Plus the election itself (controller/leader.py) against the API server's Leases.

Writes are counted two ways: on the server, by field manager (managedFields of the children), and per replica,
from each process's own /metrics (`tei_operator_api_requests_total` by method, Lease requests left out).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tei_operator.controller.leader import LEASE, LeaderElector, LeaseConfig
from tei_operator.kube import KubeClient, NotLeaderError, ResourceType

from .conftest import OperatorProcess, service_manifest, wait_for

pytestmark = pytest.mark.cluster

WRITES = ("POST", "PUT", "PATCH", "DELETE")
TAKEOVER_LIMIT_SECONDS = 15.0
CPU_SPEC = {"model": {"id": "BAAI/bge-small-en-v1.5"}, "gpu": {"count": 0}}


def writes(process: OperatorProcess) -> float:
    """Writes this replica sent to the API server, its Lease renewals left out."""
    return sum(v for (name, labels), v in process.metrics().items()
               if name == "tei_operator_api_requests_total" and dict(labels)["method"] in WRITES
               and dict(labels)["resource"] != "leases")


def readyz(process: OperatorProcess) -> tuple[int, str]:
    url = f"http://127.0.0.1:{process.health_port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def identity(process: OperatorProcess) -> str:
    return next(dict(labels)["identity"] for (name, labels) in process.metrics() if name == "tei_operator_info")


def lease_holder(kube) -> str | None:
    lease = kube.get("lease", "tei-operator", "default") or {}
    return (lease.get("spec") or {}).get("holderIdentity")


# ---------------------------------------------------------------- the election, in process, on the API server

def elector(kubeconfig: str, namespace: str, name: str, who: str) -> LeaderElector:
    client = KubeClient.from_environment(kubeconfig, timeout=5)
    return LeaderElector(client, LeaseConfig(name=name, namespace=namespace, identity=who, lease_duration=2.0,
                                             renew_deadline=1.5, retry_period=0.25))


async def test_two_replicas_racing_for_a_new_lease_get_one_leader(kubeconfig, namespace):
    for round_ in range(5):
        name = f"race-{round_}"
        a, b = elector(kubeconfig, namespace, name, "a"), elector(kubeconfig, namespace, name, "b")
        results = await asyncio.gather(a.try_acquire_or_renew(), b.try_acquire_or_renew())
        assert sorted(results) == [False, True], f"round {round_}: {results}"
        assert [a.is_leader(), b.is_leader()] == results
        # the loser keeps losing while the winner renews
        winner, loser = (a, b) if results[0] else (b, a)
        for _ in range(3):
            assert await winner.try_acquire_or_renew() is True
            assert await loser.try_acquire_or_renew() is False


async def test_standby_waits_a_lease_duration_after_the_last_renewal_then_takes_over(kubeconfig, namespace):
    a, b = elector(kubeconfig, namespace, "takeover", "a"), elector(kubeconfig, namespace, "takeover", "b")
    assert await a.try_acquire_or_renew()
    assert await b.try_acquire_or_renew() is False
    await asyncio.sleep(0.5)
    assert await a.try_acquire_or_renew()  # the last renewal: "a" dies now
    last_renewal = time.monotonic()
    tries = 0
    while not await b.try_acquire_or_renew():
        tries += 1
        # "a" stops counting itself leader (renew deadline, 1.5 s) before "b" may take over (lease, 2 s)
        if time.monotonic() - last_renewal > 1.6:
            assert not a.is_leader()
        await asyncio.sleep(0.1)
    waited = time.monotonic() - last_renewal
    assert tries > 5 and 2.0 <= waited < 3.0, waited
    lease = await b.kube.get(LEASE, "takeover", namespace)
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    assert await a.try_acquire_or_renew() is False  # the old leader cannot come back while "b" renews


async def test_released_lease_is_taken_at_the_next_read(kubeconfig, namespace):
    a, b = elector(kubeconfig, namespace, "release", "a"), elector(kubeconfig, namespace, "release", "b")
    assert await a.acquire(asyncio.Event())
    assert await b.try_acquire_or_renew() is False
    await a.release()
    assert not a.is_leader()
    assert await b.try_acquire_or_renew() is True


async def test_a_client_fenced_by_the_election_sends_no_write(kubeconfig, namespace):
    a, b = elector(kubeconfig, namespace, "fence", "a"), elector(kubeconfig, namespace, "fence", "b")
    assert await a.try_acquire_or_renew()
    writer = KubeClient.from_environment(kubeconfig)
    writer.write_guard = b.is_leader  # a client of the replica that is not the leader
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fenced", "namespace": namespace}}
    writer.register(ResourceType("", "v1", "configmaps", "ConfigMap"))
    with pytest.raises(NotLeaderError):
        await writer.create(config_map)
    assert await writer.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/") is not None  # reads pass
    writer.write_guard = a.is_leader
    await writer.create(config_map)


# ---------------------------------------------------------------- two operator processes

@pytest.fixture
def standby(cluster, operator, kubeconfig):
    """A second `tei-operator run` beside the session's operator, on the same Lease."""
    workdir = Path(tempfile.mkdtemp(prefix="tei-operator-standby-"))
    process = OperatorProcess(kubeconfig, workdir, dict(operator.extra_env))
    process.start()
    try:
        yield process
    finally:
        process.stop()
        print(f"\nstandby log: {process.log_path}")
        if not operator.alive():  # the test killed the session's operator: bring it back for the other tests
            operator.start()


def test_two_replicas_one_writer_and_takeover_after_sigkill(kube, operator, standby, namespace):
    leader_id = identity(operator)
    wait_for(lambda: lease_holder(kube) == leader_id, 20, what="the session's operator to hold the Lease")
    assert operator.metric_sum("tei_operator_leader") == 1 and standby.metric_sum("tei_operator_leader") == 0
    status, text = readyz(standby)
    assert status == 200 and "standby" in text, text
    status, text = readyz(operator)
    assert status == 200 and f"leader {leader_id}" in text, text

    standby_before, leader_before = writes(standby), writes(operator)
    names = [f"svc-{i}" for i in range(4)]
    kube.apply([service_manifest("EmbeddingService", n, namespace, CPU_SPEC) for n in names])
    for n in names:
        wait_for(lambda n=n: kube.get("deployment", n, namespace), 60, what=f"Deployment {n}")
        kube.wait_condition("EmbeddingService", n, namespace, "Ready", "True", timeout=60)
    kube.kubectl("patch", "embeddingservice", names[0], "-n", namespace, "--type=merge",
                 "-p", json.dumps({"spec": {"engine": {"maxBatchTokens": 8192}}}))
    wait_for(lambda: any(e.get("name") == "MAX_BATCH_TOKENS" and e.get("value") == "8192" for e in
                         kube.get("deployment", names[0], namespace)["spec"]["template"]["spec"]["containers"][0]
                         .get("env", [])), 60, what="the update to reach the Deployment")

    leader_writes, standby_writes = writes(operator) - leader_before, writes(standby) - standby_before
    print(f"\nwrites while both ran: leader {leader_writes:.0f}, standby {standby_writes:.0f}")
    assert leader_writes >= len(names) * 2 and standby_writes == 0
    # On the server: the children were written by the operator's field managers only (plus the control plane's
    # own status writers); no third manager means no second writer under another name.
    for n in names:
        managers = {(m["manager"], m.get("subresource", "")) for m in
                    kube.get("deployment", n, namespace)["metadata"]["managedFields"]}
        others = {m for m, _ in managers if not m.startswith("kube-controller-manager")}  # Deployment status
        assert others <= {"tei-operator", "tei-operator-autoscaler"}, managers
        assert ("tei-operator", "") in managers

    standby_id = identity(standby)
    operator.kill()
    killed = time.monotonic()
    kube.apply(service_manifest("EmbeddingService", "after-kill", namespace, CPU_SPEC))
    wait_for(lambda: kube.get("deployment", "after-kill", namespace), 30, interval=0.2,
             what="the standby to create the new service's Deployment")
    acted = time.monotonic() - killed
    print(f"standby acted {acted:.1f} s after the leader's SIGKILL")
    assert acted < TAKEOVER_LIMIT_SECONDS
    assert lease_holder(kube) == standby_id
    assert standby.metric_sum("tei_operator_leader") == 1 and writes(standby) > 0
    kube.wait_condition("EmbeddingService", "after-kill", namespace, "Ready", "True", timeout=60)

    # A clean stop hands over at once: the standby (now leader) releases the Lease on SIGTERM, so the restarted
    # one takes it at its first read instead of waiting for it to expire.
    standby.stop()
    assert not lease_holder(kube), "SIGTERM did not release the Lease"
    operator.start()
    new_id = identity(operator)
    wait_for(lambda: lease_holder(kube) == new_id, 20, interval=0.2, what="the restarted operator to lead")
    this_start = operator.log_text().rsplit("===== start", 1)[-1]
    assert "Took the leader Lease default/tei-operator from nobody" in this_start


def test_a_leader_that_loses_its_lease_stops_and_leads_again_later(kube, operator, namespace):
    """Someone else holds the Lease (as after a partition): the operator stops its controller and stands by, then
    takes the Lease back when that holder stops renewing, and its restarted controller reconciles again."""
    leader_id = identity(operator)
    wait_for(lambda: lease_holder(kube) == leader_id, 20, what="the operator to hold the Lease")
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    kube.kubectl("patch", "lease", "tei-operator", "-n", "default", "--type=merge", "-p", json.dumps(
        {"spec": {"holderIdentity": "intruder", "renewTime": now, "leaseDurationSeconds": 3}}))
    wait_for(lambda: operator.metric_sum("tei_operator_leader") == 0, 10, interval=0.2,
             what="the operator to stand by")
    assert "Lost the leader Lease default/tei-operator (held by intruder)" in operator.log_text()
    wait_for(lambda: lease_holder(kube) == leader_id, 15, interval=0.2, what="the operator to take the Lease back")
    name = f"back-{uuid.uuid4().hex[:4]}"
    kube.apply(service_manifest("EmbeddingService", name, namespace, CPU_SPEC))
    kube.wait_condition("EmbeddingService", name, namespace, "Ready", "True", timeout=60)
    assert operator.alive()


def _lease_requests() -> dict[str, float]:
    from tei_operator.metrics import METRICS

    return {method: sum(METRICS.api_requests.labels(method, "leases", code)._value.get() for code in ("200", "409"))
            for method in ("GET", "PUT")}


async def test_the_leader_renews_with_one_put_and_reads_only_after_a_conflict(kubeconfig, namespace):
    a, b = elector(kubeconfig, namespace, "renew", "a"), elector(kubeconfig, namespace, "renew", "b")
    assert await a.try_acquire_or_renew()
    before = _lease_requests()
    for _ in range(4):
        assert await a.try_acquire_or_renew()
    after = _lease_requests()
    assert (after["GET"] - before["GET"], after["PUT"] - before["PUT"]) == (0, 4)
    # Someone else writes the Lease (here: an annotation): the leader's next PUT gets 409, it reads the Lease, sees
    # that it still holds it and renews; the standby still sees a live holder.
    lease = await b.kube.get(LEASE, "renew", namespace)
    lease["metadata"].setdefault("annotations", {})["touched"] = "yes"
    await b.kube.request("PUT", LEASE.path(namespace, "renew"), body=lease)
    before = _lease_requests()
    assert await a.try_acquire_or_renew()
    after = _lease_requests()
    assert (after["GET"] - before["GET"], after["PUT"] - before["PUT"]) == (1, 2)  # the refused PUT, then the read
    assert await b.try_acquire_or_renew() is False
    assert (await b.kube.get(LEASE, "renew", namespace))["spec"]["holderIdentity"] == "a"
