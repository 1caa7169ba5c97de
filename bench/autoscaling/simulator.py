"""A per-batch discrete-event simulator of a TEI fleet: every request, every batch, every pod, in simulated time.

Each replica runs TEI's router as modelled by `tei_operator.emulator.batching` (the model the emulator runs in real
time): a FIFO of inputs, batches up to max_batch_tokens / max_batch_requests formed by a batching task while the
backend runs the previous one (one parking slot), batch time = overhead + a * tokens + b * sum(length^2),
concurrency permits per input from admission to answer (429 when not all are free), and TEI's metrics. The event
loop is compiled (`kernel.py`, numba); this module holds the fleet around it: Deployment scaling and pod lifecycle,
routing, a simulated Prometheus, and what a policy may see (`FleetView`). docs/benchmarks/simulator.md explains it.

    sim = Simulator(load_profile("bge-m3-a100"), replicas0=2, quota=8, seed=0, routing="random", arrivals=arrivals)
    for now in np.arange(15.0, 3600.0, 15.0):
        sim.advance_to(now)
        want = policy.tick(now, sim.view)
        if want is not None:
            sim.set_desired(want, now)
    res = sim.results()    # per request: t, done, status (200/429/503/422, 0 = unanswered), cls, pod

Deterministic per seed: the same inputs give the same results, whatever the policy's calls in between (random
draws are keyed by request, worker or pod number, never by the order of events).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from tei_operator.emulator.batching import Profile
from tei_operator.emulator.metrics import BATCH_SIZE_BUCKETS, BATCH_TOKENS_BUCKETS, DURATION_BUCKETS

from . import kernel as K

Routing = Literal["random", "keepalive"]
PHASE_NAMES = {K.PENDING: "Pending", K.LOADING: "Loading", K.READY: "Ready", K.DRAINING: "Draining", K.GONE: "Gone"}
STATUS_UNANSWERED = 0
CLASS_NAMES = ("query", "document", "bulk", "rerank")
BULK_CLASS = 2


class SimulatorError(ValueError):
    """Input the simulator cannot run; the message names the field."""


# ---- inputs ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class OpenArrivals:
    """Open-loop requests, sorted by time. Request i has inputs input_tokens[input_offsets[i]:input_offsets[i+1]].

    t: float64[N] seconds; cls: int8[N] class id (0 query, 1 document, 2 bulk, 3 rerank); input_offsets: int64[N+1];
    input_tokens: int32[total inputs]; conn: int32[N] client connection (-1 = a new connection per request; used
    by keep-alive routing)."""

    t: np.ndarray
    cls: np.ndarray
    input_offsets: np.ndarray
    input_tokens: np.ndarray
    conn: np.ndarray

    def __post_init__(self) -> None:
        t = np.ascontiguousarray(self.t, dtype=np.float64)
        n = len(t)
        cls = np.ascontiguousarray(self.cls, dtype=np.int8)
        off = np.ascontiguousarray(self.input_offsets, dtype=np.int64)
        tok = np.ascontiguousarray(self.input_tokens, dtype=np.int64)
        conn = np.ascontiguousarray(self.conn, dtype=np.int64)
        if cls.shape != (n,) or conn.shape != (n,):
            raise SimulatorError(f"OpenArrivals: cls and conn must have one entry per request ({n}), "
                                 f"got {cls.shape} and {conn.shape}")
        if off.shape != (n + 1,) or (n and (off[0] != 0 or off[-1] != len(tok))):
            raise SimulatorError(f"OpenArrivals.input_offsets: must have N+1 = {n + 1} entries from 0 to "
                                 f"len(input_tokens) = {len(tok)}")
        if n and np.any(np.diff(off) < 1):
            raise SimulatorError("OpenArrivals.input_offsets: every request needs at least one input")
        if n and (np.any(np.diff(t) < 0) or not np.all(np.isfinite(t)) or t[0] < 0):
            raise SimulatorError("OpenArrivals.t: must be finite, >= 0 and sorted")
        if len(tok) and tok.min() < 1:
            raise SimulatorError("OpenArrivals.input_tokens: every input needs at least 1 token")
        if n and conn.min() < -1:
            raise SimulatorError("OpenArrivals.conn: connection ids are >= 0, or -1 for a new connection")
        for name, value in (("t", t), ("cls", cls), ("input_offsets", off), ("input_tokens", tok), ("conn", conn)):
            object.__setattr__(self, name, value)

    @classmethod
    def uniform_sizes(cls, t: np.ndarray, inputs: int | np.ndarray, tokens: int | np.ndarray, klass: int = 0,
                      conn: np.ndarray | None = None) -> "OpenArrivals":
        """Requests of `inputs` inputs each (a number or one per request) of `tokens` tokens each (a number, or
        one per request: every input of a request gets it)."""
        n = len(t)
        k = np.broadcast_to(np.asarray(inputs, dtype=np.int64), (n,))
        per = np.broadcast_to(np.asarray(tokens, dtype=np.int64), (n,))
        off = np.concatenate(([0], np.cumsum(k)))
        return cls(np.asarray(t, float), np.full(n, klass, np.int8), off, np.repeat(per, k),
                   np.full(n, -1) if conn is None else conn)

    @property
    def n(self) -> int:
        return len(self.t)

    def inputs_per_request(self) -> np.ndarray:
        return np.diff(self.input_offsets)

    def tokens_per_request(self, max_input_length: int | None = None) -> np.ndarray:
        tok = self.input_tokens if max_input_length is None else np.minimum(self.input_tokens, max_input_length)
        if not len(self.t):
            return np.zeros(0, np.int64)
        return np.add.reduceat(tok, self.input_offsets[:-1]).astype(np.int64)


@dataclass(frozen=True)
class BulkClients:
    """Closed-loop bulk ingestion: `workers` clients each send a request of `inputs_per_request` inputs (tokens
    uniform in [tokens_min, tokens_max]) and the next one when it is answered, from start_s until stop_s. A 429
    (or no Ready pod) is retried after a backoff doubling from backoff_initial_s up to backoff_max_s, times a
    uniform factor in [0.5, 1) (jitter)."""

    workers: int
    start_s: float
    stop_s: float
    inputs_per_request: int = 32
    tokens_min: int = 128
    tokens_max: int = 512
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.workers < 0:
            problems.append(f"workers: must be >= 0, got {self.workers}")
        if not 0 <= self.start_s <= self.stop_s:
            problems.append(f"start_s/stop_s: need 0 <= start_s <= stop_s, got {self.start_s}, {self.stop_s}")
        if self.inputs_per_request < 1:
            problems.append(f"inputs_per_request: must be >= 1, got {self.inputs_per_request}")
        if not 1 <= self.tokens_min <= self.tokens_max:
            problems.append(f"tokens_min/tokens_max: need 1 <= min <= max, got {self.tokens_min}, {self.tokens_max}")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            problems.append("backoff_initial_s/backoff_max_s: need 0 < initial <= max, "
                            f"got {self.backoff_initial_s}, {self.backoff_max_s}")
        if problems:
            raise SimulatorError("BulkClients: " + "; ".join(problems))


# ---- outputs -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PodInfo:
    """A pod as the Kubernetes API shows it: phase Pending (no GPU yet), Loading (scheduled, model loading; not
    Ready), Ready (serving), Draining (terminating, finishing its queue)."""

    id: int
    phase: str
    created_at: float
    ready_at: float | None


@dataclass
class PodRecord:
    id: int
    created_at: float
    phase: int = K.PENDING
    scheduled_at: float | None = None
    ready_at: float | None = None
    gone_at: float | None = None
    load_s: float = 0.0
    warm: bool = False


@dataclass
class SimResults:
    """Everything measured: per open-loop request, per bulk attempt, and the fleet's cost.

    status: 200 answered, 429 overloaded, 503 no Ready pod, 422 more inputs than max_client_batch_size,
    0 not answered by the end of the run. `done` is when the answer (or refusal) came; NaN while unanswered."""

    t: np.ndarray
    done: np.ndarray
    status: np.ndarray
    cls: np.ndarray
    pod: np.ndarray
    inputs: np.ndarray
    tokens: np.ndarray
    bulk_t: np.ndarray
    bulk_done: np.ndarray
    bulk_status: np.ndarray
    bulk_worker: np.ndarray
    bulk_seq: np.ndarray
    bulk_inputs: np.ndarray
    bulk_tokens: np.ndarray
    gpu_seconds: float
    served_tokens: dict[int, float]
    pods: list[PodRecord]
    end: float
    bulk_group: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    """Per bulk attempt, the index of its BulkClients group (bulk_worker numbers workers across all groups)."""

    @property
    def latency(self) -> np.ndarray:
        """Seconds from arrival to answer (200 only; others are NaN)."""
        return np.where(self.status == 200, self.done - self.t, np.nan)


# ---- the simulated Prometheus --------------------------------------------------------------------------------------

def _series_catalogue() -> list[tuple[str, dict[str, str]]]:
    cols: list[tuple[str, dict[str, str]]] = [("te_queue_size", {})]
    cols += [("te_request_count", {"method": m}) for m in ("single", "batch")]
    cols += [("te_request_success", {"method": m}) for m in ("single", "batch")]
    cols += [("te_request_failure", {"err": e}) for e in ("overloaded", "batch_size")]
    for name, bounds in (("te_batch_next_size", BATCH_SIZE_BUCKETS), ("te_batch_next_tokens", BATCH_TOKENS_BUCKETS),
                         ("te_request_duration", DURATION_BUCKETS), ("te_request_queue_duration", DURATION_BUCKETS),
                         ("te_request_inference_duration", DURATION_BUCKETS)):
        cols += [(f"{name}_bucket", {"le": _le(b)}) for b in bounds] + [(f"{name}_bucket", {"le": "+Inf"})]
        cols += [(f"{name}_sum", {}), (f"{name}_count", {})]
    return cols


def _le(bound: float) -> str:
    from prometheus_client.utils import floatToGoString
    return floatToGoString(bound)


SERIES = _series_catalogue()
_COUNTER_COLUMNS = np.array([K.C_REQ_SINGLE, K.C_REQ_BATCH, K.C_OK_SINGLE, K.C_OK_BATCH, K.C_OVERLOADED,
                             K.C_BATCH_SIZE_ERR], dtype=np.int64)
_HISTOGRAMS = ("te_batch_next_size", "te_batch_next_tokens", "te_request_duration", "te_request_queue_duration",
               "te_request_inference_duration")


def _page_layout() -> tuple[list[str], list[tuple[str, list[int]]]]:
    """Each catalogue series' line prefix, and the families in TEI's page order (by name) with their columns."""
    prefixes, families = [], {}
    for i, (name, labels) in enumerate(SERIES):
        text = ",".join(f'{k}="{v}"' for k, v in labels.items())
        prefixes.append(f"{name}{{{text}}} " if text else f"{name} ")
        family = next((h for h in _HISTOGRAMS if name in (f"{h}_bucket", f"{h}_sum", f"{h}_count")), name)
        families.setdefault(family, []).append(i)
    kinds = {f: "gauge" if f == "te_queue_size" else "histogram" if f in _HISTOGRAMS else "counter" for f in families}
    return prefixes, [(f"# TYPE {f} {kinds[f]}", families[f]) for f in sorted(families)]


_PREFIX, _FAMILIES = _page_layout()
_DURATION_WINDOW = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_QUERY = re.compile(r"^\s*(?:sum\s*\(\s*)?(?:(rate|increase|avg_over_time|max_over_time|min_over_time|last_over_time)"
                    r"\s*\(\s*)?([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{([^}]*)\})?\s*(?:\[([^\]]+)\])?\s*\)?\s*\)?\s*$")
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!=|!~|=)\s*"((?:[^"\\]|\\.)*)"\s*')


def parse_duration(text: str) -> float:
    m = _DURATION_WINDOW.match(text.strip())
    if not m:
        raise SimulatorError(f"window: expected a PromQL duration like 60s, 1m, 500ms, got {text!r}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2)]


class SimPrometheus:
    """A Prometheus that scrapes every Ready pod's TEI metrics every `interval` seconds (first scrape at `phase`).

    Queries (all sum over pods and matching series; None = empty result, as during an outage or before there are
    enough samples): `rate` (increase over the window's samples divided by the time between the first and last of
    them: no extrapolation; counter resets handled), `increase`, `avg_over_time`, `max_over_time`, `last` (the
    newest scrape's value of pods scraped then), and `query("sum(rate(te_request_count[1m]))")` for those forms.
    During `outage` = (a, b), scrapes are lost and every query answers None."""

    def __init__(self, interval: float = 15.0, phase: float = 0.0, retention: float = 900.0,
                 outage: tuple[float, float] | None = None) -> None:
        if interval <= 0:
            raise SimulatorError(f"scrape_interval_s: must be > 0, got {interval}")
        self.interval, self.phase, self.retention, self.outage = interval, phase, retention, outage
        self.scrapes: deque[tuple[float, np.ndarray, np.ndarray]] = deque()  # (t, pod ids, values[pods, series])
        self.now = 0.0
        self._index: dict[str, list[int]] = {}
        for i, (name, _labels) in enumerate(SERIES):
            self._index.setdefault(name, []).append(i)

    def down(self, now: float | None = None) -> bool:
        now = self.now if now is None else now
        return self.outage is not None and self.outage[0] <= now < self.outage[1]

    def _record(self, t: float, pods: np.ndarray, values: np.ndarray) -> None:
        self.now = t
        if self.down(t):
            return
        self.scrapes.append((t, pods, values))
        while self.scrapes and self.scrapes[0][0] < t - self.retention:
            self.scrapes.popleft()

    def columns(self, name: str, matchers: dict[str, str] | str | None = None) -> list[int]:
        """The catalogue columns of series `name` whose labels match (`{"err": "overloaded"}` or PromQL text)."""
        if isinstance(matchers, str):
            parsed = []
            for part in filter(None, (p.strip() for p in _split_matchers(matchers))):
                m = _MATCHER.fullmatch(part)
                if not m:
                    raise SimulatorError(f"label matcher: cannot read {part!r}")
                parsed.append((m.group(1), m.group(2), m.group(3).replace("\\\\", "\\")))
        else:
            parsed = [(k, "=", v) for k, v in (matchers or {}).items()]
        out = []
        for i in self._index.get(name, []):
            labels = SERIES[i][1]
            ok = True
            for key, op, value in parsed:
                have = labels.get(key, "")
                if op == "=":
                    ok = have == value
                elif op == "!=":
                    ok = have != value
                elif op == "=~":
                    ok = re.fullmatch(value, have) is not None
                else:
                    ok = re.fullmatch(value, have) is None
                if not ok:
                    break
            if ok:
                out.append(i)
        return out

    def _window(self, window: float) -> list[tuple[float, np.ndarray, np.ndarray]]:
        return [s for s in self.scrapes if self.now - window < s[0] <= self.now]

    def _per_pod(self, cols: list[int], window: float, reduce: str) -> dict[int, float] | None:
        if self.down() or not cols:
            return None
        samples = self._window(window)
        series: dict[int, list[tuple[float, np.ndarray]]] = {}
        for t, pods, values in samples:
            for row, pod in enumerate(pods):
                series.setdefault(int(pod), []).append((t, values[row, cols]))
        out: dict[int, float] = {}
        for pod, rows in series.items():
            ts = np.array([r[0] for r in rows])
            v = np.array([r[1] for r in rows])  # [samples, cols]
            present = ~np.isnan(v)
            total, seen = 0.0, False
            for c in range(v.shape[1]):
                sel = present[:, c]
                vals, tt = v[sel, c], ts[sel]
                if reduce in ("rate", "increase"):
                    if len(vals) < 2:
                        continue
                    d = np.diff(vals)
                    inc = float(np.where(d >= 0, d, vals[1:]).sum())
                    total += inc / (tt[-1] - tt[0]) if reduce == "rate" else inc
                elif not len(vals):
                    continue
                elif reduce == "avg_over_time":
                    total += float(vals.mean())
                elif reduce == "max_over_time":
                    total += float(vals.max())
                elif reduce == "min_over_time":
                    total += float(vals.min())
                else:  # last_over_time
                    total += float(vals[-1])
                seen = True
            if seen:
                out[pod] = total
        return out or None

    def _sum(self, per_pod: dict[int, float] | None) -> float | None:
        return None if per_pod is None else float(sum(per_pod.values()))

    def rate(self, name: str, window: float = 60.0, matchers: dict[str, str] | str | None = None,
             by_pod: bool = False) -> float | dict[int, float] | None:
        """sum(rate(name{matchers}[window])), or per pod with by_pod."""
        r = self._per_pod(self.columns(name, matchers), window, "rate")
        return r if by_pod else self._sum(r)

    def increase(self, name: str, window: float = 60.0, matchers: dict[str, str] | str | None = None,
                 by_pod: bool = False) -> float | dict[int, float] | None:
        r = self._per_pod(self.columns(name, matchers), window, "increase")
        return r if by_pod else self._sum(r)

    def avg_over_time(self, name: str, window: float = 60.0, matchers: dict[str, str] | str | None = None,
                      by_pod: bool = False) -> float | dict[int, float] | None:
        r = self._per_pod(self.columns(name, matchers), window, "avg_over_time")
        return r if by_pod else self._sum(r)

    def max_over_time(self, name: str, window: float = 60.0, matchers: dict[str, str] | str | None = None,
                      by_pod: bool = False) -> float | dict[int, float] | None:
        r = self._per_pod(self.columns(name, matchers), window, "max_over_time")
        return r if by_pod else self._sum(r)

    def last(self, name: str, matchers: dict[str, str] | str | None = None,
             by_pod: bool = False) -> float | dict[int, float] | None:
        """sum(name{matchers}): the newest scrape's values (pods not in it are stale), within 5 minutes."""
        if self.down() or not self.scrapes or self.scrapes[-1][0] < self.now - 300:
            return None
        t, pods, values = self.scrapes[-1]
        cols = self.columns(name, matchers)
        out: dict[int, float] = {}
        for row, pod in enumerate(pods):
            v = values[row, cols]
            v = v[~np.isnan(v)]
            if len(v):
                out[int(pod)] = float(v.sum())
        if not out:
            return None
        return out if by_pod else float(sum(out.values()))

    def query(self, expr: str) -> float | None:
        """A small PromQL subset: `[sum(]FUNC(series{matchers}[window])[)]` or `[sum(]series{matchers}[)]`."""
        m = _QUERY.match(expr)
        if not m:
            raise SimulatorError(f"query: only sum(FUNC(series{{...}}[w])) and sum(series{{...}}) are simulated, "
                                 f"got {expr!r}")
        func, name, matchers, window = m.groups()
        if func is None:
            if window:
                raise SimulatorError(f"query: a range vector needs a function, got {expr!r}")
            return self.last(name, matchers)
        if not window:
            raise SimulatorError(f"query: {func} needs a [window], got {expr!r}")
        w = parse_duration(window)
        if func == "last_over_time":
            return self._sum(self._per_pod(self.columns(name, matchers), w, "last_over_time"))
        return getattr(self, func)(name, w, matchers)


def _split_matchers(text: str) -> list[str]:
    parts, cur, quoted = [], "", False
    for ch in text:
        if ch == '"' and not cur.endswith("\\"):
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


# ---- the simulator -------------------------------------------------------------------------------------------------

LoadTime = float | tuple[float, float] | Callable[[int, np.random.Generator, bool], float] | None


class Simulator:
    """A Deployment of TEI pods behind a Service, fed open-loop arrivals and closed-loop bulk clients (one
    BulkClients group, or several: e.g. one per stretch of a trace with its own worker count).

    replicas0: pods Ready at t=0 (beyond `quota`, the rest are Pending). quota: GPUs the nodes hold (None: no
    limit). routing: "random" (kube-proxy picks a Ready pod per request) or "keepalive" (a connection stays on the
    pod it reached until it is closed: after an exponential lifetime of mean `connection_lifetime_s`, or when its pod
    leaves the Service). load_time: None = the profile's (cold uniform in [cold_min, cold_max]; warm on a GPU that
    has held this model before, when `warm_cache`), a number (every pod), a (min, max) range, or a callable
    (k-th load, rng, warm) -> seconds. The k-th pod to get a GPU gets the k-th draw whatever the policy.
    """

    def __init__(self, profile: Profile, *, replicas0: int, quota: int | None = None, seed: int = 0,
                 routing: Routing = "random", arrivals: OpenArrivals,
                 bulk: BulkClients | Sequence[BulkClients] | None = None,
                 load_time: LoadTime = None, warm_cache: bool = True, connection_lifetime_s: float = 60.0,
                 scrape_interval_s: float = 15.0, scrape_phase_s: float = 0.0, prometheus_retention_s: float = 900.0,
                 metrics_outage: tuple[float, float] | None = None, batch_log: int = 0) -> None:
        if routing not in ("random", "keepalive"):
            raise SimulatorError(f"routing: must be random or keepalive, got {routing!r}")
        if replicas0 < 0:
            raise SimulatorError(f"replicas0: must be >= 0, got {replicas0}")
        if quota is not None and quota < 0:
            raise SimulatorError(f"quota: must be >= 0 or None, got {quota}")
        if not isinstance(arrivals, OpenArrivals):
            raise SimulatorError(f"arrivals: expected OpenArrivals, got {type(arrivals).__name__}")
        if connection_lifetime_s <= 0:
            raise SimulatorError(f"connection_lifetime_s: must be > 0, got {connection_lifetime_s}")
        groups = [] if bulk is None else [bulk] if isinstance(bulk, BulkClients) else list(bulk)
        for g, group in enumerate(groups):
            name = "bulk" if isinstance(bulk, BulkClients) else f"bulk[{g}]"
            if not isinstance(group, BulkClients):
                raise SimulatorError(f"{name}: expected BulkClients, got {type(group).__name__}")
            if group.workers and group.inputs_per_request > profile.max_client_batch_size:
                raise SimulatorError(f"{name}.inputs_per_request: {group.inputs_per_request} is more than the "
                                     f"profile's max_client_batch_size ({profile.max_client_batch_size}); TEI would "
                                     "refuse every one")
            if group.workers and group.tokens_max > profile.max_batch_tokens:
                raise SimulatorError(f"{name}.tokens_max: {group.tokens_max} exceeds max_batch_tokens "
                                     f"({profile.max_batch_tokens})")
        self.profile, self.quota, self.seed, self.routing = profile, quota, seed, routing
        self.arrivals, self.bulk_groups = arrivals, tuple(groups)
        self.now = 0.0
        self.desired = replicas0
        self._rng = np.random.default_rng([seed, 0x5EED])
        self._load_time = load_time
        self._warm_cache = warm_cache
        self._loads = 0
        self._gpu_high_water = 0
        self.prometheus = SimPrometheus(scrape_interval_s, scrape_phase_s, prometheus_retention_s, metrics_outage)
        self._next_scrape = scrape_phase_s

        p = profile
        self._prof = np.array([p.overhead_s, p.seconds_per_token, p.seconds_per_token_sq, p.max_batch_tokens,
                               p.max_batch_requests or 0, p.max_concurrent_requests, p.max_client_batch_size,
                               p.max_input_length], dtype=np.float64)
        ring = 1 << max(1, (p.max_concurrent_requests - 1).bit_length())
        self._mask = ring - 1
        self._ring = ring

        # open-loop requests (tokens truncated to max_input_length, as TEI's auto-truncate does)
        a = arrivals
        n = a.n
        self._a_tok = np.minimum(a.input_tokens, p.max_input_length).astype(np.int64)
        self._a_u = np.random.default_rng([seed, 0xA11]).random(n)
        self._a_done = np.full(n, np.nan)
        self._a_status = np.zeros(n, np.int16)
        self._a_pod = np.full(n, -1, np.int32)
        self._a_left = np.zeros(n, np.int32)
        self._a_qsum = np.zeros(n)
        self._a_isum = np.zeros(n)
        n_conn = int(a.conn.max()) + 1 if n and a.conn.max() >= 0 else 0
        n_workers = sum(g.workers for g in groups)
        self._conn_pod = np.full(n_conn + n_workers, -1, np.int64)
        self._conn_expire = np.zeros(n_conn + n_workers)
        self._rp = np.array([K.ROUTE_KEEPALIVE if routing == "keepalive" else K.ROUTE_RANDOM, connection_lifetime_s,
                             seed, n_conn], dtype=np.float64)

        # bulk clients: one row of parameters per worker (its group's settings and its index in the group)
        rows = [[g.start_s, g.stop_s, g.inputs_per_request, g.tokens_min, g.tokens_max, g.backoff_initial_s,
                 g.backoff_max_s, g.seed, local] for g in groups for local in range(g.workers)]
        self._wp = np.array(rows, dtype=np.float64).reshape(len(rows), K.N_BP)
        self._worker_group = np.array([i for i, g in enumerate(groups) for _ in range(g.workers)], dtype=np.int32)
        self._w_next = np.where(self._wp[:, K.B_STOP] > self._wp[:, K.B_START], self._wp[:, K.B_START], np.inf)
        self._w_seq = np.zeros(n_workers, np.int64)
        self._w_retry = np.zeros(n_workers, np.int64)
        self._b_tok = np.zeros(max([g.inputs_per_request for g in groups], default=1), np.int64)
        self._alloc_attempts(max(1024, 4 * n_workers))

        # pods
        self._st = np.zeros(K.N_ST, np.int64)
        self._blog = np.zeros((batch_log, 5))
        self._pods: list[PodRecord] = []
        self._alloc_pods(16)
        self._ready = np.zeros(0, np.int64)
        self._active = np.zeros(self._cap_pods, np.int64)
        for _ in range(replicas0):
            self._create_pod(0.0)
        for rec in self._pods:
            if self.quota is None or self._gpus_used() < self.quota:
                self._assign_gpu(rec, 0.0, load_s=0.0)
                rec.ready_at = 0.0
                self._set_phase(rec, K.READY)
        self._refresh_lists()
        self.view = FleetView(self)

    # ---- storage ------------------------------------------------------------------------------------------------
    def _alloc_attempts(self, cap: int) -> None:
        def grow(name: str, dtype: type, fill: float) -> None:
            arr = np.full(cap, fill, dtype)
            prev = getattr(self, name, None)
            if prev is not None:
                arr[: len(prev)] = prev
            setattr(self, name, arr)

        grow("_b_t", np.float64, np.nan)
        grow("_b_done", np.float64, np.nan)
        grow("_b_status", np.int16, 0)
        grow("_b_pod", np.int32, -1)
        grow("_b_left", np.int32, 0)
        grow("_b_qsum", np.float64, 0.0)
        grow("_b_isum", np.float64, 0.0)
        grow("_b_worker", np.int32, -1)
        grow("_b_seq", np.int64, 0)
        grow("_b_inputs", np.int64, 0)
        grow("_b_ntok", np.int64, 0)

    def _alloc_pods(self, cap: int) -> None:
        def grow(name: str, shape: tuple[int, ...], dtype: type, fill: float) -> None:
            arr = np.full(shape, fill, dtype)
            prev = getattr(self, name, None)
            if prev is not None:
                arr[: prev.shape[0]] = prev
            setattr(self, name, arr)

        grow("_ps", (cap, K.N_PS), np.int64, 0)
        grow("_pf", (cap, K.N_PF), np.float64, 0.0)
        if getattr(self, "_cap_pods", 0) == 0:
            self._pf[:, K.RUN_END] = np.inf
        else:
            self._pf[self._cap_pods:, K.RUN_END] = np.inf
        grow("_pc", (cap, K.N_PC), np.float64, 0.0)
        grow("_q_tok", (cap, self._ring), np.int64, 0)
        grow("_q_req", (cap, self._ring), np.int64, 0)
        grow("_h_size", (cap, len(BATCH_SIZE_BUCKETS) + 1), np.float64, 0.0)
        grow("_h_tok", (cap, len(BATCH_TOKENS_BUCKETS) + 1), np.float64, 0.0)
        grow("_h_dur", (cap, 3, len(DURATION_BUCKETS) + 1), np.float64, 0.0)
        active = np.zeros(cap, np.int64)
        if hasattr(self, "_active"):
            active[: len(self._active)] = self._active
        self._active = active
        self._cap_pods = cap

    # ---- pods -----------------------------------------------------------------------------------------------------
    def _create_pod(self, now: float) -> PodRecord:
        pid = len(self._pods)
        if pid >= self._cap_pods:
            self._alloc_pods(self._cap_pods * 2)
        rec = PodRecord(pid, now)
        self._pods.append(rec)
        return rec

    def _set_phase(self, rec: PodRecord, phase: int) -> None:
        rec.phase = phase
        self._ps[rec.id, K.PHASE] = phase

    def _gpus_used(self) -> int:
        return sum(1 for r in self._pods if r.phase in (K.LOADING, K.READY, K.DRAINING))

    def _draw_load(self, warm: bool) -> float:
        k = self._loads
        self._loads += 1
        lt, ls = self._load_time, self.profile.load_seconds
        rng = np.random.default_rng([self.seed, 0x10AD, k])
        if lt is None:
            return ls.warm if warm else float(rng.uniform(ls.cold_min, ls.cold_max))
        if callable(lt):
            return float(lt(k, rng, warm))
        if isinstance(lt, tuple):
            return float(rng.uniform(lt[0], lt[1]))
        return float(lt)

    def _assign_gpu(self, rec: PodRecord, now: float, load_s: float | None = None) -> None:
        used = self._gpus_used()
        warm = self._warm_cache and used < self._gpu_high_water
        rec.scheduled_at = now
        rec.warm = warm
        rec.load_s = self._draw_load(warm) if load_s is None else load_s
        rec.ready_at = now + rec.load_s
        self._set_phase(rec, K.LOADING)
        self._gpu_high_water = max(self._gpu_high_water, used + 1)

    def _schedule(self, now: float) -> None:
        for rec in self._pods:
            if rec.phase == K.PENDING and (self.quota is None or self._gpus_used() < self.quota):
                self._assign_gpu(rec, now)

    def _refresh_lists(self) -> None:
        ready = [r.id for r in self._pods if r.phase == K.READY]
        self._ready = np.array(ready, dtype=np.int64)
        active = [r.id for r in self._pods if r.phase in (K.READY, K.DRAINING)]
        self._active[: len(active)] = active
        self._st[K.S_N_ACTIVE] = len(active)

    def _remove(self, rec: PodRecord, now: float) -> None:
        rec.gone_at = now
        self._pf[rec.id, K.GONE_AT] = now
        self._set_phase(rec, K.GONE)

    def live_pods(self) -> list[PodRecord]:
        """Pods that count toward the Deployment's replicas (not terminating, not gone)."""
        return [r for r in self._pods if r.phase in (K.PENDING, K.LOADING, K.READY)]

    def set_desired(self, n: int, now: float | None = None) -> None:
        """Scale the Deployment to `n` replicas at `now` (default: the current simulated time)."""
        if n < 0:
            raise SimulatorError(f"replicas: must be >= 0, got {n}")
        now = self.now if now is None else now
        if now > self.now:
            self.advance_to(now)
        self.desired = int(n)
        live = self.live_pods()
        if n > len(live):
            for _ in range(n - len(live)):
                self._create_pod(self.now)
        elif n < len(live):
            # A ReplicaSet deletes unscheduled pods first, then not-ready ones, then the most recently ready; newest
            # first within each group.
            def rank(r: PodRecord) -> tuple[int, float, int]:
                group = {K.PENDING: 0, K.LOADING: 1, K.READY: 2}[r.phase]
                return group, -(r.ready_at if r.phase == K.READY else r.created_at), -r.id
            for rec in sorted(live, key=rank)[: len(live) - n]:
                if rec.phase in (K.PENDING, K.LOADING):
                    self._remove(rec, self.now)
                elif self._ps[rec.id, K.TAIL] == self._ps[rec.id, K.RUN_LO]:
                    self._remove(rec, self.now)  # nothing in flight: gone at once
                else:
                    self._set_phase(rec, K.DRAINING)
        self._schedule(self.now)
        self._refresh_lists()

    # ---- time ---------------------------------------------------------------------------------------------------
    def advance_to(self, t: float) -> None:
        """Run the simulation up to time t (every event at or before t)."""
        first = True
        while first or self.now < t:
            first = False
            loading = [r.ready_at for r in self._pods if r.phase == K.LOADING and r.ready_at is not None]
            nxt = min([t, self._next_scrape] + loading)
            nxt = max(nxt, self.now)
            pending = any(r.phase == K.PENDING for r in self._pods)
            reached = self._run_kernel(nxt, stop_on_gone=pending)
            self.now = reached
            if reached < nxt:
                continue  # a draining pod left: its GPU may go to a Pending pod; go on from there
            changed = False
            for rec in self._pods:
                if rec.phase == K.LOADING and rec.ready_at is not None and rec.ready_at <= self.now:
                    self._set_phase(rec, K.READY)
                    changed = True
            if changed:
                self._refresh_lists()
            if self._next_scrape <= self.now:
                self._scrape(self.now)
                self._next_scrape += self.prometheus.interval
            if nxt == t:
                break

    def _run_kernel(self, t_stop: float, stop_on_gone: bool) -> float:
        while True:
            reached, code = K.run(
                t_stop, stop_on_gone, self._st, self._prof, self._rp, self._wp,
                self._ps, self._pf, self._pc, self._q_tok, self._q_req, self._mask, self._h_size, self._h_tok,
                self._h_dur, self._ready, len(self._ready), self._active,
                self.arrivals.t, self.arrivals.input_offsets, self._a_tok, self.arrivals.conn, self._a_u,
                self._a_done, self._a_status, self._a_pod, self._a_left, self._a_qsum, self._a_isum,
                self._conn_pod, self._conn_expire,
                self._w_next, self._w_seq, self._w_retry, self._b_t, self._b_done, self._b_status, self._b_pod,
                self._b_left, self._b_qsum, self._b_isum, self._b_worker, self._b_seq, self._b_inputs, self._b_ntok,
                self._b_tok,
                self._blog)
            if code == K.NEED_ROOM:
                self._alloc_attempts(2 * len(self._b_t))
                continue
            if code == K.POD_GONE:
                rec = self._pods[int(self._st[K.S_GONE_POD])]
                rec.gone_at = float(reached)
                rec.phase = K.GONE
                self.now = float(reached)
                self._schedule(self.now)
                self._refresh_lists()
                return float(reached)
            # pods that drained while nobody waited for their GPU
            for rec in self._pods:
                if rec.phase == K.DRAINING and self._ps[rec.id, K.PHASE] == K.GONE:
                    rec.phase = K.GONE
                    rec.gone_at = float(self._pf[rec.id, K.GONE_AT])
            return float(t_stop)

    # ---- what a policy may see ------------------------------------------------------------------------------------
    def _series_matrix(self, pods: Sequence[int]) -> np.ndarray:
        """Every catalogue series (SERIES) of these pods, NaN where TEI has not created the series yet."""
        idx = np.asarray(pods, dtype=np.int64)
        out = np.empty((len(idx), len(SERIES)))
        K.series_rows(idx, self._ps, self._pf, self._pc, self._h_size, self._h_tok, self._h_dur, _COUNTER_COLUMNS,
                      out)
        return out

    def _scrape(self, now: float) -> None:
        pods = self._ready.copy()
        self.prometheus._record(now, pods, self._series_matrix(pods))

    def metrics_page(self, pod_id: int) -> str:
        """Pod `pod_id`'s GET /metrics now, as TEI writes it (see tei_operator.emulator.metrics)."""
        rec = self._pods[pod_id] if 0 <= pod_id < len(self._pods) else None
        if rec is None or rec.phase != K.READY:
            raise SimulatorError(f"pod {pod_id}: no metrics page (only Ready pods serve /metrics)")
        row = self._series_matrix([pod_id])[0].tolist()
        out: list[str] = []
        for header, columns in _FAMILIES:
            started = False
            for i in columns:
                v = row[i]
                if v != v:  # NaN: TEI has not created this series yet
                    continue
                if not started:
                    out.append(header)
                    started = True
                out.append(_PREFIX[i] + (str(int(v)) if v.is_integer() else _fmt(v)))
            if started:
                out.append("")
        return "\n".join(out)

    def batch_log(self) -> np.ndarray:
        """The first `batch_log` formed batches (tests): rows of (pod, time, inputs, tokens, queue gauge after)."""
        return self._blog[: int(self._st[K.S_N_LOG])].copy()

    def inflight(self, pod_id: int) -> int:
        """Requests admitted by pod `pod_id` and not answered yet (Knative's queue-proxy concurrency)."""
        return int(self._ps[pod_id, K.INFLIGHT])

    def pods(self) -> list[PodInfo]:
        return [PodInfo(r.id, PHASE_NAMES[r.phase], r.created_at,
                        r.ready_at if r.phase in (K.READY, K.DRAINING) else None)
                for r in self._pods if r.phase != K.GONE]

    # ---- after the run ------------------------------------------------------------------------------------------
    def gpu_seconds(self, until: float | None = None) -> float:
        """GPU time billed so far: from Loading until the pod is gone."""
        end = self.now if until is None else until
        total = 0.0
        for r in self._pods:
            if r.scheduled_at is None:
                continue
            stop = r.gone_at if r.gone_at is not None else end
            total += max(0.0, min(stop, end) - r.scheduled_at)
        return total

    def results(self) -> SimResults:
        a = self.arrivals
        tokens = a.tokens_per_request(self.profile.max_input_length)
        nb = int(self._st[K.S_N_ATTEMPTS])
        b_tokens = self._b_ntok[:nb].copy()
        served: dict[int, float] = {}
        ok = self._a_status == 200
        for c in np.unique(a.cls):
            served[int(c)] = float(tokens[ok & (a.cls == c)].sum())
        bulk_ok = self._b_status[:nb] == 200
        served[BULK_CLASS] = served.get(BULK_CLASS, 0.0) + float(b_tokens[bulk_ok].sum())
        return SimResults(a.t, self._a_done.copy(), self._a_status.copy(), a.cls, self._a_pod.copy(),
                          a.inputs_per_request(), tokens, self._b_t[:nb].copy(), self._b_done[:nb].copy(),
                          self._b_status[:nb].copy(), self._b_worker[:nb].copy(), self._b_seq[:nb].copy(),
                          self._b_inputs[:nb].copy(), b_tokens, self.gpu_seconds(), served,
                          [PodRecord(**vars(r)) for r in self._pods], self.now,
                          self._worker_group[self._b_worker[:nb]] if nb else np.zeros(0, np.int32))


def report_section(link: str = "simulator.md") -> str:
    """The "How the simulator works" section of the benchmark report (markdown), linking the full page
    (docs/benchmarks/simulator.md; `link` relative to the report)."""
    return f"""## How the simulator works

Every request, batch and pod is an event in simulated time ([{link}]({link})). Each replica runs TEI's router as the
TEI emulator does (one shared model, `tei_operator/emulator/batching.py`): a FIFO of inputs, batches up to
max_batch_tokens formed while the previous batch runs (one parking slot), batch time = overhead + a x tokens +
b x sum(length^2) from the model/GPU profile, one concurrency permit per input (429 beyond
max_concurrent_requests), and TEI's metrics with their semantics (te_queue_size reset at each batch, empty batches
counted). Pods go Pending (no GPU in the quota), Loading (billed; cold or warm load time from the profile),
Ready, Draining (answering what they admitted). Requests are routed to a random Ready pod, or stay on a kept-alive
connection's pod. Policies see only pods, their /metrics pages, in-flight counts and a Prometheus that scrapes every
15 s. The model is checked batch by batch against its reference and, end to end, against the emulator driven by the
load generator (within a few percent at 30-85% load; the page has the table).
"""


def _fmt(value: float) -> str:
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    from prometheus_client.utils import floatToGoString
    return floatToGoString(value)


class FleetView:
    """What a scaling policy may look at; everything else about the simulation is hidden."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    @property
    def now(self) -> float:
        return self._sim.now

    @property
    def desired(self) -> int:
        """The Deployment's spec.replicas."""
        return self._sim.desired

    @property
    def quota(self) -> int | None:
        """Replicas the GPU nodes can hold, or None."""
        return self._sim.quota

    @property
    def prometheus(self) -> SimPrometheus:
        return self._sim.prometheus

    def pods(self) -> list[PodInfo]:
        return self._sim.pods()

    def metrics_page(self, pod_id: int) -> str:
        return self._sim.metrics_page(pod_id)

    def inflight(self, pod_id: int) -> int:
        return self._sim.inflight(pod_id)
