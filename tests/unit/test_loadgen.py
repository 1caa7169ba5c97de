"""The load generator: its pure parts, and real runs against emulators on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import math
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tei_operator.emulator.config import EmulatorConfig
from tei_operator.emulator.loadgen import WindowStats, parse_rate_schedule, percentile, run_load
from tei_operator.emulator.server import EmulatorServer

pytestmark = pytest.mark.timeout(30)


@asynccontextmanager
async def emulator(**overrides: Any) -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(EmulatorConfig(**{"port": 0, "dimensions": 16, **overrides})) as server:
        yield server


async def counters(server: EmulatorServer) -> dict[tuple[str, str], float]:
    """te_request_* counter samples from the emulator's /metrics, keyed by (name, label value)."""
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}/metrics") as response:
        text = await response.text()
    return {
        (s.name, next(iter(s.labels.values()), "")): s.value
        for family in text_string_to_metric_families(text)
        if family.type == "counter"
        for s in family.samples
    }


def test_rate_schedule_steps() -> None:
    rate = parse_rate_schedule("50,200@10,20@25")
    assert [rate(t) for t in (0, 9.99, 10, 24.9, 25, 1000)] == [50, 50, 200, 200, 20, 20]
    assert parse_rate_schedule("7.5")(123) == 7.5
    late = parse_rate_schedule("100@5")
    assert late(1) == 0 and late(5) == 100


@pytest.mark.parametrize("text", ["fast", "50,200", "50,200@-1", "50,200@10,30@10", "-5"])
def test_rate_schedule_errors_name_the_flag(text: str) -> None:
    with pytest.raises(ValueError, match="--rate"):
        parse_rate_schedule(text)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50 and percentile(values, 0.99) == 99 and percentile(values, 1.0) == 100
    assert percentile([3.0], 0.99) == 3.0 and math.isnan(percentile([], 0.5))


async def test_counts_ok_and_429_as_the_emulator_does() -> None:
    # 4 permits and 2 inputs of ~130 tokens per request at 4000 tokens/s: ~15 requests/s fit, 60/s are sent.
    async with emulator(max_concurrent_requests=4, tokens_per_second=4000, batch_overhead_seconds=0.0) as server:
        windows: list[WindowStats] = []
        summary = await run_load(server.url, 60, 1.5, inputs_per_request=2, words_per_input=100, seed=7,
                                 on_second=windows.append)
        seen = await counters(server)
    assert summary.sent > 50 and summary.ok > 5 and summary.overloaded > 5
    assert summary.errors == 0 and summary.skipped == 0
    assert summary.ok + summary.overloaded == summary.sent
    assert seen[("te_request_count_total", "batch")] == summary.sent
    assert seen[("te_request_success_total", "batch")] == summary.ok
    assert seen[("te_request_failure_total", "overloaded")] == summary.overloaded
    assert summary.statuses == {"200": summary.ok, "429": summary.overloaded}
    assert len(summary.latencies) == summary.ok and 0 < summary.p50 <= summary.p99
    assert sum(w.sent for w in windows) == summary.sent and sum(w.ok for w in windows) == summary.ok


async def test_rate_function_and_url_callable_are_followed() -> None:
    async with emulator() as first, emulator() as second:
        calls: list[float] = []

        def urls() -> list[str]:
            calls.append(1)
            return [first.url, second.url]

        windows: list[WindowStats] = []
        summary = await run_load(urls, lambda t: 0.0 if t < 1.0 else 150.0, 2.0, inputs_per_request=1,
                                 words_per_input=5, seed=3, on_second=windows.append)
    assert windows[0].sent == 0 and 90 <= windows[1].sent <= 220  # Poisson(150): far outside is a bug
    assert summary.sent == len(calls) == summary.ok
    assert abs(summary.per_url[first.url] - summary.per_url[second.url]) <= 1  # round robin


async def test_reranker_endpoint() -> None:
    async with emulator(kind="reranker") as server:
        summary = await run_load([server.url], 30, 0.5, endpoint="rerank", inputs_per_request=4, seed=1)
        seen = await counters(server)
    assert summary.ok == summary.sent > 0 and seen[("te_predict_count_total", "")] == 4 * summary.sent


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_bounded_in_flight_unreachable_targets_and_no_targets() -> None:
    async with emulator(tokens_per_second=500, batch_overhead_seconds=0.0) as server:  # ~0.26 s per request
        summary = await run_load(server.url, 80, 0.6, inputs_per_request=1, words_per_input=100, max_in_flight=2,
                                 seed=5)
    assert summary.skipped > 10 and summary.sent + summary.skipped > 30
    assert summary.ok == summary.sent and summary.sent <= 8  # two at a time, ~0.26 s each, for ~0.6 s

    dead = f"http://127.0.0.1:{_closed_port()}"
    summary = await run_load(dead, 40, 0.3, seed=2, timeout=2)
    assert summary.sent > 0 and summary.errors == summary.sent and summary.ok == 0
    assert set(summary.statuses) == {"ClientConnectorError"}

    summary = await run_load(lambda: [], 40, 0.3, seed=2)
    assert summary.sent == 0 and summary.skipped > 0


async def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="duration"):
        await run_load("http://127.0.0.1:1", 1, 0)
    with pytest.raises(ValueError, match="inputs_per_request"):
        await run_load("http://127.0.0.1:1", 1, 1, inputs_per_request=0)
