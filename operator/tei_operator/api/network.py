"""`spec.networkPolicy`: an optional NetworkPolicy that admits only the named clients, Prometheus and the operator's
own metrics scraper to TEI's port.

The peers are label selectors, as in a NetworkPolicy. The operator's scraper is admitted by the operator itself
(its namespace and pod labels come from the operator's settings), so turning the policy on never blinds the
autoscaler.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, model_validator

from .base import ApiModel, FieldError
from .types import FreeForm, LabelValue

# kube-prometheus-stack's Prometheus pods carry app.kubernetes.io/name=prometheus; the monitoring namespace is the
# usual home. Override `prometheus` when yours differ.
DEFAULT_PROMETHEUS_PEER: dict[str, Any] = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}


class LabelSelector(ApiModel):
    """A label selector, as in a NetworkPolicy: every matchLabels entry and every expression must hold. Empty
    selects everything (every pod, or every namespace)."""

    match_labels: dict[str, LabelValue] = Field(
        default_factory=dict, max_length=32, description="Labels that must all be present with these values.",
    )
    match_expressions: list[FreeForm] = Field(
        default_factory=list, max_length=32,
        description="Label requirements ({key, operator: In|NotIn|Exists|DoesNotExist, values}), as in a "
        "NetworkPolicy (passed through unchanged).",
    )


class NetworkPeer(ApiModel):
    """Pods allowed to connect: those matching podSelector in the namespaces matching namespaceSelector. With
    only podSelector: pods of the service's own namespace; with only namespaceSelector: every pod of those
    namespaces."""

    CEL_RULES: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "has(self.podSelector) || has(self.namespaceSelector)",
            "message": "set podSelector, namespaceSelector or both",
        },
    ]

    pod_selector: LabelSelector | None = Field(None, description="Which pods.")
    namespace_selector: LabelSelector | None = Field(
        None, description="Which namespaces (match kubernetes.io/metadata.name to name one).",
    )

    @model_validator(mode="after")
    def _some_selector(self) -> "NetworkPeer":
        if self.pod_selector is None and self.namespace_selector is None:
            raise FieldError("podSelector", "set podSelector, namespaceSelector or both")
        return self


def _default_prometheus() -> list[NetworkPeer]:
    return [NetworkPeer.model_validate(DEFAULT_PROMETHEUS_PEER)]


class NetworkPolicySpec(ApiModel):
    """An Ingress NetworkPolicy for the service's pods. Off by default. When on, TEI's port admits only `clients`,
    `prometheus` and the operator's metrics scraper; all other ingress to the pods is refused. Egress is left
    alone (TEI downloads the model from the Hugging Face Hub). Enforced only by a CNI that implements
    NetworkPolicy (Calico, Cilium, ...)."""

    enabled: bool = Field(False, description="Render the NetworkPolicy.")
    clients: list[NetworkPeer] = Field(
        default_factory=list, max_length=32,
        description="Who may call TEI (embed, rerank, ...). Empty: no client at all, only the metrics scrapers.",
    )
    prometheus: list[NetworkPeer] = Field(
        default_factory=_default_prometheus, max_length=32,
        description="Who may scrape /metrics, besides the operator. Default: pods labelled "
        "app.kubernetes.io/name=prometheus in the namespace monitoring (kube-prometheus-stack). Needed when the "
        "autoscaler reads metrics from Prometheus; [] when nothing else scrapes the pods.",
    )


def default_network_policy() -> NetworkPolicySpec:
    return NetworkPolicySpec()


__all__ = ["DEFAULT_PROMETHEUS_PEER", "LabelSelector", "NetworkPeer", "NetworkPolicySpec", "default_network_policy"]
