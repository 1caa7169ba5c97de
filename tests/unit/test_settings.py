"""Operator settings from TEI_OPERATOR_* variables."""

from __future__ import annotations

import pytest

from tei_operator.settings import Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("TEI_OPERATOR_"):
            monkeypatch.delenv(name)


def test_defaults():
    s = load_settings()
    assert s.namespaces == [] and s.tei_version == "1.9.3"
    assert s.image_repository == "ghcr.io/huggingface/text-embeddings-inference"
    assert (s.log_format, s.autoscaler_tick_seconds, s.metrics_source, s.prometheus_url) == ("plain", 15, "scrape", None)
    assert (s.prometheus_namespace_label, s.prometheus_pod_label) == ("namespace", "pod")
    assert (s.prometheus_query_timeout_seconds, s.scrape_via, s.scrape_timeout_seconds) == (5, "auto", 3)
    assert (s.max_pending_replicas, s.metrics_stale_seconds, s.resync_seconds, s.health_port) == (0, 60, 60, 8080)
    assert (s.field_manager, s.autoscaler_field_manager) == ("tei-operator", "tei-operator-autoscaler")
    assert s.extra_field_managers == []


def test_environment_is_read(monkeypatch):
    monkeypatch.setenv("TEI_OPERATOR_NAMESPACES", "search, rag,,")
    monkeypatch.setenv("TEI_OPERATOR_METRICS_SOURCE", "prometheus")
    monkeypatch.setenv("TEI_OPERATOR_PROMETHEUS_URL", "http://prometheus:9090")
    monkeypatch.setenv("TEI_OPERATOR_MAX_PENDING_REPLICAS", "2")
    s = load_settings()
    assert s.namespaces == ["search", "rag"]
    assert (s.metrics_source, s.prometheus_url, s.max_pending_replicas) == ("prometheus", "http://prometheus:9090", 2)


@pytest.mark.parametrize(("var", "value"), [
    ("TEI_OPERATOR_SCRAPE_VIA", "ssh"), ("TEI_OPERATOR_HEALTH_PORT", "70000"), ("TEI_OPERATOR_LOG_FORMAT", "xml"),
    ("TEI_OPERATOR_AUTOSCALER_TICK_SECONDS", "0"), ("TEI_OPERATOR_MAX_PENDING_REPLICAS", "-1"),
])
def test_invalid_environment_names_the_variable(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError, match=f"{var}: .*\\(got '{value}'\\)"):
        load_settings()


def test_extra_field_managers_are_a_comma_separated_list(monkeypatch):
    monkeypatch.setenv("TEI_OPERATOR_EXTRA_FIELD_MANAGERS", " reloader, istio-* ,,")
    assert load_settings().extra_field_managers == ["reloader", "istio-*"]
    monkeypatch.setenv("TEI_OPERATOR_EXTRA_FIELD_MANAGERS", "")
    assert load_settings().extra_field_managers == []


@pytest.mark.parametrize(("value", "words"), [
    ("*", "would trust every field manager"),
    ("reloader,*", "would trust every field manager"),
    ("is*tio", r"\* allowed only at the end"),
    ("x" * 129, "1 to 128 printable characters"),
])
def test_invalid_extra_field_managers_are_refused_with_the_variable_named(monkeypatch, value, words):
    monkeypatch.setenv("TEI_OPERATOR_EXTRA_FIELD_MANAGERS", value)
    with pytest.raises(SettingsError, match=f"TEI_OPERATOR_EXTRA_FIELD_MANAGERS: .*{words}"):
        load_settings()


def test_overrides_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("TEI_OPERATOR_NAMESPACES", "a")
    assert load_settings(namespaces=["b"]).namespaces == ["b"]


def test_every_setting_is_described():
    assert [n for n, f in Settings.model_fields.items() if not (f.description or "").strip()] == []


def test_docs_settings_md_matches_the_settings_class():
    """docs/settings.md is generated (`make crds`); a new or changed setting must show up there."""
    from pathlib import Path

    from tei_operator.settings import Settings, settings_reference_markdown

    doc = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text()
    assert doc == settings_reference_markdown(), "docs/settings.md is stale: run `make crds`"
    for name in Settings.model_fields:
        assert f"`TEI_OPERATOR_{name.upper()}`" in doc


def test_leader_election_defaults_give_a_takeover_within_fifteen_seconds():
    s = load_settings()
    assert s.leader_election is True and s.leader_election_lease_name == "tei-operator"
    # a standby takes a dead leader's Lease within lease duration + 2 retry periods (controller/leader.py)
    assert s.leader_election_lease_duration_seconds + 2 * s.leader_election_retry_period_seconds <= 12
    assert s.metrics_port == 8081 and s.metrics_port != s.health_port


@pytest.mark.parametrize(("env", "words"), [
    ({"TEI_OPERATOR_LEADER_ELECTION_RENEW_DEADLINE_SECONDS": "8"},
     "TEI_OPERATOR_LEADER_ELECTION_RENEW_DEADLINE_SECONDS (8) must be shorter than "
     "TEI_OPERATOR_LEADER_ELECTION_LEASE_DURATION_SECONDS (8)"),
    ({"TEI_OPERATOR_LEADER_ELECTION_RETRY_PERIOD_SECONDS": "5"},
     "TEI_OPERATOR_LEADER_ELECTION_RETRY_PERIOD_SECONDS (5) must be under"),
    ({"TEI_OPERATOR_METRICS_PORT": "8080"}, "TEI_OPERATOR_METRICS_PORT and TEI_OPERATOR_HEALTH_PORT are both 8080"),
    ({"TEI_OPERATOR_LEADER_ELECTION_NAMESPACE": "Tei_System"}, "TEI_OPERATOR_LEADER_ELECTION_NAMESPACE: "),
])
def test_inconsistent_leader_election_or_ports_name_the_variables(monkeypatch, env, words):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert words in str(caught.value)


def test_metrics_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("TEI_OPERATOR_METRICS_PORT", "0")
    assert load_settings().metrics_port == 0
