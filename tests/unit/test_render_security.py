"""Secure defaults of the TEI pods and the optional NetworkPolicy, as rendered (docs/security.md)."""

from __future__ import annotations

import pytest

from tei_operator.api import InvalidSpecError, ServiceResource
from tei_operator.render import render_children
from tei_operator.render.labels import selector_labels
from tei_operator.settings import Settings

from .test_render_children import container, pod, render, resource

GPU = {"model": {"id": "BAAI/bge-m3"}, "gpu": {"type": "a100"}}


def test_the_tei_container_drops_every_capability_but_binding_port_80_and_cannot_escalate():
    ctx = container(render(GPU))["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in ctx and "runAsNonRoot" not in ctx  # TEI images run as root (docs/security.md)


def test_the_pod_gets_no_service_account_token_and_the_runtime_default_seccomp_profile():
    spec = pod(render(GPU))
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert "hostNetwork" not in spec and "hostPID" not in spec and "hostIPC" not in spec
    assert pod(render({**GPU, "automountServiceAccountToken": True}))["automountServiceAccountToken"] is True


def test_user_security_contexts_override_the_defaults_key_by_key():
    restricted = render({**GPU, "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000},
                         "securityContext": {"readOnlyRootFilesystem": True,
                                             "capabilities": {"drop": ["ALL"]}}})
    assert pod(restricted)["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}, "runAsNonRoot": True,
                                                  "runAsUser": 1000, "fsGroup": 1000}
    ctx = container(restricted)["securityContext"]
    assert ctx["capabilities"] == {"drop": ["ALL"]} and ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False and ctx["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize("spec", [
    GPU,
    {**GPU, "replicas": 4},
    {**GPU, "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 8}},
])
def test_replicas_are_spread_across_nodes_softly(spec):
    (spread,) = pod(render(spec))["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["maxSkew"] == 1
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"  # a pool of one node must not leave replicas Pending
    assert spread["labelSelector"] == {"matchLabels": selector_labels(resource(spec))}
    assert spread["matchLabelKeys"] == ["pod-template-hash"]


def test_the_replica_count_does_not_change_the_pod_template():
    # kubectl scale 1 -> 4 must not restart the pods (a model download each): the spread is there at any count.
    one, four = render(GPU), render({**GPU, "replicas": 4})
    assert one.deployment["spec"]["template"] == four.deployment["spec"]["template"]


def test_the_spread_can_be_replaced_or_turned_off():
    mine = [{"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
             "labelSelector": {"matchLabels": {"tei-operator.io/service": "bge-m3"}}}]
    assert pod(render({**GPU, "topologySpreadConstraints": mine}))["topologySpreadConstraints"] == mine
    assert "topologySpreadConstraints" not in pod(render({**GPU, "topologySpreadConstraints": []}))


# -- NetworkPolicy -------------------------------------------------------------------------------------------------

CLIENTS = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "search-api"}},
            "podSelector": {"matchLabels": {"app": "retriever"}}},
           {"podSelector": {"matchLabels": {"role": "indexer"}}}]


def test_no_network_policy_unless_asked():
    assert render(GPU).network_policy is None
    assert all(c["kind"] != "NetworkPolicy" for c in render(GPU).all())


def test_the_network_policy_admits_clients_prometheus_and_the_operator_to_teis_port_only():
    settings = Settings(operator_namespace="tei-system")
    children = render_children(resource({**GPU, "networkPolicy": {"enabled": True, "clients": CLIENTS}}), settings)
    policy = children.network_policy
    assert policy is not None and children.all()[-1] is policy
    assert policy["apiVersion"] == "networking.k8s.io/v1" and policy["kind"] == "NetworkPolicy"
    assert policy["metadata"]["name"] == "bge-m3" and policy["metadata"]["namespace"] == "search"
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert policy["spec"]["podSelector"] == {"matchLabels": selector_labels(resource(GPU))}
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress stays open: TEI downloads the model
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 80}]
    assert rule["from"] == CLIENTS + [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
         "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}},
        # The operator's scraper: without it, turning the policy on would blind the autoscaler.
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "tei-system"}},
         "podSelector": {"matchLabels": {"app.kubernetes.io/name": "tei-operator"}}},
    ]


def test_the_network_policy_never_renders_a_rule_that_admits_everyone():
    # No clients, no Prometheus: the operator's peer remains, so `from` is never empty (empty would admit all).
    settings = Settings(operator_namespace=None, operator_pod_labels="app.kubernetes.io/name=ops,team=ml")
    spec = {**GPU, "networkPolicy": {"enabled": True, "clients": [], "prometheus": []}}
    (rule,) = render_children(resource(spec), settings).network_policy["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {},
                             "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ops", "team": "ml"}}}]


def test_a_peer_without_a_selector_is_refused_by_name():
    expected = r"spec\.networkPolicy\.clients\[0\]\.podSelector: set podSelector, namespaceSelector"
    with pytest.raises(InvalidSpecError, match=expected):
        ServiceResource.from_body({"apiVersion": "tei-operator.io/v1alpha1", "kind": "EmbeddingService",
                                   "metadata": {"name": "x", "namespace": "y"},
                                   "spec": {**GPU, "networkPolicy": {"enabled": True, "clients": [{}]}}})


def test_the_operator_namespace_is_read_from_the_service_account_mount(tmp_path, monkeypatch):
    import tei_operator.settings as settings_module

    mount = tmp_path / "namespace"
    mount.write_text("ops-system\n")
    monkeypatch.setattr(settings_module, "SERVICE_ACCOUNT_NAMESPACE_FILE", str(mount))
    assert Settings().operator_namespace == "ops-system"
    assert Settings(operator_namespace="mine").operator_namespace == "mine"
    monkeypatch.setattr(settings_module, "SERVICE_ACCOUNT_NAMESPACE_FILE", str(tmp_path / "absent"))
    assert Settings().operator_namespace is None
