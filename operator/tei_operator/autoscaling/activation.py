"""Scale to zero for bulk pools (spec.autoscaling.scaleToZero, objective Throughput, minReplicas 0).

A pool that serves only bulk ingestion has nothing to do between jobs; at minReplicas 1 its idle replica was most
of the bulk class's cost over a day (docs/benchmarks/autoscaling-long.md). Going to zero is easy; coming back is
the problem: with no pods there are no TEI metrics, and requests to the Service are refused, so demand has to be
read from outside the pool. This follows KEDA's model (an external signal with an activation threshold, pull
based), not Knative's (an activator in the data path that holds requests while a pod starts): the operator is not
in the request path, and a TEI replica takes 30-180 s to load its model, longer than a client should hold a
request open.

One main tick of a pool with scaleToZero (`decide_scale_to_zero`):

- at zero replicas: the activation query is read. Above activationThreshold, the pool wakes with
  max(wakeReplicas, ceil(value / activationPerReplica)) replicas (at most maxReplicas); from there the Throughput
  objective sizes it. At or below it, the pool stays at zero (Ready/Available with reason ScaledToZero; the
  policy is not run, so no MetricsUnavailable is raised for a pool that has no pods on purpose). An unreadable
  query brings one replica back (fail safe: the pool serves, slowly, rather than stay down while work may wait)
  and sets ScalingLimited to ActivationUnavailable with the query's error.
- above zero: the Throughput policy decides as usual (never below 1). The pool goes to zero only when it has been
  idle (healthy metrics, no input queued, no batch run, no request, no 429, nothing loading or pending) for
  idleSeconds AND the activation query reads at or below the threshold. An unreadable query never lets it go to
  zero (ScalingLimited ActivationUnavailable).
- a `schedule` window that is active keeps its minReplicas (at least 1): the pool wakes for it and does not go
  to zero inside it, so a job known in advance finds its replicas loaded.

`decide_scale_to_zero` is pure (the caller reads the query); `ActivationReader` reads the query from Prometheus.
"""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from ..api.autoscaling import AutoscalingSpec
from .policy import Decision, PolicyState, decide
from .signals import Signals
from .sources.prometheus import ThreadClients
from .writer import rfc3339

ACTIVATION_UNAVAILABLE = "ActivationUnavailable"
"""ScalingLimited's reason when the activation query cannot be read."""


@dataclass(frozen=True)
class Activation:
    """The activation query's reading this tick: a value, or the error that kept it from one."""

    value: float | None
    error: str | None = None


@dataclass(frozen=True)
class ZeroState:
    """What scale to zero remembers between ticks (in memory, like PolicyState: a restart restarts the idle
    period, which only delays a scale to zero)."""

    idle_since: float | None = None
    """Since when the pool has been idle (`is_idle`), None while it is not."""


def is_idle(s: Signals) -> bool:
    """Whether the pool did nothing over the rate window: metrics healthy and read from at least one Ready pod,
    nothing queued, no (non-empty) batch, no request, no 429, and no replica loading or pending. A missing rate
    is a series TEI has not created yet (no request ever): zero; a missing queue is unknown (not idle)."""
    if s.error is not None or s.ready_replicas <= 0 or s.starting_replicas > 0 or s.pending_replicas > 0:
        return False
    if s.queue_size_total is None or not math.isfinite(s.queue_size_total) or s.queue_size_total > 0:
        return False
    for rate in (s.batch_rate_count, s.request_rate, s.overloaded_rate):
        if rate is not None and (not math.isfinite(rate) or rate > 0):
            return False
    return True


def wake_replicas(value: float, spec: AutoscalingSpec) -> int:
    """Replicas to start from zero for this activation value."""
    stz = spec.scale_to_zero
    assert stz is not None
    n = stz.wake_replicas
    if stz.activation_per_replica:
        n = max(n, math.ceil(value / stz.activation_per_replica - 1e-9))
    return max(1, min(n, spec.max_replicas or n))


def _fmt(x: float) -> str:
    return f"{x:.0f}" if abs(x - round(x)) < 0.005 else f"{x:.3g}"


def decide_scale_to_zero(signals: Signals, state: PolicyState, zero: ZeroState, spec: AutoscalingSpec,
                         max_batch_tokens: int, now: float, activation: Activation,
                         max_pending: int = 0) -> tuple[Decision, PolicyState, ZeroState]:
    """One main tick of a pool with scaleToZero (module docstring). Pure: the caller reads `activation`."""
    stz = spec.scale_to_zero
    if stz is None:
        raise ValueError("spec.autoscaling.scaleToZero: required by decide_scale_to_zero")
    current = signals.current_replicas
    threshold = stz.activation_threshold
    scheduled = spec.scheduled_minimum(now) if spec.schedule else None  # a schedule window: never zero inside it
    error = activation.error
    if error is None and (activation.value is None or not math.isfinite(activation.value)):
        error = f"the query returned {activation.value!r}, not a number"
    if current <= 0:
        if error is not None:
            return Decision(1, "ScaleUp", f"Activation query unreadable ({error}): restored 1 replica, since the "
                            "pool cannot tell whether work is waiting", limited_by=ACTIVATION_UNAVAILABLE,
                            limited_message=f"Activation query failed: {error}; keeping at least 1 replica"), \
                state, ZeroState()
        value = float(activation.value)  # type: ignore[arg-type]
        if scheduled and value <= threshold:
            return Decision(scheduled, "ScaleUp", f"Schedule window active: woke with its minReplicas {scheduled} "
                            f"(activation {_fmt(value)})"), state, ZeroState()
        if value > threshold:
            n = max(wake_replicas(value, spec), scheduled or 0)
            if signals.schedulable_capacity is not None:  # as the policy: no more than the GPU nodes can hold
                n = min(n, max(1, signals.schedulable_capacity + max_pending))
            return Decision(n, "ScaleUp", f"Activation {_fmt(value)} > activationThreshold {_fmt(threshold)}: work "
                            f"is waiting, woke with {n} replica(s)"), state, ZeroState()
        return Decision(0, "Hold", f"Scaled to zero: activation {_fmt(value)} <= activationThreshold "
                        f"{_fmt(threshold)}"), state, ZeroState()

    decision, state = decide(signals, state, spec, max_batch_tokens, now, max_pending)
    if decision.desired_replicas < 1:  # the policy's floor is minReplicas 0; only scale to zero goes there
        decision = replace(decision, desired_replicas=1, action="Hold" if current == 1 else decision.action)
    idle = is_idle(signals)
    idle_since = (zero.idle_since if zero.idle_since is not None else now) if idle else None
    zero = ZeroState(idle_since)
    if error is not None:
        if decision.limited_by == "MetricsUnavailable":  # the pool's own metrics are the bigger problem: keep it
            return replace(decision, reason=decision.reason + f"; no scale to zero: activation query unreadable "
                           f"({error})"), state, zero
        return replace(decision, limited_by=ACTIVATION_UNAVAILABLE,
                       limited_message=f"Activation query failed: {error}; never scaling to zero while it "
                       "cannot be read", reason=decision.reason + "; no scale to zero: activation query "
                       "unreadable"), state, zero
    value = float(activation.value)  # type: ignore[arg-type]
    idle_for = now - idle_since if idle_since is not None else 0.0
    if idle and idle_for >= stz.idle_seconds - 1e-6 and value <= threshold and not scheduled:
        return Decision(0, "ScaleDown", f"Idle {idle_for:.0f} s, activation {_fmt(value)}: scaled to zero "
                        f"(idleSeconds {stz.idle_seconds}, activationThreshold {_fmt(threshold)})",
                        load_ratio=decision.load_ratio, queue_per_replica=decision.queue_per_replica,
                        batch_fill=decision.batch_fill, tokens_per_replica=decision.tokens_per_replica), \
            replace(state, last_scale_time=now, last_scale_down_time=now), ZeroState()
    if idle:
        # Words that stay the same from tick to tick (no idle-seconds counter): the status is written only when
        # something in it changes, and an idle pool should not cost a write per tick.
        why = (f"idle since {rfc3339(idle_since)}: to zero after idleSeconds {stz.idle_seconds}"  # type: ignore[arg-type]
               if value <= threshold else
               f"idle, but the activation query reads above activationThreshold {_fmt(threshold)}: work is waiting")
        decision = replace(decision, reason=f"{decision.reason}; {why}")
    return decision, state, zero


def activation_value(result: Any) -> float:
    """The number an instant query's result stands for: the sum of a vector's samples (0 when empty), or a
    scalar's value. Raises ValueError on anything else (a string, a matrix, NaN)."""
    if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        samples = [result[1]]  # a scalar: [time, "value"]
    elif isinstance(result, list):
        samples = []
        for item in result:
            if not isinstance(item, dict) or "value" not in item:
                raise ValueError("the query must return an instant vector or a scalar (got a range vector?)")
            samples.append(item["value"][1])
    else:
        raise ValueError(f"unexpected result {str(result)[:80]!r}")
    try:
        values = [float(v) for v in samples]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a sample is not a number ({exc})") from exc
    total = sum(values)
    if not math.isfinite(total):
        raise ValueError(f"the query returned {total}, not a finite number")
    return total


class ActivationReader:
    """Reads activation queries from the operator's Prometheus (`prometheus_url`), in worker threads (the client
    is synchronous), at most one query per service per tick."""

    def __init__(self, url: str | None, timeout: float) -> None:
        self.url = url.rstrip("/") if url else None
        self.timeout = timeout
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="tei-activation")
        self._clients = ThreadClients(self.url, timeout) if self.url else None

    def _query_sync(self, promql: str) -> Any:
        assert self._clients is not None
        return self._clients.query(promql)

    async def read(self, promql: str) -> Activation:
        """The query's value, or the error (never raises)."""
        if not self.url:
            return Activation(None, "scaleToZero.activationQuery needs the operator setting "
                              "TEI_OPERATOR_PROMETHEUS_URL, which is not set")
        loop = asyncio.get_running_loop()
        try:
            result = await asyncio.wait_for(loop.run_in_executor(self._executor, self._query_sync, promql),
                                            self.timeout + 1)
            return Activation(activation_value(result))
        except asyncio.CancelledError:
            raise
        except asyncio.TimeoutError:
            return Activation(None, f"Prometheus at {self.url} gave no answer within {self.timeout:g}s")
        except Exception as exc:  # noqa: BLE001 - any failure is an unreadable activation (fail safe)
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return Activation(None, f"query {promql!r} at {self.url} failed: {detail}"[:500])

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._clients is not None:
            self._clients.close()


async def scale_to_zero_tick(autoscaler: Any, signals: Signals, memory: Any, spec: AutoscalingSpec, resource: Any,
                             now: float) -> tuple[Decision, PolicyState, ZeroState]:
    """The live loop's hook (loop.Autoscaler._decide_and_apply): read the activation query, then decide."""
    if autoscaler.activation is None:
        s = autoscaler.settings
        autoscaler.activation = ActivationReader(s.prometheus_url, float(s.prometheus_query_timeout_seconds))
    activation = await autoscaler.activation.read(spec.scale_to_zero.activation_query)
    return decide_scale_to_zero(signals, memory.state, memory.zero or ZeroState(), spec,
                                resource.spec.engine.max_batch_tokens, now, activation,
                                autoscaler.settings.max_pending_replicas)


__all__ = ["ACTIVATION_UNAVAILABLE", "Activation", "ActivationReader", "ZeroState", "activation_value",
           "decide_scale_to_zero", "is_idle", "scale_to_zero_tick", "wake_replicas"]
