"""hack/build-tools.sh: idempotent on a warm cache, safe to run twice at once, clear when the proxy refuses, and
its tools built like their releases (they print the release's version, helm knows a current Kubernetes version)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.cluster import tools

COMPONENTS = ("etcd", "kwok", "helm", "kubernetes", "crane", "actionlint")


def run_build(*components: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(["bash", str(tools.BUILD_SCRIPT), *components], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})


def test_two_concurrent_warm_runs_both_find_the_cache_quickly():
    tools.ensure_built()  # the cache is warm from here on
    t0 = time.monotonic()
    first, second = run_build(), run_build()
    out1, _ = first.communicate(timeout=120)
    out2, _ = second.communicate(timeout=120)
    elapsed = time.monotonic() - t0
    assert first.returncode == 0, out1
    assert second.returncode == 0, out2
    for out in (out1, out2):
        for component in COMPONENTS:
            assert f"{component} " in out and "cached" in out, out
        assert "building" not in out, out
    assert elapsed < 30, f"a warm run should take seconds, took {elapsed:.1f}s"


def test_a_version_the_proxy_refuses_fails_naming_module_and_version(tmp_path):
    proc = run_build("kwok", env={"KWOK_VERSION": "v0.0.999", "TEI_OPERATOR_CACHE": str(tmp_path)})
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "sigs.k8s.io/kwok" in out and "v0.0.999" in out, out
    assert "refused" in out, out
    assert not (tmp_path / "bin" / "kwok-v0.0.999").exists()


def test_an_unknown_component_is_refused_with_the_allowed_names():
    proc = run_build("kubelet")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "unknown component 'kubelet'" in out and "etcd kwok helm kubernetes crane actionlint" in out



# ---------------------------------------------------------------- built like their releases

def run(*cmd: str | Path) -> str:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{cmd} failed: {result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def pinned() -> dict[str, str]:
    tools.ensure_built()
    return tools.versions()


def test_helm_reports_the_release_it_was_built_from(pinned):
    info = run(tools.binary("helm"), "version", "--template", "{{.Version}} {{.GitTreeState}} commit={{.GitCommit}}")
    assert info == f"{pinned['HELM_VERSION']} clean commit={pinned['HELM_GIT_COMMIT']}"
    assert tools.binary("helm").name == f"helm-{pinned['HELM_VERSION']}-{pinned['HELM_BUILD']}"


def test_helm_template_renders_the_chart_without_kube_version():
    out = run(tools.binary("helm"), "template", "t", tools.REPO / "charts" / "tei-operator")
    kinds = re.findall(r"^kind: (\w+)$", out, re.M)
    assert "Deployment" in kinds and "CustomResourceDefinition" in kinds, kinds


def test_helm_assumes_the_kubernetes_version_of_its_client_go(tmp_path):
    """As helm's Makefile does: the default is v1.N.0 for the k8s.io/client-go v0.N.x it was built with (read here
    from the binary's own module list), not helm's compiled-in fallback v1.20.0."""
    helm = tools.binary("helm")
    client_go = re.search(r"^\s+dep\s+k8s\.io/client-go\s+v0\.(\d+)\.", run("go", "version", "-m", helm), re.M)
    assert client_go, "helm's module list names no k8s.io/client-go"
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.0.1\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\n"
        "data: {kube: '{{ .Capabilities.KubeVersion.Version }}'}\n")
    out = run(helm, "template", "t", chart)
    assert f"kube: 'v1.{client_go.group(1)}.0'" in out, out
    assert "v1.20.0" not in out


def test_kubectl_reports_the_pinned_kubernetes_version(pinned):
    version = pinned["KUBERNETES_VERSION"]
    client = json.loads(run(tools.binary("kubectl"), "version", "--client", "-o", "json"))["clientVersion"]
    minor = version.split(".")[1]
    assert (client["gitVersion"], client["major"], client["minor"], client["gitTreeState"]) == \
        (version, "1", minor, "clean"), client


@pytest.mark.parametrize("component", ["kube-apiserver", "kube-controller-manager", "kube-scheduler"])
def test_control_plane_binaries_report_the_pinned_kubernetes_version(pinned, component):
    assert run(tools.binary(component), "--version").strip() == f"Kubernetes {pinned['KUBERNETES_VERSION']}"


def test_crane_and_actionlint_report_their_pinned_versions(pinned):
    assert run(tools.binary("crane"), "version").strip() == pinned["CRANE_VERSION"]
    assert run(tools.binary("actionlint"), "-version").splitlines()[0] == pinned["ACTIONLINT_VERSION"]
