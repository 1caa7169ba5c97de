"""Services route in the local cluster, as in a real one.

Pod IPs come from 198.18.0.0/15 made local in the run's private network namespace (tests/cluster/netns.py), so the
endpoint controllers accept them: a Service's EndpointSlice and Endpoints list its Ready pods, no controller warns,
and the API server's proxies reach the pods (one TEI emulator per pod, tests/cluster/emulated_pods.py):
- the service proxy, `/api/v1/namespaces/NS/services/NAME:http/proxy/...`, which picks a Ready endpoint of the
  Service, as kube-proxy would for its ClusterIP;
- the retrieval client (examples/retrieval_client.py) against two Services through that proxy (`kubectl proxy`);
- the operator's built-in scraper with scrape_via=proxy (the session operator's setting), which reads each pod's
  /metrics through the API server's pod proxy.
In the loopback fallback (not root) these tests are skipped with the reason; no kube-proxy runs, so ClusterIPs
themselves are not reachable.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.cluster import free_port, tools
from tests.cluster.emulated_pods import EmulatedPods
from tests.conftest import requires_private_pod_network

from .conftest import EXAMPLES_DIR, service_manifest, wait_for

pytestmark = pytest.mark.cluster

SERVICE_LABEL = "tei-operator.io/service"
NAMES = ("routed", "ends", "retr-embed", "retr-rerank", "scraped")
# Event reasons of the endpoints and EndpointSlice controllers when they cannot write a Service's endpoints.
ENDPOINT_WARNING = re.compile(r"FailedTo\w*Endpoint")
# The API server refusing the endpoints as invalid, e.g. `Invalid value: "127.171.0.1": may not be in the loopback
# range`: what every Service produced while pods had loopback IPs. (A controller's stale-cache conflict, "already
# exists" or "has been modified", is retried and happens in real clusters too: it is not this.)
INVALID_ENDPOINTS = re.compile(r"is invalid|Invalid value|loopback range")


def cpu_service(kind: str, name: str, namespace: str, model: str, **spec) -> dict:
    body = {"model": {"id": model}, "gpu": {"count": 0}, "engine": {"maxBatchTokens": 4096}, **spec}
    return service_manifest(kind, name, namespace, body)


@pytest.fixture(scope="module")
def routed_pods(cluster, pod_network, tmp_path_factory):
    """A TEI emulator for each Running pod of this module's services (nothing else: other modules' pods stay
    unanswered, as before)."""
    requires_private_pod_network(pod_network)
    pods = EmulatedPods(str(cluster.kubeconfig), f"{SERVICE_LABEL} in ({','.join(NAMES)})",
                        log_dir=tmp_path_factory.mktemp("routed-emulators"))
    pods.start()
    yield pods
    pods.stop()


def pod_ips(kube, namespace: str, name: str) -> set[str]:
    return {p["status"]["podIP"] for p in kube.list("pods", namespace, f"{SERVICE_LABEL}={name}")
            if p["status"].get("podIP") and not p["metadata"].get("deletionTimestamp")}


def slice_ips(kube, namespace: str, name: str) -> set[str]:
    return {address for s in kube.list("endpointslices", namespace, f"kubernetes.io/service-name={name}")
            for endpoint in s.get("endpoints") or [] if (endpoint.get("conditions") or {}).get("ready")
            for address in endpoint["addresses"]}


def endpoints_ips(kube, namespace: str, name: str) -> set[str]:
    endpoints = kube.get("endpoints", name, namespace) or {}
    return {a["ip"] for subset in endpoints.get("subsets") or [] for a in subset.get("addresses") or []}


def service_proxy(cluster, namespace: str, name: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
    """A request to the Service through the API server's service proxy: GET, or POST with a JSON body."""
    return cluster.request("GET" if body is None else "POST",
                           f"/api/v1/namespaces/{namespace}/services/{name}:http/proxy{path}",
                           None if body is None else json.dumps(body).encode())


def json_if_ok(answer: tuple[int, bytes]):
    status, body = answer
    return json.loads(body) if status == 200 else None


def test_endpoints_list_the_pods_and_no_controller_warns(operator, kube, cluster, namespace, pod_network):
    requires_private_pod_network(pod_network)
    kube.apply(cpu_service("EmbeddingService", "ends", namespace, "BAAI/bge-small-en-v1.5", replicas=2))
    kube.wait_condition("embsvc", "ends", namespace, "Ready")
    ips = wait_for(lambda: (lambda found: found if len(found) == 2 else None)(pod_ips(kube, namespace, "ends")), 30,
                   what="two pod IPs")
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(cluster.pod_cidr) for ip in ips), ips
    # The positive sign that both endpoint controllers handled the Service: they wrote its Ready pods.
    wait_for(lambda: slice_ips(kube, namespace, "ends") == ips, 30, what=f"the EndpointSlice to hold {sorted(ips)}")
    wait_for(lambda: endpoints_ips(kube, namespace, "ends") == ips, 30, what=f"the Endpoints to hold {sorted(ips)}")
    # No endpoint warning of any kind for this Service; and in the whole cluster (every Service of the session so
    # far), no endpoints refused as invalid, neither as an Event nor in kube-controller-manager's log.
    events = json.loads(kube.kubectl("get", "events", "-A", "-o", "json").stdout)["items"]
    warnings = [(e["involvedObject"].get("namespace"), e["involvedObject"].get("name"), e["reason"], e["message"])
                for e in events if ENDPOINT_WARNING.search(e.get("reason") or "")]
    assert [w for w in warnings if w[:2] == (namespace, "ends")] == []
    assert [w for w in warnings if INVALID_ENDPOINTS.search(w[3] or "")] == []
    kcm_log = cluster.log_path("kube-controller-manager").read_text(errors="replace").splitlines()
    assert [line for line in kcm_log if "ndpoint" in line and INVALID_ENDPOINTS.search(line)] == []


def test_the_api_servers_service_proxy_routes_to_ready_pods(operator, kube, cluster, namespace, routed_pods):
    kube.apply(cpu_service("EmbeddingService", "routed", namespace, "BAAI/bge-small-en-v1.5", replicas=2))
    kube.wait_condition("embsvc", "routed", namespace, "Ready")
    wait_for(lambda: len(routed_pods.urls(namespace, "routed")) == 2, 30, what="both pods' emulators to answer")
    info = wait_for(lambda: json_if_ok(service_proxy(cluster, namespace, "routed", "/info")), 30,
                    what="/info through the Service")
    assert info["model_id"] == "BAAI/bge-small-en-v1.5"
    vectors = json_if_ok(service_proxy(cluster, namespace, "routed", "/embed", {"inputs": ["hello", "world"]}))
    assert vectors and len(vectors) == 2 and len(vectors[0]) > 1, vectors
    # Both Ready pods take requests: each emulator counts what it served.
    for _ in range(20):
        service_proxy(cluster, namespace, "routed", "/embed", {"inputs": ["spread"]})
    served = [served_requests(url) for url in routed_pods.urls(namespace, "routed")]
    assert len(served) == 2 and all(n > 0 for n in served), served
    # With no Ready endpoint the proxy has nowhere to go: the answer is the API server's 503, not a pod's.
    kube.apply(cpu_service("EmbeddingService", "routed", namespace, "BAAI/bge-small-en-v1.5", replicas=0))
    wait_for(lambda: not slice_ips(kube, namespace, "routed"), 30, what="the EndpointSlice to be empty")
    status, body = wait_for(lambda: (lambda a: a if a[0] != 200 else None)(
        service_proxy(cluster, namespace, "routed", "/info")), 30, what="the proxy to refuse")
    assert status == 503 and b"no endpoints available" in body, (status, body[:300])


def served_requests(url: str) -> float:
    """te_request_count of one emulator (all methods), read from its /metrics directly."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("te_request_count"))


@pytest.fixture
def kubectl_proxy(cluster):
    """`kubectl proxy` on 127.0.0.1: plain HTTP to the API server with the admin's credentials, as a user reaches
    a Service from a laptop."""
    port = free_port()
    proc = subprocess.Popen([str(tools.binary("kubectl")), "--kubeconfig", str(cluster.kubeconfig), "proxy",
                             f"--port={port}", "--address=127.0.0.1"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: urllib.request.urlopen(f"{url}/readyz", timeout=2).status == 200, 20,
                 what="kubectl proxy to answer")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_retrieval_client_works_through_two_services(operator, kube, namespace, routed_pods, kubectl_proxy):
    kube.apply([cpu_service("EmbeddingService", "retr-embed", namespace, "BAAI/bge-small-en-v1.5"),
                cpu_service("RerankerService", "retr-rerank", namespace, "BAAI/bge-reranker-v2-m3")])
    for kind, name in (("embsvc", "retr-embed"), ("rrsvc", "retr-rerank")):
        kube.wait_condition(kind, name, namespace, "Ready")
        wait_for(lambda: routed_pods.urls(namespace, name), 30, what=f"the emulator of {name} to answer")
    base = f"{kubectl_proxy}/api/v1/namespaces/{namespace}/services"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES_DIR / "retrieval_client.py"), "--embed-url", f"{base}/retr-embed:http/proxy",
         "--rerank-url", f"{base}/retr-rerank:http/proxy", "--query", "how do pods get their addresses",
         "--json", "--retries", "3"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["embedding_model"] == "BAAI/bge-small-en-v1.5", answer  # each read from its Service's /info
    assert answer["reranker_model"] == "BAAI/bge-reranker-v2-m3", answer
    assert answer["embed_requests"] >= 1 and answer["rerank_requests"] >= 1, answer
    assert answer["results"] and all(r["text"] for r in answer["results"]), answer


@pytest.mark.slow
def test_the_scraper_reads_pods_through_the_api_servers_pod_proxy(operator, kube, cluster, namespace,
                                                                   routed_pods):
    kube.apply(cpu_service("EmbeddingService", "scraped", namespace, "BAAI/bge-small-en-v1.5",
                           autoscaling={"enabled": True, "minReplicas": 1, "maxReplicas": 2,
                                        "metricsSource": "scrape"}))
    kube.wait_condition("embsvc", "scraped", namespace, "Ready")
    wait_for(lambda: routed_pods.urls(namespace, "scraped"), 30, what="the pod's emulator to answer")
    # Requests through the Service; the autoscaler, reading the pod's /metrics through the API server's pod proxy,
    # sees them as a request rate (a rate needs two scrapes: up to two ticks of 15 s).
    deadline = time.monotonic() + 75

    def rate_seen():
        service_proxy(cluster, namespace, "scraped", "/embed", {"inputs": ["one request"]})
        auto = (kube.get("embsvc", "scraped", namespace).get("status") or {}).get("autoscaling") or {}
        return auto if ((auto.get("signals") or {}).get("requestsPerSecond") or 0) > 0 else None

    auto = wait_for(rate_seen, deadline - time.monotonic(), interval=1.0,
                    what="status.autoscaling.signals.requestsPerSecond > 0 (metrics read via the pod proxy)")
    assert not auto.get("consecutiveMetricFailures"), auto
    assert auto.get("lastChangeTime"), auto
