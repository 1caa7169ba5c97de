"""Request classes of the autoscaling benchmark, each with its own SLO (issue #9, item 2).

Class ids are part of the simulator interface (`OpenArrivals.cls`) and never change:

| id | class    | request                                   | judged by                                            |
|----|----------|-------------------------------------------|------------------------------------------------------|
| 0  | query    | 1 input of 8-64 tokens                    | p99 <= 100 ms end to end; a 429 or 503 is a miss     |
| 1  | document | 1-32 inputs x 128-512 tokens              | p99 <= 2 s; a 429 or 503 is a miss                   |
| 2  | bulk     | closed-loop workers, maxClientBatchSize   | goodput, completion by a deadline, $ per 1M tokens   |
|    |          | inputs x 128-512 tokens, 429 retried      | against the physical limit (every GPU busy)          |
| 3  | rerank   | query + 20-100 passages, one input a pair | p99 <= 2 x (largest request's pairs / pairs per s)   |

Sizes are sampled here (vectorised, from a numpy Generator), so arrivals depend only on the trace and the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

QUERY, DOCUMENT, BULK, RERANK = 0, 1, 2, 3
NAMES = {QUERY: "query", DOCUMENT: "document", BULK: "bulk", RERANK: "rerank"}
IDS = {v: k for k, v in NAMES.items()}
OPEN_CLASSES = (QUERY, DOCUMENT, RERANK)
"""Classes that arrive open-loop (a rate); bulk is closed-loop (workers)."""

# A 429 (overloaded), a 503 (no Ready pod / draining) and a 424 (backend error) are misses for every SLO class.
OK_STATUS = 200


@dataclass(frozen=True)
class RequestClass:
    """One class: how its requests look and what its SLO is."""

    id: int
    name: str
    inputs_min: int
    inputs_max: int
    tokens_min: int
    tokens_max: int
    slo_seconds: float | None
    """p99 end-to-end latency target; None for bulk (judged by goodput and cost instead)."""
    slo_quantile: float = 0.99

    def mean_inputs(self) -> float:
        return (self.inputs_min + self.inputs_max) / 2

    def mean_tokens_per_input(self) -> float:
        return (self.tokens_min + self.tokens_max) / 2

    def mean_tokens(self) -> float:
        """Mean tokens per request (sizes are uniform on their ranges)."""
        return self.mean_inputs() * self.mean_tokens_per_input()

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs per request (int64[n]) and tokens of every input (int32[sum of inputs]), request-major."""
        inputs = rng.integers(self.inputs_min, self.inputs_max + 1, n, dtype=np.int64)
        tokens = rng.integers(self.tokens_min, self.tokens_max + 1, int(inputs.sum()), dtype=np.int64)
        return inputs, tokens.astype(np.int32)


QUERY_CLASS = RequestClass(QUERY, "query", 1, 1, 8, 64, 0.100)
DOCUMENT_CLASS = RequestClass(DOCUMENT, "document", 1, 32, 128, 512, 2.0)
BULK_CLASS = RequestClass(BULK, "bulk", 32, 32, 128, 512, None)


@dataclass(frozen=True)
class RerankClass(RequestClass):
    """A rerank request: one query of 8-64 tokens scored against 20-100 passages of 64-256 tokens. Each
    (query, passage) pair is one input of query + passage tokens, as TEI's /rerank tokenizes them."""

    query_tokens_min: int = 8
    query_tokens_max: int = 64

    def mean_tokens_per_input(self) -> float:
        return (self.query_tokens_min + self.query_tokens_max) / 2 + (self.tokens_min + self.tokens_max) / 2

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        pairs = rng.integers(self.inputs_min, self.inputs_max + 1, n, dtype=np.int64)
        q = rng.integers(self.query_tokens_min, self.query_tokens_max + 1, n, dtype=np.int64)
        passages = rng.integers(self.tokens_min, self.tokens_max + 1, int(pairs.sum()), dtype=np.int64)
        return pairs, (np.repeat(q, pairs) + passages).astype(np.int32)


def rerank_slo(pairs_per_second: float, max_pairs: int = 100, factor: float = 2.0) -> float:
    """The rerank p99 target derived from the reranker's throughput: `factor` x the time the largest request
    (max_pairs pairs) takes on an idle replica at its measured pairs/s, rounded up to 10 ms."""
    if pairs_per_second <= 0:
        raise ValueError(f"pairs_per_second: must be > 0, got {pairs_per_second}")
    return math.ceil(factor * max_pairs / pairs_per_second * 100) / 100


RERANK_PAIRS_PER_SECOND = 800.0
"""bge-reranker-v2-m3 on an A100 at batch 64 (shared/TEI.md); the reranker profile's figure replaces it when known."""
RERANK_CLASS = RerankClass(RERANK, "rerank", 20, 100, 64, 256, rerank_slo(RERANK_PAIRS_PER_SECOND))

CLASSES: dict[int, RequestClass] = {c.id: c for c in (QUERY_CLASS, DOCUMENT_CLASS, BULK_CLASS, RERANK_CLASS)}


def slo_of(cls_id: int) -> float | None:
    return CLASSES[cls_id].slo_seconds
