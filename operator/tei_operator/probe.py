"""`tei-operator bench URL`: a capacity probe of one live TEI replica (or the emulator).

It steps the number of concurrent clients (closed loop, `emulator.loadgen.run_closed_loop`) through 1, 2, 4, ...
for a bounded time each, measuring tokens/s and latency percentiles, and stops when the throughput grows by less
than `min_growth` (5%) over the best step so far, when a step sees 429s or errors, or at `max_concurrency`. Around
each step it reads the server's /metrics (`te_batch_next_tokens`) for the batch sizes the server formed, and /info
for its `max_batch_tokens`. From the measurements it recommends autoscaling settings (see docs/capacity-probe.md
for how each is derived). Tokens are counted with the server's own /tokenize (special tokens included, as TEI's
batches count them); a server without /tokenize falls back to 1.3 tokens per word, and the report says so.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from .emulator.loadgen import make_texts, percentile, run_closed_loop

#: Throughput must grow by more than this fraction over the best step so far for the probe to go on.
MIN_GROWTH = 0.05
#: The share of the peak a replica is asked to serve (the autoscaler's targetUtilization default).
TARGET_UTILIZATION = 0.7


class ProbeError(Exception):
    """The service could not be probed (unreachable, not TEI, refused every request)."""


@dataclass
class BatchCounters:
    """`te_batch_next_tokens` totals: sum of tokens, batches, empty batches (bucket le=1)."""

    tokens: float = 0.0
    batches: float = 0.0
    empty: float = 0.0

    def minus(self, other: "BatchCounters") -> "BatchCounters":
        return BatchCounters(self.tokens - other.tokens, self.batches - other.batches, self.empty - other.empty)

    @property
    def mean_tokens(self) -> float | None:
        """Mean tokens per non-empty batch (None: no batch)."""
        real = self.batches - self.empty
        return self.tokens / real if real > 0 else None


@dataclass
class Step:
    """One concurrency step's measurements (latencies in ms)."""

    concurrency: int
    seconds: float
    requests: int
    ok: int
    overloaded: int
    errors: int
    tokens_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_batch_tokens: float | None


@dataclass
class Recommendation:
    """A recommended value for one setting, and how it was derived from the measurements."""

    setting: str
    value: float | int | None
    derivation: str


@dataclass
class ProbeReport:
    url: str
    model_id: str | None
    max_batch_tokens: int | None
    inputs_per_request: int
    tokens_per_input: float
    tokens_counted_by: str
    steps: list[Step] = field(default_factory=list)
    stop_reason: str = ""
    peak_tokens_per_s: float = 0.0
    peak_concurrency: int = 0
    recommendations: list[Recommendation] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def recommended(self, setting: str) -> float | int | None:
        return next(r.value for r in self.recommendations if r.setting == setting)


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1000, 1)


async def _get(session: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    response = await session.get(url)
    await response.read()
    return response


async def read_info(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    try:
        response = await _get(session, f"{url}/info")
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise ProbeError(f"{url}/info: cannot connect: {exc}") from exc
    if response.status != 200:
        raise ProbeError(f"{url}/info answered {response.status}; is this a TEI service (and the API key right)?")
    info = await response.json()
    if not isinstance(info, dict):
        raise ProbeError(f"{url}/info did not answer a JSON object")
    return info


async def read_batch_counters(session: aiohttp.ClientSession, url: str) -> BatchCounters | None:
    """The server's `te_batch_next_tokens` totals, or None when /metrics is not reachable."""
    try:
        response = await _get(session, f"{url}/metrics")
        if response.status != 200:
            return None
        text = await response.text()
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        return None
    counters = BatchCounters()
    for family in text_string_to_metric_families(text):
        if family.name != "te_batch_next_tokens":
            continue
        for sample in family.samples:
            if sample.name.endswith("_sum"):
                counters.tokens += sample.value
            elif sample.name.endswith("_count"):
                counters.batches += sample.value
            elif sample.name.endswith("_bucket") and float(sample.labels.get("le", "nan")) == 1.0:
                counters.empty += sample.value
    return counters


async def count_tokens(session: aiohttp.ClientSession, url: str, texts: Sequence[str],
                       chunk: int = 32) -> tuple[float, str]:
    """Mean tokens per text by the server's /tokenize (in chunks of `chunk`, the server's max_client_batch_size);
    falls back to 1.3 tokens per word."""
    try:
        total = 0
        for start in range(0, len(texts), max(1, chunk)):
            async with session.post(f"{url}/tokenize", json={"inputs": list(texts[start:start + chunk])}) as response:
                if response.status != 200:
                    break
                total += sum(len(t) for t in await response.json())
        else:
            return total / len(texts), "server /tokenize"
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError, TypeError):
        pass
    words = sum(max(1, math.ceil(1.3 * len(t.split()))) for t in texts) / len(texts)
    return words, "estimate: 1.3 tokens per word (no /tokenize)"


def concurrency_steps(max_concurrency: int) -> list[int]:
    """1, 2, 4, ... up to and including `max_concurrency`."""
    steps, c = [], 1
    while c < max_concurrency:
        steps.append(c)
        c *= 2
    return steps + [max_concurrency]


async def run_probe(
    url: str,
    *,
    inputs_per_request: int = 8,
    words_per_input: int = 100,
    texts: Sequence[str] | None = None,
    step_seconds: float = 10.0,
    max_concurrency: int = 256,
    min_growth: float = MIN_GROWTH,
    api_key: str | None = None,
    timeout: float = 30.0,
    seed: int | None = 1,
) -> ProbeReport:
    """Probe `url` and return the measurements and recommendations (see the module docstring)."""
    if step_seconds <= 0 or not math.isfinite(step_seconds):
        raise ValueError(f"--step-seconds: must be a positive number of seconds, got {step_seconds}")
    if max_concurrency < 1:
        raise ValueError(f"--max-concurrency: must be at least 1, got {max_concurrency}")
    if inputs_per_request < 1 or words_per_input < 1:
        raise ValueError("--inputs-per-request and --words-per-input: must be at least 1")
    if not 0 <= min_growth < 1:
        raise ValueError(f"--min-growth: must be in [0, 1), got {min_growth}")
    url = url.rstrip("/")
    pool = list(texts) if texts is not None else make_texts(random.Random(seed), 64, words_per_input)
    if not pool:
        raise ValueError("--texts: the file holds no text (one text per line)")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        info = await read_info(session, url)
        tokens_per_input, counted_by = await count_tokens(session, url, pool,
                                                          int(info.get("max_client_batch_size") or 32))
        report = ProbeReport(url=url, model_id=info.get("model_id"), max_batch_tokens=info.get("max_batch_tokens"),
                             inputs_per_request=inputs_per_request, tokens_per_input=round(tokens_per_input, 1),
                             tokens_counted_by=counted_by)
        tokens_per_request = tokens_per_input * inputs_per_request
        for concurrency in concurrency_steps(max_concurrency):
            before = await read_batch_counters(session, url)
            summary = await run_closed_loop(url, concurrency, step_seconds, inputs_per_request=inputs_per_request,
                                            texts=pool, timeout=timeout, seed=seed, api_key=api_key)
            after = await read_batch_counters(session, url)
            batches = after.minus(before) if before is not None and after is not None else None
            step = Step(
                concurrency=concurrency, seconds=round(summary.duration, 2), requests=summary.sent, ok=summary.ok,
                overloaded=summary.overloaded, errors=summary.errors,
                tokens_per_s=round(summary.ok * tokens_per_request / summary.duration, 1),
                p50_ms=_ms(percentile(summary.latencies, 0.5)), p95_ms=_ms(percentile(summary.latencies, 0.95)),
                p99_ms=_ms(percentile(summary.latencies, 0.99)),
                mean_batch_tokens=None if batches is None or batches.mean_tokens is None
                else round(batches.mean_tokens, 1),
            )
            report.steps.append(step)
            if summary.ok == 0:
                raise ProbeError(f"no request succeeded at concurrency {concurrency}: {summary.statuses}")
            if summary.overloaded or summary.errors:
                report.stop_reason = (f"{summary.overloaded} 429s and {summary.errors} errors at concurrency "
                                      f"{concurrency} ({summary.statuses})")
                break
            if step.tokens_per_s <= report.peak_tokens_per_s * (1 + min_growth):
                report.stop_reason = (f"throughput grew by {min_growth:.0%} or less at concurrency {concurrency} "
                                      f"({step.tokens_per_s:.0f} vs best {report.peak_tokens_per_s:.0f} tokens/s)")
                if step.tokens_per_s > report.peak_tokens_per_s:
                    report.peak_tokens_per_s, report.peak_concurrency = step.tokens_per_s, concurrency
                break
            report.peak_tokens_per_s, report.peak_concurrency = step.tokens_per_s, concurrency
        else:
            report.stop_reason = f"reached --max-concurrency {max_concurrency} with throughput still growing"
    report.recommendations = recommend(report)
    return report


def recommend(report: ProbeReport) -> list[Recommendation]:
    """Autoscaling settings that follow from the steps (pure; docs/capacity-probe.md explains each)."""
    clean = [s for s in report.steps if not s.overloaded and not s.errors]
    peak = report.peak_tokens_per_s
    recs = [Recommendation("peakTokensPerSecond", round(peak),
                           f"highest tokens/s one replica sustained without 429s (concurrency "
                           f"{report.peak_concurrency}); the autoscaler learns the same peak at saturation")]
    target = TARGET_UTILIZATION * peak
    recs.append(Recommendation("targetUtilization", TARGET_UTILIZATION,
                               f"default kept: size for {target:.0f} tokens/s per replica = {TARGET_UTILIZATION} x "
                               f"peak {peak:.0f}"))
    reaching = next((s for s in clean if s.tokens_per_s >= target), None)
    if reaching is not None and reaching.p99_ms is not None:
        latency = int(math.ceil(reaching.p99_ms / 10.0) * 10)
        recs.append(Recommendation("latencyTargetMs", latency,
                                   f"p99 {reaching.p99_ms:.0f} ms at concurrency {reaching.concurrency}, the first "
                                   f"step at {TARGET_UTILIZATION:.0%} of peak or more ({reaching.tokens_per_s:.0f} "
                                   f"tokens/s), rounded up to 10 ms; a target below the p99 at concurrency 1 "
                                   f"({clean[0].p99_ms:.0f} ms) cannot be met by adding replicas"))
    else:
        recs.append(Recommendation("latencyTargetMs", None, "no clean step reached 70% of the peak"))
    max_tokens = report.max_batch_tokens
    full_batch_inputs = (max(1, int(max_tokens // report.tokens_per_input)) if max_tokens
                         else report.inputs_per_request * max(1, report.peak_concurrency))
    recs.append(Recommendation("targetQueueSize", full_batch_inputs,
                               f"one full batch of inputs: max_batch_tokens {max_tokens} / {report.tokens_per_input} "
                               f"tokens per input; a longer queue per replica waits more than one batch time"
                               if max_tokens else "inputs in flight at the peak (no max_batch_tokens in /info)"))
    at_peak = next((s for s in report.steps if s.concurrency == report.peak_concurrency), None)
    fill = (at_peak.mean_batch_tokens / max_tokens if at_peak and at_peak.mean_batch_tokens and max_tokens else None)
    if fill is not None:
        batch_fill = max(0.05, math.floor(0.9 * min(fill, 1.0) * 20) / 20)
        recs.append(Recommendation("targetBatchFill", batch_fill,
                                   f"0.9 x the fill at the peak ({at_peak.mean_batch_tokens:.0f} / {max_tokens} = "
                                   f"{fill:.2f}), rounded down to 0.05: the fill is the autoscaler's saturation mark, "
                                   f"so it must lie below what a saturated replica reaches with these requests"))
        if fill >= 0.9:
            advice = (f"batches at the peak fill {fill:.0%} of max_batch_tokens {max_tokens}: the cap is what limits "
                      f"them; raise engine.maxBatchTokens only if GPU memory allows and a probe at the larger value "
                      f"shows more tokens/s")
        else:
            advice = (f"keep {max_tokens}: batches at the peak used {fill:.0%} of it, so it does not limit this "
                      f"request size")
        recs.append(Recommendation("maxBatchTokens", max_tokens, advice))
    else:
        recs.append(Recommendation("targetBatchFill", None, "no te_batch_next_tokens in /metrics to measure the fill"))
        recs.append(Recommendation("maxBatchTokens", max_tokens, "from /info; batch sizes unknown (no /metrics)"))
    return recs


def format_report(report: ProbeReport) -> str:
    """The human-readable table and recommendations."""
    lines = [f"Probed {report.url} (model {report.model_id}, max_batch_tokens {report.max_batch_tokens}); "
             f"{report.inputs_per_request} inputs x {report.tokens_per_input} tokens per request "
             f"({report.tokens_counted_by})", ""]
    header = f"{'conc':>5} {'seconds':>7} {'ok':>6} {'429':>5} {'err':>5} {'tokens/s':>10} {'p50 ms':>8} " \
             f"{'p95 ms':>8} {'p99 ms':>8} {'batch tok':>9}"
    lines.append(header)

    def cell(value: float | None, width: int) -> str:
        return f"{'-':>{width}}" if value is None else f"{value:>{width}.0f}"

    for s in report.steps:
        lines.append(f"{s.concurrency:>5} {s.seconds:>7.1f} {s.ok:>6} {s.overloaded:>5} {s.errors:>5} "
                     f"{s.tokens_per_s:>10.0f} {cell(s.p50_ms, 8)} {cell(s.p95_ms, 8)} {cell(s.p99_ms, 8)} "
                     f"{cell(s.mean_batch_tokens, 9)}")
    lines += ["", f"Stopped: {report.stop_reason}", "", "Recommended (spec.autoscaling / spec.engine):"]
    for r in report.recommendations:
        lines.append(f"  {r.setting}: {'-' if r.value is None else r.value}  # {r.derivation}")
    return "\n".join(lines) + "\n"
