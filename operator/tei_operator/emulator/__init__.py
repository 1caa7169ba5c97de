"""An emulator of Hugging Face Text Embeddings Inference (TEI), for tests and demos. It is not a model server.

It speaks TEI's HTTP API (every route of TEI 1.9's router: `/embed`, `/embed_all`, `/embed_sparse`, `/similarity`,
`/rerank`, `/predict`, `/tokenize`, `/decode`, `/v1/embeddings`, `POST /`, `/info`, `/health`, `/metrics`) closely
enough for this operator and for a client, and exports TEI's Prometheus metrics under TEI's exact names.

What it models: one GPU running one batch at a time, fed by TEI's FIFO queue and batching rules
(`--max-batch-tokens`, `--max-batch-requests`), a batch of T tokens taking
`--batch-overhead-ms + T / --tokens-per-second`; TEI's per-input concurrency permits (429 Overloaded);
its validation errors; a model-loading time during which the port is not bound; graceful SIGTERM.

What it does not: there is no model. Token counts are approximate (whitespace words x 1.3), vectors are
deterministic hash-seeded unit vectors with no meaning, rerank scores come from word overlap, and the
timing model ignores padding, sequence length effects and GPU memory. See docs/emulator.md.

Run it with `python -m tei_operator.emulator --port 8080 --model-id BAAI/bge-m3`; drive it with
`python -m tei_operator.emulator.loadgen --url http://127.0.0.1:8080 --rate 50 --duration 30`.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until SIGTERM/SIGINT; returns the process exit code (2 on a bad flag or variable)."""
    from tei_operator.emulator.cli import run

    return run(argv)
