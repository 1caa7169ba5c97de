"""Blue/green model changes on the local control plane (docs/model-changes.md).

The switch test runs a TEI emulator per pod (tests/cluster/emulated_pods.py), bound to the pod's routable address;
each reports the commit of its pod's REVISION in /info. While the revision changes, a sampler reads the Service's
EndpointSlices over and over and asks every Ready endpoint in each snapshot which commit it serves (and one request
goes through the API server's service proxy, as a client's would go through the Service): no snapshot may hold two
commits, the commits must go old -> new once, and the old Deployment must go drainSeconds after the switch.
"""

from __future__ import annotations

import datetime
import json
import re
import threading
import time

import pytest
import requests

from tests.cluster.emulated_pods import EmulatedPods
from tests.conftest import requires_private_pod_network

from .conftest import service_manifest, wait_for

pytestmark = pytest.mark.cluster

OLD_SHA = "1" * 40
NEW_SHA = "2" * 40
MODEL = "BAAI/bge-small-en-v1.5"
EXTERNAL = {"sim.tei-operator.io/readiness": "external"}  # Ready only once the pod's emulator answers /health
INSTANCE = "app.kubernetes.io/instance"


def service(name: str, namespace: str, revision: str, *, pod_annotations: dict | None = None, **spec) -> dict:
    body = {"model": {"id": MODEL, "revision": revision}, "gpu": {"count": 0}, "engine": {"maxBatchTokens": 4096},
            "replicas": 2, "rollout": {"drainSeconds": 5}, "podAnnotations": {**EXTERNAL, **(pod_annotations or {})},
            **spec}
    return service_manifest("EmbeddingService", name, namespace, body)


def rollout_status(kube, namespace: str, name: str) -> dict:
    return ((kube.get("embsvc", name, namespace) or {}).get("status") or {}).get("rollout") or {}


def deployment_names(kube, namespace: str) -> set[str]:
    return {d["metadata"]["name"] for d in kube.list("deployments", namespace)}


class Sampler(threading.Thread):
    """Snapshots of the Service's Ready endpoints and the commit each serves, as fast as they come."""

    def __init__(self, cluster, namespace: str, name: str) -> None:
        super().__init__(daemon=True)
        self.cluster, self.namespace, self.name = cluster, namespace, name
        self.snapshots: list[tuple[float, frozenset[str], frozenset[str]]] = []  # (t, addresses, shas)
        self.proxied: list[str] = []
        self.errors = 0
        self.stop = threading.Event()

    def ready_addresses(self) -> frozenset[str]:
        status, body = self.cluster.request(
            "GET", f"/apis/discovery.k8s.io/v1/namespaces/{self.namespace}/endpointslices"
            f"?labelSelector=kubernetes.io/service-name={self.name}")
        assert status == 200, body[:200]
        return frozenset(a for s in json.loads(body)["items"] for e in s.get("endpoints") or []
                         if (e.get("conditions") or {}).get("ready") for a in e["addresses"])

    def run(self) -> None:
        while not self.stop.is_set():
            addresses = self.ready_addresses()
            shas = set()
            for address in addresses:
                try:
                    shas.add(requests.get(f"http://{address}:80/info", timeout=2).json()["model_sha"])
                except (requests.RequestException, ValueError, KeyError):
                    self.errors += 1  # a pod that went away between the snapshot and the request
            self.snapshots.append((time.monotonic(), addresses, frozenset(shas)))
            status, body = self.cluster.request(
                "GET", f"/api/v1/namespaces/{self.namespace}/services/{self.name}:http/proxy/info")
            if status == 200:
                self.proxied.append(json.loads(body)["model_sha"])
            time.sleep(0.05)


@pytest.mark.slow
def test_a_revision_change_switches_the_service_at_once_and_drains_the_old_deployment(
        operator, kube, cluster, namespace, pod_network, tmp_path):
    requires_private_pod_network(pod_network)
    name = "bluegreen"
    with EmulatedPods(str(cluster.kubeconfig), f"tei-operator.io/service={name}", load_seconds=2.0,
                      log_dir=tmp_path):
        kube.apply(service(name, namespace, OLD_SHA))
        kube.wait_condition("embsvc", name, namespace, "Ready", timeout=90)
        sampler = Sampler(cluster, namespace, name)
        wait_for(lambda: len(sampler.ready_addresses()) == 2, 30, what="two Ready endpoints")
        assert rollout_status(kube, namespace, name)["active"]["deployment"] == name  # the first: named like it
        sampler.start()
        try:
            wait_for(lambda: sampler.proxied, 30, what="/info through the Service")
            started = time.monotonic()
            kube.apply(service(name, namespace, NEW_SHA))
            candidate = wait_for(lambda: rollout_status(kube, namespace, name).get("candidate"), 30,
                                 what="status.rollout.candidate")["deployment"]
            assert re.fullmatch(rf"{name}-[0-9a-f]{{8}}", candidate), candidate
            seen = rollout_status(kube, namespace, name)
            assert seen["phase"] == "Switching" and seen["active"]["deployment"] == name
            assert seen["candidate"]["model"] == f"{MODEL}@{NEW_SHA}"
            assert seen["active"]["model"] == f"{MODEL}@{OLD_SHA}"
            # The switch: the Service selects the candidate, and its endpoints serve the new commit.
            wait_for(lambda: kube.get("service", name, namespace)["spec"]["selector"][INSTANCE] == candidate, 120,
                     what=f"the Service to select {candidate}")
            switched_at = time.monotonic()
            wait_for(lambda: sampler.snapshots and sampler.snapshots[-1][2] == {NEW_SHA}
                     and len(sampler.snapshots[-1][1]) == 2, 30, what="both endpoints to serve the new commit")
            retired = kube.get("deployment", name, namespace)["metadata"]["annotations"]["tei-operator.io/retired-at"]
            # Drained: deleted drainSeconds (5) after the switch, not before.
            wait_for(lambda: name not in deployment_names(kube, namespace), 60, interval=0.2,
                     what="the old Deployment to be deleted")
            gone = datetime.datetime.now(datetime.timezone.utc)
            retired_at = datetime.datetime.strptime(retired, "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=datetime.timezone.utc)
            assert (gone - retired_at).total_seconds() >= 5 - 1, (retired, gone)  # RFC 3339 has whole seconds
        finally:
            sampler.stop.set()
            sampler.join(10)

        # Every snapshot of Ready endpoints served one commit, and the commits went old -> new exactly once.
        shas = [s[2] for s in sampler.snapshots if s[2]]
        assert shas and all(len(s) == 1 for s in shas), [sorted(s) for s in shas if len(s) > 1][:5]
        order = [next(iter(s)) for s in shas]
        first_new = order.index(NEW_SHA)
        assert set(order[:first_new]) == {OLD_SHA} and set(order[first_new:]) == {NEW_SHA}, order
        assert set(sampler.proxied) == {OLD_SHA, NEW_SHA}
        assert sampler.proxied[sampler.proxied.index(NEW_SHA):].count(OLD_SHA) == 0
        before_switch = [s for s in sampler.snapshots if started < s[0] < switched_at - 1]
        assert len(before_switch) >= 3, "the sampler saw too little of the switch"
        print(f"\nblue/green: {len(sampler.snapshots)} endpoint snapshots, {len(sampler.proxied)} requests through "
              f"the Service, switched {switched_at - started:.1f} s after the spec change, {sampler.errors} reads "
              "of pods already gone")

        # Status afterwards: the candidate serves, nothing drains, status.model reports the new commit.
        final = wait_for(lambda: (r := rollout_status(kube, namespace, name)).get("phase") == "Stable" and r, 30,
                         what="status.rollout.phase Stable")
        assert final["active"]["deployment"] == candidate and "candidate" not in final and "draining" not in final
        assert deployment_names(kube, namespace) == {candidate}
        status = kube.get("embsvc", name, namespace)["status"]
        assert status["selector"] == (f"app.kubernetes.io/instance={candidate},app.kubernetes.io/name="
                                      f"text-embeddings-inference,tei-operator.io/service={name}")
        wait_for(lambda: (kube.get("embsvc", name, namespace)["status"].get("model") or {}).get("servedShas")
                 == [NEW_SHA], 30, what="status.model to report the new commit")
        events = {e["reason"]: e["message"] for e in kube.events(namespace, name)}
        assert events["Switched"] == f"Switched Service {name} to Deployment {candidate} (model {MODEL}@{NEW_SHA})"
        assert events["Drained"] == f"Deleted Deployment {name} (model {MODEL}@{OLD_SHA}) after draining for 5 s"


def test_a_candidate_that_never_gets_ready_leaves_the_old_model_serving_until_reverted(operator, kube, namespace):
    name = "bg-stuck"
    kube.apply(service(name, namespace, OLD_SHA, podAnnotations={}))
    kube.wait_condition("embsvc", name, namespace, "Ready", timeout=60)
    old = kube.get("deployment", name, namespace)
    # The new revision's pods crash (kwok's crash-loop stage): the candidate never gets Ready.
    kube.apply(service(name, namespace, NEW_SHA, podAnnotations={"sim.tei-operator.io/fail": "crashloop"}))
    stalled = kube.wait_condition("embsvc", name, namespace, "Stalled", reason="CrashLoopBackOff", timeout=90)
    candidate = rollout_status(kube, namespace, name)["candidate"]["deployment"]
    assert candidate in stalled["message"]
    assert kube.condition("embsvc", name, namespace, "Available")["status"] == "True"
    assert kube.condition("embsvc", name, namespace, "Progressing")["reason"] == "ModelChangeInProgress"
    assert rollout_status(kube, namespace, name)["phase"] == "Switching"
    assert kube.get("service", name, namespace)["spec"]["selector"][INSTANCE] == name
    # The old Deployment was left as it was, still serving.
    assert kube.get("deployment", name, namespace)["spec"] == old["spec"]

    # Reverting the spec deletes the half-made Deployment.
    kube.apply(service(name, namespace, OLD_SHA, podAnnotations={}))
    wait_for(lambda: deployment_names(kube, namespace) == {name}, 60, what=f"{candidate} to be deleted")
    kube.wait_condition("embsvc", name, namespace, "Ready", timeout=60)
    assert rollout_status(kube, namespace, name)["phase"] == "Stable"
    abandoned = wait_for(lambda: [e for e in kube.events(namespace, name) if e["reason"] == "ModelChangeAbandoned"],
                         30, what="a ModelChangeAbandoned event")
    assert abandoned[0]["message"].startswith(f"Deleted Deployment {candidate} (model {MODEL}@{NEW_SHA})")


@pytest.mark.slow
def test_in_place_rolls_the_one_deployment_and_mixes_commits_behind_the_service(
        operator, kube, cluster, namespace, pod_network, tmp_path):
    """The opt-out does what it says, and the sampler of the switch test does see two commits when they mix."""
    requires_private_pod_network(pod_network)
    name = "bg-inplace"
    in_place = {"modelChange": "InPlace"}
    with EmulatedPods(str(cluster.kubeconfig), f"tei-operator.io/service={name}", load_seconds=2.0,
                      log_dir=tmp_path):
        kube.apply(service(name, namespace, OLD_SHA, rollout=in_place))
        kube.wait_condition("embsvc", name, namespace, "Ready", timeout=90)
        sampler = Sampler(cluster, namespace, name)
        wait_for(lambda: len(sampler.ready_addresses()) == 2, 30, what="two Ready endpoints")
        sampler.start()
        try:
            kube.apply(service(name, namespace, NEW_SHA, rollout=in_place))
            wait_for(lambda: sampler.snapshots and sampler.snapshots[-1][2] == {NEW_SHA}
                     and len(sampler.snapshots[-1][1]) == 2, 120, what="both endpoints to serve the new commit")
        finally:
            sampler.stop.set()
            sampler.join(10)
    assert any(s[2] == {OLD_SHA, NEW_SHA} for s in sampler.snapshots), "no snapshot with both commits"
    assert deployment_names(kube, namespace) == {name}
    env = {e["name"]: e.get("value") for e in
           kube.get("deployment", name, namespace)["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["REVISION"] == NEW_SHA
    assert rollout_status(kube, namespace, name)["modelChange"] == "InPlace"


def test_the_candidate_follows_the_active_replica_count_under_the_autoscaler(operator, kube, namespace):
    name = "bg-scaled"
    autoscaling = {"enabled": True, "minReplicas": 1, "maxReplicas": 4}
    kube.apply(service(name, namespace, OLD_SHA, podAnnotations={}, autoscaling=autoscaling))
    kube.wait_condition("embsvc", name, namespace, "Ready", timeout=60)
    # The replica count the autoscaler would have set (it owns spec.replicas; the operator never resets it).
    kube.kubectl("scale", "deployment", name, "-n", namespace, "--replicas=2")
    # The new revision's pods never get Ready (external readiness, no emulator): the switch waits.
    kube.apply(service(name, namespace, NEW_SHA, autoscaling=autoscaling))
    candidate = wait_for(lambda: rollout_status(kube, namespace, name).get("candidate"), 30,
                         what="status.rollout.candidate")["deployment"]

    def replicas(deployment):
        return (kube.get("deployment", deployment, namespace) or {}).get("spec", {}).get("replicas")

    wait_for(lambda: replicas(candidate) == 2, 30, what="the candidate to have the active's 2 replicas")
    owners = {f["manager"] for f in kube.get("deployment", candidate, namespace)["metadata"]["managedFields"]
              if "f:replicas" in (f.get("fieldsV1") or {}).get("f:spec", {})}
    assert owners == {"tei-operator-autoscaler"}, owners
    kube.kubectl("scale", "deployment", name, "-n", namespace, "--replicas=3")
    wait_for(lambda: replicas(candidate) == 3, 30, what="the candidate to follow the active to 3 replicas")
    assert replicas(name) == 3 and rollout_status(kube, namespace, name)["phase"] == "Switching"
    assert kube.get("service", name, namespace)["spec"]["selector"][INSTANCE] == name
    kube.apply(service(name, namespace, OLD_SHA, podAnnotations={}, autoscaling=autoscaling))
    wait_for(lambda: deployment_names(kube, namespace) == {name}, 60, what=f"{candidate} to be deleted")


def pod_uids(kube, namespace: str, name: str) -> set[str]:
    return {p["metadata"]["uid"] for p in kube.list("pods", namespace, f"tei-operator.io/service={name}")}


def test_an_upgrade_takes_over_the_deployment_and_a_restart_during_the_drain_still_deletes_it(
        operator, kube, namespace):
    name = "bg-upgrade"
    kube.apply(service(name, namespace, OLD_SHA, podAnnotations={}, rollout={"drainSeconds": 8}))
    kube.wait_condition("embsvc", name, namespace, "Ready", timeout=60)
    # The state an earlier operator version left: no model annotation on the Deployment, no status.rollout.
    operator.stop()
    try:
        kube.kubectl("annotate", "deployment", name, "-n", namespace, "tei-operator.io/model-")
        kube.kubectl("patch", f"embsvc/{name}", "-n", namespace, "--subresource=status", "--type=merge",
                     "-p", '{"status": {"rollout": null}}')
        before = kube.get("deployment", name, namespace)
        uids = pod_uids(kube, namespace, name)
        assert "tei-operator.io/model" not in before["metadata"]["annotations"]
        assert not (kube.get("embsvc", name, namespace)["status"].get("rollout"))
    finally:
        operator.start()
    kube.reconciled("embsvc", name, namespace, operator)
    rollout = wait_for(lambda: rollout_status(kube, namespace, name), 30, what="status.rollout")
    assert (rollout["phase"], rollout["active"]["deployment"]) == ("Stable", name)
    after = kube.get("deployment", name, namespace)
    # The spec, pod template included, is untouched (the generation moves: a Deployment's annotations count).
    assert after["spec"] == before["spec"]
    assert pod_uids(kube, namespace, name) == uids  # no pod restarted
    assert json.loads(after["metadata"]["annotations"]["tei-operator.io/model"]) == {"id": MODEL, "revision": OLD_SHA}

    # A model change; the operator restarts while the old Deployment drains: it is still deleted once drained.
    kube.apply(service(name, namespace, NEW_SHA, podAnnotations={}, rollout={"drainSeconds": 8}))
    wait_for(lambda: (rollout_status(kube, namespace, name).get("draining") or [None])[0], 60,
             what="the old Deployment to drain")
    operator.restart()
    wait_for(lambda: name not in deployment_names(kube, namespace), 60, interval=0.5,
             what="the old Deployment to be deleted after the restart")
    assert [e for e in kube.events(namespace, name) if e["reason"] == "Drained"]
