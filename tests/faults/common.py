"""What every fault scenario shares: the control plane, operators scoped to one namespace, services, convergence
checks that count duplicate and orphaned children, and restarting a control-plane component with its own flags."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cluster import Cluster
from tests.cluster.harness import HOST
from tests.integration.conftest import Kube, OperatorProcess

REPO = Path(__file__).resolve().parents[2]
API_VERSION = "tei-operator.io/v1alpha1"
MANAGED_BY = "app.kubernetes.io/managed-by=tei-operator"
# A CPU-only service: many fit on the CPU nodes, so counts are about the operator, not about GPU capacity.
CPU_SPEC = {"model": {"id": "BAAI/bge-small-en-v1.5"}, "gpu": {"count": 0}}
BASE_BATCH_TOKENS = 16384


GRACE_SECONDS = 10


def _gone(pid: int, proc: subprocess.Popen | None) -> bool:
    if proc is not None:
        return proc.poll() is not None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


class FaultError(RuntimeError):
    """A scenario could not run (not: the operator misbehaved; that is a count in the result)."""


@dataclass
class Result:
    """One scenario's counts and the checks made on them. `counts` keeps insertion order for the report."""

    name: str
    fault: str
    counts: dict[str, Any] = field(default_factory=dict)
    checks: list[tuple[str, bool]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, what: str, ok: bool) -> bool:
        self.checks.append((what, bool(ok)))
        return bool(ok)

    @property
    def passed(self) -> bool:
        return all(ok for _, ok in self.checks)

    def failures(self) -> list[str]:
        return [what for what, ok in self.checks if not ok]


def wait(predicate, timeout: float, what: str, interval: float = 0.25):
    """Poll until predicate() is truthy and return it; FaultError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - remembered for the message
            last = exc
        if time.monotonic() > deadline:
            raise FaultError(f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last})"
                                                                                     if last else ""))
        time.sleep(interval)


def service(name: str, namespace: str, spec: dict | None = None, kind: str = "EmbeddingService",
            annotations: dict | None = None) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": spec or dict(CPU_SPEC)}


class Env:
    """The control plane and the helpers a scenario needs. Every operator it starts watches one namespace, so
    scenarios never see each other's services, and runs with its default settings, leader election included (the
    default Lease `tei-operator` in `default`): a single replica that restarts after a SIGKILL first waits for the
    Lease it held to expire, as a lone replica of the chart would."""

    def __init__(self, cluster: Cluster, workdir: Path | None = None) -> None:
        self.cluster = cluster
        self.kube = Kube(cluster)
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="tei-faults-"))
        self.operators: list[OperatorProcess] = []
        self.last_stop = ""

    def namespace(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:5]}"
        self.cluster.kubectl("create", "namespace", name)
        return name

    def drop_namespace(self, name: str) -> None:
        self.cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)

    def operator(self, name: str, namespaces: str, extra_env: dict[str, str] | None = None,
                 kubeconfig: str | None = None, start: bool = True) -> OperatorProcess:
        opdir = self.workdir / f"{name}-{uuid.uuid4().hex[:4]}"
        opdir.mkdir(parents=True, exist_ok=True)
        process = OperatorProcess(kubeconfig or str(self.cluster.kubeconfig), opdir, {
            "TEI_OPERATOR_NAMESPACES": namespaces, "TEI_OPERATOR_RESYNC_SECONDS": "600", **(extra_env or {})})
        self.operators.append(process)
        if start:
            process.start(timeout=90)
        return process

    def stop_operators(self) -> None:
        for process in self.operators:
            process.stop()
        self.operators.clear()

    def kubectl_json(self, *args: str) -> dict:
        return json.loads(self.cluster.kubectl(*args, "-o", "json").stdout)

    # ------------------------------------------------------------------ restarting control-plane components
    def restart_component(self, component: str, down_seconds: float = 0.0) -> float:
        """Stop `component` (SIGTERM, as an orchestrator would), keep it down `down_seconds`, start it again with
        exactly the same command line (same flags, ports, data directory). Returns the seconds until it answered
        its health check again, counted from the stop."""
        proc = self.cluster.procs.get(component)
        pid = proc.pid if proc is not None else self.cluster.state.pids.get(component)
        if not pid:
            raise FaultError(f"no {component} process in this cluster's state: cannot restart it")
        argv = list(proc.args) if proc is not None else \
            Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
        stopped = time.monotonic()
        # SIGTERM, then SIGKILL after a grace period, as the kubelet stops a static pod. kube-apiserver closes its
        # port at once but may take longer to exit (it drains long-running requests).
        os.kill(pid, signal.SIGTERM)
        self.last_stop = "SIGTERM"
        try:
            wait(lambda: _gone(pid, proc), GRACE_SECONDS, f"{component} to exit", interval=0.1)
        except FaultError:
            os.kill(pid, signal.SIGKILL)
            self.last_stop = f"SIGTERM, SIGKILL after {GRACE_SECONDS} s"
            wait(lambda: _gone(pid, proc), 30, f"{component} to exit after SIGKILL", interval=0.1)
        time.sleep(down_seconds)
        self.cluster._spawn(component, argv)  # the harness's own spawn: same log file, dies with us
        if component == "etcd":
            probe = lambda: self.cluster._http_ok(f"http://{HOST}:{self.cluster.state.ports['etcd']}/health")
        else:
            probe = self.cluster._api_ready
        wait(probe, 120, f"{component} to answer again", interval=0.1)
        # The API server answers /readyz only once etcd and its informers are back; one listing shows it serves.
        wait(lambda: self.cluster.kubectl("get", "namespaces", "-o", "name", check=False).returncode == 0, 60,
             "the API server to serve lists")
        return time.monotonic() - stopped


# ---------------------------------------------------------------------- the state of a namespace's services
@dataclass
class Census:
    services: int = 0
    converged: int = 0
    duplicate_children: int = 0
    orphaned_children: int = 0
    extra_pods: int = 0
    not_converged: list[str] = field(default_factory=list)


def _controller_uid(obj: dict) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref["uid"]
    return None


def census(env: Env, namespace: str, expected: dict[str, dict] | None = None,
           kinds: str = "embeddingservices") -> Census:
    """Counts, in one namespace: services that converged (generation observed, Ready, the Deployment at the
    desired replicas with every pod Ready and the expected batch-token setting), children of one service beyond
    one per kind (duplicates), children whose controller is no live service (orphans), and pods beyond the
    desired replicas. `expected`: name -> {"replicas": n, "batch": tokens} that the workload last asked for."""
    items = env.kubectl_json("get", f"{kinds},deployments,services,poddisruptionbudgets,pods", "-n", namespace)["items"]
    owners = {o["metadata"]["uid"]: o for o in items if o["apiVersion"].startswith("tei-operator.io/")}
    children: dict[tuple[str, str], list[dict]] = {}
    result = Census(services=len(owners))
    pods_by_owner_name: dict[str, int] = {}
    deployments = {}
    for obj in items:
        labels = obj["metadata"].get("labels") or {}
        if obj["kind"] == "Pod":
            svc = labels.get("tei-operator.io/service")
            if svc and not obj["metadata"].get("deletionTimestamp"):
                pods_by_owner_name[svc] = pods_by_owner_name.get(svc, 0) + 1
            continue
        if labels.get("app.kubernetes.io/managed-by") != "tei-operator" or obj["kind"] not in (
                "Deployment", "Service", "PodDisruptionBudget"):
            continue
        uid = _controller_uid(obj)
        if uid not in owners:
            result.orphaned_children += 1
            continue
        children.setdefault((uid, obj["kind"]), []).append(obj)
        if obj["kind"] == "Deployment":
            deployments[uid] = obj
    result.duplicate_children = sum(len(v) - 1 for v in children.values() if len(v) > 1)
    for uid, owner in owners.items():
        name = owner["metadata"]["name"]
        want = (expected or {}).get(name, {})
        status = owner.get("status") or {}
        ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
        dep = deployments.get(uid)
        desired = want.get("replicas", (owner["spec"].get("replicas") or 1))
        ok = (status.get("observedGeneration") == owner["metadata"]["generation"] and ready.get("status") == "True"
              and dep is not None and dep["spec"].get("replicas") == desired
              and (dep.get("status") or {}).get("readyReplicas") == desired
              and (dep.get("status") or {}).get("updatedReplicas") == desired)
        if ok and "batch" in want:
            ok = str(want["batch"]) in json.dumps(dep["spec"]["template"]["spec"]["containers"])
        pods = pods_by_owner_name.get(name, 0)
        if ok and pods > desired:
            result.extra_pods += pods - desired
            ok = False
        if ok:
            result.converged += 1
        else:
            result.not_converged.append(name)
    return result


def wait_converged(env: Env, namespace: str, expected: dict[str, dict], timeout: float) -> tuple[Census, float]:
    """Census until every expected service converged (or timeout); returns the last census and the seconds taken."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        c = census(env, namespace, expected)
        if c.converged == len(expected) and c.services == len(expected):
            return c, time.monotonic() - t0
        if time.monotonic() > deadline:
            return c, time.monotonic() - t0
        time.sleep(1.0)


class Workload(threading.Thread):
    """Writes to services in the background (patches of spec.engine.maxBatchTokens, round robin) until stopped;
    counts the client's failed writes (what a user's `kubectl` saw) and remembers what it last asked for."""

    def __init__(self, env: Env, namespace: str, names: list[str], expected: dict[str, dict],
                 interval: float = 0.2) -> None:
        super().__init__(name="faults-workload", daemon=True)
        self.env, self.namespace, self.names, self.expected = env, namespace, names, expected
        self.interval = interval
        self.writes = 0
        self.failed = 0
        self.slowest = 0.0
        self.first_error = ""
        self._stop_event = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        i = 0
        while not self._stop_event.is_set():
            name = self.names[i % len(self.names)]
            batch = BASE_BATCH_TOKENS + 1000 + i
            started = time.monotonic()
            result = self.env.cluster.kubectl(
                "patch", "embeddingservice", name, "-n", self.namespace, "--type=merge", "-p",
                json.dumps({"spec": {"engine": {"maxBatchTokens": batch}}}), check=False, timeout=30)
            with self._lock:
                self.slowest = max(self.slowest, time.monotonic() - started)
                self.writes += 1
                if result.returncode == 0:
                    self.expected[name]["batch"] = batch
                else:
                    self.failed += 1
                    self.first_error = self.first_error or result.stderr.strip().splitlines()[-1][:200]
            i += 1
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(60)


def create_services(env: Env, namespace: str, count: int, prefix: str = "svc") -> dict[str, dict]:
    """`count` CPU services in one apply; returns the expectations census() checks."""
    names = [f"{prefix}-{i:02d}" for i in range(count)]
    docs = [service(n, namespace, {**CPU_SPEC, "engine": {"maxBatchTokens": BASE_BATCH_TOKENS}}) for n in names]
    env.kube.apply(docs)
    return {n: {"replicas": 1, "batch": BASE_BATCH_TOKENS} for n in names}


def api_errors(process: OperatorProcess) -> float:
    """API requests of the operator that failed for another reason than 404/409 (normal operation)."""
    try:
        metrics = process.metrics()
    except OSError:
        return float("nan")
    return sum(v for (name, labels), v in metrics.items()
               if name == "tei_operator_api_errors_total" and dict(labels).get("code") not in ("404", "409"))
