"""Which watched namespaces the operator may actually read: a SelfSubjectAccessReview per namespace and watched
resource before the controller starts.

Without this, one namespace without a Role (a typo in watchNamespaces, a namespace added to the operator's settings
but not to the chart) made kopf's watcher there fail after its retries (about a minute), and that stopped the
whole controller, for every namespace. Found by the fault suite (tests/faults, rbac-missing).
"""

from __future__ import annotations

import logging

from ..kube import KubeApiError, KubeClient
from .cache import CHILD_TYPES

logger = logging.getLogger("tei_operator.controller")

SSAR_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
# (API group, resource) the controller lists and watches in each namespace (controller/handlers.py).
WATCHED = (("tei-operator.io", "embeddingservices"), ("tei-operator.io", "rerankerservices"),
           *((rtype.group, rtype.plural) for rtype in CHILD_TYPES), ("", "pods"))
VERBS = ("list", "watch")


def _describe(group: str, resource: str) -> str:
    return f"{resource}.{group}" if group else resource


async def missing_permissions(kube: KubeClient, namespace: str) -> list[str]:
    """`verb resource` pairs the operator may not do in `namespace`, e.g. ["list embeddingservices.tei-operator.io"]."""
    missing = []
    for group, resource in WATCHED:
        for verb in VERBS:
            review = await kube.request("POST", SSAR_PATH, body={
                "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {"namespace": namespace, "verb": verb, "group": group,
                                                "resource": resource}}})
            if not (review.get("status") or {}).get("allowed"):
                missing.append(f"{verb} {_describe(group, resource)}")
    return missing


async def may_watch_nodes(kube: KubeClient) -> bool:
    """Whether the operator may list and watch nodes (the GPU capacity its autoscaler reads from the store). Without
    it no node watch is started (a failing one would stop kopf) and capacity is unknown, as the log says."""
    try:
        for verb in VERBS:
            review = await kube.request("POST", SSAR_PATH, body={
                "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {"verb": verb, "group": "", "resource": "nodes"}}})
            if not (review.get("status") or {}).get("allowed"):
                logger.warning("Not watching nodes: the operator may not %s them (its ClusterRole lacks it); GPU "
                               "capacity is not enforced by the autoscaler", verb)
                return False
    except KubeApiError as exc:  # reviews refused or the server unreachable: let the watch find out
        logger.warning("Could not check the operator's permission to watch nodes: %s", exc)
    return True


async def readable_namespaces(kube: KubeClient, namespaces: list[str]) -> list[str]:
    """The namespaces of `namespaces` the operator may list and watch everything in. Each one it may not is
    logged as an error naming the namespace and the missing permissions, and left out (the others keep working).
    None readable: KubeApiError 403 (nothing to run). An empty list (the whole cluster) is returned as is: there a
    missing ClusterRole fails at once and loudly."""
    if not namespaces:
        return namespaces
    readable = []
    for namespace in namespaces:
        try:
            missing = await missing_permissions(kube, namespace)
        except KubeApiError as exc:  # reviews refused or the server unreachable: let the watches find out
            logger.warning("Could not check the operator's permissions in namespace %s: %s", namespace, exc)
            readable.append(namespace)
            continue
        if missing:
            logger.error("Skipped namespace %s: the operator may not %s there (no Role for it in that namespace); "
                         "its services are not reconciled. Add the namespace to the chart's watchNamespaces "
                         "(which creates the Role) or remove it from TEI_OPERATOR_NAMESPACES, then restart the "
                         "operator", namespace, ", ".join(missing))
        else:
            readable.append(namespace)
    if not readable:
        raise KubeApiError(403, "Forbidden", f"the operator may not read any of its watched namespaces "
                           f"({', '.join(namespaces)}): see the errors above")
    return readable
