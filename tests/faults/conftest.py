"""The fault suite's control plane: its own (its faults restart etcd and kube-apiserver and delete nodes, which
must not reach other tests' cluster), with three CPU nodes, started once for the module and stopped after it."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.cluster import Cluster, parse_layout

from .common import Env
from .suite import FAULTS_LAYOUT, prepare_cluster


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~10 s (deselect with -m 'not slow')")
    config.addinivalue_line("markers", "faults: the fault-injection suite at full size (make test-faults; skipped "
                            "unless selected with -m faults)")


@pytest.fixture(scope="module")
def faults_env():
    workdir = Path(tempfile.mkdtemp(prefix="tei-faults-"))
    cluster = Cluster(workdir / "cluster", parse_layout(FAULTS_LAYOUT))
    cluster.start()
    try:
        prepare_cluster(cluster)
        env = Env(cluster, workdir)
        yield env
        env.stop_operators()
    finally:
        cluster.stop()
        if not os.environ.get("TEI_OPERATOR_TEST_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
