"""Blue/green model changes, the render side: which model a Deployment serves, what its name is, and the children
retargeted at one Deployment (pure functions, no API calls).

A service's Deployments are told apart by `app.kubernetes.io/instance`, which is the Deployment's name: the one
named like the service (every Deployment before blue/green existed, and a new service's first) carries
`instance: <service>`, exactly the selector it was created with, so an upgraded operator takes it over without
changing its pod template (no restart). A Deployment for a new model is named `<service>-<model hash>` and its pods
carry `instance: <service>-<model hash>` and `tei-operator.io/model-hash`. The Service (and the PDB) select the
active Deployment's instance; the NetworkPolicy selects every pod of the service once it has another Deployment.
A Deployment's selector is immutable, a Service's and a PDB's are not: only those two move at a switch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from ..api.model import EmbeddingModelSpec
from ..api.resource import ServiceResource
from ..api.rollout import active_deployment
from ..api.spec import ServiceSpec
from ..settings import Settings
from .children import Children, render_children
from .labels import SERVICE_LABEL
from .pod import CONTAINER_NAME
from .stamp import operator_version, stamp

INSTANCE_LABEL = "app.kubernetes.io/instance"
MODEL_HASH_LABEL = "tei-operator.io/model-hash"
# The model identity a Deployment was rendered for (JSON), in its metadata (not the pod template: no restart). It is
# what the operator compares, so a hand edit of the TEI env is reverted as drift, not taken for a model change.
MODEL_ANNOTATION = "tei-operator.io/model"
# Set on a Deployment when the Service switched away from it (RFC 3339): it is deleted drainSeconds later.
RETIRED_AT_ANNOTATION = "tei-operator.io/retired-at"
MODEL_HASH_CHARS = 8
NAME_MAX = 63  # the name is also the instance label's value

# What the served embeddings depend on, as (identity key, TEI env variable). Everything else (batching, image,
# resources) changes how fast vectors come, not which: such changes roll in place whatever modelChange says.
IDENTITY_ENV = (("id", "MODEL_ID"), ("revision", "REVISION"), ("dtype", "DTYPE"), ("pooling", "POOLING"),
                ("defaultPromptName", "DEFAULT_PROMPT_NAME"), ("defaultPrompt", "DEFAULT_PROMPT"))


def model_identity(spec: ServiceSpec) -> dict[str, str]:
    """What the spec's embeddings depend on (unset fields left out)."""
    model = spec.model
    values: dict[str, Any] = {"id": model.id, "revision": model.revision, "dtype": model.dtype}
    if isinstance(model, EmbeddingModelSpec):
        values.update(pooling=model.pooling, defaultPromptName=model.default_prompt_name,
                      defaultPrompt=model.default_prompt)
    return {k: str(v) for k, v in values.items() if v is not None}


def _tei_env(deployment: Mapping[str, Any]) -> dict[str, str]:
    pod = (((deployment.get("spec") or {}).get("template") or {}).get("spec") or {})
    containers = pod.get("containers") or []
    container = next((c for c in containers if c.get("name") == CONTAINER_NAME), containers[0] if containers else {})
    return {e["name"]: str(e["value"]) for e in container.get("env") or [] if "name" in e and "value" in e}


def deployment_identity(deployment: Mapping[str, Any]) -> dict[str, str]:
    """The model identity a live Deployment was rendered for (its tei-operator.io/model annotation), or, for one
    rendered before blue/green existed, read from its TEI container's environment."""
    recorded = ((deployment.get("metadata") or {}).get("annotations") or {}).get(MODEL_ANNOTATION)
    if recorded:
        try:
            value = json.loads(recorded)
        except ValueError:
            value = None
        if isinstance(value, dict) and value.get("id"):
            return {str(k): str(v) for k, v in value.items()}
    env = _tei_env(deployment)
    return {key: env[var] for key, var in IDENTITY_ENV if var in env}


def identity_annotation(identity: Mapping[str, str]) -> str:
    return json.dumps(dict(identity), sort_keys=True, separators=(",", ":"))


def model_hash(identity: Mapping[str, str]) -> str:
    """A short stable hash of a model identity."""
    canonical = json.dumps(dict(identity), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:MODEL_HASH_CHARS]


def describe_model(identity: Mapping[str, str]) -> str:
    """`id@revision` (or the id alone when unpinned), plus the other identity fields that are set."""
    text = identity.get("id", "?") + (f"@{identity['revision']}" if identity.get("revision") else "")
    extra = [f"{k}={v}" for k, v in identity.items() if k not in ("id", "revision")]
    return f"{text} ({', '.join(extra)})" if extra else text


def deployment_name(service_name: str, identity: Mapping[str, str]) -> str:
    """`<service>-<model hash>`; a service name too long for that is cut, and the suffix then hashes the full
    service name too, so two long names sharing a prefix still get different Deployments."""
    digest = model_hash(identity)
    if len(service_name) + 1 + MODEL_HASH_CHARS <= NAME_MAX:
        return f"{service_name}-{digest}"
    digest = hashlib.sha256(f"{service_name}\0{digest}".encode()).hexdigest()[:MODEL_HASH_CHARS]
    return f"{service_name[:NAME_MAX - 1 - MODEL_HASH_CHARS].rstrip('-')}-{digest}"


def serving_selector(service_name: str, selector: Mapping[str, str], active: str) -> dict[str, str]:
    """The Service's (and PDB's) selector: the service's selector labels with the active Deployment's instance."""
    out = dict(selector)
    out[INSTANCE_LABEL] = active
    out[SERVICE_LABEL] = service_name
    return out


def selector_string(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def retarget(children: Children, service_name: str, *, deployment: str, active: str,
             identity: Mapping[str, str]) -> Children:
    """The children with the Deployment named `deployment` (serving `identity`) and the Service and PDB selecting
    `active`. Every Deployment records its model identity in its metadata. The one named like the service keeps the
    pod template and selector as rendered (no restart of a Deployment created before blue/green existed); any other
    gets its own instance label and the model hash."""
    out = children.copy()
    dep = out.deployment
    dep["metadata"].setdefault("annotations", {})[MODEL_ANNOTATION] = identity_annotation(identity)
    if deployment != service_name:
        meta, spec = dep["metadata"], dep["spec"]
        template_labels = spec["template"]["metadata"]["labels"]
        meta["name"] = deployment
        for labels in (meta["labels"], spec["selector"]["matchLabels"], template_labels):
            labels[INSTANCE_LABEL] = deployment
        digest = model_hash(identity)
        meta["labels"][MODEL_HASH_LABEL] = template_labels[MODEL_HASH_LABEL] = digest
        for constraint in spec["template"]["spec"].get("topologySpreadConstraints") or []:
            match = (constraint.get("labelSelector") or {}).get("matchLabels") or {}
            if match.get(INSTANCE_LABEL) == service_name and match.get(SERVICE_LABEL) == service_name:
                match[INSTANCE_LABEL] = deployment
    stamp(dep, operator_version())  # the stamp hashes the manifest as applied
    out.service["spec"]["selector"] = serving_selector(service_name, out.service["spec"]["selector"], active)
    if out.pdb is not None:
        out.pdb["spec"]["selector"]["matchLabels"] = serving_selector(
            service_name, out.pdb["spec"]["selector"]["matchLabels"], active)
    if out.network_policy is not None and (deployment != service_name or active != service_name):
        # Every pod of the service once it has more than the Deployment named like it (the candidate's too: the
        # operator reads its /info, clients reach it after the switch). Left as rendered otherwise, so an upgrade
        # does not touch the NetworkPolicy either.
        out.network_policy["spec"]["podSelector"]["matchLabels"].pop(INSTANCE_LABEL, None)
    return out


def render_as_stored(resource: ServiceResource, settings: Settings, status: Mapping[str, Any] | None) -> Children:
    """The children as the operator applies them for a service as stored (`tei-operator render` of `kubectl get -o
    yaml`): the Deployment the spec renders to is the candidate during a switch, else the serving one
    (status.rollout), and the Service selects the serving one."""
    rollout = (status or {}).get("rollout") or {}
    active = active_deployment(resource.name, status)
    target = (rollout.get("candidate") or {}).get("deployment") or active
    return retarget(render_children(resource, settings), resource.name, deployment=target, active=active,
                    identity=model_identity(resource.spec))
