"""`status.cost`: the fleet's $/hour from the GPU price setting, and $ per 1M tokens at the measured token rate.

The token rate comes from TEI's histogram of tokens per input, `te_request_input_length` (its `_sum` grows by the
tokens of every input TEI runs, after truncation: embeddings and rerank pairs alike). `TokenRateMeter` reads that
counter from each Ready pod every `interval` seconds in the background (never inside a reconcile), keeps the last
two readings per pod, and reports the sum of the pods' rates. It starts the next round itself (with the Ready pods
the last reconcile passed; the rounds of services due within a second of each other are one sweep), and `notify`
queues a status refresh only when a round moved the figure the status shows (4 significant digits): an idle fleet's
rate stays 0 and costs no reconcile. It samples only services whose GPU
type has a price.

`cost_status()` is pure: price, GPUs and token rate in, the `status.cost` object out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import kube as k
from ..autoscaling.sources import PodTarget
from ..autoscaling.sources.scrape import ApiProxyFetcher, KeepAliveFetcher, resolve_scrape_via
from .model_info import is_ready, tei_port

logger = logging.getLogger("tei_operator.controller")

TOKEN_COUNTER = "te_request_input_length_sum"
FORGET_AFTER_INTERVALS = 30
"""A service no reconcile asked about for this many sampling intervals is no longer sampled (the resync asks about
every service every few minutes at most; the reconcile of a deleted service forgets it at once)."""
BATCH_SECONDS = 1.0
"""Rounds that come due within this long of each other are read in one sweep of all their pods (at most a tenth of
the interval): at 1,000 services, a sweep per service's round was ~0.1 ms CPU per pod read."""


def _significant(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


def cost_status(*, gpu_type: str | None, gpus_per_replica: int, replicas: int, prices: Mapping[str, float],
                tokens_per_second: float | None) -> dict[str, Any] | None:
    """`status.cost`, or None when the service uses no GPU or its GPU type has no price.

    Every replica counts, Ready or not: a pod still loading its model holds its GPU all the same."""
    if gpus_per_replica <= 0:
        return None
    key = gpu_type or "default"
    price = prices.get(key)
    if price is None:
        return None
    gpus = max(0, replicas) * gpus_per_replica
    per_hour = gpus * float(price)
    cost: dict[str, Any] = {"gpuType": key, "dollarsPerGpuHour": float(price), "gpus": gpus,
                            "dollarsPerHour": _significant(per_hour)}
    if tokens_per_second is not None:
        cost["tokensPerSecond"] = _significant(tokens_per_second)
        if tokens_per_second > 0:
            cost["dollarsPerMillionTokens"] = _significant(per_hour / (tokens_per_second * 3600) * 1e6)
    return cost


# The counter's sample lines, found by one scan of the page (the scanning runs in C) instead of building every family
# and sample of a TEI page with prometheus_client's parser: ~100x less CPU per page, and the sampler reads every
# Ready pod of the fleet once a minute. NAME[{LABELS}] VALUE [TIMESTAMP] at the start of a line.
_TOKEN_COUNTER_RE = re.compile(r"^[ \t]*" + TOKEN_COUNTER + r"(?:\{[^}\n]*\})?[ \t]+(\S+)", re.M)


def token_counter(text: str) -> float:
    """The value of `te_request_input_length_sum` in a TEI /metrics page (0 before TEI's first input: the series
    appears only after its first observation), summed over its label sets (TEI has one). Raises ValueError when the
    value is not a number, like the Prometheus text format's own parser."""
    total = 0.0
    for match in _TOKEN_COUNTER_RE.finditer(text):
        total += float(match.group(1))
    return total


@dataclasses.dataclass
class _PodSamples:
    previous: tuple[float, float] | None = None  # (time, counter)
    latest: tuple[float, float] | None = None

    def add(self, t: float, value: float) -> None:
        self.previous, self.latest = self.latest, (t, value)

    def rate(self) -> float | None:
        if self.previous is None or self.latest is None:
            return None
        (t0, v0), (t1, v1) = self.previous, self.latest
        if t1 <= t0 or v1 < v0:  # a restarted TEI starts its counters again: wait for the next pair
            return None
        return (v1 - v0) / (t1 - t0)


class TokenRateMeter:
    """Samples each Ready pod's token counter every `interval` seconds, in the background."""

    def __init__(self, kube: k.KubeClient | None, *, scrape_via: str = "auto", timeout: float = 3.0,
                 interval: float = 60.0, concurrency: int = 8, cache_size: int = 8192,
                 clock: Callable[[], float] = time.monotonic,
                 fetch: Callable[[PodTarget], Any] | None = None) -> None:
        self.interval = interval
        self.clock = clock
        self.cache_size = cache_size
        via = resolve_scrape_via(scrape_via)
        if fetch is not None:
            self._fetch = fetch
        elif via == "podip" or kube is None:
            self._fetch = KeepAliveFetcher()
        else:
            self._fetch = ApiProxyFetcher(kube, timeout=timeout)
        self.timeout = timeout
        self.notify: Callable[[Any], None] | None = None
        self._semaphore = asyncio.Semaphore(concurrency)
        self._samples: dict[str, _PodSamples] = {}
        self._rounds: dict[Any, asyncio.Task[None]] = {}  # the batch each key's round is in
        self._batch: dict[Any, tuple[str, list[Mapping[str, Any]]]] = {}  # rounds due, read together soon
        self._batch_task: asyncio.Task[None] | None = None
        self.batch_seconds = min(BATCH_SECONDS, interval / 10)
        self._last_round: dict[Any, float] = {}
        self._timers: dict[Any, asyncio.TimerHandle] = {}
        self._pods: dict[Any, tuple[str, list[Mapping[str, Any]]]] = {}  # the Ready pods the last call passed
        self._shown: dict[Any, float | None] = {}  # what the last call returned: what the status shows
        self._asked: dict[Any, float] = {}  # when a reconcile last asked (the resync asks every service)
        self.reads = 0

    def _rate(self, ready: Sequence[Mapping[str, Any]]) -> float | None:
        rates = [r for p in ready if (s := self._samples.get(str((p.get("metadata") or {}).get("uid", ""))))
                 is not None and (r := s.rate()) is not None]
        return sum(rates) if rates else None

    def tokens_per_second(self, key: Any, namespace: str, pods: Sequence[Mapping[str, Any]]) -> float | None:
        """The Ready pods' summed token rate (None until one pod has two readings); starts a sampling round in
        the background when the last one is `interval` old (later rounds start on their own)."""
        ready = [p for p in pods if is_ready(p)]
        self._pods[key] = (namespace, ready)
        self._asked[key] = self.clock()
        now = self.clock()
        if ready and key not in self._rounds and now - self._last_round.get(key, float("-inf")) >= self.interval:
            self._start_round(key)
        rate = self._shown[key] = self._rate(ready)
        return rate

    def _start_round(self, key: Any) -> None:
        namespace, ready = self._pods.get(key, ("", []))
        if not ready or key in self._rounds:
            return
        if self.clock() - self._asked.get(key, float("-inf")) > FORGET_AFTER_INTERVALS * self.interval:
            self.forget(key)  # no reconcile asked for it for long (the service went away unnoticed): stop
            return
        self._last_round[key] = self.clock()
        # Rounds due within `batch_seconds` of each other are read together: one sweep of all their pods.
        self._batch[key] = (namespace, ready)
        if self._batch_task is None:
            self._batch_task = asyncio.create_task(self._batch_round(), name="token-rate-rounds")
        self._rounds[key] = self._batch_task

    async def _batch_round(self) -> None:
        await asyncio.sleep(self.batch_seconds)
        batch, self._batch, self._batch_task = self._batch, {}, None
        try:
            targets = [(namespace, pod) for namespace, pods in batch.values() for pod in pods]
            many = getattr(self._fetch, "fetch_many", None)
            if many is not None:  # the kept-alive fetcher: every pod of the batch at once
                await self._sample_many(targets, many)
            else:
                await asyncio.gather(*(self._sample(namespace, pod) for namespace, pod in targets))
        finally:
            for key in batch:
                self._rounds.pop(key, None)
        while len(self._samples) > self.cache_size:
            self._samples.pop(next(iter(self._samples)))
        loop = asyncio.get_running_loop()
        for key, (_, pods) in batch.items():
            if key in self._timers:
                self._timers.pop(key).cancel()
            if key in self._pods:  # not forgotten meanwhile
                self._timers[key] = loop.call_later(self.interval, self._start_round, key)
            if self._moved(self._shown.get(key), self._rate(pods)):
                self._notify(key)

    @staticmethod
    def _moved(shown: float | None, now: float | None) -> bool:
        if shown is None or now is None:
            return (shown is None) != (now is None)
        return _significant(shown) != _significant(now)

    @staticmethod
    def _target(namespace: str, pod: Mapping[str, Any]) -> PodTarget:
        meta = pod.get("metadata") or {}
        return PodTarget(namespace=namespace, name=str(meta.get("name", "")), uid=str(meta.get("uid", "")),
                         ip=(pod.get("status") or {}).get("podIP"), port=tei_port(pod))

    async def _sample_many(self, pods: Sequence[tuple[str, Mapping[str, Any]]], many: Any) -> None:
        targets = [self._target(namespace, pod) for namespace, pod in pods]
        self.reads += len(targets)
        for target, answer in zip(targets, await many(targets, self.timeout)):
            try:
                if isinstance(answer, Exception):
                    raise answer
                value = token_counter(answer)
            except Exception as exc:  # noqa: BLE001 - a missed reading only delays the rate
                logger.debug("Failed to read the token counter of pod %s/%s: %s", target.namespace, target.name,
                             exc or type(exc).__name__)
                continue
            self._samples.setdefault(target.uid, _PodSamples()).add(self.clock(), value)

    async def _sample(self, namespace: str, pod: Mapping[str, Any]) -> None:
        target = self._target(namespace, pod)
        try:
            async with self._semaphore:
                self.reads += 1
                text = await asyncio.wait_for(self._fetch(target), self.timeout)
            value = token_counter(text)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a missed reading only delays the rate
            logger.debug("Failed to read the token counter of pod %s/%s: %s", namespace, target.name, exc)
            return
        self._samples.setdefault(target.uid, _PodSamples()).add(self.clock(), value)

    def _notify(self, key: Any) -> None:
        if self.notify is not None:
            self.notify(key)

    def forget(self, key: Any) -> None:
        """Stop sampling a service (it is gone, or has no price any more)."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._last_round.pop(key, None)
        self._batch.pop(key, None)
        self._pods.pop(key, None)
        self._shown.pop(key, None)
        self._asked.pop(key, None)

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        tasks = set(self._rounds.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        close = getattr(self._fetch, "close", None)
        if close is not None:
            await close()


#: Throughputs practitioners quote for TEI (tokens/s per GPU at large batches; /work/shared/TEI.md), for the
#: comparison table in docs/cost.md: (model, GPU type, tokens/s).
QUOTED_THROUGHPUTS: tuple[tuple[str, str, float], ...] = (
    ("BAAI/bge-m3", "a100", 60_000),
    ("BAAI/bge-m3", "h100", 90_000),
    ("Qwen/Qwen3-Embedding-0.6B", "a100", 55_000),
    ("Qwen/Qwen3-Embedding-0.6B", "rtx4090", 20_000),
    ("Qwen/Qwen3-Embedding-8B", "a100", 12_500),
)


def quoted_cost_table(prices: Mapping[str, float], utilization: Sequence[float] = (1.0, 0.3)) -> str:
    """The markdown table of docs/cost.md: $ per 1M tokens of one replica at the quoted throughputs, fully busy
    and at lower utilizations, computed with `cost_status` (`python -m tei_operator.controller.cost`)."""
    head = "| model | GPU | $/GPU-hour | tokens/s (quoted) | " + " | ".join(
        f"$/1M tokens at {u:.0%} busy" for u in utilization) + " |"
    lines = [head, "|" + "---|" * (4 + len(utilization))]
    for model, gpu, rate in QUOTED_THROUGHPUTS:
        cells = []
        for u in utilization:
            cost = cost_status(gpu_type=gpu, gpus_per_replica=1, replicas=1, prices=prices,
                               tokens_per_second=rate * u)
            cells.append(f"{cost['dollarsPerMillionTokens']:.4f}" if cost else "–")
        lines.append(f"| {model} | {gpu} | {prices.get(gpu, float('nan')):.2f} | {rate:,.0f} | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    from ..settings import DEFAULT_GPU_PRICES

    print(quoted_cost_table(DEFAULT_GPU_PRICES))
