"""tests/cluster/netns.py: which pod CIDRs a local cluster may use, and the fallback when no private namespace."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster import netns

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("cidr", ["10.244.0.0/16", "192.168.0.0/24", "198.20.0.0/18"])
def test_a_pod_cidr_that_could_leave_the_machine_is_refused_naming_the_field(cidr):
    with pytest.raises(ValueError, match=r"pod_cidr .*must be inside 127\.0\.0\.0/8"):
        netns.check_pod_cidr(cidr)


def test_loopback_pod_cidrs_are_always_allowed():
    netns.check_pod_cidr("127.42.0.0/16")


def test_pod_addresses_are_loopback_or_in_the_private_range():
    assert netns.is_pod_address("127.9.0.3") and netns.is_pod_address("198.19.7.1")
    assert not netns.is_pod_address("10.0.0.1") and not netns.is_pod_address("198.20.0.1")


def test_clusters_of_one_process_get_different_blocks_inside_the_private_range(pod_network):
    if pod_network.mode != "private":
        pytest.skip(f"no private pod network here: {pod_network.reason}")
    first, second = (ipaddress.ip_network(netns.next_pod_cidr()) for _ in range(2))
    assert first != second and not first.overlaps(second)
    assert first.subnet_of(netns.POD_SUPERNET) and first.prefixlen == netns.CLUSTER_PREFIX


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env}, preexec_fn=netns.in_host_network)


def test_off_falls_back_to_a_loopback_block_and_says_why():
    out = run_python("from tests.cluster import netns; n = netns.enter_private_namespace(); "
                     "print(n.mode, netns.next_pod_cidr()); print(n.describe())", TEI_OPERATOR_NETNS="off")
    assert out.returncode == 0, out.stderr
    mode, cidr = out.stdout.splitlines()[0].split()
    assert mode == "loopback" and ipaddress.ip_network(cidr).is_loopback
    assert "fallback: TEI_OPERATOR_NETNS=off" in out.stdout


def test_an_unknown_setting_is_refused_naming_the_variable():
    out = run_python("from tests.cluster import netns; netns.enter_private_namespace()", TEI_OPERATOR_NETNS="yes")
    assert out.returncode != 0
    assert "TEI_OPERATOR_NETNS: must be auto or off, got 'yes'" in out.stderr


def test_the_private_range_is_refused_where_it_is_not_local():
    # In the namespace this run started in, 198.18.0.0/15 is not local: packets to it would follow the default route.
    out = run_python("from tests.cluster import netns; print(netns.pod_range_is_local()); "
                     "netns.check_pod_cidr('198.18.0.0/18')", TEI_OPERATOR_NETNS="off")
    assert out.stdout.strip() == "False", out.stdout
    assert out.returncode != 0 and "when that range is local" in out.stderr, out.stderr
