"""One measured run of the scale benchmark at N services: a fresh control plane, the raw-client baseline, the
control plane's own idle traffic, then the operator creating the same N services and idling. See __init__.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import counts as c
from .client import ApiClient
from .fleet import MANAGED_BY, PLURALS, RAW_MANAGER, gpu_nodes, namespaces, plan, raw_children
from .prom import Prometheus

ROOT = Path(__file__).resolve().parents[2]
CRD_PREFIX = "apis/tei-operator.io/v1alpha1"
APPLY_THREADS = 4
TARGETS_SECONDS = 10
"""How often the benchmark rewrites Prometheus' targets from a LIST of the operator's pods while they are created."""
TICK_HISTOGRAM = "tei_operator_autoscaler_tick_duration_seconds"


@dataclass
class Timing:
    """The knobs of one run (the full benchmark's, or --quick's)."""

    resync_seconds: float = 20
    tick_seconds: float = 15
    noise_seconds: float = 30
    settle_seconds: float = 40
    idle_seconds: float = 60
    fast_off_seconds: float = 60
    quiet_seconds: float = 30
    """Before an idle window: the operator must have sent no write for this long (after `settle_seconds`) ..."""
    settle_max_seconds: float = 240
    """... waiting at most this long for it."""
    """A second idle window with the fast scale-up path off (0: not measured)."""
    poll_seconds: float = 2
    scrape_interval: float = 5
    ready_timeout: float = 1800


QUICK = Timing(resync_seconds=5, tick_seconds=5, noise_seconds=5, settle_seconds=8, idle_seconds=12,
               fast_off_seconds=0, quiet_seconds=5, settle_max_seconds=30, poll_seconds=1, scrape_interval=2, ready_timeout=240)


@dataclass
class RunResult:
    n: int
    raw_seconds: float
    operator_seconds: float
    children: int
    applies_per_child: float
    create: dict  # (verb, resource) -> requests the operator sent while creating, per service
    create_writes: float  # per service
    create_reads: float
    idle: dict  # (verb, resource) -> requests per service per idle minute
    idle_writes: float  # per service per minute (Leases left out)
    idle_reads: float
    lease_requests_per_minute: float
    rss_mib: float
    cpu_seconds_per_minute: float
    ticks: float
    tick_seconds: float
    queries_per_tick: float
    pod_reads_per_minute: float
    operator_client_idle: dict = field(default_factory=dict)  # the operator's own counter, per minute
    idle_window_seconds: float = 0
    resync_seconds: float = 0
    cpu_seconds_per_minute_no_fast: float = float("nan")
    """The same idle window's CPU with the fast scale-up path off (a second operator process), NaN if not run."""
    fast_pod_reads_per_minute: float = float("nan")
    """Pod reads per idle minute that the fast path made (with it on less with it off)."""
    gc_seconds_per_minute: float = float("nan")
    """CPU seconds per idle minute of Python's garbage collector (`tei_operator_gc_pause_seconds_total`), part of
    cpu_seconds_per_minute; NaN for an operator without that series."""
    gc_seconds_per_minute_no_fast: float = float("nan")
    reconciles_per_minute: float = float("nan")
    """Reconciles the operator ran per idle minute (`tei_operator_reconciles_total`): 0 for a fleet at rest but
    for the resync's periodic full pass."""
    reconciles_per_minute_no_fast: float = float("nan")
    settled_writes: float = float("nan")
    """Writes per service from the apply until the operator went quiet after all were Ready (the settle): every
    write creating caused, the cost status's first rate and the autoscaler's first metrics included, whatever
    the length of the creating phase (which `create_writes` is bounded by). Subtracted as `create`; NaN if not
    measured."""
    settled_client_writes: float = float("nan")
    """The same span's writes per service by the operator's own client counter (`tei_operator_api_requests_total`,
    no subtraction; kopf's own requests are not in it): a cross-check of `settled_writes`."""
    settled_seconds: float = float("nan")
    """From the apply to the end of the settle."""

    def to_json(self) -> dict:
        out = dict(self.__dict__)
        for name in ("create", "idle", "operator_client_idle"):
            out[name] = {f"{v} {r}": x for (v, r), x in getattr(self, name).items()}
        return out

    @classmethod
    def from_json(cls, data: dict) -> "RunResult":
        data = dict(data)
        for name in ("create", "idle", "operator_client_idle"):
            data[name] = {tuple(k.split(" ", 1)): v for k, v in (data.get(name) or {}).items()}
        # The totals follow from the rows, by today's rule (counts.total), whichever version saved them.
        data.update(create_writes=c.writes(data["create"]), create_reads=c.reads(data["create"]),
                    idle_writes=c.writes(data["idle"]), idle_reads=c.reads(data["idle"]))
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _ready(obj: dict) -> bool:
    return any(x.get("type") == "Ready" and x.get("status") == "True"
               for x in (obj.get("status") or {}).get("conditions") or [])


def _deployment_ready(d: dict) -> bool:
    want = (d.get("spec") or {}).get("replicas", 1)
    status = d.get("status") or {}
    return status.get("readyReplicas", 0) >= want and status.get("updatedReplicas", 0) >= want


def _operator_writes(operator) -> float:
    """The operator's own writes so far (its client's counter), the leader Lease left out."""
    return sum(v for (name, labels), v in operator.metrics().items()
               if name == "tei_operator_api_requests_total" and dict(labels).get("method") in c.WRITE_VERBS
               and not dict(labels).get("resource", "").startswith("leases"))


def _settle(operator, timing: Timing) -> float:
    """After the fixed settle: wait until the operator has sent no write for `quiet_seconds` (what creating left
    to do is done: the first token rates of the cost status, the autoscaler's first rates), at most
    `settle_max_seconds`. Returns the seconds waited."""
    started = time.monotonic()
    last, quiet_since = _operator_writes(operator), time.monotonic()
    while time.monotonic() - quiet_since < timing.quiet_seconds and \
            time.monotonic() - started < timing.settle_max_seconds:
        time.sleep(1.0)
        try:
            now = _operator_writes(operator)
        except OSError as exc:  # a busy operator (a loaded machine) answered /metrics late: it is not quiet
            log(f"the operator's /metrics did not answer ({exc}); still waiting for it to be quiet")
            quiet_since = time.monotonic()
            continue
        if now != last:
            last, quiet_since = now, time.monotonic()
    return time.monotonic() - started


def _wait(predicate, timeout: float, what: str, interval: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class FakePods:
    """bench/scale/fakepods.py as a subprocess on 0.0.0.0:80 of this network namespace."""

    def __init__(self, workdir: Path) -> None:
        self.log_path = workdir / "fakepods.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen([sys.executable, "-m", "bench.scale.fakepods", "--port", "80"], cwd=ROOT,
                                         stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        _wait(lambda: self.proc.poll() is not None or self._up(), 30, "the fake pods' server", 0.2)
        if self.proc.poll() is not None:
            raise RuntimeError(f"the fake pods' server exited: {self.log_path.read_text()[-800:]}")

    def _up(self) -> bool:
        try:
            self.counts()
            return True
        except OSError:
            return False

    def counts(self) -> dict:
        with urllib.request.urlopen("http://127.0.0.1:80/_bench/counts", timeout=5) as r:
            return json.loads(r.read())

    def reads(self) -> float:
        """Requests to the pods from anyone but Prometheus (the operator's fast path, cost sampler, /info reads)."""
        return float(sum(v for k, v in self.counts()["requests"].items() if not k.startswith("prometheus ")))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def _op_counter(metrics: dict, name: str) -> dict:
    out: dict = {}
    for (n, labels), v in metrics.items():
        if n == name:
            d = dict(labels)
            key = (d.get("method", ""), d.get("resource", ""))
            out[key] = out.get(key, 0.0) + v
    return out


def _sample(metrics: dict, name: str) -> float:
    return sum(v for (n, _), v in metrics.items() if n == name)


GC_SERIES = "tei_operator_gc_pause_seconds_total"


def _metrics_or_none(operator) -> dict | None:
    try:
        return operator.metrics()
    except Exception as exc:  # noqa: BLE001 - a busy operator's /metrics may time out: that figure is then NaN
        log(f"the operator's /metrics did not answer ({exc}): no garbage collector figure for this window")
        return None


RECONCILES = "tei_operator_reconciles_total"


def _delta(before: dict | None, after: dict | None, name: str) -> float:
    """A counter's increase between two readings of the operator's metrics (NaN without the series)."""
    if before is None or after is None or not any(n == name for n, _ in after):
        return float("nan")
    return _sample(after, name) - _sample(before, name)


def _gc_seconds(before: dict | None, after: dict | None) -> float:
    """The garbage collector's CPU seconds between two readings of the operator's metrics (NaN without the series)."""
    return _delta(before, after, GC_SERIES)


PROFILE_IDLE = bool(os.environ.get("SCALE_BENCH_PROFILE"))
"""SCALE_BENCH_PROFILE=1: record the operator with py-spy (pip install py-spy) while it creates the services
(create-profile.txt), during the idle window (idle-profile.txt) and the window with the fast path off
(idle-profile-no-fast.txt), as collapsed stacks in the run's work directory (use with --keep). For finding where idle CPU goes; it costs a little CPU itself,
so the figures of such a run are not for the report."""


def _start_profiler(pid: int, out: Path, seconds: float) -> subprocess.Popen | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        log("SCALE_BENCH_PROFILE is set but py-spy is not installed (pip install py-spy): no profile")
        return None
    return subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "50", "-f", "raw",
                             "-o", str(out), "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(n: int, workdir: Path, timing: Timing) -> RunResult:
    """One run at N services on a fresh control plane, stopped at the end."""
    from tests.cluster import Cluster
    from tests.cluster.harness import free_port
    from tests.cluster.pools import A100, NodePool
    from tests.integration.conftest import OperatorProcess
    from tei_operator.settings import load_settings

    nodes = NodePool("a100", gpu_nodes(n), gpus=100, product=A100.product, family=A100.family,
                     memory_mib=A100.memory_mib, compute_major=8, compute_minor=0, pods="110")
    log(f"N={n}: starting the control plane with {nodes.count} simulated A100 nodes (100 GPUs, 110 pods each)")
    cluster = Cluster(workdir / "cluster", (nodes,)).start()
    fake = FakePods(workdir)
    prom = Prometheus(workdir / "prometheus", free_port(), timing.scrape_interval)
    operator = None
    try:
        api = ApiClient(cluster)
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
        for crd in PLURALS.values():
            cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}.tei-operator.io")
        for prefix in ("raw", "op"):
            for ns in namespaces(prefix, n):
                api.create_namespace(ns)
        fake.start()
        prom.start()
        env = {"TEI_OPERATOR_RESYNC_SECONDS": f"{timing.resync_seconds:g}",
               "TEI_OPERATOR_AUTOSCALER_TICK_SECONDS": f"{timing.tick_seconds:g}",
               "TEI_OPERATOR_METRICS_SOURCE": "prometheus", "TEI_OPERATOR_PROMETHEUS_URL": prom.url,
               "TEI_OPERATOR_SCRAPE_VIA": "podip", "TEI_OPERATOR_NAMESPACES": ""}
        settings = load_settings()  # rendering depends only on defaults shared with the operator (image, version)

        # -- 1. the raw-client baseline: the same children, rendered by the operator's functions, applied once
        raw_plan = plan(n, "raw")
        children = [child for s in raw_plan for child in raw_children(s, settings)]
        log(f"N={n}: raw baseline: applying {len(children)} children with a plain client")
        sent0, before, t0 = api.sent.copy(), c.parse_request_totals(api.metrics()), time.monotonic()
        with ThreadPoolExecutor(APPLY_THREADS) as pool:
            list(pool.map(lambda m: api.apply(m, RAW_MANAGER), children))
        selector = f"{MANAGED_BY}={RAW_MANAGER}"
        _wait(lambda: sum(map(_deployment_ready, api.list("apis/apps/v1", "deployments", selector))) >= n,
              timing.ready_timeout, f"{n} raw Deployments to be Ready", timing.poll_seconds)
        raw_seconds = time.monotonic() - t0
        after = c.parse_request_totals(api.metrics())
        raw_window = time.monotonic() - t0
        raw_cp = c.minus(c.delta(after, before), c.delta(api.sent, sent0))  # the control plane's part
        log(f"N={n}: raw baseline Ready in {raw_seconds:.1f} s")

        # -- 2. the control plane's own idle traffic (no operator yet), to take out of the operator's figures; after
        # a settle, so that the raw phase's last Events (posted late by the controllers) do not count as idle noise
        time.sleep(timing.settle_seconds)
        before, t0 = c.parse_request_totals(api.metrics()), time.monotonic()
        time.sleep(timing.noise_seconds)
        after = c.parse_request_totals(api.metrics())
        noise_rate = {k: v / (time.monotonic() - t0) for k, v in c.delta(after, before).items()}  # per second

        # -- 3. the operator creates the same N services
        operator = OperatorProcess(str(cluster.kubeconfig), workdir / "operator", env)
        (workdir / "operator").mkdir(parents=True, exist_ok=True)
        operator.start(timeout=120)
        _wait(lambda: _sample(operator.metrics(), "tei_operator_leader") == 1, 60, "the operator to lead", 0.5)
        time.sleep(2)  # its watches start
        op_plan = plan(n, "op")
        log(f"N={n}: operator: applying {n} services")
        sent0, before, t0 = api.sent.copy(), c.parse_request_totals(api.metrics()), time.monotonic()
        create_sent0, create_before, create_t0, create_m0 = sent0, before, t0, operator.metrics()
        # py-spy for at most as long as the raw baseline took, twice (it stops with the operator if sooner)
        creating = (_start_profiler(operator.proc.pid, workdir / "create-profile.txt", 2 * raw_seconds + 60)
                    if PROFILE_IDLE else None)
        with ThreadPoolExecutor(APPLY_THREADS) as pool:
            list(pool.map(lambda s: api.apply(s.manifest(), "scale-bench"), op_plan))

        listed = [time.monotonic()]

        def all_ready() -> bool:
            # Prometheus finds the pods as they come, as its Kubernetes discovery would (Debian's has none): the
            # targets file is rewritten from a LIST every TARGETS_SECONDS. Without, every autoscaled service read
            # "not scraped by Prometheus" (MetricsUnavailable) while being created: writes a real cluster has not.
            if time.monotonic() - listed[0] >= TARGETS_SECONDS:
                listed[0] = time.monotonic()
                prom.set_targets(api.list("api/v1", "pods", "app.kubernetes.io/managed-by=tei-operator"))
            return sum(_ready(o) for p in PLURALS.values() for o in api.list(CRD_PREFIX, p)) >= n
        _wait(all_ready, timing.ready_timeout, f"{n} services to be Ready", timing.poll_seconds)
        operator_seconds = time.monotonic() - t0
        if creating is not None and creating.poll() is None:
            creating.send_signal(signal.SIGINT)  # py-spy writes what it recorded so far
            creating.wait(30)
        after = c.parse_request_totals(api.metrics())
        op_window = time.monotonic() - t0
        op_delta = c.delta(after, before)
        created = c.minus(op_delta, c.delta(api.sent, sent0), raw_cp, noise_rate,
                          scale=[1.0, 1.0, op_window - raw_window])
        # Prometheus scrapes the operator's pods from now on (the benchmark's LIST is counted as its own).
        targets = prom.set_targets(api.list("api/v1", "pods", "app.kubernetes.io/managed-by=tei-operator"))
        n_children = len(children)
        applies = c.applies_of_children(op_delta) / n_children
        log(f"N={n}: operator: all Ready in {operator_seconds:.1f} s; {applies:.2f} applies per child")

        # -- 4. idle: nothing changes; resyncs and autoscaler ticks run
        time.sleep(timing.settle_seconds)
        settled = _settle(operator, timing)
        log(f"N={n}: the operator's writes stopped {settled:.0f} s after the settle")
        pid = operator.proc.pid
        m0, cpu0, q0, pods0 = operator.metrics(), _cpu_seconds(pid), prom.queries_served(), fake.reads()
        before, t0 = c.parse_request_totals(api.metrics()), time.monotonic()
        # Creating through the settle: what the operator wrote from the apply until it went quiet, subtracted as
        # `created` is (the benchmark's own requests, the raw children's control-plane traffic, the idle rate for
        # the rest of the span), and by its own client counter.
        settled_span = t0 - create_t0
        to_settled = c.minus(c.delta(before, create_before), c.delta(api.sent, create_sent0), raw_cp, noise_rate,
                             scale=[1.0, 1.0, settled_span - raw_window])
        client_span = c.minus(_op_counter(m0, "tei_operator_api_requests_total"),
                              _op_counter(create_m0, "tei_operator_api_requests_total"))
        log(f"N={n}: from the apply to the settle ({settled_span:.0f} s): {c.writes(to_settled) / n:.2f} writes per "
            f"service ({c.writes(client_span) / n:.2f} by the operator's own counter)")
        log(f"N={n}: idle window of {timing.idle_seconds:g} s ({prom.targets_up()} of {targets} pods scraped by "
            "Prometheus)")
        profiler = _start_profiler(pid, workdir / "idle-profile.txt", timing.idle_seconds) if PROFILE_IDLE else None
        time.sleep(timing.idle_seconds)
        if profiler is not None:
            profiler.wait(30)
            log(f"N={n}: wrote the idle window's profile to {workdir / 'idle-profile.txt'} (py-spy, collapsed stacks)")
        after = c.parse_request_totals(api.metrics())
        window = time.monotonic() - t0
        m1, cpu1, q1, pods1 = operator.metrics(), _cpu_seconds(pid), prom.queries_served(), fake.reads()
        rss = _rss_mib(pid)
        idle_total = c.minus(c.delta(after, before), noise_rate, scale=[window])
        per_min = 60 / window
        idle = {k: v * per_min / n for k, v in idle_total.items()}
        ticks = _sample(m1, TICK_HISTOGRAM + "_count") - _sample(m0, TICK_HISTOGRAM + "_count")
        tick_sum = _sample(m1, TICK_HISTOGRAM + "_sum") - _sample(m0, TICK_HISTOGRAM + "_sum")
        client0 = _op_counter(m0, "tei_operator_api_requests_total")
        client1 = _op_counter(m1, "tei_operator_api_requests_total")
        client_idle = {k: (v - client0.get(k, 0.0)) * per_min for k, v in client1.items()
                       if v - client0.get(k, 0.0)}
        lease = sum(v for (verb, res), v in idle_total.items() if res == c.LEASES) * per_min
        result = RunResult(
            n=n, raw_seconds=raw_seconds, operator_seconds=operator_seconds, children=n_children,
            applies_per_child=applies, create={k: v / n for k, v in created.items()},
            create_writes=c.writes(created) / n, create_reads=c.reads(created) / n,
            settled_writes=c.writes(to_settled) / n, settled_client_writes=c.writes(client_span) / n,
            settled_seconds=settled_span, idle=idle, idle_writes=c.writes(idle), idle_reads=c.reads(idle), lease_requests_per_minute=lease,
            rss_mib=rss, cpu_seconds_per_minute=(cpu1 - cpu0) * per_min, ticks=ticks,
            tick_seconds=tick_sum / ticks if ticks else float("nan"),
            queries_per_tick=(q1 - q0) / ticks if ticks else float("nan"),
            pod_reads_per_minute=(pods1 - pods0) * per_min, operator_client_idle=client_idle,
            idle_window_seconds=window, resync_seconds=timing.resync_seconds,
            gc_seconds_per_minute=_gc_seconds(m0, m1) * per_min,
            reconciles_per_minute=_delta(m0, m1, RECONCILES) * per_min)
        log(f"N={n}: idle: {result.idle_writes:.3f} writes and {result.idle_reads:.3f} reads per service per minute, "
            f"RSS {rss:.0f} MiB, {result.cpu_seconds_per_minute:.2f} CPU-s/min (garbage collector "
            f"{result.gc_seconds_per_minute:.2f}; {result.reconciles_per_minute:.0f} reconciles/min), {ticks:.0f} ticks of "
            f"{result.tick_seconds:.3f} s, {result.queries_per_tick:.1f} queries per tick")

        # -- 5. the same idle window with the fast scale-up path off: what the 2 s path costs, measured
        if timing.fast_off_seconds > 0:
            operator.stop()
            (workdir / "operator-no-fast").mkdir(parents=True, exist_ok=True)
            operator = OperatorProcess(str(cluster.kubeconfig), workdir / "operator-no-fast",
                                       {**env, "TEI_OPERATOR_AUTOSCALER_FAST_TICK_SECONDS": "0"})
            operator.start(timeout=120)
            _wait(lambda: _sample(operator.metrics(), "tei_operator_leader") == 1, 60, "the operator to lead", 0.5)
            # Settled: its first resync has reconciled every service (and what the start queued is done).
            _wait(lambda: _sample(operator.metrics(), "tei_operator_resyncs_total") >= 1, 10 * timing.resync_seconds
                  + 300, "a first resync of the operator without the fast path", 1.0)
            time.sleep(timing.settle_seconds)
            _settle(operator, timing)
            pid = operator.proc.pid
            cpu0, pods0, t0, m0 = _cpu_seconds(pid), fake.reads(), time.monotonic(), _metrics_or_none(operator)
            log(f"N={n}: idle window of {timing.fast_off_seconds:g} s with the fast scale-up path off")
            profiler = (_start_profiler(pid, workdir / "idle-profile-no-fast.txt", timing.fast_off_seconds)
                        if PROFILE_IDLE else None)
            time.sleep(timing.fast_off_seconds)
            if profiler is not None:
                profiler.wait(30)
            cpu1, pods1, window = _cpu_seconds(pid), fake.reads(), time.monotonic() - t0
            m1 = _metrics_or_none(operator)
            result.cpu_seconds_per_minute_no_fast = (cpu1 - cpu0) * 60 / window
            result.gc_seconds_per_minute_no_fast = _gc_seconds(m0, m1) * 60 / window
            result.reconciles_per_minute_no_fast = _delta(m0, m1, RECONCILES) * 60 / window
            result.fast_pod_reads_per_minute = result.pod_reads_per_minute - (pods1 - pods0) * 60 / window
            log(f"N={n}: without the fast path: {result.cpu_seconds_per_minute_no_fast:.2f} CPU-s/min (garbage "
                f"collector {result.gc_seconds_per_minute_no_fast:.2f}; {result.reconciles_per_minute_no_fast:.0f} reconciles/min), "
                f"{(pods1 - pods0) * 60 / window:.0f} pod reads/min")
        return result
    finally:
        if operator is not None:
            operator.stop()
        prom.stop()
        fake.stop()
        cluster.stop()
