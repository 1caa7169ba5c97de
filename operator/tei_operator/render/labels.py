"""Labels of a service's children. The selector subset never changes for the object's lifetime (a Deployment's
selector is immutable), so it holds only the name-derived labels."""

from __future__ import annotations

from ..api.resource import ServiceResource

APP_NAME = "text-embeddings-inference"
MANAGED_BY = "tei-operator"
SERVICE_LABEL = "tei-operator.io/service"


def selector_labels(resource: ServiceResource) -> dict[str, str]:
    """The labels that select a service's pods (Deployment selector, Service selector, PDB, scale subresource)."""
    return {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": resource.name,
        SERVICE_LABEL: resource.name,
    }


def selector_string(resource: ServiceResource) -> str:
    """The selector as a label selector string (status.selector, for the scale subresource and HPAs)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(resource).items()))


def common_labels(resource: ServiceResource) -> dict[str, str]:
    """Labels of every child and pod: the selector labels plus component and managed-by."""
    return {
        **selector_labels(resource),
        "app.kubernetes.io/component": resource.component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
