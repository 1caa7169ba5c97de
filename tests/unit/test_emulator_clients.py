"""The TEI emulator against real TEI clients from PyPI (huggingface_hub's InferenceClient, openai's client), and
the routes those clients do not cover, on 127.0.0.1.

The clients are the ones users point at TEI; each call goes over real HTTP to an emulator started in the test
(the sync clients run in a worker thread while the emulator serves from the test's event loop). Expected values
are computed here from the emulator's model stand-in (`fake_model`), so a route that answered the wrong shape,
the wrong input's vector or the wrong order fails.

TEI facts relied on (TEI 1.9.3's router, router/src/http/server.rs and types.rs; /work/shared/TEI.md):
- `POST /` is /rerank for a reranker; for an embedding model /similarity when TASK=sentence-similarity,
  /embed_sparse with SPLADE pooling, else /embed. `GET /`, `/ping`, `/health` and `/metrics` need no API key.
- /similarity takes {inputs: {source_sentence, sentences}, parameters?} and answers one cosine per sentence.
- /predict takes a string, a pair or a batch of them and answers [{score, label}] (a batch: a list per input).
- /embed_sparse answers [[{index, value}]]; /embed_all one vector per token; /tokenize
  [[{id, text, special, start, stop}]]; /decode [str].
- Errors: {"error", "error_type"} (422 Validation with "Input validation error: " for tokenizer validation,
  424 Backend with "Backend error: "); /v1/embeddings errors as {message, code, type}.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import numpy as np
import openai
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError

from tei_operator.emulator import fake_model
from tei_operator.emulator.cli import parse_options
from tei_operator.emulator.config import EmulatorConfig, EmulatorConfigError
from tei_operator.emulator.server import ApiOptions, EmulatorServer

pytestmark = pytest.mark.timeout(60)

DIMS = 32
QWEN_QUERY_PROMPT = fake_model.known_prompts("Qwen/Qwen3-Embedding-0.6B")["query"]  # type: ignore[index]


@asynccontextmanager
async def emulator(options: ApiOptions | None = None, **overrides: Any) -> AsyncIterator[EmulatorServer]:
    config = EmulatorConfig(**{"port": 0, "dimensions": DIMS, **overrides})
    async with EmulatorServer(config, options) as server:
        yield server


async def post(url: str, body: Any, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(url, json=body, **kwargs) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


def expected(text: str, normalize: bool = True) -> list[float]:
    return fake_model.output_vector(text, DIMS, normalize)


def close(a: Any, b: Any, tol: float = 1e-5) -> bool:
    return bool(np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), atol=tol))


# ---- huggingface_hub's InferenceClient ---------------------------------------------------------------------------

async def test_inference_client_feature_extraction_posts_to_root() -> None:
    async with emulator() as server:
        client = InferenceClient(model=server.url)
        single = await asyncio.to_thread(client.feature_extraction, "gpu batch queue")
        assert single.shape == (1, DIMS) and close(single[0], expected("gpu batch queue"))
        batch = await asyncio.to_thread(client.feature_extraction, ["one two", "three four five"], normalize=False)
        assert batch.shape == (2, DIMS)
        assert close(batch[1], expected("three four five", normalize=False), tol=1e-4)
        assert not math.isclose(float(np.linalg.norm(batch[1])), 1.0, abs_tol=1e-3)  # raw, not unit length
        cut = await asyncio.to_thread(client.feature_extraction, "gpu", dimensions=8)
        assert cut.shape == (1, 8) and math.isclose(float(np.linalg.norm(cut[0])), 1.0, abs_tol=1e-5)
        too_many = ["x"] * 33  # TEI's default --max-client-batch-size is 32
        with pytest.raises(HfHubHTTPError) as caught:
            await asyncio.to_thread(client.feature_extraction, too_many)
        assert caught.value.response.status_code == 422
        assert caught.value.response.json() == {
            "error": "batch size 33 > maximum allowed batch size 32", "error_type": "Validation"}


async def test_inference_client_sends_prompt_name_to_a_qwen3_model() -> None:
    async with emulator(model_id="Qwen/Qwen3-Embedding-0.6B") as server:
        client = InferenceClient(model=server.url)
        query = await asyncio.to_thread(client.feature_extraction, "what is a gpu", prompt_name="query")
        assert close(query[0], expected(QWEN_QUERY_PROMPT + "what is a gpu"))
        plain = await asyncio.to_thread(client.feature_extraction, "what is a gpu")
        assert close(plain[0], expected("what is a gpu")) and not close(plain[0], query[0])
        with pytest.raises(HfHubHTTPError) as caught:
            await asyncio.to_thread(client.feature_extraction, "x", prompt_name="passage")
        body = caught.value.response.json()
        assert caught.value.response.status_code == 422 and body["error_type"] == "Validation"
        assert body["error"].startswith("Input validation error: ") and "['document', 'query']" in body["error"]


async def test_inference_client_sentence_similarity() -> None:
    async with emulator() as server:
        client = InferenceClient(model=f"{server.url}/similarity")
        scores = await asyncio.to_thread(client.sentence_similarity, "gpu batch", ["gpu batch", "other words"])
        cosine = float(np.dot(expected("gpu batch"), expected("other words")))
        assert len(scores) == 2 and math.isclose(scores[0], 1.0, abs_tol=1e-5)
        assert math.isclose(scores[1], cosine, abs_tol=1e-5)
        with pytest.raises(HfHubHTTPError) as caught:
            await asyncio.to_thread(client.sentence_similarity, "gpu", [])
        assert caught.value.response.status_code == 400
        assert caught.value.response.json() == {"error": "`inputs.sentences` cannot be empty", "error_type": "Empty"}
    # TASK=sentence-similarity makes POST / the similarity route, as in TEI
    async with emulator(ApiOptions(task="sentence-similarity")) as server:
        client = InferenceClient(model=server.url)
        scores = await asyncio.to_thread(client.sentence_similarity, "a b", ["a b"])
        assert len(scores) == 1 and math.isclose(scores[0], 1.0, abs_tol=1e-5)


async def test_inference_client_text_classification_on_a_reranker() -> None:
    async with emulator(kind="reranker", model_id="BAAI/bge-reranker-v2-m3") as server:
        client = InferenceClient(model=f"{server.url}/predict")
        result = await asyncio.to_thread(client.text_classification, "is this relevant")
        labels = result if isinstance(result, list) else [result]
        assert [r.label for r in labels] == ["LABEL_0"]
        assert math.isclose(labels[0].score, fake_model.sigmoid(fake_model.classifier_logit("is this relevant")),
                            rel_tol=1e-6)
        # an embedding route on a reranker: TEI's 424 Backend
        embedder = InferenceClient(model=f"{server.url}/embed")
        with pytest.raises(HfHubHTTPError) as caught:
            await asyncio.to_thread(embedder.feature_extraction, "x")
        assert caught.value.response.status_code == 424
        assert caught.value.response.json() == {"error": "Backend error: Model is not an embedding model",
                                                "error_type": "Backend"}


async def test_inference_client_with_api_key() -> None:
    async with emulator(api_key="s3cret") as server:
        anonymous = InferenceClient(model=server.url, api_key="wrong")
        with pytest.raises(HfHubHTTPError) as caught:
            await asyncio.to_thread(anonymous.feature_extraction, "x")
        assert caught.value.response.status_code == 401
        client = InferenceClient(model=server.url, api_key="s3cret")
        assert (await asyncio.to_thread(client.feature_extraction, "x")).shape == (1, DIMS)


# ---- the openai client ----------------------------------------------------------------------------------------

async def test_openai_client_embeddings_create() -> None:
    async with emulator(served_model_name="bge-m3", api_key="k") as server:
        client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0)
        texts = ["one two three", "gpu batch queue depth"]
        answer = await client.embeddings.create(model="bge-m3", input=texts)  # the client asks for base64
        assert answer.model == "bge-m3" and [d.index for d in answer.data] == [0, 1]
        assert all(close(d.embedding, expected(t)) for d, t in zip(answer.data, texts))
        tokens = sum(fake_model.count_tokens(t) for t in texts)
        assert answer.usage.prompt_tokens == tokens and answer.usage.total_tokens == tokens
        floats = await client.embeddings.create(model="bge-m3", input="one", encoding_format="float", dimensions=4)
        assert len(floats.data[0].embedding) == 4
        with pytest.raises(openai.UnprocessableEntityError) as caught:
            await client.embeddings.create(model="bge-m3", input=["x"] * 33)
        assert caught.value.body == {"message": "batch size 33 > maximum allowed batch size 32", "code": 422,
                                     "type": "Validation"}
        with pytest.raises(openai.AuthenticationError):
            await openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="nope", max_retries=0).embeddings.create(
                model="bge-m3", input="x")
        await client.close()


# ---- the routes no client library covers ------------------------------------------------------------------------

async def test_sparse_embeddings_with_splade_pooling() -> None:
    async with emulator(pooling="splade", model_id="naver/splade-v3") as server:
        status, sparse = await post(f"{server.url}/embed_sparse", {"inputs": ["deep learning", "learning rate"]})
        assert status == 200 and len(sparse) == 2
        assert sparse[0] == [{"index": i, "value": v} for i, v in fake_model.sparse_weights("deep learning")]
        assert [e["index"] for e in sparse[0]] == sorted(e["index"] for e in sparse[0])
        shared = {e["index"] for e in sparse[0]} & {e["index"] for e in sparse[1]}
        assert shared  # "learning" gives both texts a common index
        status, root = await post(f"{server.url}/", {"inputs": "deep learning"})
        assert status == 200 and root == [sparse[0]]  # POST / is /embed_sparse with SPLADE pooling
        status, error = await post(f"{server.url}/embed", {"inputs": "x"})  # normalize defaults to true
        assert (status, error["error"]) == (424, "Backend error: `normalize` is not available for SPLADE models")
        status, error = await post(f"{server.url}/embed_all", {"inputs": "x"})
        assert (status, error["error"]) == (424, "Backend error: `embed_all` is not available for SPLADE models")
    async with emulator() as server:
        status, error = await post(f"{server.url}/embed_sparse", {"inputs": "x"})
        assert (status, error) == (424, {"error": "Backend error: Model is not an embedding model with SPLADE pooling",
                                         "error_type": "Backend"})


async def test_embed_all_returns_one_vector_per_token() -> None:
    async with emulator() as server:
        texts = ["one", "one two three four"]
        status, body = await post(f"{server.url}/embed_all", {"inputs": texts})
        assert status == 200
        assert [len(rows) for rows in body] == [fake_model.count_tokens(t) for t in texts]
        assert all(len(row) == DIMS for rows in body for row in rows)
        assert body[1][0] != body[1][1]


async def test_tokenize_and_decode_round_trip_and_token_id_inputs() -> None:
    async with emulator(model_id="Qwen/Qwen3-Embedding-0.6B") as server:
        text = "tokenizers cut words into pieces"
        status, tokens = await post(f"{server.url}/tokenize", {"inputs": [text]})
        assert status == 200 and len(tokens) == 1
        first, *middle, last = tokens[0]
        assert first["special"] and last["special"] and first["start"] is None
        assert len(middle) == fake_model.count_tokens(text)
        assert all(text[t["start"]:t["stop"]] == t["text"] for t in middle)
        ids = [t["id"] for t in tokens[0]]
        status, decoded = await post(f"{server.url}/decode", {"ids": ids})
        assert (status, decoded) == (200, [text])
        status, decoded = await post(f"{server.url}/decode", {"ids": [ids, ids[1:3]], "skip_special_tokens": False})
        assert status == 200 and decoded[0] == f"<s> {text} </s>" and len(decoded) == 2
        status, plain = await post(f"{server.url}/tokenize", {"inputs": "a b", "add_special_tokens": False,
                                                                "prompt_name": "query"})
        assert status == 200 and not any(t["special"] for t in plain[0])
        assert "".join(t["text"] for t in plain[0]).endswith("ab")
        # token ids as /embed input: decoded and embedded like the text
        status, by_ids = await post(f"{server.url}/embed", {"inputs": [t["id"] for t in middle]})
        assert status == 200 and close(by_ids[0], expected(text))
        status, error = await post(f"{server.url}/tokenize", {"inputs": []})
        assert (status, error) == (400, {"error": "`inputs` cannot be empty", "error_type": "Empty"})


async def test_predict_shapes_and_model_type_errors() -> None:
    async with emulator(kind="reranker", model_id="BAAI/bge-reranker-v2-m3") as server:
        status, single = await post(f"{server.url}/predict", {"inputs": ["gpu queue", "the gpu queue"],
                                                              "raw_scores": True})
        assert status == 200
        assert single == [{"score": pytest.approx(fake_model.rerank_logit("gpu queue", "the gpu queue")),
                           "label": "LABEL_0"}]
        status, batch = await post(f"{server.url}/predict", {"inputs": [["a"], ["a", "b"], ["c"]]})
        assert status == 200 and len(batch) == 3 and all(len(p) == 1 and 0 < p[0]["score"] < 1 for p in batch)
        status, text = await post(f"{server.url}/predict", {"inputs": ["a", "b", "c"]})
        assert status == 422 and "invalid length 3" in text
        status, ranks = await post(f"{server.url}/", {"query": "gpu", "texts": ["gpu", "cpu"]})
        assert status == 200 and ranks[0]["index"] == 0  # POST / is /rerank on a reranker
    async with emulator() as server:
        status, error = await post(f"{server.url}/predict", {"inputs": "x"})
        assert (status, error) == (424, {"error": "Backend error: Model is not a classifier model",
                                         "error_type": "Backend"})
        status, error = await post(f"{server.url}/rerank", {"query": "q", "texts": ["x"]})
        assert (status, error["error"]) == (424, "Backend error: model is not a re-ranker model")


async def test_public_routes_and_api_key_on_post_root() -> None:
    async with emulator(api_key="k") as server, aiohttp.ClientSession() as session:
        for path in ("/", "/ping", "/health", "/metrics"):
            async with session.get(f"{server.url}{path}") as response:
                assert response.status == 200, path
        async with session.post(f"{server.url}/", json={"inputs": "x"}) as response:
            assert response.status == 401 and await response.read() == b""  # TEI: a bare 401
        async with session.post(f"{server.url}/embeddings", json={"input": "x"},
                                headers={"Authorization": "Bearer k"}) as response:
            assert response.status == 200 and (await response.json())["object"] == "list"


async def test_info_reports_model_sha() -> None:
    pinned = "5617a9f61b028005a4858fdac845db406aefb181"
    async with emulator(revision=pinned) as server, aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/info") as response:
            assert (await response.json())["model_sha"] == pinned
    other = "0" * 40
    async with emulator(ApiOptions(model_sha=other), revision=pinned) as server, aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/info") as response:
            assert (await response.json())["model_sha"] == other
    unpinned = fake_model.model_sha("BAAI/bge-m3", None)
    assert len(unpinned) == 40 and unpinned != fake_model.model_sha("BAAI/bge-m3", "v2")


def test_option_flags_and_environment() -> None:
    options, rest = parse_options(["--model-sha", "a" * 40, "--port", "0", "--task=sentence-similarity"],
                                  {"EMULATOR_PROMPTS": '{"q": "query: "}'})
    assert options == ApiOptions(model_sha="a" * 40, task="sentence-similarity", prompts={"q": "query: "})
    assert rest == ["--port", "0"]
    with pytest.raises(EmulatorConfigError, match="--model-sha: expected a 40-character"):
        parse_options(["--model-sha", "main"], {})
    assert parse_options([], {"TASK": "ner"})[0].task == "ner"  # TEI ignores a TASK other than sentence-similarity
    with pytest.raises(EmulatorConfigError, match="EMULATOR_PROMPTS: expected a JSON object"):
        parse_options([], {"EMULATOR_PROMPTS": "[1]"})
    with pytest.raises(ValueError, match="--default-prompt-name: `passage` is not one of the model's prompts"):
        ApiOptions(default_prompt_name="passage").default_prompt_text("Qwen/Qwen3-Embedding-8B")
    assert ApiOptions(default_prompt_name="query").default_prompt_text("Qwen/Qwen3-Embedding-8B") == QWEN_QUERY_PROMPT
