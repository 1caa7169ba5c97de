"""The pydantic models and the API server agree on every spec: generated specs (hypothesis) are judged twice, by
`ServiceResource.from_body` (what `tei-operator render` and the operator use) and by kube-apiserver with the
generated CRDs (a server-side dry-run create with strict field validation), and the two must accept and reject
the same specs; every rejection, from either side, names a field.

The generator walks the CRD's own schema: each spec starts valid and gets one to three fields set to values around
their limits (bounds, one past them, enum members and near misses, pattern edge cases, wrong types, unknown keys),
so the run reaches the schema's every corner the models have, CEL rules included. The hand-written invalid manifests
of test_validation.py and `REGRESSION` below stay as a fixed set next to it.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tei_operator.api import InvalidSpecError, ServiceResource
from tei_operator.api.crd import generate_crds
from tei_operator.api.kinds import KINDS
from tei_operator.kube import KubeApiError, KubeClient

pytestmark = pytest.mark.cluster

EXAMPLES = 1000  # generated specs per run (both kinds together)
BASE = {"EmbeddingService": {"model": {"id": "BAAI/bge-m3"}},
        "RerankerService": {"model": {"id": "BAAI/bge-reranker-v2-m3"}}}
STRING_PROBES = ["", "a", "A", "a-b", "a.b", "a_b", "-a", "a-", "1", "1.9.3", "x" * 64, "x" * 254, "0%", "25%",
                 "500m", "16Gi", "1e3", "BAAI/bge-m3", "--api-key", "HF_TOKEN", "with space", "é"]


def leaves(schema: dict, path: str = "spec") -> list[tuple[str, dict]]:
    """(path, schema) of every scalar field under spec, arrays as `[0]`, maps as `.k`; free-form objects skipped."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    kind = schema.get("type")
    if kind == "object" and "properties" in schema:
        out = [(path + ".unknownField", {"type": "unknown"})]
        for name, sub in schema["properties"].items():
            out += leaves(sub, f"{path}.{name}")
        return out
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return leaves(schema["additionalProperties"], f"{path}.k")
    if kind == "array":
        return leaves(schema.get("items") or {}, f"{path}[0]")
    return [(path, schema)]


SCHEMAS = {crd["spec"]["names"]["kind"]: crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
           for crd in generate_crds()}
LEAVES = {kind: leaves(schema) for kind, schema in SCHEMAS.items()}


def values_for(schema: dict) -> st.SearchStrategy[Any]:
    """Values near the limits of one scalar field, and some of the wrong type."""
    kind = schema.get("type")
    wrong = st.sampled_from([None, "text", 3, -1, 2.5, True, [], {}])
    if kind == "unknown":
        return st.sampled_from([1, "x", {"a": 1}])
    if "enum" in schema:
        members = list(schema["enum"])
        return st.one_of(st.sampled_from(members), st.sampled_from([str(m).upper() for m in members] + ["bogus", ""]),
                         wrong)
    if kind in ("integer", "number") or schema.get("x-kubernetes-int-or-string"):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        edges = [v for b in (lo, hi) if b is not None for v in (b - 1, b, b + 1)] + [0, 1, -1, 10**7]
        numbers = st.one_of(st.sampled_from(edges), st.integers(-5, 100_000))
        if kind == "number":
            numbers = st.one_of(numbers, st.floats(-1, 2 * (hi or 1000), allow_nan=False, allow_infinity=False))
        if schema.get("x-kubernetes-int-or-string"):
            numbers = st.one_of(numbers, st.sampled_from(STRING_PROBES))
        return st.one_of(numbers, wrong)
    if kind == "boolean":
        return st.one_of(st.booleans(), st.sampled_from(["true", "yes", 1]))
    if kind == "string":
        probes = list(STRING_PROBES)
        if "maxLength" in schema:
            probes += ["y" * schema["maxLength"], "y" * (schema["maxLength"] + 1)]
        return st.one_of(st.sampled_from(probes), st.text(max_size=12), wrong)
    return wrong


def set_path(spec: dict, path: str, value: Any) -> None:
    """Set `path` (spec.a.b[0].c) in `spec`, creating objects and one-element lists on the way."""
    parts = re.findall(r"\.([^.\[]+)|\[(\d+)\]", path[len("spec"):])
    node: Any = spec
    for i, (key, index) in enumerate(parts):
        last = i == len(parts) - 1
        nxt = parts[i + 1] if not last else None
        fresh: Any = [] if nxt and nxt[1] else {}
        if key:
            if last:
                node[key] = value
                return
            if not isinstance(node.get(key), type(fresh)):
                node[key] = fresh
            node = node[key]
        else:
            while len(node) <= int(index):
                node.append(fresh if not last else None)
            if last:
                node[int(index)] = value
                return
            if not isinstance(node[int(index)], type(fresh)):
                node[int(index)] = fresh
            node = node[int(index)]


@st.composite
def specs(draw) -> tuple[str, dict, list[str]]:
    kind = draw(st.sampled_from(sorted(KINDS)))
    spec = json.loads(json.dumps(BASE[kind]))
    paths = []
    for _ in range(draw(st.integers(1, 3))):
        path, schema = draw(st.sampled_from(LEAVES[kind]))
        set_path(spec, path, draw(values_for(schema)))
        paths.append(path)
    return kind, spec, paths


# -- the two judges ----------------------------------------------------------------------------------------------

def pydantic_verdict(kind: str, spec: dict) -> str | None:
    try:
        ServiceResource.from_body({"apiVersion": "tei-operator.io/v1alpha1", "kind": kind,
                                   "metadata": {"name": "gen", "namespace": "default"}, "spec": spec})
    except InvalidSpecError as exc:
        return str(exc)
    return None


def server_verdict(client: KubeClient, namespace: str, kind: str, spec: dict) -> str | None:
    plural = KINDS[kind].plural
    body = {"apiVersion": "tei-operator.io/v1alpha1", "kind": kind,
            "metadata": {"name": f"gen-{uuid.uuid4().hex[:8]}", "namespace": namespace}, "spec": spec}
    try:
        asyncio.run(client.request("POST", f"/apis/tei-operator.io/v1alpha1/namespaces/{namespace}/{plural}",
                                   query={"dryRun": "All", "fieldValidation": "Strict"}, body=body))
    except KubeApiError as exc:
        if exc.status in (400, 422):
            return exc.message
        raise
    return None


FIELD = re.compile(r"spec(?:\.[A-Za-z0-9_-]+|\[\d+\])+")


def names_a_field(message: str) -> bool:
    return bool(FIELD.search(message))


@pytest.fixture(scope="module")
def judge(crds, kubeconfig, cluster):
    client = KubeClient.from_environment(kubeconfig)
    namespace = f"gen-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    yield lambda kind, spec: server_verdict(client, namespace, kind, spec)
    client.close()
    cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=specs())
def test_models_and_api_server_agree_on_generated_specs(judge, case):
    kind, spec, paths = case
    ours, theirs = pydantic_verdict(kind, spec), judge(kind, spec)
    assert (ours is None) == (theirs is None), (
        f"{kind} spec {json.dumps(spec)} (changed {paths}): pydantic says {ours or 'valid'}; "
        f"the API server says {theirs or 'valid'}")
    if ours is not None:
        assert names_a_field(ours), ours
        assert names_a_field(theirs), theirs


# -- the fixed regression set: hand-written invalid specs, each with the field both sides must name ---------------

M = {"id": "BAAI/bge-m3"}
REGRESSION: list[tuple[str, dict, str]] = [
    ("EmbeddingService", {"model": M, "gpu": {"count": 2}}, "spec.gpu.count"),
    ("EmbeddingService", {"model": M, "gpu": {"count": -1}}, "spec.gpu.count"),
    ("EmbeddingService", {"model": M, "gpu": {"count": 1, "type": "v100"}}, "spec.gpu.type"),
    ("EmbeddingService", {"model": M, "gpu": {"count": 0, "type": "a100"}}, "spec.gpu.type"),
    ("EmbeddingService", {"gpu": {"count": 1}}, "spec.model"),
    ("EmbeddingService", {"model": {"revision": "main"}}, "spec.model.id"),
    ("EmbeddingService", {"model": {**M, "dtype": "bfloat16"}}, "spec.model.dtype"),
    ("EmbeddingService", {"model": {**M, "pooling": "max"}}, "spec.model.pooling"),
    ("EmbeddingService", {"model": M, "replicas": -1}, "spec.replicas"),
    ("EmbeddingService", {"model": M, "replicas": 1001}, "spec.replicas"),
    ("EmbeddingService", {"model": M, "replicas": "two"}, "spec.replicas"),
    ("EmbeddingService", {"model": M, "minAvailable": 0}, "spec.minAvailable"),
    ("EmbeddingService", {"model": M, "autoscaling": {"enabled": True}}, "spec.autoscaling.maxReplicas"),
    ("EmbeddingService", {"model": M, "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}},
     "spec.autoscaling.minReplicas"),
    ("EmbeddingService", {"model": M, "autoscaling": {"minReplicas": 0}}, "spec.autoscaling.minReplicas"),
    ("EmbeddingService", {"model": M, "autoscaling": {"targetBatchFill": 1.5}}, "spec.autoscaling.targetBatchFill"),
    ("EmbeddingService", {"model": M, "autoscaling": {"metricsSource": "statsd"}}, "spec.autoscaling.metricsSource"),
    ("EmbeddingService", {"model": M, "engine": {"maxBatchTokens": "lots"}}, "spec.engine.maxBatchTokens"),
    ("EmbeddingService", {"model": M, "engine": {"imagePullPolicy": "Sometimes"}}, "spec.engine.imagePullPolicy"),
    ("EmbeddingService", {"model": M, "engine": {"imagePullSecrets": [{"name": "Reg_Cred"}]}},
     "spec.engine.imagePullSecrets[0].name"),
    ("EmbeddingService", {"model": M, "service": {"port": 70000}}, "spec.service.port"),
    ("EmbeddingService", {"model": M, "service": {"type": "ExternalName"}}, "spec.service.type"),
    ("EmbeddingService", {"model": M, "colour": "blue"}, "spec.colour"),
    ("EmbeddingService", {"model": M, "cache": {"emptyDir": {}, "persistentVolumeClaim": {"claimName": "c"}}},
     "spec.cache"),
    ("EmbeddingService", {"model": M, "rollout": {"maxSurge": 0, "maxUnavailable": 0}}, "spec.rollout.maxUnavailable"),
    ("EmbeddingService", {"model": M, "rollout": {"maxSurge": "lots"}}, "spec.rollout.maxSurge"),
    ("EmbeddingService", {"model": M, "tolerations": [{"operator": "Exists", "value": "x"}]},
     "spec.tolerations[0].value"),
    ("EmbeddingService", {"model": M, "tolerations": [{"effect": "Sometimes", "key": "k"}]},
     "spec.tolerations[0].effect"),
    ("EmbeddingService", {"model": M, "resources": {"limits": {"memory": "lots"}}}, "spec.resources.limits.memory"),
    ("EmbeddingService", {"model": M, "podLabels": {"app.kubernetes.io/name": "x"}}, "spec.podLabels"),
    ("EmbeddingService", {"model": M, "podAnnotations": {"tei-operator.io/x": "y"}}, "spec.podAnnotations"),
    ("EmbeddingService", {"model": M, "networkPolicy": {"enabled": True, "clients": [{}]}},
     "spec.networkPolicy.clients[0]"),
    ("EmbeddingService", {"model": M, "automountServiceAccountToken": "no"}, "spec.automountServiceAccountToken"),
    ("RerankerService", {"model": {"id": "BAAI/bge-reranker-v2-m3", "pooling": "cls"}}, "spec.model.pooling"),
    ("RerankerService", {"model": {"id": "BAAI/bge-reranker-v2-m3"}, "gpu": {"count": 3}}, "spec.gpu.count"),
]


def test_the_regression_set_is_large_enough():
    assert len(REGRESSION) >= 30


@pytest.mark.parametrize("kind,spec,field", REGRESSION, ids=[f"{i}-{c[2]}" for i, c in enumerate(REGRESSION)])
def test_hand_written_invalid_specs_are_refused_by_both_naming_the_field(judge, kind, spec, field):
    ours, theirs = pydantic_verdict(kind, spec), judge(kind, spec)
    assert ours is not None, f"pydantic accepted {spec}"
    assert theirs is not None, f"the API server accepted {spec}"
    assert field in ours, ours
    assert field in theirs, theirs
