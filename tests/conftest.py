"""Shared pytest fixtures: a real local control plane (tests/cluster) for integration and e2e tests.

The cluster is started once per test session, on demand (unit tests never start it), and stopped at the end,
also when a test fails or the run is interrupted (the processes also die with this Python process).
Set TEI_OPERATOR_TEST_KEEP=1 to keep its directory (logs) after the run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.cluster import Cluster


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
