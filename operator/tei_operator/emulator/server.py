"""TEI's HTTP API over the modelled GPU: /embed, /v1/embeddings, /rerank, /info, /health, /metrics.

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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tei_operator.emulator import fake_model
from tei_operator.emulator.config import VERSION, EmulatorConfig
from tei_operator.emulator.engine import Engine, EngineStopped, InputTiming
from tei_operator.emulator.metrics import TeiMetrics, new_registry, render_exposition

log = logging.getLogger(__name__)

UNAUTHENTICATED_PATHS = frozenset({"/health", "/metrics"})
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


def _string_or_list(data: dict[str, Any], name: str) -> tuple[list[str], bool]:
    """The texts of field `name` (a string or a list of strings) and whether it was a list (`method=batch`)."""
    if name not in data:
        raise _bad_body(f"missing field `{name}`: expected a string or a list of strings")
    value = data[name]
    if isinstance(value, str):
        return [value], False
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value, True
    if isinstance(value, list) and value and all(isinstance(v, int) or isinstance(v, list) for v in value):
        raise _bad_body(f"{name}: token ids are not supported by the emulator; send strings")
    raise _bad_body(f"{name}: expected a string or a list of strings")


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


class TeiApi:
    """The request handlers of one emulator instance."""

    def __init__(self, config: EmulatorConfig, engine: Engine, metrics: TeiMetrics) -> None:
        self.config = config
        self.engine = engine
        self.metrics = metrics
        self.registry = new_registry(metrics)

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

    def _tokenize(self, texts: list[str], truncate: bool, family: str) -> tuple[list[int], list[float]]:
        """Token counts (truncated or refused beyond max_input_length) and the time taken per input."""
        limit = self.config.max_input_length
        counts: list[int] = []
        seconds: list[float] = []
        for text in texts:
            self.metrics.inc(f"te_{family}_count")
            started = time.perf_counter()
            tokens = fake_model.count_tokens(text)
            if tokens > limit:
                if not truncate:
                    raise ApiError(422, f"`inputs` must have less than {limit} tokens. Given: {tokens}",
                                   "Validation", "tokenization")
                tokens = limit
            self.metrics.observe("te_request_input_length", tokens)
            counts.append(tokens)
            seconds.append(time.perf_counter() - started)
        return counts, seconds

    def _check_batch(self, count: int, field: str) -> None:
        if count == 0:
            raise ApiError(400, f"`{field}` cannot be empty", "Empty", "validation")
        if count > self.config.max_client_batch_size:
            raise ApiError(422, f"batch size {count} > maximum allowed batch size {self.config.max_client_batch_size}",
                           "Validation", "batch_size")

    async def _infer(self, texts: list[str], characters: int, truncate: bool, family: str, method: str,
                     started: float, token_texts: list[str] | None = None) -> _Outcome:
        """Run `texts` through permits, tokenisation, queue and backend; record TEI's metrics on the way."""
        if not self.engine.try_acquire(len(texts)):
            raise ApiError(429, "Model is overloaded", "Overloaded", "overloaded")
        try:
            tokens, tokenization = self._tokenize(token_texts or texts, truncate, family)
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

    def _embedding_options(self, data: dict[str, Any]) -> tuple[bool, int | None]:
        """`truncate` (defaulting to --auto-truncate) and `dimensions` from the body, type-checked only."""
        truncate = _optional(data, "truncate", bool, "true or false")
        dimensions = _optional(data, "dimensions", int, "a positive integer")
        return (self.config.auto_truncate if truncate is None else truncate), dimensions

    def _check_dimensions(self, dimensions: int | None) -> None:
        if dimensions is None:
            return
        if dimensions <= 0:
            raise ApiError(422, "`dimensions` should be positive", "Validation", "validation")
        if dimensions > self.config.dimensions:
            raise ApiError(422, "`dimensions` should be smaller than the maximum embedding dimension.",
                           "Validation", "validation")

    def _require_kind(self, kind: str) -> None:
        if self.config.kind != kind:
            noun = "an embedding" if kind == "embedding" else "a re-ranker"
            raise ApiError(424, f"Model is not {noun} model", "Backend", "model_type")

    # ---- endpoints --------------------------------------------------------------------------------------------
    async def embed(self, request: web.Request) -> web.StreamResponse:
        """POST /embed {inputs, truncate?, normalize?, dimensions?, prompt_name?, truncation_direction?}."""
        started = time.perf_counter()
        data = await self._read_json(request)
        texts, is_batch = _string_or_list(data, "inputs")
        normalize = _optional(data, "normalize", bool, "true or false")
        _optional(data, "prompt_name", str, "a string")
        _truncation_direction(data)
        truncate, dimensions = self._embedding_options(data)
        method = "batch" if is_batch else "single"
        self.metrics.inc("te_request_count", {"method": method})
        try:
            self._require_kind("embedding")
            self._check_batch(len(texts), "inputs")
            self._check_dimensions(dimensions)
            outcome = await self._infer(texts, sum(len(t) for t in texts), truncate, "embed", method, started)
        except ApiError as error:
            return self._fail(error)
        normalize = True if normalize is None else normalize
        body = "[" + ",".join(
            fake_model.vector_json(t, self.config.dimensions, normalize, dimensions) for t in texts
        ) + "]"
        return web.Response(text=body, content_type="application/json", headers=outcome.headers())

    async def openai_embeddings(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/embeddings {input, model?, encoding_format?, dimensions?, user?} in OpenAI's shape."""
        started = time.perf_counter()
        data = await self._read_json(request)
        texts, is_batch = _string_or_list(data, "input")
        encoding = _optional(data, "encoding_format", str, "float or base64") or "float"
        if encoding not in ("float", "base64"):
            raise _bad_body(f"encoding_format: expected float or base64, got {encoding!r}")
        truncate, dimensions = self._embedding_options(data)
        method = "batch" if is_batch else "single"
        self.metrics.inc("te_request_count", {"method": method})
        try:
            self._require_kind("embedding")
            self._check_batch(len(texts), "input")
            self._check_dimensions(dimensions)
            outcome = await self._infer(texts, sum(len(t) for t in texts), truncate, "embed", method, started)
        except ApiError as error:
            if error.failure:
                self.metrics.inc("te_request_failure", {"err": error.failure})
            return web.json_response({"message": error.message, "code": error.status, "type": error.error_type},
                                     status=error.status)
        items = []
        for index, text in enumerate(texts):
            if encoding == "base64":
                vector = json.dumps(fake_model.vector_base64(text, self.config.dimensions, True, dimensions))
            else:
                vector = fake_model.vector_json(text, self.config.dimensions, True, dimensions)
            items.append(f'{{"object":"embedding","embedding":{vector},"index":{index}}}')
        usage = sum(outcome.tokens)
        body = (
            f'{{"object":"list","data":[{",".join(items)}],"model":{json.dumps(self.config.model_name)},'
            f'"usage":{{"prompt_tokens":{usage},"total_tokens":{usage}}}}}'
        )
        return web.Response(text=body, content_type="application/json", headers=outcome.headers())

    async def rerank(self, request: web.Request) -> web.StreamResponse:
        """POST /rerank {query, texts, truncate?, raw_scores?, return_text?} -> [{index, score, text?}] best first."""
        started = time.perf_counter()
        data = await self._read_json(request)
        query = data.get("query")
        if not isinstance(query, str):
            raise _bad_body("missing field `query`: expected a string" if query is None else "query: expected a string")
        texts = data.get("texts")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise _bad_body("texts: expected a list of strings")
        truncate = _optional(data, "truncate", bool, "true or false")
        raw_scores = bool(_optional(data, "raw_scores", bool, "true or false"))
        return_text = bool(_optional(data, "return_text", bool, "true or false"))
        _truncation_direction(data)
        try:
            if not texts:
                raise ApiError(400, "`texts` cannot be empty", "Empty", "validation")
            self._require_kind("reranker")
            self.metrics.inc("te_request_count", {"method": "batch"})
            self._check_batch(len(texts), "texts")
            characters = len(query) * len(texts) + sum(len(t) for t in texts)
            pairs = [f"{query} {t}" for t in texts]  # a cross-encoder reads query and text as one sequence
            outcome = await self._infer(texts, characters, self.config.auto_truncate if truncate is None else truncate,
                                        "predict", "batch", started, token_texts=pairs)
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
            "model_sha": c.revision,
            "model_dtype": c.dtype,
            "model_type": model_type,
            "prompts": None,
            "default_prompt_name": None,
            "default_prompt": None,
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
            "served_model_name": c.served_model_name,
            "emulator": {
                "tokens_per_second": self.engine.tokens_per_second,
                "batch_overhead_ms": self.engine.batch_overhead_seconds * 1000,
                "seconds_per_token_sq": self.engine.seconds_per_token_sq,
                "profile": c.profile,
                "dimensions": c.dimensions,
            },
        })

    async def health(self, request: web.Request) -> web.StreamResponse:
        """GET /health: 200 once a running batch (if any) has finished; 503 when the backend is down."""
        if await self.engine.health():
            return web.Response(status=200)
        return web.json_response({"error": "unhealthy", "error_type": "Unhealthy"}, status=503)

    async def prometheus(self, request: web.Request) -> web.StreamResponse:
        """GET /metrics in the Prometheus text format, with TEI's names (counters without `_total`)."""
        return web.Response(text=render_exposition(self.registry), content_type="text/plain",
                            headers={"X-Content-Type-Options": "nosniff"}, charset="utf-8")


def _auth_middleware(api_key: str) -> Callable[[web.Request, _Handler], Awaitable[web.StreamResponse]]:
    expected = f"Bearer {api_key}".encode()

    @web.middleware
    async def require_api_key(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.path in UNAUTHENTICATED_PATHS:
            return await handler(request)
        if not hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected):
            return web.Response(status=401, text="Unauthorized: send the header `Authorization: Bearer <api key>`")
        return await handler(request)

    return require_api_key


def build_app(api: TeiApi) -> web.Application:
    """The aiohttp application serving `api`, with TEI's payload limit and optional API key."""
    middlewares = [_auth_middleware(api.config.api_key)] if api.config.api_key else []
    app = web.Application(client_max_size=api.config.payload_limit, middlewares=middlewares)
    app.router.add_post("/embed", api.embed)
    app.router.add_post("/v1/embeddings", api.openai_embeddings)
    app.router.add_post("/rerank", api.rerank)
    app.router.add_get("/info", api.info)
    app.router.add_get("/health", api.health)
    app.router.add_get("/metrics", api.prometheus)
    return app


class EmulatorServer:
    """One emulated TEI process: waits out the loading time, then binds and serves until `stop`.

    Use as `async with EmulatorServer(config) as server: ... server.url ...` or call `start`/`stop`.
    """

    def __init__(self, config: EmulatorConfig) -> None:
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
        self.api = TeiApi(config, self.engine, self.metrics)
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
        if c.load_seconds > 0:
            log.info("Loading model %s (emulated: %g s before the port opens)", c.model_id, c.load_seconds)
            await asyncio.sleep(c.load_seconds)
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

