"""The release workflow, linted by actionlint (built from the Go module proxy by hack/build-tools.sh): the closest
this machine gets to running it. actionlint checks the workflow's syntax, expressions and the inputs and outputs of
the actions it uses, and, when shellcheck is on PATH (Debian: apt-get install shellcheck), every `run:` script."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cluster import tools

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "release.yml"


def actionlint(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    # -shellcheck= with an empty value turns the shellcheck rule off; with a path it uses that shellcheck
    return subprocess.run([str(tools.binary("actionlint")), "-color=false",
                           f"-shellcheck={shutil.which('shellcheck') or ''}", *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd)


def test_every_workflow_passes_actionlint():
    result = actionlint()
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


@pytest.mark.parametrize(("original", "broken", "complaint"), [
    ("platforms: linux/amd64,linux/arm64", "platform: linux/amd64,linux/arm64",
     'input "platform" is not defined in action "docker/build-push-action@v6"'),
    ("${{ steps.build.outputs.digest }}", "${{ steps.biuld.outputs.digest }}", 'property "biuld" is not defined'),
    ("id-token: write", "id-token: sign", '"sign" is invalid as permission of scope "id-token"'),
])
def test_actionlint_catches_a_broken_copy(tmp_path, original, broken, complaint):
    text = WORKFLOW.read_text()
    assert original in text
    copy = tmp_path / ".github" / "workflows" / "release.yml"
    copy.parent.mkdir(parents=True)
    copy.write_text(text.replace(original, broken, 1))
    result = actionlint(str(copy), cwd=tmp_path)
    assert result.returncode == 1 and complaint in result.stdout, result.stdout + result.stderr
