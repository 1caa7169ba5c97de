"""A plain HTTPS client for the API server (the admin's client certificate), counting its own requests as the API
server counts them (verb, resource), so the benchmark can take them out of `apiserver_request_total`."""

from __future__ import annotations

import json
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter

from .counts import Key

_PLURALS = {"Deployment": ("apis/apps/v1", "deployments"), "Service": ("api/v1", "services"),
            "PodDisruptionBudget": ("apis/policy/v1", "poddisruptionbudgets"),
            "NetworkPolicy": ("apis/networking.k8s.io/v1", "networkpolicies"),
            "EmbeddingService": ("apis/tei-operator.io/v1alpha1", "embeddingservices"),
            "RerankerService": ("apis/tei-operator.io/v1alpha1", "rerankerservices")}


class ApiClient:
    def __init__(self, cluster) -> None:
        self.base = cluster.api_url
        pki = cluster.workdir / "pki"
        self.context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.context.load_cert_chain(str(pki / "client-admin.crt"), str(pki / "client-admin.key"))
        self.sent: Counter[Key] = Counter()
        self._lock = threading.Lock()

    def _count(self, verb: str, resource: str) -> None:
        with self._lock:
            self.sent[(verb, resource)] += 1

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json",
                timeout: float = 60) -> dict | str:
        req = urllib.request.Request(self.base + path, data=body, method=method,
                                     headers={"Content-Type": content_type} if body is not None else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.context) as r:
                text = r.read().decode()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: {exc.code} {exc.read().decode()[:300]}") from None
        return json.loads(text) if text.startswith("{") else text

    def metrics(self) -> str:
        """kube-apiserver's /metrics (a non-resource path: not in apiserver_request_total's resource counts)."""
        return str(self.request("GET", "/metrics"))

    def apply(self, manifest: dict, manager: str) -> None:
        """Server-side apply of one object (the API server counts it as verb APPLY)."""
        prefix, plural = _PLURALS[manifest["kind"]]
        meta = manifest["metadata"]
        path = (f"/{prefix}/namespaces/{meta['namespace']}/{plural}/{meta['name']}?"
                + urllib.parse.urlencode({"fieldManager": manager, "force": "true"}))
        self._count("APPLY", plural)
        self.request("PATCH", path, json.dumps(manifest).encode(), "application/apply-patch+yaml")

    def create_namespace(self, name: str) -> None:
        self._count("POST", "namespaces")
        self.request("POST", "/api/v1/namespaces",
                     json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}).encode())

    def list(self, prefix: str, plural: str, selector: str | None = None) -> list[dict]:
        """One LIST across every namespace (label-selected)."""
        self._count("LIST", plural)
        query = "?" + urllib.parse.urlencode({"labelSelector": selector}) if selector else ""
        return self.request("GET", f"/{prefix}/{plural}{query}")["items"]  # type: ignore[index]
