"""Rendering a service into its Deployment, Service and PodDisruptionBudget, field by field."""

from __future__ import annotations

import copy

import yaml

from tei_operator.api import ServiceResource
from tei_operator.render import endpoint_url, render_children
from tei_operator.render.labels import selector_labels, selector_string
from tei_operator.settings import Settings

SETTINGS = Settings()


def resource(spec: dict | None = None, kind: str = "EmbeddingService", name: str = "bge-m3",
             uid: str | None = "uid-1") -> ServiceResource:
    body = {"apiVersion": "tei-operator.io/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": "search", **({"uid": uid} if uid else {})},
            "spec": spec or {"model": {"id": "BAAI/bge-m3"}, "gpu": {"type": "a100"}}}
    return ServiceResource.from_body(body)


def render(spec: dict | None = None, **kw):
    return render_children(resource(spec, **kw), SETTINGS)


def container(children) -> dict:
    (tei,) = children.deployment["spec"]["template"]["spec"]["containers"]
    return tei


def pod(children) -> dict:
    return children.deployment["spec"]["template"]["spec"]


def env(children) -> dict[str, dict]:
    return {e["name"]: e for e in container(children)["env"]}


def test_gpu_limit_from_spec_gpu():
    tei = container(render({"model": {"id": "BAAI/bge-m3"}, "gpu": {"type": "a100"},
                            "resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "16Gi"}}}))
    assert tei["resources"] == {"requests": {"cpu": "2", "memory": "8Gi"},
                                "limits": {"memory": "16Gi", "nvidia.com/gpu": "1"}}


def test_mig_resource_name():
    tei = container(render({"model": {"id": "BAAI/bge-m3"}, "gpu": {"resourceName": "nvidia.com/mig-1g.10gb"}}))
    assert tei["resources"]["limits"] == {"nvidia.com/mig-1g.10gb": "1"}


def test_cpu_service_has_no_gpu_anything():
    children = render({"model": {"id": "BAAI/bge-small-en-v1.5"}, "gpu": {"count": 0}})
    tei = container(children)
    assert tei["image"] == "ghcr.io/huggingface/text-embeddings-inference:cpu-1.9.3"
    assert "limits" not in tei["resources"]
    assert "tolerations" not in pod(children) and "affinity" not in pod(children)


def test_probes_allow_a_model_download_and_a_running_batch():
    tei = container(render())
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert tei[probe]["httpGet"] == {"path": "/health", "port": "http", "scheme": "HTTP"}
        assert tei[probe]["timeoutSeconds"] >= 5
        assert tei[probe]["failureThreshold"] > 1
    startup = tei["startupProbe"]
    assert 30 * 60 <= startup["periodSeconds"] * startup["failureThreshold"] <= 60 * 60
    # The Deployment must not be declared stuck while the startup probe still waits for the download.
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert render().deployment["spec"]["progressDeadlineSeconds"] > budget


def test_container_basics():
    children = render()
    tei = container(children)
    assert tei["name"] == "tei"
    assert tei["ports"] == [{"name": "http", "containerPort": 80, "protocol": "TCP"}]
    assert tei["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert tei["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    assert pod(children)["terminationGracePeriodSeconds"] >= 30
    assert env(children)["PORT"] == {"name": "PORT", "value": "80"}
    assert env(children)["HUGGINGFACE_HUB_CACHE"]["value"] == "/data"
    annotations = children.deployment["spec"]["template"]["metadata"]["annotations"]
    assert {k: annotations[k] for k in ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")} == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "80", "prometheus.io/path": "/metrics"}


def test_engine_and_model_become_tei_variables():
    children = render({
        "model": {"id": "Qwen/Qwen3-Embedding-0.6B", "revision": "abc123", "dtype": "float16", "pooling": "last-token",
                  "servedModelName": "qwen", "defaultPromptName": "query"},
        "engine": {"maxBatchTokens": 32768, "maxConcurrentRequests": 1024, "maxBatchRequests": 64,
                   "maxClientBatchSize": 128, "autoTruncate": False, "tokenizationWorkers": 4, "payloadLimit": 5000000,
                   "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}], "extraArgs": ["--dense-path=2_Dense_1024"]},
    })
    values = {name: e.get("value") for name, e in env(children).items()}
    assert values | {} == values  # a plain dict
    expected = {"MODEL_ID": "Qwen/Qwen3-Embedding-0.6B", "REVISION": "abc123", "DTYPE": "float16",
                "POOLING": "last-token", "SERVED_MODEL_NAME": "qwen", "DEFAULT_PROMPT_NAME": "query",
                "MAX_BATCH_TOKENS": "32768", "MAX_CONCURRENT_REQUESTS": "1024", "MAX_BATCH_REQUESTS": "64",
                "MAX_CLIENT_BATCH_SIZE": "128", "AUTO_TRUNCATE": "false", "TOKENIZATION_WORKERS": "4",
                "PAYLOAD_LIMIT": "5000000", "HF_HUB_OFFLINE": "1"}
    assert {k: values[k] for k in expected} == expected
    assert "DEFAULT_PROMPT" not in values
    assert container(children)["args"] == ["--dense-path=2_Dense_1024"]


def test_reranker_has_no_embedding_variables_and_its_own_batch_default():
    children = render({"model": {"id": "BAAI/bge-reranker-v2-m3"}}, kind="RerankerService", name="rr")
    values = {name: e.get("value") for name, e in env(children).items()}
    assert values["MAX_BATCH_TOKENS"] == "8192"
    assert not {"POOLING", "DEFAULT_PROMPT", "DEFAULT_PROMPT_NAME"} & set(values)
    assert children.deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "reranker"


def test_secrets_are_referenced_never_copied():
    spec = {"model": {"id": "meta/gated", "tokenSecretRef": {"name": "hf-token"}},
            "engine": {"apiKeySecretRef": {"name": "tei-key", "key": "api-key"}}}
    children = render(spec)
    variables = env(children)
    assert variables["HF_TOKEN"] == {"name": "HF_TOKEN",
                                     "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}
    assert variables["API_KEY"] == {"name": "API_KEY",
                                    "valueFrom": {"secretKeyRef": {"name": "tei-key", "key": "api-key"}}}
    # TEI logs its arguments (API key included) at start: the router's target is lowered when a key is set.
    assert variables["LOG_LEVEL"]["value"] == "info,text_embeddings_router=warn"
    assert "args" not in container(children)
    text = yaml.safe_dump_all(children.all())
    for secret_word in ("hf_", "Bearer", "--api-key", "--hf-token"):
        assert secret_word not in text
    # Without a key, TEI keeps its normal log level; a user's LOG_LEVEL is never duplicated.
    assert "LOG_LEVEL" not in env(render({"model": {"id": "BAAI/bge-m3"}}))
    mine = env(render({**spec, "engine": {**spec["engine"], "env": [{"name": "LOG_LEVEL", "value": "debug"}]}}))
    assert mine["LOG_LEVEL"]["value"] == "debug"
    assert [e["name"] for e in container(render(spec))["env"]].count("LOG_LEVEL") == 1


def test_gpu_toleration_added_once_and_merged_with_the_users():
    gpu_toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    spot = {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    assert pod(render())["tolerations"] == [gpu_toleration]
    merged = pod(render({"model": {"id": "m"}, "tolerations": [spot, gpu_toleration, spot]}))["tolerations"]
    assert merged == [spot, gpu_toleration]
    assert pod(render({"model": {"id": "m"}, "tolerations": [spot]}))["tolerations"] == [spot, gpu_toleration]
    # A toleration of every taint already covers the GPU taint.
    everything = {"operator": "Exists"}
    assert pod(render({"model": {"id": "m"}, "tolerations": [everything]}))["tolerations"] == [everything]


def test_cache_empty_dir_or_pvc():
    assert pod(render())["volumes"] == [{"name": "data", "emptyDir": {}}]
    sized = render({"model": {"id": "m"}, "cache": {"emptyDir": {"sizeLimit": "20Gi"}}})
    assert pod(sized)["volumes"] == [{"name": "data", "emptyDir": {"sizeLimit": "20Gi"}}]
    pvc = render({"model": {"id": "m"}, "cache": {"persistentVolumeClaim": {"claimName": "hf-cache"}}})
    assert pod(pvc)["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "hf-cache"}}]


def test_pdb_only_with_more_than_one_replica():
    assert render({"model": {"id": "m"}, "replicas": 1}).pdb is None
    children = render({"model": {"id": "m"}, "replicas": 2})
    assert children.pdb["spec"]["maxUnavailable"] == 1
    assert children.pdb["spec"]["selector"] == {"matchLabels": selector_labels(resource())}
    assert [c["kind"] for c in children.all()] == ["Deployment", "Service", "PodDisruptionBudget"]
    autoscaled = {"model": {"id": "m"}, "replicas": 5, "autoscaling": {"enabled": True, "maxReplicas": 8}}
    assert render(autoscaled).pdb is None  # minReplicas 1: spec.replicas does not count while autoscaling
    autoscaled["autoscaling"]["minReplicas"] = 2
    assert render(autoscaled).pdb is not None


def test_replicas_absent_when_autoscaling():
    assert render({"model": {"id": "m"}, "replicas": 3}).deployment["spec"]["replicas"] == 3
    autoscaled = render({"model": {"id": "m"}, "replicas": 3, "autoscaling": {"enabled": True, "maxReplicas": 8}})
    assert "replicas" not in autoscaled.deployment["spec"]


def test_owner_references_on_every_child():
    children = render({"model": {"id": "m"}, "replicas": 2})
    for child in children.all():
        assert child["metadata"]["ownerReferences"] == [{
            "apiVersion": "tei-operator.io/v1alpha1", "kind": "EmbeddingService", "name": "bge-m3", "uid": "uid-1",
            "controller": True, "blockOwnerDeletion": True}]
        assert child["metadata"]["namespace"] == "search"
    for child in render({"model": {"id": "m"}, "replicas": 2}, uid=None).all():
        assert "ownerReferences" not in child["metadata"]


def test_labels_and_stable_selector():
    children = render({"model": {"id": "m"}, "podLabels": {"team": "search"}})
    selector = {"app.kubernetes.io/name": "text-embeddings-inference", "app.kubernetes.io/instance": "bge-m3",
                "tei-operator.io/service": "bge-m3"}
    assert children.deployment["spec"]["selector"] == {"matchLabels": selector}
    assert children.service["spec"]["selector"] == selector
    template_labels = children.deployment["spec"]["template"]["metadata"]["labels"]
    assert template_labels == {**selector, "app.kubernetes.io/component": "embedding",
                               "app.kubernetes.io/managed-by": "tei-operator", "team": "search"}
    for child in children.all():
        assert selector.items() <= child["metadata"]["labels"].items()
    other = render({"model": {"id": "other/model"}, "gpu": {"type": "h100"}, "replicas": 4})
    assert other.deployment["spec"]["selector"] == children.deployment["spec"]["selector"]
    assert selector_string(resource()) == ("app.kubernetes.io/instance=bge-m3,"
                                           "app.kubernetes.io/name=text-embeddings-inference,"
                                           "tei-operator.io/service=bge-m3")


def test_rendering_is_deterministic_and_the_hash_follows_the_template():
    first, second = render(), render()
    assert first.all() == second.all()
    key = "tei-operator.io/config-hash"
    annotations = lambda c: c.deployment["spec"]["template"]["metadata"]["annotations"]  # noqa: E731
    assert len(annotations(first)[key]) == 16
    changed = render({"model": {"id": "BAAI/bge-m3"}, "gpu": {"type": "a100"}, "engine": {"maxBatchTokens": 1024}})
    assert annotations(changed)[key] != annotations(first)[key]
    # Fields outside the pod template (replicas, the Service) change no hash: no needless rollout.
    outside = render({"model": {"id": "BAAI/bge-m3"}, "gpu": {"type": "a100"}, "replicas": 3,
                      "service": {"port": 8080, "annotations": {"a": "b"}}})
    assert annotations(outside)[key] == annotations(first)[key]


def test_service_and_endpoint():
    children = render({"model": {"id": "m"}, "service": {"type": "LoadBalancer", "port": 8080,
                                                        "annotations": {"lb": "internal"}}})
    service = children.service
    assert service["metadata"]["name"] == "bge-m3"
    assert service["metadata"]["annotations"] == {"lb": "internal"}
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    assert endpoint_url(resource({"model": {"id": "m"}, "service": {"port": 8080}})) == \
        "http://bge-m3.search.svc:8080"


def test_rollout_strategy_and_history():
    deployment = render({"model": {"id": "m"}, "rollout": {"maxSurge": 0, "maxUnavailable": 1}}).deployment
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate",
                                              "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    assert 1 <= deployment["spec"]["revisionHistoryLimit"] <= 5
    default = render().deployment["spec"]["strategy"]["rollingUpdate"]
    assert default == {"maxSurge": 1, "maxUnavailable": 0}


def test_pass_through_pod_fields():
    spec = {"model": {"id": "m"}, "nodeSelector": {"pool": "gpu"}, "priorityClassName": "inference",
            "serviceAccountName": "tei", "podSecurityContext": {"fsGroup": 1000},
            "securityContext": {"allowPrivilegeEscalation": False}, "podAnnotations": {"prometheus.io/scrape": "false"},
            "engine": {"imagePullPolicy": "Always", "imagePullSecrets": [{"name": "regcred"}]}}
    children = render(spec)
    spec_ = pod(children)
    assert spec_["nodeSelector"] == {"pool": "gpu"}
    assert spec_["priorityClassName"] == "inference" and spec_["serviceAccountName"] == "tei"
    # The user's security context keys are laid over the secure defaults, key by key.
    assert spec_["securityContext"] == {"fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}}
    assert spec_["imagePullSecrets"] == [{"name": "regcred"}]
    assert container(children)["securityContext"] == {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
        "seccompProfile": {"type": "RuntimeDefault"}}
    assert container(children)["imagePullPolicy"] == "Always"
    # A user may turn scraping off for a pod; the operator's own hash annotation stays.
    annotations = children.deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "false" and "tei-operator.io/config-hash" in annotations


def test_render_does_not_mutate_the_spec():
    res = resource({"model": {"id": "m"}, "tolerations": [{"key": "a", "operator": "Exists"}],
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [{"key": "z", "operator": "Exists"}]}]}}},
                    "gpu": {"type": "l4"}})
    before = copy.deepcopy(res.spec.to_wire())
    render_children(res, SETTINGS)
    render_children(res, SETTINGS)
    assert res.spec.to_wire() == before


def test_the_deployment_is_stamped_with_the_operator_version_and_a_hash_of_its_manifest():
    from importlib import metadata

    from tei_operator.render.stamp import manifest_hash, stamp_of

    children = render()
    annotations = children.deployment["metadata"]["annotations"]
    assert annotations["tei-operator.io/rendered-by"] == metadata.version("tei-operator")
    assert annotations["tei-operator.io/rendered-hash"] == manifest_hash(children.deployment)
    # In the Deployment's own metadata only: an operator release must not restart every pod.
    assert not {"tei-operator.io/rendered-by", "tei-operator.io/rendered-hash"} & set(
        children.deployment["spec"]["template"]["metadata"]["annotations"])
    assert "annotations" not in children.service["metadata"]
    # The hash follows what the operator renders (here: another default TEI version), not only the spec.
    newer = render_children(resource(), Settings(tei_version="1.9.4"))
    assert stamp_of(newer.deployment).hash != stamp_of(children.deployment).hash
    assert stamp_of(newer.deployment).version == stamp_of(children.deployment).version
    assert stamp_of(render().deployment) == stamp_of(children.deployment)
    assert stamp_of(children.service) is None
