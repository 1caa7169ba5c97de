"""Closed-loop fixtures: a scarce control plane, a real Prometheus, one TEI emulator per pod, the operator.

- `scarce_cluster`: its own control plane (module scope) with one A100 node of 4 GPUs and a CPU node, so the GPU
  capacity limit bites after 4 replicas; the CRDs applied.
- `prometheus`: /usr/bin/prometheus on 127.0.0.1 (free port, temporary storage, 1 s scrape interval), fed by the
  file_sd targets file the emulated pods write. Missing binary: the test fails saying `apt-get install prometheus`.
- `emulated_pods`: tests/cluster/emulated_pods.py, one emulator process per Running pod.
- `timeline`: a thread recording the Deployment's replicas, readiness and the autoscaler's status every 0.5 s;
  attached to the report of a failed test, with the operator's log tail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Cluster, free_port, parse_layout
from tests.cluster.emulated_pods import EmulatedPods
from tests.integration.conftest import OperatorProcess

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = Path(os.environ.get("TEI_OPERATOR_PROMETHEUS", "/usr/bin/prometheus"))
LAYOUT = "a100=1x4,cpu=1"
GROUP_VERSION = "tei-operator.io/v1alpha1"

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]


def keep() -> bool:
    return bool(os.environ.get("TEI_OPERATOR_TEST_KEEP"))


@pytest.fixture(scope="module")
def workdir():
    path = Path(tempfile.mkdtemp(prefix="tei-e2e-"))
    yield path
    if not keep():
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def scarce_cluster(workdir):
    cluster = Cluster(workdir / "cluster", parse_layout(LAYOUT))
    cluster.start()  # with a pod CIDR block of its own (198.18.0.0/15 in the private namespace; netns.py)
    try:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        for crd in ("embeddingservices", "rerankerservices"):
            cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                            f"crd/{crd}.tei-operator.io")
        yield cluster
    finally:
        cluster.stop()


class Prometheus:
    """A real Prometheus on 127.0.0.1, scraping the file_sd targets every second."""

    def __init__(self, workdir: Path, targets_file: Path) -> None:
        if not PROMETHEUS.exists():
            pytest.fail(f"{PROMETHEUS} is missing: the closed-loop test needs a real Prometheus. "
                        "Install it with `apt-get install prometheus` (CI installs it).")
        self.workdir = workdir
        self.port = free_port()
        self.targets_file = targets_file
        self.proc: subprocess.Popen | None = None
        targets_file.write_text("[]")
        (workdir / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n- job_name: tei\n"
            f"  file_sd_configs: [{{files: ['{targets_file}'], refresh_interval: 1s}}]\n")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        log = open(self.workdir / "prometheus.log", "ab")
        self.proc = subprocess.Popen(
            [str(PROMETHEUS), f"--config.file={self.workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=1h", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}; log in {self.workdir}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus did not become ready in {timeout:.0f}s; log in {self.workdir}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def query(self, promql: str) -> list[dict]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.loads(r.read())["data"]["result"]

    def scalar(self, promql: str) -> float | None:
        try:
            result = self.query(promql)
        except OSError:
            return None
        return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def prometheus(workdir):
    prom = Prometheus(workdir, workdir / "targets.json")
    prom.start()
    yield prom
    prom.stop()


@pytest.fixture(scope="module")
def emulated_pods(scarce_cluster, prometheus, workdir):
    pods = EmulatedPods(str(scarce_cluster.kubeconfig), targets_file=prometheus.targets_file,
                        tokens_per_second=TOKENS_PER_SECOND, load_seconds=LOAD_SECONDS,
                        log_dir=workdir / "emulators")
    pods.start()
    yield pods
    pods.stop()


# Emulated GPU: 4000 tokens/s per replica; a load request of 8 inputs x 50 words is ~520 tokens (the emulator
# counts words x 1.3), so one replica serves ~7.7 requests/s; loading a model takes 2 s.
TOKENS_PER_SECOND = 4000.0
LOAD_SECONDS = 2.0


class ApiReader:
    """Reads objects as dicts over HTTPS with the kubeconfig's client certificate (what the harness writes; no
    kubectl process per poll, and no synchronous `kubernetes` package: the operator does not depend on it)."""

    def __init__(self, kubeconfig: str) -> None:
        import ssl

        import yaml

        config = yaml.safe_load(Path(kubeconfig).read_text())
        cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
        self.server = cluster["server"].rstrip("/")
        self.context = ssl.create_default_context(cafile=cluster["certificate-authority"])
        self.context.load_cert_chain(user["client-certificate"], user["client-key"])

    def get(self, path: str) -> dict | None:
        request = urllib.request.Request(self.server + path, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5, context=self.context) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise RuntimeError(f"GET {path}: {exc.code} {exc.read()[:200]!r}") from exc

    def deployment(self, namespace: str, name: str) -> dict | None:
        return self.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")

    def service(self, namespace: str, name: str, plural: str = "embeddingservices") -> dict | None:
        return self.get(f"/apis/tei-operator.io/v1alpha1/namespaces/{namespace}/{plural}/{name}")


@dataclass
class Point:
    t: float
    replicas: int | None
    ready: int | None
    limited: str
    decision: str
    queue: Any
    prom_queue: float | None
    reason: str


class Timeline:
    """Samples the service every 0.5 s in a thread: what the assertions and the failure report read."""

    def __init__(self, api: ApiReader, namespace: str, name: str, prometheus: Prometheus | None) -> None:
        self.api, self.namespace, self.name, self.prometheus = api, namespace, name, prometheus
        self.points: list[Point] = []
        self.marks: list[tuple[float, str]] = []
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="timeline")
        self._thread.start()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def mark(self, what: str) -> float:
        t = self.now()
        self.marks.append((t, what))
        return t

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.points.append(self._sample())
            except Exception as exc:  # noqa: BLE001 - recorded, the next sample may work
                self.points.append(Point(self.now(), None, None, f"error {exc}", "", None, None, ""))

    def _sample(self) -> Point:
        dep = self.api.deployment(self.namespace, self.name) or {}
        svc = self.api.service(self.namespace, self.name) or {}
        status = svc.get("status") or {}
        auto = status.get("autoscaling") or {}
        cond = next((c for c in status.get("conditions") or [] if c.get("type") == "ScalingLimited"), {})
        prom_queue = None
        if self.prometheus is not None and self.prometheus.proc is not None:
            prom_queue = self.prometheus.scalar(
                f'sum(avg_over_time(te_queue_size{{namespace="{self.namespace}"}}[10s]))')
        return Point(self.now(), (dep.get("spec") or {}).get("replicas"), (dep.get("status") or {}).get("readyReplicas"),
                     f"{cond.get('status', '-')}/{cond.get('reason', '-')}", auto.get("lastDecision", "-"),
                     (auto.get("signals") or {}).get("queuePerReplica"), prom_queue, auto.get("reason", ""))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    # -- questions the test asks ----------------------------------------------------------------------------
    def replicas_at_or_after(self, t: float) -> list[tuple[float, int]]:
        return [(p.t, p.replicas) for p in self.points if p.t >= t and p.replicas is not None]

    def first(self, predicate, after: float = 0.0) -> Point | None:
        return next((p for p in self.points if p.t >= after and predicate(p)), None)

    def format(self) -> str:
        lines = [f"{'t':>7} {'replicas':>8} {'ready':>5} {'ScalingLimited':<28} {'decision':<9} {'q/rep':>7} "
                 f"{'prom q':>7}  reason"]
        marks = list(self.marks)
        for p in self.points:
            while marks and marks[0][0] <= p.t:
                t, what = marks.pop(0)
                lines.append(f"{t:7.1f} ---- {what}")
            q = "-" if p.queue is None else f"{p.queue:.1f}"
            pq = "-" if p.prom_queue is None else f"{p.prom_queue:.0f}"
            lines.append(f"{p.t:7.1f} {p.replicas!s:>8} {p.ready!s:>5} {p.limited:<28} {p.decision:<9} {q:>7} "
                         f"{pq:>7}  {p.reason[:110]}")
        for t, what in marks:
            lines.append(f"{t:7.1f} ---- {what}")
        return "\n".join(lines)


@pytest.fixture
def reader(scarce_cluster) -> ApiReader:
    return ApiReader(str(scarce_cluster.kubeconfig))


def start_operator(scarce_cluster, workdir: Path, name: str, env: dict[str, str]) -> OperatorProcess:
    opdir = workdir / name
    opdir.mkdir(exist_ok=True)
    process = OperatorProcess(str(scarce_cluster.kubeconfig), opdir, {
        "TEI_OPERATOR_AUTOSCALER_TICK_SECONDS": str(TICK_SECONDS),
        "TEI_OPERATOR_METRICS_STALE_SECONDS": "10",
        "TEI_OPERATOR_MAX_PENDING_REPLICAS": "0",
        "TEI_OPERATOR_RESYNC_SECONDS": "600",
        **env,
    })
    process.start()
    return process


TICK_SECONDS = 2.0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for name in ("timeline", "operator"):
            value = getattr(item, f"_e2e_{name}", None)
            if isinstance(value, Timeline):
                report.sections.append(("replicas timeline (t in seconds since the test started)", value.format()))
            elif isinstance(value, OperatorProcess):
                report.sections.append((f"tei-operator log (tail; full: {value.log_path})", value.log_tail(120)))


def pytest_collection_modifyitems(items):
    """Every closed-loop test runs for minutes: all are `slow` (`-m "not slow"` leaves them out)."""
    for item in items:
        if item.nodeid.startswith("tests/e2e/"):
            item.add_marker(pytest.mark.slow)
