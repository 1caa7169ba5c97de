"""status.model and ModelMismatch: the pure report, and the /info reader against real emulators on 127.0.0.1.

TEI facts relied on (/work/shared/TEI.md, TEI's router `Info`): GET /info reports `model_id` and `model_sha` (the
commit the revision resolved to); a pod's TEI loads its model once, so the answer holds for the pod's life; with
an API key, /info needs it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tei_operator.controller import status as st
from tei_operator.controller.model_info import ModelInfoReader, PodInfo, served_model_report
from tei_operator.emulator.config import EmulatorConfig
from tei_operator.emulator.server import ApiOptions, EmulatorServer

pytestmark = pytest.mark.timeout(30)

SHA_A = "5617a9f61b028005a4858fdac845db406aefb181"
SHA_B = "0123456789abcdef0123456789abcdef01234567"


def report(pods: list[PodInfo], revision: str | None = SHA_A, **kwargs: Any) -> tuple[dict, dict]:
    return served_model_report(model_id="BAAI/bge-m3", revision=revision, pods=pods, generation=4, **kwargs)


def test_one_sha_everywhere_is_no_mismatch() -> None:
    model, cond = report([PodInfo("p1", "BAAI/bge-m3", SHA_A), PodInfo("p0", "BAAI/bge-m3", SHA_A)])
    assert model == {"id": "BAAI/bge-m3", "requestedRevision": SHA_A, "servedShas": [SHA_A],
                     "pods": [{"name": "p0", "modelId": "BAAI/bge-m3", "sha": SHA_A},
                              {"name": "p1", "modelId": "BAAI/bge-m3", "sha": SHA_A}]}
    assert (cond["type"], cond["status"], cond["reason"]) == ("ModelMismatch", "False", "OneModelSha")
    assert cond["message"] == "All 2 Ready pods serve BAAI/bge-m3@5617a9f61b02" and cond["observedGeneration"] == 4


def test_different_shas_models_or_revision_are_a_mismatch() -> None:
    _, cond = report([PodInfo("a", "BAAI/bge-m3", SHA_A), PodInfo("b", "BAAI/bge-m3", SHA_B)], revision=None)
    assert (cond["status"], cond["reason"]) == ("True", "DifferentShas")
    assert "0123456789ab on b; 5617a9f61b02 on a" in cond["message"] and "pin spec.model.revision" in cond["message"]
    _, cond = report([PodInfo("a", "BAAI/bge-m3", SHA_A), PodInfo("b", "BAAI/bge-large-en-v1.5", SHA_A)])
    assert (cond["status"], cond["reason"]) == ("True", "DifferentModels")
    _, cond = report([PodInfo("a", "BAAI/bge-m3", SHA_B)])
    assert (cond["status"], cond["reason"]) == ("True", "RevisionNotServed")
    _, cond = report([PodInfo("a", "BAAI/bge-m3", SHA_B)], revision="main")  # a branch: any sha may be right
    assert (cond["status"], cond["reason"]) == ("False", "OneModelSha")


def test_unknown_while_reading_failing_or_protected() -> None:
    _, cond = report([PodInfo("a", "BAAI/bge-m3", SHA_A), PodInfo("b")])
    assert (cond["status"], cond["reason"]) == ("Unknown", "ReadingModelInfo")
    _, cond = report([PodInfo("b", error="timed out")])
    assert (cond["status"], cond["reason"], cond["message"]) == (
        "Unknown", "ModelInfoUnreadable", "Could not read /info of b: timed out")
    _, cond = report([PodInfo("a", "BAAI/bge-m3", SHA_A)], protected=True)
    assert (cond["status"], cond["reason"]) == ("Unknown", "ModelInfoNeedsApiKey")
    model, cond = report([])
    assert (cond["status"], cond["reason"]) == ("False", "NoReadyPods") and model["servedShas"] == []


def test_build_status_writes_model_and_keeps_other_conditions() -> None:
    served = report([PodInfo("a", "BAAI/bge-m3", SHA_A)])
    current = {"conditions": [{"type": "ScalingLimited", "status": "False", "reason": "X", "message": "m"}]}
    status = st.build_status(generation=4, deployment=None, pods=[], current=current, now="2026-01-01T00:00:00Z",
                             served_model=served)
    assert status["model"]["servedShas"] == [SHA_A]
    types = [c["type"] for c in status["conditions"]]
    assert "ModelMismatch" in types and "ScalingLimited" in types
    # written without a report (an invalid spec), the operator's own ModelMismatch is dropped, not left stale
    again = st.build_status(generation=5, deployment=None, pods=[], current=status, now="2026-01-01T00:00:01Z")
    assert "ModelMismatch" not in [c["type"] for c in again["conditions"]] and "ScalingLimited" in [
        c["type"] for c in again["conditions"]]


def test_build_status_summary_says_model_mismatch_of_a_serving_service() -> None:
    """The STATUS column (status.summary, helper prodops') follows the ModelMismatch condition built here: a
    serving service whose Ready pods serve two commits reads ModelMismatch, not AllReplicasReady."""
    live = {"metadata": {"generation": 3}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
                       "availableReplicas": 2}}
    agree = report([PodInfo("a", "BAAI/bge-m3", SHA_A), PodInfo("b", "BAAI/bge-m3", SHA_A)])
    status = st.build_status(generation=4, deployment=live, pods=[], current=None, now="2026-01-01T00:00:00Z",
                             served_model=agree)
    assert status["summary"] == "AllReplicasReady"
    mixed = report([PodInfo("a", "BAAI/bge-m3", SHA_A), PodInfo("b", "BAAI/bge-m3", SHA_B)], revision=None)
    status = st.build_status(generation=4, deployment=live, pods=[], current=status, now="2026-01-01T00:00:01Z",
                             served_model=mixed)
    assert status["summary"] == "ModelMismatch" and "Available" in [c["type"] for c in status["conditions"]]


def pod(name: str, uid: str, port: int, ready: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": uid, "namespace": "ns"},
            "spec": {"containers": [{"name": "tei", "ports": [{"name": "http", "containerPort": port}]}]},
            "status": {"podIP": "127.0.0.1",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


async def test_reader_reads_each_ready_pod_once_in_the_background() -> None:
    config = EmulatorConfig(port=0, dimensions=8, revision=SHA_A)
    async with EmulatorServer(config) as a, EmulatorServer(config, ApiOptions(model_sha=SHA_B)) as b:
        reader = ModelInfoReader(None, scrape_via="podip", timeout=2)
        notified: list[Any] = []
        done = asyncio.Event()

        def notify(key: Any) -> None:
            notified.append(key)
            if len(notified) == 2:
                done.set()

        reader.notify = notify
        pods = [pod("a", "uid-a", a.port), pod("b", "uid-b", b.port), pod("c", "uid-c", a.port, ready=False)]
        first = reader.report("svc", "ns", pods)
        assert [p.name for p in first] == ["a", "b"] and not any(p.read for p in first)  # c is not Ready
        await asyncio.wait_for(done.wait(), 5)
        second = reader.report("svc", "ns", pods)
        assert {p.name: p.sha for p in second} == {"a": SHA_A, "b": SHA_B}
        assert reader.reads == 2 and notified == ["svc", "svc"]
        reader.report("svc", "ns", pods)
        await asyncio.sleep(0.05)
        assert reader.reads == 2  # cached: a pod's model does not change
        _, cond = served_model_report(model_id="BAAI/bge-m3", revision=None, pods=second, generation=1)
        assert (cond["status"], cond["reason"]) == ("True", "DifferentShas")
        await reader.close()


async def test_reader_retries_a_pod_that_did_not_answer_after_a_backoff() -> None:
    clock = [100.0]
    reader = ModelInfoReader(None, scrape_via="podip", timeout=1, retry_seconds=5, clock=lambda: clock[0])
    finished = asyncio.Event()
    reader.notify = lambda key: finished.set()
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # nothing listens there once the socket is closed
    pods = [pod("a", "uid-a", closed_port)]
    reader.report("svc", "ns", pods)
    await asyncio.wait_for(finished.wait(), 5)
    (info,) = reader.report("svc", "ns", pods)
    assert info.error and "ClientConnectorError" in info.error and reader.reads == 1  # no retry before the backoff
    clock[0] += 6
    finished.clear()
    reader.report("svc", "ns", pods)
    await asyncio.wait_for(finished.wait(), 5)
    assert reader.reads == 2
    await reader.close()


async def test_reader_notifies_again_when_the_backoff_is_over() -> None:
    reader = ModelInfoReader(None, scrape_via="podip", timeout=1, retry_seconds=0.2)
    notified: list[float] = []
    second = asyncio.Event()

    def notify(key: Any) -> None:
        notified.append(asyncio.get_running_loop().time())
        if len(notified) == 2:
            second.set()

    reader.notify = notify
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    reader.report("svc", "ns", [pod("a", "uid-a", closed_port)])
    await asyncio.wait_for(second.wait(), 5)  # the failed read, then the end of its backoff
    assert notified[1] - notified[0] >= 0.15 and reader.reads == 1
    await reader.close()


async def test_reader_does_not_read_a_service_whose_info_needs_the_api_key() -> None:
    reader = ModelInfoReader(None, scrape_via="podip")
    infos = reader.report("svc", "ns", [pod("a", "uid-a", 1)], read=False)
    await asyncio.sleep(0.01)
    assert [i.name for i in infos] == ["a"] and not infos[0].read and reader.reads == 0
    await reader.close()


async def test_settle_waits_for_the_reads_under_way_so_the_answer_joins_the_same_status_write() -> None:
    config = EmulatorConfig(port=0, dimensions=8, revision=SHA_A)
    async with EmulatorServer(config) as a:
        reader = ModelInfoReader(None, scrape_via="podip", timeout=2)
        pods = [pod("a", "uid-a", a.port), pod("c", "uid-c", a.port, ready=False)]
        assert not await reader.settle(pods, 1.0)  # nothing under way yet
        (first,) = reader.report("svc", "ns", pods)
        assert not first.read
        assert await reader.settle(pods, 2.0)
        (second,) = reader.report("svc", "ns", pods)
        assert second.sha == SHA_A  # read within the wait: no second status write needed for it
        assert not await reader.settle(pods, 1.0)  # known now: nothing to wait for
        await reader.close()
