"""Load traces (request rate over time) and turn them into seeded request arrivals with realistic sizes.

Trace file format (CSV, see bench/traces/README.md):

    # name: step
    # description: 1x for 10 min, 5x for 30 min, back to 1x
    # step_at: 600              optional: time of the load step (for "time to first scale-up")
    # metrics_outage: 900-1200  optional: Prometheus returns no series in this interval
    # gpu_quota: 5              optional: most replicas the GPU nodes can hold
    time_s,requests_per_second[,cv][,inputs_scale][,tokens_scale]
    0,60
    600,300
    2400,60
    3000,60

The rate is piecewise constant: a row's rate holds until the next row's time; the last row only marks the end.
`cv` is the coefficient of variation of inter-arrival times (1 = Poisson, 2-4 = bursty; default 1).
`inputs_scale` / `tokens_scale` multiply the median inputs per request and tokens per input (default 1).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

COLUMNS = ("time_s", "requests_per_second", "cv", "inputs_scale", "tokens_scale")


class TraceError(ValueError):
    """A trace file that does not follow the documented format; the message names the file, line and field."""


@dataclass(frozen=True)
class Trace:
    """A request-rate profile and the scenario around it (faults, quota)."""

    name: str
    times: np.ndarray
    rates: np.ndarray
    cv: np.ndarray
    inputs_scale: np.ndarray
    tokens_scale: np.ndarray
    description: str = ""
    step_at: float | None = None
    metrics_outage: tuple[float, float] | None = None
    gpu_quota: int | None = None
    meta: dict = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return float(self.times[-1])

    def rate_at(self, t: np.ndarray | float) -> np.ndarray:
        """Requests/s at time(s) t (piecewise constant)."""
        i = np.clip(np.searchsorted(self.times, t, side="right") - 1, 0, len(self.rates) - 1)
        return self.rates[i]

    def scaled(self, time_factor: float) -> "Trace":
        """The same trace with its time axis compressed (for the quick mode)."""
        f = time_factor
        return Trace(self.name, self.times * f, self.rates, self.cv, self.inputs_scale, self.tokens_scale,
                     self.description, None if self.step_at is None else self.step_at * f,
                     None if self.metrics_outage is None else (self.metrics_outage[0] * f, self.metrics_outage[1] * f),
                     self.gpu_quota, self.meta)


def load_trace(path: str | Path) -> Trace:
    """Read a trace CSV; raise TraceError naming the file, line and field on anything malformed."""
    path = Path(path)
    meta: dict[str, str] = {}
    rows: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            key, sep, value = line[1:].partition(":")
            if sep:
                meta[key.strip()] = value.strip()
        elif line.strip():
            rows.append(line)
    if not rows:
        raise TraceError(f"{path}: no data rows (expected a header {','.join(COLUMNS[:2])} and rows)")
    reader = csv.DictReader(rows)
    header = reader.fieldnames or []
    missing = [c for c in COLUMNS[:2] if c not in header]
    unknown = [c for c in header if c not in COLUMNS]
    if missing or unknown:
        raise TraceError(f"{path}: header must have {COLUMNS[:2]} and optionally {COLUMNS[2:]}; "
                         f"missing {missing}, unknown {unknown}")
    cols: dict[str, list[float]] = {c: [] for c in COLUMNS}
    defaults = {"cv": 1.0, "inputs_scale": 1.0, "tokens_scale": 1.0}
    for n, row in enumerate(reader, start=2):
        for c in COLUMNS:
            raw = row.get(c)
            try:
                v = float(raw) if raw not in (None, "") else defaults[c]
            except (KeyError, ValueError):
                raise TraceError(f"{path}: data row {n - 1}: {c}={raw!r} is not a number") from None
            if not math.isfinite(v) or v < 0 or (c in defaults and v <= 0):
                raise TraceError(f"{path}: data row {n - 1}: {c}={raw!r} must be a finite number "
                                 f"{'> 0' if c in defaults else '>= 0'}")
            cols[c].append(v)
    times = np.array(cols["time_s"])
    if len(times) < 2 or np.any(np.diff(times) <= 0) or times[0] != 0:
        raise TraceError(f"{path}: time_s must start at 0 and increase strictly, with at least 2 rows")
    outage = None
    if "metrics_outage" in meta:
        try:
            a, b = (float(x) for x in meta["metrics_outage"].split("-"))
        except ValueError:
            raise TraceError(
                f"{path}: metrics_outage must be START-END in seconds, got {meta['metrics_outage']!r}") from None
        outage = (a, b)
    try:
        step_at = float(meta["step_at"]) if "step_at" in meta else None
        quota = int(meta["gpu_quota"]) if "gpu_quota" in meta else None
    except ValueError as e:
        raise TraceError(f"{path}: step_at must be seconds and gpu_quota an integer: {e}") from None
    return Trace(meta.get("name", path.stem), times, np.array(cols["requests_per_second"]), np.array(cols["cv"]),
                 np.array(cols["inputs_scale"]), np.array(cols["tokens_scale"]), meta.get("description", ""),
                 step_at, outage, quota, meta)


def write_trace(path: Path, name: str, description: str, rows: list[tuple], extra: dict | None = None,
                columns: tuple[str, ...] = COLUMNS[:2]) -> None:
    """Write a trace in the documented format (used by make_traces.py)."""
    lines = [f"# name: {name}", f"# description: {description}"]
    lines += [f"# {k}: {v}" for k, v in (extra or {}).items()]
    lines.append(",".join(columns))
    lines += [",".join(f"{x:g}" for x in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")


@dataclass(frozen=True)
class RequestMix:
    """Request sizes: a share of single short queries, the rest batches of document chunks.

    Defaults describe a retrieval service: half the requests embed one search query (~24 tokens), half embed a
    batch of document chunks (median 8 inputs, at most 32 = TEI's max client batch size, ~200 tokens each, long tail
    clipped at 8192, BGE-M3's context).
    """

    query_share: float = 0.5
    query_tokens_median: float = 24
    doc_inputs_median: float = 8
    doc_tokens_median: float = 200
    max_inputs: int = 32
    max_tokens_per_input: int = 8192

    def mean_tokens(self) -> float:
        """Mean tokens per request, estimated by sampling (used to size static fleets and the oracle)."""
        rng = np.random.default_rng(12345)
        _, tok = self.sample(rng, 200_000, np.ones(1), np.ones(1), np.zeros(200_000, dtype=int))
        return float(tok.mean())

    def sample(self, rng: np.random.Generator, n: int, inputs_scale: np.ndarray, tokens_scale: np.ndarray,
               seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and tokens of n requests; `seg` gives each request's trace row (for the size scales)."""
        is_query = rng.random(n) < self.query_share
        inputs = np.clip(np.round(rng.lognormal(math.log(self.doc_inputs_median), 0.7, n) * inputs_scale[seg]),
                         1, self.max_inputs).astype(np.int64)
        inputs[is_query] = 1
        total = int(inputs.sum())
        per_input = rng.lognormal(math.log(self.doc_tokens_median), 0.8, total)
        per_input = np.clip(per_input, 8, self.max_tokens_per_input)
        starts = np.concatenate(([0], np.cumsum(inputs)[:-1]))
        tokens = np.add.reduceat(per_input, starts)
        q_tok = np.clip(rng.lognormal(math.log(self.query_tokens_median), 0.6, n), 4, 512)
        tokens = np.where(is_query, q_tok, tokens) * tokens_scale[seg]
        return inputs, np.ceil(tokens)


@dataclass(frozen=True)
class Arrivals:
    """All requests of one trace and seed, sorted by arrival time; shared by every policy."""

    t: np.ndarray
    inputs: np.ndarray
    tokens: np.ndarray
    route: np.ndarray
    """A uniform number per request: the Service's random pick among the ready endpoints (same for every policy)."""
    jitter: np.ndarray
    """A uniform number per request: where in the running batch it arrives (residual batch time)."""


def generate_arrivals(trace: Trace, seed: int, mix: RequestMix) -> Arrivals:
    """Seeded arrivals: a renewal process per trace row with gamma inter-arrivals of the row's CV."""
    rng = np.random.default_rng(seed)
    chunks = []
    segs = []
    for i in range(len(trace.rates) - 1):
        t0, t1, lam, cv = trace.times[i], trace.times[i + 1], trace.rates[i], trace.cv[i]
        if lam <= 0:
            continue
        shape = 1.0 / (cv * cv)
        n = int(lam * (t1 - t0) * 1.1 + 10 * math.sqrt(lam * (t1 - t0)) * cv + 50)
        start = t0 + rng.random() * 1.0 / lam  # random phase
        gaps = rng.gamma(shape, 1.0 / (lam * shape), n)
        ts = start + np.cumsum(gaps)
        ts = ts[ts < t1]
        chunks.append(ts)
        segs.append(np.full(len(ts), i))
    t = np.concatenate(chunks) if chunks else np.zeros(0)
    seg = np.concatenate(segs) if segs else np.zeros(0, dtype=int)
    inputs, tokens = mix.sample(rng, len(t), trace.inputs_scale, trace.tokens_scale, seg)
    return Arrivals(t, inputs, tokens, rng.random(len(t)), rng.random(len(t)))
