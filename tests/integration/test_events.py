"""`KubeClient.create_event` against the real API server: a repeated event is one Event whose count goes up, as
Kubernetes' own recorder does, and what `kubectl describe` then shows.

The objects the events are about are real Services in a fresh namespace (no operator needed: nothing here
reconciles them). Each test builds its own KubeClients, as the operator does at start-up; a second client stands
for a second writer (another operator process, or one restarted) that has not seen the Event before.
"""

from __future__ import annotations

import asyncio
import datetime

import pytest

from tei_operator.kube import EVENT, KubeClient
from tei_operator.kube_events import event_key, event_name

pytestmark = pytest.mark.cluster

MESSAGE = "Scaling of EmbeddingService bge-m3 limited to 2 replicas (GpuCapacity)"


@pytest.fixture
async def client(kubeconfig):
    kube = KubeClient.from_environment(kubeconfig)
    try:
        yield kube
    finally:
        kube.close()


async def a_service(kube: KubeClient, namespace: str, name: str) -> dict:
    """A real object to record events about (the events need its uid, as kubectl describe matches on it)."""
    return await kube.create({"apiVersion": "v1", "kind": "Service",
                              "metadata": {"name": name, "namespace": namespace},
                              "spec": {"ports": [{"port": 80}]}})


async def events_of(kube: KubeClient, obj: dict) -> list[dict]:
    meta = obj["metadata"]
    return await kube.list(EVENT, meta["namespace"], field_selector=f"involvedObject.uid={meta['uid']}")


def parse(timestamp: str) -> datetime.datetime:
    return datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ")


async def test_the_same_event_three_times_is_one_event_with_count_three(client, namespace, cluster):
    svc = await a_service(client, namespace, "bge-m3")
    first = await client.create_event(svc, reason="ScalingLimited", message=MESSAGE)
    await asyncio.sleep(1.1)  # timestamps have whole seconds: let the last one be later than the first
    await client.create_event(svc, reason="ScalingLimited", message=MESSAGE)
    third = await client.create_event(svc, reason="ScalingLimited", message=MESSAGE)

    events = await events_of(client, svc)
    assert len(events) == 1, [e["metadata"]["name"] for e in events]
    event = events[0]
    assert event["metadata"]["name"] == first["metadata"]["name"]
    assert event["count"] == 3 and third["count"] == 3
    assert parse(event["lastTimestamp"]) > parse(event["firstTimestamp"])
    assert event["firstTimestamp"] == first["firstTimestamp"]
    assert (event["reason"], event["type"], event["message"]) == ("ScalingLimited", "Normal", MESSAGE)
    assert event["source"]["component"] == "tei-operator" and event["reportingComponent"] == "tei-operator"
    assert event["involvedObject"]["uid"] == svc["metadata"]["uid"]

    described = cluster.kubectl("describe", "service", "bge-m3", "-n", namespace).stdout
    assert "(x3 over" in described, described


async def test_a_writer_that_has_not_seen_the_event_counts_on_top_of_it(client, kubeconfig, namespace):
    """The 409 AlreadyExists path: an operator restarted (or the other writer) records the same event again."""
    svc = await a_service(client, namespace, "restarted")
    for _ in range(2):
        await client.create_event(svc, reason="Stalled", message="restarted stalled", type="Warning")
    other = KubeClient.from_environment(kubeconfig)
    try:
        written = await other.create_event(svc, reason="Stalled", message="restarted stalled", type="Warning")
        again = await other.create_event(svc, reason="Stalled", message="restarted stalled", type="Warning")
    finally:
        other.close()
    assert (written["count"], again["count"]) == (3, 4)
    # And the first client, whose memory of the Event is now stale, is refused (409) and counts on top as well.
    latest = await client.create_event(svc, reason="Stalled", message="restarted stalled", type="Warning")
    assert latest["count"] == 5
    events = await events_of(client, svc)
    assert [(e["count"], e["type"]) for e in events] == [(5, "Warning")]


async def test_a_different_message_or_reason_is_a_second_event(client, namespace):
    svc = await a_service(client, namespace, "svc")
    await client.create_event(svc, reason="ScaledUp", message="Scaled up from 1 to 2")
    await client.create_event(svc, reason="ScaledUp", message="Scaled up from 2 to 4")
    await client.create_event(svc, reason="ScaledUp", message="Scaled up from 1 to 2")
    await client.create_event(svc, reason="ScaledDown", message="Scaled up from 1 to 2")
    events = await events_of(client, svc)
    counts = sorted((e["reason"], e["message"], e["count"]) for e in events)
    assert counts == [("ScaledDown", "Scaled up from 1 to 2", 1), ("ScaledUp", "Scaled up from 1 to 2", 2),
                      ("ScaledUp", "Scaled up from 2 to 4", 1)]


async def test_events_about_two_objects_stay_separate(client, namespace):
    one = await a_service(client, namespace, "one")
    two = await a_service(client, namespace, "two")
    for _ in range(2):
        await client.create_event(one, reason="Recovered", message="recovered: no problem found")
    await client.create_event(two, reason="Recovered", message="recovered: no problem found")
    assert [e["count"] for e in await events_of(client, one)] == [2]
    assert [e["count"] for e in await events_of(client, two)] == [1]


async def test_a_deleted_event_is_created_again(client, kubeconfig, namespace):
    svc = await a_service(client, namespace, "phoenix")
    first = await client.create_event(svc, reason="DriftReverted", message="Reverted", type="Warning")
    await client.create_event(svc, reason="DriftReverted", message="Reverted", type="Warning")
    name = first["metadata"]["name"]
    assert await client.delete(EVENT, name, namespace)  # as the API server's event TTL would

    # The client that remembers the Event gets 404 on its patch and creates it again.
    again = await client.create_event(svc, reason="DriftReverted", message="Reverted", type="Warning")
    assert again["metadata"]["name"] == name and again["count"] == 1
    assert again["metadata"]["uid"] != first["metadata"]["uid"]
    assert [e["count"] for e in await events_of(client, svc)] == [1]

    # A client that never saw it creates it in one go after a delete too.
    assert await client.delete(EVENT, name, namespace)
    other = KubeClient.from_environment(kubeconfig)
    try:
        fresh = await other.create_event(svc, reason="DriftReverted", message="Reverted", type="Warning")
    finally:
        other.close()
    assert fresh["count"] == 1
    assert [e["count"] for e in await events_of(client, svc)] == [1]


async def test_concurrent_writers_lose_no_occurrence(client, kubeconfig, namespace):
    """The controller and the autoscaler loop write at the same time (one client), and so may a second process
    (another client): every occurrence is counted, whoever wins each round."""
    svc = await a_service(client, namespace, "busy")
    other = KubeClient.from_environment(kubeconfig)
    try:
        writes = [kube.create_event(svc, reason="ScalingLimited", message=MESSAGE)
                  for kube in (client, other) for _ in range(4)]
        results = await asyncio.gather(*writes)
    finally:
        other.close()
    assert all(r is not None for r in results)
    events = await events_of(client, svc)
    assert [e["count"] for e in events] == [8]
    assert sorted(r["count"] for r in results) == list(range(1, 9))


async def test_an_event_that_cannot_be_written_is_logged_not_raised(client, caplog):
    """The namespace does not exist: the API server refuses (404), create_event returns None and logs it."""
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ghost", "namespace": "no-such-namespace",
                                                                  "uid": "0000"}}
    assert await client.create_event(svc, reason="Recovered", message="ghost recovered") is None
    key = event_key(svc, reason="Recovered", message="ghost recovered", type="Normal", action=None,
                    component="tei-operator")
    assert any("Failed to record event Recovered on Service no-such-namespace/ghost" in r.getMessage()
               for r in caplog.records)
    assert event_name(key).startswith("ghost.")


class CountingClient(KubeClient):
    """A real KubeClient that also counts the requests it sends (they still go to the API server)."""

    sent: list[str]

    async def request(self, method, path, **kwargs):
        self.sent.append(method)
        return await super().request(method, path, **kwargs)


async def test_a_first_occurrence_and_a_repeat_cost_one_request_each(kubeconfig, client, namespace):
    svc = await a_service(client, namespace, "cheap")
    counting = CountingClient.from_environment(kubeconfig)
    try:
        counting.sent = []
        await counting.create_event(svc, reason="Ready", message="cheap became Ready")
        assert counting.sent == ["POST"]
        counting.sent = []
        await counting.create_event(svc, reason="Ready", message="cheap became Ready")
        assert counting.sent == ["PATCH"]
    finally:
        counting.close()
    # A writer that has not seen the Event: create (409), read, patch.
    fresh = CountingClient.from_environment(kubeconfig)
    try:
        fresh.sent = []
        written = await fresh.create_event(svc, reason="Ready", message="cheap became Ready")
        assert fresh.sent == ["POST", "GET", "PATCH"] and written["count"] == 3
    finally:
        fresh.close()
