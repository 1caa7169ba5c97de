"""The TEI pods against the API server's own Pod Security admission (docs/security.md): admitted at `baseline`,
refused at `restricted` for exactly one reason (TEI's images run as root: runAsNonRoot), admitted at `restricted`
with the podSecurityContext docs/security.md gives.

The operator is not needed: the pods are rendered here, as the operator renders them, and created with a
server-side dry run, which runs admission but stores nothing.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml

from tei_operator.api import ServiceResource
from tei_operator.render import render_children
from tei_operator.settings import Settings

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
RESTRICTED_SECURITY_CONTEXT = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000}
# What `restricted` checks besides runAsNonRoot, by the words of its messages: none may be reported.
OTHER_RESTRICTED_CHECKS = ("allowPrivilegeEscalation", "unrestricted capabilities", "seccompProfile", "privileged",
                           "hostPath", "host namespaces", "hostPort", "restricted volume types", "runAsUser=0")


@pytest.fixture(scope="module")
def levels(cluster):
    """Two namespaces that enforce the baseline and the restricted level."""
    names = {}
    for level in ("baseline", "restricted"):
        name = f"psa-{level}-{uuid.uuid4().hex[:6]}"
        cluster.kubectl("create", "namespace", name)
        cluster.kubectl("label", "namespace", name, f"pod-security.kubernetes.io/enforce={level}",
                        "pod-security.kubernetes.io/enforce-version=latest")
        names[level] = name
    yield names
    for name in names.values():
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def services() -> list[tuple[str, dict]]:
    """Every EmbeddingService/RerankerService of examples/."""
    out = []
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in ("EmbeddingService", "RerankerService"):
                out.append((f"{path.name}:{doc['metadata']['name']}", doc))
    return out


def pod_of(service: dict, namespace: str, **spec_changes) -> dict:
    body = {**service, "metadata": {**service["metadata"], "namespace": namespace},
            "spec": {**service["spec"], **spec_changes}}
    deployment = render_children(ServiceResource.from_body(body), Settings()).deployment
    template = deployment["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"psa-{uuid.uuid4().hex[:6]}", "namespace": namespace,
                         "labels": template["metadata"]["labels"]},
            "spec": template["spec"]}


def dry_run_create(cluster, pod: dict):
    return cluster.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(pod), check=False)


@pytest.mark.parametrize("name,service", services(), ids=[n for n, _ in services()])
def test_rendered_pods_meet_baseline_and_all_of_restricted_but_run_as_non_root(cluster, levels, name, service):
    admitted = dry_run_create(cluster, pod_of(service, levels["baseline"]))
    assert admitted.returncode == 0, admitted.stderr
    created = json.loads(admitted.stdout)
    assert created["spec"]["containers"][0]["securityContext"]["capabilities"]["drop"] == ["ALL"]

    refused = dry_run_create(cluster, pod_of(service, levels["restricted"]))
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in refused.stderr and "runAsNonRoot" in refused.stderr
    assert not [words for words in OTHER_RESTRICTED_CHECKS if words in refused.stderr], refused.stderr

    fixed = dry_run_create(cluster, pod_of(service, levels["restricted"],
                                           podSecurityContext=RESTRICTED_SECURITY_CONTEXT))
    assert fixed.returncode == 0, fixed.stderr
