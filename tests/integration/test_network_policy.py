"""spec.networkPolicy on the real control plane: the operator applies the NetworkPolicy it renders, puts it back
when deleted, removes it when turned off, and the autoscaler keeps ticking for a service with the policy on.

kwok runs no CNI, so nothing here enforces the policy: these tests show what is stored and that the operator's own
scraper is among its peers (docs/security.md), not that packets are filtered.
"""

from __future__ import annotations

import pytest

from tei_operator.api import ServiceResource
from tei_operator.render import render_children
from tei_operator.settings import Settings

from .conftest import wait_for
from .test_reconcile import controlled_by, embedding

pytestmark = pytest.mark.cluster

CLIENTS = [{"podSelector": {"matchLabels": {"app": "retriever"}}}]
POLICY = {"enabled": True, "clients": CLIENTS}


def test_the_network_policy_is_applied_restored_and_removed(operator, kube, namespace):
    kube.apply(embedding("guarded", namespace, networkPolicy=POLICY))
    policy = wait_for(lambda: kube.get("networkpolicy", "guarded", namespace), 60, what="the NetworkPolicy")
    owner = kube.get("embsvc", "guarded", namespace)
    assert controlled_by(policy, owner)
    # Exactly what `tei-operator render` shows for the stored service, with the operator's settings (run outside
    # a pod, it admits its scraper by pod labels in any namespace).
    rendered = render_children(ServiceResource.from_body(owner), Settings()).network_policy
    assert policy["spec"] == rendered["spec"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 80}]
    assert rule["from"][0] == CLIENTS[0]
    assert {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "tei-operator"}}} \
        in rule["from"]

    uid = policy["metadata"]["uid"]
    kube.kubectl("delete", "networkpolicy", "guarded", "-n", namespace)
    wait_for(lambda: (p := kube.get("networkpolicy", "guarded", namespace)) and p["metadata"]["uid"] != uid, 30,
             what="the deleted NetworkPolicy to be recreated")

    kube.apply(embedding("guarded", namespace, networkPolicy={**POLICY, "enabled": False}))
    wait_for(lambda: kube.get("networkpolicy", "guarded", namespace) is None, 30,
             what="the NetworkPolicy to be removed")
    events = [e["message"] for e in kube.events(namespace, "guarded") if e["reason"] == "Deleted"]
    assert any("NetworkPolicy guarded" in m for m in events), events


def test_the_autoscaler_keeps_ticking_with_the_policy_on(operator, kube, namespace):
    kube.apply(embedding("scaled", namespace, networkPolicy=POLICY,
                         autoscaling={"enabled": True, "minReplicas": 1, "maxReplicas": 2}))
    wait_for(lambda: kube.get("networkpolicy", "scaled", namespace), 60, what="the NetworkPolicy")
    first = wait_for(lambda: ((kube.get("embsvc", "scaled", namespace) or {}).get("status") or {}).get(
        "autoscaling", {}).get("lastChangeTime"), 90, what="a first autoscaler tick")
    # The simulated pods serve no /metrics, so the ticks report missing metrics (never a scale-down); what matters
    # here is that the service with a policy is still in the autoscaler's loop and the Deployment is left alone.
    status = kube.get("embsvc", "scaled", namespace)["status"]
    assert status["autoscaling"]["currentReplicas"] >= 1 and first
    assert kube.get("deployment", "scaled", namespace)["spec"]["replicas"] >= 1
