"""An open-loop load generator for TEI (or the emulator): Poisson arrivals of /embed or /rerank requests.

Open loop means requests are sent on schedule whether or not earlier ones have been answered, the way
independent users behave; a closed loop (wait for an answer, then send) would hide overload by slowing
down with the server. Two bounds keep it safe to run anywhere: it stops sending after `duration` and then
waits at most `timeout` for answers, and it never has more than `max_in_flight` requests open (a request
due while at the bound is not sent and is counted as `skipped`).

The rate may be a function of elapsed seconds (a step, a ramp) and the targets a function returning the
current URLs (pods come and go), so tests and `make demo` can drive an autoscaler with it:

    summary = await run_load(lambda: current_urls(), lambda t: 20 if t < 10 else 200, duration=30)

As a command: `python -m tei_operator.emulator.loadgen --url http://127.0.0.1:8080 --rate 50 --duration 30`,
printing one line per second and a summary at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import aiohttp

Endpoint = Literal["embed", "rerank"]
Pick = Literal["round-robin", "random"]
UrlSource = str | Sequence[str] | Callable[[], Sequence[str]]
RateSource = float | Callable[[float], float]

#: Longest stretch the arrival process goes without re-reading the rate, so a step in `rate(t)` takes effect
#: within this many seconds. Re-drawing the next gap at each such boundary is exact for a Poisson process
#: (it is memoryless), so the arrivals stay Poisson with a piecewise-constant rate.
RATE_STEP_SECONDS = 0.1

_VOCABULARY = (
    "embedding vector search query document passage retrieval ranking model token batch queue latency "
    "throughput kubernetes operator cluster node replica scale gpu memory inference request response "
    "semantic similarity dense sparse index shard cache warm cold load metric prometheus alert budget"
).split()


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (`fraction` in (0, 1]) of `values`; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


@dataclass
class WindowStats:
    """What happened in one second of a run (answers are counted in the second they arrived)."""

    second: int
    sent: int = 0
    ok: int = 0
    overloaded: int = 0
    errors: int = 0
    skipped: int = 0
    in_flight: int = 0
    latencies: list[float] = field(default_factory=list, repr=False)

    def line(self) -> str:
        """A one-line report: `t=3s sent=50 ok=48 429=2 err=0 skip=0 inflight=4 p50=12.1ms p99=40.3ms`."""
        return (
            f"t={self.second}s sent={self.sent} ok={self.ok} 429={self.overloaded} err={self.errors} "
            f"skip={self.skipped} inflight={self.in_flight} p50={_ms(percentile(self.latencies, 0.5))} "
            f"p99={_ms(percentile(self.latencies, 0.99))}"
        )


@dataclass
class LoadSummary:
    """The totals of a run. `ok` are 2xx answers, `overloaded` 429s, `errors` any other status or a failed
    connection or timeout, `skipped` requests not sent (at `max_in_flight`, or no URL to send to).
    Latencies (seconds) are those of `ok` answers."""

    duration: float = 0.0
    sent: int = 0
    ok: int = 0
    overloaded: int = 0
    errors: int = 0
    skipped: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    per_url: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list, repr=False)
    requests: list[tuple[float, float | None, str]] = field(default_factory=list, repr=False)
    """Per sent request: (seconds from the start when it was sent, latency or None, status) - what a simulator
    replaying this run needs (see tests/unit/test_calibration.py)."""

    @property
    def answered(self) -> int:
        """Requests that got a result of any kind (ok, 429 or error)."""
        return self.ok + self.overloaded + self.errors

    @property
    def p50(self) -> float:
        """Median latency of ok answers, seconds."""
        return percentile(self.latencies, 0.5)

    @property
    def p99(self) -> float:
        """99th-percentile latency of ok answers, seconds."""
        return percentile(self.latencies, 0.99)

    def line(self) -> str:
        """A one-line summary of the whole run."""
        rate = self.sent / self.duration if self.duration else 0.0
        return (
            f"total {self.duration:.1f}s sent={self.sent} ({rate:.1f}/s) ok={self.ok} 429={self.overloaded} "
            f"err={self.errors} skip={self.skipped} p50={_ms(self.p50)} p99={_ms(self.p99)} statuses={self.statuses}"
        )

    def to_dict(self) -> dict[str, object]:
        """The summary without the raw latencies, plus p50/p99 in seconds (for `--json`)."""
        data = asdict(self)
        data.pop("latencies")
        data.pop("requests")
        data["p50"] = None if math.isnan(self.p50) else self.p50
        data["p99"] = None if math.isnan(self.p99) else self.p99
        return data


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.1f}ms"


def parse_rate_schedule(text: str) -> Callable[[float], float]:
    """Parse `50` (constant) or `50,200@10,20@25` (50/s from the start, 200/s from t=10 s, 20/s from t=25 s).

    Raises ValueError naming the bad part.
    """
    steps: list[tuple[float, float]] = []
    for index, part in enumerate(p.strip() for p in text.split(",")):
        rate_text, _, at_text = part.partition("@")
        try:
            rate = float(rate_text)
            at = float(at_text) if at_text else 0.0
        except ValueError as exc:
            raise ValueError(f"--rate: cannot read {part!r}; expected RATE or RATE@SECONDS, e.g. 50,200@10") from exc
        if index > 0 and not at_text:
            raise ValueError(f"--rate: step {part!r} needs @SECONDS (only the first step starts at 0)")
        if rate < 0 or not math.isfinite(rate) or at < 0:
            raise ValueError(f"--rate: {part!r}: rate and start time must be finite and not negative")
        if steps and at <= steps[-1][0]:
            raise ValueError(f"--rate: step {part!r} must start after the previous step ({steps[-1][0]:g} s)")
        steps.append((at, rate))
    if not steps or steps[0][0] != 0:
        steps.insert(0, (0.0, 0.0))

    def rate_at(elapsed: float) -> float:
        current = steps[0][1]
        for at, rate in steps:
            if elapsed >= at:
                current = rate
        return current

    return rate_at


def make_texts(rng: random.Random, count: int, words: int) -> list[str]:
    """`count` pseudo-sentences of `words` words each, drawn from a small fixed vocabulary."""
    return [" ".join(rng.choice(_VOCABULARY) for _ in range(words)) for _ in range(count)]


class _Targets:
    """Picks the URL for the next request from a fixed list or from a callable read at each request."""

    def __init__(self, urls: UrlSource, pick: Pick, rng: random.Random) -> None:
        if isinstance(urls, str):
            fixed = [u.strip().rstrip("/") for u in urls.split(",") if u.strip()]
            self._source: Callable[[], Sequence[str]] = lambda: fixed
        elif callable(urls):
            self._source = urls
        else:
            fixed_list = [u.rstrip("/") for u in urls]
            self._source = lambda: fixed_list
        if pick not in ("round-robin", "random"):
            raise ValueError(f"pick: must be round-robin or random, got {pick!r}")
        self._pick = pick
        self._rng = rng
        self._counter = itertools.count()

    def next(self) -> str | None:
        urls = list(self._source())
        if not urls:
            return None
        if self._pick == "random":
            return self._rng.choice(urls).rstrip("/")
        return urls[next(self._counter) % len(urls)].rstrip("/")


async def run_load(
    urls: UrlSource,
    rate: RateSource,
    duration: float,
    *,
    endpoint: Endpoint = "embed",
    inputs_per_request: int = 8,
    words_per_input: int = 100,
    max_in_flight: int = 2000,
    timeout: float = 30.0,
    pick: Pick = "round-robin",
    seed: int | None = None,
    api_key: str | None = None,
    on_second: Callable[[WindowStats], None] | None = None,
) -> LoadSummary:
    """Send requests at Poisson rate `rate` (per second, or a function of elapsed seconds) for `duration`
    seconds to `urls` (comma-separated string, list, or a callable returning the current list), then wait
    up to `timeout` for the answers still open. `on_second` gets each second's `WindowStats`.
    """
    if duration <= 0 or not math.isfinite(duration):
        raise ValueError(f"duration: must be a positive number of seconds, got {duration}")
    for name, value in (("inputs_per_request", inputs_per_request), ("words_per_input", words_per_input),
                        ("max_in_flight", max_in_flight)):
        if value < 1:
            raise ValueError(f"{name}: must be at least 1, got {value}")
    if timeout <= 0:
        raise ValueError(f"timeout: must be positive, got {timeout}")
    if endpoint not in ("embed", "rerank"):
        raise ValueError(f"endpoint: must be embed or rerank, got {endpoint!r}")
    rate_at: Callable[[float], float] = rate if callable(rate) else (lambda _t, r=float(rate): r)

    rng = random.Random(seed)
    targets = _Targets(urls, pick, rng)
    pool = make_texts(rng, 64, words_per_input)
    query = " ".join(rng.choice(_VOCABULARY) for _ in range(8))
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    summary = LoadSummary()
    started = time.perf_counter()
    window = WindowStats(second=0)
    in_flight: set[asyncio.Task[None]] = set()

    def elapsed() -> float:
        return time.perf_counter() - started

    def body() -> dict[str, object]:
        texts = [rng.choice(pool) for _ in range(inputs_per_request)]
        if endpoint == "rerank":
            return {"query": query, "texts": texts}
        return {"inputs": texts}

    def record(status: str, latency: float | None) -> None:
        summary.statuses[status] = summary.statuses.get(status, 0) + 1
        if status.isdigit() and 200 <= int(status) < 300:
            summary.ok += 1
            window.ok += 1
            if latency is not None:
                summary.latencies.append(latency)
                window.latencies.append(latency)
        elif status == "429":
            summary.overloaded += 1
            window.overloaded += 1
        else:
            summary.errors += 1
            window.errors += 1

    async def send(session: aiohttp.ClientSession, url: str, payload: dict[str, object]) -> None:
        t0 = time.perf_counter()
        try:
            async with session.post(f"{url}/{endpoint}", json=payload, headers=headers) as response:
                await response.read()
                latency = time.perf_counter() - t0
                record(str(response.status), latency)
                summary.requests.append((t0 - started, latency, str(response.status)))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            record(type(exc).__name__, None)
            summary.requests.append((t0 - started, None, type(exc).__name__))

    async def report() -> None:
        nonlocal window
        while True:
            next_tick = window.second + 1
            await asyncio.sleep(max(0.0, next_tick - elapsed()))
            window.in_flight = len(in_flight)
            if on_second is not None:
                on_second(window)
            window = WindowStats(second=next_tick)

    connector = aiohttp.TCPConnector(limit=max_in_flight, force_close=False)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        reporter = asyncio.create_task(report())
        try:
            t = 0.0
            while True:
                current = rate_at(t)
                horizon = min(t + RATE_STEP_SECONDS, duration)
                gap = rng.expovariate(current) if current > 0 else math.inf
                if t + gap >= horizon:
                    t = horizon  # no arrival before the horizon: move on and re-read the rate (memoryless)
                    if t >= duration:
                        break
                    await asyncio.sleep(max(0.0, t - elapsed()))
                    continue
                t += gap
                await asyncio.sleep(max(0.0, t - elapsed()))  # behind schedule: send at once, keep the schedule
                url = targets.next()
                if url is None or len(in_flight) >= max_in_flight:
                    summary.skipped += 1
                    window.skipped += 1
                    continue
                summary.sent += 1
                window.sent += 1
                summary.per_url[url] = summary.per_url.get(url, 0) + 1
                task = asyncio.create_task(send(session, url, body()))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if in_flight:
                _done, pending = await asyncio.wait(set(in_flight), timeout=timeout + 1.0)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                for _ in pending:
                    record("Cancelled", None)
        finally:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
            for task in list(in_flight):
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
    if on_second is not None and any((window.sent, window.ok, window.overloaded, window.errors, window.skipped)):
        window.in_flight = 0
        on_second(window)
    summary.duration = elapsed()
    return summary


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tei_operator.emulator.loadgen",
        description="Open-loop Poisson load against TEI or the TEI emulator (/embed or /rerank).",
    )
    parser.add_argument("--url", required=True, help="base URL(s), comma-separated, e.g. http://127.0.0.1:8080")
    parser.add_argument("--rate", default="10", help="requests per second: 50, or steps like 50,200@10,20@25")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds to send for")
    parser.add_argument("--endpoint", choices=("embed", "rerank"), default="embed")
    parser.add_argument("--inputs-per-request", type=int, default=8)
    parser.add_argument("--words-per-input", type=int, default=100)
    parser.add_argument("--max-in-flight", type=int, default=2000, help="open requests at most; beyond: skipped")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request, and to drain at the end")
    parser.add_argument("--pick", choices=("round-robin", "random"), default="round-robin")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--api-key", default=os.environ.get("API_KEY"), help="bearer token [env API_KEY]")
    parser.add_argument("--json", action="store_true", help="print the final summary as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the load generator from the command line; exit code 2 on bad arguments."""
    args = _build_parser().parse_args(list(argv) if argv is not None else None)
    try:
        rate = parse_rate_schedule(args.rate)
        summary = asyncio.run(run_load(
            args.url, rate, args.duration, endpoint=args.endpoint, inputs_per_request=args.inputs_per_request,
            words_per_input=args.words_per_input, max_in_flight=args.max_in_flight, timeout=args.timeout,
            pick=args.pick, seed=args.seed, api_key=args.api_key,
            on_second=lambda w: print(w.line(), flush=True),
        ))
    except ValueError as exc:
        print(f"loadgen: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary.to_dict()) if args.json else summary.line(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
