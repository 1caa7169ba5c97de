"""The bulk class in its own pool: a Deployment that serves only bulk ingestion, autoscaled for throughput
(spec.autoscaling.objective: Throughput, operator/tei_operator/autoscaling/throughput.py).

The split deployment's ingest pool (run.INGEST) serves interactive documents (p99 <= 2 s) and the bulk job; a
document's SLO needs idle headroom that bulk does not. BULK_POOL serves the bulk class alone, as docs/pools.md
recommends for an indexing pipeline, and is where the bulk class's cost per 1M tokens is measured against the
physical limit. Its runs go through `bulk_breakdown.run` (the benchmark's driver loop with the simulator's batch
log on), so the report can say where the GPU-hours went: useful work, partial batches, idle, loading, draining,
over the bulk job's hours and over the rest of the trace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .run import Pool

OBJECTIVE = "Throughput"


@dataclass(frozen=True)
class ObjectivePool(Pool):
    """A pool whose tei-operator spec sets spec.autoscaling.objective."""

    objective: str = "Latency"
    scale_to_zero: bool = False
    """minReplicas 0 with spec.autoscaling.scaleToZero (bulk_zero.py): the pool starts at zero and wakes on the
    activation query (the bulk workers' backlog)."""

    def describe(self) -> str:
        return (f"{self.name}: serves bulk only; maxBatchTokens {self.max_batch_tokens}; replicas "
                f"{self.min_replicas}-{self.max_replicas}; routing {self.routing}; objective {self.objective}"
                + (f"; scale to zero after {_idle_seconds()} s idle, woken by the bulk workers' backlog "
                   "(activation query)" if self.scale_to_zero else ""))


def _idle_seconds() -> int:
    from .bulk_zero import IDLE_SECONDS

    return IDLE_SECONDS

BULK_POOL = ObjectivePool("bulk", frozenset(), True, max_batch_tokens=16384, min_replicas=0, max_replicas=12,
                          objective=OBJECTIVE, scale_to_zero=True)


def extra_pools(family: str) -> tuple[Pool, ...]:
    """Pools the pools experiment adds for this policy family: the bulk pool, for tei-operator only (the
    objective is its API)."""
    return (BULK_POOL,) if family == "operator" else ()


def with_objective(policy, objective: str):
    """The same OperatorPolicy with spec.autoscaling.objective set."""
    from .operator_policy import OperatorPolicy

    doc = policy.spec.model_dump(by_alias=True, exclude_unset=True)
    doc["objective"] = objective
    spec = type(policy.spec).model_validate(doc)
    out = OperatorPolicy(spec, policy.max_batch_tokens)
    out.knob, out.knob_value = policy.knob, policy.knob_value
    return out


def simulate_breakdown(pool: Pool, trace, seed: int, workload):
    """One pools-experiment run of `pool` under tei-operator, as `run.simulate` measures it, with the GPU-hour
    breakdown in `result.timeline["bulk_breakdown"]` (a dict, see `bulk_breakdown.Breakdown.as_dict`)."""
    from .bulk_breakdown import run

    zero = None
    if getattr(pool, "scale_to_zero", False):
        from .bulk_zero import make_zero_policy

        policy = make_zero_policy(pool, trace)
        bd = run(trace, seed, pool, workload=workload, policy=policy, replicas0=0)
        zero = {"woke": policy.woke, "slept": policy.slept}
    else:
        bd = run(trace, seed, pool, workload=workload)
    res = bd.result
    res.timeline = {"bulk_breakdown": bd.as_dict(), "deadline_s": trace.bulk_deadline_s, "scale_to_zero": zero}
    return res


def _breakdowns(out, trace: str, pool: str = BULK_POOL.name):
    from .bulk_breakdown import Breakdown

    return [Breakdown.from_dict(r.timeline["bulk_breakdown"]) for r in out.pools
            if r.trace == trace and r.pool == pool and "bulk_breakdown" in (r.timeline or {})]


def _med(xs):
    xs = sorted(x for x in xs if x is not None and not math.isnan(x))
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2 if xs else math.nan


def goal_row(out, goal: float) -> tuple[str, str, str] | None:
    """The "bulk class on the 24 h diurnal" goal judged on the bulk pool over the whole 24 h (its GPU-hours after
    the job included: the pool is deployed for bulk alone), with the job's hours and the shared ingest pool beside
    it; None when the bulk pool did not run on the diurnal."""
    bds = _breakdowns(out, "diurnal")
    if not bds:
        return None
    whole = _med([b.ratio() for b in bds])
    job = _med([b.ratio("job") for b in bds])
    rest_gpu_h = _med([b.total("rest") / 3600 for b in bds])
    a, b = bds[0].window
    ingest = [r.cost_ratio for r in out.pools if r.trace == "diurnal" and r.pool == "ingest"]
    done = [bd.bulk_done_s for bd in bds]
    deadline = next((r.timeline.get("deadline_s") for r in out.pools if r.trace == "diurnal"
                     and r.pool == BULK_POOL.name and r.timeline), None)
    when = ("not done" if any(d is None for d in done) else f"done at {_med(done) / 60:.0f} min") + \
        (f" (deadline {deadline / 60:.0f} min)" if deadline else "")
    zero = "scale to zero" in bds[0].objective
    rest_why = ("the pool idles idleSeconds after the job, then sits at zero (scaleToZero); it starts the day at "
                "zero and wakes on the activation query (the workers' backlog)" if zero else
                "minReplicas 1 with nothing to do (no scale to zero)")
    measured = (f"{whole:.2f}x over the 24 h (bulk pool, objective {bds[0].objective}, {len(bds)} seed(s)); "
                f"{job:.2f}x over the job's hours ({a / 3600:.0f}-{b / 3600:.0f} h, where the workers run); the other "
                f"{(bds[0].duration - (b - a)) / 3600:.0f} h cost {rest_gpu_h:.1f} GPU-h: {rest_why}"
                + (f"; the split deployment's ingest pool (documents + bulk): {_med(ingest):.2f}x" if ingest else "")
                + f"; the bulk job {when}; breakdown in \"The bulk class\"")
    return (f"Bulk class on the 24 h diurnal: cost per 1M tokens <= {goal}x the physical limit", measured,
            "met" if whole <= goal else "**NOT met**")


def _zero_sentence(runs) -> str:
    """When the scale-to-zero pool woke (and with how many replicas) and went back to zero, per run."""
    parts = []
    for r in runs:
        z = (r.timeline or {}).get("scale_to_zero")
        if not z:
            continue
        woke = ", ".join(f"{t / 60:.1f} min ({n} replicas)" for t, n in z["woke"]) or "never"
        slept = ", ".join(f"{t / 60:.0f} min" for t in z["slept"]) or "never"
        parts.append(f"{r.trace} seed {r.seed}: woke at {woke}, to zero at {slept}")
    if not parts:
        return ""
    from .bulk_zero import ACTIVATION_SCRAPE_S, ACTIVATION_QUERY, WORKERS_PER_REPLICA

    return (f" The bulk pool starts each run at zero replicas and wakes on its activation query (`{ACTIVATION_QUERY}`: "
            f"the bulk workers running, as Prometheus shows them, one {ACTIVATION_SCRAPE_S:.0f} s scrape late; "
            f"activationPerReplica {WORKERS_PER_REPLICA:g}; `python -m bench.autoscaling.bulk_zero` runs it alone): "
            + "; ".join(parts) + ".")


def section(out) -> str:
    """The report's section on the bulk class: the GPU-hour breakdown of the bulk pool (and of the ingest pool's
    share of the split deployment, when the runs carry one) on every trace the pools experiment ran."""
    from .bulk_breakdown import PARTS, table

    rows = []
    for trace in sorted({r.trace for r in out.pools if r.pool == BULK_POOL.name}):
        rows += _breakdowns(out, trace, "ingest") + _breakdowns(out, trace)
    if not rows:
        return ""
    bulk_only = [r for r in out.pools if r.pool == BULK_POOL.name]
    done = ", ".join(f"{r.trace} seed {r.seed}: " + ("not done" if r.bulk_done_s is None else
                                                      f"{r.bulk_done_s / 60:.0f} min")
                     for r in bulk_only)
    return f"""## The bulk class: where the GPU-hours go

The bulk job in a pool of its own ({BULK_POOL.describe()}), tei-operator with `objective: Throughput`
(docs/autoscaling.md), the same workers and seeds as the pools above; beside it the split deployment's ingest pool
(documents, p99 <= 2 s, and the same bulk job; the default objective, Latency). Billed GPU-hours split into
{", ".join(PARTS)} (`python -m bench.autoscaling.bulk_breakdown` explains each and runs one pool alone); "cost vs
limit" is GPU-hours over useful GPU-hours. The physical limit assumes every input at the mean length; the classes'
uniform lengths have a 12% larger mean square, which makes real full batches about 1.3% slower than the limit.
When the bulk job was done (its bulk_job_tokens served): {done}.{_zero_sentence(bulk_only)}

{table(rows)}
"""


__all__ = ["BULK_POOL", "ObjectivePool", "OBJECTIVE", "extra_pools", "goal_row", "section", "simulate_breakdown",
           "with_objective"]
