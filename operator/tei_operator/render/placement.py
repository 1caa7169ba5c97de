"""Scheduling and identity fields shared by every pod the operator renders (TEI pods, the cache's download pod)."""

from __future__ import annotations

from typing import Any

from ..api.spec import ServiceSpec
from .gpu import merge_affinity, merge_tolerations


def placement(spec: ServiceSpec, *, priority: bool) -> dict[str, Any]:
    """Where and as whom a pod of this service runs: nodeSelector, tolerations and affinity (merged with the GPU
    type's), the service account and image pull secrets, and with `priority` the priority class. The TEI pods and
    the managed cache's download pod share it, so a ReadWriteOnce claim is filled where the TEI pods will run."""
    fields: dict[str, Any] = {}
    if spec.node_selector:
        fields["nodeSelector"] = dict(spec.node_selector)
    tolerations = merge_tolerations([t.to_wire() for t in spec.tolerations], spec.gpu)
    if tolerations:
        fields["tolerations"] = tolerations
    affinity = merge_affinity(spec.affinity, spec.gpu)
    if affinity:
        fields["affinity"] = affinity
    if priority and spec.priority_class_name:
        fields["priorityClassName"] = spec.priority_class_name
    if spec.service_account_name:
        fields["serviceAccountName"] = spec.service_account_name
    if spec.engine.image_pull_secrets:
        fields["imagePullSecrets"] = [s.to_wire() for s in spec.engine.image_pull_secrets]
    return fields
