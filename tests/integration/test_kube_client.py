"""`KubeClient` on its asyncio transport against the real API server: how answers map to `KubeApiError`, apply and
status writes, timeouts, the connection pool's bound, no thread per request, a clean close, and
`retry_on_conflict` racing a real concurrent writer."""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings

import pytest

from tei_operator.kube import CRD, KubeApiError, KubeClient, NotLeaderError, ResourceType
from tei_operator.kube_retry import retry_on_conflict
from tei_operator.metrics import METRICS

pytestmark = pytest.mark.cluster

CONFIG_MAP = ResourceType("", "v1", "configmaps", "ConfigMap")


@pytest.fixture
async def client(kubeconfig):
    kube = KubeClient.from_environment(kubeconfig)
    kube.register(CONFIG_MAP)
    try:
        yield kube
    finally:
        await kube.close()


def config_map(name: str, namespace: str, **data: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": data}


def requests_counted(method: str, resource: str, code: str) -> float:
    return METRICS.api_requests.labels(method, resource, code)._value.get()  # noqa: SLF001


async def test_answers_map_to_kube_api_errors(client, namespace):
    with pytest.raises(KubeApiError) as missing:
        await client.get(CONFIG_MAP, "absent", namespace)
    assert missing.value.not_found and missing.value.reason == "NotFound" and "absent" in missing.value.message
    assert await client.get_or_none(CONFIG_MAP, "absent", namespace) is None
    assert await client.delete(CONFIG_MAP, "absent", namespace) is False

    await client.create(config_map("twice", namespace))
    with pytest.raises(KubeApiError) as exists:
        await client.create(config_map("twice", namespace))
    assert exists.value.conflict and exists.value.reason == "AlreadyExists"

    with pytest.raises(KubeApiError) as invalid:
        await client.create(config_map("Not_A_Name", namespace))
    assert invalid.value.status == 422 and invalid.value.reason == "Invalid"
    assert "metadata.name" in invalid.value.message  # the server's words name the field
    assert invalid.value.request.startswith(f"POST /api/v1/namespaces/{namespace}/configmaps")


WIDGET = ResourceType("async-test.tei-operator.io", "v1", "widgets", "Widget")


async def widget_kind(kube: KubeClient) -> None:
    """A kind only this test writes (no controller touches its status), with a status subresource."""
    kube.register(WIDGET)
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": f"{WIDGET.plural}.{WIDGET.group}"},
           "spec": {"group": WIDGET.group, "scope": "Namespaced",
                    "names": {"plural": WIDGET.plural, "singular": "widget", "kind": WIDGET.kind},
                    "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                                  "schema": {"openAPIV3Schema": {"type": "object",
                                                                 "x-kubernetes-preserve-unknown-fields": True}}}]}}
    await kube.apply(crd, "async-test")
    for _ in range(100):
        got = await kube.get(CRD, crd["metadata"]["name"])
        if any(c.get("type") == "Established" and c.get("status") == "True"
               for c in (got.get("status") or {}).get("conditions") or []):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the test CRD did not become Established in 10 s")


async def test_apply_twice_changes_nothing_and_status_patch_checks_the_resource_version(client, namespace):
    await widget_kind(client)
    manifest = {"apiVersion": WIDGET.api_version, "kind": WIDGET.kind,
                "metadata": {"name": "w", "namespace": namespace}, "spec": {"size": 1}}
    first = await client.apply(manifest, "async-test")
    again = await client.apply(manifest, "async-test")
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]  # a no-op apply
    stale = first["metadata"]["resourceVersion"]
    written = await client.patch_status(WIDGET, "w", namespace, {"phase": "one"}, resource_version=stale)
    assert written["status"] == {"phase": "one"} and written["spec"] == {"size": 1}
    with pytest.raises(KubeApiError) as conflict:  # the status changed since `stale` was read
        await client.patch_status(WIDGET, "w", namespace, {"phase": "two"}, resource_version=stale)
    assert conflict.value.conflict
    assert (await client.get(WIDGET, "w", namespace))["status"] == {"phase": "one"}
    # Without a resourceVersion the merge patch applies to whatever is stored, and None removes a key.
    written = await client.patch_status(WIDGET, "w", namespace, {"phase": None, "ready": True})
    assert written["status"] == {"ready": True}


async def test_a_request_without_an_answer_in_time_fails_with_status_0_and_is_counted(client, namespace):
    before = requests_counted("GET", "configmaps", "0")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(KubeApiError) as late:
        # A watch answers only when an event comes or after timeoutSeconds: nothing happens in this namespace.
        await client.request("GET", CONFIG_MAP.path(namespace), query={"watch": "true", "timeoutSeconds": 30},
                             timeout=0.5)
    assert late.value.status == 0 and "no answer within 0.5 s" in late.value.message
    assert loop.time() - started < 5
    assert requests_counted("GET", "configmaps", "0") == before + 1


async def test_an_unreachable_server_is_status_0():
    kube = KubeClient.for_host("http://127.0.0.1:9", timeout=2)
    try:
        with pytest.raises(KubeApiError) as unreachable:
            await kube.list(CONFIG_MAP, "default")
        assert unreachable.value.status == 0 and unreachable.value.reason == "Unreachable"
    finally:
        await kube.close()


async def test_a_fenced_client_sends_no_write(client, namespace):
    client.write_guard = lambda: False
    before = requests_counted("POST", "configmaps", "201")
    with pytest.raises(NotLeaderError):
        await client.create(config_map("fenced", namespace))
    assert await client.get_or_none(CONFIG_MAP, "fenced", namespace) is None  # reads still go through; unsent
    assert requests_counted("POST", "configmaps", "201") == before


async def test_fifty_concurrent_gets_run_without_a_thread_each(client, namespace):
    await client.create(config_map("shared", namespace, value="1"))
    await client.get(CONFIG_MAP, "shared", namespace)  # the pool and credentials are set up by now
    threads_before = threading.active_count()
    most = threads_before
    done = asyncio.Event()

    async def watch_threads() -> None:
        nonlocal most
        while not done.is_set():
            most = max(most, threading.active_count())
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch_threads())
    results = await asyncio.gather(*(client.get(CONFIG_MAP, "shared", namespace) for _ in range(50)))
    done.set()
    await watcher
    assert [r["data"]["value"] for r in results] == ["1"] * 50
    assert most == threads_before, f"threads went from {threads_before} to {most} during the GETs"


async def test_requests_of_a_fresh_client_all_wait_for_its_credentials(kubeconfig, namespace):
    kube = KubeClient.from_environment(kubeconfig)  # the kubeconfig is applied at the first request
    try:
        answers = await asyncio.gather(*(kube.request("GET", f"/api/v1/namespaces/{namespace}") for _ in range(20)))
        assert {a["metadata"]["name"] for a in answers} == {namespace}
    finally:
        await kube.close()


async def test_the_pool_bounds_the_connections(kubeconfig, namespace):
    kube = KubeClient.from_environment(kubeconfig, pool_size=1)
    kube.register(CONFIG_MAP)
    try:
        await kube.list(CONFIG_MAP, namespace)
        # The only connection is held by a watch that ends after 2 s: a GET must wait for it.
        watch = asyncio.create_task(kube.request("GET", CONFIG_MAP.path(namespace),
                                                 query={"watch": "true", "timeoutSeconds": 2}, timeout=10))
        await asyncio.sleep(0.3)
        with pytest.raises(KubeApiError) as waited:
            await kube.request("GET", CONFIG_MAP.path(namespace), timeout=0.5)
        assert waited.value.status == 0
        await watch
        assert await kube.request("GET", CONFIG_MAP.path(namespace), timeout=5) is not None  # free again
    finally:
        await kube.close()


async def test_closing_leaves_no_unclosed_session(kubeconfig, namespace):
    def unclosed(caught: list[warnings.WarningMessage]) -> list[str]:
        return [str(w.message) for w in caught if "Unclosed" in str(w.message)]

    loop = asyncio.get_running_loop()
    reported: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context.get("message", "")))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            closed = KubeClient.from_environment(kubeconfig)
            await closed.request("GET", f"/api/v1/namespaces/{namespace}")
            await closed.close()
            del closed
            gc.collect()
            assert unclosed(caught) == [] and not [m for m in reported if "Unclosed" in m]

            # The check can fail: a client dropped without close() is reported.
            leaked = KubeClient.from_environment(kubeconfig)
            await leaked.request("GET", f"/api/v1/namespaces/{namespace}")
            del leaked
            gc.collect()
            assert unclosed(caught) or [m for m in reported if "Unclosed" in m]
    finally:
        loop.set_exception_handler(previous)


def test_a_client_serves_one_loop_after_another_and_closes_from_sync_code(kubeconfig, namespace, caplog):
    kube = KubeClient.from_environment(kubeconfig)

    async def use_and_drop() -> None:
        await kube.request("GET", f"/api/v1/namespaces/{namespace}")
        kube.close()  # not awaited, and the loop ends right after (what a thread's asyncio.run does)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):  # asyncio.run: a new loop each time, the previous one closed
            assert asyncio.run(kube.request("GET", f"/api/v1/namespaces/{namespace}"))["metadata"]["name"] == namespace
        kube.close()  # no loop running: closes at once, nothing to await
        asyncio.run(use_and_drop())
        gc.collect()
    complaints = [str(w.message) for w in caught if "Unclosed" in str(w.message) or "never awaited" in str(w.message)]
    complaints += [r.getMessage() for r in caplog.records if "Unclosed" in r.getMessage()]
    assert complaints == []


async def test_retry_on_conflict_counts_every_increment_of_two_racing_writers(kubeconfig, namespace):
    a, b = KubeClient.from_environment(kubeconfig), KubeClient.from_environment(kubeconfig)
    for kube in (a, b):
        kube.register(CONFIG_MAP)
    conflicts = 0
    try:
        await a.create(config_map("counter", namespace, n="0"))

        async def increment(kube: KubeClient) -> None:
            async def write(current: dict) -> dict:
                nonlocal conflicts
                n = int(current["data"]["n"]) + 1
                patch = {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                         "data": {"n": str(n)}}
                try:
                    return await kube.patch(CONFIG_MAP, "counter", namespace, patch)
                except KubeApiError as exc:
                    conflicts += exc.conflict
                    raise

            first = await kube.get(CONFIG_MAP, "counter", namespace)
            await retry_on_conflict(write, first, lambda: kube.get_or_none(CONFIG_MAP, "counter", namespace),
                                    attempts=50, what="counter")

        await asyncio.gather(*(increment(kube) for _ in range(10) for kube in (a, b)))
        final = await a.get(CONFIG_MAP, "counter", namespace)
        assert final["data"]["n"] == "20"  # no increment lost
        assert conflicts > 0  # and the writers did race (else this proved nothing about the retries)

        async def always_conflicts(_: dict) -> None:
            raise KubeApiError(409, "Conflict", "again")
        rereads = 0

        async def reread() -> dict:
            nonlocal rereads
            rereads += 1
            return final
        with pytest.raises(KubeApiError):
            await retry_on_conflict(always_conflicts, final, reread, attempts=3)
        assert rereads == 2
        gone = await retry_on_conflict(always_conflicts, final, lambda: asyncio.sleep(0, None), gone="gone")
        assert gone == "gone"
    finally:
        await a.close()
        await b.close()
