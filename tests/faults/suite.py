"""The scenarios in report order, with their full sizes (make test-faults) and quick sizes (the test suite)."""

from __future__ import annotations

from . import scenarios as s
from .common import REPO

# Three CPU nodes (110 pods each): 50 services scaled to 2 replicas fit beside the other scenarios' pods.
FAULTS_LAYOUT = "a100=2x8,h100=1x4,l4=1x1,cpu=3"

# name -> (function, full-size kwargs, quick kwargs)
SCENARIOS = {
    "operator-sigkill": (s.operator_sigkill, {"services": 50, "kills": 20}, {"services": 6, "kills": 3}),
    "leader-kill": (s.leader_kill, {"rounds": 3}, {"rounds": 1}),
    "kube-apiserver-restart": (s.apiserver_restart, {"services": 20, "added": 5},
                               {"services": 3, "added": 1, "down_seconds": 2}),
    "etcd-restart": (s.etcd_restart, {"services": 20, "added": 5}, {"services": 4, "added": 2}),
    "prometheus-outage": (s.prometheus_outage, {"outage_seconds": 40}, {"outage_seconds": 30}),
    "gpu-node-lost": (s.gpu_node_lost, {}, {}),
    "crash-loop": (s.crash_loop, {}, {}),
    "rbac-missing": (s.rbac_missing, {"observe_seconds": 75}, {"observe_seconds": 10}),
}


def prepare_cluster(cluster) -> None:
    """The CRDs, applied and Established."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for crd in ("embeddingservices", "rerankerservices"):
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}.tei-operator.io")
