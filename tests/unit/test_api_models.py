"""The pydantic models: defaults, strictness, and errors that name the field by its full camelCase path."""

from __future__ import annotations

import pytest

from tei_operator.api import KINDS, InvalidSpecError, ServiceResource, parse_spec
from tei_operator.api.engine import RESERVED_ENV

MODEL = {"id": "BAAI/bge-m3"}


def errors_of(spec: dict, kind: str = "EmbeddingService") -> list[str]:
    with pytest.raises(InvalidSpecError) as info:
        parse_spec(kind, spec)
    assert str(info.value) == "; ".join(info.value.errors)
    return info.value.errors


def test_defaults_follow_the_issue():
    spec = parse_spec("EmbeddingService", {"model": MODEL})
    assert spec.gpu.count == 1 and spec.gpu.type is None and spec.gpu.resource_name == "nvidia.com/gpu"
    assert spec.replicas == 1
    assert spec.service.type == "ClusterIP" and spec.service.port == 80
    assert spec.cache.empty_dir is not None and spec.cache.persistent_volume_claim is None
    assert (spec.rollout.max_surge, spec.rollout.max_unavailable) == (1, 0)
    assert spec.autoscaling.enabled is False
    assert spec.engine.max_batch_tokens == 16384  # TEI's own default


def test_reranker_batches_fewer_tokens_by_default():
    embedding = parse_spec("EmbeddingService", {"model": MODEL})
    reranker = parse_spec("RerankerService", {"model": {"id": "BAAI/bge-reranker-v2-m3"}})
    assert reranker.engine.max_batch_tokens < embedding.engine.max_batch_tokens


def test_wire_form_round_trips():
    raw = {
        "model": {"id": "Qwen/Qwen3-Embedding-0.6B", "pooling": "last-token", "tokenSecretRef": {"name": "hf"}},
        "gpu": {"count": 1, "type": "l4"},
        "engine": {"maxBatchTokens": 32768, "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}]},
        "resources": {"requests": {"cpu": "500m", "memory": "4Gi", "ephemeral-storage": 10}},
        "rollout": {"maxSurge": "25%", "maxUnavailable": 0},
        "cache": {"persistentVolumeClaim": {"claimName": "hf-cache"}},
        "autoscaling": {"enabled": True, "maxReplicas": 4},
    }
    spec = parse_spec("EmbeddingService", raw)
    wire = spec.to_wire()
    assert wire["resources"]["requests"]["ephemeral-storage"] == 10
    assert wire["model"]["tokenSecretRef"] == {"name": "hf", "key": "token"}
    assert parse_spec("EmbeddingService", wire) == spec


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"model": MODEL, "gpu": {"count": -1}}, "spec.gpu.count: must be >= 0 (got -1)"),
        ({"model": MODEL, "gpu": {"count": 2}}, "spec.gpu.count: must be <= 1 (got 2)"),
        ({"model": MODEL, "gpu": {"count": "1"}}, "spec.gpu.count: must be an integer (got '1')"),
        ({"model": MODEL, "gpu": {"type": "v100"}}, "spec.gpu.type: must be one of: 't4', 'a100'"),
        ({"model": MODEL, "gpu": {"count": 0, "type": "a100"}}, "spec.gpu.type: type applies only when count > 0"),
        ({"model": {}}, "spec.model.id: is required"),
        ({"gpu": {}}, "spec.model: is required"),
        ({"model": {"id": "not a model id"}}, "spec.model.id: must match the pattern"),
        ({"model": {**MODEL, "dtype": "bfloat16"}}, "spec.model.dtype: must be one of: 'float16' or 'float32'"),
        ({"model": {**MODEL, "defaultPrompt": "q: ", "defaultPromptName": "query"}},
         "spec.model.defaultPrompt: defaultPromptName and defaultPrompt are mutually exclusive"),
        ({"model": MODEL, "replica": 2}, "spec.replica: unknown field (allowed: model, gpu, engine, replicas,"),
        ({"model": MODEL, "replicas": -1}, "spec.replicas: must be >= 0"),
        ({"model": MODEL, "service": {"port": 0}}, "spec.service.port: must be >= 1"),
        ({"model": MODEL, "service": {"port": 65536}}, "spec.service.port: must be <= 65535"),
        ({"model": MODEL, "service": {"type": "ExternalName"}}, "spec.service.type: must be one of"),
        ({"model": MODEL, "engine": {"imagePullPolicy": "Sometimes"}}, "spec.engine.imagePullPolicy: must be one of"),
        ({"model": MODEL, "engine": {"maxBatchTokens": 0}}, "spec.engine.maxBatchTokens: must be >= 1"),
        ({"model": MODEL, "engine": {"extraArgs": ["--dense-path=2_Dense", "--api-key=s3cret"]}},
         "spec.engine.extraArgs[1]: flag --api-key is not allowed here"),
        ({"model": MODEL, "engine": {"extraArgs": ["--max-batch-tokens", "10"]}},
         "spec.engine.extraArgs[0]: flag --max-batch-tokens is not allowed here"),
        ({"model": MODEL, "engine": {"env": [{"name": "API_KEY", "value": "s3cret"}]}},
         "spec.engine.env[0].name: API_KEY is set by the operator"),
        ({"model": MODEL, "engine": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}},
         "spec.engine.env[1].name: duplicate variable A"),
        ({"model": MODEL, "cache": {}}, "spec.cache.emptyDir: set exactly one of emptyDir, persistentVolumeClaim or managed"),
        ({"model": MODEL, "cache": {"emptyDir": {}, "persistentVolumeClaim": {"claimName": "c"}}},
         "spec.cache.emptyDir: set exactly one"),
        ({"model": MODEL, "cache": {"emptyDir": {"sizeLimit": "lots"}}}, "spec.cache.emptyDir.sizeLimit: must be a quantity"),
        ({"model": MODEL, "rollout": {"maxSurge": 0, "maxUnavailable": 0}},
         "spec.rollout.maxUnavailable: maxSurge and maxUnavailable must not both be zero"),
        ({"model": MODEL, "rollout": {"maxSurge": -1}}, "spec.rollout.maxSurge: must be >= 0"),
        ({"model": MODEL, "autoscaling": {"enabled": True}},
         "spec.autoscaling.maxReplicas: is required when enabled is true"),
        ({"model": MODEL, "autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
         "spec.autoscaling.minReplicas: must be less than or equal to maxReplicas"),
        ({"model": MODEL, "resources": {"limits": {"nvidia.com/gpu": 2}}},
         "spec.resources.limits.nvidia.com/gpu: unknown field (allowed: cpu, memory, ephemeral-storage)"),
        ({"model": MODEL, "tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]},
         "spec.tolerations[0].value: value must be empty when operator is Exists"),
        ({"model": MODEL, "podLabels": {"app.kubernetes.io/instance": "other"}},
         "spec.podLabels.app.kubernetes.io/instance: is managed by the operator"),
        ({"model": MODEL, "podAnnotations": {"tei-operator.io/config-hash": "x"}},
         "spec.podAnnotations.tei-operator.io/config-hash: the tei-operator.io/ prefix"),
        ({"model": MODEL, "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "Near"}]}]}}}},
         "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
         ".matchExpressions[0].operator: must be one of"),
        ({"model": MODEL, "engine": {"autoTruncate": "true"}}, "spec.engine.autoTruncate: must be true or false"),
    ],
)
def test_bad_input_names_the_field(spec, expected):
    errors = errors_of(spec)
    assert any(line.startswith(expected) for line in errors), errors


def test_embedding_only_fields_are_refused_on_a_reranker():
    errors = errors_of({"model": {"id": "BAAI/bge-reranker-v2-m3", "pooling": "cls"}}, kind="RerankerService")
    assert errors == ["spec.model.pooling: unknown field (allowed: id, revision, dtype, servedModelName, "
                      "tokenSecretRef)"]


def test_every_reserved_env_name_is_refused():
    for name in RESERVED_ENV:
        errors = errors_of({"model": MODEL, "engine": {"env": [{"name": name, "value": "x"}]}})
        assert errors == [f"spec.engine.env[0].name: {name} is set by the operator from other fields; use the "
                          "field instead"]


def test_several_errors_are_all_reported():
    errors = errors_of({"model": {"id": "BAAI/bge-m3", "dtype": "int8"}, "gpu": {"count": 3}, "replicas": "2"})
    assert [e.split(":")[0] for e in errors] == ["spec.model.dtype", "spec.gpu.count", "spec.replicas"]


def test_unknown_kind_and_non_object_spec():
    with pytest.raises(InvalidSpecError, match="kind: must be one of: EmbeddingService, RerankerService"):
        parse_spec("Embedding", {"model": MODEL})
    with pytest.raises(InvalidSpecError, match="spec: must be an object"):
        parse_spec("EmbeddingService", None)


def test_resource_from_body():
    body = {
        "apiVersion": "tei-operator.io/v1alpha1", "kind": "RerankerService",
        "metadata": {"name": "rr", "namespace": "search", "uid": "u-1", "generation": 3},
        "spec": {"model": {"id": "BAAI/bge-reranker-v2-m3"}},
    }
    resource = ServiceResource.from_body(body)
    assert (resource.kind, resource.name, resource.namespace, resource.uid, resource.generation) == (
        "RerankerService", "rr", "search", "u-1", 3)
    assert resource.component == "reranker"
    assert ServiceResource.from_body({**body, "metadata": {"name": "rr"}}).namespace == "default"


@pytest.mark.parametrize("name", ["Bge", "bge.m3", "1bge", "bge-", "b" * 64])
def test_resource_name_must_be_a_dns_label(name):
    with pytest.raises(InvalidSpecError, match=r"metadata.name: must be a DNS-1035 label"):
        ServiceResource.from_body({"kind": "EmbeddingService", "metadata": {"name": name}, "spec": {"model": MODEL}})


def test_kinds_table():
    assert {k: (i.plural, i.short_names, i.component) for k, i in KINDS.items()} == {
        "EmbeddingService": ("embeddingservices", ("embsvc",), "embedding"),
        "RerankerService": ("rerankerservices", ("rrsvc",), "reranker"),
    }


def test_a_gpu_type_with_a_mig_resource_is_refused_with_the_way_out():
    # GPU feature discovery labels a MIG node's product `<product>-MIG-<profile>`: no type's product list matches.
    errors = errors_of({"model": MODEL, "gpu": {"type": "a100", "resourceName": "nvidia.com/mig-1g.10gb"}})
    assert errors == ["spec.gpu.type: gpu.type selects whole GPUs by product; with a MIG resourceName leave type "
                      "unset and use nodeSelector/affinity"]
    # Either alone is fine.
    assert parse_spec("EmbeddingService", {"model": MODEL, "gpu": {"resourceName": "nvidia.com/mig-1g.10gb"}})
    assert parse_spec("EmbeddingService", {"model": MODEL, "gpu": {"type": "a100"}}).gpu.type == "a100"


def test_the_mig_rule_is_also_a_cel_rule_of_the_crd():
    from tei_operator.api.gpu_spec import MIG_WITH_TYPE_MESSAGE
    from tei_operator.api.crd import generate_crds

    for crd in generate_crds():
        gpu = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["gpu"]
        rules = {r["message"]: r for r in gpu["x-kubernetes-validations"]}
        assert rules[MIG_WITH_TYPE_MESSAGE]["fieldPath"] == ".type"
        assert "nvidia.com/mig-" in rules[MIG_WITH_TYPE_MESSAGE]["rule"]


def test_a_field_set_to_null_means_unset_as_the_api_server_stores_it():
    # The API server prunes null fields before defaulting (found by tests/integration/test_validation_property.py:
    # `gpu: {count: null}` was accepted by kube-apiserver and refused by the models).
    from tei_operator.api import parse_spec

    spec = parse_spec("EmbeddingService", {"model": {"id": "BAAI/bge-m3", "revision": None}, "gpu": {"count": None},
                                           "engine": {"extraArgs": ["--dense-path=2_Dense"]}})
    assert spec.gpu.count == parse_spec("EmbeddingService", {"model": {"id": "m"}}).gpu.count
    assert spec.model.revision is None
