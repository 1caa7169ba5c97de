"""The emulator's stand-in for a model: token counts, fake embedding vectors and fake rerank scores.

Nothing here is a real model. What it keeps of one is what an operator and a client can observe:
- token counts grow with the text (whitespace words x 1.3, at least 1), so batch-token metrics and
  service times behave like TEI's;
- a vector is a deterministic function of the text (same text -> same vector, in every process and run),
  unit length unless `normalize` is false;
- a rerank score rises with the words the query and the text share, so results look plausible in a demo;
- a fake tokenizer cuts words into `count_tokens` pieces with stable ids, so /tokenize, /decode and token-id
  inputs agree with the token counts the batching uses; SPLADE vectors weigh words, so shared words share indices.

Vectors are cached as ready-made JSON, because serialising 1024 floats per input costs more CPU than
everything else the emulator does, and tests and demos run many emulators on a few shared cores.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from dataclasses import dataclass
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


def classifier_logit(text: str) -> float:
    """A raw score for a single text (a classifier's one label, or /predict of one text on a reranker): a
    deterministic value in [-3, 3) drawn from a hash of the text."""
    digest = hashlib.blake2b(b"tei-emulator:classify:" + text.encode(), digest_size=2).digest()
    return 6.0 * int.from_bytes(digest, "little") / 65536.0 - 3.0


# ---- a fake tokenizer --------------------------------------------------------------------------------------
# What /tokenize, /decode and token-id inputs need: words split into pieces so that a text has
# `count_tokens(text)` pieces (a word is cut in two where the 1.3 tokens per word need an extra piece), ids drawn
# from a hash of the piece in a vocabulary of XLM-RoBERTa's size (BGE-M3's tokenizer), and XLM-R's special tokens.

VOCABULARY_SIZE = 250_002
#: XLM-RoBERTa's special tokens and their ids.
SPECIAL_TOKENS = {0: "<s>", 1: "<pad>", 2: "</s>", 3: "<unk>"}
BOS_ID, EOS_ID = 0, 2
_FIRST_ORDINARY_ID = 5
_WORD = re.compile(r"\S+")
#: Pieces seen by this process, by id, so that /decode gives back what /tokenize gave out.
_PIECES: dict[int, tuple[str, bool]] = {}
_PIECES_LIMIT = 200_000


@dataclass(frozen=True)
class Token:
    """One token of `tokenize`: its id, text, whether it is a special token, and its character span in the input
    (None for special tokens). `continues` is true for the second piece of a word that was cut in two."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None
    continues: bool = False


def piece_id(piece: str, continues: bool) -> int:
    """The id of a piece: a hash into the ordinary part of the vocabulary, remembered for `decode`."""
    digest = hashlib.blake2b((("##" if continues else "") + piece).encode(), digest_size=8).digest()
    token_id = _FIRST_ORDINARY_ID + int.from_bytes(digest, "little") % (VOCABULARY_SIZE - _FIRST_ORDINARY_ID)
    if token_id not in _PIECES and len(_PIECES) < _PIECES_LIMIT:
        _PIECES[token_id] = (piece, continues)
    return token_id


def tokenize(text: str, add_special_tokens: bool = True) -> list[Token]:
    """`text` as the fake tokenizer cuts it: one piece per word, the words chosen evenly cut in two so that the
    number of ordinary pieces is `count_tokens(text)` (a one-character word is never cut, so a text of many of
    them gets a few less), framed by <s> and </s> when `add_special_tokens`."""
    words = [(m.group(), m.start()) for m in _WORD.finditer(text)]
    extra = max(0, count_tokens(text) - len(words)) if words else 0
    tokens: list[Token] = []
    if add_special_tokens:
        tokens.append(Token(BOS_ID, SPECIAL_TOKENS[BOS_ID], True, None, None))
    for index, (word, start) in enumerate(words):
        split = (index + 1) * extra // len(words) > index * extra // len(words) and len(word) > 1
        if split:
            cut = (len(word) + 1) // 2
            tokens.append(Token(piece_id(word[:cut], False), word[:cut], False, start, start + cut))
            tokens.append(Token(piece_id(word[cut:], True), word[cut:], False, start + cut, start + len(word), True))
        else:
            tokens.append(Token(piece_id(word, False), word, False, start, start + len(word)))
    if add_special_tokens:
        tokens.append(Token(EOS_ID, SPECIAL_TOKENS[EOS_ID], True, None, None))
    return tokens


def decode(ids: list[int], skip_special_tokens: bool = True) -> str:
    """The text of token ids: pieces this process gave out are joined back into words; an id it never gave out
    decodes to `[ID]` (there is no real vocabulary behind the ids)."""
    words: list[str] = []
    for token_id in ids:
        if token_id in SPECIAL_TOKENS:
            if not skip_special_tokens:
                words.append(SPECIAL_TOKENS[token_id])
            continue
        piece, continues = _PIECES.get(token_id, (f"[{token_id}]", False))
        if continues and words:
            words[-1] += piece
        else:
            words.append(piece)
    return " ".join(words)


def sparse_weights(text: str, vocabulary: int = VOCABULARY_SIZE) -> list[tuple[int, float]]:
    """A SPLADE-like sparse vector of `text`: one positive weight per distinct word (lower-cased, punctuation
    stripped; its index a hash of the word, so texts that share a word share its index), log(1 + tf x w) with w a
    fixed per-word importance in [0.5, 2.5), sorted by index."""
    counts: dict[int, int] = {}
    for word in text.split():
        word = word.strip(".,;:!?\"'()[]").lower()
        if not word:
            continue
        digest = hashlib.blake2b(b"tei-emulator:splade-term:" + word.encode(), digest_size=8).digest()
        index = _FIRST_ORDINARY_ID + int.from_bytes(digest, "little") % (vocabulary - _FIRST_ORDINARY_ID)
        counts[index] = counts.get(index, 0) + 1
    out = []
    for index, tf in sorted(counts.items()):
        digest = hashlib.blake2b(f"tei-emulator:splade:{index}".encode(), digest_size=2).digest()
        importance = 0.5 + 2.0 * int.from_bytes(digest, "little") / 65536.0
        out.append((index, round(math.log1p(tf * importance), 6)))
    return out


def token_vectors_json(text: str, dimensions: int, count: int) -> str:
    """`count` un-pooled token vectors (for /embed_all) as a JSON array of arrays: token i of `text` gets the
    vector of `text` with a per-position seed, so they are deterministic and differ from token to token."""
    rows = []
    for position in range(count):
        values = _digest_floats(f"tei-emulator:token:{position}:".encode() + text.encode(), dimensions)
        rows.append("[" + ",".join(f"{v:.7g}" for v in values) + "]")
    return "[" + ",".join(rows) + "]"


#: sentence-transformers prompts of models the examples use (their config_sentence_transformers.json), by
#: model-id prefix: a Qwen3-Embedding model expects `prompt_name: query` on queries and nothing on documents.
_KNOWN_PROMPTS: dict[str, dict[str, str]] = {
    "Qwen/Qwen3-Embedding-": {
        "query": "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:",
        "document": "",
    },
}


def known_prompts(model_id: str) -> dict[str, str] | None:
    """The prompts the model defines, for the models the emulator knows of; None for any other model."""
    for prefix, prompts in _KNOWN_PROMPTS.items():
        if model_id.startswith(prefix):
            return dict(prompts)
    return None


_SHA = re.compile(r"^[0-9a-f]{40}$")


def model_sha(model_id: str, revision: str | None) -> str:
    """The commit sha a TEI pod reports in /info: the revision itself when it is a full commit sha, else a fake
    40-hex sha derived from model id and revision (a real TEI reports the commit the branch or tag resolved to)."""
    if revision and _SHA.match(revision):
        return revision
    return hashlib.sha1(f"tei-emulator:{model_id}@{revision or 'main'}".encode()).hexdigest()
