"""The TEI emulator against real HTTP on 127.0.0.1 (free ports), no mocks.

TEI facts relied on (see /work/shared/TEI.md and TEI's router source): counters have no `_total` suffix;
series appear only after their first observation; te_batch_next_size/te_batch_next_tokens record every formed
batch including the empty one ending a wake-up; duration histograms have 35 buckets from 1.5e-5 s x1.5;
errors are {"error", "error_type"} with 422 Validation, 400 Empty, 429 Overloaded, 424 Backend; an over-limit
body gets a plain-text 413; the port is bound only after the model has loaded.
"""

from __future__ import annotations

import asyncio
import base64
import math
import socket
import struct
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tei_operator.emulator import fake_model
from tei_operator.emulator.config import EmulatorConfig, EmulatorConfigError, parse_config
from tei_operator.emulator.engine import QueuedInput, take_batch
from tei_operator.emulator.metrics import DURATION_BUCKETS, TeiMetrics, new_registry, render_exposition
from tei_operator.emulator.server import EmulatorServer

pytestmark = pytest.mark.timeout(30)

WORDS_100 = " ".join(f"word{i}" for i in range(100))  # 130 tokens by the emulator's count


@asynccontextmanager
async def emulator(**overrides: Any) -> AsyncIterator[EmulatorServer]:
    config = EmulatorConfig(**{"port": 0, "dimensions": 64, **overrides})
    async with EmulatorServer(config) as server:
        yield server


@asynccontextmanager
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def post(session: aiohttp.ClientSession, url: str, body: Any, **kwargs: Any) -> tuple[int, Any]:
    async with session.post(url, json=body, **kwargs) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


async def scrape(session: aiohttp.ClientSession, server: EmulatorServer) -> str:
    async with session.get(f"{server.url}/metrics") as response:
        assert response.status == 200
        return await response.text()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, keyed by (sample name, labels) as the Prometheus parser reads them."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- API shape --------------------------------------------------------------------------------------------------

async def test_embed_returns_one_unit_vector_per_input_deterministically() -> None:
    async with emulator() as server, client() as session:
        status, vectors = await post(session, f"{server.url}/embed", {"inputs": ["alpha beta", "gamma", "alpha beta"]})
        assert status == 200
        assert len(vectors) == 3 and all(len(v) == 64 for v in vectors)
        assert all(abs(math.sqrt(sum(x * x for x in v)) - 1.0) < 1e-4 for v in vectors)
        assert vectors[0] == vectors[2] and vectors[0] != vectors[1]
        status, again = await post(session, f"{server.url}/embed", {"inputs": "gamma"})
        assert status == 200 and again == [vectors[1]]
        status, raw = await post(session, f"{server.url}/embed", {"inputs": "gamma", "normalize": False})
        assert status == 200 and math.sqrt(sum(x * x for x in raw[0])) > 2.0
        status, short = await post(session, f"{server.url}/embed", {"inputs": "gamma", "dimensions": 8})
        assert status == 200 and len(short[0]) == 8


async def test_openai_embeddings_shape_and_usage() -> None:
    async with emulator(served_model_name="bge") as server, client() as session:
        texts = ["one two three", "four five six seven"]
        status, body = await post(session, f"{server.url}/v1/embeddings", {"input": texts, "model": "x"})
        assert status == 200
        assert body["object"] == "list" and body["model"] == "bge"
        assert [d["index"] for d in body["data"]] == [0, 1]
        assert all(d["object"] == "embedding" and len(d["embedding"]) == 64 for d in body["data"])
        tokens = sum(fake_model.count_tokens(t) for t in texts)
        assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
        status, b64 = await post(session, f"{server.url}/v1/embeddings", {"input": "one two three",
                                                                          "encoding_format": "base64"})
        decoded = struct.unpack("<64f", base64.b64decode(b64["data"][0]["embedding"]))
        assert max(abs(a - b) for a, b in zip(decoded, body["data"][0]["embedding"])) < 1e-6


async def test_rerank_is_sorted_by_score_descending() -> None:
    async with emulator(kind="reranker", model_id="BAAI/bge-reranker-v2-m3") as server, client() as session:
        texts = ["nothing in common here", "gpu batch queue", "the gpu is busy", "queue of gpu batch requests"]
        status, ranks = await post(session, f"{server.url}/rerank",
                                   {"query": "gpu batch queue", "texts": texts, "return_text": True})
        assert status == 200
        scores = [r["score"] for r in ranks]
        assert scores == sorted(scores, reverse=True)
        assert sorted(r["index"] for r in ranks) == [0, 1, 2, 3]
        assert all(r["text"] == texts[r["index"]] for r in ranks)
        assert ranks[-1]["index"] == 0 and all(0 < s < 1 for s in scores)
        status, raw = await post(session, f"{server.url}/rerank", {"query": "gpu", "texts": texts, "raw_scores": True})
        assert status == 200 and min(r["score"] for r in raw) < 0  # logits, not sigmoid
        status, error = await post(session, f"{server.url}/embed", {"inputs": "x"})
        assert status == 424 and error["error_type"] == "Backend"


async def test_info_has_tei_shape() -> None:
    async with emulator(max_batch_tokens=4096) as server, client() as session:
        async with session.get(f"{server.url}/info") as response:
            info = await response.json()
        assert info["model_id"] == "BAAI/bge-m3"
        assert info["model_type"] == {"embedding": {"pooling": "cls"}}
        assert info["max_batch_tokens"] == 4096 and info["max_input_length"] == 512
        assert info["version"] == "1.9.3-emulator" and info["docker_label"] == "emulator"


# ---- validation -------------------------------------------------------------------------------------------------

async def test_validation_errors_match_tei() -> None:
    async with emulator(max_client_batch_size=4, payload_limit=10_000) as server, client() as session:
        url = f"{server.url}/embed"
        status, error = await post(session, url, {"inputs": ["a"] * 5})
        assert (status, error["error_type"]) == (422, "Validation") and "batch size 5" in error["error"]
        status, error = await post(session, url, {"inputs": []})
        assert (status, error["error_type"]) == (400, "Empty")
        long_text = " ".join(["w"] * 600)  # 780 tokens > 512
        status, error = await post(session, url, {"inputs": long_text, "truncate": False})
        assert (status, error["error_type"]) == (422, "Validation") and "512" in error["error"]
        status, _ = await post(session, url, {"inputs": long_text})  # auto-truncate is on by default
        assert status == 200
        status, text = await post(session, url, {"inputs": "x" * 20_000})
        assert status == 413 and isinstance(text, str)
        status, text = await post(session, url, {"input": "wrong field"})
        assert status == 422 and "inputs" in text
        status, text = await post(session, url, {"inputs": "a", "truncation_direction": "Up"})
        assert status == 422 and "truncation_direction" in text and "Left or Right" in text
        status, text = await post(session, url, {"inputs": "a", "dimensions": True})
        assert status == 422 and "dimensions" in text
        async with session.post(url, data=b"{not json", headers={"Content-Type": "application/json"}) as response:
            assert response.status == 400
        metrics = await scrape(session, server)
        assert sample(metrics, "te_request_failure_total", err="batch_size") == 1
        assert sample(metrics, "te_request_failure_total", err="validation") == 1
        assert sample(metrics, "te_request_failure_total", err="tokenization") == 1
        # the truncated input was recorded at the limit: nothing above the 512 bucket
        assert sample(metrics, "te_request_input_length_bucket", le="512.0") == sample(
            metrics, "te_request_input_length_count")


async def test_api_key_required_except_on_health_and_metrics() -> None:
    async with emulator(api_key="s3cret") as server, client() as session:
        status, _ = await post(session, f"{server.url}/embed", {"inputs": "a"})
        assert status == 401
        status, _ = await post(session, f"{server.url}/embed", {"inputs": "a"}, headers={"Authorization": "Bearer no"})
        assert status == 401
        status, _ = await post(session, f"{server.url}/embed", {"inputs": "a"},
                               headers={"Authorization": "Bearer s3cret"})
        assert status == 200
        for path in ("/health", "/metrics"):
            async with session.get(f"{server.url}{path}") as response:
                assert response.status == 200
        async with session.get(f"{server.url}/info") as response:
            assert response.status == 401


# ---- metrics ----------------------------------------------------------------------------------------------------

async def test_metrics_use_tei_names_types_and_buckets() -> None:
    async with emulator() as server, client() as session:
        assert await scrape(session, server) == ""  # no series before the first observation
        for inputs in (["a b c", "d e"], ["f"]):
            assert (await post(session, f"{server.url}/embed", {"inputs": inputs}))[0] == 200
        assert (await post(session, f"{server.url}/embed", {"inputs": "g"}))[0] == 200
        text = await scrape(session, server)

        assert "# TYPE te_request_count counter" in text
        assert 'te_request_count{method="batch"} 2' in text
        assert 'te_request_count{method="single"} 1' in text
        assert "_total" not in text and "_created" not in text
        assert "te_request_failure" not in text  # no failure yet: no series

        types = {f.name: f.type for f in text_string_to_metric_families(text)}
        assert types["te_request_count"] == "counter" and types["te_request_success"] == "counter"
        assert types["te_queue_size"] == "gauge"
        assert types["te_batch_next_tokens"] == types["te_batch_next_size"] == "histogram"
        assert types["te_request_duration"] == types["te_embed_queue_duration"] == "histogram"
        assert types["te_embed_count"] == "counter"

        # Three isolated requests: each formed one batch and then one empty batch.
        assert sample(text, "te_batch_next_size_count") == 6
        assert sample(text, "te_batch_next_size_sum") == 4  # inputs
        tokens = sum(fake_model.count_tokens(t) for t in ("a b c", "d e", "f", "g"))
        assert sample(text, "te_batch_next_tokens_sum") == tokens
        assert sample(text, "te_batch_next_tokens_bucket", le="1.0") == 3  # the three empty batches (0 <= 1)
        assert sample(text, "te_queue_size") == 0
        assert sample(text, "te_embed_count_total") == 4 and sample(text, "te_embed_success_total") == 4

        duration = next(f for f in text_string_to_metric_families(text) if f.name == "te_request_duration")
        bounds = [float(s.labels["le"]) for s in duration.samples if s.name.endswith("_bucket")]
        assert len(bounds) == 36 and bounds[-1] == math.inf
        assert bounds[0] == pytest.approx(1.5e-5) and bounds[1] == pytest.approx(2.25e-5)


def test_render_exposition_keeps_counter_names_and_inclusive_buckets() -> None:
    metrics = TeiMetrics(max_input_length=512)
    metrics.inc("te_request_failure", {"err": "overloaded"}, 2)
    metrics.observe("te_batch_next_size", 0)
    metrics.observe("te_batch_next_size", 2)
    text = render_exposition(new_registry(metrics))
    assert "# TYPE te_request_failure counter\nte_request_failure{err=\"overloaded\"} 2\n" in text
    assert 'te_batch_next_size_bucket{le="1.0"} 1' in text
    assert 'te_batch_next_size_bucket{le="2.0"} 2' in text  # le is inclusive
    assert len(DURATION_BUCKETS) == 35
    with pytest.raises(TypeError):
        metrics.inc("te_queue_size")


# ---- GPU model --------------------------------------------------------------------------------------------------

def test_take_batch_is_fifo_within_token_and_request_limits() -> None:
    loop = asyncio.new_event_loop()
    try:
        def entry(tokens: int) -> QueuedInput:
            return QueuedInput(tokens, 0.0, loop.create_future())

        queue = deque(entry(t) for t in (300, 300, 300, 10))
        batch, dropped = take_batch(queue, max_batch_tokens=700, max_batch_requests=None)
        assert [e.tokens for e in batch.inputs] == [300, 300] and batch.tokens == 600 and dropped == 0
        assert [e.tokens for e in queue] == [300, 10]  # the 10-token input does not jump the queue

        queue = deque(entry(1) for _ in range(5))
        batch, _ = take_batch(queue, max_batch_tokens=1000, max_batch_requests=2)
        assert len(batch.inputs) == 2 and len(queue) == 3

        abandoned = entry(5)
        abandoned.future.cancel()
        batch, dropped = take_batch(deque([abandoned, entry(7)]), 1000, None)
        assert dropped == 1 and [e.tokens for e in batch.inputs] == [7]
        batch, _ = take_batch(deque(), 1000, None)
        assert batch.inputs == [] and batch.tokens == 0
    finally:
        loop.close()


async def timed_embed(session: aiohttp.ClientSession, server: EmulatorServer, inputs: list[str]) -> float:
    started = time.perf_counter()
    status, _ = await post(session, f"{server.url}/embed", {"inputs": inputs})
    assert status == 200
    return time.perf_counter() - started


async def test_service_time_follows_tokens_per_second() -> None:
    # 8 inputs x 130 tokens = 1040 tokens: 0.208 s at 5000 tokens/s; twice the tokens, twice the time.
    async with emulator(tokens_per_second=5000, batch_overhead_seconds=0.0) as server, client() as session:
        await timed_embed(session, server, ["warm"])  # first request pays for connection set-up
        single = await timed_embed(session, server, [WORDS_100] * 8)
        double = await timed_embed(session, server, [WORDS_100] * 16)
        assert 0.18 <= single <= 0.50, single
        assert 1.6 <= double / single <= 2.6, (single, double)


async def test_inputs_are_batched_up_to_the_limits() -> None:
    # The per-batch overhead dominates (tokens are nearly free): 16 inputs take one batch, so about one overhead;
    # with at most 4 inputs per batch they take 4. Were inputs not batched, both would take 16 overheads.
    fast = {"tokens_per_second": 1e9, "batch_overhead_seconds": 0.05}
    async with emulator(**fast) as server, client() as session:
        await timed_embed(session, server, ["warm"])
        one_batch = await timed_embed(session, server, ["a b c"] * 16)
        text = await scrape(session, server)
        assert sample(text, "te_batch_next_size_bucket", le="16.0") - sample(
            text, "te_batch_next_size_bucket", le="8.0") == 1
    async with emulator(max_batch_requests=4, **fast) as server, client() as session:
        await timed_embed(session, server, ["warm"])
        four_batches = await timed_embed(session, server, ["a b c"] * 16)
    assert 0.04 <= one_batch <= 0.15, one_batch
    assert 0.19 <= four_batches <= 0.60, four_batches  # 16 batches: 0.8 s


async def test_overload_answers_429_and_counts_it() -> None:
    # 4 permits, 2 inputs per request, each batch ~0.3 s: at most 2 requests fit at once.
    async with emulator(max_concurrent_requests=4, tokens_per_second=1000, batch_overhead_seconds=0.0) as server, \
            client() as session:
        body = {"inputs": [WORDS_100, WORDS_100]}
        results = await asyncio.gather(*(post(session, f"{server.url}/embed", body) for _ in range(6)))
        statuses = sorted(status for status, _ in results)
        rejected = [answer for status, answer in results if status == 429]
        assert statuses.count(200) >= 2 and len(rejected) >= 1 and statuses.count(200) + len(rejected) == 6
        assert all(r == {"error": "Model is overloaded", "error_type": "Overloaded"} for r in rejected)
        text = await scrape(session, server)
        assert sample(text, "te_request_failure_total", err="overloaded") == len(rejected)
        assert server.engine.free_permits == 4  # every permit came back


async def test_abandoned_requests_are_dropped_from_the_queue() -> None:
    async with emulator(tokens_per_second=2000, batch_overhead_seconds=0.0) as server, client() as session:
        body = {"inputs": [WORDS_100] * 4}  # 520 tokens: 0.26 s per request
        running = asyncio.create_task(post(session, f"{server.url}/embed", body))  # runs first
        await asyncio.sleep(0.05)
        parked = asyncio.create_task(post(session, f"{server.url}/embed", body))  # formed as the next batch
        await asyncio.sleep(0.05)
        queued = asyncio.create_task(post(session, f"{server.url}/embed", {"inputs": ["x", "y", "z"]},
                                          timeout=aiohttp.ClientTimeout(total=0.1)))
        await asyncio.sleep(0.03)
        assert sample(await scrape(session, server), "te_queue_size") == 3  # +1 per queued input
        with pytest.raises(asyncio.TimeoutError):  # it waits in the queue and its client gives up
            await queued
        assert (await running)[0] == 200 and (await parked)[0] == 200
        text = await scrape(session, server)
        assert sample(text, "te_request_failure_total", err="dropped") == 3


# ---- lifecycle --------------------------------------------------------------------------------------------------

async def test_health_refuses_connections_while_loading_then_answers() -> None:
    port = free_port()
    server = EmulatorServer(EmulatorConfig(port=port, load_seconds=1.0, dimensions=8))
    starting = asyncio.create_task(server.start())
    try:
        async with client() as session:
            await asyncio.sleep(0.2)
            with pytest.raises(aiohttp.ClientConnectorError):
                await session.get(f"http://127.0.0.1:{port}/health")
            await asyncio.wait_for(starting, timeout=5)
            async with session.get(f"http://127.0.0.1:{port}/health") as response:
                assert response.status == 200
    finally:
        if starting.done() and not starting.exception():
            await server.stop()
        else:
            starting.cancel()


async def test_stop_finishes_requests_in_flight_and_stops_listening() -> None:
    server = EmulatorServer(EmulatorConfig(port=0, dimensions=8, tokens_per_second=2000, batch_overhead_seconds=0))
    await server.start()
    url = server.url
    async with client() as session:
        in_flight = asyncio.create_task(post(session, f"{url}/embed", {"inputs": [WORDS_100] * 4}))  # ~0.26 s
        await asyncio.sleep(0.05)
        await server.stop()
        status, vectors = await in_flight
        assert status == 200 and len(vectors) == 4
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get(f"{url}/health")


# ---- configuration ----------------------------------------------------------------------------------------------

def test_config_reads_tei_env_vars_and_flags_win() -> None:
    env = {"MODEL_ID": "Qwen/Qwen3-Embedding-0.6B", "MAX_BATCH_TOKENS": "32768", "PORT": "80",
           "AUTO_TRUNCATE": "false", "HOSTNAME": "pod-abc-123", "EMULATOR_TOKENS_PER_SECOND": "55000"}
    config = parse_config(["--max-batch-tokens", "8192", "--dtype", "float32", "--hf-token", "x"], env)
    assert config.model_id == "Qwen/Qwen3-Embedding-0.6B" and config.port == 80
    assert config.max_batch_tokens == 8192 and config.auto_truncate is False
    assert config.tokens_per_second == 55000 and config.dtype == "float32"
    assert config.host == "127.0.0.1"  # HOSTNAME (the pod name in Kubernetes) is not an address to bind
    assert config.kind == "embedding"
    assert parse_config(["--model-id", "BAAI/bge-reranker-v2-m3"], {}).kind == "reranker"
    assert parse_config(["--batch-overhead-ms", "5"], {}).batch_overhead_seconds == pytest.approx(0.005)


def test_profile_sets_the_modelled_gpu_and_other_settings_still_win() -> None:
    config = parse_config(["--profile", "bge-reranker-v2-m3-a100", "--max-batch-tokens", "8192"],
                          {"MAX_CONCURRENT_REQUESTS": "64"})
    assert config.model_id == "BAAI/bge-reranker-v2-m3" and config.kind == "reranker"
    assert config.tokens_per_second == pytest.approx(1 / 3.95e-6) and config.batch_overhead_seconds == 0.015
    assert config.seconds_per_token_sq == 7.7e-10 and config.max_client_batch_size == 128
    assert config.max_batch_tokens == 8192 and config.max_concurrent_requests == 64  # a flag, a TEI env var
    assert parse_config([], {"EMULATOR_PROFILE": "cpu-small"}).max_batch_tokens == 2048


async def test_square_term_of_the_profile_slows_long_inputs() -> None:
    # 4 inputs of 507 tokens (390 words): 0.015 + 2028 x 2.5e-4 = 0.522 s without cpu-small's square term, plus
    # 4 x 507^2 x 5e-7 = 0.514 s with it.
    from tei_operator.emulator.batching import load_profile

    profile = load_profile("cpu-small")
    long_input = " ".join(f"w{i}" for i in range(390))
    for sq, low, high in ((profile.seconds_per_token_sq, 1.0, 1.35), (0.0, 0.5, 0.8)):
        config = EmulatorConfig.from_profile(profile, port=0, dimensions=8, seconds_per_token_sq=sq)
        async with EmulatorServer(config) as server, client() as session:
            await timed_embed(session, server, ["warm"])
            took = await timed_embed(session, server, [long_input] * 4)
            assert low <= took <= high, (sq, took)


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["--profile", "tpu-dream"], {}, "--profile.*no such profile"),
        ([], {"EMULATOR_PROFILE": "/nonexistent/p.yaml"}, "EMULATOR_PROFILE"),
        (["--seconds-per-token-sq", "-1"], {}, "--seconds-per-token-sq"),
        ([], {"MAX_BATCH_TOKENS": "lots"}, "MAX_BATCH_TOKENS"),
        (["--max-batch-tokens", "100"], {}, "--max-batch-tokens"),
        (["--kind", "classifier"], {}, "--kind"),
        (["--tokens-per-second", "0"], {}, "--tokens-per-second"),
        ([], {"AUTO_TRUNCATE": "maybe"}, "AUTO_TRUNCATE"),
    ],
)
def test_config_errors_name_the_setting(argv: list[str], env: dict[str, str], named: str) -> None:
    with pytest.raises(EmulatorConfigError, match=named):
        parse_config(argv, env)
