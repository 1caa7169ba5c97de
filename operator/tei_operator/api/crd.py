"""The CustomResourceDefinitions of both kinds, generated from the pydantic models (`tei-operator crds`).

crds/ and the Helm chart's copy are this module's output; a unit test fails when they drift.
"""

from __future__ import annotations

from typing import Any

import yaml

from .kinds import API_VERSION, CATEGORY, GROUP, KINDS, VERSION, KindInfo
from .resource import NAME_MAX_LENGTH
from .schema import schema_for_model
from .status import ServiceStatus
from .types import DNS_LABEL_PATTERN

NAME_RULE = {
    "rule": f"self.metadata.name.size() <= {NAME_MAX_LENGTH} && self.metadata.name.matches('{DNS_LABEL_PATTERN}')",
    "message": f"metadata.name must be a DNS-1035 label (at most {NAME_MAX_LENGTH} lowercase letters, digits and "
    "'-', starting with a letter): it names the Service and labels the pods",
}  # no fieldPath: the API server accepts only paths into the schema's own properties, and metadata has none

PRINTER_COLUMNS = [
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.id", "description": "Model served."},
    {"name": "GPU", "type": "integer", "jsonPath": ".spec.gpu.count", "description": "GPUs per replica."},
    {"name": "GPU-Type", "type": "string", "jsonPath": ".spec.gpu.type", "description": "GPU type."},
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas", "description": "Replicas."},
    {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas", "description": "Ready replicas."},
    {"name": "Available", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Available")].status',
     "priority": 1, "description": "Whether at least minAvailable replicas are ready (the service serves)."},
    {"name": "Status", "type": "string", "jsonPath": ".status.summary",
     "description": "Stalled's reason; LimitedByMaxReplicas/LimitedByGpuCapacity/MetricsUnavailable/"
     "ActivationUnavailable while the autoscaler is held back; else Ready's reason."},
    {"name": "Queue", "type": "number", "jsonPath": ".status.autoscaling.signals.queuePerReplica",
     "description": "Inputs waiting per ready replica, at the autoscaler's last tick."},
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint", "priority": 1,
     "description": "In-cluster URL."},
    {"name": "Image", "type": "string", "jsonPath": ".status.image", "priority": 1, "description": "TEI image."},
    {"name": "$/Hour", "type": "number", "jsonPath": ".status.cost.dollarsPerHour", "priority": 1,
     "description": "What the service's GPUs cost per hour."},
    {"name": "$/1M-Tokens", "type": "number", "jsonPath": ".status.cost.dollarsPerMillionTokens", "priority": 1,
     "description": "Dollars per million tokens at the measured token rate."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def open_api_schema(info: KindInfo) -> dict[str, Any]:
    """The openAPIV3Schema of one kind."""
    spec = schema_for_model(info.spec_model)
    # A default status of observedGeneration 0 makes a service the operator has not acted on yet read as
    # InProgress to kstatus (Flux, kpt, kubectl wait) instead of Current: the API server applies it on read.
    status = {**schema_for_model(ServiceStatus), "default": {"observedGeneration": 0}}
    return {
        "description": info.description,
        "type": "object",
        "properties": {
            "apiVersion": {"description": "Versioned schema of this object: " + API_VERSION + ".", "type": "string"},
            "kind": {"description": f"Kind of this object: {info.kind}.", "type": "string"},
            # The API server forbids anything but `type` here (metadata's schema is its own).
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "required": ["spec"],
        "x-kubernetes-validations": [dict(NAME_RULE)],
    }


def generate_crd(info: KindInfo) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": info.crd_name,
            "labels": {"app.kubernetes.io/name": "tei-operator", "app.kubernetes.io/part-of": "tei-operator"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind, "listKind": info.list_kind, "plural": info.plural, "singular": info.singular,
                "shortNames": list(info.short_names), "categories": [CATEGORY],
            },
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": open_api_schema(info)},
                "subresources": {
                    "status": {},
                    "scale": {
                        "specReplicasPath": ".spec.replicas",
                        "statusReplicasPath": ".status.replicas",
                        "labelSelectorPath": ".status.selector",
                    },
                },
                "additionalPrinterColumns": [dict(c) for c in PRINTER_COLUMNS],
            }],
        },
    }


def generate_crds() -> list[dict[str, Any]]:
    """One CRD per kind, in KINDS order."""
    return [generate_crd(info) for info in KINDS.values()]


def crd_yaml(crd: dict[str, Any]) -> str:
    """One CRD as a YAML document (stable output: the drift test compares it byte for byte)."""
    return yaml.safe_dump(crd, sort_keys=False, width=120, allow_unicode=True)


def crd_filename(info: KindInfo) -> str:
    """The file of one kind's CRD under crds/."""
    return f"{GROUP}_{info.plural}.yaml"


def crds_yaml() -> str:
    """Every CRD as a multi-document YAML stream."""
    return "---\n" + "---\n".join(crd_yaml(c) for c in generate_crds())
