"""Which operator rendered a Deployment, and a hash of what it rendered.

After an operator upgrade (new probes, a new default TEI version) the re-applied Deployments change although
nobody touched their services. Without a record of what the previous operator rendered, that looks exactly like a
hand edit being reverted. So every Deployment carries, in its own metadata (not the pod template: stamping the
template would restart every pod on each operator release), the operator version that rendered it and a hash of the
rendered manifest. The controller compares the stamp on the live object with the new render's: a different stamp
with an unchanged spec means the operator's rendering changed, not the object behind its back.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from ..json_tree import without_annotations

RENDERED_BY_ANNOTATION = "tei-operator.io/rendered-by"
RENDER_HASH_ANNOTATION = "tei-operator.io/rendered-hash"
STAMP_ANNOTATIONS = (RENDERED_BY_ANNOTATION, RENDER_HASH_ANNOTATION)
DISTRIBUTION = "tei-operator"
UNKNOWN_VERSION = "unknown"


@dataclasses.dataclass(frozen=True)
class RenderStamp:
    """The operator version that rendered a manifest and the hash of that manifest."""

    version: str
    hash: str


@functools.lru_cache(maxsize=1)
def operator_version() -> str:
    """The installed operator's version (the package metadata, read once, on first use, never at import)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return UNKNOWN_VERSION


def manifest_hash(manifest: Mapping[str, Any]) -> str:
    """A short stable hash of a manifest, leaving out the stamp annotations themselves."""
    body = without_annotations(manifest, STAMP_ANNOTATIONS, drop_empty=True)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def stamp(manifest: dict[str, Any], version: str) -> dict[str, Any]:
    """Annotate `manifest` (in place, and return it) with `version` and the hash of its content."""
    digest = manifest_hash(manifest)
    annotations = manifest.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[RENDERED_BY_ANNOTATION] = version
    annotations[RENDER_HASH_ANNOTATION] = digest
    return manifest


def stamp_of(obj: Mapping[str, Any] | None) -> RenderStamp | None:
    """The stamp an object carries, or None when it has none (rendered before stamps existed, or not by us)."""
    annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
    version, digest = annotations.get(RENDERED_BY_ANNOTATION), annotations.get(RENDER_HASH_ANNOTATION)
    if version is None and digest is None:
        return None
    return RenderStamp(str(version or UNKNOWN_VERSION), str(digest or ""))
