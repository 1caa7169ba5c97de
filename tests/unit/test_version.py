"""One version: pyproject.toml's, which the chart's version and appVersion, the default image tag, CHANGELOG.md's
newest section and the installed package must all name (hack/version.py is the check the release workflow runs)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "hack" / "version.py"
_spec = importlib.util.spec_from_file_location("hack_version", SCRIPT)
version_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(version_tool)

VERSION = version_tool.package_version(REPO)
CHART_FILES = ("Chart.yaml", "values.yaml")


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of the files the version lives in."""
    (tmp_path / "charts" / "tei-operator").mkdir(parents=True)
    for name in ("pyproject.toml", "CHANGELOG.md"):
        shutil.copy(REPO / name, tmp_path / name)
    for name in CHART_FILES:
        shutil.copy(REPO / "charts" / "tei-operator" / name, tmp_path / "charts" / "tei-operator" / name)
    return tmp_path


def edit(path: Path, pattern: str, replacement: str) -> None:
    text, n = re.subn(pattern, replacement, path.read_text(), count=1, flags=re.M)
    assert n == 1, f"{pattern!r} not found in {path}"
    path.write_text(text)


def test_the_repository_names_one_version():
    assert version_tool.problems(REPO) == []
    chart = yaml.safe_load((REPO / "charts" / "tei-operator" / "Chart.yaml").read_text())
    values = yaml.safe_load((REPO / "charts" / "tei-operator" / "values.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == VERSION
    assert values["image"]["tag"] in ("", VERSION)


def test_the_installed_package_is_that_version():
    """What the operator stamps on the Deployments it renders (tei-operator.io/rendered-by)."""
    assert metadata.version("tei-operator") == VERSION, "reinstall the package: make venv"


def test_the_changelog_has_a_dated_or_unreleased_section_per_version_newest_first():
    headings = re.findall(r"^## \[([^\]]+)\] - (\S+)", (REPO / "CHANGELOG.md").read_text(), re.M)
    assert headings and headings[0][0] == VERSION
    versions = [tuple(int(p) for p in v.split("-")[0].split(".")) for v, _ in headings]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions)
    for version, date in headings:
        assert date == "unreleased" or re.fullmatch(r"\d{4}-\d{2}-\d{2}", date), (version, date)


def test_every_changelog_version_has_upgrade_notes():
    notes = (REPO / "docs" / "install.md").read_text().split("## Upgrade notes", 1)[1]
    for version in version_tool.changelog_versions(REPO):
        assert re.search(rf"^### .*\b{re.escape(version)}\b", notes, re.M), f"docs/install.md: no notes for {version}"


@pytest.mark.parametrize(("file", "pattern", "replacement", "complaint"), [
    ("charts/tei-operator/Chart.yaml", r"^appVersion:.*$", 'appVersion: "9.9.9"', "Chart.yaml: appVersion is '9.9.9'"),
    ("charts/tei-operator/Chart.yaml", r"^version:.*$", "version: 0.0.1", "Chart.yaml: version is '0.0.1'"),
    ("charts/tei-operator/values.yaml", r'^(  tag:).*$', r'\1 "0.0.1"', "values.yaml: image.tag is '0.0.1'"),
    ("CHANGELOG.md", r"^## \[[^\]]+\]", "## [9.9.9]", "CHANGELOG.md: the newest version section is '9.9.9'"),
    ("pyproject.toml", r'^version = .*$', 'version = "1.0"', "'1.0' is not a semantic version"),
])
def test_drift_is_named_with_the_file_and_value(tree, file, pattern, replacement, complaint):
    assert version_tool.problems(tree) == []
    edit(tree / file, pattern, replacement)
    found = version_tool.problems(tree)
    assert any(complaint in line for line in found), found


def test_a_tag_that_is_not_the_version_is_refused(tree):
    assert version_tool.problems(tree, tag=f"v{VERSION}") == []
    assert version_tool.problems(tree, tag="v0.0.0-rc.1") == \
        [f"git tag 'v0.0.0-rc.1' does not match the version: tag v{VERSION} releases {VERSION}"]


def test_set_writes_every_place_and_check_then_wants_a_changelog_section(tree):
    run = lambda *args: subprocess.run([sys.executable, str(SCRIPT), "--root", str(tree), *args],  # noqa: E731
                                       capture_output=True, text=True)
    assert run("set", "3.4.5").returncode == 0
    assert run().stdout.strip() == "3.4.5"
    check = run("check")
    assert check.returncode == 1
    assert check.stderr.strip() == ("version drift: CHANGELOG.md: the newest version section is "
                                    f"'{VERSION}', pyproject.toml's version is '3.4.5': add a "
                                    "`## [3.4.5] - YYYY-MM-DD` section")
    changelog = tree / "CHANGELOG.md"
    changelog.write_text(changelog.read_text().replace(f"## [{VERSION}]", "## [3.4.5] - 2030-01-01\n\n- x\n\n"
                                                       f"## [{VERSION}]", 1))
    assert run("check", "--tag", "v3.4.5").returncode == 0
    assert run("notes", "3.4.5").stdout == "## [3.4.5] - 2030-01-01\n\n- x\n"
    assert run("set", "3.4").returncode != 0


def test_release_notes_are_the_changelog_section():
    notes = version_tool.notes(REPO, VERSION)
    assert notes.startswith(f"## [{VERSION}]")
    assert "## [" not in notes[3:], "the notes run into the next version's section"


def test_the_install_commands_name_the_current_version():
    """The README and install.md (up to the per-version upgrade notes, which name their own versions) install and
    verify the version this checkout is."""
    install = (REPO / "docs" / "install.md").read_text().split("## Upgrade notes", 1)[0]
    for name, text in (("README.md", (REPO / "README.md").read_text()), ("docs/install.md", install)):
        v = r"(\d+\.\d+\.\d+(?:-[0-9A-Za-z.]+)?)"
        named = re.findall(r"charts/tei-operator(?::| --version )" + v, text)
        named += re.findall(r"ghcr\.io/tei-operator/tei-operator:" + v, text)
        named += re.findall(r"tei-operator:" + v + r" \.", text)  # docker build -t REGISTRY/tei-operator:X .
        named += re.findall(r"refs/tags/v" + v, text)
        named += re.findall(r"(?:targetRevision: |ref: \{tag: \")" + v, text)  # Argo CD, Flux
        assert named, f"{name} names no version to install"
        assert set(named) == {VERSION}, f"{name} installs {sorted(set(named))}, this is {VERSION}"
