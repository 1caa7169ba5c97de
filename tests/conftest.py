"""Shared pytest fixtures: a real local control plane (tests/cluster) for integration and e2e tests.

The cluster is started once per test session, on demand (unit tests never start it), and stopped at the end,
also when a test fails or the run is interrupted (the processes also die with this Python process).
Set TEI_OPERATOR_TEST_KEEP=1 to keep its directory (logs) after the run.

Before the first test, the run moves into a private network namespace where 198.18.0.0/15 is local on lo
(tests/cluster/netns.py), so simulated pods get addresses Endpoints accept and Services route; as non-root, or with
TEI_OPERATOR_NETNS=off, it falls back to loopback pod IPs (the header line "pod network:" says which, and why).
With TEI_OPERATOR_TEST_CLUSTER=DIR it joins the namespace of the cluster running from DIR instead.

Markers: `cluster` (needs the local control plane), `e2e` (the closed loop), `slow` (a test that takes more than
~10 s; `-m "not slow"` leaves them out).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.cluster import Cluster, netns
from tests.cluster.harness import ClusterState


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~10 s (deselect with -m 'not slow')")
    attach_dir = os.environ.get("TEI_OPERATOR_TEST_CLUSTER")
    if attach_dir:
        state_file = Path(attach_dir) / "state.json"
        path = ClusterState(**json.loads(state_file.read_text())).netns if state_file.exists() else ""
        if path:
            netns.enter_named(path)
        return
    netns.enter_private_namespace()


def pytest_report_header(config):
    return f"pod network: {netns.current().describe()}"


@pytest.fixture(scope="session")
def pod_network() -> netns.PodNetwork:
    """How pod IPs were made local in this run: `.mode` is private (198.18.0.0/15, valid Endpoints) or loopback."""
    return netns.current()


def requires_private_pod_network(network: netns.PodNetwork) -> None:
    """Skip a test that needs valid Endpoints (Services that route) when the run fell back to loopback pod IPs."""
    if network.mode != "private":
        pytest.skip(f"needs pod IPs Endpoints accept; this run uses the fallback: {network.reason}")


@pytest.fixture(scope="session")
def cluster():
    workdir = Path(tempfile.mkdtemp(prefix="tei-cluster-"))
    c = Cluster(workdir)
    try:
        c.start()
    except Exception:
        c.stop()
        raise
    old = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(c.kubeconfig)
    try:
        yield c
    finally:
        c.stop()
        if old is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = old
        if not os.environ.get("TEI_OPERATOR_TEST_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def kubeconfig(cluster) -> str:
    return str(cluster.kubeconfig)


@pytest.fixture
def namespace(cluster):
    """A fresh namespace for one test, deleted afterwards (without waiting for it to be gone)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
