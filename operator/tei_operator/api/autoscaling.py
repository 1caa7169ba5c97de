"""`spec.autoscaling` and `status.autoscaling`: what the autoscaler is asked to do and what it last saw."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from .base import ApiModel, FieldError, StatusModel


# CEL rules attached to the autoscaling object in the generated CRD (AutoscalingSpec's pydantic validator mirrors them).
AUTOSCALING_CEL_RULES = [
    {
        # has(): the API server also checks the CRD's `default: {}` against this rule, before nested defaults apply.
        "rule": "!has(self.enabled) || !self.enabled || has(self.maxReplicas)",
        "message": "maxReplicas is required when enabled is true",
        "fieldPath": ".maxReplicas",
    },
    {
        "rule": "!has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
        "message": "minReplicas must be less than or equal to maxReplicas",
        "fieldPath": ".minReplicas",
    },
    {
        # The fast path acts above its threshold only: inside the tolerance band it would scale up what the main
        # tick then calls balanced, and outside it but below 1 + tolerance it could not be told from noise.
        "rule": "!has(self.fastScaleUp) || !has(self.fastScaleUp.threshold) || !has(self.tolerance) || "
                "self.fastScaleUp.threshold >= 1.0 + self.tolerance",
        "message": "fastScaleUp.threshold must be at least 1 + tolerance",
        "fieldPath": ".fastScaleUp.threshold",
    },
    {
        "rule": "!has(self.schedule) || !has(self.maxReplicas) || "
                "self.schedule.all(w, w.minReplicas <= self.maxReplicas)",
        "message": "every schedule entry's minReplicas must be less than or equal to maxReplicas",
        "fieldPath": ".schedule",
    },
    {
        # Scale to zero (autoscaling/activation.py): a pool at zero has no pods, so no TEI metrics and a Service
        # that refuses connections; only a bulk pool (Throughput) with an outside activation signal may go there.
        "rule": "!has(self.minReplicas) || self.minReplicas != 0 || (has(self.objective) && "
                "self.objective == 'Throughput' && has(self.scaleToZero))",
        "message": "minReplicas 0 is allowed only with objective Throughput and scaleToZero set (an activationQuery "
                   "to wake the pool from zero); otherwise minReplicas must be at least 1",
        "fieldPath": ".minReplicas",
    },
    {
        "rule": "!has(self.scaleToZero) || (has(self.minReplicas) && self.minReplicas == 0)",
        "message": "scaleToZero needs minReplicas 0",
        "fieldPath": ".scaleToZero",
    },
    {
        "rule": "!has(self.scaleToZero) || !has(self.scaleToZero.wakeReplicas) || !has(self.maxReplicas) || "
                "self.scaleToZero.wakeReplicas <= self.maxReplicas",
        "message": "scaleToZero.wakeReplicas must be less than or equal to maxReplicas",
        "fieldPath": ".scaleToZero.wakeReplicas",
    },
    {
        "rule": "!has(self.objective) || self.objective != 'Throughput' || !has(self.latencyTargetMs)",
        "message": "latencyTargetMs must be unset when objective is Throughput",
        "fieldPath": ".latencyTargetMs",
    },
    {
        "rule": "!has(self.objective) || self.objective != 'Throughput' || !has(self.headroom) || "
                "self.headroom == 0.0",
        "message": "headroom must be 0 when objective is Throughput",
        "fieldPath": ".headroom",
    },
]

_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class ScaleUpBehavior(ApiModel):
    """How fast the autoscaler may add replicas."""

    stabilization_window_seconds: int = Field(
        0, ge=0, le=3600,
        description="Seconds of recommendations to look back on before scaling up: the lowest recommendation in the "
        "window wins. 0 scales up at once.",
    )
    max_pods_step: int = Field(
        8, ge=1, le=1000,
        description="At most this many replicas are added per period (the larger of this and maxPercentStep wins). "
        "Larger than HPA's 4: replicas take minutes to load a model, so the first step after a load step counts most.",
    )
    max_percent_step: int = Field(
        100, ge=1, le=1000,
        description="At most this percentage of the current replicas is added per period (the larger of this and "
        "maxPodsStep wins).",
    )
    period_seconds: int = Field(15, ge=1, le=1800, description="Length of one scale-up period in seconds.")


class ScaleDownBehavior(ApiModel):
    """How cautiously the autoscaler removes replicas."""

    stabilization_window_seconds: int = Field(
        300, ge=0, le=86400,
        description="Seconds the load must have stayed low before scaling down: the highest recommendation in the "
        "window wins.",
    )
    max_pods_step: int = Field(
        1, ge=1, le=1000,
        description="At most this many replicas are removed per period (the larger of this and maxPercentStep wins).",
    )
    max_percent_step: int = Field(
        25, ge=1, le=100,
        description="At most this percentage of the current replicas is removed per period (the larger of this and "
        "maxPodsStep wins).",
    )
    period_seconds: int = Field(60, ge=1, le=3600, description="Length of one scale-down period in seconds.")


class FastScaleUp(ApiModel):
    """The fast scale-up path: every few seconds the operator reads the Ready pods' /metrics directly over a short
    window and scales up (never down) when the load is well above target, like Knative's panic mode. The tick and
    window are operator settings (TEI_OPERATOR_AUTOSCALER_FAST_TICK_SECONDS, ..._FAST_WINDOW_SECONDS)."""

    enabled: bool = Field(
        True,
        description="Run the fast path for this service. It reads the pods directly whatever metricsSource says.",
    )
    threshold: float = Field(
        1.5, ge=1, le=10,
        description="Load ratio (observed / target, over the short window) above which the fast path scales up. "
        "429s (overloaded) always count as above it. Must be at least 1 + tolerance.",
    )


class ScheduleWindow(ApiModel):
    """A minimum replica count for a daily time window (UTC), for load known in advance (office hours, a nightly
    batch): the replicas are there when the load comes rather than one model load after it."""

    start: str = Field(..., pattern=_HHMM, max_length=5, description="Start of the window, HH:MM in UTC (inclusive).")
    end: str = Field(
        ..., pattern=_HHMM, max_length=5,
        description="End of the window, HH:MM in UTC (exclusive). An end before the start spans midnight.",
    )
    days: list[Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]] = Field(
        default_factory=list, max_length=7,
        description="Days (of the window's start) it applies on; empty: every day.",
    )
    min_replicas: int = Field(..., ge=1, le=1000, description="Fewest replicas during the window.")

    def active(self, epoch_seconds: float) -> bool:
        """Whether the window covers this instant (UTC)."""
        day_s = epoch_seconds % 86400.0
        weekday = (int(epoch_seconds // 86400) + 3) % 7  # 1970-01-01 was a Thursday (Mon = 0)
        start = int(self.start[:2]) * 3600 + int(self.start[3:]) * 60
        end = int(self.end[:2]) * 3600 + int(self.end[3:]) * 60
        if start == end:
            inside, started_yesterday = True, day_s < start
        elif start < end:
            inside, started_yesterday = start <= day_s < end, False
        else:
            inside, started_yesterday = day_s >= start or day_s < end, day_s < end
        if not inside:
            return False
        day = (weekday - 1) % 7 if started_yesterday else weekday
        return not self.days or DAYS[day] in self.days


class ScaleToZero(ApiModel):
    """Scale a bulk pool (objective Throughput) to zero replicas when it has nothing to do, and back up when work
    waits outside it. With no pods there are no TEI metrics and requests to the Service fail (connection refused):
    the signal to wake up comes from outside, an activation query on the operator's Prometheus (like KEDA's
    activation threshold), such as the ingestion pipeline's backlog. Clients must retry with backoff until a replica
    has loaded its model (docs/autoscaling.md, "Scale to zero")."""

    idle_seconds: int = Field(
        600, ge=10, le=86400,
        description="Seconds the pool must have been idle (no input queued, no batch run, no request, no 429, "
        "nothing loading, over the autoscaler's rate window) with the activation query at or below "
        "activationThreshold before it goes to zero. Waking costs a model load (30-180 s): keep it well above the "
        "gaps between a job's requests.",
    )
    activation_query: str = Field(
        ..., min_length=1, max_length=4096,
        description="PromQL instant query, read from the operator's Prometheus (TEI_OPERATOR_PROMETHEUS_URL) every "
        "tick: a value above activationThreshold means work is waiting (e.g. the ingestion queue's length). The sum "
        "of the result's samples is used; an empty result reads 0. A query that fails or returns a non-number keeps "
        "(or brings back) one replica and sets ScalingLimited to ActivationUnavailable.",
    )
    activation_threshold: float = Field(
        0, ge=0, le=1e12,
        description="The pool wakes from zero when the activation query reads above this, and goes to zero only "
        "while it reads at or below it.",
    )
    wake_replicas: int = Field(
        1, ge=1, le=1000,
        description="Replicas started when the pool wakes from zero (at least; see activationPerReplica). From "
        "there the Throughput objective sizes the pool.",
    )
    activation_per_replica: float | None = Field(
        None, gt=0, le=1e12,
        description="When set, the pool wakes with ceil(activation / activationPerReplica) replicas (at least "
        "wakeReplicas, at most maxReplicas): a large backlog starts more replicas at once.",
    )


class AutoscalingSpec(ApiModel):
    """The built-in autoscaler. When enabled it owns the Deployment's replicas and spec.replicas is ignored."""

    CEL_RULES: ClassVar[list[dict[str, str]]] = AUTOSCALING_CEL_RULES

    enabled: bool = Field(
        False,
        description="Turn the built-in autoscaler on. When false, spec.replicas rules (and so kubectl scale, an HPA or "
        "KEDA through the scale subresource).",
    )
    min_replicas: int = Field(
        1, ge=0, le=1000,
        description="Fewest replicas the autoscaler keeps, and the count a new Deployment starts with. At least 1, "
        "except 0 on a bulk pool (objective Throughput) with scaleToZero set: a fleet of none has no metrics to "
        "scale up from, and a TEI replica takes 30-180 s to load its model, so only clients that retry can wait "
        "for it.",
    )
    max_replicas: int | None = Field(
        None, ge=1, le=1000, description="Most replicas the autoscaler asks for. Required when enabled."
    )
    target_queue_size: float = Field(
        16, gt=0, le=100000,
        description="Target of te_queue_size (inputs waiting) per ready replica.",
    )
    target_batch_fill: float = Field(
        0.7, gt=0, le=1,
        description="Target mean batch size in tokens, as a fraction of engine.maxBatchTokens "
        "(from te_batch_next_tokens, zero-size batches left out).",
    )
    target_utilization: float = Field(
        0.7, gt=0, le=1,
        description="Target tokens/s per ready replica, as a fraction of the peak tokens/s per replica the autoscaler "
        "has observed while the replicas were saturated (learned per service; unused until the first saturation).",
    )
    metrics_max_age_seconds: int = Field(
        60, ge=1, le=3600,
        description="Metrics older than this are treated as unavailable: the autoscaler holds and never scales down. "
        "The operator setting TEI_OPERATOR_METRICS_STALE_SECONDS applies too, to each pod's newest sample: the "
        "smaller of the two is the limit.",
    )
    tolerance: float = Field(
        0.1, ge=0, le=1,
        description="No scaling while the load ratio (observed / target) stays within 1 +/- tolerance.",
    )
    startup_grace_seconds: int = Field(
        180, ge=0, le=3600,
        description="For this long after creation, a replica that is not Ready yet counts as capacity on its way "
        "(its model is loading), so the fleet does not overshoot while models load.",
    )
    fallback_replicas: int | None = Field(
        None, ge=0, le=1000,
        description="Replicas to hold at least, once metrics have failed failureThreshold ticks in a row. "
        "Unset: hold the current count.",
    )
    failure_threshold: int = Field(
        3, ge=1, le=100, description="Failed metric reads in a row after which fallbackReplicas applies."
    )
    metrics_source: Literal["default", "prometheus", "scrape"] = Field(
        "default",
        description="Where metrics come from: prometheus (the operator's Prometheus URL setting), scrape (each pod's "
        "/metrics, no Prometheus needed), or default (the operator's setting).",
    )
    latency_target_ms: int | None = Field(
        None, ge=1, le=600000,
        description="Latency target (p99) of this service's requests in milliseconds, end to end "
        "(te_request_duration). When set, the fleet is sized by a latency capacity learned from it: the most tokens/s "
        "per replica seen while at most 1% of requests took longer, probed 10-30% higher after 5 minutes on time (further the less late they were), moved "
        "down when more are late; no scale-down while 0.5% or more are late. "
        "Out of reach when twice the lowest observed batch time "
        "(te_request_inference_duration) reaches it: then the policy stands down to targetUtilization and its "
        "reason says so. Suits a pool of online queries; leave unset for bulk ingestion.",
    )
    cancel_loading: bool = Field(
        True,
        description="Remove replicas still loading their model (or pending) at once, without the scale-down window, "
        "when the Ready replicas alone are above what the load needs: the demand that asked for them is gone.",
    )
    growth_headroom: bool = Field(
        True,
        description="Size scale-ups for the demand expected one model load from now: the demand's growth rate times "
        "the observed load time (pod creation to Ready), when the demand has risen steadily over the rate window.",
    )
    headroom: float = Field(
        0.0, ge=0.0, le=4.0,
        description="Spare capacity held for a rise in demand faster than a model load, as a fraction of the demand: "
        "the demand target per replica (the latency capacity with latencyTargetMs, else the learned peak x "
        "targetUtilization) is divided by 1 + headroom, so the replicas Ready when a load step arrives carry "
        "1 + headroom times today's demand within the target while new ones load. While only the headroom asks for "
        "more (the demand fits and requests are on time) it is built one replica per scale-down window. 0 (the "
        "default): none. Set it to "
        "the largest rise your traffic shows within one model load (0.5: half again the demand); it costs about that "
        "fraction more replicas at all times. Objective Latency only.",
    )
    periodic_hold: bool = Field(
        True,
        description="Detect load that repeats with a cycle shorter than the model load time plus the scale-down "
        "window, and hold the replicas at the cycle's peak instead of following it down and up again.",
    )
    objective: Literal["Latency", "Throughput"] = Field(
        "Latency",
        description="What the autoscaler optimises. Latency: replicas sized by queue, batch fill and throughput "
        "targets (and latencyTargetMs when set), for pools that answer users. Throughput: for pools that serve only "
        "bulk ingestion (closed-loop clients that retry 429s): replicas sized so each GPU stays busy (its queue "
        "non-empty), scaled down within a minute when the backlog drains; no fast scale-up path. latencyTargetMs "
        "must be unset with Throughput.",
    )
    scale_to_zero: ScaleToZero | None = Field(
        None,
        description="Scale to zero when idle, and wake on an activation query (objective Throughput with "
        "minReplicas 0 only).",
    )
    fast_scale_up: FastScaleUp = Field(default_factory=FastScaleUp, description="The fast scale-up path.")
    schedule: list[ScheduleWindow] = Field(
        default_factory=list, max_length=50,
        description="Minimum replicas per daily time window (UTC), applied ahead of the load.",
    )
    scale_up: ScaleUpBehavior = Field(default_factory=ScaleUpBehavior, description="Scale-up behaviour.")
    scale_down: ScaleDownBehavior = Field(default_factory=ScaleDownBehavior, description="Scale-down behaviour.")

    @model_validator(mode="after")
    def _bounds(self) -> "AutoscalingSpec":
        if self.enabled and self.max_replicas is None:
            raise FieldError("maxReplicas", "is required when enabled is true")
        if self.max_replicas is not None and self.min_replicas > self.max_replicas:
            raise FieldError(
                "minReplicas", f"must be less than or equal to maxReplicas ({self.min_replicas} > {self.max_replicas})"
            )
        if self.min_replicas == 0 and (self.objective != "Throughput" or self.scale_to_zero is None):
            raise FieldError("minReplicas", "0 is allowed only with objective Throughput and scaleToZero set (an "
                             "activationQuery to wake the pool from zero); otherwise it must be at least 1")
        if self.scale_to_zero is not None and self.min_replicas != 0:
            raise FieldError("scaleToZero", f"needs minReplicas 0 (got minReplicas {self.min_replicas})")
        if (self.scale_to_zero is not None and self.max_replicas is not None
                and self.scale_to_zero.wake_replicas > self.max_replicas):
            raise FieldError("scaleToZero.wakeReplicas", f"must be less than or equal to maxReplicas "
                             f"({self.scale_to_zero.wake_replicas} > {self.max_replicas})")
        if self.objective == "Throughput" and self.latency_target_ms is not None:
            raise FieldError("latencyTargetMs", "must be unset when objective is Throughput (a throughput pool has "
                             "no latency target; use objective Latency)")
        if self.objective == "Throughput" and self.headroom != 0.0:
            raise FieldError("headroom", f"must be 0 when objective is Throughput (got {self.headroom}): a throughput "
                             "pool keeps its GPUs busy, spare capacity is what it removes")
        if self.fast_scale_up.threshold < 1.0 + self.tolerance:
            raise FieldError("fastScaleUp.threshold", f"must be at least 1 + tolerance "
                             f"({self.fast_scale_up.threshold} < {1.0 + self.tolerance})")
        if self.max_replicas is not None:
            for i, window in enumerate(self.schedule):
                if window.min_replicas > self.max_replicas:
                    raise FieldError(f"schedule[{i}].minReplicas", f"must be less than or equal to maxReplicas "
                                     f"({window.min_replicas} > {self.max_replicas})")
        return self

    def scheduled_minimum(self, epoch_seconds: float) -> int | None:
        """The largest minReplicas of the schedule windows active now, or None."""
        active = [w.min_replicas for w in self.schedule if w.active(epoch_seconds)]
        return max(active) if active else None


class AutoscalingSignals(StatusModel):
    """The signals of the last tick; a missing value means the metric was unknown (never read as zero)."""

    queue_per_replica: float | None = Field(None, description="te_queue_size per ready replica.")
    batch_fill: float | None = Field(None, description="Mean tokens per non-empty batch / maxBatchTokens.")
    overloaded_per_second: float | None = Field(None, description="Rate of 429 (overloaded) failures per second.")
    requests_per_second: float | None = Field(None, description="Rate of requests per second.")
    ready_replicas: int | None = Field(None, description="Pods Ready.")
    starting_replicas: int | None = Field(None, description="Pods not Ready yet within the startup grace.")
    schedulable_replicas: int | None = Field(
        None, description="Replicas the matching GPU nodes can still hold, plus those already placed."
    )


class AutoscalingStatus(StatusModel):
    """What the autoscaler last saw and decided."""

    signals: AutoscalingSignals | None = Field(None, description="The signals when this status last changed (it is "
                                               "written only when the decision, a limit or a rounded signal "
                                               "changes).")
    current_replicas: int | None = Field(None, description="The Deployment's replicas at the last tick.")
    desired_replicas: int | None = Field(None, description="The replica count the autoscaler decided.")
    last_decision: str | None = Field(None, description="ScaleUp, ScaleDown, Hold or Limited.")
    reason: str | None = Field(None, description="Why, in words.")
    last_scale_time: str | None = Field(None, description="When replicas last changed (RFC 3339).")
    last_change_time: str | None = Field(None, description="When the autoscaler last changed this status (RFC 3339). "
                                         "An idle, settled service is not rewritten: that the autoscaler runs "
                                         "shows in the operator's metric "
                                         "tei_operator_autoscaler_last_successful_tick_timestamp_seconds.")
    last_tick_time: str | None = Field(None, description="Deprecated, no longer written (0.1.x refreshed it once a "
                                       "minute); removed at the status's next change. See lastChangeTime.")
    consecutive_metric_failures: int | None = Field(None, description=(
        "Metric reads failed in a row, counted up to spec.autoscaling.failureThreshold: that value means at least "
        "that many (the ScalingLimited condition's lastTransitionTime says since when). Not counted further, so "
        "an outage does not rewrite the status every tick."))
