"""`Reading`: one autoscaler tick's recommendation and the numbers behind it, whichever objective produced it
(policy.py for Latency, throughput.py for Throughput), so both return the one type decide() reads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reading:
    """One tick's recommendation and the numbers behind it."""

    rec: int
    reason: str
    q_per: float
    fill: float | None
    tpr: float | None
    ratio: float
    peak: float | None
    up_ratio: float
    down_ratio: float
    overloaded: bool
    demand_ratio: float | None = None
    """Demand now (not projected) over the demand target, for cancelling loading replicas; None until it is known
    (the learned peak or latency capacity under Latency, the busy share under Throughput)."""
