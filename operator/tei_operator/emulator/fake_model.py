"""The emulator's stand-in for a model: token counts, fake embedding vectors and fake rerank scores.

Nothing here is a real model. What it keeps of one is what an operator and a client can observe:
- token counts grow with the text (whitespace words x 1.3, at least 1), so batch-token metrics and
  service times behave like TEI's;
- a vector is a deterministic function of the text (same text -> same vector, in every process and run),
  unit length unless `normalize` is false;
- a rerank score rises with the words the query and the text share, so results look plausible in a demo.

Vectors are cached as ready-made JSON, because serialising 1024 floats per input costs more CPU than
everything else the emulator does, and tests and demos run many emulators on a few shared cores.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from functools import lru_cache

TOKENS_PER_WORD = 1.3


def count_tokens(text: str) -> int:
    """Approximate token count of `text`: whitespace-separated words x 1.3, rounded up, at least 1."""
    return max(1, math.ceil(len(text.split()) * TOKENS_PER_WORD))


def _digest_floats(seed: bytes, count: int) -> list[float]:
    """`count` deterministic floats in [-1, 1) drawn from SHAKE-256 of `seed`."""
    raw = hashlib.shake_256(seed).digest(2 * count)
    return [(v - 32768) / 32768.0 for v in struct.unpack(f"<{count}H", raw)]


@lru_cache(maxsize=2048)
def embedding_vector(text: str, dimensions: int) -> tuple[float, ...]:
    """The unit vector of `dimensions` floats the emulator returns for `text` (hash-seeded, so deterministic)."""
    values = _digest_floats(b"tei-emulator:embed:" + text.encode(), dimensions)
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return tuple(v / norm for v in values)


def _raw_scale(text: str) -> float:
    """The norm of an un-normalised vector: a deterministic value in [5, 15), like a pooled hidden state's."""
    digest = hashlib.blake2b(b"tei-emulator:norm:" + text.encode(), digest_size=2).digest()
    return 5.0 + 10.0 * int.from_bytes(digest, "little") / 65536.0


def output_vector(text: str, dimensions: int, normalize: bool = True, truncate_to: int | None = None) -> list[float]:
    """The vector for one input as the API returns it: optionally cut to `truncate_to` dimensions (Matryoshka)
    and re-normalised, or scaled to a raw norm when `normalize` is false."""
    vector = list(embedding_vector(text, dimensions))
    if truncate_to is not None:
        vector = vector[:truncate_to]
    if normalize:
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        return [v / norm for v in vector]
    scale = _raw_scale(text)
    return [v * scale for v in vector]


@lru_cache(maxsize=2048)
def vector_json(text: str, dimensions: int, normalize: bool = True, truncate_to: int | None = None) -> str:
    """`output_vector` serialised as a JSON array, cached (float32-like precision, as TEI returns f32)."""
    return "[" + ",".join(f"{v:.7g}" for v in output_vector(text, dimensions, normalize, truncate_to)) + "]"


def vector_base64(text: str, dimensions: int, normalize: bool = True, truncate_to: int | None = None) -> str:
    """`output_vector` as little-endian float32 bytes in base64 (OpenAI's `encoding_format: base64`)."""
    vector = output_vector(text, dimensions, normalize, truncate_to)
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _words(text: str) -> set[str]:
    return {w.strip(".,;:!?\"'()[]").lower() for w in text.split()} - {""}


def rerank_logit(query: str, text: str) -> float:
    """A raw relevance score: from -2 (no shared words) to +2 (all query words in the text), plus a small
    deterministic jitter in [-0.25, 0.25) so that ties are broken the same way every time."""
    query_words = _words(query)
    overlap = len(query_words & _words(text)) / len(query_words) if query_words else 0.0
    digest = hashlib.blake2b(f"tei-emulator:rerank:{query}\x00{text}".encode(), digest_size=2).digest()
    jitter = (int.from_bytes(digest, "little") / 65536.0 - 0.5) / 2.0
    return 4.0 * overlap - 2.0 + jitter


def sigmoid(x: float) -> float:
    """The logistic function TEI applies to a single-label classifier's logit unless `raw_scores` is set."""
    return 1.0 / (1.0 + math.exp(-x))
