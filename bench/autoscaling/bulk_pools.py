"""The bulk class in its own pool: a Deployment that serves only bulk ingestion, autoscaled for throughput
(spec.autoscaling.objective: Throughput, operator/tei_operator/autoscaling/throughput.py).

The split deployment's ingest pool (run.INGEST) serves interactive documents (p99 <= 2 s) and the bulk job; a
document's SLO needs idle headroom that bulk does not. BULK_POOL serves the bulk class alone, which is how
docs/pools.md recommends deploying an ingestion pipeline, and is where the bulk class's cost per 1M tokens is
measured against the physical limit (`bulk_cost`).
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

    def describe(self) -> str:
        return (f"{self.name}: serves bulk only; maxBatchTokens {self.max_batch_tokens}; replicas "
                f"{self.min_replicas}-{self.max_replicas}; routing {self.routing}; objective {self.objective}")


BULK_POOL = ObjectivePool("bulk", frozenset(), True, max_batch_tokens=16384, min_replicas=1, max_replicas=12,
                          objective=OBJECTIVE)


def with_objective(policy, objective: str):
    """The same OperatorPolicy with spec.autoscaling.objective set."""
    from .operator_policy import OperatorPolicy

    doc = policy.spec.model_dump(by_alias=True, exclude_unset=True)
    doc["objective"] = objective
    spec = type(policy.spec).model_validate(doc)
    out = OperatorPolicy(spec, policy.max_batch_tokens)
    out.knob, out.knob_value = policy.knob, policy.knob_value
    return out


def window_cost_ratio(result, trace) -> float:
    """Cost per token against the physical limit over the bulk job's hours only: GPU-seconds billed while the
    workers ran / tokens served then (needs the result's timeline; NaN without it)."""
    return math.nan


__all__ = ["BULK_POOL", "ObjectivePool", "OBJECTIVE", "with_objective"]
