"""Run one policy over one trace in the simulator and measure it per class.

A *pool* is one Deployment of one model: the classes it serves, its TEI limits (maxBatchTokens) and its
min/max replicas. The recommended deployment splits online queries from documents and bulk ingestion
(`ONLINE` + `INGEST`); `MIXED` serves everything from one pool (see docs/pools.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .classes import BULK, CLASSES, DOCUMENT, OPEN_CLASSES, QUERY, RERANK
from .policies import Oracle, Policy, Static
from .traces import Trace
from .workload import Workload, offered_tokens_per_second, select

PROFILE_PATH = Path(__file__).resolve().parent / "profiles" / "qwen3-embedding-8b-a100.yaml"
TIMELINE_EVERY = 10.0


def load_bench_profile():
    from tei_operator.emulator.batching import load_profile

    return load_profile(PROFILE_PATH)


@dataclass(frozen=True)
class Pool:
    """One Deployment: the classes it serves and its engine limits."""

    name: str
    classes: frozenset
    bulk: bool
    max_batch_tokens: int
    min_replicas: int = 1
    max_replicas: int = 12
    routing: str = "random"

    def profile(self, base):
        # With --auto-truncate (TEI's default since 1.9) a --max-batch-tokens below the model's maximum input length
        # is accepted and inputs are truncated to it: TEI takes min(max_input_length, max_batch_tokens).
        return base.with_limits(max_batch_tokens=self.max_batch_tokens,
                                max_input_length=min(base.max_input_length, self.max_batch_tokens))

    def describe(self) -> str:
        cl = ", ".join(CLASSES[c].name for c in sorted(self.classes)) + (", bulk" if self.bulk else "")
        return (f"{self.name}: serves {cl}; maxBatchTokens {self.max_batch_tokens}; replicas "
                f"{self.min_replicas}-{self.max_replicas}; routing {self.routing}")


ONLINE = Pool("online", frozenset({QUERY}), False, max_batch_tokens=512, min_replicas=1, max_replicas=10)
INGEST = Pool("ingest", frozenset({DOCUMENT}), True, max_batch_tokens=16384, min_replicas=1, max_replicas=12)
MIXED = Pool("mixed", frozenset({QUERY, DOCUMENT}), True, max_batch_tokens=16384, min_replicas=1, max_replicas=20)


def replica_capacity(profile, pool: Pool) -> float:
    """Tokens/s one replica of the pool serves: for a pool that serves queries, the most it serves while a query
    still meets its SLO (batches no longer than ~45% of the SLO: one running, one forming); otherwise the
    profile's full-batch throughput for the pool's inputs."""
    profile = pool.profile(profile)
    if QUERY in pool.classes and not pool.bulk and pool.classes <= {QUERY}:
        q = CLASSES[QUERY]
        tpi = q.mean_tokens_per_input()
        k = 1
        while profile.batch_seconds((k + 1) * tpi, (k + 1) * tpi * tpi) <= 0.45 * q.slo_seconds and \
                (k + 1) * tpi <= pool.max_batch_tokens:
            k += 1
        return k * tpi / profile.batch_seconds(k * tpi, k * tpi * tpi)
    tpi = _mean_tokens_per_input(pool)
    return profile.peak_tokens_per_second(int(tpi))


def _mean_tokens_per_input(pool: Pool) -> float:
    ts = [CLASSES[c].mean_tokens_per_input() for c in pool.classes if c != QUERY] or \
         [CLASSES[c].mean_tokens_per_input() for c in pool.classes]
    if pool.bulk:
        ts.append(CLASSES[BULK].mean_tokens_per_input())
    return float(np.mean(ts))


def physical_limit_tokens_per_s(profile, pool: Pool) -> float:
    """Every GPU busy with full batches of the pool's inputs: the physical limit of cost per token."""
    profile = pool.profile(profile)
    return profile.peak_tokens_per_second(int(_mean_tokens_per_input(pool)))


def demand_replicas(trace: Trace, profile, pool: Pool):
    """t -> replicas the pool's offered load needs at 100% (open-loop tokens/s over a replica's capacity, plus
    half a replica per bulk worker: two requests in flight keep a replica's batches full)."""
    cap = replica_capacity(profile, pool)
    classes = [c for c in OPEN_CLASSES if c in pool.classes]

    def need(t):
        tok = sum(trace.rate_at(t, c) * CLASSES[c].mean_tokens() for c in classes)
        out = np.asarray(tok, dtype=float) / cap
        if pool.bulk:
            i = np.clip(np.searchsorted(trace.times, t, side="right") - 1, 0, len(trace.times) - 2)
            out = out + trace.bulk_workers[i] / 2.0
        return out

    return need


@dataclass
class ClassResult:
    requests: int
    attainment: float
    """Share of requests answered (200) within the class's SLO; for bulk: share of attempts not refused."""
    p50: float
    p99: float
    failed: int
    tokens: float


@dataclass
class Result:
    """What one (policy, knob, trace, seed, pool) run measured."""

    policy: str
    family: str
    knob: float | None
    trace: str
    split: str
    seed: int
    pool: str
    classes: dict[int, ClassResult]
    gpu_hours: float
    cost_per_mtok: float
    cost_ratio: float
    actions: int
    reversals: int
    outage_scale_downs: int
    first_up_s: float | None
    bulk_tokens: float = 0.0
    bulk_done_s: float | None = None
    timeline: dict = field(default_factory=dict, repr=False)

    @property
    def query_attainment(self) -> float:
        c = self.classes.get(QUERY)
        return c.attainment if c else math.nan


START_UTILIZATION = 0.4
"""Every dynamic policy starts at the count the trace's load over its first model load (the profile's slowest cold
load) needs at this fraction of a replica's capacity: the oracle's tuned fraction, the lowest that met 99% of
queries within the SLO on every train trace. As if the fleet had been running on that load before the trace
began. Sized for the first instant at 70%, the fleet started short of the SLO (a query replica at 70% of
`replica_capacity` misses it with bursty arrivals and random routing; a sawtooth's first rise came before any pod
could load) and the first minutes decided every dynamic policy's attainment: a start-up transient, not the
policy. The same rule for every dynamic policy; static fleets run their own count."""


def initial_replicas(trace: Trace, profile, pool: Pool, utilization: float = START_UTILIZATION) -> int:
    """What a tuned fleet runs at the trace's starting load (every dynamic policy starts there)."""
    horizon = min(trace.duration, profile.load_seconds.cold_max)
    need = float(np.max(demand_replicas(trace, profile, pool)(np.arange(0.0, horizon + 1e-9, 5.0)))) / utilization
    return max(pool.min_replicas, min(pool.max_replicas, math.ceil(need - 1e-9)))


def tick_times(policy: Policy, duration: float) -> np.ndarray:
    """Times at which the driver calls the policy: every multiple of each of its intervals, plus its phase."""
    ts = [np.zeros(1)] if isinstance(policy, Static) else []
    for iv in (policy.interval,) + tuple(policy.intervals):
        if iv < duration:
            ts.append(np.arange(policy.phase, duration, iv))
    return np.unique(np.round(np.concatenate(ts), 6)) if ts else np.zeros(0)


def simulate(policy: Policy, trace: Trace, workload: Workload, pool: Pool, base_profile, seed: int,
             split: str = "", family: str | None = None, keep_timeline: bool = False) -> Result:
    """Run the policy over the trace on the simulator and measure it."""
    from .simulator import Simulator

    profile = pool.profile(base_profile)
    arrivals = select(workload.arrivals, set(pool.classes))
    bulk = workload.bulk if pool.bulk else []
    if len(bulk) > 1:
        raise ValueError(f"{trace.name}: bulk_workers: the simulator runs one bulk group; this trace has {len(bulk)} "
                         "runs of rows with different worker counts")
    start = policy.replicas if isinstance(policy, Static) else initial_replicas(trace, base_profile, pool)
    sim = Simulator(profile, replicas0=start, quota=trace.gpu_quota, seed=seed, routing=pool.routing,
                    arrivals=arrivals, bulk=bulk[0] if bulk else None, metrics_outage=trace.metrics_outage)
    view = sim.view
    actions: list[tuple[float, int, int]] = []
    tl_t, tl_des, tl_ready = [], [], []
    ticks = tick_times(policy, trace.duration)
    samples = np.round(np.arange(0.0, trace.duration, TIMELINE_EVERY), 6) if keep_timeline else np.zeros(0)
    times = np.concatenate([ticks, samples])
    is_tick = np.concatenate([np.ones(len(ticks), bool), np.zeros(len(samples), bool)])
    order = np.lexsort((~is_tick, times))  # at equal times: the policy first, then the sample
    for t, tick in zip(times[order].tolist(), is_tick[order].tolist()):
        sim.advance_to(t)
        if tick:
            want = policy.tick(t, view)
            if want is not None and want != view.desired:
                actions.append((t, view.desired, int(want)))
                sim.set_desired(int(want), t)
        else:
            tl_t.append(t)
            tl_des.append(view.desired)
            tl_ready.append(sum(1 for p in view.pods() if p.phase == "Ready"))
    sim.advance_to(trace.duration)
    out = sim.results()
    timeline = {"t": np.array(tl_t), "desired": np.array(tl_des), "ready": np.array(tl_ready)}
    return measure(policy, trace, arrivals, pool, profile, out, actions, seed, split, family or policy.name,
                   timeline if keep_timeline else {})


def measure(policy: Policy, trace: Trace, arrivals, pool: Pool, profile, out, actions, seed: int, split: str,
            family: str, timeline: dict) -> Result:
    """Per-class SLO attainment and latency, GPU-hours, cost per token against the physical limit, and the
    policy's behaviour (actions, direction reversals, scale-downs during the metrics outage, first scale-up)."""
    start, done, status, cls = (np.asarray(x) for x in (out.t, out.done, out.status, out.cls))
    lat = np.where(status == 200, done - start, np.inf)
    req_tokens = np.asarray(out.tokens, dtype=float)
    classes: dict[int, ClassResult] = {}
    for c in sorted(set(pool.classes)):
        m = cls == c
        n = int(m.sum())
        if not n:
            continue
        lc = lat[m]
        slo = CLASSES[c].slo_seconds
        p50, p99 = (float(x) for x in np.quantile(lc, [0.5, 0.99], method="higher"))
        classes[c] = ClassResult(n, float(np.mean(lc <= slo)), p50, p99, int(np.sum(status[m] != 200)),
                                 float(req_tokens[m][status[m] == 200].sum()))
    bulk_tokens, bulk_done_s = 0.0, None
    if pool.bulk and len(out.bulk_done):
        bt = np.asarray(out.bulk_done)
        btok = np.asarray(out.bulk_tokens, dtype=float)
        bst = np.asarray(out.bulk_status)
        ok = bst == 200
        bulk_tokens = float(btok[ok].sum())
        order = np.argsort(bt[ok])
        cum = np.cumsum(btok[ok][order])
        if trace.bulk_job_tokens and len(cum) and cum[-1] >= trace.bulk_job_tokens:
            bulk_done_s = float(bt[ok][order][np.searchsorted(cum, trace.bulk_job_tokens)])
        n_att = len(bst)
        classes[BULK] = ClassResult(n_att, float(ok.mean()) if n_att else 1.0, math.nan, math.nan,
                                    int((~ok).sum()), bulk_tokens)
    gpu_h = float(out.gpu_seconds) / 3600.0
    served = sum(c.tokens for c in classes.values())
    price = profile.price_per_hour
    cost = gpu_h * price / (served / 1e6) if served else math.inf
    limit = price / (physical_limit_tokens_per_s(profile, pool) * 3600 / 1e6)
    dirs = [1 if b > a else -1 for _, a, b in actions]
    reversals = sum(1 for x, y in zip(dirs, dirs[1:]) if x != y)
    outage_downs = 0
    if trace.metrics_outage:
        a, b = trace.metrics_outage
        outage_downs = sum(1 for t, x, y in actions if a <= t < b and y < x)
    first_up = None
    if trace.step_at is not None and not isinstance(policy, Static):
        since = trace.step_at - (policy.horizon if isinstance(policy, Oracle) else 0.0)
        ups = [t for t, x, y in actions if y > x and t >= since]
        first_up = ups[0] - trace.step_at if ups else math.inf
    return Result(policy.name, family, policy.knob_value, trace.name, split, seed, pool.name, classes, gpu_h, cost,
                  cost / limit, len(actions), reversals, outage_downs, first_up, bulk_tokens, bulk_done_s, timeline)


def offered(trace: Trace, t) -> np.ndarray:
    return offered_tokens_per_second(trace, t)


__all__ = ["Pool", "ONLINE", "INGEST", "MIXED", "Result", "ClassResult", "simulate", "replica_capacity",
           "demand_replicas", "initial_replicas", "physical_limit_tokens_per_s", "load_bench_profile", "RERANK"]
