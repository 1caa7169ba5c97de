"""The one batching model of TEI's router, shared by the emulator (real HTTP, asyncio) and the benchmark's simulator.

What is modelled (TEI 1.9, `core/src/queue.rs` and `core/src/infer.rs`):

- **Profile.** A model on a GPU: a batch of inputs of lengths l_1..l_k takes
  `overhead_s + seconds_per_token * sum(l_i) + seconds_per_token_sq * sum(l_i^2)` seconds (the square term is
  attention's cost growing with sequence length), plus the router's limits and the pod's load time and price.
  Profiles are YAML files in `profiles/` (see `load_profile`).
- **Batch formation** (`take_batch`). Every *input* is one entry of a FIFO queue. A batch takes entries
  from the head while their tokens fit in `max_batch_tokens` and, if set, while it holds fewer than
  `max_batch_requests`; an entry that does not fit stays at the head for the next batch (no skipping ahead).
- **Metrics semantics** (`Router`). `te_queue_size` goes up by one per queued input and is set to the remaining
  queue length whenever a batch is formed; every formed batch is observed in `te_batch_next_size` and
  `te_batch_next_tokens`, including the empty one that ends each wake-up of the batching task.
- **Concurrency permits** (`Router.try_acquire`). One permit per input, held from admission to the answer; a request
  whose inputs do not all get one is refused (429).
- **The two tasks** (`ReplicaModel`). The batching task sleeps until an input arrives, then forms batches while the
  single parking slot is free: the *next* batch is formed as soon as the backend takes the current one, and the
  formed batch waits in the slot while the backend runs. A wake-up ends with an empty batch. A notification that
  arrives while the task is already awake (waiting for the slot) is kept and causes one more, empty, round.

`ReplicaModel` is the clock-free reference of one replica: the simulator's compiled kernel
(`bench/autoscaling/kernel.py`) implements the same rules on arrays, and a unit test runs both on random input and
compares every batch, every gauge value and every counter. The emulator's engine uses `Router` and the profile's
batch time directly.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
KINDS = ("embedding", "reranker")


class ProfileError(ValueError):
    """A profile file or value the batching model cannot use; the message names the file and the field."""


@dataclass(frozen=True)
class LoadSeconds:
    """How long a pod takes from getting its GPU to Ready: a cold start (image pull, model download, load) is drawn
    uniformly from [cold_min, cold_max]; a warm start (image and model cached on the node) takes `warm`."""

    cold_min: float = 30.0
    cold_max: float = 120.0
    warm: float = 15.0


@dataclass(frozen=True)
class Profile:
    """One model on one GPU type: batch cost, TEI's router limits, load time and price."""

    name: str
    model: str
    gpu: str
    overhead_s: float
    seconds_per_token: float
    seconds_per_token_sq: float = 0.0
    max_batch_tokens: int = 16_384
    max_batch_requests: int | None = None
    max_concurrent_requests: int = 512
    max_client_batch_size: int = 32
    max_input_length: int = 512
    kind: str = "embedding"
    load_seconds: LoadSeconds = field(default_factory=LoadSeconds)
    price_per_hour: float = 1.0
    description: str = ""

    def __post_init__(self) -> None:
        problems = []
        for name in ("overhead_s", "seconds_per_token_sq"):
            if not getattr(self, name) >= 0:
                problems.append(f"{name}: must be 0 or more, got {getattr(self, name)}")
        for name in ("seconds_per_token", "price_per_hour"):
            if not getattr(self, name) > 0:
                problems.append(f"{name}: must be greater than 0, got {getattr(self, name)}")
        for name in ("max_batch_tokens", "max_concurrent_requests", "max_client_batch_size", "max_input_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                problems.append(f"{name}: must be a positive integer, got {value!r}")
        if self.max_batch_requests is not None and (not isinstance(self.max_batch_requests, int)
                                                    or self.max_batch_requests <= 0):
            problems.append(f"max_batch_requests: must be a positive integer or null, got {self.max_batch_requests!r}")
        if isinstance(self.max_batch_tokens, int) and isinstance(self.max_input_length, int) \
                and self.max_batch_tokens < self.max_input_length:
            problems.append(f"max_batch_tokens: must be at least max_input_length ({self.max_input_length}), "
                            f"got {self.max_batch_tokens} (TEI refuses to start)")
        if self.kind not in KINDS:
            problems.append(f"kind: must be one of {', '.join(KINDS)}, got {self.kind!r}")
        ls = self.load_seconds
        if not (0 <= ls.cold_min <= ls.cold_max) or ls.warm < 0:
            problems.append(f"load_seconds: need 0 <= cold_min <= cold_max and warm >= 0, got {ls}")
        if problems:
            raise ProfileError(f"profile {self.name!r}: " + "; ".join(problems))

    # ---- batch cost --------------------------------------------------------------------------------------------
    def batch_seconds(self, tokens: float, tokens_sq: float = 0.0) -> float:
        """Time to run one batch of `tokens` tokens whose input lengths squared sum to `tokens_sq`."""
        return self.overhead_s + self.seconds_per_token * tokens + self.seconds_per_token_sq * tokens_sq

    def batch_seconds_of(self, lengths: Iterable[int]) -> float:
        """Time to run one batch of inputs with these token counts."""
        lengths = list(lengths)
        return self.batch_seconds(sum(lengths), sum(n * n for n in lengths))

    def full_batch_inputs(self, input_tokens: int) -> int:
        """Inputs of `input_tokens` tokens each in a full batch (token and request limits)."""
        n = max(1, self.max_batch_tokens // max(1, input_tokens))
        return n if self.max_batch_requests is None else min(n, self.max_batch_requests)

    def peak_tokens_per_second(self, input_tokens: int = 256) -> float:
        """Tokens/s of a replica that always runs full batches of inputs of `input_tokens` tokens: the physical
        limit (every GPU busy) that cost ratios are measured against."""
        n = self.full_batch_inputs(input_tokens)
        return n * input_tokens / self.batch_seconds(n * input_tokens, n * input_tokens * input_tokens)

    def with_limits(self, **changes: Any) -> "Profile":
        """A copy with some fields changed (e.g. another max_batch_tokens); validated again."""
        return replace(self, **changes)


_PROFILE_FIELDS = {f.name for f in fields(Profile)}


def profile_from_dict(doc: dict[str, Any], source: str) -> Profile:
    """Build a Profile from a YAML mapping; unknown or missing fields raise ProfileError naming `source`."""
    if not isinstance(doc, dict):
        raise ProfileError(f"{source}: expected a mapping of profile fields, got {type(doc).__name__}")
    unknown = sorted(set(doc) - _PROFILE_FIELDS)
    if unknown:
        raise ProfileError(f"{source}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_PROFILE_FIELDS))}")
    missing = [k for k in ("model", "gpu", "overhead_s", "seconds_per_token") if k not in doc]
    if missing:
        raise ProfileError(f"{source}: missing field(s) {', '.join(missing)}")
    values = dict(doc)
    values.setdefault("name", Path(source).stem)
    load = values.get("load_seconds", {})
    if isinstance(load, (int, float)):
        load = {"cold_min": load, "cold_max": load, "warm": load}
    if not isinstance(load, dict) or set(load) - {"cold_min", "cold_max", "warm"}:
        raise ProfileError(f"{source}: load_seconds: expected a number or a mapping of cold_min, cold_max, warm")
    try:
        values["load_seconds"] = LoadSeconds(**{k: float(v) for k, v in load.items()})
        for key in ("overhead_s", "seconds_per_token", "seconds_per_token_sq", "price_per_hour"):
            if key in values:
                values[key] = float(values[key])
        return Profile(**values)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ProfileError):
            raise ProfileError(f"{source}: {exc}") from None
        raise ProfileError(f"{source}: {exc}") from None


def profile_names() -> list[str]:
    """Names of the profiles shipped with the package."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | Path) -> Profile:
    """A shipped profile by name (e.g. `bge-m3-a100`) or a profile YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = PROFILE_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ProfileError(f"profile {str(name_or_path)!r}: no such profile; shipped: {', '.join(profile_names())}"
                               " (or give a path to a YAML file)")
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ProfileError(f"profile {str(name_or_path)!r}: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from None
    return profile_from_dict(doc, str(path))


# ---- batch formation ------------------------------------------------------------------------------------------

class Entry(Protocol):
    """A queued input: its token count, and whether its client went away."""

    tokens: int

    @property
    def abandoned(self) -> bool: ...


E = TypeVar("E", bound=Entry)


@dataclass
class Batch:
    """A formed batch: its inputs, their tokens and the sum of their squared lengths."""

    inputs: list[Any]
    tokens: int
    tokens_sq: int = 0
    formed_at: float = 0.0
    """When the batching task formed it (the emulator's clock; the backend cannot start it earlier)."""


def take_batch(queue: deque[E], max_batch_tokens: int, max_batch_requests: int | None) -> tuple[Batch, int]:
    """Take the next batch from the head of `queue` (mutating it) and return it with the number of abandoned
    entries dropped on the way (TEI drops inputs whose client has gone). The batch is empty when the queue holds
    nothing runnable. FIFO: the first entry that does not fit ends the batch."""
    inputs: list[E] = []
    tokens = tokens_sq = dropped = 0
    while queue:
        entry = queue[0]
        if entry.abandoned:
            queue.popleft()
            dropped += 1
            continue
        if tokens + entry.tokens > max_batch_tokens:
            break
        queue.popleft()
        inputs.append(entry)
        tokens += entry.tokens
        tokens_sq += entry.tokens * entry.tokens
        if max_batch_requests is not None and len(inputs) >= max_batch_requests:
            break
    return Batch(inputs, tokens, tokens_sq), dropped


class MetricsSink(Protocol):
    """Where the router records TEI's metrics (the emulator's TeiMetrics, or a plain recorder)."""

    def inc(self, name: str, labels: dict[str, str] | None = None, amount: float = 1.0) -> None: ...
    def add_gauge(self, name: str, amount: float) -> None: ...
    def set_gauge(self, name: str, value: float) -> None: ...
    def observe(self, name: str, value: float) -> None: ...


class Router:
    """TEI's queue, batch formation and concurrency permits of one replica, with TEI's metric semantics."""

    def __init__(self, *, max_batch_tokens: int, max_batch_requests: int | None, max_concurrent_requests: int,
                 metrics: MetricsSink) -> None:
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_requests = max_batch_requests
        self.max_permits = max_concurrent_requests
        self.free_permits = max_concurrent_requests
        self.metrics = metrics
        self.queue: deque[Any] = deque()

    def try_acquire(self, count: int) -> bool:
        """Take `count` permits at once, or none: TEI refuses the whole request when they are not all free."""
        if count > self.free_permits:
            return False
        self.free_permits -= count
        return True

    def release(self, count: int = 1) -> None:
        """Give back permits taken by `try_acquire`."""
        self.free_permits = min(self.max_permits, self.free_permits + count)

    def enqueue(self, entries: Iterable[Any]) -> None:
        """Queue one request's inputs: `te_queue_size` +1 per input."""
        entries = list(entries)
        for entry in entries:
            if entry.tokens > self.max_batch_tokens:
                raise ValueError(f"an input of {entry.tokens} tokens can never fit a batch of {self.max_batch_tokens}")
        for entry in entries:
            self.queue.append(entry)
            self.metrics.add_gauge("te_queue_size", 1)

    def next_batch(self) -> Batch:
        """Form the next batch (maybe empty) and record it: TEI's histograms and the queue gauge reset."""
        batch, dropped = take_batch(self.queue, self.max_batch_tokens, self.max_batch_requests)
        if dropped:
            self.metrics.inc("te_request_failure", {"err": "dropped"}, dropped)
        self.metrics.observe("te_batch_next_size", len(batch.inputs))
        self.metrics.observe("te_batch_next_tokens", batch.tokens)
        self.metrics.set_gauge("te_queue_size", len(self.queue))
        return batch


# ---- the reference replica --------------------------------------------------------------------------------------

@dataclass
class Recorder:
    """A MetricsSink keeping what the equivalence test compares: every gauge value set, every batch observed."""

    gauge: float = 0.0
    gauge_history: list[float] = field(default_factory=list)
    batches: list[tuple[int, int]] = field(default_factory=list)  # (inputs, tokens), empty batches included
    counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    _pending_size: int | None = None

    def inc(self, name: str, labels: dict[str, str] | None = None, amount: float = 1.0) -> None:
        key = (name, tuple(sorted((labels or {}).items())))
        self.counters[key] = self.counters.get(key, 0.0) + amount

    def add_gauge(self, name: str, amount: float) -> None:
        self.gauge += amount

    def set_gauge(self, name: str, value: float) -> None:
        self.gauge = float(value)
        self.gauge_history.append(self.gauge)

    def observe(self, name: str, value: float) -> None:
        if name == "te_batch_next_size":
            self._pending_size = int(value)
        elif name == "te_batch_next_tokens":
            self.batches.append((self._pending_size or 0, int(value)))


@dataclass(eq=False)
class ModelInput:
    """One input in the reference replica."""

    tokens: int
    request: int
    abandoned: bool = False


@dataclass
class RequestOutcome:
    """What the reference replica answered one request: 200 or 429, when, and in which batches."""

    status: int = 0
    done: float = float("nan")
    left: int = 0


class ReplicaModel:
    """One TEI replica as a clock-free state machine: `arrive(t, tokens)` and `finish(t)` (the running batch ends at
    `busy_until`). The driver (a test, or an event loop) calls `finish` at `busy_until` before any later arrival.

    Batching task states: asleep (waiting for a notification) or awake (waiting for the parking slot to be free).
    """

    def __init__(self, profile: Profile, metrics: MetricsSink | None = None) -> None:
        self.profile = profile
        self.metrics = metrics if metrics is not None else Recorder()
        self.router = Router(max_batch_tokens=profile.max_batch_tokens, max_batch_requests=profile.max_batch_requests,
                             max_concurrent_requests=profile.max_concurrent_requests, metrics=self.metrics)
        self.notified = False
        self.awake = False  # the batching task is in its inner loop, waiting for the slot
        self.slot: Batch | None = None
        self.running: Batch | None = None
        self.busy_until = float("inf")
        self.outcomes: list[RequestOutcome] = []
        self.formed: list[tuple[float, int, int, int]] = []  # (time, inputs, tokens, queue left) per formed batch
        self.sizes: list[int] = []

    def arrive(self, t: float, tokens: Sequence[int]) -> int:
        """A request with these input lengths arrives; returns its status so far (429 at once, or 0 = queued)."""
        request = len(self.outcomes)
        self.sizes.append(len(tokens))
        self.metrics.inc("te_request_count", {"method": "single" if len(tokens) == 1 else "batch"})
        if not self.router.try_acquire(len(tokens)):
            self.metrics.inc("te_request_failure", {"err": "overloaded"})
            self.outcomes.append(RequestOutcome(429, t, 0))
            return 429
        self.outcomes.append(RequestOutcome(0, float("nan"), len(tokens)))
        self.router.enqueue(ModelInput(n, request) for n in tokens)
        self.notified = True
        self._pump(t)
        return 0

    def finish(self, t: float) -> None:
        """The running batch ends at `t` (= busy_until): answer its inputs, then let the tasks move on."""
        batch = self.running
        assert batch is not None, "finish() without a running batch"
        for entry in batch.inputs:
            self.router.release(1)
            outcome = self.outcomes[entry.request]
            outcome.left -= 1
            if outcome.left == 0:
                outcome.status, outcome.done = 200, t
                method = "single" if self.sizes[entry.request] == 1 else "batch"
                self.metrics.inc("te_request_success", {"method": method})
        self.running, self.busy_until = None, float("inf")
        self._pump(t)

    def _pump(self, t: float) -> None:
        while True:
            if self.running is None and self.slot is not None:
                self.running, self.slot = self.slot, None
                self.busy_until = t + self.profile.batch_seconds(self.running.tokens, self.running.tokens_sq)
            if self.awake:
                if self.slot is not None:
                    return
                batch = self.router.next_batch()
                self.formed.append((t, len(batch.inputs), batch.tokens, len(self.router.queue)))
                if batch.inputs:
                    self.slot = batch
                else:
                    self.awake = False
                continue
            if self.notified:
                self.notified, self.awake = False, True
                continue
            return
