"""What the autoscaler observes about one service in one tick, and how TEI's metrics become those numbers.

`Signals` is the only input of the pure policy (`policy.decide`) besides its own memory and the spec. Metric sources
(Prometheus, scraping the pods) and the benchmark's simulator both build it, so the policy sees the same shape live
and in the benchmark.

A value of None always means "unknown", never zero: a metric that could not be read must not look like an idle
service, or the autoscaler would scale a busy fleet down during a monitoring outage.

Zero-size batches. TEI's batching task records one observation of size 0 in `te_batch_next_tokens` and
`te_batch_next_size` for the final, empty batch of every wake-up, so `sum / count` of `te_batch_next_tokens`
under-reads the mean batch. A real batch always has at least 2 tokens (every tokenizer TEI serves adds special tokens
and TEI refuses empty inputs), so the histogram's first bucket (`le="1"`) holds exactly the zero-size batches. The
number of non-empty batches is therefore `count - bucket{le="1"}`, and the mean tokens per non-empty batch is
`sum / (count - bucket{le="1"})`. `NONEMPTY_BATCH_RATE_PROMQL` and `mean_batch_tokens()` implement that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The TEI series behind each signal, the one copy of them: the Prometheus source (sources/prometheus.py) turns each
# into one query over every pod of every autoscaled service (`sum by (namespace, pod) (FUNCTION(SERIES{...}[w]))`),
# and docs/autoscaling-metrics.md shows those queries filled in (a unit test keeps it in step).
# te_queue_size is an instantaneous gauge that jumps by a whole client batch (up to 32 inputs) at once: averaged
# over the rate window it stops a single burst from holding the fleet up for a whole scale-down window.
# te_request_count counts every request as it arrives (429s included): the arrival rate, backlog or not.
# te_request_success counts requests as they complete: with the batched tokens it gives tokens per request.
# te_request_inference_duration (sum / count) is the time a request spent in its batch: the observed batch time,
# which sizes the fleet for a latency target (spec.autoscaling.latencyTargetMs).

#: The zero-size batches' bucket (see the module docstring), as a PromQL label matcher. TEI writes `le="1"`;
#: Prometheus 3 and prometheus_client normalise the label to "1.0": match both.
ZERO_BATCH_LE_MATCHER = 'le=~"1|1\\\\.0"'

#: `Signals.share_within`: when no request of a window took longer than the upper bound of the duration bucket that
#: holds a latency target, the share slower than a bound is taken to fall by this factor across that bucket.
TAIL_FLOOR = 1e-3


@dataclass(frozen=True)
class SignalSeries:
    """How one signal is read from Prometheus: FUNCTION(SERIES{MATCHERS}[window]), summed over a pod's series."""

    function: str
    series: str
    matchers: str = ""


SIGNAL_SERIES: dict[str, SignalSeries] = {
    "queue": SignalSeries("avg_over_time", "te_queue_size"),
    "tokens": SignalSeries("rate", "te_batch_next_tokens_sum"),
    "batches": SignalSeries("rate", "te_batch_next_tokens_count"),
    "zero_batches": SignalSeries("rate", "te_batch_next_tokens_bucket", ZERO_BATCH_LE_MATCHER),
    "overloaded": SignalSeries("rate", "te_request_failure", 'err="overloaded"'),
    "requests": SignalSeries("rate", "te_request_count"),
    "successes": SignalSeries("rate", "te_request_success"),
    "batch_seconds": SignalSeries("rate", "te_request_inference_duration_sum"),
    "batch_seconds_count": SignalSeries("rate", "te_request_inference_duration_count"),
}


def signal_promql(name: str, selector: str, window: str) -> str:
    """One signal's range expression, e.g. `rate(te_request_count{namespace=~"a"}[60s])`. `selector` is a label
    matcher list (may be empty), `window` a PromQL duration."""
    spec = SIGNAL_SERIES[name]
    matchers = ",".join(m for m in (selector, spec.matchers) if m)
    return f"{spec.function}({spec.series}{{{matchers}}}[{window}])"


def service_promql_template(name: str) -> str:
    """`signal_promql` of one service as a `str.format` template with `{sel}` (its label matchers) and `{w}` (the
    window) left open, for dashboards and alert rules that must read a signal as the autoscaler does."""
    text = signal_promql(name, "@SEL@", "@W@").replace("{", "{{").replace("}", "}}")
    return text.replace("@SEL@", "{sel}").replace("@W@", "{w}")


#: Non-empty batches per second of one service (`{sel}`, `{w}` as above): all batches minus the zero-size ones.
NONEMPTY_BATCH_RATE_PROMQL = (f"sum({service_promql_template('batches')})"
                              f" - sum({service_promql_template('zero_batches')})")


def nonempty_batch_rate(count_rate: float, zero_bucket_rate: float) -> float:
    """Batches per second that held at least one token: all batches minus those in the `le="1"` bucket.

    Clamped at 0: rates over a window can disagree by a rounding error when a pod restarts.
    """
    return max(0.0, count_rate - zero_bucket_rate)


def mean_batch_tokens(tokens_rate_sum: float | None, nonempty_rate: float | None) -> float | None:
    """Mean tokens per non-empty batch, or None when there were no batches to average (unknown, not zero)."""
    if tokens_rate_sum is None or nonempty_rate is None or nonempty_rate <= 0 or not math.isfinite(tokens_rate_sum):
        return None
    return tokens_rate_sum / nonempty_rate


@dataclass(frozen=True)
class Signals:
    """One service's observations in one tick. None means unknown (never read it as zero).

    Replica counts come from the Kubernetes API (pods and the Deployment); metric fields from TEI's `/metrics`
    (directly or through Prometheus). `starting_replicas` is computed by the caller with the service's
    `spec.autoscaling.startupGraceSeconds`: pods not Ready yet but younger than the grace, i.e. still loading
    their model. Pods not Ready and older than the grace are counted in neither, so a crash-looping pod does not
    pass for capacity forever.
    """

    observed_at: float
    """When the metrics were read (seconds, same clock as the `now` passed to `decide`)."""
    current_replicas: int
    """The Deployment's spec.replicas: what the autoscaler asked for last."""
    ready_replicas: int
    """Pods Ready (serving behind the Service)."""
    starting_replicas: int = 0
    """Pods scheduled, not Ready yet, younger than startupGraceSeconds (their model is loading)."""
    pending_replicas: int = 0
    """Pods not scheduled (no node has a free GPU for them)."""
    queue_size_total: float | None = None
    """Sum over Ready pods of te_queue_size (inputs waiting), averaged over the rate window."""
    batch_tokens_rate_sum: float | None = None
    """Tokens per second the fleet batched: sum over pods of rate(te_batch_next_tokens_sum)."""
    batch_rate_count: float | None = None
    """Non-empty batches per second over the fleet (count minus the zero-size batches, see module docstring)."""
    mean_tokens_per_batch: float | None = None
    """Precomputed mean tokens per non-empty batch; used when batch_tokens_rate_sum/batch_rate_count are unset."""
    overloaded_rate: float | None = None
    """Requests refused with 429 per second: rate(te_request_failure{err="overloaded"})."""
    request_rate: float | None = None
    """Requests arriving per second over the fleet (429s included): rate(te_request_count)."""
    success_rate: float | None = None
    """Requests completed per second: rate(te_request_success). With batch_tokens_rate_sum it gives the tokens
    of an average request, which turns request_rate into the demand in tokens/s."""
    schedulable_capacity: int | None = None
    """Most replicas the matching GPU nodes can hold: replicas already placed + free GPUs // gpu.count."""
    mean_batch_seconds: float | None = None
    """Mean time a request spent in its batch (te_request_inference_duration sum / count over the window): the
    observed batch time, which sizes the fleet for spec.autoscaling.latencyTargetMs."""
    request_duration_buckets: tuple[tuple[float, float], ...] | None = None
    """Requests per second that completed within each bound (seconds, ascending, +Inf last) over the window, from
    te_request_duration: the observed end-to-end latency the latency target is checked against. None: not read."""
    load_seconds: float | None = None
    """Observed model load time of this service's replicas: the median, over the Ready pods, of creation to Ready.
    None when no pod shows both times."""
    error: str | None = None
    """Why the metrics are unknown (query failed, no series, ...); None when they were read."""

    def mean_batch_tokens(self) -> float | None:
        """Mean tokens per non-empty batch, from the precomputed value or from the two rates."""
        if self.mean_tokens_per_batch is not None:
            return self.mean_tokens_per_batch
        return mean_batch_tokens(self.batch_tokens_rate_sum, self.batch_rate_count)

    def demand_tokens_rate(self) -> float | None:
        """Tokens/s arriving: request_rate * tokens per completed request; else the tokens batched (a lower bound
        when a backlog grows); None when unknown."""
        tok = self.batch_tokens_rate_sum
        if tok is None or not math.isfinite(tok):
            return None
        if self.request_rate is not None and self.success_rate and self.success_rate > 0:
            return max(tok, self.request_rate * tok / self.success_rate)
        return tok

    def share_within(self, seconds: float) -> tuple[float, float] | None:
        """(share of completed requests that took at most `seconds`, completed requests per second) over the
        window; None when unknown or nothing completed.

        Read as the SLO is written, within the bucket that holds `seconds`: the share of requests slower than a
        bound falls from the bucket's lower bound to its upper one, and is taken to fall geometrically in between
        (log-linear: latency tails decay roughly exponentially); when no request passed the upper bound, it is taken
        to fall by TAIL_FLOOR across the bucket. TEI's duration buckets grow by 1.5x (74.8 ms and 112 ms around
        100 ms); rounding the bound down would check a 100 ms SLO as a 75 ms one (a 40 ms target as a 33 ms one),
        and spreading the bucket evenly (histogram_quantile) counts a third of the requests at 75-112 ms as late.
        """
        buckets = self.request_duration_buckets
        if not buckets:
            return None
        total = buckets[-1][1]
        if not math.isfinite(total) or total <= 0:
            return None
        within = 0.0
        prev_le, prev_count = 0.0, 0.0
        for le, count in buckets:
            if le > seconds + 1e-12:
                slower_lo = max(0.0, 1.0 - prev_count / total)
                if math.isfinite(le) and le > prev_le and slower_lo > 0:
                    slower_hi = max(1.0 - count / total, slower_lo * TAIL_FLOOR)
                    frac = (seconds - prev_le) / (le - prev_le)
                    within = total * (1.0 - slower_lo * (slower_hi / slower_lo) ** frac)
                else:
                    within = prev_count
                break
            within = count
            prev_le, prev_count = le, count
        return min(1.0, max(0.0, within / total)), total

    def capacity_replicas(self) -> int:
        """Replicas that serve now or soon: Ready plus still loading their model (within the startup grace)."""
        return self.ready_replicas + self.starting_replicas
