"""Tests of the Helm chart: rendered with the real helm binary, applied to the local control plane (tests/cluster).

Helpers shared by the test modules: running helm, rendering the chart into objects, minimal copies of the
Prometheus Operator CRDs (which the local control plane does not have), and a kubeconfig that carries a
ServiceAccount's token, so tests act with exactly the identity the chart gives the operator.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import yaml

from tests.cluster import tools

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "tei-operator"
KUBE_VERSION = tools.versions()["KUBERNETES_VERSION"]


class HelmError(AssertionError):
    """helm exited non-zero; the message carries its stderr."""


def helm(*args: str, kubeconfig: Path | str | None = None, check: bool = True,
         timeout: float = 180) -> subprocess.CompletedProcess:
    """Runs the pinned helm binary with throwaway cache/config dirs (nothing written to the user's home)."""
    home = Path(tempfile.gettempdir()) / "tei-operator-helm-home"
    env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data")}
    cmd = [str(tools.binary("helm")), *args]
    if kubeconfig:
        cmd += ["--kubeconfig", str(kubeconfig)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise HelmError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def values_file(values: dict | None, directory: Path) -> list[str]:
    """`-f FILE` arguments for a values dict (none for None)."""
    if not values:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"values-{abs(hash(yaml.safe_dump(values)))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return ["-f", str(path)]


def template(values: dict | None = None, *, release: str = "tei", namespace: str = "tei-system",
             check: bool = True, include_tests: bool = False) -> subprocess.CompletedProcess:
    """`helm template` of the chart for the pinned Kubernetes version."""
    args = ["template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION]
    if not include_tests:
        args.append("--skip-tests")
    return helm(*args, *values_file(values, Path(tempfile.gettempdir()) / "tei-operator-chart-values"), check=check)


def render(values: dict | None = None, **kwargs) -> list[dict]:
    """The chart's objects for these values."""
    return [d for d in yaml.safe_load_all(template(values, **kwargs).stdout) if d]


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str) -> dict:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def token_kubeconfig(cluster, namespace: str, service_account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as system:serviceaccount:NAMESPACE:SERVICE_ACCOUNT with a bound token."""
    token = cluster.kubectl("create", "token", service_account, "-n", namespace, "--duration", "1h").stdout.strip()
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": cluster.api_url,
                                                   "certificate-authority": str(cluster.workdir / "pki" / "ca.crt")}}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": service_account,
                                                "namespace": namespace}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


# ---------------------------------------------------------------- Prometheus Operator CRDs, minimal copies

# Written for these tests from the Prometheus Operator's API reference (monitoring.coreos.com/v1), limited to the
# fields the chart uses and their neighbours. No x-kubernetes-preserve-unknown-fields: kubectl's strict field
# validation then refuses any field the real API does not have at these places, and types and patterns are checked.
_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                                          r"(([0-9]+)s)?(([0-9]+)ms)?)$"}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_LABEL_SELECTOR = {"type": "object", "x-kubernetes-map-type": "atomic", "properties": {
    "matchLabels": _STRING_MAP,
    "matchExpressions": {"type": "array", "items": {"type": "object", "required": ["key", "operator"], "properties": {
        "key": {"type": "string"}, "operator": {"type": "string"},
        "values": {"type": "array", "items": {"type": "string"}}}}}}}
_NAMESPACE_SELECTOR = {"type": "object", "properties": {
    "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}}
_RELABELINGS = {"type": "array", "items": {"type": "object", "properties": {
    "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"}},
    "separator": {"type": "string"}, "targetLabel": {"type": "string"}, "regex": {"type": "string"},
    "modulus": {"type": "integer"}, "replacement": {"type": "string"},
    "action": {"type": "string", "enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod",
                                          "labelmap", "LabelMap", "labeldrop", "LabelDrop", "labelkeep", "LabelKeep",
                                          "lowercase", "Lowercase", "uppercase", "Uppercase", "keepequal",
                                          "KeepEqual", "dropequal", "DropEqual"]}}}}
_ENDPOINT = {"type": "object", "properties": {
    "port": {"type": "string"}, "path": {"type": "string"}, "scheme": {"type": "string", "enum": ["http", "https"]},
    "interval": _DURATION, "scrapeTimeout": _DURATION, "honorLabels": {"type": "boolean"},
    "relabelings": _RELABELINGS, "metricRelabelings": _RELABELINGS}}


def _crd(kind: str, plural: str, spec_schema: dict) -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com", "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                "type": "object", "required": ["spec"],
                "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                               "metadata": {"type": "object"}, "spec": spec_schema}}}}],
        },
    }


MONITORING_CRDS = [
    _crd("PodMonitor", "podmonitors", {"type": "object", "required": ["selector"], "properties": {
        "jobLabel": {"type": "string"}, "podTargetLabels": {"type": "array", "items": {"type": "string"}},
        "selector": _LABEL_SELECTOR, "namespaceSelector": _NAMESPACE_SELECTOR,
        "podMetricsEndpoints": {"type": "array", "items": _ENDPOINT}}}),
    _crd("ServiceMonitor", "servicemonitors", {"type": "object", "required": ["selector", "endpoints"], "properties": {
        "jobLabel": {"type": "string"}, "targetLabels": {"type": "array", "items": {"type": "string"}},
        "podTargetLabels": {"type": "array", "items": {"type": "string"}},
        "selector": _LABEL_SELECTOR, "namespaceSelector": _NAMESPACE_SELECTOR,
        "endpoints": {"type": "array", "items": _ENDPOINT}}}),
    _crd("PrometheusRule", "prometheusrules", {"type": "object", "properties": {
        "groups": {"type": "array", "items": {"type": "object", "required": ["name", "rules"], "properties": {
            "name": {"type": "string", "minLength": 1}, "interval": _DURATION,
            "rules": {"type": "array", "items": {"type": "object", "required": ["expr"], "properties": {
                "alert": {"type": "string"}, "record": {"type": "string"},
                "expr": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                "for": _DURATION, "keep_firing_for": _DURATION,
                "labels": _STRING_MAP, "annotations": _STRING_MAP}}}}}}}}),
]
