"""The Dockerfile, checked without a Docker engine (none exists on these machines).

What can be verified here is verified: the base image is pinned, the final stage runs as a numeric non-root user
with `tei-operator run` as its entry point and has no build tools, every file the build copies exists and is not
excluded by .dockerignore, and the build stage's steps work: the package builds as a wheel (`pip wheel --no-deps .`)
from exactly the copied files, installs into a fresh virtualenv, and its console script prints the CRDs.
Not verified here: pulling the base image and the dependency wheels inside a real image build.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Build args declared before the first FROM, and the stages with their instructions (continuations joined)."""
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, flags=re.I)
            assert m, f"cannot parse FROM {rest}"
            base = re.sub(r"\$\{(\w+)\}", lambda v: args.get(v.group(1), v.group(0)), m.group(1))
            stages.append(Stage(base, m.group(2)))
        elif keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


ARGS, STAGES = parse(DOCKERFILE.read_text())
FINAL = STAGES[-1]


def exec_form(arg: str) -> list[str]:
    value = yaml.safe_load(arg)
    assert isinstance(value, list), f"use the exec form (JSON list), got {arg}"
    return value


def test_multi_stage_on_a_pinned_slim_python_base():
    assert len(STAGES) >= 2
    for stage in STAGES:
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", stage.base) or \
            re.fullmatch(r"python@sha256:[0-9a-f]{64}", stage.base), f"base image not pinned: {stage.base}"


def test_base_python_matches_the_supported_versions():
    requires = re.search(r'requires-python = ">=(\d+)\.(\d+)"', (REPO / "pyproject.toml").read_text())
    major, minor = (int(x) for x in re.match(r"python:(\d+)\.(\d+)", FINAL.base).groups())
    assert (major, minor) >= (int(requires.group(1)), int(requires.group(2)))


def test_final_stage_runs_tei_operator_run_as_non_root():
    entrypoint = exec_form(FINAL.all("ENTRYPOINT")[-1])
    cmd = exec_form(FINAL.all("CMD")[-1]) if FINAL.all("CMD") else []
    assert entrypoint + cmd == ["tei-operator", "run"]
    user = FINAL.all("USER")[-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be numeric and not root (runAsNonRoot can verify it)"


def test_final_stage_carries_no_build_tools():
    runs = " ".join(FINAL.all("RUN"))
    for tool in ("apt-get install", "gcc", "build-essential", "pip install", "pip wheel"):
        assert tool not in runs, f"the final stage runs {tool}"
    copies = FINAL.all("COPY")
    assert copies and all(c.startswith("--from=") for c in copies), \
        "the final stage must copy only from the build stage, not from the source tree"


def dockerignore_patterns() -> list[tuple[bool, str]]:
    out = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append((line.startswith("!"), line.lstrip("!").rstrip("/")))
    return out


def in_context(relative: str) -> bool:
    """Whether .dockerignore leaves a path in the build context (last matching pattern wins, as Docker does)."""
    included = True
    parts = relative.split("/")
    for negate, pattern in dockerignore_patterns():
        pattern = pattern.removeprefix("**/")
        candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)] + parts
        if any(fnmatch.fnmatch(c, pattern) for c in candidates):
            included = negate
    return included


def copied_sources() -> list[str]:
    sources = []
    for stage in STAGES:
        for arg in stage.all("COPY"):
            if arg.startswith("--from="):
                continue
            sources += [s.rstrip("/") for s in arg.split()[:-1] if not s.startswith("--")]
    return sources


def test_every_copied_file_exists_and_is_in_the_build_context():
    sources = copied_sources()
    assert "pyproject.toml" in sources and "operator" in sources
    for src in sources:
        assert (REPO / src).exists(), f"COPY {src}: no such file in the repository"
        assert in_context(src), f"COPY {src}: excluded by .dockerignore"
    assert not in_context("tests/conftest.py") and not in_context(".venv/bin/python")
    assert not in_context("operator/tei_operator/__pycache__/cli.cpython-311.pyc")


def test_dockerignore_check_notices_an_excluded_source():
    assert in_context("operator/tei_operator/cli.py")
    assert not in_context("charts/tei-operator/values.yaml")


@pytest.mark.slow  # builds a wheel and a venv: ~4-9 s
def test_the_build_steps_produce_a_working_console_script(tmp_path):
    """Replays the build stage: a wheel from only the copied files, installed into a clean virtualenv.

    The fresh venv gets the package from the wheel alone; its third-party dependencies come from the test venv's
    site-packages through a .pth line (plain path, so the editable install of this checkout is *not* visible), so
    this runs offline. The import check below proves the package came from the wheel.
    """
    context = tmp_path / "context"
    context.mkdir()
    for src in copied_sources():
        source = REPO / src
        if source.is_dir():
            shutil.copytree(source, context / src,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        else:
            shutil.copy(source, context / src)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(wheels), str(context)], check=True, timeout=300)
    built = list(wheels.glob("tei_operator-*.whl"))
    assert len(built) == 1, built

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
                    "--no-deps", "--no-index", str(built[0])], check=True, timeout=300)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "zz-test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")

    env = {k: v for k, v in os.environ.items() if not k.startswith("TEI_OPERATOR_") and k != "PYTHONPATH"}
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import tei_operator; print(tei_operator.__file__)"],
                           capture_output=True, text=True, check=True, env=env, cwd=tmp_path).stdout.strip()
    assert where.startswith(str(site)), f"tei_operator was imported from {where}, not from the wheel"
    result = subprocess.run([str(venv / "bin" / "tei-operator"), "crds"], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    kinds = {d["spec"]["names"]["kind"] for d in yaml.safe_load_all(result.stdout) if d}
    assert kinds == {"EmbeddingService", "RerankerService"}


@pytest.mark.parametrize("bad", ["FROM python:3.11-slim\nUSER 0\nENTRYPOINT [\"tei-operator\"]\n",
                                 "FROM python:latest\n"])
def test_the_pin_check_refuses_floating_tags(bad):
    _, stages = parse(bad)
    assert not re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", stages[0].base)
