"""A model known not to run on TEI is not rolled out: UnsupportedModel instead of a crash loop, and the
annotation overrides it. (TEI fact relied on, /work/shared/TEI.md: TEI 1.9.3 does not support Qwen3-Reranker.)"""

from __future__ import annotations

import pytest

from .conftest import service_manifest, wait_for

pytestmark = pytest.mark.cluster

ANNOTATION = "models.tei-operator.io/allow-unsupported"


def qwen3_reranker(name: str, namespace: str, annotations: dict[str, str] | None = None) -> dict:
    manifest = service_manifest("RerankerService", name, namespace,
                                {"model": {"id": "Qwen/Qwen3-Reranker-0.6B"}, "gpu": {"count": 1, "type": "h100"}})
    if annotations:
        manifest["metadata"]["annotations"] = annotations
    return manifest


def test_unsupported_model_is_stalled_without_a_deployment_until_overridden(operator, kube, namespace):
    kube.apply(qwen3_reranker("qwen-rr", namespace))
    stalled = kube.wait_condition("rrsvc", "qwen-rr", namespace, "Stalled", reason="UnsupportedModel", timeout=60)
    assert "Qwen/Qwen3-Reranker-0.6B does not run on TEI" in stalled["message"]
    ready = kube.condition("rrsvc", "qwen-rr", namespace, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "UnsupportedModel")
    # The operator looked (the conditions above are its positive sign) and applied nothing.
    assert kube.get("deployment", "qwen-rr", namespace) is None
    assert kube.get("service", "qwen-rr", namespace) is None
    warnings = wait_for(lambda: [e for e in kube.events(namespace, "qwen-rr")
                                 if e["type"] == "Warning" and e["reason"] == "UnsupportedModel"], 30,
                        what="an UnsupportedModel Warning event")
    assert ANNOTATION in warnings[0]["message"]
    # The annotation overrides the table: the Deployment is created and the refusal is gone.
    kube.apply(qwen3_reranker("qwen-rr", namespace, {ANNOTATION: "true"}))
    wait_for(lambda: kube.get("deployment", "qwen-rr", namespace), 60, what="the Deployment after the override")
    wait_for(lambda: kube.condition("rrsvc", "qwen-rr", namespace, "Stalled")["reason"] != "UnsupportedModel", 60,
             what="Stalled no longer UnsupportedModel")
