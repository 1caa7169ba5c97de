"""Scale to zero on a real control plane with a real Prometheus (spec.autoscaling.scaleToZero,
autoscaling/activation.py).

The activation query reads `ingest_backlog_batches`, a gauge this test serves from a tiny HTTP endpoint that the
real Prometheus scrapes every second (the ingestion pipeline's backlog, in production). The service's own metrics
come from the emulated TEI pods through the built-in scraper. In one run:

1. a new pool with minReplicas 0 and no backlog stays at zero: Ready and Available with reason ScaledToZero
   (the STATUS column says ScaledToZero), not Degraded, ScalingLimited False (no MetricsUnavailable for a pool
   that has no pods on purpose), no PodDisruptionBudget;
2. a backlog above activationThreshold wakes it (0 -> 1, a ScaledUp Event naming the activation);
3. the backlog gone and the pool idle for idleSeconds: back to 0, with a ScaledDown Event "from 1 to 0: Idle ...";
4. an activation query Prometheus refuses: the pool comes back to 1 replica (fail safe) and ScalingLimited is
   True with reason ActivationUnavailable and Prometheus' error in its message.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.cluster import free_port

from .conftest import Prometheus, Timeline, start_operator
from .test_closed_loop import limited, namespace, ready_of, replicas_of, wait  # noqa: F401 (fixture)

pytestmark = [pytest.mark.cluster, pytest.mark.e2e, pytest.mark.timeout(240)]

IDLE_SECONDS = 10
QUERY = "sum(ingest_backlog_batches)"


class Backlog:
    """Serves `ingest_backlog_batches <value>` on /metrics (127.0.0.1, a free port)."""

    def __init__(self) -> None:
        self.value = 0.0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = (f"# TYPE ingest_backlog_batches gauge\ningest_backlog_batches {owner.value}\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="backlog")
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def backlog():
    server = Backlog()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def prometheus(workdir, backlog):
    """The closed-loop Prometheus with one more job: the pipeline's backlog endpoint."""
    prom = Prometheus(workdir, workdir / "targets.json")
    config = workdir / "prometheus.yml"
    config.write_text(config.read_text() + "- job_name: pipeline\n"
                      f"  static_configs: [{{targets: ['127.0.0.1:{backlog.port}']}}]\n")
    prom.start()
    yield prom
    prom.stop()


def pool(name: str, namespace: str, query: str = QUERY) -> dict:
    return {
        "apiVersion": "tei-operator.io/v1alpha1", "kind": "EmbeddingService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"id": "BAAI/bge-m3"},
            "gpu": {"count": 1, "type": "a100"},
            "podAnnotations": {"sim.tei-operator.io/readiness": "external"},
            "autoscaling": {
                "enabled": True, "minReplicas": 0, "maxReplicas": 3, "objective": "Throughput",
                "startupGraceSeconds": 30, "metricsMaxAgeSeconds": 10,
                "scaleToZero": {"idleSeconds": IDLE_SECONDS, "activationQuery": query},
            },
        },
    }


def conditions(reader, namespace, name) -> dict[str, dict]:
    svc = reader.service(namespace, name) or {}
    return {c["type"]: c for c in (svc.get("status") or {}).get("conditions") or []}


def status(reader, namespace, name) -> dict:
    return (reader.service(namespace, name) or {}).get("status") or {}


def events(cluster, namespace, name) -> str:
    return cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                           f"involvedObject.name={name},involvedObject.kind=EmbeddingService",
                           "-o", "jsonpath={range .items[*]}{.reason}|{.message}{'\\n'}{end}").stdout


def at_zero_and_says_so(reader, namespace, name) -> bool:
    st = status(reader, namespace, name)
    conds = {c["type"]: c for c in st.get("conditions") or []}
    return (replicas_of(reader, namespace, name) == 0
            and (st.get("autoscaling") or {}).get("reason", "").startswith("Scaled to zero")
            and (conds.get("Ready") or {}).get("reason") == "ScaledToZero"
            and st.get("summary") == "ScaledToZero")


async def test_idle_to_zero_activation_wakes_and_a_query_error_keeps_one(request, scarce_cluster, prometheus,
                                                                        backlog, emulated_pods, reader, workdir,
                                                                        namespace):
    operator = start_operator(scarce_cluster, workdir, "operator-zero", {
        "TEI_OPERATOR_METRICS_SOURCE": "scrape", "TEI_OPERATOR_SCRAPE_VIA": "podip",
        "TEI_OPERATOR_PROMETHEUS_URL": prometheus.url})
    request.node._e2e_operator = operator
    name = "bulk"
    timeline = Timeline(reader, namespace, name, None)
    request.node._e2e_timeline = timeline
    try:
        await wait(lambda: prometheus.scalar(QUERY) == 0, 30, "Prometheus to scrape the backlog endpoint", timeline)
        scarce_cluster.apply(pool(name, namespace))
        # 1. created at minReplicas 0, no backlog: stays at zero and the status tells the truth about it
        await wait(lambda: at_zero_and_says_so(reader, namespace, name), 30, "the pool at zero, ScaledToZero",
                   timeline)
        conds = conditions(reader, namespace, name)
        assert (conds["Ready"]["status"], conds["Available"]["status"]) == ("True", "True")
        assert conds["Available"]["reason"] == "ScaledToZero"
        assert conds["Degraded"]["status"] == "False"
        # kstatus Current (Flux, kubectl wait): neither reconciling nor stalled at zero
        assert (conds["Reconciling"]["status"], conds["Stalled"]["status"]) == ("False", "False")
        assert (conds["ScalingLimited"]["status"], conds["ScalingLimited"]["reason"]) == ("False", "WithinLimits")
        pdbs = scarce_cluster.kubectl("get", "poddisruptionbudgets", "-n", namespace, "-o", "name").stdout.strip()
        assert pdbs == "", pdbs
        columns = scarce_cluster.kubectl("get", "embeddingservices", name, "-n", namespace, "--no-headers").stdout
        assert "ScaledToZero" in columns, columns

        # 2. work waits outside: the activation query wakes the pool
        backlog.value = 5
        t_up = timeline.mark("backlog 5")
        await wait(lambda: (replicas_of(reader, namespace, name) or 0) >= 1, 20, "the wake-up from zero", timeline)
        print(f"woke {timeline.now() - t_up:.1f}s after the backlog appeared")
        await wait(lambda: ready_of(reader, namespace, name) >= 1, 30, "the woken replica to be Ready", timeline)
        assert "ScaledUp|Scaled up from 0 to 1: Activation 5 > activationThreshold 0" in \
            events(scarce_cluster, namespace, name)

        # 3. the backlog drains and nothing arrives: back to zero after idleSeconds
        backlog.value = 0
        t_drain = timeline.mark("backlog 0")
        await wait(lambda: at_zero_and_says_so(reader, namespace, name), IDLE_SECONDS + 30,
                   "the scale to zero after idleSeconds", timeline)
        assert timeline.now() - t_drain >= IDLE_SECONDS - 1
        evs = events(scarce_cluster, namespace, name)
        assert "ScaledDown|Scaled down from 1 to 0: Idle " in evs and ", activation 0: scaled to zero" in evs, evs

        # 4. an activation query Prometheus refuses: fail safe to one replica, and a condition naming the error
        scarce_cluster.kubectl("patch", "embeddingservice", name, "-n", namespace, "--type=merge", "-p",
                               json.dumps({"spec": {"autoscaling": {"scaleToZero": {"activationQuery": "sum("}}}}))
        timeline.mark("activation query broken")
        await wait(lambda: limited(reader, namespace, name) == ("True", "ActivationUnavailable"), 20,
                   "ScalingLimited ActivationUnavailable", timeline)
        await wait(lambda: (replicas_of(reader, namespace, name) or 0) >= 1, 10, "one replica back", timeline)
        message = conditions(reader, namespace, name)["ScalingLimited"]["message"]
        assert "Activation query failed" in message and "sum(" in message, message
        await wait(lambda: status(reader, namespace, name).get("summary") == "ActivationUnavailable", 30,
                   "the STATUS column to say ActivationUnavailable once the replica serves", timeline)
    finally:
        timeline.stop()
        operator.stop()
    print(timeline.format())
