"""The one way tests wait: poll a predicate until it returns something truthy, or fail naming what was awaited.

A test that checks "nothing happened" must first wait here for a positive sign that the operator looked (an
Event, a status timestamp or observedGeneration, a control edit it reverted), never sleep and hope.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

import pytest


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.5, what: str = "condition"):
    """Poll until predicate() returns something truthy; return it. Fails the test with `what` after `timeout`
    (with the last exception the predicate raised, if any)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - remembered for the failure message
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            pytest.fail(f"Timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


async def async_wait_for(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.5,
                         what: str = "condition"):
    """wait_for for async tests: the predicate may be a plain function or return an awaitable."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - remembered for the failure message
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            pytest.fail(f"Timed out after {timeout:.0f}s waiting for {what}{detail}")
        await asyncio.sleep(interval)
