"""status.model and ModelMismatch from the pods' own /info, and status.cost from their token counters, read by the
operator from TEI emulators bound to the pods' addresses (tests/cluster/emulated_pods.py).

TEI facts relied on (/work/shared/TEI.md): GET /info reports model_id and model_sha; TEI listens on port 80.
"""

from __future__ import annotations

import hashlib

import pytest
import requests

from tests.cluster.emulated_pods import EmulatedPods

from .conftest import wait_for
from .test_reconcile import embedding

pytestmark = pytest.mark.cluster

SHA = "5617a9f61b028005a4858fdac845db406aefb181"
EXTERNAL = {"sim.tei-operator.io/readiness": "external"}  # Ready only once the pod's emulator answers /health


def model_status(kube, namespace, name):
    return (kube.get("embsvc", name, namespace) or {}).get("status", {}).get("model") or {}


def test_status_reports_sha_cost_and_mismatch(operator, kube, namespace, kubeconfig, tmp_path):
    with EmulatedPods(kubeconfig, "tei-operator.io/service=served", log_dir=tmp_path) as pods:
        kube.apply(embedding("served", namespace, replicas=2, model={"id": "BAAI/bge-m3", "revision": SHA},
                             podAnnotations=EXTERNAL))
        model = wait_for(lambda: (m := model_status(kube, namespace, "served")) and len(
            [p for p in m.get("pods", []) if p.get("sha")]) == 2 and m, 90, what="both pods' sha in status.model")
        assert model["id"] == "BAAI/bge-m3" and model["requestedRevision"] == SHA and model["servedShas"] == [SHA]
        cond = kube.condition("embsvc", "served", namespace, "ModelMismatch")
        assert (cond["status"], cond["reason"]) == ("False", "OneModelSha")

        # status.cost: 2 A100s at the default $1.04 each, and $ per 1M tokens once tokens flow through the pods.
        cost = kube.get("embsvc", "served", namespace)["status"]["cost"]
        assert (cost["gpuType"], cost["gpus"], cost["dollarsPerHour"]) == ("a100", 2, 2.08)
        urls = pods.urls(namespace, "served")
        assert len(urls) == 2

        def priced():
            for url in urls:  # keep tokens flowing until a sampling interval has seen them
                requests.post(f"{url}/embed", json={"inputs": ["one two three four five"] * 16}, timeout=5)
            c = kube.get("embsvc", "served", namespace)["status"].get("cost") or {}
            return c.get("dollarsPerMillionTokens") and c

        cost = wait_for(priced, 60, interval=1, what="status.cost with a token rate")
        assert cost["tokensPerSecond"] > 0
        assert cost["dollarsPerMillionTokens"] == pytest.approx(
            2.08 / (cost["tokensPerSecond"] * 3600) * 1e6, rel=1e-3)

        # Each new replica reports a commit of its own (as unpinned replicas downloading at different times can).
        kube.apply(embedding("served", namespace, replicas=2, model={"id": "BAAI/bge-m3", "revision": SHA},
                             podAnnotations={**EXTERNAL, "sim.tei-operator.io/model-sha": "per-pod"}))
        mismatch = kube.wait_condition("embsvc", "served", namespace, "ModelMismatch", reason="DifferentShas",
                                       timeout=120)
        # Once the rollout is done, both Ready pods are new ones, each with its own commit: still a mismatch.
        model = wait_for(lambda: (m := model_status(kube, namespace, "served")) and len(m["servedShas"]) == 2
                         and SHA not in m["servedShas"] and len(m["pods"]) == 2 and m, 120,
                         what="two new pods with their own shas")
        assert kube.condition("embsvc", "served", namespace, "ModelMismatch")["status"] == "True"
        assert {p["sha"] for p in model["pods"]} == {hashlib.sha1(p["name"].encode()).hexdigest()
                                                     for p in model["pods"]}
        assert "embeddings are not comparable" in mismatch["message"]
        warnings = wait_for(lambda: [e for e in kube.events(namespace, "served")
                                     if e["type"] == "Warning" and e["reason"] == "ModelMismatch"], 30,
                            what="a ModelMismatch Warning event")
        assert "serves mixed models" in warnings[0]["message"]
