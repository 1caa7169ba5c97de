"""Arrival generation: a trace and a seed -> the simulator's open-loop arrivals and closed-loop bulk clients.

Every policy of one (trace, seed) sees the same arrivals. Open-loop classes (query, document, rerank) arrive as a
renewal process per class whose rate is the trace's piecewise-constant rate (Poisson when cv = 1, gamma
inter-arrivals otherwise); their sizes come from bench/autoscaling/classes.py. Bulk is closed-loop: each run of rows
with the same `bulk_workers` > 0 becomes one `BulkClients` group that the simulator runs inside its event loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .classes import BULK_CLASS, CLASSES, OPEN_CLASSES
from .simulator import BulkClients, OpenArrivals
from .traces import Trace

BULK_BACKOFF_INITIAL_S = 0.5
BULK_BACKOFF_MAX_S = 30.0


@dataclass
class Workload:
    """What one (trace, seed) sends."""

    arrivals: OpenArrivals
    bulk: list[BulkClients]

    def requests(self, cls: int | None = None) -> int:
        return int(len(self.arrivals.t) if cls is None else np.count_nonzero(self.arrivals.cls == cls))


def _times(rng: np.random.Generator, t0: float, t1: float, rate: float, cv: float) -> np.ndarray:
    """Arrival times in [t0, t1) of a renewal process with the given rate and inter-arrival CV."""
    length = t1 - t0
    if rate <= 0 or length <= 0:
        return np.empty(0)
    if cv == 1.0:
        n = rng.poisson(rate * length)
        return np.sort(t0 + rng.random(n) * length)
    shape = 1.0 / (cv * cv)
    scale = 1.0 / (rate * shape)
    # start the renewal process in its stationary state: a random offset into the first gap
    out, t = [], t0 - rng.gamma(shape, scale) * rng.random()
    while True:
        k = int(rate * (t1 - t) * 1.1) + 32
        s = t + np.cumsum(rng.gamma(shape, scale, k))
        out.append(s[(s >= t0) & (s < t1)])
        if s[-1] >= t1:
            break
        t = float(s[-1])
    return np.concatenate(out)


def open_arrivals(trace: Trace, seed: int, connections: int | None = None) -> OpenArrivals:
    """Open-loop arrivals of every class in the trace, sorted by time.

    `connections`: with keep-alive clients, each class has that many client connections and every request goes
    out on one of them at random (the simulator keeps a connection on the pod it first reached); None = every
    request on a new connection (conn = -1).
    """
    ts, cl, ninp, toks, conns = [], [], [], [], []
    for ci, c in enumerate(OPEN_CLASSES):
        rates = trace.rates.get(c)
        if rates is None or rates[:-1].max() <= 0:
            continue
        crng = np.random.default_rng([seed, 0x7E1, c])
        t = np.concatenate([_times(crng, trace.times[i], trace.times[i + 1], float(rates[i]), float(trace.cv[i]))
                            for i in range(len(trace.times) - 1)])
        inputs, tokens = CLASSES[c].sample(crng, len(t))
        ts.append(t)
        cl.append(np.full(len(t), c, dtype=np.int8))
        ninp.append(inputs)
        toks.append(tokens)
        if connections:
            conns.append((ci * connections + crng.integers(0, connections, len(t))).astype(np.int32))
        else:
            conns.append(np.full(len(t), -1, dtype=np.int32))
    if not ts:
        return OpenArrivals(t=np.empty(0), cls=np.empty(0, np.int8), input_offsets=np.zeros(1, np.int64),
                            input_tokens=np.empty(0, np.int32), conn=np.empty(0, np.int32))
    if len(ts) == 1:  # one class: segments are consecutive and each is sorted, so the times already are
        inputs = ninp[0]
        off = np.zeros(len(inputs) + 1, dtype=np.int64)
        np.cumsum(inputs, out=off[1:])
        return OpenArrivals(t=ts[0], cls=cl[0], input_offsets=off, input_tokens=toks[0], conn=conns[0])
    t = np.concatenate(ts)
    order = np.argsort(t, kind="stable")
    inputs = np.concatenate(ninp)
    tokens = np.concatenate(toks)
    old_off = np.concatenate([[0], np.cumsum(inputs)])
    counts = inputs[order]
    new_off = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    gather = np.repeat(old_off[:-1][order] - new_off[:-1], counts) + np.arange(int(new_off[-1]))
    return OpenArrivals(t=t[order], cls=np.concatenate(cl)[order], input_offsets=new_off,
                        input_tokens=tokens[gather].astype(np.int32), conn=np.concatenate(conns)[order])


def bulk_clients(trace: Trace, seed: int, max_client_batch_size: int = BULK_CLASS.inputs_max) -> list[BulkClients]:
    """One closed-loop group per run of rows with the same number of bulk workers (> 0)."""
    out: list[BulkClients] = []
    w = trace.bulk_workers
    i = 0
    while i < len(w) - 1:
        j = i
        while j + 1 < len(w) - 1 and w[j + 1] == w[i]:
            j += 1
        if w[i] > 0:
            out.append(BulkClients(workers=int(w[i]), start_s=float(trace.times[i]), stop_s=float(trace.times[j + 1]),
                                   inputs_per_request=int(min(max_client_batch_size, BULK_CLASS.inputs_max)),
                                   tokens_min=BULK_CLASS.tokens_min, tokens_max=BULK_CLASS.tokens_max,
                                   backoff_initial_s=BULK_BACKOFF_INITIAL_S, backoff_max_s=BULK_BACKOFF_MAX_S,
                                   seed=seed * 1000 + len(out)))
        i = j + 1
    return out


def make_workload(trace: Trace, seed: int, connections: int | None = None) -> Workload:
    return Workload(open_arrivals(trace, seed, connections), bulk_clients(trace, seed))


def select(arrivals: OpenArrivals, classes: set[int]) -> OpenArrivals:
    """The arrivals of some classes only (one pool of a split deployment)."""
    keep = np.isin(arrivals.cls, list(classes))
    if keep.all():
        return arrivals
    counts = np.diff(arrivals.input_offsets)[keep]
    starts = arrivals.input_offsets[:-1][keep]
    off = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    gather = np.repeat(starts - off[:-1], counts) + np.arange(int(off[-1]))
    return OpenArrivals(t=arrivals.t[keep], cls=arrivals.cls[keep], input_offsets=off,
                        input_tokens=arrivals.input_tokens[gather], conn=arrivals.conn[keep])


def offered_tokens_per_second(trace: Trace, t: np.ndarray | float) -> np.ndarray:
    """Expected open-loop tokens/s at time(s) t (the oracle's knowledge of the future)."""
    return sum(trace.rate_at(t, c) * CLASSES[c].mean_tokens() for c in OPEN_CLASSES)
