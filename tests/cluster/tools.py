"""Where the control-plane binaries live: built by hack/build-tools.sh into a cache outside the repository."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO / "hack" / "versions.env"
BUILD_SCRIPT = REPO / "hack" / "build-tools.sh"


def cache_dir() -> Path:
    return Path(os.environ.get("TEI_OPERATOR_CACHE", Path.home() / ".cache" / "tei-operator"))


def versions() -> dict[str, str]:
    out = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            value = value.strip()
            if value.startswith("${") and ":-" in value:  # KEY=${KEY:-default}: the environment wins, as in bash
                value = os.environ.get(key.strip()) or value[value.index(":-") + 2 : -1]
            out[key.strip()] = value
    return out


_COMPONENT_VERSION = {
    "etcd": "ETCD_VERSION",
    "kube-apiserver": "KUBERNETES_VERSION",
    "kube-controller-manager": "KUBERNETES_VERSION",
    "kube-scheduler": "KUBERNETES_VERSION",
    "kubectl": "KUBERNETES_VERSION",
    "kwok": "KWOK_VERSION",
    "helm": "HELM_VERSION",
    "crane": "CRANE_VERSION",
    "actionlint": "ACTIONLINT_VERSION",
}
# Tools whose cached file name carries a build revision after the version (hack/versions.env says why).
_COMPONENT_BUILD = {"helm": "HELM_BUILD"}


def binary(name: str) -> Path:
    """Path of a built tool; raises FileNotFoundError naming the command that builds it."""
    pinned = versions()
    version = pinned[_COMPONENT_VERSION[name]]
    if name in _COMPONENT_BUILD:
        version += f"-{pinned[_COMPONENT_BUILD[name]]}"
    path = cache_dir() / "bin" / f"{name}-{version}"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `hack/build-tools.sh` (or `make tools`) first")
    return path


def ensure_built() -> None:
    """Runs hack/build-tools.sh (a no-op in about a second when everything is cached)."""
    subprocess.run(["bash", str(BUILD_SCRIPT)], check=True)
