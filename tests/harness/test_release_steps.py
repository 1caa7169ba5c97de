"""The release workflow's own shell steps, run here with bash as the runner would run them, for the steps that need
nothing this machine lacks (no Docker, cosign or GitHub): the version gate, the image-owner gate, the registry
names, and packaging the chart with the pinned helm. `${{ ... }}` expressions are replaced with the values GitHub
would give them; an expression this file does not know fails the test."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.cluster import tools

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = yaml.safe_load((REPO / ".github" / "workflows" / "release.yml").read_text())
VERSION = subprocess.run(["python3", str(REPO / "hack" / "version.py")], capture_output=True, text=True,
                         check=True).stdout.strip()


def script(job: str, name: str, expressions: dict[str, str]) -> str:
    steps = [s for s in WORKFLOW["jobs"][job]["steps"] if s.get("name") == name]
    assert len(steps) == 1, f"no step {name!r} in job {job}"
    text = steps[0]["run"]

    def value(match: re.Match) -> str:
        expression = match.group(1).strip()
        assert expression in expressions, f"step {name!r} uses ${{{{ {expression} }}}}, unknown to this test"
        return expressions[expression]

    return re.sub(r"\$\{\{(.*?)\}\}", value, text)


def run_step(job: str, name: str, tmp_path: Path, env: dict[str, str], expressions: dict[str, str] | None = None,
             cwd: Path = REPO) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """bash -e as GitHub's runner runs a `run:` step; returns the result and what the step wrote to GITHUB_OUTPUT."""
    output = tmp_path / "github_output"
    output.write_text("")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "helm").exists():
        (bin_dir / "helm").symlink_to(tools.binary("helm"))
    full_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GITHUB_OUTPUT": str(output), **env}
    result = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c",
                             script(job, name, expressions or {})],
                            capture_output=True, text=True, cwd=cwd, env=full_env, timeout=120)
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
    return result, outputs


def test_the_version_step_passes_the_matching_tag_and_reports_version_and_helm(tmp_path):
    result, outputs = run_step("check", "The tag, pyproject.toml, Chart.yaml and CHANGELOG.md name one version",
                               tmp_path, {"GITHUB_REF_NAME": f"v{VERSION}"})
    assert result.returncode == 0, result.stderr
    assert outputs == {"version": VERSION, "helm": tools.versions()["HELM_VERSION"]}


def test_the_version_step_refuses_another_tag(tmp_path):
    result, outputs = run_step("check", "The tag, pyproject.toml, Chart.yaml and CHANGELOG.md name one version",
                               tmp_path, {"GITHUB_REF_NAME": "v9.9.9"})
    assert result.returncode == 1 and "git tag 'v9.9.9' does not match the version" in result.stderr
    assert outputs == {}


@pytest.mark.parametrize(("owner", "passes"), [("tei-operator", True), ("Tei-Operator", True), ("a-fork", False)])
def test_the_owner_gate_accepts_only_the_owner_the_chart_names(tmp_path, owner, passes):
    result, _ = run_step("check", "The chart's default image is the one this workflow publishes", tmp_path,
                         {"GITHUB_REPOSITORY_OWNER": owner})
    assert (result.returncode == 0) is passes, result.stdout + result.stderr
    if not passes:
        assert "::error file=charts/tei-operator/values.yaml::image.repository is ghcr.io/tei-operator/tei-operator " \
               "but this repository publishes ghcr.io/a-fork/tei-operator" in result.stdout


def test_registry_names_are_lower_case(tmp_path):
    result, outputs = run_step("publish", "Registry names", tmp_path, {"GITHUB_REPOSITORY_OWNER": "Tei-Operator"})
    assert result.returncode == 0, result.stderr
    assert outputs == {"image": "ghcr.io/tei-operator/tei-operator", "charts": "ghcr.io/tei-operator/charts"}


@pytest.mark.parametrize(("image", "passes"), [("ghcr.io/tei-operator/tei-operator", True),
                                               ("ghcr.io/a-fork/tei-operator", False)])
def test_packaging_the_chart_checks_the_image_it_deploys(tmp_path, image, passes):
    work = tmp_path / "checkout"
    shutil.copytree(REPO / "charts", work / "charts")
    result, _ = run_step("publish", "Package the chart and check it installs the published image", tmp_path,
                         {"VERSION": VERSION}, {"steps.names.outputs.image": image}, cwd=work)
    assert (result.returncode == 0) is passes, result.stdout + result.stderr
    assert (work / "dist" / f"tei-operator-{VERSION}.tgz").is_file()
    if not passes:
        assert (f"::error::the packaged chart deploys ghcr.io/tei-operator/tei-operator:{VERSION}, "
                f"not {image}:{VERSION}") in result.stdout
