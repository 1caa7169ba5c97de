"""The optional NetworkPolicy of a service (spec.networkPolicy): ingress to TEI's port from the named clients,
Prometheus and the operator's own metrics scraper, nothing else. Pure, like the other children."""

from __future__ import annotations

from typing import Any

from ..api.network import LabelSelector, NetworkPeer
from ..api.resource import ServiceResource
from ..settings import Settings
from .labels import selector_labels
from .pod import TEI_PORT

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server on every namespace


def wants_network_policy(resource: ServiceResource) -> bool:
    return resource.spec.network_policy.enabled


def operator_peer(settings: Settings) -> dict[str, Any]:
    """The operator's pods, which scrape /metrics for the autoscaler: by their labels, in the operator's namespace
    when it is known (in a pod it always is), else in any namespace."""
    namespace = ({"matchLabels": {NAMESPACE_NAME_LABEL: settings.operator_namespace}}
                 if settings.operator_namespace else {})
    return {"namespaceSelector": namespace, "podSelector": {"matchLabels": dict(settings.operator_pod_labels)}}


def _selector(selector: LabelSelector) -> dict[str, Any]:
    """A selector as written: empty parts left out, so `{}` (select all) stays `{}`."""
    out: dict[str, Any] = {}
    if selector.match_labels:
        out["matchLabels"] = dict(selector.match_labels)
    if selector.match_expressions:
        out["matchExpressions"] = [dict(e) for e in selector.match_expressions]
    return out


def _peer(peer: NetworkPeer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if peer.namespace_selector is not None:
        out["namespaceSelector"] = _selector(peer.namespace_selector)
    if peer.pod_selector is not None:
        out["podSelector"] = _selector(peer.pod_selector)
    return out


def render_network_policy(resource: ServiceResource, settings: Settings, metadata: dict[str, Any]) -> dict[str, Any]:
    """The NetworkPolicy, named like the service, selecting its pods. One ingress rule on TEI's port whose peers
    are the clients, Prometheus and the operator. A rule without peers would admit everyone, so the operator's peer
    is always there and an empty list of peers is never rendered."""
    policy = resource.spec.network_policy
    peers = [_peer(p) for p in policy.clients] + [_peer(p) for p in policy.prometheus] + [operator_peer(settings)]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": {
            "podSelector": {"matchLabels": selector_labels(resource)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": [{"protocol": "TCP", "port": TEI_PORT}]}],
        },
    }
