#!/usr/bin/env python3
"""The operator's one version: pyproject.toml holds it; the chart and the changelog must agree with it.

    hack/version.py                      print the version (pyproject.toml's [project].version)
    hack/version.py check [--tag vX.Y.Z] exit 1, naming each file and value, unless the chart's version and
                                         appVersion, the default image tag and CHANGELOG.md's newest version
                                         are that version (and the git tag, when given, is v<version>)
    hack/version.py set X.Y.Z            write X.Y.Z into pyproject.toml and Chart.yaml (version, appVersion);
                                         the CHANGELOG section stays yours to write
    hack/version.py notes [X.Y.Z]        print that version's CHANGELOG section (the release notes)
    hack/version.py image-repository     print the chart's default image repository (values.yaml image.repository)

Standard library only (the release workflow runs it before installing anything). --root DIR works on another tree.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?$")
CHART = Path("charts/tei-operator")
# "## [0.2.0] - 2026-12-01" or "## [0.2.0] - unreleased"
CHANGELOG_HEADING = re.compile(r"^## \[([^\]]+)\]", re.MULTILINE)


def package_version(root: Path) -> str:
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]


def _chart_field(root: Path, key: str) -> str | None:
    match = re.search(rf"^{key}:\s*\"?([^\"\s#]*)\"?\s*(#.*)?$", (root / CHART / "Chart.yaml").read_text(), re.M)
    return match.group(1) if match else None


def _image_value(root: Path, key: str) -> str | None:
    """A key of the top-level `image:` block of values.yaml (the file is plain enough for a pattern)."""
    text = (root / CHART / "values.yaml").read_text()
    block = re.search(r"^image:\s*\n((?:[ \t]+.*\n|[ \t]*#.*\n|\s*\n)*)", text, re.M)
    if not block:
        return None
    match = re.search(rf"^[ \t]+{key}:\s*\"?([^\"\s#]*)\"?", block.group(1), re.M)
    return match.group(1) if match else None


def changelog_versions(root: Path) -> list[str]:
    return CHANGELOG_HEADING.findall((root / "CHANGELOG.md").read_text())


def problems(root: Path, tag: str | None = None) -> list[str]:
    """Every disagreement with pyproject.toml's version, one sentence each naming the file and the value."""
    version = package_version(root)
    found: list[str] = []
    if not SEMVER.match(version):
        found.append(f"pyproject.toml: version {version!r} is not a semantic version (MAJOR.MINOR.PATCH[-PRE])")
    chart = CHART / "Chart.yaml"
    for key in ("version", "appVersion"):
        value = _chart_field(root, key)
        if value != version:
            found.append(f"{chart}: {key} is {value!r}, pyproject.toml's version is {version!r} "
                         f"(hack/version.py set {version})")
    tag_default = _image_value(root, "tag")
    if tag_default not in ("", version):
        found.append(f"{CHART / 'values.yaml'}: image.tag is {tag_default!r}; leave it empty (the chart then uses "
                     f"appVersion {version!r}) or set it to {version!r}")
    released = changelog_versions(root)
    newest = next((v for v in released if v.lower() != "unreleased"), None)
    if newest != version:
        found.append(f"CHANGELOG.md: the newest version section is {newest!r}, pyproject.toml's version is "
                     f"{version!r}: add a `## [{version}] - YYYY-MM-DD` section")
    if tag is not None and tag != f"v{version}":
        found.append(f"git tag {tag!r} does not match the version: tag v{version} releases {version}")
    return found


def set_version(root: Path, version: str) -> None:
    if not SEMVER.match(version):
        raise SystemExit(f"version {version!r} is not a semantic version (MAJOR.MINOR.PATCH[-PRE])")
    pyproject = root / "pyproject.toml"
    text, n = re.subn(r'^version = "[^"]*"$', f'version = "{version}"', pyproject.read_text(), count=1, flags=re.M)
    if n != 1:
        raise SystemExit(f"{pyproject}: found no `version = \"...\"` line")
    pyproject.write_text(text)
    chart = root / CHART / "Chart.yaml"
    text = chart.read_text()
    text, n1 = re.subn(r"^version:.*$", f"version: {version}", text, count=1, flags=re.M)
    text, n2 = re.subn(r"^appVersion:.*$", f'appVersion: "{version}"', text, count=1, flags=re.M)
    if (n1, n2) != (1, 1):
        raise SystemExit(f"{chart}: found no version/appVersion line")
    chart.write_text(text)


def notes(root: Path, version: str) -> str:
    text = (root / "CHANGELOG.md").read_text()
    headings = list(CHANGELOG_HEADING.finditer(text))
    for i, heading in enumerate(headings):
        if heading.group(1) == version:
            end = headings[i + 1].start() if i + 1 < len(headings) else len(text)
            # the link definitions at the end of the file belong to no section
            body = re.split(r"^\[[^\]]+\]: ", text[heading.end():end], maxsplit=1, flags=re.M)[0]
            return text[heading.start():heading.end()] + body.rstrip() + "\n"
    raise SystemExit(f"CHANGELOG.md has no `## [{version}]` section")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    sub = parser.add_subparsers(dest="command")
    check = sub.add_parser("check")
    check.add_argument("--tag")
    setter = sub.add_parser("set")
    setter.add_argument("version")
    note = sub.add_parser("notes")
    note.add_argument("version", nargs="?")
    sub.add_parser("image-repository")
    args = parser.parse_args(argv)
    root = args.root
    if args.command is None:
        print(package_version(root))
    elif args.command == "check":
        found = problems(root, args.tag)
        for line in found:
            print(f"version drift: {line}", file=sys.stderr)
        if found:
            return 1
        print(f"{package_version(root)}: pyproject.toml, Chart.yaml version/appVersion, image tag and CHANGELOG.md "
              "agree")
    elif args.command == "set":
        set_version(root, args.version)
        print(f"set {args.version} in pyproject.toml and {CHART / 'Chart.yaml'}; now add its CHANGELOG.md section")
    elif args.command == "notes":
        sys.stdout.write(notes(root, args.version or package_version(root)))
    elif args.command == "image-repository":
        print(_image_value(root, "repository") or "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
