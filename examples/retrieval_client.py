#!/usr/bin/env python3
"""Two-stage retrieval against running tei-operator services: embed, search a vector index, rerank.

    python examples/retrieval_client.py \\
        --embed-url http://bge-m3.search.svc --rerank-url http://bge-reranker-v2-m3.search.svc \\
        --query "how does the autoscaler pick a replica count?"

What it does, and why each step is there:

1. Reads `/info` of both services. It checks that the embedding URL serves an embedding model and the rerank URL a
   reranker (a swapped pair would otherwise fail later with a less helpful 424), and takes
   `max_client_batch_size` from it: TEI refuses a request with more inputs than that (422), so the client splits
   its work into batches of at most that size instead of guessing.
2. Embeds the documents (a file with one document per line, or a small built-in sample) in those batches, up to
   `--concurrency` batches in flight at once (TEI batches inputs from concurrent requests together on the GPU;
   one request at a time leaves it idle between them), and keeps the unit vectors in memory: a tiny vector index.
   A real system would use a vector database; the calls to TEI are the same.
3. Embeds the query and takes the `--top-k` documents with the highest cosine similarity: cheap, recall-oriented.
4. Sends the query and those candidates to `/rerank`. A cross-encoder reads query and document together, so it
   orders the candidates better than cosine similarity, but costs one model pass per pair: that is why only the
   top candidates go to it. The final ranking is the reranker's order.

Instruction-tuned embedding models want an instruction on queries and none on documents: Qwen3-Embedding defines
the prompt `query` in its sentence-transformers configuration, and TEI prepends it when a request names it
(`prompt_name`). TEI's /info does not list a model's prompts, so the client knows the models that have them
(`PROMPTED_MODELS`) and sends `prompt_name` for those; `--query-prompt-name` / `--document-prompt-name` set or
(with `none`) switch off the names for any model.

TEI answers 429 ("Overloaded") when every concurrency permit is taken; that is back-pressure, not failure. The client
retries 429, 502, 503, 504 and refused connections (a pod restarting) with exponential backoff and jitter, and
honours a `Retry-After` header if a proxy in front of TEI sends one.

Each service has its own API key (`spec.engine.apiKeySecretRef` of each): `--embed-api-key` (TEI_EMBED_API_KEY)
and `--rerank-api-key` (TEI_RERANK_API_KEY), sent as `Authorization: Bearer ...`; `--api-key` (TEI_API_KEY) is
used for a service without its own. Needs Python 3.10+ and `requests` (`pip install requests`).
Exit status: 0 on success, 1 when a service refused or failed, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests

SAMPLE_DOCUMENTS: tuple[str, ...] = (
    "TEI batches inputs until the batch holds max-batch-tokens tokens, then runs one forward pass on the GPU.",
    "The autoscaler compares the queue per ready replica with targetQueueSize and scales up at once when it is above.",
    "A reranker scores each query and document pair with a cross-encoder and returns them sorted by score.",
    "Scale-down waits for a stabilization window, so a short lull does not remove replicas that are needed again.",
    "BGE-M3 produces 1024-dimensional dense vectors and handles inputs of up to 8192 tokens in over 100 languages.",
    "Cosine similarity of unit vectors is their dot product; a vector index returns the nearest documents to a query.",
    "When every concurrency permit is taken, TEI answers 429 Overloaded and the client should retry with backoff.",
    "Pods still downloading their model count as coming capacity, so the autoscaler does not overshoot.",
    "The operator never writes to a service's spec: what Git holds is what the cluster holds.",
    "Hopper GPUs such as the H100 run the hopper- image; Ada Lovelace GPUs such as the L4 run the 89- image.",
    "Each replica of a TEI service serves one model on one GPU; more throughput means more replicas.",
    "Flash attention is off on Turing GPUs, so a T4 serves long inputs more slowly than an A10.",
)

RETRY_STATUSES = frozenset({429, 502, 503, 504})

#: Models whose sentence-transformers configuration defines prompts, by model-id prefix: (prompt name for
#: queries, prompt name for documents). Qwen3-Embedding's "document" prompt is empty, so documents need none.
PROMPTED_MODELS: dict[str, tuple[str | None, str | None]] = {
    "Qwen/Qwen3-Embedding-": ("query", None),
}
AUTO = "auto"


class RetrievalError(Exception):
    """A service refused or failed a request; the message says which service, what it answered and what to do."""


class UsageError(ValueError):
    """An argument or input file the client cannot work with; the message names it."""


@dataclass(frozen=True)
class Backoff:
    """Retry policy: up to `retries` further attempts, sleeping `base * 2**attempt` seconds (capped at `cap`,
    with full jitter so that many clients refused at the same moment do not come back at the same moment)."""

    retries: int = 6
    base: float = 0.25
    cap: float = 8.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number `attempt` (0-based); a numeric Retry-After header wins."""
        if retry_after:
            try:
                return min(self.cap, max(0.0, float(retry_after)))
            except ValueError:
                pass  # an HTTP date: rare in front of TEI, fall back to our own schedule
        return random.uniform(0, min(self.cap, self.base * 2 ** attempt))


class TeiService:
    """One TEI endpoint (an EmbeddingService or RerankerService URL): JSON requests with auth and retries."""

    def __init__(self, url: str, *, option: str, api_key: str | None = None, timeout: float = 30.0,
                 backoff: Backoff = Backoff(), session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep, key_hint: str = "--api-key or TEI_API_KEY") -> None:
        self.url = url.rstrip("/")
        self.option = option  # the command-line option that named this URL, for error messages
        self.key_hint = key_hint  # where this service's API key comes from, for the 401 message
        self._lock = threading.Lock()  # batches are sent from several threads: the counters are shared
        self.timeout = timeout
        self.backoff = backoff
        self.session = session or requests.Session()
        self.sleep = sleep
        self.retried = 0  # attempts refused with 429 and friends and tried again: reported at the end
        self.answered: Counter[str] = Counter()  # successful requests per path
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """Send one request, retrying back-pressure and restarts; return the decoded JSON answer."""
        for attempt in range(self.backoff.retries + 1):
            try:
                response = self.session.request(method, self.url + path, json=body, timeout=self.timeout)
            except requests.ConnectionError as exc:
                if attempt == self.backoff.retries:
                    raise RetrievalError(f"{self.option} {self.url}: cannot connect ({exc.__class__.__name__}); "
                                         "is the service Ready (kubectl get tei)?") from exc
                self._count_retry()
                self.sleep(self.backoff.delay(attempt))
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.backoff.retries:
                self._count_retry()
                self.sleep(self.backoff.delay(attempt, response.headers.get("Retry-After")))
                continue
            if response.status_code >= 400:
                raise RetrievalError(self._describe_error(path, response))
            try:
                answer = response.json()
            except ValueError as exc:
                raise RetrievalError(f"{self.option} {self.url}{path}: answered {response.status_code} "
                                     f"with a body that is not JSON: {response.text[:200]!r}") from exc
            with self._lock:
                self.answered[path] += 1
            return answer
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _count_retry(self) -> None:
        with self._lock:
            self.retried += 1

    def _describe_error(self, path: str, response: requests.Response) -> str:
        where = f"{self.option} {self.url}{path}"
        if response.status_code == 401:
            return f"{where}: 401 Unauthorized: the service requires an API key (or another one); pass {self.key_hint}"
        try:
            error = response.json()
            detail = f"{error.get('error_type', 'Error')}: {error.get('error', error)}"
        except ValueError:
            detail = response.text[:300].strip()
        if response.status_code in RETRY_STATUSES:
            detail += f" (still refused after {self.backoff.retries} retries: add replicas or slow down)"
        return f"{where}: {response.status_code} {detail}"


@dataclass(frozen=True)
class ModelInfo:
    """What the client needs from GET /info."""

    model_id: str
    kind: str  # "embedding", "reranker" or "classifier"
    max_client_batch_size: int


def read_info(service: TeiService, expected_kind: str) -> ModelInfo:
    """GET /info, checked: the service must serve `expected_kind`, and its batch limit must be usable."""
    info = service.call("GET", "/info")
    model_type = info.get("model_type") or {}
    kind = next(iter(model_type), "unknown") if isinstance(model_type, dict) else "unknown"
    model_id = str(info.get("model_id", "?"))
    if kind != expected_kind:
        raise RetrievalError(f"{service.option} {service.url} serves a {kind} model ({model_id}); "
                             f"expected {'an' if expected_kind == 'embedding' else 'a'} {expected_kind} model")
    batch = info.get("max_client_batch_size")
    if not isinstance(batch, int) or batch < 1:
        raise RetrievalError(f"{service.option} {service.url}/info: max_client_batch_size is {batch!r}, "
                             "expected a positive integer")
    return ModelInfo(model_id, kind, batch)


def batches(items: Sequence[str], size: int) -> list[Sequence[str]]:
    """`items` cut into consecutive slices of at most `size` (TEI's max_client_batch_size)."""
    return [items[i:i + size] for i in range(0, len(items), size)]


def concurrently(calls: Sequence[Callable[[], Any]], concurrency: int) -> list[Any]:
    """Run `calls` with at most `concurrency` in flight; their results in order. The first failure is raised once
    every call has ended (calls not yet started when it happened are skipped)."""
    if concurrency <= 1 or len(calls) <= 1:
        return [call() for call in calls]
    failed = threading.Event()

    def guarded(call: Callable[[], Any]) -> Any:
        if failed.is_set():
            return None
        try:
            return call()
        except BaseException:
            failed.set()
            raise

    with ThreadPoolExecutor(max_workers=min(concurrency, len(calls)), thread_name_prefix="tei-batch") as pool:
        futures = [pool.submit(guarded, call) for call in calls]
    return [future.result() for future in futures]


def embed(service: TeiService, texts: Sequence[str], batch_size: int, *, prompt_name: str | None = None,
          concurrency: int = 1) -> list[list[float]]:
    """Unit vectors for `texts`, in order, sent in batches of at most `batch_size` inputs, `concurrency` batches
    at a time; `prompt_name` asks TEI to prepend that prompt of the model to each input."""
    def one(batch: Sequence[str]) -> list[list[float]]:
        body: dict[str, Any] = {"inputs": list(batch), "normalize": True, "truncate": True}
        if prompt_name:
            body["prompt_name"] = prompt_name
        answer = service.call("POST", "/embed", body)
        if not isinstance(answer, list) or len(answer) != len(batch):
            got = f"{len(answer)} vectors" if isinstance(answer, list) else type(answer).__name__
            raise RetrievalError(f"{service.option} {service.url}/embed: expected {len(batch)} vectors, got {got}")
        return answer

    chunks = batches(texts, batch_size)
    results = concurrently([lambda batch=batch: one(batch) for batch in chunks], concurrency)
    return [vector for answer in results for vector in answer]


def prompt_names(model_id: str, query: str | None, document: str | None) -> tuple[str | None, str | None]:
    """The prompt names to send for queries and documents: `auto` takes the model's own from PROMPTED_MODELS
    (none for other models), `none` or an empty string sends none, anything else is sent as given."""
    known = next((names for prefix, names in PROMPTED_MODELS.items() if model_id.startswith(prefix)), (None, None))

    def pick(value: str | None, default: str | None) -> str | None:
        if value is None or value == AUTO:
            return default
        return None if value.strip().lower() in ("", "none") else value

    return pick(query, known[0]), pick(document, known[1])


def unit(vector: Sequence[float]) -> list[float]:
    """`vector` scaled to length 1 (TEI already normalises; this keeps the index right for any input)."""
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0:
        raise UsageError("cannot index a zero vector")
    return [x / norm for x in vector]


class VectorIndex:
    """An in-memory, exact cosine-similarity index: enough for a few thousand documents, and easy to read."""

    def __init__(self) -> None:
        self.vectors: list[list[float]] = []

    def add(self, vectors: Sequence[Sequence[float]]) -> None:
        dims = {len(v) for v in vectors} | ({len(self.vectors[0])} if self.vectors else set())
        if len(dims) > 1:
            raise UsageError(f"vectors of different lengths {sorted(dims)} cannot share an index")
        self.vectors.extend(unit(v) for v in vectors)

    def search(self, query: Sequence[float], k: int) -> list[tuple[int, float]]:
        """The `k` most similar entries as (position, cosine similarity), most similar first."""
        q = unit(query)
        if self.vectors and len(q) != len(self.vectors[0]):
            raise UsageError(f"query vector has {len(q)} dimensions, the index {len(self.vectors[0])}")
        scored = [(i, sum(a * b for a, b in zip(q, v))) for i, v in enumerate(self.vectors)]
        scored.sort(key=lambda item: (-item[1], item[0]))
        return scored[:k]


def rerank(service: TeiService, query: str, texts: Sequence[str], batch_size: int, *,
           concurrency: int = 1) -> list[tuple[int, float]]:
    """(position in `texts`, relevance score) for every text, best first.

    More texts than the reranker's max_client_batch_size go in several calls (`concurrency` at a time); their
    scores can be merged because a cross-encoder scores each (query, text) pair on its own."""
    def one(start: int) -> list[tuple[int, float]]:
        chunk = list(texts[start:start + batch_size])
        answer = service.call("POST", "/rerank", {"query": query, "texts": chunk, "truncate": True})
        if not isinstance(answer, list) or sorted(r.get("index") for r in answer) != list(range(len(chunk))):
            raise RetrievalError(f"{service.option} {service.url}/rerank: expected one score per text "
                                 f"(indexes 0..{len(chunk) - 1}), got {str(answer)[:200]}")
        return [(start + r["index"], float(r["score"])) for r in answer]

    calls = [lambda start=start: one(start) for start in range(0, len(texts), batch_size)]
    scored = [item for part in concurrently(calls, concurrency) for item in part]
    scored.sort(key=lambda item: (-item[1], item[0]))
    return scored


@dataclass(frozen=True)
class Result:
    """One document of the final ranking."""

    rank: int
    document: int        # position in the document set
    rerank_score: float
    vector_rank: int     # where cosine similarity alone had put it (1 = most similar)
    vector_score: float
    text: str


@dataclass(frozen=True)
class Retrieval:
    """Everything one run found, for printing or for a program reading --json."""

    query: str
    embedding_model: str
    reranker_model: str
    query_prompt_name: str | None
    document_prompt_name: str | None
    documents: int
    embed_requests: int
    rerank_requests: int
    retries: int
    results: list[Result]


def retrieve(query: str, documents: Sequence[str], embedder: TeiService, reranker: TeiService,
             top_k: int, top_n: int, *, concurrency: int = 1, query_prompt_name: str | None = AUTO,
             document_prompt_name: str | None = AUTO) -> Retrieval:
    """The two stages: cosine top-k over the embedded documents, then the reranker's order of those k."""
    embed_info = read_info(embedder, "embedding")
    rerank_info = read_info(reranker, "reranker")
    query_prompt, document_prompt = prompt_names(embed_info.model_id, query_prompt_name, document_prompt_name)
    index = VectorIndex()
    index.add(embed(embedder, documents, embed_info.max_client_batch_size, prompt_name=document_prompt,
                    concurrency=concurrency))
    query_vector = embed(embedder, [query], embed_info.max_client_batch_size, prompt_name=query_prompt)[0]
    candidates = index.search(query_vector, top_k)
    ranked = rerank(reranker, query, [documents[i] for i, _ in candidates], rerank_info.max_client_batch_size,
                    concurrency=concurrency)
    results = [
        Result(rank=rank, document=candidates[pos][0], rerank_score=score, vector_rank=pos + 1,
               vector_score=candidates[pos][1], text=documents[candidates[pos][0]])
        for rank, (pos, score) in enumerate(ranked[:top_n], start=1)
    ]
    return Retrieval(query=query, embedding_model=embed_info.model_id, reranker_model=rerank_info.model_id,
                     query_prompt_name=query_prompt, document_prompt_name=document_prompt, documents=len(documents), embed_requests=embedder.answered["/embed"],
                     rerank_requests=reranker.answered["/rerank"],
                     retries=embedder.retried + reranker.retried, results=results)


def load_documents(path: str | None) -> list[str]:
    """One document per non-blank line of `path` (UTF-8), or the built-in sample when no path is given."""
    if path is None:
        return list(SAMPLE_DOCUMENTS)
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--documents {path}: cannot read it ({exc})") from exc
    documents = [line.strip() for line in lines if line.strip()]
    if not documents:
        raise UsageError(f"--documents {path}: no documents (expected one per non-blank line)")
    return documents


def format_table(retrieval: Retrieval) -> str:
    """The final ranking as a few readable lines."""
    lines = [
        f"Query: {retrieval.query}",
        f"Indexed {retrieval.documents} documents with {retrieval.embedding_model} "
        f"({retrieval.embed_requests} embed requests"
        + (f", queries with prompt_name={retrieval.query_prompt_name}" if retrieval.query_prompt_name else "")
        + (f", documents with prompt_name={retrieval.document_prompt_name}" if retrieval.document_prompt_name else "")
        + f"); reranked with {retrieval.reranker_model}"
        + (f"; {retrieval.retries} requests retried after back-pressure" if retrieval.retries else ""),
        "",
        f"{'rank':>4}  {'rerank':>7}  {'cosine (rank)':>13}  document",
    ]
    for r in retrieval.results:
        text = r.text if len(r.text) <= 90 else r.text[:87] + "..."
        lines.append(f"{r.rank:>4}  {r.rerank_score:>7.4f}  {r.vector_score:>7.4f} ({r.vector_rank:>2})  {text}")
    return "\n".join(lines)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _concurrency(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to 64, got {text!r}") from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to 64, got {value}")
    return value


def _retry_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 20, got {text!r}") from None
    if not 0 <= value <= 20:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 20, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retrieval_client.py",
        description="Two-stage retrieval: embed documents with an EmbeddingService, find the query's nearest "
        "documents by cosine similarity, and rerank those with a RerankerService.",
    )
    parser.add_argument("--embed-url", required=True, help="EmbeddingService endpoint, e.g. http://bge-m3.search.svc")
    parser.add_argument("--rerank-url", required=True,
                        help="RerankerService endpoint, e.g. http://bge-reranker-v2-m3.search.svc")
    parser.add_argument("--query", required=True, help="the question to retrieve documents for")
    parser.add_argument("--documents", metavar="FILE", help="UTF-8 text file, one document per line "
                        "(default: a built-in sample of 12 sentences about TEI and this operator)")
    parser.add_argument("--api-key", default=os.environ.get("TEI_API_KEY") or None,
                        help="sent as 'Authorization: Bearer KEY' to a service without its own key below "
                        "(default: $TEI_API_KEY)")
    parser.add_argument("--embed-api-key", default=os.environ.get("TEI_EMBED_API_KEY") or None,
                        help="API key of the EmbeddingService (default: $TEI_EMBED_API_KEY, else --api-key)")
    parser.add_argument("--rerank-api-key", default=os.environ.get("TEI_RERANK_API_KEY") or None,
                        help="API key of the RerankerService (default: $TEI_RERANK_API_KEY, else --api-key)")
    parser.add_argument("--concurrency", type=_concurrency, default=4,
                        help="batches in flight at once per service, 1 to 64 (default 4)")
    parser.add_argument("--query-prompt-name", default=AUTO, metavar="NAME",
                        help="prompt_name sent with the query: auto (the model's own, e.g. query for "
                        "Qwen3-Embedding; none for models without prompts), none, or a name (default auto)")
    parser.add_argument("--document-prompt-name", default=AUTO, metavar="NAME",
                        help="prompt_name sent with the documents: auto, none, or a name (default auto)")
    parser.add_argument("--top-k", type=_positive_int, default=8,
                        help="candidates taken from the vector search and sent to the reranker (default 8)")
    parser.add_argument("--top-n", type=_positive_int, default=5, help="results printed (default 5)")
    parser.add_argument("--timeout", type=_positive_float, default=30.0, help="seconds per HTTP request (default 30)")
    parser.add_argument("--retries", type=_retry_count, default=6,
                        help="retries of a request refused with 429/502/503/504 or a refused connection (default 6)")
    parser.add_argument("--backoff", type=_positive_float, default=0.25,
                        help="first retry delay in seconds, doubled on each retry up to 8 s (default 0.25)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    backoff = Backoff(retries=args.retries, base=args.backoff)
    try:
        documents = load_documents(args.documents)
        with requests.Session() as embed_session, requests.Session() as rerank_session:
            embedder = TeiService(args.embed_url, option="--embed-url", api_key=args.embed_api_key or args.api_key,
                                  timeout=args.timeout, backoff=backoff, session=embed_session,
                                  key_hint="--embed-api-key (or --api-key), or set TEI_EMBED_API_KEY")
            reranker = TeiService(args.rerank_url, option="--rerank-url", api_key=args.rerank_api_key or args.api_key,
                                  timeout=args.timeout, backoff=backoff, session=rerank_session,
                                  key_hint="--rerank-api-key (or --api-key), or set TEI_RERANK_API_KEY")
            for session in (embed_session, rerank_session):  # one pooled connection per batch in flight
                adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=args.concurrency)
                session.mount("http://", adapter)
                session.mount("https://", adapter)
            retrieval = retrieve(args.query, documents, embedder, reranker, args.top_k, args.top_n,
                                 concurrency=args.concurrency, query_prompt_name=args.query_prompt_name,
                                 document_prompt_name=args.document_prompt_name)
    except UsageError as exc:
        print(f"retrieval_client.py: error: {exc}", file=sys.stderr)
        return 2
    except RetrievalError as exc:
        print(f"retrieval_client.py: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(asdict(retrieval), indent=2) if args.json else format_table(retrieval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
