"""`helm upgrade --reuse-values` from every released chart renders the current chart.

With `--reuse-values`, helm replaces the new chart's values.yaml by the previous release's computed values (the old
chart's defaults coalesced with the user's), so a value added since that release is simply absent. A template that
dereferences it (`.Values.newThing.enabled`) fails with a nil pointer. This test renders the chart exactly that way
for each released values.yaml kept in tests/chart/released_values/ (docs/releasing.md says when to add one).

0.1.0 -> 0.2.0 is the one known exception: 0.2.0 added ~20 values and its templates read them without defaults
(a chart cannot read its own values.yaml to fill them in: helm keeps values.yaml out of `.Files`), so the upgrade
notes in docs/install.md tell users to upgrade with `--reset-then-reuse-values`. The test pins that statement: if
the render starts working, the notes are stale; if any LATER release breaks the same way, the test fails.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from . import CHART, KUBE_VERSION, REPO, helm

RELEASED = Path(__file__).parent / "released_values"
RELEASES = sorted(p.stem for p in RELEASED.glob("*.yaml"))
# release -> the upgrade note that tells users not to use --reuse-values from it
DOCUMENTED_BREAKS = {"0.1.0": "### 0.1.0 to 0.2.0"}


def chart_with_values_of(release: str, tmp_path: Path) -> Path:
    chart = tmp_path / "tei-operator"
    shutil.copytree(CHART, chart)
    shutil.copyfile(RELEASED / f"{release}.yaml", chart / "values.yaml")
    return chart


def reuse_render(release: str, tmp_path: Path):
    chart = chart_with_values_of(release, tmp_path)
    return helm("template", "tei", str(chart), "--namespace", "tei-system", "--kube-version", KUBE_VERSION,
                "--skip-tests", check=False)


def kinds(manifest: str) -> set[str]:
    return {d["kind"] for d in yaml.safe_load_all(manifest) if d}


def test_every_dated_release_has_its_values_kept():
    changelog = (REPO / "CHANGELOG.md").read_text()
    dated = re.findall(r"^## \[([^\]]+)\] - \d{4}-\d{2}-\d{2}", changelog, flags=re.M)
    assert dated, "CHANGELOG.md has no dated release"
    missing = [v for v in dated if v not in RELEASES]
    assert not missing, (f"copy each release's charts/tei-operator/values.yaml to "
                         f"tests/chart/released_values/VERSION.yaml (docs/releasing.md): missing {missing}")


@pytest.mark.parametrize("release", [r for r in RELEASES if r not in DOCUMENTED_BREAKS] or [
    pytest.param(None, marks=pytest.mark.skip(reason="no release after 0.1.0 yet: 0.2.0 is unreleased"))])
def test_reuse_values_from_release_renders(release, tmp_path):
    reused = reuse_render(release, tmp_path)
    assert reused.returncode == 0, (
        f"`helm upgrade --reuse-values` from {release} would fail: a value added since {release} is read "
        f"without a default (use `dig`/`default`):\n{reused.stderr}")
    current = helm("template", "tei", str(CHART), "--namespace", "tei-system", "--kube-version", KUBE_VERSION,
                   "--skip-tests")
    assert kinds(current.stdout) <= kinds(reused.stdout), kinds(current.stdout) - kinds(reused.stdout)


@pytest.mark.parametrize("release", sorted(DOCUMENTED_BREAKS))
def test_documented_reuse_values_break_is_still_true_and_documented(release, tmp_path):
    reused = reuse_render(release, tmp_path)
    assert reused.returncode != 0 and "nil pointer" in reused.stderr, (
        f"--reuse-values from {release} now renders: drop the warning from docs/install.md and "
        f"DOCUMENTED_BREAKS here")
    install = (REPO / "docs" / "install.md").read_text()
    note = install[install.index(DOCUMENTED_BREAKS[release]):]
    note = note[:note.index("\n### ", 1)] if "\n### " in note[1:] else note
    assert "--reset-then-reuse-values" in note


def test_a_template_reading_a_value_no_release_has_fails(tmp_path):
    # the check can fail: a template that reads a value absent from the released values is caught
    release = RELEASES[-1]
    chart = chart_with_values_of(release, tmp_path)
    (chart / "templates" / "zz-probe.yaml").write_text(
        "{{- if .Values.notInAnyRelease.enabled }}\nkind: ConfigMap\n{{- end }}\n")
    result = helm("template", "tei", str(chart), "--kube-version", KUBE_VERSION, check=False)
    assert result.returncode != 0 and "nil pointer" in result.stderr
