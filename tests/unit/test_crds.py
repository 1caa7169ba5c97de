"""The generated CRDs: committed copies up to date, structural schemas, descriptions everywhere, and CEL rules that
refuse what the pydantic models refuse.

The CEL rules are evaluated here with cel-python after applying the schema's defaults the way the API server does
(defaults first, then validation), so a rule that is wrong or that disagrees with its pydantic twin fails here,
before the integration tests apply the CRDs to a real API server.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterator

import celpy
import pytest

from tei_operator.api import KINDS, InvalidSpecError, parse_spec
from tei_operator.api.crd import crd_filename, crd_yaml, generate_crd, generate_crds
from tei_operator.api.docs import api_reference_markdown

ROOT = Path(__file__).resolve().parents[2]
CEL = celpy.Environment()


def root_schema(kind: str) -> dict[str, Any]:
    return generate_crd(KINDS[kind])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path."""
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill defaults as the API server does: a missing property with a default gets it, recursively."""
    value = copy.deepcopy(value)
    if isinstance(value, dict) and "properties" in schema:
        for name, child in schema["properties"].items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = apply_defaults(child, value[name])
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        value = {k: apply_defaults(schema["additionalProperties"], v) for k, v in value.items()}
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        value = [apply_defaults(schema["items"], v) for v in value]
    return value


def cel_failures(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Messages of every CEL rule that refuses `value` (already defaulted)."""
    failures = []
    for rule in schema.get("x-kubernetes-validations", []):
        program = CEL.program(CEL.compile(rule["rule"]))
        if not bool(program.evaluate({"self": celpy.json_to_cel(value)})):
            failures.append(f"{path}{rule.get('fieldPath', '')}: {rule['message']}")
    if isinstance(value, dict) and "properties" in schema:
        for name, child in schema["properties"].items():
            if name in value:
                failures += cel_failures(child, value[name], f"{path}.{name}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            failures += cel_failures(schema["additionalProperties"], item, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            failures += cel_failures(schema["items"], item, f"{path}[{i}]")
    return failures


def admit(kind: str, spec: dict[str, Any], name: str = "svc") -> list[str]:
    """What the API server's CEL rules say about an object of `kind` with `spec`."""
    schema = root_schema(kind)
    obj = apply_defaults(schema, {"apiVersion": "tei-operator.io/v1alpha1", "kind": kind,
                                  "metadata": {"name": name}, "spec": spec})
    return cel_failures(schema, obj)


# --- committed files --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(KINDS))
def test_committed_crd_matches_the_generator(kind):
    info = KINDS[kind]
    path = ROOT / "crds" / crd_filename(info)
    assert path.read_text() == crd_yaml(generate_crd(info)), (
        f"{path} is stale: run `tei-operator crds --output-dir crds`")


def test_committed_api_reference_matches_the_generator():
    path = ROOT / "docs" / "api-reference.md"
    assert path.read_text() == api_reference_markdown(), f"{path} is stale: run `tei-operator docs > {path}`"


# --- shape --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(KINDS))
def test_crd_names_subresources_and_columns(kind):
    crd = generate_crd(KINDS[kind])
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{KINDS[kind].plural}.tei-operator.io"
    assert spec["group"] == "tei-operator.io" and spec["scope"] == "Namespaced"
    assert spec["names"]["categories"] == ["tei"]
    assert spec["names"]["shortNames"] == list(KINDS[kind].short_names)
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}, "scale": {
        "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector"}}
    columns = {c["name"].upper(): c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["MODEL"] == ".spec.model.id"
    assert columns["GPU"] == ".spec.gpu.count" and columns["GPU-TYPE"] == ".spec.gpu.type"
    assert columns["REPLICAS"] == ".status.replicas" and columns["READY"] == ".status.readyReplicas"
    # The STATUS column reads status.summary: Ready's reason unless stalled or held back by the autoscaler's limits.
    assert columns["STATUS"] == ".status.summary"
    assert columns["AVAILABLE"] == '.status.conditions[?(@.type=="Available")].status'
    assert columns["QUEUE"] == ".status.autoscaling.signals.queuePerReplica"
    assert columns["AGE"] == ".metadata.creationTimestamp"
    # Every column path exists in the schema (metadata aside).
    paths = {p for p, _ in walk(version["schema"]["openAPIV3Schema"])}
    for path in columns.values():
        clean = path.split("[")[0]
        assert clean.startswith(".metadata") or clean in paths, path


@pytest.mark.parametrize("kind", list(KINDS))
def test_schema_is_structural(kind):
    """The rules of a structural schema that the API server checks, as far as they can be checked offline."""
    for path, node in walk(root_schema(kind)):
        assert "$ref" not in node and "$defs" not in node, path
        assert not {"allOf", "oneOf", "not", "nullable", "const", "title"} & set(node), path
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            assert "type" not in node, path
        else:
            assert "anyOf" not in node, path
            assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, path
        if node.get("x-kubernetes-preserve-unknown-fields"):
            assert node["type"] == "object" and "properties" not in node, path
        if node.get("type") == "array":
            assert "items" in node and "maxItems" in node, f"{path}: lists need maxItems (CEL cost)"
        if node.get("type") == "object" and path.startswith(".spec"):
            assert ("properties" in node or "additionalProperties" in node
                    or node.get("x-kubernetes-preserve-unknown-fields")), path
        for name in node.get("required", []):
            assert name in node["properties"], f"{path}: required {name} is no property"
        if node.get("x-kubernetes-list-type") == "map":
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in node["items"].get("required", []), f"{path}: list-map key {key} must be required"
        if node.get("type") == "string" and path.startswith(".spec") and "enum" not in node:
            assert "maxLength" in node, f"{path}: strings need maxLength (CEL cost)"


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_property_has_a_description(kind):
    missing = [f"{path}.{name}" for path, node in walk(root_schema(kind))
               for name, child in node.get("properties", {}).items() if not child.get("description", "").strip()]
    # The API server refuses a CRD whose metadata schema holds anything but its type.
    assert missing == [".metadata"]
    assert root_schema(kind)["properties"]["metadata"] == {"type": "object"}


@pytest.mark.parametrize("kind", list(KINDS))
def test_defaults_from_the_issue_are_in_the_schema(kind):
    spec = root_schema(kind)["properties"]["spec"]["properties"]
    assert spec["replicas"]["default"] == 1
    assert spec["gpu"]["default"] == {} and spec["gpu"]["properties"]["count"]["default"] == 1
    assert spec["gpu"]["properties"]["resourceName"]["default"] == "nvidia.com/gpu"
    assert spec["service"]["properties"]["type"]["default"] == "ClusterIP"
    assert spec["service"]["properties"]["port"]["default"] == 80
    assert spec["cache"]["default"] == {"emptyDir": {}}
    assert spec["model"]["properties"]["tokenSecretRef"]["properties"]["key"]["default"] == "token"
    expected_tokens = {"EmbeddingService": 16384, "RerankerService": 8192}[kind]
    assert spec["engine"]["properties"]["maxBatchTokens"]["default"] == expected_tokens
    # Defaults applied by the API server give the same spec as pydantic's defaults.
    defaulted = apply_defaults(root_schema(kind)["properties"]["spec"], {"model": {"id": "BAAI/bge-m3"}})
    assert defaulted == without_empty(parse_spec(kind, {"model": {"id": "BAAI/bge-m3"}}).to_wire())


def without_empty(value: Any) -> Any:
    """pydantic's empty lists and maps: absent fields to the API server."""
    if isinstance(value, dict):
        return {k: without_empty(v) for k, v in value.items() if v not in ([], {}) or k in ("gpu", "emptyDir")}
    return value


@pytest.mark.parametrize("kind", list(KINDS))
def test_bounds_and_enums_in_the_schema(kind):
    spec = root_schema(kind)["properties"]["spec"]["properties"]
    assert (spec["gpu"]["properties"]["count"]["minimum"], spec["gpu"]["properties"]["count"]["maximum"]) == (0, 1)
    assert "a100" in spec["gpu"]["properties"]["type"]["enum"]
    assert (spec["service"]["properties"]["port"]["minimum"], spec["service"]["properties"]["port"]["maximum"]) == (
        1, 65535)
    assert spec["engine"]["properties"]["imagePullPolicy"]["enum"] == ["Always", "IfNotPresent", "Never"]
    assert spec["replicas"]["minimum"] == 0
    assert spec["model"]["required"] == ["id"]
    assert root_schema(kind)["required"] == ["spec"]
    # Only the free-form Kubernetes objects keep unknown fields.
    free = sorted(path for path, node in walk(root_schema(kind)) if node.get("x-kubernetes-preserve-unknown-fields"))
    assert free == [".spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[]",
                    ".spec.affinity.podAffinity", ".spec.affinity.podAntiAffinity", ".spec.engine.env[].valueFrom",
                    ".spec.networkPolicy.clients[].namespaceSelector.matchExpressions[]",
                    ".spec.networkPolicy.clients[].podSelector.matchExpressions[]",
                    ".spec.networkPolicy.prometheus[].namespaceSelector.matchExpressions[]",
                    ".spec.networkPolicy.prometheus[].podSelector.matchExpressions[]",
                    ".spec.podSecurityContext", ".spec.securityContext", ".spec.topologySpreadConstraints[]"]


# --- CEL -------------------------------------------------------------------------------------------------------

def test_cel_rules_are_where_they_belong():
    def rules(kind: str) -> dict[str, list[str]]:
        return {path: [r["rule"] for r in node["x-kubernetes-validations"]]
                for path, node in walk(root_schema(kind)) if "x-kubernetes-validations" in node}

    embedding = rules("EmbeddingService")
    assert set(embedding) == {"", ".spec", ".spec.model", ".spec.gpu", ".spec.engine.extraArgs", ".spec.engine.env",
                              ".spec.engine.env[]", ".spec.tolerations[]", ".spec.podLabels", ".spec.podAnnotations",
                              ".spec.cache", ".spec.rollout", ".spec.autoscaling", ".spec.networkPolicy.clients[]",
                              ".spec.networkPolicy.prometheus[]"}
    assert set(rules("RerankerService")) == set(embedding) - {".spec.model"}
    assert embedding[".spec.autoscaling"] == ["!has(self.enabled) || !self.enabled || has(self.maxReplicas)",
                                              "!has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
                                              "!has(self.fastScaleUp) || !has(self.fastScaleUp.threshold) || "
                                              "!has(self.tolerance) || self.fastScaleUp.threshold >= 1.0 + "
                                              "self.tolerance",
                                              "!has(self.schedule) || !has(self.maxReplicas) || "
                                              "self.schedule.all(w, w.minReplicas <= self.maxReplicas)",
                                              "!has(self.minReplicas) || self.minReplicas != 0 || "
                                              "(has(self.objective) && self.objective == 'Throughput' && "
                                              "has(self.scaleToZero))",
                                              "!has(self.scaleToZero) || (has(self.minReplicas) && "
                                              "self.minReplicas == 0)",
                                              "!has(self.scaleToZero) || !has(self.scaleToZero.wakeReplicas) || "
                                              "!has(self.maxReplicas) || self.scaleToZero.wakeReplicas <= "
                                              "self.maxReplicas",
                                              "!has(self.objective) || self.objective != 'Throughput' || "
                                              "!has(self.latencyTargetMs)",
                                              "!has(self.objective) || self.objective != 'Throughput' || "
                                              "!has(self.headroom) || self.headroom == 0.0"]
    for rule_list in embedding.values():
        for rule in rule_list:
            CEL.compile(rule)  # syntax


@pytest.mark.parametrize("kind", list(KINDS))
def test_object_defaults_pass_their_own_rules(kind):
    """The API server checks each default against the node's CEL rules as written (nested defaults not applied):
    a rule reading a field the default leaves out must guard it with has()."""
    checked = 0
    for path, node in walk(root_schema(kind)):
        if isinstance(node.get("default"), dict) and "x-kubernetes-validations" in node:
            assert cel_failures({"x-kubernetes-validations": node["x-kubernetes-validations"]}, node["default"]) == [], path
            checked += 1
    assert checked >= 4  # gpu, cache, rollout, autoscaling


GOOD = {"model": {"id": "BAAI/bge-m3", "defaultPromptName": "query"}, "gpu": {"type": "a100"},
        "engine": {"extraArgs": ["--dense-path=2_Dense"], "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}]},
        "tolerations": [{"operator": "Exists"}, {"key": "a", "operator": "Equal", "value": "b"}],
        "podLabels": {"team": "search"}, "podAnnotations": {"prometheus.io/scrape": "false"},
        "cache": {"persistentVolumeClaim": {"claimName": "c"}}, "rollout": {"maxSurge": 0, "maxUnavailable": 1},
        "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 2}}

# Cross-field mistakes: (spec change, the field both the CEL rules and pydantic must name).
BAD = [
    ({"model": {"id": "m", "defaultPrompt": "q: ", "defaultPromptName": "query"}}, ".spec.model.defaultPrompt"),
    ({"gpu": {"count": 0, "type": "a100"}}, ".spec.gpu.type"),
    ({"engine": {"extraArgs": ["--api-key=secret"]}}, ".spec.engine.extraArgs"),
    ({"engine": {"extraArgs": ["-p"]}}, ".spec.engine.extraArgs"),
    ({"engine": {"extraArgs": ["--max-batch-tokens=1"]}}, ".spec.engine.extraArgs"),
    ({"engine": {"env": [{"name": "HF_TOKEN", "value": "hf_x"}]}}, ".spec.engine.env"),
    ({"engine": {"env": [{"name": "X", "value": "1", "valueFrom": {"fieldRef": {}}}]}}, ".spec.engine.env[0]"),
    ({"tolerations": [{"key": "a", "operator": "Exists", "value": "b"}]}, ".spec.tolerations[0].value"),
    ({"tolerations": [{"value": "b"}]}, ".spec.tolerations[0].operator"),
    ({"podLabels": {"tei-operator.io/service": "x"}}, ".spec.podLabels"),
    ({"podAnnotations": {"tei-operator.io/config-hash": "x"}}, ".spec.podAnnotations"),
    ({"cache": {}}, ".spec.cache"),
    ({"cache": {"emptyDir": {}, "persistentVolumeClaim": {"claimName": "c"}}}, ".spec.cache"),
    ({"rollout": {"maxSurge": "0%", "maxUnavailable": 0}}, ".spec.rollout.maxUnavailable"),
    ({"autoscaling": {"enabled": True}}, ".spec.autoscaling.maxReplicas"),
    ({"autoscaling": {"minReplicas": 3, "maxReplicas": 2}}, ".spec.autoscaling.minReplicas"),
    ({"autoscaling": {"maxReplicas": 4, "tolerance": 0.2, "fastScaleUp": {"threshold": 1.1}}},
     ".spec.autoscaling.fastScaleUp.threshold"),
    ({"autoscaling": {"maxReplicas": 4, "schedule": [{"start": "08:00", "end": "18:00", "minReplicas": 5}]}},
     ".spec.autoscaling.schedule"),
]


def test_a_good_spec_passes_both():
    assert admit("EmbeddingService", GOOD) == []
    parse_spec("EmbeddingService", GOOD)


@pytest.mark.parametrize(("change", "field"), BAD, ids=[f for _, f in BAD])
def test_cel_and_pydantic_refuse_the_same_mistake(change, field):
    spec = {**copy.deepcopy(GOOD), **change}
    refused = admit("EmbeddingService", spec)
    assert refused and all(line.startswith(field) for line in refused), refused
    with pytest.raises(InvalidSpecError) as info:
        parse_spec("EmbeddingService", spec)
    assert any(line.startswith("spec" + field[len(".spec"):].split("[")[0]) for line in info.value.errors), (
        info.value.errors)


@pytest.mark.parametrize(("name", "ok"), [("bge-m3", True), ("a", True), ("Bge", False), ("bge.m3", False),
                                          ("9bge", False), ("b" * 64, False), ("b" * 63, True)])
def test_name_rule(name, ok):
    refused = admit("EmbeddingService", {"model": {"id": "m"}}, name=name)
    assert (refused == []) is ok, refused


def test_crds_are_one_per_kind():
    assert [c["spec"]["names"]["kind"] for c in generate_crds()] == list(KINDS)


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_pass_the_cel_rules(path):
    import yaml

    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") in KINDS:
            assert admit(doc["kind"], doc["spec"], name=doc["metadata"]["name"]) == []


def test_status_defaults_to_observed_generation_zero_so_kstatus_reads_a_new_service_as_in_progress():
    for crd in generate_crds():
        status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status["default"] == {"observedGeneration": 0}
        assert status["properties"]["observedGeneration"]["type"] == "integer"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_no_pattern_uses_a_class_escape_python_and_the_api_server_read_differently(kind):
    """Python's re reads \\s, \\d, \\w (and \\b) as Unicode classes, the API server's RE2 as ASCII ones: a pattern
    with one accepts "\\x85" (NEL) on one side and refuses it on the other (found by
    tests/integration/test_validation_property.py for spec.engine.image)."""
    import re

    bad = {path: node["pattern"] for path, node in walk(root_schema(kind))
           if "pattern" in node and re.search(r"\\[sdwbSDWB]", node["pattern"])}
    assert not bad, bad


@pytest.mark.parametrize("image, ok", [("ghcr.io/huggingface/text-embeddings-inference:89-1.9", True),
                                       ("registry.local:5000/tei@sha256:" + "a" * 64, True),
                                       ("tei\x85", False), ("tei image", False), ("t\u00e9i", False)])
def test_engine_image_is_printable_ascii_without_spaces(image, ok):
    spec = {"model": {"id": "BAAI/bge-m3"}, "engine": {"image": image}}
    if ok:
        assert parse_spec("EmbeddingService", spec).engine.image == image
    else:
        with pytest.raises(InvalidSpecError, match="spec.engine.image"):
            parse_spec("EmbeddingService", spec)


@pytest.mark.parametrize("model_id, ok", [("/data/mod\u00e8le", True), ("/data/a\x85b", True), ("/data/a b", False)])
def test_a_cache_path_model_id_refuses_ascii_whitespace_only_as_the_api_server_does(model_id, ok):
    spec = {"model": {"id": model_id}}
    if ok:
        assert parse_spec("EmbeddingService", spec).model.id == model_id
    else:
        with pytest.raises(InvalidSpecError, match="spec.model.id"):
            parse_spec("EmbeddingService", spec)
