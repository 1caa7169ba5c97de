"""Proves the local control plane itself (not the operator): scheduling of GPU pods by the real scheduler onto
kwok's simulated GPU nodes, the garbage collector, namespace deletion, and CEL validation of CRDs."""

from __future__ import annotations

import errno
import ipaddress
import json
import socket
import time

import pytest

from tests.cluster import netns
from tests.conftest import requires_private_pod_network
from tests.wait import wait_for

pytestmark = pytest.mark.cluster


def get_json(cluster, *args):
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def gpu_deployment(name: str, namespace: str, gpus: int, product: str) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"nvidia.com/gpu.product": product},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [{
                        "name": "tei",
                        "image": "ghcr.io/huggingface/text-embeddings-inference:hopper-1.9",
                        "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                    }],
                },
            },
        },
    }


def test_nodes_carry_gpu_capacity_labels_and_taints(cluster):
    nodes = {n["metadata"]["name"]: n for n in get_json(cluster, "nodes")["items"]}
    assert set(nodes) == {"a100-0", "a100-1", "h100-0", "l4-0", "cpu-0"}
    h100 = nodes["h100-0"]
    assert h100["status"]["allocatable"]["nvidia.com/gpu"] == "4"
    assert h100["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert h100["metadata"]["labels"]["nvidia.com/gpu.family"] == "hopper"
    assert h100["metadata"]["labels"]["nvidia.com/gpu.count"] == "4"
    assert h100["metadata"]["labels"]["nvidia.com/gpu.memory"] == "81559"
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in h100["spec"]["taints"]
    assert "nvidia.com/gpu" not in nodes["cpu-0"]["status"]["allocatable"]
    assert not nodes["cpu-0"]["spec"].get("taints")


def test_gpu_deployment_is_scheduled_on_the_h100_node_and_ready(cluster, namespace):
    cluster.apply(gpu_deployment("embed", namespace, 1, "NVIDIA-H100-80GB-HBM3"))
    cluster.kubectl("rollout", "status", "deployment/embed", "-n", namespace, "--timeout=60s", timeout=90)
    pods = get_json(cluster, "pods", "-n", namespace, "-l", "app=embed")["items"]
    assert len(pods) == 1
    pod = pods[0]
    assert pod["spec"]["nodeName"] == "h100-0"
    assert pod["status"]["phase"] == "Running"
    ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert ready["Ready"] == "True"
    ip = ipaddress.ip_address(pod["status"]["podIP"])
    assert ip in ipaddress.ip_network(cluster.pod_cidr)
    # Pod IPs stay on this machine: loopback, or the private range that is local in this run's namespace.
    assert ip.is_loopback or (ip in netns.POD_SUPERNET and netns.pod_range_is_local()), ip


def test_the_private_pod_network_has_only_lo_and_its_pod_range_is_not_loopback(cluster, pod_network):
    requires_private_pod_network(pod_network)
    assert [name for _, name in socket.if_nameindex()] == ["lo"], "traffic could leave the namespace"
    assert ipaddress.ip_network(cluster.pod_cidr).subnet_of(netns.POD_SUPERNET)
    assert not ipaddress.ip_network(cluster.pod_cidr).is_loopback
    with socket.socket() as s, pytest.raises(OSError) as refused:
        s.settimeout(2)
        s.connect(("192.0.2.1", 80))  # TEST-NET-1: no route out of a namespace with only lo
    assert refused.value.errno == errno.ENETUNREACH, refused.value


def test_pod_asking_for_more_gpus_than_any_node_stays_pending(cluster, namespace):
    cluster.apply(gpu_deployment("huge", namespace, 9, "NVIDIA-A100-SXM4-80GB"))

    def unschedulable():
        pods = get_json(cluster, "pods", "-n", namespace, "-l", "app=huge")["items"]
        for pod in pods:
            for cond in pod["status"].get("conditions", []):
                if cond["type"] == "PodScheduled" and cond.get("reason") == "Unschedulable":
                    return pod
        return None

    pod = wait_for(unschedulable, what="the scheduler to mark the pod Unschedulable")
    assert pod["status"]["phase"] == "Pending"
    message = next(c["message"] for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert "Insufficient nvidia.com/gpu" in message
    assert not pod["spec"].get("nodeName")


def test_garbage_collector_deletes_owned_objects_and_namespace_deletion_completes(cluster):
    ns = f"gc-{int(time.time() * 1000) % 100000}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("create", "configmap", "owner", "-n", ns)
    owner = get_json(cluster, "configmap", "owner", "-n", ns)
    cluster.apply({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "owned",
            "namespace": ns,
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                                 "uid": owner["metadata"]["uid"], "blockOwnerDeletion": True}],
        },
    })
    cluster.kubectl("delete", "configmap", "owner", "-n", ns)
    wait_for(lambda: cluster.kubectl("get", "configmap", "owned", "-n", ns, check=False).returncode != 0,
             what="the garbage collector to delete the owned ConfigMap")

    cluster.apply(gpu_deployment("doomed", ns, 1, "NVIDIA-A100-SXM4-80GB"))
    cluster.kubectl("rollout", "status", "deployment/doomed", "-n", ns, "--timeout=60s", timeout=90)
    cluster.kubectl("delete", "namespace", ns, "--wait=true", "--timeout=90s", timeout=120)
    assert cluster.kubectl("get", "namespace", ns, check=False).returncode != 0


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.harness.test"},
    "spec": {
        "group": "harness.test",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [{
            "name": "v1",
            "served": True,
            "storage": True,
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {
                    "type": "object",
                    "properties": {"minReplicas": {"type": "integer"}, "maxReplicas": {"type": "integer"}},
                    "x-kubernetes-validations": [{
                        "rule": "self.minReplicas <= self.maxReplicas",
                        "message": "minReplicas must be <= maxReplicas",
                    }],
                }},
            }},
        }],
    },
}


def test_crd_cel_rule_rejects_an_object_that_breaks_it(cluster, namespace):
    cluster.apply(CRD)
    cluster.kubectl("wait", "--for=condition=Established", "crd/widgets.harness.test", "--timeout=30s")

    def widget(name, lo, hi):
        return {"apiVersion": "harness.test/v1", "kind": "Widget", "metadata": {"name": name, "namespace": namespace},
                "spec": {"minReplicas": lo, "maxReplicas": hi}}

    import yaml

    ok = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(widget("good", 1, 3)), check=False)
    assert ok.returncode == 0, ok.stderr
    bad = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(widget("bad", 5, 3)), check=False)
    assert bad.returncode != 0
    assert "minReplicas must be <= maxReplicas" in bad.stderr
