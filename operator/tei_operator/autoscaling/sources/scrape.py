"""The built-in metrics source: read every Ready pod's TEI `/metrics` and compute the rates ourselves.

No Prometheus needed. Each tick is one concurrent sweep over the Ready pods of all autoscaled services (bounded
concurrency, a timeout per pod). A pod's samples are kept for the rate window; rates are the counter increase
between the oldest and the newest sample in the window over the time between them, with counter resets handled as
Prometheus does (a counter that went down restarted from zero: its increase is the new value). `te_queue_size` is
averaged over the samples in the window, like `avg_over_time` in the Prometheus source, so one burst of a client
batch does not hold a fleet up for a whole scale-down window.

How pods are reached (`settings.scrape_via`):
- `podip`: `http://POD_IP:PORT/metrics`, direct. Needs the operator to run inside the cluster network.
- `proxy`: through the API server's pod proxy, `/api/v1/namespaces/NS/pods/NAME:PORT/proxy/metrics`, with the
  operator's credentials (RBAC: `pods/proxy` get). Works from outside the cluster; costs API server traffic.
- `auto`: `podip` when running in a pod (KUBERNETES_SERVICE_HOST is set), `proxy` otherwise.
The proxy's GETs go through the KubeClient's asyncio pool, at most 8 at a time per sweep, so a sweep of slow pods
cannot take every connection the controller's requests share.

What counts as a read. An idle TEI answers an empty text/plain page (TEI creates a series at its first observation),
and that is read as idle: zeros. Anything else that is not TEI's exposition leaves the pod unread, never zero: a
body that does not parse (HTML, JSON), a Content-Type other than text (an error page), a valid exposition without a
single te_* metric (another program on the port), or te_batch_next_tokens / te_request_success without
te_queue_size (the pod has queued inputs, so the gauge must exist: something dropped it).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import selectors
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from . import MetricsSource, PodMetrics, PodTarget, ServiceTarget, SourceResult

logger = logging.getLogger("tei_operator.autoscaler")

METRICS_PATH = "/metrics"
DEFAULT_CONCURRENCY = 32
PROXY_CONCURRENCY = 8
"""The pod-proxy fetcher's GETs in flight at once: a share of the KubeClient's connection pool."""
POLL_FIRST_SECONDS = 0.003
POLL_MAX_SECONDS = 0.05
"""How soon `KeepAliveFetcher` polls its sockets after a request or a pass that found answers, and at most how long
it waits between passes while none come (each pass reads every socket that has data)."""
RECV_BYTES = 256 * 1024
TEI_PREFIX = "te_"
# Content types a /metrics page may have: TEI answers text/plain; OpenMetrics for a scraper in between.
_METRICS_CONTENT_TYPES = ("text/plain", "application/openmetrics-text")

Fetcher = Callable[[PodTarget], Awaitable[str]]


class ScrapeError(Exception):
    """One pod's /metrics could not be read or parsed; the message says why, for the status."""


@dataclass(frozen=True)
class RawSample:
    """The TEI counters and gauge of one scrape, summed over their labels (the ones the autoscaler needs)."""

    queue_size: float = 0.0
    batch_tokens_sum: float = 0.0
    batch_count: float = 0.0
    zero_batches: float = 0.0
    overloaded: float = 0.0
    requests: float = 0.0
    successes: float = 0.0
    inference_seconds: float = 0.0
    """te_request_inference_duration_sum: seconds requests spent in their batch (the observed batch time)."""
    inference_count: float = 0.0
    """te_request_inference_duration_count."""
    duration_buckets: tuple[tuple[float, float], ...] = ()
    """te_request_duration_bucket as (le, cumulative count), le ascending (+Inf last): how long requests took end
    to end, for latencyTargetMs."""


_COUNTERS = ("batch_tokens_sum", "batch_count", "zero_batches", "overloaded", "requests", "successes",
             "inference_seconds", "inference_count")
# Series read (summed over their labels; the bucket and failure series only where _WANTED_RE says): name -> field.
_PLAIN = {
    "te_queue_size": "queue_size",
    "te_batch_next_tokens_sum": "batch_tokens_sum",
    "te_batch_next_tokens_count": "batch_count",
    "te_request_count": "requests",
    "te_request_success": "successes",
    "te_request_inference_duration_sum": "inference_seconds",
    "te_request_inference_duration_count": "inference_count",
}
_FIELDS = {**_PLAIN, "te_batch_next_tokens_bucket": "zero_batches", "te_request_failure": "overloaded"}
# The text exposition, read with a few whole-page regular expressions (the scanning runs in C) rather than with
# prometheus_client's parser, which builds every family and sample object: ~5 ms for a TEI page of 230 lines, too slow
# for a fast tick over a large fleet and for the benchmark, which replays a day of pages through this function.
# A sample line is NAME[{LABELS}] VALUE [TIMESTAMP]; comments start with #.
# Every line is checked for the shape that tells a metrics page from an HTML or JSON one (a line starting with
# something else than a metric name or #, a name followed by junk, an unclosed label set, a name without a value);
# the lines the autoscaler reads are then parsed fully (their value must be a number).
# Every pattern starts at a "\n" (the page is read with one prepended) so that the engine jumps from line to line
# with a literal search, and quantifiers are possessive (no backtracking over a name): ~0.1 ms per TEI page.
_BAD_LINE_RE = re.compile(
    r"\n[ \t]*+(?:[^a-zA-Z_:#\s]|[a-zA-Z_:][a-zA-Z0-9_:]*+(?:[^a-zA-Z0-9_:{ \t\n]|\{[^}\n]*+(?=\n|$)"
    r"|[ \t]*+(?=\n|$)))[^\n]*")
_NAMES_RE = re.compile(r"^[ \t]*([a-zA-Z_:][a-zA-Z0-9_:]*)", re.M)
# The lines the autoscaler reads; of te_batch_next_tokens_bucket only the zero-size batches' (le="1", or "1.0" as
# prometheus_client writes it), of te_request_failure only err="overloaded": the other buckets and errors (most of
# a TEI page) are not even matched.
_WANTED_RE = re.compile(
    r"\n[ \t]*+(te_(?:queue_size|batch_next_tokens_sum|batch_next_tokens_count|request_count(?:_total)?"
    r"|request_success(?:_total)?|request_inference_duration_sum|request_inference_duration_count"
    r'|batch_next_tokens_bucket(?=\{[^}\n]*?\ble="1(?:\.0*)?")'
    r'|request_failure(?:_total)?(?=\{[^}\n]*?\berr="overloaded"))'
    r"|te_request_duration_bucket)"
    r"(?:\{([^}\n]*+)\})?[ \t]++(\S+)")
_LE_RE = re.compile(r'(?:^|,)\s*le\s*=\s*"([^"]*)"')


def _strip_total(name: str) -> str:
    # TEI's counters have no _total suffix; a scraper in between (OpenMetrics) may add it. Accept both so a future
    # TEI that adds the suffix keeps working.
    return name[:-6] if name.endswith("_total") else name


def parse_tei_metrics(text: str) -> RawSample:
    """Parse TEI's Prometheus text exposition into the numbers the autoscaler uses. Series TEI has not created
    yet (no observation so far) read as 0: the scrape itself succeeded, so their absence is knowledge. An empty
    page is an idle TEI's.

    Raises ScrapeError when the text is not the Prometheus format, holds no te_* metric at all (not TEI), or shows
    the pod has queued inputs (te_batch_next_tokens, te_request_success) but has no te_queue_size."""
    values = dict.fromkeys(("queue_size",) + _COUNTERS, 0.0)
    page = "\n" + text
    bad = _BAD_LINE_RE.search(page)
    if bad is not None:
        number = page.count("\n", 0, bad.start() + 1)
        raise ScrapeError(f"not the Prometheus text format: line {number}: {_short(bad.group(0).strip(), 80)!r}")
    seen: set[str] = set()
    durations: dict[float, float] = {}
    for m in _WANTED_RE.finditer(page):
        name, labels, text_value = _strip_total(m.group(1)), m.group(2), m.group(3)
        seen.add(name)
        try:
            value = float(text_value)
        except ValueError:
            raise ScrapeError(f"not the Prometheus text format: {name} has the value {_short(text_value, 40)!r}"
                              ) from None
        if name == "te_request_duration_bucket":
            le = _LE_RE.search(labels or "")
            try:
                bound = float(le.group(1)) if le else math.nan
            except ValueError:
                bound = math.nan
            if not math.isnan(bound) and math.isfinite(value):
                durations[bound] = durations.get(bound, 0.0) + value
        elif math.isfinite(value):
            values[_FIELDS[name]] += value
    if not seen and _NAMES_RE.search(text) is not None:
        names = {_strip_total(n) for n in _NAMES_RE.findall(text)}
        if not any(n.startswith(TEI_PREFIX) for n in names):
            families = len({n.rsplit("_", 1)[0] if n.endswith(("_bucket", "_sum", "_count")) else n for n in names})
            raise ScrapeError(f"no TEI metric (te_*) among {families} metric families: is this port TEI's?")
    if "te_queue_size" not in seen:
        witnesses = [w for w in ("te_batch_next_tokens_count", "te_request_success") if w in seen]
        if witnesses:
            raise ScrapeError(f"te_queue_size is missing although {' and '.join(witnesses)} show the pod has "
                              "queued inputs")
    return RawSample(**values, duration_buckets=tuple(sorted(durations.items())))


_PARSED: dict[tuple[int, int], RawSample] = {}
_PARSED_MAX = 8192


def parse_cached(text: str) -> RawSample:
    """`parse_tei_metrics`, remembered per page: an idle pod answers the same page scrape after scrape (its counters
    do not move), so a fleet at rest is parsed once per pod, and a pod's equal samples are one object (which
    `PodHistory.metrics` uses: no increase to compute). Keyed by the page's length and 64-bit hash, not the page
    (a TEI page is ~15 KB; a collision of two different pages is ~1e-12 likely at the cap). Errors are not
    remembered."""
    key = (len(text), hash(text))
    held = _PARSED.get(key)
    if held is None:
        held = parse_tei_metrics(text)
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[key] = held
    return held


def _short(text: str, limit: int = 120) -> str:
    """A bounded excerpt for a status message (a parse error may quote a whole HTML line)."""
    return text if len(text) <= limit else text[:limit] + "..."


def check_content_type(content_type: str | None) -> None:
    """Raise ScrapeError unless the Content-Type is one a metrics page has (a missing header is accepted): an
    empty text/plain page is an idle TEI, an empty text/html or JSON one is somebody else's answer."""
    if not content_type:
        return
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime not in _METRICS_CONTENT_TYPES:
        raise ScrapeError(f"GET /metrics answered Content-Type {mime}, not the Prometheus text format")


def counter_increase(values: Sequence[float]) -> float:
    """Increase of a counter over successive samples, counting a decrease as a restart from zero (Prometheus's
    rule): the increase across a reset is the value after it."""
    total = 0.0
    for before, after in zip(values, values[1:]):
        total += after - before if after >= before else after
    return total


class PodHistory:
    """A pod's recent samples (epoch seconds, sample), enough to compute rates over `window` seconds."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.samples: deque[tuple[float, RawSample]] = deque()

    def add(self, t: float, sample: RawSample) -> None:
        if self.samples and t <= self.samples[-1][0]:
            return  # same or older sample (clock step): keep the series monotonic
        self.samples.append((t, sample))
        # Keep the window, but always the two newest samples, so a tick longer than the window still has a rate.
        while len(self.samples) > 2 and self.samples[1][0] <= t - self.window:
            self.samples.popleft()

    @property
    def last_time(self) -> float | None:
        return self.samples[-1][0] if self.samples else None

    @property
    def at_rest(self) -> bool:
        """At least two samples, all one page (`parse_cached` hands out one object per page), its queue empty:
        every counter's increase over the window is zero and nothing waits."""
        if len(self.samples) < 2:
            return False
        last = self.samples[-1][1]
        return last.queue_size == 0 and all(s is last for _, s in self.samples)

    def metrics(self) -> PodMetrics | None:
        """Rates over the kept samples and the mean queue; None without any sample."""
        if not self.samples:
            return None
        t_last, last = self.samples[-1]
        in_window = [s for t, s in self.samples if t >= t_last - self.window]
        queue = sum(s.queue_size for s in in_window) / len(in_window)
        if len(self.samples) < 2:
            return PodMetrics(observed_at=t_last, queue_size=queue)
        t_first = self.samples[0][0]
        span = t_last - t_first
        rates: dict[str, float] = {}
        bounds = [le for le, _ in last.duration_buckets]
        duration_rates = None
        if all(s is last for _, s in self.samples):
            # Every sample the same page (an idle pod: `parse_cached` hands out one object per page): no increase.
            rates = dict.fromkeys(_COUNTERS, 0.0)
            duration_rates = tuple((le, 0.0) for le in bounds) if bounds else None
        else:
            for name in _COUNTERS:
                series = [getattr(s, name) for _, s in self.samples]
                rates[name] = counter_increase(series) / span
            if bounds:
                per_sample = [dict(s.duration_buckets) for _, s in self.samples]
                duration_rates = tuple((le, counter_increase([d.get(le, 0.0) for d in per_sample]) / span)
                                       for le in bounds)
        return PodMetrics(
            observed_at=t_last, queue_size=queue, duration_bucket_rates=duration_rates,
            batch_tokens_rate=rates["batch_tokens_sum"], batch_count_rate=rates["batch_count"],
            zero_batch_rate=rates["zero_batches"], overloaded_rate=rates["overloaded"],
            request_rate=rates["requests"], success_rate=rates["successes"],
            inference_seconds_rate=rates["inference_seconds"], inference_count_rate=rates["inference_count"],
        )


def proxy_path(namespace: str, pod: str, port: int, path: str = METRICS_PATH) -> str:
    """The API server's pod proxy path to a pod's port, e.g. /api/v1/namespaces/ns/pods/p:80/proxy/metrics."""
    if not namespace or not pod:
        raise ValueError("proxy_path: namespace and pod name are required")
    if not 0 < int(port) < 65536:
        raise ValueError(f"proxy_path: port must be between 1 and 65535, got {port}")
    return (f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(pod, safe='')}:{int(port)}"
            f"/proxy{path}")


def pod_ip_url(ip: str, port: int, path: str = METRICS_PATH) -> str:
    """A pod's URL by its IP (IPv6 in brackets)."""
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{int(port)}{path}"


def resolve_scrape_via(scrape_via: str, environ: Mapping[str, str] | None = None) -> str:
    """`auto` -> `podip` inside a pod (KUBERNETES_SERVICE_HOST set), `proxy` outside; others unchanged."""
    if scrape_via not in ("auto", "proxy", "podip"):
        raise ValueError(f"scrape_via: must be auto, proxy or podip, got {scrape_via!r}")
    if scrape_via != "auto":
        return scrape_via
    env = os.environ if environ is None else environ
    return "podip" if env.get("KUBERNETES_SERVICE_HOST") else "proxy"


Answer = tuple[int, str | None, bytes, bool]
"""An HTTP response as `_response` reads it: (status, Content-Type, body, keep-alive)."""


class _Connection:
    """One kept-alive HTTP/1.1 connection to a pod, one request at a time: a non-blocking socket registered in its
    `KeepAliveFetcher`'s own selector (see there), never in the event loop's."""

    __slots__ = ("owner", "sock", "buffer", "done", "closed", "last_used")

    def __init__(self, owner: KeepAliveFetcher, sock: socket.socket) -> None:
        self.owner = owner
        self.sock = sock
        self.buffer = bytearray()
        self.done: Callable[[Answer | None, ScrapeError | None], None] | None = None
        self.closed = False
        self.last_used = 0.0

    def send(self, request: bytes, done: Callable[[Answer | None, ScrapeError | None], None]) -> None:
        """Write `request`; later, from the event loop, `done(answer, None)` once the whole response is in, or
        `done(None, error)` when it cannot come (a malformed answer, the connection closed or failed). Never both, at
        most once, and never after `close`."""
        self.buffer.clear()
        try:
            sent = self.sock.send(request)
        except OSError as exc:  # the pod closed it, or it failed: the answer cannot come
            sent, error = 0, exc
        else:
            error = None
        self.done = done
        self.owner._busy.add(self)
        if sent != len(request):
            # A request of a few dozen bytes on an idle connection fits its send buffer: anything less is a failure.
            asyncio.get_running_loop().call_soon(
                self._finish, None, ScrapeError(f"connection failed: {error or 'partial write'}"))
            return
        self.owner._poll_soon()

    def readable(self) -> None:
        """What the selector calls when the socket has data (or an end): read it, and finish once the answer is
        whole. Data nobody asked for (or the end of an idle kept connection) closes it: it is in an unknown state."""
        try:
            data = self.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._finish(None, ScrapeError(f"connection failed: {exc}"))
            self.close()
            return
        if self.done is None:
            self.close()
            return
        if data:
            self.buffer += data
        try:
            answer = _response(self.buffer, eof=not data)
        except ScrapeError as exc:
            self._finish(None, exc)
            self.close()
            return
        if answer is not None:  # at the end, `_response` answers or raises: never None
            self._finish(answer, None)

    def _finish(self, answer: Answer | None, error: ScrapeError | None) -> None:
        done, self.done = self.done, None
        self.owner._busy.discard(self)
        if done is not None:
            done(answer, error)

    async def get(self, request: bytes) -> Answer:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()

        def done(answer: Answer | None, error: ScrapeError | None) -> None:
            if not future.done():
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(answer)  # type: ignore[arg-type]

        self.send(request, done)
        try:
            return await future
        finally:
            self.done = None
            self.owner._busy.discard(self)

    def close(self) -> None:
        """Close, and forget the request in flight: its `done` is not called any more."""
        self.done = None
        self.owner._busy.discard(self)
        if not self.closed:
            self.closed = True
            self.owner._unregister(self.sock)
            self.sock.close()


def _response(buffer: bytearray, eof: bool) -> Answer | None:
    """(status, Content-Type, body, keep-alive) once `buffer` holds a whole HTTP/1.1 response, else None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if eof:
            raise ScrapeError("connection closed before a whole HTTP response")
        return None
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ScrapeError(f"not an HTTP/1.1 response: {_short(lines[0], 80)!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    keep = headers.get("connection", "").lower() != "close" and parts[0] != "HTTP/1.0"
    start = end + 4
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        at = start
        while True:
            eol = buffer.find(b"\r\n", at)
            if eol < 0:
                break
            try:
                size = int(bytes(buffer[at:eol]).split(b";", 1)[0], 16)
            except ValueError:
                raise ScrapeError("a malformed chunked HTTP body") from None
            if size == 0:
                if buffer.find(b"\r\n\r\n", eol) >= 0 or buffer.endswith(b"0\r\n\r\n"):
                    return int(parts[1]), headers.get("content-type"), bytes(body), keep
                break
            if len(buffer) < eol + 2 + size + 2:
                break
            body += buffer[eol + 2:eol + 2 + size]
            at = eol + 2 + size + 2
        if eof:
            raise ScrapeError("connection closed within a chunked HTTP body")
        return None
    if "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise ScrapeError(f"a bad Content-Length: {headers['content-length'][:40]!r}") from None
        if len(buffer) - start >= length:
            return int(parts[1]), headers.get("content-type"), bytes(buffer[start:start + length]), keep
        if eof:
            raise ScrapeError("connection closed within the HTTP body")
        return None
    if eof:  # no length: the body ends with the connection
        return int(parts[1]), headers.get("content-type"), bytes(buffer[start:]), False
    return None


class KeepAliveFetcher:
    """GET http://POD_IP:PORT/metrics over one kept-alive connection per pod, with a minimal HTTP/1.1 client.

    The fast scale-up path reads every Ready autoscaled pod every 2 s: at 1,000 services that is hundreds of GETs
    a second, and a general client's per-request work (aiohttp: ~0.2 ms CPU a GET) was most of the operator's idle
    CPU. Here a GET is one write of a prepared request and one read of the answer on a connection that stays open
    between sweeps, and `fetch_many` reads a whole sweep with one wait (no task, future or timer per pod).

    The answers are not read where they arrive. The kept connections' sockets are registered in a selector of the
    fetcher's own, which the event loop does not watch: while answers are awaited, a timer polls it (every few ms,
    less often while nothing comes) and reads every socket that has data in that one pass. An event loop watching
    each socket wakes once per answer when answers trickle in (on a busy machine, or pods answering at their own
    pace: 80 to 450 wake-ups for a sweep of 500 pods, each with asyncio's own work per socket); the poll reads a
    sweep in a handful of passes, a few ms later than the first answer came. Answers with Content-Length, chunked,
    or ended by the connection's close are read; a connection that failed or was idle for `idle_seconds` is closed
    (a pod that went away)."""

    def __init__(self, *, idle_seconds: float = 120.0, max_connections: int | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        import resource
        import time

        self._connections: dict[tuple[str, int], _Connection] = {}  # least recently used first
        self._idle = idle_seconds
        # Kept connections are file descriptors: at most a quarter of the process's limit (the least recently used
        # one is closed beyond), so a large fleet cannot run the operator out of them.
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.max_connections = max_connections or (4096 if soft == resource.RLIM_INFINITY else max(16, soft // 4))
        self._clock = clock or time.monotonic
        self._swept = self._clock()
        self._selector: selectors.BaseSelector | None = None  # made with the first connection
        self._busy: set[_Connection] = set()  # connections whose answer is awaited
        self._poll_timer: asyncio.TimerHandle | None = None
        self._poll_loop: asyncio.AbstractEventLoop | None = None
        self._poll_delay = POLL_FIRST_SECONDS
        self.polls = 0  # passes over the selector (tests)

    # -- the poll ---------------------------------------------------------------------------------------------
    def _poll_soon(self) -> None:
        """Make sure a poll is due while answers are awaited (in this event loop: a fetcher used by another one
        before may have left a timer there)."""
        loop = asyncio.get_running_loop()
        if self._poll_timer is None or self._poll_loop is not loop:
            if self._poll_timer is not None:
                self._poll_timer.cancel()
            self._poll_delay = POLL_FIRST_SECONDS
            self._poll_loop = loop
            self._poll_timer = loop.call_later(self._poll_delay, self._poll)

    def _poll(self) -> None:
        """Read every socket that has data, in one pass; poll again while answers are awaited: soon after a pass that
        found some, less and less often (up to `POLL_MAX_SECONDS`) while none come."""
        self._poll_timer = None
        if self._selector is None:
            return
        self.polls += 1
        ready = self._selector.select(0)
        for key, _ in ready:
            connection = key.data
            try:
                connection.readable()
            except Exception:  # noqa: BLE001 - one connection's failure must not stop the poll for the others
                logger.exception("Failed to read an answer of a pod's /metrics; closed its connection")
                connection._finish(None, ScrapeError("failed to read the answer"))
                connection.close()
        if self._busy:
            self._poll_delay = POLL_FIRST_SECONDS if ready else min(2 * self._poll_delay, POLL_MAX_SECONDS)
            self._poll_timer = asyncio.get_running_loop().call_later(self._poll_delay, self._poll)

    def _register(self, connection: _Connection) -> None:
        if self._selector is None:
            self._selector = selectors.DefaultSelector()
        self._selector.register(connection.sock, selectors.EVENT_READ, connection)

    def _unregister(self, sock: socket.socket) -> None:
        if self._selector is not None:
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):  # never registered, or already closed
                pass

    # -- requests ---------------------------------------------------------------------------------------------
    @staticmethod
    def _request(pod: PodTarget) -> bytes:
        host = f"[{pod.ip}]" if ":" in (pod.ip or "") else pod.ip
        return (f"GET {METRICS_PATH} HTTP/1.1\r\nHost: {host}:{int(pod.port)}\r\n"
                "Accept: text/plain\r\nUser-Agent: tei-operator\r\n\r\n").encode()

    def _kept(self, key: tuple[str, int]) -> _Connection | None:
        """The pod's kept connection, taken out of the pool while a request uses it; None without an open one."""
        connection = self._connections.pop(key, None)
        return connection if connection is not None and not connection.closed else None

    def _answered(self, key: tuple[str, int], connection: _Connection, answer: Answer, now: float) -> str:
        """Put the connection back (or close it) and return the page, or raise ScrapeError for a non-200 answer or
        one that is not a metrics page."""
        status, content_type, body, keep = answer
        connection.last_used = now
        if keep and not connection.closed:
            other = self._connections.pop(key, None)
            if other is not None and other is not connection:
                other.close()  # two pods at one address in one sweep: keep one connection
            self._connections[key] = connection
            while len(self._connections) > self.max_connections:
                self._connections.pop(next(iter(self._connections))).close()
        else:
            connection.close()
        if status != 200:
            raise ScrapeError(f"GET /metrics answered {status}")
        check_content_type(content_type)
        return body.decode("utf-8", "replace")

    async def __call__(self, pod: PodTarget) -> str:
        if not pod.ip:
            raise ScrapeError("pod has no IP yet")
        key = (pod.ip, int(pod.port))
        now = self._now()
        request = self._request(pod)
        connection = self._kept(key)
        if connection is not None:
            try:
                answer = await connection.get(request)
            except ScrapeError:
                # The pod closed the kept connection while it was idle (its keep-alive timeout, a restart), and
                # nothing was answered: once more on a new connection, as HTTP clients do.
                connection.close()
                connection = None
            except BaseException:
                connection.close()  # a timeout or a broken answer: never reuse a connection in an unknown state
                raise
        if connection is None:
            connection = await self._connect(pod)
            try:
                answer = await connection.get(request)
            except BaseException:
                connection.close()
                raise
        return self._answered(key, connection, answer, now)

    async def fetch_many(self, pods: Sequence[PodTarget], timeout: float,
                         concurrency: int = DEFAULT_CONCURRENCY) -> list[str | Exception]:
        """Read every pod's /metrics once; per pod (in order) the page, or the exception that says why not
        (ScrapeError, or TimeoutError after `timeout` seconds).

        On a pod's kept connection the request is written at once and the answer read by the next poll after it
        arrived; one wait covers all of them, so a sweep of idle pods costs a write and a read per pod and no task,
        future or timer (a third of the fast path's CPU at 1,000 idle services was asyncio's per-pod machinery). A pod
        without a kept connection goes through `__call__` (connect, then GET), `concurrency` at a time, each within
        its own `timeout`; a kept connection the pod had closed is tried once more on a new one, as `__call__`
        does, within what is left of the sweep's `timeout`."""
        loop = asyncio.get_running_loop()
        now = self._now()
        answers: list[str | Exception] = [ScrapeError("unread")] * len(pods)
        waiting: dict[int, _Connection] = {}
        retries: list[asyncio.Task[None]] = []
        fresh: list[int] = []
        deadline = loop.time() + timeout
        all_in = loop.create_future()

        def on_answer(i: int, key: tuple[str, int], connection: _Connection) -> Callable[..., None]:
            def done(answer: Answer | None, error: ScrapeError | None) -> None:
                del waiting[i]
                if error is None:
                    try:
                        answers[i] = self._answered(key, connection, answer, now)  # type: ignore[arg-type]
                    except ScrapeError as exc:
                        answers[i] = exc
                else:  # the kept connection was closed by the pod: once more on a new connection
                    connection.close()
                    retries.append(loop.create_task(self._read_one(pods[i], answers, i, deadline=deadline)))
                if not waiting and not all_in.done():
                    all_in.set_result(None)
            return done

        for i, pod in enumerate(pods):
            if not pod.ip:
                answers[i] = ScrapeError("pod has no IP yet")
                continue
            key = (pod.ip, int(pod.port))
            connection = self._kept(key)
            if connection is None:
                fresh.append(i)
                continue
            waiting[i] = connection
            connection.send(self._request(pod), on_answer(i, key, connection))

        async def kept() -> None:
            if waiting:
                try:
                    async with asyncio.timeout_at(deadline):
                        await all_in
                except TimeoutError:
                    for i, connection in waiting.items():
                        connection.close()  # never reuse a connection whose answer may still come
                        answers[i] = TimeoutError()
                    waiting.clear()
                except BaseException:  # cancelled: nobody reads these answers any more
                    for connection in waiting.values():
                        connection.close()
                    waiting.clear()
                    raise
            if retries:
                await asyncio.gather(*retries)

        async def connecting(todo: Iterator[int]) -> None:
            for i in todo:
                await self._read_one(pods[i], answers, i, timeout=timeout)

        todo = iter(fresh)
        await asyncio.gather(kept(), *(connecting(todo) for _ in range(min(concurrency, len(fresh)))))
        return answers

    async def _read_one(self, pod: PodTarget, answers: list[str | Exception], i: int, *,
                        timeout: float | None = None, deadline: float | None = None) -> None:
        """`__call__` within `timeout` seconds (or until the loop time `deadline`), its page or error in
        answers[i]."""
        try:
            async with (asyncio.timeout(timeout) if deadline is None else asyncio.timeout_at(deadline)):
                answers[i] = await self(pod)
        except (ScrapeError, TimeoutError) as exc:
            answers[i] = exc

    async def _connect(self, pod: PodTarget) -> _Connection:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET6 if ":" in (pod.ip or "") else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, (pod.ip, int(pod.port)))
        except OSError as exc:
            sock.close()
            raise ScrapeError(f"GET {pod_ip_url(pod.ip or '', pod.port)} failed: {type(exc).__name__}: {exc}") from None
        except BaseException:
            sock.close()
            raise
        connection = _Connection(self, sock)
        self._register(connection)
        return connection

    def _now(self) -> float:
        """The clock, after closing the connections idle for `idle_seconds` if that was not done for as long."""
        now = self._clock()
        if now - self._swept > self._idle:
            self._sweep(now)
        return now

    def _sweep(self, now: float) -> None:
        self._swept = now
        for key in [k for k, c in self._connections.items() if c.closed or now - c.last_used > self._idle]:
            self._connections.pop(key).close()

    async def close(self) -> None:
        for connection in list(self._connections.values()) + list(self._busy):
            connection.close()
        self._connections.clear()
        if self._poll_timer is not None:
            self._poll_timer.cancel()
            self._poll_timer = None
        if self._selector is not None:
            self._selector.close()
            self._selector = None


class ApiProxyFetcher:
    """GET the pod's /metrics through the API server's pod proxy with the operator's KubeClient (its asyncio
    connection pool and credentials): one attempt within `timeout` seconds, the next tick is the retry. At most
    `max_concurrency` of a sweep's GETs are in flight, so a sweep of slow pods cannot take every connection the
    controller's requests share."""

    def __init__(self, kube: Any, *, timeout: float, concurrency: int = PROXY_CONCURRENCY) -> None:
        if timeout <= 0 or concurrency < 1:
            raise ValueError(f"ApiProxyFetcher: timeout must be > 0 and concurrency >= 1 (got {timeout}, "
                             f"{concurrency})")
        self._kube = kube
        self.timeout = timeout
        self.max_concurrency = concurrency

    async def __call__(self, pod: PodTarget) -> str:
        path = proxy_path(pod.namespace, pod.name, pod.port)
        try:
            text, content_type = await self._kube.get_text(path, timeout=self.timeout)
            check_content_type(content_type)
            return text
        except ScrapeError as exc:
            raise ScrapeError(f"GET {path}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - any failure means "this pod is unread"
            raise ScrapeError(f"GET {path} failed: {type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        """Nothing of its own to close: the connections are the KubeClient's."""


class ScrapeSource(MetricsSource):
    """The built-in source: one concurrent sweep of the Ready pods' /metrics per tick."""

    name = "scrape"

    def __init__(self, fetcher: Fetcher, *, timeout: float, window: float, concurrency: int = DEFAULT_CONCURRENCY,
                 clock: Callable[[], float] | None = None) -> None:
        if timeout <= 0 or window <= 0 or concurrency < 1:
            raise ValueError("ScrapeSource: timeout and window must be > 0 and concurrency >= 1 "
                             f"(got {timeout}, {window}, {concurrency})")
        self._fetch = fetcher
        self.timeout = timeout
        self.window = window
        # Never more scrapes in flight than the fetcher allows: a scrape waiting for a free connection would spend
        # its timeout queueing and read as a pod that did not answer.
        self.concurrency = min(concurrency, int(getattr(fetcher, "max_concurrency", concurrency)))
        self._histories: dict[str, PodHistory] = {}
        self._clock = clock

    async def _scrape(self, pod: PodTarget, now: float) -> tuple[str, RawSample | None, float, str | None]:
        try:
            async with asyncio.timeout(self.timeout):  # no task of its own, unlike wait_for (a sweep's CPU)
                text = await self._fetch(pod)
        except (TimeoutError, ScrapeError) as exc:
            return self._read(pod.uid, exc, now, now)
        return self._read(pod.uid, text, self._clock() if self._clock else now, now)

    async def fetch(self, services: Sequence[ServiceTarget], now: float) -> SourceResult:
        """Read every pod once. With a fetcher that reads a sweep at once (`KeepAliveFetcher.fetch_many`), that
        does; otherwise `concurrency` workers take the next pod from one list until none is left, so a pod's
        timeout starts when its GET does (not while it waits its turn), and a sweep of 500 pods is 32 tasks, not
        500 tasks queueing on a semaphore."""
        pods = {pod.uid: pod for service in services for pod in service.pods}
        results: list[tuple[str, RawSample | None, float, str | None]] = []
        many = getattr(self._fetch, "fetch_many", None)
        if many is not None:
            answers = await many(list(pods.values()), self.timeout, self.concurrency)
            t = self._clock() if self._clock else now
            for uid, answer in zip(pods, answers):
                results.append(self._read(uid, answer, t, now))
            return self.absorb(list(pods), results, now)
        todo = iter(list(pods.values()))

        async def worker() -> None:
            for pod in todo:
                results.append(await self._scrape(pod, now))

        workers = min(self.concurrency, len(pods))
        if workers == 1:
            await worker()
        elif workers > 1:
            await asyncio.gather(*(worker() for _ in range(workers)))
        return self.absorb(list(pods), results, now)

    def _read(self, uid: str, answer: str | Exception, t: float,
              now: float) -> tuple[str, RawSample | None, float, str | None]:
        """One pod's answer of `fetch_many` as a result of `_scrape`."""
        if isinstance(answer, str):
            try:
                return uid, parse_cached(answer), t, None
            except ScrapeError as exc:
                return uid, None, now, str(exc)
        if isinstance(answer, TimeoutError):
            return uid, None, now, f"/metrics did not answer within {self.timeout:g}s"
        return uid, None, now, str(answer)

    def absorb_pages(self, pages: Mapping[str, str], now: float) -> SourceResult:
        """`fetch` without HTTP: the pages of the Ready pods (uid -> /metrics text) read at `now`. What the
        benchmark's simulated operator calls, so its pages go through the same parsing, history and rates."""
        results = []
        for uid, text in pages.items():
            try:
                results.append((uid, parse_tei_metrics(text), now, None))
            except ScrapeError as exc:
                results.append((uid, None, now, str(exc)))
        return self.absorb(list(pages), results, now)

    def absorb(self, uids: Sequence[str], results: Sequence[tuple[str, RawSample | None, float, str | None]],
               now: float) -> SourceResult:
        """Add one sweep's samples (uid, sample or None, time read, error) to the pods' histories and answer the
        rates of the pods `uids`. Synchronous and clock-free: `now` is the only time it knows."""
        errors: dict[str, str] = {}
        at_rest: set[str] = set()
        for uid, sample, t, error in results:
            if sample is None:
                errors[uid] = error or "unread"
                continue
            history = self._histories.setdefault(uid, PodHistory(self.window))
            history.add(t, sample)
            if history.at_rest:
                at_rest.add(uid)
        # Forget pods gone for a while (a pod that comes back is a new uid anyway).
        wanted = set(uids)
        for uid in [u for u, h in self._histories.items() if u not in wanted
                    and (h.last_time is None or h.last_time < now - 4 * self.window)]:
            del self._histories[uid]
        out: dict[str, PodMetrics] = {}
        # A pod at rest has the metrics of its last sample's time and page alone (zero rates, an empty queue): one
        # object for all the pods at rest read at one time with one page (a fleet at rest: one per sweep).
        rest: dict[tuple[float, int], PodMetrics | None] = {}
        for uid in uids:
            history = self._histories.get(uid)
            if history is None:
                continue
            if uid in at_rest:
                t_last, last = history.samples[-1]
                metrics = rest.get((t_last, id(last)))
                if metrics is None:
                    metrics = rest[(t_last, id(last))] = history.metrics()
            else:
                metrics = history.metrics()
            if metrics is not None:
                out[uid] = metrics  # possibly older than this tick: the caller judges staleness
        if errors:
            logger.debug("Failed to scrape %d of %d pods: %s", len(errors), len(uids), errors)
        return SourceResult(pods=out, pod_errors=errors, at_rest=frozenset(at_rest))

    async def close(self) -> None:
        closer = getattr(self._fetch, "close", None)
        if closer is not None:
            await closer()
