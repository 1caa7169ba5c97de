"""The release workflow (.github/workflows/release.yml) does what docs/releasing.md promises. It cannot run here
(no GitHub runner, no registry credentials): this reads its structure, and tests/harness/test_actionlint.py lints
it with actionlint."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = yaml.safe_load((REPO / ".github" / "workflows" / "release.yml").read_text())
JOBS = WORKFLOW["jobs"]
PUBLISH = JOBS["publish"]


def step(job: dict, uses_prefix: str) -> dict:
    found = [s for s in job["steps"] if s.get("uses", "").startswith(uses_prefix)]
    assert len(found) == 1, f"expected one step using {uses_prefix}, found {len(found)}"
    return found[0]


def scripts(job: dict) -> str:
    return "\n".join(s.get("run", "") for s in job["steps"])


def test_runs_on_version_tags_only():
    on = WORKFLOW[True] if True in WORKFLOW else WORKFLOW["on"]  # YAML 1.1 reads the key `on` as True
    assert set(on) == {"push"} and set(on["push"]) == {"tags"}
    patterns = on["push"]["tags"]
    assert "v[0-9]+.[0-9]+.[0-9]+" in patterns


def test_the_tag_must_match_the_one_version_and_unit_tests_pass_before_publishing():
    check = scripts(JOBS["check"])
    assert 'hack/version.py check --tag "$GITHUB_REF_NAME"' in check
    assert "make test-unit" in check
    assert PUBLISH["needs"] == "check"


def test_least_privilege_permissions():
    assert WORKFLOW["permissions"] == {}
    assert JOBS["check"]["permissions"] == {"contents": "read"}
    assert PUBLISH["permissions"] == {"contents": "write", "packages": "write", "id-token": "write"}


def test_builds_the_multi_arch_image_from_the_dockerfile_with_sbom():
    build = step(PUBLISH, "docker/build-push-action@")["with"]
    assert build["file"] == "Dockerfile" and (REPO / build["file"]).is_file()
    assert set(build["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["push"] is True and build["sbom"] is True
    assert build["tags"] == "${{ steps.names.outputs.image }}:${{ env.VERSION }}"
    assert step(PUBLISH, "docker/setup-qemu-action@") and step(PUBLISH, "docker/setup-buildx-action@")


def test_image_and_chart_are_pushed_to_ghcr_and_signed_keyless():
    run = scripts(PUBLISH)
    assert 'echo "image=ghcr.io/$owner/tei-operator"' in run and 'echo "charts=ghcr.io/$owner/charts"' in run
    assert re.search(r'helm push "dist/tei-operator-\$VERSION\.tgz" "oci://\$CHARTS"', run)
    signed = re.findall(r'cosign sign --yes "([^"]+)"', run)
    assert signed == ["$IMAGE", "$CHARTS/tei-operator@$digest"]
    assert 'cosign attest --yes --type spdxjson' in run
    assert "--key" not in run, "keyless signing uses the workflow's OIDC identity, not a key"
    assert run.count("cosign verify ") == 1 and "cosign verify-attestation" in run


def test_helm_in_ci_is_the_pinned_helm():
    assert step(PUBLISH, "azure/setup-helm@")["with"]["version"] == "${{ needs.check.outputs.helm }}"
    assert "source hack/versions.env" in scripts(JOBS["check"])


def test_the_published_names_are_the_ones_the_docs_install_from():
    """The chart's default image and the README's one-command install name what the workflow publishes for the
    owner tei-operator."""
    values = yaml.safe_load((REPO / "charts" / "tei-operator" / "values.yaml").read_text())
    assert values["image"]["repository"] == "ghcr.io/tei-operator/tei-operator"
    readme = (REPO / "README.md").read_text()
    assert re.search(r"helm install tei-operator oci://ghcr\.io/tei-operator/charts/tei-operator --version "
                     r"\d+\.\d+\.\d+ -n tei-system --create-namespace", readme)
