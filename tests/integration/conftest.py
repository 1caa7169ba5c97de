"""Integration fixtures: the CRDs installed on the local control plane and the operator running as a subprocess.

The operator is the real thing: `tei-operator run` with KUBECONFIG and its settings from the environment, started
once per session, stopped at the end. Its log goes to a file; when a test fails, the log's tail is attached to the
report (and the whole path is printed).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.cluster import netns
from tests.cluster.harness import free_port
from tests.wait import wait_for  # noqa: F401 - the tests import it from here too

REPO = Path(__file__).resolve().parents[2]
CRDS_DIR = REPO / "crds"
EXAMPLES_DIR = REPO / "examples"
GROUP = "tei-operator.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
LOG_TAIL_LINES = 80
TOUCH_ANNOTATION = "tests.tei-operator.io/touched"

pytestmark = pytest.mark.cluster


class OperatorProcess:
    """`tei-operator run` as a child process: start, wait until healthy, stop, restart; log kept in a file."""

    def __init__(self, kubeconfig: str, workdir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.log_path = workdir / "operator.log"
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/healthz"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The operator's /metrics, parsed: (name, sorted label pairs) -> value."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            text = response.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def metric_sum(self, name: str, **labels: str) -> float:
        """The sum of `name`'s samples whose labels include `labels`."""
        return sum(v for (n, pairs), v in self.metrics().items()
                   if n == name and set(labels.items()) <= set(pairs))

    def command(self) -> list[str]:
        exe = Path(sys.executable).with_name("tei-operator")
        if exe.exists() and importlib.util.find_spec("tei_operator.cli") is not None:
            return [str(exe), "run"]
        # The CLI module not being there yet must not hide the controller's own tests: run it directly.
        return [sys.executable, "-c", "from tei_operator.settings import load_settings; "
                "from tei_operator.controller.runner import run; run(load_settings())"]

    def start(self, timeout: float = 60.0) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": self.kubeconfig,
            "TEI_OPERATOR_HEALTH_PORT": str(self.health_port),
            "TEI_OPERATOR_METRICS_PORT": str(self.metrics_port),
            "TEI_OPERATOR_LOG_FORMAT": "plain",
            "TEI_OPERATOR_NAMESPACES": "",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts} at {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tei-operator exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.health_url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"tei-operator did not answer {self.health_url} within {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no cleanup, no Lease release (a crashed or evicted-by-force operator)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


class Kube:
    """kubectl helpers for the tests (JSON in, dicts out)."""

    def __init__(self, cluster) -> None:
        self.cluster = cluster

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        return self.cluster.kubectl(*args, check=check, input=input)

    def apply(self, manifest: dict | list[dict], *args: str, check: bool = True) -> subprocess.CompletedProcess:
        docs = manifest if isinstance(manifest, list) else [manifest]
        return self.kubectl("apply", "-f", "-", *args, input=yaml.safe_dump_all(docs), check=check)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        args = ["get", kind, name, "-o", "json", "--show-managed-fields"] + (["-n", namespace] if namespace else [])
        result = self.kubectl(*args, check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr or "not found" in result.stderr:
                return None
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return json.loads(result.stdout)

    def list(self, kind: str, namespace: str, selector: str | None = None) -> list[dict]:
        args = ["get", kind, "-n", namespace, "-o", "json"] + (["-l", selector] if selector else [])
        return json.loads(self.kubectl(*args).stdout)["items"]

    def condition(self, kind: str, name: str, namespace: str, ctype: str) -> dict | None:
        obj = self.get(kind, name, namespace) or {}
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond.get("type") == ctype:
                return cond
        return None

    def wait_condition(self, kind: str, name: str, namespace: str, ctype: str, status: str = "True", *,
                       reason: str | None = None, timeout: float = 60.0) -> dict:
        def check():
            cond = self.condition(kind, name, namespace, ctype)
            if cond and cond.get("status") == status and (reason is None or cond.get("reason") == reason):
                return cond
            return None
        return wait_for(check, timeout, what=f"{kind}/{name} {ctype}={status}" + (f" ({reason})" if reason else ""))

    def reconciled(self, kind: str, name: str, namespace: str, operator: "OperatorProcess",
                   timeout: float = 20.0) -> None:
        """Return once the operator has run a full reconcile of the service from this moment on: the positive
        sign to wait for before asserting that nothing changed. It touches the service with a fresh annotation and
        waits for the operator's log line saying it reconciled the service after that change (handlers.py logs it
        once the reconcile it queued has ended)."""
        token = f"{time.monotonic_ns()}"
        start = len(operator.log_text())
        line = f" {namespace}/{name} after its labels or annotations changed"
        self.kubectl("annotate", "--overwrite", kind, name, "-n", namespace, f"{TOUCH_ANNOTATION}={token}")
        wait_for(lambda: line in operator.log_text()[start:], timeout, what=f"the operator to reconcile {kind}/{name}")

    def events(self, namespace: str, name: str) -> list[dict]:
        return json.loads(self.kubectl("get", "events", "-n", namespace, "--field-selector",
                                       f"involvedObject.name={name}", "-o", "json").stdout)["items"]


@pytest.fixture(scope="session")
def cluster(request):
    """The session's control plane; with TEI_OPERATOR_TEST_CLUSTER=DIR, the one already running from DIR
    (`python -m tests.cluster up --dir DIR`), for quick iterations. Otherwise tests/conftest.py's fresh one."""
    attach_dir = os.environ.get("TEI_OPERATOR_TEST_CLUSTER")
    if not attach_dir:
        yield request.getfixturevalue("cluster")
        return
    from tests.cluster import Cluster

    attached = Cluster.attach(attach_dir)
    old = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(attached.kubeconfig)
    try:
        yield attached
    finally:
        if old is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = old


@pytest.fixture(scope="session")
def kube(cluster) -> Kube:
    return Kube(cluster)


@pytest.fixture(scope="session")
def crds(cluster, kube) -> list[dict]:
    """The CRDs from crds/, applied and Established."""
    crds_dir = CRDS_DIR
    files = sorted(crds_dir.glob("*.yaml"))
    if not files:
        pytest.fail(f"no CRD files in {crds_dir}: run `tei-operator crds` (make crds) first")
    docs = [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds_dir))
    for doc in docs:
        kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{doc['metadata']['name']}")
        # Established comes a moment before the storage answers lists ("storage is (re)initializing").
        plural = doc["spec"]["names"]["plural"]
        wait_for(lambda: kube.kubectl("get", f"{plural}.{GROUP}", "-A", check=False).returncode == 0, 30,
                 what=f"{plural} to be listable")
    return docs


@pytest.fixture(scope="session")
def operator(cluster, crds, kubeconfig):
    """The operator, running against the test cluster for the whole session."""
    workdir = Path(tempfile.mkdtemp(prefix="tei-operator-it-"))
    # Two trusted field managers (a name and a prefix) for test_extra_field_managers.py; no other test uses them.
    # The built-in scraper (and the /info and token-counter reads of status.model and status.cost, sampled every 5 s
    # instead of 60) reads pods through the API server's pod proxy, as an operator outside the cluster does
    # (test_service_routing.py checks it). In the loopback fallback the API server refuses to proxy to kwok's
    # 127.N.x.y pod IPs: there the operator reaches pods by pod IP, as an in-cluster operator does.
    scrape_via = "proxy" if netns.current().mode == "private" else "podip"
    process = OperatorProcess(kubeconfig, workdir, {"TEI_OPERATOR_RESYNC_SECONDS": "600",
                                                    "TEI_OPERATOR_SCRAPE_VIA": scrape_via,
                                                    "TEI_OPERATOR_EXTRA_FIELD_MANAGERS": "reloader,mesh-injector-*",
                                                    "TEI_OPERATOR_COST_SAMPLE_SECONDS": "5",
                                                    # test_model_cache.py: a failed download fails its Job at once
                                                    "TEI_OPERATOR_CACHE_JOB_BACKOFF_LIMIT": "0"})
    process.start()
    try:
        yield process
    finally:
        process.stop()
        print(f"\ntei-operator log: {process.log_path}")
        if not os.environ.get("TEI_OPERATOR_TEST_KEEP") and not getattr(process, "failed", False):
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        process = item.funcargs.get("operator")
        if isinstance(process, OperatorProcess):
            process.failed = True
            report.sections.append((f"tei-operator log (tail; full log: {process.log_path})", process.log_tail()))


def service_manifest(kind: str, name: str, namespace: str, spec: dict) -> dict:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name, "namespace": namespace},
            "spec": spec}
