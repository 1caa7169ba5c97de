"""The pure parts of the leader election (controller/leader.py): timing rules, the Lease's namespace, its time
format and the identity. The election itself runs against the API server in tests/integration/test_leader_election.py."""

from __future__ import annotations

import datetime

import pytest

from tei_operator.controller import leader
from tei_operator.controller.leader import LeaseConfig, lease_namespace, micro_time, own_identity
from tei_operator.settings import load_settings


@pytest.mark.parametrize(("lease", "renew", "retry"), [(8, 8, 1), (8, 9, 1), (8, 6, 5), (8, 6, 0)])
def test_lease_timing_that_could_give_two_writers_is_refused(lease, renew, retry):
    with pytest.raises(ValueError, match="retry_period < renew_deadline < lease_duration"):
        LeaseConfig("l", "ns", "me", lease_duration=lease, renew_deadline=renew, retry_period=retry)


def test_config_from_the_default_settings():
    config = LeaseConfig.from_settings(load_settings(leader_election_namespace="tei-system"), identity="pod-0_ab")
    assert (config.name, config.namespace, config.identity) == ("tei-operator", "tei-system", "pod-0_ab")
    assert (config.lease_duration, config.renew_deadline, config.retry_period) == (8, 6, 1)


def test_lease_namespace_prefers_the_setting_then_the_service_account(tmp_path, monkeypatch):
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    monkeypatch.setattr(leader, "SERVICE_ACCOUNT_NAMESPACE", str(tmp_path / "missing"))
    assert lease_namespace("") == "default"
    monkeypatch.setenv("POD_NAMESPACE", "from-env")
    assert lease_namespace("") == "from-env"
    (tmp_path / "namespace").write_text("tei-system\n")
    monkeypatch.setattr(leader, "SERVICE_ACCOUNT_NAMESPACE", str(tmp_path / "namespace"))
    assert lease_namespace("") == "tei-system"
    assert lease_namespace("explicit") == "explicit"


def test_micro_time_is_what_the_api_server_stores_in_a_lease():
    epoch = datetime.datetime(2026, 11, 30, 10, 58, 10, 123456, tzinfo=datetime.timezone.utc).timestamp()
    assert micro_time(epoch) == "2026-11-30T10:58:10.123456Z"


def test_identities_of_two_processes_on_one_host_differ():
    a, b = own_identity(), own_identity()
    assert a != b and a.rsplit("_", 1)[0] == b.rsplit("_", 1)[0]
