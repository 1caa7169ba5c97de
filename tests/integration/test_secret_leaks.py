"""The Hugging Face token and the API key never leave their Secrets (docs/security.md): after a service that uses
both is created, becomes Ready, is changed, scaled and made to fail, their values appear nowhere the operator
writes or renders: its log, the Events, the service's status, the children it applied, `tei-operator render`.

The values are random per run, so a hit can only be a leak. The operator here runs with an admin kubeconfig
(it could read the Secrets if it tried); in the chart its RBAC has no access to Secrets at all.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import wait_for
from .test_reconcile import embedding

pytestmark = pytest.mark.cluster


def test_token_and_api_key_values_appear_nowhere(operator, kube, namespace):
    token, api_key = f"hf_{secrets.token_hex(16)}", f"key-{secrets.token_hex(16)}"
    kube.apply([
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf", "namespace": namespace},
         "stringData": {"token": token}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tei-api", "namespace": namespace},
         "stringData": {"key": api_key}},
    ])
    spec = {"model": {"id": "BAAI/bge-m3", "tokenSecretRef": {"name": "hf", "key": "token"}},
            "engine": {"apiKeySecretRef": {"name": "tei-api", "key": "key"}}}
    manifest = embedding("private", namespace, **spec)
    manifest["spec"]["model"] = spec["model"]
    manifest["spec"]["engine"] = spec["engine"]
    kube.apply(manifest)
    kube.wait_condition("embsvc", "private", namespace, "Ready", timeout=60)
    # Change it, scale it, make it crash-loop (a Degraded message quotes the container's last words), drift a child.
    kube.kubectl("scale", "embsvc/private", "-n", namespace, "--replicas=2")
    crashing = json.loads(json.dumps(manifest))
    crashing["spec"]["podAnnotations"] = {"sim.tei-operator.io/fail": "crashloop"}
    kube.apply(crashing)
    kube.wait_condition("embsvc", "private", namespace, "Degraded", reason="CrashLoopBackOff", timeout=90)
    kube.kubectl("set", "env", "deployment/private", "-n", namespace, "EXTRA=1")
    wait_for(lambda: any(e["reason"] == "DriftReverted" for e in kube.events(namespace, "private")), 30,
             what="the hand edit to be reverted")

    deployment = kube.get("deployment", "private", namespace)
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
    assert env["API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "tei-api", "key": "key"}

    rendered = subprocess.run([str(Path(sys.executable).with_name("tei-operator")), "render", "-f", "-"],
                              input=yaml.safe_dump(kube.get("embsvc", "private", namespace)),
                              capture_output=True, text=True, check=True).stdout
    places = {
        "operator log": operator.log_text(),
        "events": kube.kubectl("get", "events", "-n", namespace, "-o", "json").stdout,
        "events.k8s.io": kube.kubectl("get", "events.events.k8s.io", "-n", namespace, "-o", "json").stdout,
        "service (status included)": json.dumps(kube.get("embsvc", "private", namespace)),
        "children": "".join(json.dumps(kube.get(kind, "private", namespace))
                            for kind in ("deployment", "service", "poddisruptionbudget")),
        "replicasets and pods": kube.kubectl("get", "replicasets,pods", "-n", namespace, "-o", "json").stdout,
        "tei-operator render": rendered,
    }
    # The search looks where it should: each place holds what the steps above wrote.
    assert "HF_TOKEN" in places["children"] and "API_KEY" in places["tei-operator render"]
    assert "CrashLoopBackOff" in places["events"] and "CrashLoopBackOff" in places["service (status included)"]
    assert places["operator log"].strip()
    hits = {where: [name for name, value in (("token", token), ("api key", api_key)) if value in text]
            for where, text in places.items()}
    assert {where: found for where, found in hits.items() if found} == {}
