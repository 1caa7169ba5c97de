"""examples/retrieval_client.py against two real TEI emulators on 127.0.0.1 (an embedding one and a reranker one).

The expected rankings are computed here independently of the client, from the emulator's model stand-in
(`fake_model`: hash-seeded unit vectors, word-overlap rerank scores), so a client that skipped the vector search,
skipped the rerank or kept the cosine order would fail.

TEI facts relied on (/work/shared/TEI.md): /info reports model_type and max_client_batch_size; more inputs than
max_client_batch_size in one request is a 422; every input takes one of max_concurrent_requests permits and none
left is a 429 Overloaded; /rerank returns [{index, score}] sorted by score; API_KEY makes every route but /health
and /metrics require `Authorization: Bearer`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tei_operator.emulator import fake_model
from tei_operator.emulator.config import EmulatorConfig
from tei_operator.emulator.metrics import render_exposition
from tei_operator.emulator.server import EmulatorServer

pytestmark = pytest.mark.timeout(60)

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "retrieval_client.py"
DIMENSIONS = 64
QUERY = "gpu batch queue"
DOCUMENTS = [
    "the queue of gpu batch requests grows",       # all three query words
    "a batch waits in the queue",                  # two
    "the gpu is busy",                             # one
    "nothing in common here",
    "gpu batch queue depth per replica",           # all three
    "vector search returns nearest neighbours",
    "tokens per second on an a100",
    "the reranker reads query and document together",
    "scale up when the queue is long",             # one
    "batch fill against max batch tokens",         # one
]


def load_client() -> ModuleType:
    spec = importlib.util.spec_from_file_location("retrieval_client", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class body runs
    spec.loader.exec_module(module)
    return module


client = load_client()


@asynccontextmanager
async def services(embed: dict[str, Any] | None = None,
                   rerank: dict[str, Any] | None = None) -> AsyncIterator[tuple[EmulatorServer, EmulatorServer]]:
    """An embedding and a reranker emulator on free loopback ports."""
    embed_config = EmulatorConfig(**{"port": 0, "dimensions": DIMENSIONS, "max_client_batch_size": 4, **(embed or {})})
    rerank_config = EmulatorConfig(**{"port": 0, "kind": "reranker", "model_id": "BAAI/bge-reranker-v2-m3",
                                      "max_client_batch_size": 3, **(rerank or {})})
    async with EmulatorServer(embed_config) as embedder, EmulatorServer(rerank_config) as reranker:
        yield embedder, reranker


async def run(*argv: str) -> int:
    """The client's main() in a thread, so the emulators keep serving on this event loop."""
    return await asyncio.to_thread(client.main, list(argv))


def documents_file(tmp_path: Path, documents: list[str]) -> str:
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(documents[:3]) + "\n\n   \n" + "\n".join(documents[3:]) + "\n")  # blank lines skipped
    return str(path)


def expected_ranking(query: str, documents: list[str], top_k: int) -> tuple[list[int], list[int]]:
    """(cosine top-k, those k in the reranker's order) as document positions, from the emulator's model."""
    q = fake_model.output_vector(query, DIMENSIONS)
    cosine = [sum(a * b for a, b in zip(q, fake_model.output_vector(d, DIMENSIONS))) for d in documents]
    by_cosine = sorted(range(len(documents)), key=lambda i: -cosine[i])[:top_k]
    by_rerank = sorted(by_cosine, key=lambda i: -fake_model.sigmoid(fake_model.rerank_logit(query, documents[i])))
    return by_cosine, by_rerank


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the two stages against real servers -----------------------------------------------------------------------

async def test_embeds_in_batches_searches_then_applies_the_rerank_order(tmp_path, capsys) -> None:
    top_k, top_n = 6, 4
    by_cosine, by_rerank = expected_ranking(QUERY, DOCUMENTS, top_k)
    assert by_rerank != by_cosine, "test data must make the two orders differ, or the test proves nothing"
    async with services() as (embedder, reranker):
        code = await run("--embed-url", embedder.url, "--rerank-url", reranker.url + "/", "--query", QUERY,
                         "--documents", documents_file(tmp_path, DOCUMENTS), "--top-k", str(top_k),
                         "--top-n", str(top_n), "--json")
        out = capsys.readouterr()
        assert code == 0, out.err
        result = json.loads(out.out)
        # what the servers saw: 10 documents in batches of at most 4 (3 requests) plus the query; 6 candidates
        # reranked in calls of at most 3 texts (2 requests). /info is not counted by TEI.
        assert embedder.metrics.value("te_request_count", {"method": "batch"}) == math.ceil(10 / 4) + 1
        assert embedder.metrics.value("te_request_failure", {"err": "batch_size"}) is None
        assert reranker.metrics.value("te_request_count", {"method": "batch"}) == math.ceil(top_k / 3)
    assert result["embedding_model"] == "BAAI/bge-m3" and result["reranker_model"] == "BAAI/bge-reranker-v2-m3"
    assert result["documents"] == 10 and result["embed_requests"] == 4 and result["rerank_requests"] == 2
    assert result["retries"] == 0
    results = result["results"]
    assert [r["rank"] for r in results] == [1, 2, 3, 4]
    assert [r["document"] for r in results] == by_rerank[:top_n]
    assert all(r["text"] == DOCUMENTS[r["document"]] for r in results)
    assert all(r["vector_rank"] == by_cosine.index(r["document"]) + 1 for r in results)
    scores = [r["rerank_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    for r in results:
        assert r["rerank_score"] == pytest.approx(fake_model.sigmoid(fake_model.rerank_logit(QUERY, r["text"])),
                                                  abs=1e-6)
    # only vector-search candidates reach the reranker: nothing outside the cosine top-k is ranked
    assert {r["document"] for r in results} <= set(by_cosine)


async def test_prints_a_readable_table_with_the_built_in_sample(capsys) -> None:
    async with services() as (embedder, reranker):
        code = await run("--embed-url", embedder.url, "--rerank-url", reranker.url,
                         "--query", "how does the autoscaler scale down", "--top-n", "3")
    out = capsys.readouterr()
    assert code == 0, out.err
    lines = out.out.splitlines()
    assert lines[0] == "Query: how does the autoscaler scale down"
    assert f"Indexed {len(client.SAMPLE_DOCUMENTS)} documents with BAAI/bge-m3" in lines[1]
    rows = [line for line in lines if line[:4].strip().isdigit()]
    assert [int(row.split()[0]) for row in rows] == [1, 2, 3]
    scores = [float(row.split()[1]) for row in rows]
    assert scores == sorted(scores, reverse=True)


async def test_each_service_gets_its_own_api_key(monkeypatch, capsys) -> None:
    async with services(embed={"api_key": "embed-key"}, rerank={"api_key": "rerank-key"}) as (embedder, reranker):
        args = ["--embed-url", embedder.url, "--rerank-url", reranker.url, "--query", QUERY, "--json"]
        for name in ("TEI_API_KEY", "TEI_EMBED_API_KEY", "TEI_RERANK_API_KEY"):
            monkeypatch.delenv(name, raising=False)
        assert await run(*args, "--api-key", "embed-key") == 1  # one key cannot open both services
        err = capsys.readouterr().err
        assert f"--rerank-url {reranker.url}/info: 401" in err and "pass --rerank-api-key" in err
        assert await run(*args, "--embed-api-key", "embed-key", "--rerank-api-key", "rerank-key") == 0
        assert json.loads(capsys.readouterr().out)["results"]
        monkeypatch.setenv("TEI_EMBED_API_KEY", "embed-key")
        monkeypatch.setenv("TEI_RERANK_API_KEY", "rerank-key")
        assert await run(*args) == 0


async def test_batches_are_sent_concurrently_and_bounded(tmp_path, capsys) -> None:
    """With max_client_batch_size 4, a batch the emulated GPU runs can hold more than 4 inputs only if requests
    overlapped (the engine takes inputs of every queued request into one batch, as TEI does)."""
    slow = {"tokens_per_second": 3000.0, "batch_overhead_seconds": 0.02}
    docs = documents_file(tmp_path, [f"document number {i} about gpu batches" for i in range(24)])

    async def largest_batch(concurrency: str) -> tuple[float, float]:
        async with services(embed=slow) as (embedder, reranker):
            code = await run("--embed-url", embedder.url, "--rerank-url", reranker.url, "--query", QUERY,
                             "--documents", docs, "--concurrency", concurrency, "--json")
            out = capsys.readouterr()
            assert code == 0, out.err
            exposition = render_exposition(embedder.api.registry)
        sizes = {s.labels["le"]: s.value for family in text_string_to_metric_families(exposition)
                 for s in family.samples if s.name == "te_batch_next_size_bucket"}
        return sizes["4.0"], sizes["+Inf"]

    up_to_4, batches_total = await largest_batch("1")
    assert up_to_4 == batches_total  # one request at a time: no batch beyond the request size
    up_to_4, batches_total = await largest_batch("4")
    assert up_to_4 < batches_total  # overlapping requests were batched together


async def test_sends_the_query_prompt_name_to_a_qwen3_model(tmp_path, capsys) -> None:
    prompt = fake_model.known_prompts("Qwen/Qwen3-Embedding-0.6B")["query"]  # type: ignore[index]
    qwen = {"model_id": "Qwen/Qwen3-Embedding-0.6B"}
    q = fake_model.output_vector(prompt + QUERY, DIMENSIONS)
    cosine = [sum(a * b for a, b in zip(q, fake_model.output_vector(d, DIMENSIONS))) for d in DOCUMENTS]
    by_cosine = sorted(range(len(DOCUMENTS)), key=lambda i: -cosine[i])[:3]
    assert by_cosine != expected_ranking(QUERY, DOCUMENTS, 3)[0], "the prompt must change the candidates"
    async with services(embed=qwen) as (embedder, reranker):
        base = ["--embed-url", embedder.url, "--rerank-url", reranker.url, "--query", QUERY, "--top-k", "3",
                "--top-n", "3", "--documents", documents_file(tmp_path, DOCUMENTS), "--json"]
        assert await run(*base) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["query_prompt_name"] == "query" and result["document_prompt_name"] is None
        assert sorted(r["document"] for r in result["results"]) == sorted(by_cosine)
        assert await run(*base, "--query-prompt-name", "none") == 0
        result = json.loads(capsys.readouterr().out)
        assert result["query_prompt_name"] is None
        assert sorted(r["document"] for r in result["results"]) == sorted(expected_ranking(QUERY, DOCUMENTS, 3)[0])
        assert await run(*base, "--document-prompt-name", "passage") == 1  # a prompt the model lacks: TEI's 422
        assert "422 Validation" in capsys.readouterr().err


def test_prompt_names_follow_the_model() -> None:
    assert client.prompt_names("Qwen/Qwen3-Embedding-8B", "auto", "auto") == ("query", None)
    assert client.prompt_names("BAAI/bge-m3", "auto", "auto") == (None, None)
    assert client.prompt_names("BAAI/bge-m3", "q", "none") == ("q", None)


# ---- back-pressure and errors -----------------------------------------------------------------------------------

async def test_retries_429_until_the_service_has_permits_again(tmp_path, capsys) -> None:
    """All permits are held by a slow request; the client is refused with 429, backs off and then succeeds."""
    slow = {"max_concurrent_requests": 4, "tokens_per_second": 400.0}
    async with services(embed=slow) as (embedder, reranker), aiohttp.ClientSession() as session:
        blocker_inputs = [" ".join(f"w{i}" for i in range(40))] * 4  # 4 x 52 tokens: ~0.5 s at 400 tokens/s
        blocker = asyncio.create_task(session.post(f"{embedder.url}/embed", json={"inputs": blocker_inputs}))
        for _ in range(200):
            if embedder.engine.free_permits == 0:
                break
            await asyncio.sleep(0.005)
        assert embedder.engine.free_permits == 0
        code = await run("--embed-url", embedder.url, "--rerank-url", reranker.url, "--query", QUERY,
                         "--documents", documents_file(tmp_path, DOCUMENTS[:4]), "--backoff", "0.05",
                         "--retries", "20", "--json")
        (await blocker).release()
        out = capsys.readouterr()
        assert code == 0, out.err
        overloaded = embedder.metrics.value("te_request_failure", {"err": "overloaded"})
    assert overloaded is not None and overloaded >= 1
    assert json.loads(out.out)["retries"] == overloaded


async def test_gives_up_after_the_retries_and_says_why(capsys) -> None:
    # 4 inputs per request but only 2 permits: TEI refuses every such request as Overloaded.
    async with services(embed={"max_concurrent_requests": 2}) as (embedder, reranker):
        code = await run("--embed-url", embedder.url, "--rerank-url", reranker.url, "--query", QUERY,
                         "--retries", "2", "--backoff", "0.01", "--concurrency", "1")
        attempts = embedder.metrics.value("te_request_failure", {"err": "overloaded"})
    err = capsys.readouterr().err
    assert code == 1
    assert attempts == 3  # the first try and two retries
    assert f"--embed-url {embedder.url}/embed: 429 Overloaded" in err and "after 2 retries" in err


async def test_api_key_is_sent_and_its_absence_explained(monkeypatch, capsys) -> None:
    key = {"api_key": "s3cret"}
    async with services(embed=key, rerank=key) as (embedder, reranker):
        args = ["--embed-url", embedder.url, "--rerank-url", reranker.url, "--query", QUERY, "--json"]
        monkeypatch.delenv("TEI_API_KEY", raising=False)
        assert await run(*args) == 1
        err = capsys.readouterr().err
        assert f"--embed-url {embedder.url}/info: 401 Unauthorized" in err
        assert "pass --embed-api-key (or --api-key), or set TEI_EMBED_API_KEY" in err
        assert await run(*args, "--api-key", "wrong") == 1
        assert "--api-key" in capsys.readouterr().err
        assert await run(*args, "--api-key", "s3cret") == 0
        assert json.loads(capsys.readouterr().out)["results"]
        monkeypatch.setenv("TEI_API_KEY", "s3cret")  # the environment variable works as well
        assert await run(*args) == 0


async def test_swapped_urls_are_refused_naming_the_option(capsys) -> None:
    async with services() as (embedder, reranker):
        code = await run("--embed-url", reranker.url, "--rerank-url", embedder.url, "--query", QUERY)
    err = capsys.readouterr().err
    assert code == 1
    assert f"--embed-url {reranker.url} serves a reranker model (BAAI/bge-reranker-v2-m3)" in err
    assert "expected an embedding model" in err


def test_unreachable_service_is_reported_after_retrying(capsys) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code = client.main(["--embed-url", url, "--rerank-url", url, "--query", QUERY, "--retries", "1",
                        "--backoff", "0.01"])
    err = capsys.readouterr().err
    assert code == 1 and f"--embed-url {url}: cannot connect" in err


@pytest.mark.parametrize(("args", "message"), [
    (["--top-k", "0"], "argument --top-k: expected a positive integer, got 0"),
    (["--top-n", "many"], "argument --top-n: expected a positive integer, got 'many'"),
    (["--retries", "99"], "argument --retries: expected an integer from 0 to 20, got 99"),
    (["--timeout", "-1"], "argument --timeout: expected a positive number, got -1.0"),
    (["--concurrency", "0"], "argument --concurrency: expected an integer from 1 to 64, got 0"),
])
def test_bad_arguments_name_the_option(args, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        client.main(["--embed-url", "http://x", "--rerank-url", "http://y", "--query", "q", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_empty_or_missing_documents_file_is_refused(tmp_path, capsys) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    base = ["--embed-url", "http://x", "--rerank-url", "http://y", "--query", "q", "--documents"]
    assert client.main([*base, str(empty)]) == 2
    assert f"--documents {empty}: no documents" in capsys.readouterr().err
    assert client.main([*base, str(tmp_path / "missing.txt")]) == 2
    assert f"--documents {tmp_path / 'missing.txt'}: cannot read it" in capsys.readouterr().err


# ---- the pure parts -----------------------------------------------------------------------------------------------

def test_vector_index_ranks_by_cosine_not_by_length() -> None:
    index = client.VectorIndex()
    index.add([[10.0, 0.0], [1.0, 1.0], [0.0, 3.0], [-1.0, 0.0]])
    found = index.search([2.0, 0.1], k=3)
    assert [i for i, _ in found] == [0, 1, 2]
    assert found[0][1] == pytest.approx(2.0 / math.hypot(2.0, 0.1))
    assert found[1][1] == pytest.approx((2.0 + 0.1) / (math.hypot(2.0, 0.1) * math.sqrt(2)))
    with pytest.raises(client.UsageError, match="different lengths"):
        index.add([[1.0, 2.0, 3.0]])
    with pytest.raises(client.UsageError, match="3 dimensions, the index 2"):
        index.search([1.0, 0.0, 0.0], k=1)


def test_batches_never_exceed_the_limit() -> None:
    items = [str(i) for i in range(10)]
    cut = client.batches(items, 4)
    assert [len(b) for b in cut] == [4, 4, 2]
    assert [x for b in cut for x in b] == items


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    backoff = client.Backoff(retries=5, base=0.5, cap=2.0)
    assert all(0 <= backoff.delay(0) <= 0.5 for _ in range(50))
    assert all(0 <= backoff.delay(6) <= 2.0 for _ in range(50))
    assert max(backoff.delay(2) for _ in range(200)) > 0.5  # the window really grows
    assert backoff.delay(0, retry_after="1.5") == 1.5
    assert backoff.delay(0, retry_after="60") == 2.0
