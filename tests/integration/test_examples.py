"""Every manifest in examples/ is accepted by the API server and the operator renders its children.

The examples are applied for real (into a test namespace): children are created whether or not the simulated
cluster has the GPUs to schedule the pods, so the one thing asserted about pods is nothing at all."""

from __future__ import annotations

import pytest
import yaml

from .conftest import EXAMPLES_DIR, wait_for

pytestmark = pytest.mark.cluster

EXAMPLES = sorted(EXAMPLES_DIR.glob("*.yaml"))
SHORT = {"EmbeddingService": "embsvc", "RerankerService": "rrsvc"}


def test_there_are_examples():
    assert EXAMPLES, f"no examples in {EXAMPLES_DIR}"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_applies_and_renders_children(operator, kube, namespace, path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    services = [d for d in docs if d.get("kind") in SHORT]
    assert services, f"{path.name} holds no EmbeddingService or RerankerService"
    for doc in docs:
        doc.setdefault("metadata", {})["namespace"] = namespace
        if doc.get("kind") == "Namespace":
            continue
        kube.apply(doc)
    for doc in services:
        name, short = doc["metadata"]["name"], SHORT[doc["kind"]]
        deployment = wait_for(lambda: kube.get("deployment", name, namespace), 30,
                              what=f"the Deployment of {path.name}")
        assert wait_for(lambda: kube.get("service", name, namespace), 15, what=f"the Service of {path.name}")
        owner = kube.get(short, name, namespace)
        assert deployment["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
        wait_for(lambda: kube.get(short, name, namespace).get("status", {}).get("observedGeneration")
                 == owner["metadata"]["generation"], 30, what=f"the status of {path.name}")
        invalid = [c for c in kube.get(short, name, namespace)["status"]["conditions"]
                   if c.get("reason") == "InvalidSpec"]
        assert not invalid, invalid
