"""TEI's HTTP API over the modelled GPU: every route of TEI 1.9's HTTP router (docs/emulator.md lists them).

Status codes, error bodies and metric names follow TEI 1.9 (see /work/shared/TEI.md and docs/emulator.md):
errors are `{"error": ..., "error_type": ...}` with 422 Validation, 400 Empty, 429 Overloaded, 424 Backend,
503 Unhealthy; a body over the payload limit gets a plain-text 413; a body that is not the expected JSON
gets a plain-text 400/415/422 naming the field, as TEI's JSON extractor does.

`EmulatorServer` binds its port only once the modelled loading time has passed, because TEI does the same
and the operator's readiness logic depends on "connection refused while loading".
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tei_operator.emulator import fake_model
from tei_operator.emulator.config import VERSION, EmulatorConfig
from tei_operator.emulator.engine import Engine, EngineStopped, InputTiming
from tei_operator.emulator.metrics import TeiMetrics, new_registry, render_exposition

log = logging.getLogger(__name__)

#: GET routes TEI serves without the API key (health for load balancers and SageMaker, metrics for Prometheus).
PUBLIC_GET_PATHS = frozenset({"/health", "/metrics", "/", "/ping"})
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """A TEI error response: HTTP status, message, TEI's `error_type`, and the `te_request_failure` label
    to count it under (None when TEI does not count it)."""

    def __init__(self, status: int, message: str, error_type: str, failure: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.failure = failure


def _validation(message: str, failure: str | None = "validation") -> ApiError:
    """TEI's `TextEmbeddingsError::Validation`: 422, the message prefixed as TEI prefixes it."""
    return ApiError(422, f"Input validation error: {message}", "Validation", failure)


def _backend(message: str, failure: str | None = "model_type") -> ApiError:
    """TEI's `TextEmbeddingsError::Backend`: 424, the message prefixed as TEI prefixes it."""
    return ApiError(424, f"Backend error: {message}", "Backend", failure)


def _bad_body(message: str) -> web.HTTPException:
    """The plain-text 422 TEI's JSON extractor answers when the body has the wrong shape."""
    return web.HTTPUnprocessableEntity(text=f"Failed to deserialize the JSON body into the target type: {message}")


def _optional(data: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = data.get(name)
    if value is not None and (not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind))):
        raise _bad_body(f"{name}: expected {what}, got {json.dumps(value)[:80]}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _truncation_direction(data: dict[str, Any]) -> None:
    """Accept TEI's `truncation_direction` (Left or Right); the emulator does not need it, but refuses nonsense."""
    value = _optional(data, "truncation_direction", str, "Left or Right")
    if value is not None and value.lower() not in ("left", "right"):
        raise _bad_body(f"truncation_direction: expected Left or Right, got {value!r}")


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class _Inputs:
    """The inputs of an embedding-type request: their texts, token counts fixed by token-id inputs (else None),
    and whether they came as a list (TEI's `method=batch`)."""

    texts: list[str]
    fixed_tokens: list[int | None]
    is_batch: bool

    @property
    def characters(self) -> int:
        return sum(len(t) for t in self.texts)


def _embedding_inputs(data: dict[str, Any], name: str) -> _Inputs:
    """Field `name` as TEI's `Input`: a string, token ids, or a list of strings and token-id lists. Token ids are
    decoded by the fake tokenizer (as TEI decodes and re-encodes them) and count as one token each."""
    what = "a string, a list of token ids, or a list of strings and token-id lists"
    if name not in data:
        raise _bad_body(f"missing field `{name}`: expected {what}")
    value = data[name]
    if isinstance(value, str):
        return _Inputs([value], [None], False)
    if not isinstance(value, list):
        raise _bad_body(f"{name}: expected {what}")
    if value and all(_is_id(v) for v in value):
        return _Inputs([fake_model.decode(value)], [len(value)], False)
    texts: list[str] = []
    fixed: list[int | None] = []
    for item in value:
        if isinstance(item, str):
            texts.append(item)
            fixed.append(None)
        elif isinstance(item, list) and all(_is_id(v) for v in item):
            texts.append(fake_model.decode(item))
            fixed.append(len(item))
        else:
            raise _bad_body(f"{name}: expected {what}")
    return _Inputs(texts, fixed, True)


def _predict_inputs(data: dict[str, Any]) -> tuple[list[tuple[str, ...]], bool]:
    """`inputs` of /predict as TEI reads it: a string, a pair [a, b], or a batch [[a], [a, b], ...]."""
    what = "a string, a pair of strings [string, string] or a batch of mixed strings and pairs [[string], " \
           "[string, string], ...]"
    if "inputs" not in data:
        raise _bad_body(f"missing field `inputs`: expected {what}")
    value = data["inputs"]
    if isinstance(value, str):
        return [(value,)], False
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        if len(value) > 2:
            raise _bad_body(f"inputs: invalid length {len(value)}, expected {what}")
        return [tuple(value)], False
    if isinstance(value, list) and value and all(
            isinstance(v, list) and 1 <= len(v) <= 2 and all(isinstance(s, str) for s in v) for v in value):
        return [tuple(v) for v in value], True
    raise _bad_body(f"inputs: {'invalid length 0, expected' if value == [] else 'expected'} {what}")


@dataclass(frozen=True)
class ApiOptions:
    """What the emulator serves beyond `EmulatorConfig` (TEI settings read from the model or its environment).

    - `model_sha`: the commit `/info` reports as `model_sha` (None: the revision if it is a 40-hex sha, else a
      fake sha derived from model id and revision, as TEI reports the commit the revision resolved to);
    - `task`: TEI's `TASK` variable; `sentence-similarity` makes `POST /` answer as `/similarity`;
    - `prompts`: the model's sentence-transformers prompts (None: the known ones of the model, see
      `fake_model.known_prompts`); `default_prompt_name` / `default_prompt`: TEI's flags of those names.
    """

    model_sha: str | None = None
    task: str | None = None
    prompts: Mapping[str, str] | None = None
    default_prompt_name: str | None = None
    default_prompt: str | None = None

    def resolved_prompts(self, model_id: str) -> Mapping[str, str] | None:
        return self.prompts if self.prompts is not None else fake_model.known_prompts(model_id)

    def default_prompt_text(self, model_id: str) -> str | None:
        """The text prepended when a request names no prompt. Raises ValueError when `default_prompt_name` is not
        one of the model's prompts (TEI refuses to start then)."""
        if self.default_prompt_name is None:
            return self.default_prompt
        prompts = self.resolved_prompts(model_id)
        if not prompts or self.default_prompt_name not in prompts:
            raise ValueError(f"--default-prompt-name: `{self.default_prompt_name}` is not one of the model's "
                             f"prompts ({', '.join(sorted(prompts or {})) or 'it has none'})")
        return prompts[self.default_prompt_name]

    def resolved_sha(self, model_id: str, revision: str | None) -> str:
        if self.model_sha:
            return self.model_sha
        return fake_model.model_sha(model_id, revision)


@dataclass
class _Outcome:
    """One successful inference call: the per-input timings and token counts, and the request's totals."""

    tokens: list[int]
    timings: list[InputTiming]
    tokenization_seconds: list[float]
    total_seconds: float
    characters: int

    def headers(self) -> dict[str, str]:
        """TEI's response headers (times in milliseconds, per-input means for a batch)."""
        n = max(1, len(self.timings))
        queue = sum(t.queue_seconds for t in self.timings) / n
        inference = sum(t.inference_seconds for t in self.timings) / n
        tokenization = sum(self.tokenization_seconds) / n
        return {
            "x-compute-type": "gpu",
            "x-compute-time": str(round((self.total_seconds - queue) * 1000)),
            "x-compute-characters": str(self.characters),
            "x-compute-tokens": str(sum(self.tokens)),
            "x-total-time": str(round(self.total_seconds * 1000)),
            "x-tokenization-time": str(round(tokenization * 1000)),
            "x-queue-time": str(round(queue * 1000)),
            "x-inference-time": str(round(inference * 1000)),
        }


def _json(body: str, outcome: _Outcome | None = None) -> web.Response:
    return web.Response(text=body, content_type="application/json",
                        headers=outcome.headers() if outcome is not None else None)


class TeiApi:
    """The request handlers of one emulator instance."""

    def __init__(self, config: EmulatorConfig, engine: Engine, metrics: TeiMetrics,
                 options: ApiOptions | None = None) -> None:
        self.config = config
        self.engine = engine
        self.metrics = metrics
        self.options = options or ApiOptions()
        self.registry = new_registry(metrics)
        self.prompts = self.options.resolved_prompts(config.model_id)
        self.model_sha = self.options.resolved_sha(config.model_id, config.revision)
        self.default_prompt = self.options.default_prompt_text(config.model_id)

    @property
    def splade(self) -> bool:
        return self.config.kind == "embedding" and self.config.pooling == "splade"

    # ---- plumbing --------------------------------------------------------------------------------------------
    @staticmethod
    async def _read_json(request: web.Request) -> dict[str, Any]:
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="Expected request with `Content-Type: application/json`")
        body = await request.read()  # over the payload limit, aiohttp answers 413 in plain text, as TEI does
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise web.HTTPBadRequest(text=f"Failed to parse the request body as JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise _bad_body("expected a JSON object")
        return data

    def _fail(self, error: ApiError) -> web.Response:
        if error.failure:
            self.metrics.inc("te_request_failure", {"err": error.failure})
        return web.json_response({"error": error.message, "error_type": error.error_type}, status=error.status)

    def _prompt(self, prompt_name: str | None) -> str | None:
        """The prompt text prepended to each input (TEI's messages, which name the flag even for a request's
        `prompt_name`)."""
        if prompt_name is None:
            return self.default_prompt
        if not self.prompts:
            raise _validation(f"`default-prompt-name` is set to `{prompt_name}` but no prompts were found in the "
                              "Sentence Transformers configuration", "tokenization")
        if prompt_name not in self.prompts:
            raise _validation(f"`default-prompt-name` is set to `{prompt_name}` but it was not found in the Sentence "
                              f"Transformers prompts. Available prompts: {sorted(self.prompts)}", "tokenization")
        return self.prompts[prompt_name]

    def _tokenize(self, texts: list[str], fixed: list[int | None], truncate: bool, family: str
                  ) -> tuple[list[int], list[float]]:
        """Token counts (truncated or refused beyond max_input_length) and the time taken per input."""
        limit = self.config.max_input_length
        counts: list[int] = []
        seconds: list[float] = []
        for text, tokens in zip(texts, fixed):
            self.metrics.inc(f"te_{family}_count")
            started = time.perf_counter()
            tokens = fake_model.count_tokens(text) if tokens is None else max(1, tokens)
            if tokens > limit:
                if not truncate:
                    raise _validation(f"`inputs` must have less than {limit} tokens. Given: {tokens}", "tokenization")
                tokens = limit
            self.metrics.observe("te_request_input_length", tokens)
            counts.append(tokens)
            seconds.append(time.perf_counter() - started)
        return counts, seconds

    def _check_batch(self, count: int, field: str, *, empty_check: bool = True) -> None:
        if empty_check and count == 0:
            raise ApiError(400, f"`{field}` cannot be empty", "Empty", "validation")
        if count > self.config.max_client_batch_size:
            raise ApiError(422, f"batch size {count} > maximum allowed batch size {self.config.max_client_batch_size}",
                           "Validation", "batch_size")

    async def _infer(self, texts: list[str], characters: int, truncate: bool, family: str, method: str,
                     started: float, fixed: list[int | None] | None = None) -> _Outcome:
        """Run `texts` through permits, tokenisation, queue and backend; record TEI's metrics on the way."""
        if not self.engine.try_acquire(len(texts)):
            raise ApiError(429, "Model is overloaded", "Overloaded", "overloaded")
        try:
            tokens, tokenization = self._tokenize(texts, fixed or [None] * len(texts), truncate, family)
            futures = self.engine.submit(tokens)
        except EngineStopped as exc:
            self.engine.release(len(texts))
            raise ApiError(503, "unhealthy", "Unhealthy", "inference") from exc
        except BaseException:
            self.engine.release(len(texts))
            raise
        for future in futures:  # each input gives its permit back when it is done, as in TEI
            future.add_done_callback(lambda _f: self.engine.release(1))
        try:
            timings: list[InputTiming] = list(await asyncio.gather(*futures))
        except EngineStopped as exc:
            raise ApiError(503, "unhealthy", "Unhealthy", "inference") from exc
        total = time.perf_counter() - started
        for timing, tok_seconds in zip(timings, tokenization):
            self.metrics.inc(f"te_{family}_success")
            self.metrics.observe(f"te_{family}_duration", total)
            self.metrics.observe(f"te_{family}_tokenization_duration", tok_seconds)
            self.metrics.observe(f"te_{family}_queue_duration", timing.queue_seconds)
            self.metrics.observe(f"te_{family}_inference_duration", timing.inference_seconds)
        n = len(timings)
        self.metrics.inc("te_request_success", {"method": method})
        self.metrics.observe("te_request_duration", total)
        self.metrics.observe("te_request_tokenization_duration", sum(tokenization) / n)
        self.metrics.observe("te_request_queue_duration", sum(t.queue_seconds for t in timings) / n)
        self.metrics.observe("te_request_inference_duration", sum(t.inference_seconds for t in timings) / n)
        return _Outcome(tokens, timings, tokenization, total, characters)

    def _check_dimensions(self, dimensions: int | None) -> None:
        if dimensions is None:
            return
        if dimensions <= 0:
            raise _validation("`dimensions` should be positive")
        if dimensions > self.config.dimensions:
            raise _validation("`dimensions` should be smaller than the maximum embedding dimension.")

    def _require_embedding(self, *, sparse: bool | None = None, normalize: bool = False,
                           all_tokens: bool = False) -> None:
        """TEI's model-type checks of the embedding routes, in its order and with its messages (424 Backend)."""
        if self.config.kind != "embedding":
            raise _backend("Model is not an embedding model")
        if sparse is True and not self.splade:
            raise _backend("Model is not an embedding model with SPLADE pooling")
        if self.splade and normalize:
            raise _backend("`normalize` is not available for SPLADE models")
        if self.splade and all_tokens:
            raise _backend("`embed_all` is not available for SPLADE models")

    async def _embed_texts(self, data: dict[str, Any], name: str, *, prompt_name: str | None, truncate: bool,
                           started: float, checks: Callable[[], None]) -> tuple[_Inputs, list[str], _Outcome]:
        """The shared path of the embedding routes: count the request, check the batch, run the model checks,
        resolve the prompt, infer. Returns the inputs, the texts as encoded (prompt prepended) and the outcome."""
        inputs = _embedding_inputs(data, name)
        method = "batch" if inputs.is_batch else "single"
        self.metrics.inc("te_request_count", {"method": method})
        if inputs.is_batch:
            self._check_batch(len(inputs.texts), "inputs")
        if not self.engine.free_permits >= len(inputs.texts):
            raise ApiError(429, "Model is overloaded", "Overloaded", "overloaded")
        checks()
        prompt = self._prompt(prompt_name)
        encoded = [prompt + t if prompt else t for t in inputs.texts]  # TEI prepends it to decoded token ids too
        fixed = [None if f is None else f + (fake_model.count_tokens(prompt) if prompt else 0)
                 for f in inputs.fixed_tokens]
        outcome = await self._infer(encoded, inputs.characters, truncate, "embed", method, started, fixed)
        return inputs, encoded, outcome

    def _truncate(self, data: dict[str, Any]) -> bool:
        value = _optional(data, "truncate", bool, "true or false")
        return self.config.auto_truncate if value is None else value

    # ---- endpoints --------------------------------------------------------------------------------------------
    async def embed(self, request: web.Request) -> web.StreamResponse:
        """POST /embed {inputs, truncate?, normalize?, dimensions?, prompt_name?, truncation_direction?}."""
        started = time.perf_counter()
        data = await self._read_json(request)
        normalize = _optional(data, "normalize", bool, "true or false")
        normalize = True if normalize is None else normalize
        prompt_name = _optional(data, "prompt_name", str, "a string")
        dimensions = _optional(data, "dimensions", int, "a positive integer")
        _truncation_direction(data)
        truncate = self._truncate(data)

        def checks() -> None:
            self._require_embedding(normalize=normalize)
            self._check_dimensions(dimensions)

        try:
            _, encoded, outcome = await self._embed_texts(data, "inputs", prompt_name=prompt_name, truncate=truncate,
                                                          started=started, checks=checks)
        except ApiError as error:
            return self._fail(error)
        body = "[" + ",".join(
            fake_model.vector_json(t, self.config.dimensions, normalize, dimensions) for t in encoded) + "]"
        return _json(body, outcome)

    async def embed_all(self, request: web.Request) -> web.StreamResponse:
        """POST /embed_all {inputs, truncate?, prompt_name?} -> one vector per token of each input (no pooling)."""
        started = time.perf_counter()
        data = await self._read_json(request)
        prompt_name = _optional(data, "prompt_name", str, "a string")
        _truncation_direction(data)
        truncate = self._truncate(data)
        try:
            _, encoded, outcome = await self._embed_texts(
                data, "inputs", prompt_name=prompt_name, truncate=truncate, started=started,
                checks=lambda: self._require_embedding(all_tokens=True))
        except ApiError as error:
            return self._fail(error)
        body = "[" + ",".join(fake_model.token_vectors_json(t, self.config.dimensions, n)
                              for t, n in zip(encoded, outcome.tokens)) + "]"
        return _json(body, outcome)

    async def embed_sparse(self, request: web.Request) -> web.StreamResponse:
        """POST /embed_sparse {inputs, truncate?, prompt_name?} -> [[{index, value}]] (SPLADE pooling only)."""
        started = time.perf_counter()
        data = await self._read_json(request)
        prompt_name = _optional(data, "prompt_name", str, "a string")
        _truncation_direction(data)
        truncate = self._truncate(data)
        try:
            _, encoded, outcome = await self._embed_texts(
                data, "inputs", prompt_name=prompt_name, truncate=truncate, started=started,
                checks=lambda: self._require_embedding(sparse=True))
        except ApiError as error:
            return self._fail(error)
        return web.json_response(
            [[{"index": i, "value": v} for i, v in fake_model.sparse_weights(t)] for t in encoded],
            headers=outcome.headers())

    async def similarity(self, request: web.Request) -> web.StreamResponse:
        """POST /similarity {inputs: {source_sentence, sentences}, parameters?: {truncate?, prompt_name?}} ->
        the cosine similarity of each sentence's embedding with the source sentence's."""
        started = time.perf_counter()
        data = await self._read_json(request)
        inputs = data.get("inputs")
        if not isinstance(inputs, dict):
            raise _bad_body("missing field `inputs`: expected {source_sentence, sentences}" if inputs is None
                            else "inputs: expected an object {source_sentence, sentences}")
        source, sentences = inputs.get("source_sentence"), inputs.get("sentences")
        if not isinstance(source, str):
            raise _bad_body("inputs.source_sentence: expected a string")
        if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
            raise _bad_body("inputs.sentences: expected a list of strings")
        parameters = data.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise _bad_body("parameters: expected an object {truncate?, truncation_direction?, prompt_name?}")
        prompt_name = _optional(parameters, "prompt_name", str, "a string")
        _truncation_direction(parameters)
        truncate = self._truncate(parameters)
        try:
            if not sentences:
                raise ApiError(400, "`inputs.sentences` cannot be empty", "Empty", "validation")
            self._check_batch(len(sentences) + 1, "inputs.sentences")
            _, encoded, outcome = await self._embed_texts(
                {"inputs": [source, *sentences]}, "inputs", prompt_name=prompt_name, truncate=truncate,
                started=started, checks=lambda: self._require_embedding())
        except ApiError as error:
            return self._fail(error)
        vectors = [fake_model.embedding_vector(t, self.config.dimensions) for t in encoded]
        scores = [sum(a * b for a, b in zip(vectors[0], v)) for v in vectors[1:]]
        return web.json_response(scores, headers=outcome.headers())

    async def openai_embeddings(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/embeddings {input, model?, encoding_format?, dimensions?, user?} in OpenAI's shape; errors as
        {message, code, type}. TEI truncates here as --auto-truncate says and applies no prompt."""
        started = time.perf_counter()
        data = await self._read_json(request)
        encoding = _optional(data, "encoding_format", str, "float or base64") or "float"
        if encoding not in ("float", "base64"):
            raise _bad_body(f"encoding_format: unknown variant `{encoding}`, expected `float` or `base64`")
        dimensions = _optional(data, "dimensions", int, "a positive integer")
        _optional(data, "model", str, "a string")

        def checks() -> None:
            self._require_embedding(normalize=True)
            self._check_dimensions(dimensions)

        try:
            _, encoded, outcome = await self._embed_texts(
                {"inputs": data["input"]} if "input" in data else {}, "inputs", prompt_name=None,
                truncate=self.config.auto_truncate, started=started, checks=checks)
        except ApiError as error:
            if error.failure:
                self.metrics.inc("te_request_failure", {"err": error.failure})
            return web.json_response({"message": error.message, "code": error.status, "type": error.error_type},
                                     status=error.status)
        except web.HTTPUnprocessableEntity as exc:
            raise _bad_body((exc.text or "").split(": ", 1)[-1].replace("`inputs`", "`input`")
                            .replace("inputs:", "input:")) from None
        items = []
        for index, text in enumerate(encoded):
            if encoding == "base64":
                vector = json.dumps(fake_model.vector_base64(text, self.config.dimensions, True, dimensions))
            else:
                vector = fake_model.vector_json(text, self.config.dimensions, True, dimensions)
            items.append(f'{{"object":"embedding","embedding":{vector},"index":{index}}}')
        usage = sum(outcome.tokens)
        return _json(
            f'{{"object":"list","data":[{",".join(items)}],"model":{json.dumps(self.config.model_name)},'
            f'"usage":{{"prompt_tokens":{usage},"total_tokens":{usage}}}}}', outcome)

    async def rerank(self, request: web.Request) -> web.StreamResponse:
        """POST /rerank {query, texts, truncate?, raw_scores?, return_text?} -> [{index, score, text?}] best first."""
        started = time.perf_counter()
        data = await self._read_json(request)
        query = data.get("query")
        if not isinstance(query, str):
            raise _bad_body("missing field `query`: expected a string" if query is None else "query: expected a string")
        texts = data.get("texts")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise _bad_body("missing field `texts`: expected a list of strings" if texts is None
                            else "texts: expected a list of strings")
        raw_scores = bool(_optional(data, "raw_scores", bool, "true or false"))
        return_text = bool(_optional(data, "return_text", bool, "true or false"))
        _truncation_direction(data)
        truncate = self._truncate(data)
        try:
            if not texts:
                raise ApiError(400, "`texts` cannot be empty", "Empty", "validation")
            if self.config.kind != "reranker":
                raise _backend("model is not a re-ranker model")
            self.metrics.inc("te_request_count", {"method": "batch"})
            self._check_batch(len(texts), "texts")
            characters = len(query) * len(texts) + sum(len(t) for t in texts)
            pairs = [f"{query} {t}" for t in texts]  # a cross-encoder reads query and text as one sequence
            outcome = await self._infer(pairs, characters, truncate, "predict", "batch", started)
        except ApiError as error:
            return self._fail(error)
        ranks = []
        for index, text in enumerate(texts):
            logit = fake_model.rerank_logit(query, text)
            rank: dict[str, Any] = {"index": index, "score": logit if raw_scores else fake_model.sigmoid(logit)}
            if return_text:
                rank["text"] = text
            ranks.append(rank)
        ranks.sort(key=lambda r: r["score"], reverse=True)
        return web.json_response(ranks, headers=outcome.headers())

    async def predict(self, request: web.Request) -> web.StreamResponse:
        """POST /predict {inputs: text | [a, b] | [[a], [a, b], ...], truncate?, raw_scores?} -> [{score, label}]
        (a batch: one such list per input). A reranker is a one-label classifier, so it answers too."""
        started = time.perf_counter()
        data = await self._read_json(request)
        inputs, is_batch = _predict_inputs(data)
        raw_scores = bool(_optional(data, "raw_scores", bool, "true or false"))
        _truncation_direction(data)
        truncate = self._truncate(data)
        method = "batch" if is_batch else "single"
        try:
            self.metrics.inc("te_request_count", {"method": method})
            if is_batch:
                self._check_batch(len(inputs), "inputs", empty_check=False)
            if self.config.kind != "reranker":
                raise _backend("Model is not a classifier model")
            texts = [" ".join(pair) for pair in inputs]
            outcome = await self._infer(texts, sum(len(t) for pair in inputs for t in pair), truncate, "predict",
                                        method, started)
        except ApiError as error:
            return self._fail(error)
        predictions = []
        for pair in inputs:
            logit = fake_model.rerank_logit(*pair) if len(pair) == 2 else fake_model.classifier_logit(pair[0])
            predictions.append([{"score": logit if raw_scores else fake_model.sigmoid(logit), "label": "LABEL_0"}])
        return web.json_response(predictions if is_batch else predictions[0], headers=outcome.headers())

    async def tokenize(self, request: web.Request) -> web.StreamResponse:
        """POST /tokenize {inputs: str | [str], add_special_tokens?, prompt_name?} -> [[{id, text, special, start,
        stop}]] from the emulator's fake tokenizer (offsets are into the input with its prompt)."""
        data = await self._read_json(request)
        value = data.get("inputs")
        if isinstance(value, str):
            texts = [value]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            texts = value
        else:
            raise _bad_body("missing field `inputs`: expected a string or a list of strings" if value is None
                            else "inputs: expected a string or a list of strings")
        add_special = _optional(data, "add_special_tokens", bool, "true or false")
        prompt_name = _optional(data, "prompt_name", str, "a string")
        try:
            if isinstance(value, list):
                self._check_batch(len(texts), "inputs")
            prompt = self._prompt(prompt_name) or ""
        except ApiError as error:
            return self._fail(error)
        return web.json_response([
            [{"id": t.id, "text": t.text, "special": t.special, "start": t.start, "stop": t.stop}
             for t in fake_model.tokenize(prompt + text, True if add_special is None else add_special)]
            for text in texts
        ])

    async def decode(self, request: web.Request) -> web.StreamResponse:
        """POST /decode {ids: [int] | [[int]], skip_special_tokens?} -> [str]."""
        data = await self._read_json(request)
        ids = data.get("ids")
        if isinstance(ids, list) and all(_is_id(i) for i in ids):
            batch, is_batch = [ids], False
        elif isinstance(ids, list) and all(isinstance(i, list) and all(_is_id(v) for v in i) for i in ids):
            batch, is_batch = ids, True
        else:
            raise _bad_body("missing field `ids`: expected a list of token ids or a list of such lists"
                            if ids is None else "ids: expected a list of token ids or a list of such lists")
        skip = _optional(data, "skip_special_tokens", bool, "true or false")
        try:
            if is_batch:
                self._check_batch(len(batch), "ids")
        except ApiError as error:
            return self._fail(error)
        return web.json_response([fake_model.decode(i, True if skip is None else skip) for i in batch])

    async def default_route(self, request: web.Request) -> web.StreamResponse:
        """POST / (and /invocations): the route TEI picks for the model at start."""
        return await self.default_handler()(request)

    def default_handler(self) -> _Handler:
        """TEI's choice for `POST /`: /rerank for a reranker; for an embedding model /similarity when
        TASK=sentence-similarity, /embed_sparse with SPLADE pooling, else /embed."""
        if self.config.kind == "reranker":
            return self.rerank
        if self.options.task == "sentence-similarity":
            return self.similarity
        return self.embed_sparse if self.splade else self.embed

    async def info(self, request: web.Request) -> web.StreamResponse:
        """GET /info in TEI's shape, plus an `emulator` object describing the modelled GPU."""
        c = self.config
        model_type: dict[str, Any]
        if c.kind == "reranker":
            model_type = {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}
        else:
            model_type = {"embedding": {"pooling": c.pooling}}
        return web.json_response({
            "model_id": c.model_id,
            "model_sha": self.model_sha,
            "model_dtype": c.dtype,
            "model_type": model_type,
            "max_concurrent_requests": c.max_concurrent_requests,
            "max_input_length": c.max_input_length,
            "max_batch_tokens": c.max_batch_tokens,
            "max_batch_requests": c.max_batch_requests,
            "max_client_batch_size": c.max_client_batch_size,
            "auto_truncate": c.auto_truncate,
            "tokenization_workers": 1,
            "version": VERSION,
            "sha": None,
            "docker_label": "emulator",
            "served_model_name": c.model_name,
            "emulator": {
                "tokens_per_second": self.engine.tokens_per_second,
                "batch_overhead_ms": self.engine.batch_overhead_seconds * 1000,
                "seconds_per_token_sq": self.engine.seconds_per_token_sq,
                "profile": c.profile,
                "dimensions": c.dimensions,
                "revision": c.revision,
                "prompts": dict(self.prompts) if self.prompts else None,
            },
        })

    async def health(self, request: web.Request) -> web.StreamResponse:
        """GET /health (also GET / and /ping): 200 once a running batch (if any) has finished; 503 when the backend
        is down."""
        if await self.engine.health():
            return web.Response(status=200)
        return web.json_response({"error": "unhealthy", "error_type": "Unhealthy"}, status=503)

    async def prometheus(self, request: web.Request) -> web.StreamResponse:
        """GET /metrics in the Prometheus text format, with TEI's names (counters without `_total`)."""
        return web.Response(text=render_exposition(self.registry), content_type="text/plain",
                            headers={"X-Content-Type-Options": "nosniff"}, charset="utf-8")


def _is_public(request: web.Request) -> bool:
    """TEI's routes outside the API key: GET /health, /metrics, / and /ping."""
    return request.method in ("GET", "HEAD") and request.path in PUBLIC_GET_PATHS


def _auth_middleware(api_key: str) -> Callable[[web.Request, _Handler], Awaitable[web.StreamResponse]]:
    expected = f"Bearer {api_key}".encode()

    @web.middleware
    async def require_api_key(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if _is_public(request):
            return await handler(request)
        if not hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected):
            return web.Response(status=401)  # TEI answers a bare 401, no body
        return await handler(request)

    return require_api_key


def build_app(api: TeiApi) -> web.Application:
    """The aiohttp application serving `api`: TEI's routes, its payload limit and optional API key."""
    middlewares = [_auth_middleware(api.config.api_key)] if api.config.api_key else []
    app = web.Application(client_max_size=api.config.payload_limit, middlewares=middlewares)
    for path, handler in (
        ("/embed", api.embed), ("/embed_all", api.embed_all), ("/embed_sparse", api.embed_sparse),
        ("/predict", api.predict), ("/rerank", api.rerank), ("/similarity", api.similarity),
        ("/tokenize", api.tokenize), ("/decode", api.decode),
        ("/embeddings", api.openai_embeddings), ("/v1/embeddings", api.openai_embeddings),
        ("/", api.default_route), ("/invocations", api.default_route),
    ):
        app.router.add_post(path, handler)
    app.router.add_get("/info", api.info)
    for path in ("/health", "/", "/ping"):
        app.router.add_get(path, api.health)
    app.router.add_get("/metrics", api.prometheus)
    return app


class EmulatorServer:
    """One emulated TEI process: waits out the loading time, then binds and serves until `stop`.

    Use as `async with EmulatorServer(config) as server: ... server.url ...` or call `start`/`stop`; `options`
    sets what TEI reads from the model or its environment (model sha, TASK, prompts).
    """

    def __init__(self, config: EmulatorConfig, options: ApiOptions | None = None) -> None:
        self.config = config
        self.metrics = TeiMetrics(config.max_input_length)
        self.engine = Engine(
            metrics=self.metrics,
            tokens_per_second=config.tokens_per_second,
            batch_overhead_seconds=config.batch_overhead_seconds,
            max_batch_tokens=config.max_batch_tokens,
            max_batch_requests=config.max_batch_requests,
            max_concurrent_requests=config.max_concurrent_requests,
            seconds_per_token_sq=config.seconds_per_token_sq,
        )
        self.api = TeiApi(config, self.engine, self.metrics, options)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        """The base URL, once listening."""
        if self.port is None:
            raise RuntimeError("the emulator is not listening yet")
        host = self.config.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    async def start(self) -> None:
        """Model the loading time (not listening), then start the engine and bind the port."""
        c = self.config
        seconds = c.startup_seconds()  # download (cold cache only) + load
        if seconds > 0:
            how = "from the local cache" if c.cache_is_warm() else f"after a {c.download_seconds:g} s download"
            log.info("Loading model %s %s (emulated: %g s before the port opens)", c.model_id, how, seconds)
            await asyncio.sleep(seconds)
        self.engine.start()
        runner = web.AppRunner(build_app(self.api), handle_signals=False, access_log=None,
                               shutdown_timeout=c.shutdown_timeout, handler_cancellation=True)
        await runner.setup()
        try:
            site = web.TCPSite(runner, c.host, c.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            await self.engine.stop()
            raise
        self._runner = runner
        self.port = _bound_port(runner, c.port)
        log.info("Loaded model %s; listening on %s (%s)", c.model_id, self.url, c.kind)

    async def stop(self) -> None:
        """Stop accepting connections, let requests in flight finish, then stop the engine."""
        if self._runner is not None:
            in_flight = self.config.max_concurrent_requests - self.engine.free_permits
            log.info("Stopped accepting connections on %s; waiting for %d inputs in flight", self.url, in_flight)
            await self._runner.cleanup()
            self._runner = None
        await self.engine.stop()
        log.info("Stopped emulator of %s", self.config.model_id)

    async def __aenter__(self) -> EmulatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def _bound_port(runner: web.AppRunner, requested: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return requested

