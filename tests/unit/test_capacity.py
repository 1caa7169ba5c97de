"""GPU capacity from node and pod dicts shaped like the API server's: selectors, required affinity, taints,
cordoned nodes, terminated pods, limits-as-requests, init containers."""

from __future__ import annotations

import pytest

from tei_operator.autoscaling.capacity import (ClusterUsage, node_fits, parse_count, pod_request, schedulable_replicas,
                                               tolerates)

GPU = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU, "value": "present", "effect": "NoSchedule"}
A100 = "NVIDIA-A100-SXM4-80GB"


def node(name: str, gpus: int | None, product: str = A100, taints=(GPU_TAINT,), unschedulable=False, **labels):
    alloc = {"cpu": "64"} | ({GPU: str(gpus)} if gpus is not None else {})
    return {"metadata": {"name": name, "labels": {"nvidia.com/gpu.product": product, **labels}},
            "spec": {"taints": list(taints), **({"unschedulable": True} if unschedulable else {})},
            "status": {"allocatable": alloc, "capacity": alloc}}


def pod(name: str, node_name: str | None, gpus: int = 1, phase: str = "Running", request_field: str = "limits",
        labels=None, deleting=False):
    meta = {"name": name, "namespace": "ns", "labels": labels or {}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    spec = {"containers": [{"name": "tei", "resources": {request_field: {GPU: str(gpus)}}}]}
    if node_name:
        spec["nodeName"] = node_name
    return {"metadata": meta, "spec": spec, "status": {"phase": phase}}


def template(product: str | None = A100, tolerate=True, node_selector=None, gpus=1):
    spec = {"containers": [{"name": "tei", "resources": {"limits": {GPU: str(gpus)}}}]}
    if tolerate:
        spec["tolerations"] = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
    if product:
        spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "nvidia.com/gpu.product", "operator": "In", "values": [product]}]}]}}}
    if node_selector:
        spec["nodeSelector"] = node_selector
    return spec


def test_free_gpus_on_matching_nodes_plus_the_services_own_placed_pods():
    nodes = [node("a100-0", 4), node("a100-1", 8), node("h100-0", 4, product="NVIDIA-H100-80GB-HBM3"),
             node("cpu-0", None, product="", taints=())]
    ours = [pod("svc-1", "a100-0"), pod("svc-2", "a100-0")]
    others = [pod("other", "a100-1", gpus=3), pod("h", "h100-0", gpus=4)]
    usage = ClusterUsage.from_lists(nodes, ours + others)
    cap = schedulable_replicas(usage, template(), GPU, ours)
    # a100-0: 4 - 2 = 2 free; a100-1: 8 - 3 = 5 free; h100 and cpu do not match
    assert (cap.placed, cap.fits, cap.matching_nodes, cap.schedulable) == (2, 7, 2, 9)


def test_terminated_pods_free_their_gpus_but_deleting_ones_still_hold_them():
    nodes = [node("a100-0", 4)]
    pods = [pod("done", "a100-0", phase="Succeeded"), pod("failed", "a100-0", phase="Failed"),
            pod("going", "a100-0", deleting=True), pod("pending", None)]
    usage = ClusterUsage.from_lists(nodes, pods)
    cap = schedulable_replicas(usage, template(), GPU, pods)
    # only the deleting pod holds a GPU (the scheduler counts it until it is gone); pending ones hold nothing
    assert cap.fits == 3
    assert cap.placed == 0  # none of ours is placed and staying


def test_taint_not_tolerated_or_cordoned_node_does_not_count():
    nodes = [node("a100-0", 4), node("a100-1", 4, unschedulable=True)]
    usage = ClusterUsage.from_lists(nodes, [])
    assert schedulable_replicas(usage, template(tolerate=False), GPU, []).schedulable == 0
    assert schedulable_replicas(usage, template(), GPU, []).schedulable == 4


def test_node_selector_and_affinity_operators():
    n = node("a100-0", 8, pool="a", zone="z1", **{"gpu.mem": "81920"})
    assert node_fits(n, template(node_selector={"pool": "a"}))
    assert not node_fits(n, template(node_selector={"pool": "b"}))
    assert not node_fits(n, template(product="NVIDIA-L4"))

    def aff(*exprs, fields=()):
        term = {"matchExpressions": list(exprs)} | ({"matchFields": list(fields)} if fields else {})
        return {"tolerations": [{"operator": "Exists"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [term]}}}}
    assert node_fits(n, aff({"key": "zone", "operator": "NotIn", "values": ["z2"]}))
    assert not node_fits(n, aff({"key": "zone", "operator": "DoesNotExist"}))
    assert node_fits(n, aff({"key": "gpu.mem", "operator": "Gt", "values": ["40000"]}))
    assert not node_fits(n, aff({"key": "gpu.mem", "operator": "Lt", "values": ["40000"]}))
    assert node_fits(n, aff(fields=[{"key": "metadata.name", "operator": "In", "values": ["a100-0"]}]))
    assert not node_fits(n, aff(fields=[{"key": "metadata.name", "operator": "In", "values": ["other"]}]))
    # terms are alternatives: one matching term is enough
    two_terms = {"tolerations": [{"operator": "Exists"}], "affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z9"]}]},
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]}]}}}}
    assert node_fits(n, two_terms)


def test_toleration_rules():
    taint = {"key": GPU, "value": "present", "effect": "NoSchedule"}
    assert tolerates([{"key": GPU, "operator": "Exists"}], taint)
    assert tolerates([{"operator": "Exists"}], taint)  # empty key + Exists tolerates everything
    assert tolerates([{"key": GPU, "operator": "Equal", "value": "present", "effect": "NoSchedule"}], taint)
    assert not tolerates([{"key": GPU, "operator": "Equal", "value": "absent"}], taint)
    assert not tolerates([{"key": GPU, "operator": "Exists", "effect": "NoExecute"}], taint)
    # PreferNoSchedule taints do not keep pods off a node
    soft = node("a100-0", 2, taints=({"key": "x", "effect": "PreferNoSchedule"},))
    assert node_fits(soft, template(tolerate=False))


def test_requests_limits_init_containers_and_cpu_services():
    spec = {"initContainers": [{"resources": {"requests": {GPU: "2"}}}],
            "containers": [{"resources": {"limits": {GPU: "1"}}}, {"resources": {}}]}
    assert pod_request(spec, GPU) == 2
    assert pod_request({"containers": [{"resources": {"requests": {GPU: "1"}, "limits": {GPU: "1"}}}]}, GPU) == 1
    usage = ClusterUsage.from_lists([node("a100-0", 4)], [])
    cpu_template = {"containers": [{"resources": {"limits": {"cpu": "4"}}}]}
    assert schedulable_replicas(usage, cpu_template, GPU, []) is None
    assert parse_count("4") == 4 and parse_count(2) == 2 and parse_count("1k") == 1000
    with pytest.raises(ValueError, match="whole number"):
        parse_count("0.5")


def test_a_mig_profile_is_counted_by_its_own_resource_name():
    mig = "nvidia.com/mig-1g.10gb"
    n = node("a100-mig", None)
    n["status"]["allocatable"][mig] = "7"
    spec = template()
    spec["containers"][0]["resources"] = {"limits": {mig: "1"}}
    usage = ClusterUsage.from_lists([n], [pod("x", "a100-mig", request_field="limits")])
    assert schedulable_replicas(usage, spec, mig, []).schedulable == 7
    assert schedulable_replicas(usage, template(), GPU, []).schedulable == 0  # no nvidia.com/gpu there


def test_a_usage_answers_each_pod_spec_object_once_and_never_another_object_from_that_memo():
    usage = ClusterUsage.from_lists([node("a", 8), node("b", 8)], [pod("x", "a", gpus=3)])
    two, one = template(gpus=2), template(gpus=1)
    assert schedulable_replicas(usage, two, GPU, []).fits == 2 + 4
    assert usage.placement(two, GPU)[1] is usage.placement(two, GPU)[1]  # remembered per object
    assert schedulable_replicas(usage, one, GPU, []).fits == 5 + 8  # an equal placement, another request
    assert schedulable_replicas(usage, template(gpus=2), GPU, []).fits == 6  # an equal object: the same answer
    assert schedulable_replicas(usage, {"containers": [{"name": "cpu"}]}, GPU, []) is None
