"""API error mapping: which failures the reconcile queue retries, how soon, and which it gives up on."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tei_operator.controller import errors
from tei_operator.controller.queue import ReconcileQueue
from tei_operator.kube_errors import KubeApiError
from tei_operator.kube_errors import error_from_response as _error_from_response


def status_body(code: int, reason: str, message: str) -> bytes:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
                       "message": message}).encode()


@pytest.mark.parametrize("code,reason,delay", [
    (409, "Conflict", errors.CONFLICT_DELAY),
    (500, "InternalError", errors.SERVER_ERROR_DELAY),
    (503, "ServiceUnavailable", errors.SERVER_ERROR_DELAY),
    (504, "Timeout", errors.SERVER_ERROR_DELAY),
    (0, "Unreachable", errors.SERVER_ERROR_DELAY),
    (404, "NotFound", errors.NOT_FOUND_DELAY),
    (403, "Forbidden", errors.FORBIDDEN_DELAY),
])
def test_temporary_errors_are_retried_with_a_delay(code, reason, delay):
    kind = errors.classify(KubeApiError(code, reason, "boom"))
    assert not kind.permanent
    assert kind.delay == delay
    assert "boom" in kind.message


def test_throttling_honours_retry_after():
    err = _error_from_response(429, "Too Many Requests", status_body(429, "TooManyRequests", "slow down"),
                               {"Retry-After": "7"}, "PATCH /x")
    assert err.retry_after == 7.0
    mapped = errors.classify(err)
    assert not mapped.permanent and mapped.delay == 7.0
    no_hint = errors.classify(KubeApiError(429, "TooManyRequests", "slow down"))
    assert not no_hint.permanent and no_hint.delay == errors.THROTTLED_DELAY


@pytest.mark.parametrize("code,reason", [(400, "BadRequest"), (422, "Invalid")])
def test_invalid_requests_are_permanent(code, reason):
    message = 'Deployment.apps "x" is invalid: spec.template.spec.containers[0].image: Required value'
    kind = errors.classify(_error_from_response(code, reason, status_body(code, reason, message), {}, "PATCH"))
    assert kind.permanent
    assert "spec.template.spec.containers[0].image: Required value" in kind.message


def test_status_object_reason_and_message_are_decoded():
    err = _error_from_response(409, "Conflict", status_body(409, "Conflict", "Apply failed with 1 conflict"), {},
                               "PATCH /apis/apps/v1/namespaces/a/deployments/b")
    assert (err.status, err.reason, err.message) == (409, "Conflict", "Apply failed with 1 conflict")
    assert err.conflict and not err.not_found
    assert "PATCH /apis/apps/v1/namespaces/a/deployments/b" in str(err)


def test_non_status_body_is_kept_as_message():
    err = _error_from_response(502, "Bad Gateway", b"<html>proxy error</html>", None, "GET /")
    assert err.reason == "Bad Gateway" and "proxy error" in err.message


def test_unknown_exceptions_are_temporary():
    assert not errors.classify(RuntimeError("x")).permanent
    assert errors.classify(ConnectionResetError()).delay == errors.SERVER_ERROR_DELAY


# The reconcile queue retries by this classification.


class Recorder:
    def __init__(self, failures=()):
        self.calls: list[tuple[str, bool, float]] = []
        self.failures = list(failures)
        self.release = asyncio.Event()
        self.block = False

    async def __call__(self, key, apply):
        self.calls.append((key, apply, time.monotonic()))
        if self.block:
            await self.release.wait()
        if self.failures:
            raise self.failures.pop(0)


async def settle(queue, timeout=5.0):
    deadline = time.monotonic() + timeout
    while queue.busy and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert not queue.busy


async def test_queue_folds_a_burst_into_one_reconcile_and_full_wins():
    worker = Recorder()
    queue = ReconcileQueue(worker, debounce=0.05)
    for _ in range(10):
        queue.request("a", apply=False)
    queue.request("a", apply=True)
    queue.request("b", apply=False)
    await settle(queue)
    assert sorted((k, a) for k, a, _ in worker.calls) == [("a", True), ("b", False)]


async def test_queue_runs_again_for_a_request_that_arrives_while_running():
    worker = Recorder()
    worker.block = True
    queue = ReconcileQueue(worker, debounce=0.01)
    queue.request("a")
    while not worker.calls:
        await asyncio.sleep(0.01)
    queue.request("a", apply=False)  # arrives mid-reconcile: must not be lost
    worker.block = False
    worker.release.set()
    await settle(queue)
    assert [(k, a) for k, a, _ in worker.calls] == [("a", True), ("a", False)]


async def test_queue_retries_temporary_failures_after_the_classified_delay():
    worker = Recorder([KubeApiError(409, "Conflict", "the object has been modified")])
    queue = ReconcileQueue(worker, debounce=0.01)
    queue.request("a")
    await settle(queue, timeout=10)
    assert len(worker.calls) == 2
    assert worker.calls[1][2] - worker.calls[0][2] >= errors.CONFLICT_DELAY * 0.9


async def test_queue_does_not_retry_permanent_failures():
    worker = Recorder([KubeApiError(422, "Invalid", "spec.template: bad")])
    queue = ReconcileQueue(worker, debounce=0.01)
    queue.request("a")
    await settle(queue)  # the queue is idle: its task ended, so no retry is scheduled (a retry keeps it busy)
    assert len(worker.calls) == 1


async def test_queue_close_cancels_pending_work():
    worker = Recorder()
    queue = ReconcileQueue(worker, debounce=10)
    queue.request("a")
    await queue.close()
    queue.request("b")  # ignored after close
    assert not queue.busy and worker.calls == []


def test_namespace_terminating_is_recognised_from_the_status_causes():
    body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403, "reason": "Forbidden",
                       "message": 'deployments.apps "x" is forbidden: unable to create new content in namespace t-1 '
                                  "because it is being terminated",
                       "details": {"name": "x", "kind": "deployments", "causes": [
                           {"reason": "NamespaceTerminating", "message": "namespace t-1 is being terminated",
                            "field": "metadata.namespace"}]}}).encode()
    err = _error_from_response(403, "Forbidden", body, {}, "PATCH")
    assert err.causes == ("NamespaceTerminating",) and err.namespace_terminating
    assert not KubeApiError(403, "Forbidden", "RBAC says no").namespace_terminating
