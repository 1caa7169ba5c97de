"""hack/build-tools.sh: idempotent on a warm cache, safe to run twice at once, and clear when the proxy refuses."""

from __future__ import annotations

import os
import subprocess
import time

from tests.cluster import tools


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
        for component in ("etcd", "kwok", "helm", "kubernetes"):
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
    assert "unknown component 'kubelet'" in out and "kubernetes etcd kwok helm" in out
