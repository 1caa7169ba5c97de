"""Run one policy on one trace and seed, and measure what users choose an autoscaler on: SLO misses and GPU cost."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from tei_operator.api.autoscaling import AutoscalingSpec

from tei_operator.emulator.batching import Profile, load_profile

from .policies import HpaPolicy, KedaPolicy, OraclePolicy, Policy, StaticPolicy
from .simulator import OpenArrivals, Simulator
from .traces import Arrivals, RequestMix, Trace

TIMELINE_STEP = 5.0
SCRAPE_INTERVAL = 15.0
POLICIES = ("operator", "hpa", "keda", "static-peak", "static-mean", "oracle")


@dataclass(frozen=True)
class BenchSettings:
    """The service being benchmarked: its autoscaling spec, its engine, and the price of its GPUs."""

    autoscaling: AutoscalingSpec
    engine: Profile = field(default_factory=lambda: load_profile("bge-m3-a100"))
    gpu_price_per_hour: float = 1.04
    slo_seconds: float = 0.1
    mix: RequestMix = RequestMix()
    static_utilization: float = 0.7

    @classmethod
    def default(cls) -> "BenchSettings":
        return cls(AutoscalingSpec(enabled=True, min_replicas=1, max_replicas=12))

    @classmethod
    def from_yaml_dict(cls, base: "BenchSettings", overrides: dict) -> "BenchSettings":
        """`base` with the command line's overrides (None values ignored)."""
        from dataclasses import replace

        kw = {k: overrides[k] for k in ("gpu_price_per_hour", "slo_seconds") if overrides.get(k)}
        if overrides.get("tokens_per_second"):
            kw["engine"] = replace(base.engine, seconds_per_token=1.0 / float(overrides["tokens_per_second"]))
        return replace(base, **kw)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> "BenchSettings":
        """Read a service manifest (or its spec) and take spec.autoscaling and spec.engine from it.

        Fields the manifest does not set keep the operator's defaults; `overrides` (tokens_per_second,
        gpu_price_per_hour, slo_seconds) come from the command line.
        """
        doc = yaml.safe_load(Path(path).read_text()) or {}
        spec = doc.get("spec", doc)
        if not isinstance(spec, dict):
            raise ValueError(f"{path}: spec: expected a mapping, got {type(spec).__name__}")
        auto = dict(spec.get("autoscaling") or {})
        auto.setdefault("enabled", True)
        auto.setdefault("maxReplicas", 12)
        try:
            autoscaling = AutoscalingSpec.model_validate(auto)
        except Exception as e:  # pydantic's message names the fields
            raise ValueError(f"{path}: spec.autoscaling: {e}") from None
        eng = spec.get("engine") or {}
        engine_kw = {}
        if "maxBatchTokens" in eng:
            engine_kw["max_batch_tokens"] = int(eng["maxBatchTokens"])
        if "maxConcurrentRequests" in eng:
            engine_kw["max_concurrent_requests"] = int(eng["maxConcurrentRequests"])
        if overrides.get("tokens_per_second"):
            engine_kw["seconds_per_token"] = 1.0 / float(overrides["tokens_per_second"])
        kw = {k: overrides[k] for k in ("gpu_price_per_hour", "slo_seconds") if overrides.get(k)}
        return cls(autoscaling, load_profile("bge-m3-a100").with_limits(**engine_kw), **kw)


@dataclass
class Result:
    """What one (policy, trace, seed) run measured."""

    policy: str
    trace: str
    seed: int
    requests: int
    slo_attainment: float
    p50: float
    p95: float
    p99: float
    n_429: int
    n_unavailable: int
    gpu_hours: float
    served_tokens: float
    cost_per_mtok: float
    cost_ratio: float
    actions: int
    reversals: int
    first_scale_up_s: float | None
    timeline: dict = field(default_factory=dict, repr=False)
    ready_at_step: int | None = None
    """Ready replicas when the trace's load step arrives: the capacity that absorbs it while new replicas load."""


def initial_replicas(trace: Trace, settings: BenchSettings, mean_tokens: float) -> int:
    """Replicas a tuned fleet would run at the trace's starting rate (every dynamic policy starts from this)."""
    need = trace.rates[0] * mean_tokens / (peak_throughput(settings.engine) * settings.static_utilization)
    a = settings.autoscaling
    return max(a.min_replicas, min(a.max_replicas or 1, math.ceil(need)))


def peak_throughput(profile: Profile) -> float:
    """A replica's tokens/s at full batches of the mix's typical 200-token inputs."""
    return profile.peak_tokens_per_second(200)


def to_open_arrivals(arrivals: Arrivals) -> OpenArrivals:
    """The old per-request mix as the simulator's per-input arrivals: a request's tokens split evenly over its
    inputs; one-input requests are class 0 (query), the others class 1 (document)."""
    inputs = np.asarray(arrivals.inputs, dtype=np.int64)
    per_input = np.maximum(1, np.ceil(np.asarray(arrivals.tokens) / inputs)).astype(np.int64)
    offsets = np.concatenate(([0], np.cumsum(inputs)))
    cls = np.where(inputs == 1, 0, 1).astype(np.int8)
    return OpenArrivals(arrivals.t, cls, offsets, np.repeat(per_input, inputs), np.full(len(inputs), -1))


def make_policy(name: str, trace: Trace, settings: BenchSettings, mean_tokens: float) -> Policy:
    a, e = settings.autoscaling, settings.engine
    hi = a.max_replicas or 1

    def static_for(rate: float) -> int:
        return max(1, math.ceil(rate * mean_tokens / (peak_throughput(e) * settings.static_utilization)))

    if name == "operator":
        from .operator_policy import OperatorPolicy as LiveOperatorPolicy

        return LiveOperatorPolicy(a, e.max_batch_tokens)
    if name == "hpa":
        return HpaPolicy(a.target_queue_size, a.min_replicas, hi)
    if name == "keda":
        return KedaPolicy(a.target_queue_size, a.min_replicas, hi)
    if name == "static-peak":
        # the peak of the 1-minute average rate
        grid = np.arange(0, trace.duration, 1.0)
        r = trace.rate_at(grid)
        k = min(60, len(r))
        peak = float(np.convolve(r, np.ones(k) / k, mode="valid").max())
        return StaticPolicy(static_for(peak), name)
    if name == "static-mean":
        grid = np.arange(0, trace.duration, 1.0)
        return StaticPolicy(static_for(float(trace.rate_at(grid).mean())), name)
    if name == "oracle":
        return OraclePolicy(trace, e, mean_tokens, a.min_replicas, hi, settings.static_utilization)
    raise ValueError(f"policy: unknown {name!r}; choose from {', '.join(POLICIES)}")


def simulate(policy: Policy, trace: Trace, arrivals: Arrivals, seed: int, settings: BenchSettings,
             mean_tokens: float) -> Result:
    """Run one policy over the trace in simulated time and measure it."""
    start = policy.replicas if isinstance(policy, StaticPolicy) else initial_replicas(trace, settings, mean_tokens)
    sim = Simulator(settings.engine, replicas0=start, quota=trace.gpu_quota, seed=seed, routing="random",
                    arrivals=to_open_arrivals(arrivals), scrape_interval_s=SCRAPE_INTERVAL,
                    metrics_outage=trace.metrics_outage)
    every = (policy.interval,) + tuple(getattr(policy, "intervals", ()))
    ticks = np.unique(np.round(np.concatenate([np.arange(policy.phase, trace.duration, iv) for iv in every
                                               if iv < trace.duration] or [np.array([0.0])]), 6))
    samples = np.arange(0.0, trace.duration, TIMELINE_STEP)
    tl_t, tl_rep, tl_ready = [], [], []
    for now, kind in sorted([(float(t), 1) for t in samples] + [(float(t), 0) for t in ticks]):
        sim.advance_to(now)
        if kind == 0:
            want = policy.tick(now, sim.view)
            if want is not None and want != sim.desired:
                policy.actions.append((now, sim.desired, want))
                sim.set_desired(want, now)
        else:
            tl_t.append(now)
            tl_rep.append(sim.desired)
            tl_ready.append(sum(1 for p in sim.view.pods() if p.phase == "Ready"))
    sim.advance_to(trace.duration)
    return measure(policy, trace, arrivals, seed, settings, sim,
                   {"t": np.array(tl_t), "replicas": np.array(tl_rep), "ready": np.array(tl_ready)})


def measure(policy: Policy, trace: Trace, arrivals: Arrivals, seed: int, settings: BenchSettings, sim: Simulator,
            timeline: dict) -> Result:
    res = sim.results()
    # unanswered by the end of the trace counts as a miss, like a refusal
    lat = np.where(res.status == 200, res.done - res.t, np.inf)
    served_tokens = float(sum(res.served_tokens.values()))
    n_429 = int(np.sum(res.status == 429))
    n_unavailable = int(np.sum(res.status == 503))
    n = len(lat)
    slo = float(np.mean(lat <= settings.slo_seconds)) if n else 1.0
    p50, p95, p99 = (float(x) for x in np.percentile(lat, [50, 95, 99], method="nearest")) if n else (0.0, 0.0, 0.0)
    gpu_h = res.gpu_seconds / 3600.0
    mtok = served_tokens / 1e6
    cost = gpu_h * settings.gpu_price_per_hour / mtok if mtok else math.inf
    limit = settings.gpu_price_per_hour / (peak_throughput(settings.engine) * 3600 / 1e6)
    dirs = [1 if b > a else -1 for _, a, b in policy.actions]
    reversals = sum(1 for x, y in zip(dirs, dirs[1:]) if x != y)
    first_up = None
    if trace.step_at is not None and not isinstance(policy, StaticPolicy):
        since = trace.step_at - getattr(policy, "horizon", 0.0)  # the oracle may act before the step
        ups = [t for t, a, b in policy.actions if b > a and t >= since]
        first_up = ups[0] - trace.step_at if ups else math.inf
    ready_at_step = None
    if trace.step_at is not None and len(timeline["t"]):
        # the last sample at or before the step (the timeline is sampled every 5 s)
        k = max(0, int(np.searchsorted(timeline["t"], trace.step_at, side="right")) - 1)
        ready_at_step = int(timeline["ready"][k])
    timeline = dict(timeline, arrivals=arrivals.t, latency=lat)
    return Result(policy.name, trace.name, seed, n, slo, p50, p95, p99, n_429, n_unavailable, gpu_h,
                  served_tokens, cost, cost / limit, len(policy.actions), reversals, first_up, timeline,
                  ready_at_step)


def run_one(policy_name: str, trace: Trace, seed: int, settings: BenchSettings, arrivals: Arrivals | None = None,
            mean_tokens: float | None = None) -> Result:
    """Convenience: build the policy and run it (arrivals generated from the seed when not given)."""
    from .traces import generate_arrivals

    mean_tokens = mean_tokens or settings.mix.mean_tokens()
    arrivals = arrivals if arrivals is not None else generate_arrivals(trace, seed, settings.mix)
    return simulate(make_policy(policy_name, trace, settings, mean_tokens), trace, arrivals, seed, settings,
                    mean_tokens)
