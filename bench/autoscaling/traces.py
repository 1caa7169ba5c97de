"""Load traces: per-class request rates over a real time axis, and the scenario around them (faults, quota).

Trace file format (CSV, see bench/traces/README.md):

    # name: step
    # description: queries 400/s for 10 min, 1,600/s for 20 min, back to 400/s
    # step_at: 600              optional: time of the load step (for "time to first scale-up")
    # step_seconds: 60          optional: how long the step/spike lasts (a spike shorter than a model load is
    #                           reported separately: nothing reactive can serve it)
    # metrics_outage: 900-1500  optional: Prometheus has no data and pods' pages cannot be read in [START, END)
    # gpu_quota: 5              optional: most replicas the GPU nodes can hold
    # bulk_job_tokens: 4e9      optional: size of the bulk job; its completion time is reported
    # bulk_deadline_s: 28800    optional: when the bulk job must be done
    time_s,query_rps[,document_rps][,rerank_rps][,bulk_workers][,cv]
    0,400
    600,1600
    1800,400
    2400,400

A row's rates hold until the next row's time (piecewise constant); the last row only marks the end. Columns:
`query_rps`, `document_rps`, `rerank_rps`: open-loop arrivals per second of classes 0, 1, 3 (default 0);
`bulk_workers`: closed-loop bulk workers active in the row (default 0); `cv`: coefficient of variation of the
inter-arrival times (1 = Poisson, 2-4 = bursty; default 1). `requests_per_second` (the old format) is read as
`query_rps`.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .classes import DOCUMENT, QUERY, RERANK

RATE_COLUMNS = ("query_rps", "document_rps", "rerank_rps")
COLUMNS = ("time_s",) + RATE_COLUMNS + ("bulk_workers", "cv")
LEGACY = {"requests_per_second": "query_rps"}
CLASS_OF_COLUMN = {"query_rps": QUERY, "document_rps": DOCUMENT, "rerank_rps": RERANK}
META_FLOAT = ("step_at", "step_seconds", "bulk_job_tokens", "bulk_deadline_s")


class TraceError(ValueError):
    """A trace file that does not follow the documented format; the message names the file, line and field."""


@dataclass(frozen=True)
class Trace:
    """Per-class request rates over time and the scenario around them."""

    name: str
    times: np.ndarray
    rates: dict[int, np.ndarray]
    """class id -> requests/s per row (open-loop classes only)."""
    bulk_workers: np.ndarray
    cv: np.ndarray
    description: str = ""
    step_at: float | None = None
    step_seconds: float | None = None
    metrics_outage: tuple[float, float] | None = None
    gpu_quota: int | None = None
    bulk_job_tokens: float | None = None
    bulk_deadline_s: float | None = None
    meta: dict = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return float(self.times[-1])

    def rate_at(self, t: np.ndarray | float, cls: int | None = None) -> np.ndarray:
        """Requests/s of one class (or of all open-loop classes) at time(s) t."""
        i = np.clip(np.searchsorted(self.times, t, side="right") - 1, 0, len(self.times) - 2)
        if cls is not None:
            return self.rates.get(cls, np.zeros(len(self.times)))[i]
        return sum(r[i] for r in self.rates.values())

    def classes(self) -> list[int]:
        """Open-loop classes with any traffic."""
        return sorted(c for c, r in self.rates.items() if r[:-1].max() > 0)

    def has_bulk(self) -> bool:
        return bool(self.bulk_workers[:-1].max() > 0)

    def scaled(self, time_factor: float) -> "Trace":
        """The same trace with its time axis compressed (quick mode only; reports never use it)."""
        f = time_factor
        s = lambda x: None if x is None else x * f  # noqa: E731
        out = None if self.metrics_outage is None else (self.metrics_outage[0] * f, self.metrics_outage[1] * f)
        return replace(self, times=self.times * f, step_at=s(self.step_at), step_seconds=s(self.step_seconds),
                       metrics_outage=out, bulk_deadline_s=s(self.bulk_deadline_s))

    def only(self, classes: set[int], bulk: bool) -> "Trace":
        """The same trace restricted to some classes (one pool of a split deployment)."""
        zero = np.zeros(len(self.times))
        return replace(self, rates={c: (r if c in classes else zero) for c, r in self.rates.items()},
                       bulk_workers=self.bulk_workers if bulk else zero)


def _num(path: Path, where: str, key: str, raw: str | None, default: float | None, positive: bool = False) -> float:
    if raw in (None, ""):
        if default is None:
            raise TraceError(f"{path}: {where}: {key} is required")
        return default
    try:
        v = float(raw)
    except ValueError:
        raise TraceError(f"{path}: {where}: {key}={raw!r} is not a number") from None
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise TraceError(f"{path}: {where}: {key}={raw!r} must be a finite number {'> 0' if positive else '>= 0'}")
    return v


def load_trace(path: str | Path) -> Trace:
    """Read a trace CSV; raise TraceError naming the file, line and field on anything malformed."""
    path = Path(path)
    meta: dict[str, str] = {}
    rows: list[str] = []
    try:
        text = path.read_text()
    except OSError as e:
        raise TraceError(f"{path}: cannot read: {e.strerror}") from None
    for line in text.splitlines():
        if line.startswith("#"):
            key, sep, value = line[1:].partition(":")
            if sep:
                meta[key.strip()] = value.strip()
        elif line.strip():
            rows.append(line)
    if not rows:
        raise TraceError(f"{path}: no data rows (expected a header time_s,query_rps,... and rows)")
    reader = csv.DictReader(rows)
    header = [LEGACY.get(h.strip(), h.strip()) for h in reader.fieldnames or []]
    reader.fieldnames = header
    unknown = [c for c in header if c not in COLUMNS]
    if "time_s" not in header or unknown or not any(c in header for c in RATE_COLUMNS + ("bulk_workers",)):
        raise TraceError(f"{path}: header must have time_s and at least one of {RATE_COLUMNS + ('bulk_workers',)}"
                         f" (optional: cv); unknown columns: {unknown}")
    cols: dict[str, list[float]] = {c: [] for c in COLUMNS}
    for n, row in enumerate(reader, start=1):
        where = f"data row {n}"
        for c in COLUMNS:
            if c == "cv":
                cols[c].append(_num(path, where, c, row.get(c), 1.0, positive=True))
            elif c == "time_s":
                cols[c].append(_num(path, where, c, row.get(c), None))
            else:
                cols[c].append(_num(path, where, c, row.get(c), 0.0))
        if cols["bulk_workers"][-1] != int(cols["bulk_workers"][-1]):
            raise TraceError(f"{path}: {where}: bulk_workers={row.get('bulk_workers')!r} must be a whole number")
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
        if not 0 <= a < b:
            raise TraceError(f"{path}: metrics_outage: START must be >= 0 and below END, got {meta['metrics_outage']!r}")
        outage = (a, b)
    floats = {k: _num(path, "header", k, meta[k], None) for k in META_FLOAT if k in meta}
    quota = None
    if "gpu_quota" in meta:
        try:
            quota = int(meta["gpu_quota"])
        except ValueError:
            raise TraceError(f"{path}: gpu_quota must be a whole number of replicas, got {meta['gpu_quota']!r}") from None
        if quota < 1:
            raise TraceError(f"{path}: gpu_quota must be >= 1, got {quota}")
    rates = {CLASS_OF_COLUMN[c]: np.array(cols[c]) for c in RATE_COLUMNS}
    return Trace(meta.get("name", path.stem), times, rates, np.array(cols["bulk_workers"]), np.array(cols["cv"]),
                 meta.get("description", ""), floats.get("step_at"), floats.get("step_seconds"), outage, quota,
                 floats.get("bulk_job_tokens"), floats.get("bulk_deadline_s"), meta)


def write_trace(path: Path, name: str, description: str, rows: list[dict], extra: dict | None = None) -> None:
    """Write a trace in the documented format (used by make_traces.py); rows are dicts of column -> value."""
    used = [c for c in COLUMNS if any(c in r for r in rows)]
    lines = [f"# name: {name}", f"# description: {description}"]
    lines += [f"# {k}: {v}" for k, v in (extra or {}).items()]
    lines.append(",".join(used))
    lines += [",".join(f"{r.get(c, 0 if c != 'cv' else 1):g}" for c in used) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
