"""A service's children: its Deployment, Service, (with more than one replica) PodDisruptionBudget and (when the
spec asks for one) NetworkPolicy.

Pure: the same resource and settings always render the same manifests (no timestamps), so a reconcile that finds
nothing to change writes nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ..api.kinds import API_VERSION
from ..json_tree import copy_tree
from ..api.resource import ServiceResource
from ..settings import Settings
from .labels import common_labels, selector_labels
from .network import render_network_policy, wants_network_policy
from .pod import PORT_NAME, STARTUP_BUDGET_SECONDS, pod_template
from .stamp import operator_version, stamp

CONFIG_HASH_ANNOTATION = "tei-operator.io/config-hash"
REVISION_HISTORY_LIMIT = 3
# Beyond the startup probe's budget: a rollout waiting for a model download is not "stuck".
PROGRESS_DEADLINE_SECONDS = STARTUP_BUDGET_SECONDS + 600


@dataclass
class Children:
    """The manifests the operator applies for one service."""

    deployment: dict[str, Any]
    service: dict[str, Any]
    pdb: dict[str, Any] | None = None
    network_policy: dict[str, Any] | None = None

    def all(self) -> list[dict[str, Any]]:
        """Every child, in apply order."""
        return [self.deployment, self.service] + [c for c in (self.pdb, self.network_policy) if c is not None]

    def copy(self) -> "Children":
        """A deep copy: changing it leaves these manifests as they are."""
        return Children(deployment=copy_tree(self.deployment), service=copy_tree(self.service),
                        pdb=copy_tree(self.pdb), network_policy=copy_tree(self.network_policy))


def owner_references(resource: ServiceResource) -> list[dict[str, Any]]:
    """The ownerReference to the service (garbage collection deletes the children with it); none without a uid."""
    if not resource.uid:
        return []
    return [{
        "apiVersion": API_VERSION, "kind": resource.kind, "name": resource.name, "uid": resource.uid,
        "controller": True, "blockOwnerDeletion": True,
    }]


def _metadata(resource: ServiceResource, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": resource.name, "namespace": resource.namespace, "labels": common_labels(resource)}
    if annotations:
        meta["annotations"] = dict(annotations)
    refs = owner_references(resource)
    if refs:
        meta["ownerReferences"] = refs
    return meta


def config_hash(template: dict[str, Any]) -> str:
    """A short, stable hash of the pod template: shows which configuration a pod runs and lets tools compare it
    without diffing templates. It changes exactly when the template does, so it causes no extra rollout."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def render_deployment(resource: ServiceResource, settings: Settings) -> dict[str, Any]:
    """The Deployment. Without spec.replicas when the built-in autoscaler owns the count. Its metadata carries the
    operator version and a hash of the manifest (stamp.py), so an operator upgrade is told apart from drift."""
    spec = resource.spec
    template = pod_template(resource, settings)
    template["metadata"]["annotations"][CONFIG_HASH_ANNOTATION] = config_hash(template)
    body: dict[str, Any] = {}
    if not spec.autoscaling.enabled:
        body["replicas"] = spec.replicas
    body.update({
        "revisionHistoryLimit": REVISION_HISTORY_LIMIT,
        "progressDeadlineSeconds": PROGRESS_DEADLINE_SECONDS,
        "selector": {"matchLabels": selector_labels(resource)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": spec.rollout.max_surge, "maxUnavailable": spec.rollout.max_unavailable},
        },
        "template": template,
    })
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _metadata(resource), "spec": body}
    return stamp(deployment, operator_version())


def render_service(resource: ServiceResource) -> dict[str, Any]:
    """The Service in front of the pods, named like the resource (see endpoint_url)."""
    exposure = resource.spec.service
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(resource, exposure.annotations),
        "spec": {
            "type": exposure.type,
            "selector": selector_labels(resource),
            "ports": [{"name": PORT_NAME, "port": exposure.port, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def wants_pdb(resource: ServiceResource) -> bool:
    """A PDB only once more than one replica is meant to run: with one, it would block every node drain."""
    spec = resource.spec
    if spec.autoscaling.enabled:
        return spec.autoscaling.min_replicas > 1
    return spec.replicas > 1


def render_pdb(resource: ServiceResource) -> dict[str, Any]:
    """At most one pod evicted at a time. Pods not Ready (a model still loading, a crash loop) may always be
    evicted, so they never block a drain."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(resource),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(resource)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def render_children(resource: ServiceResource, settings: Settings) -> Children:
    """Every child of a service."""
    return Children(
        deployment=render_deployment(resource, settings),
        service=render_service(resource),
        pdb=render_pdb(resource) if wants_pdb(resource) else None,
        network_policy=(render_network_policy(resource, settings, _metadata(resource))
                        if wants_network_policy(resource) else None),
    )


def endpoint_url(resource: ServiceResource) -> str:
    """The in-cluster URL of the service."""
    return f"http://{resource.name}.{resource.namespace}.svc:{resource.spec.service.port}"
