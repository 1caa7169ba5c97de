"""Every shell block of README.md and docs/ either runs here or is listed, with the reason, as one that cannot.

A shell block is a fenced block tagged bash, sh, shell or console, or an untagged one (the docs write commands and
their output untagged). Each block is split into commands (a trailing backslash continues a line; in a console block
only `$ ` lines are commands). `PLANS` says, for every block, which commands run here and how:

- `run`: run as written, in bash from the repository root (`.venv/bin/` means this test's virtualenv);
- `helm`: a `helm install`/`helm upgrade` run as `helm template` with the same chart, namespace and values, so the
  chart accepts every `--set` the docs show (no cluster needed);
- `kubectl`: run against the local control plane with the CRDs installed (tests/cluster); `kubectl apply` as a
  server-side dry run, so the manifests it names are checked by the API server without an operator;
- `servers`/`load`: the emulator's commands, started on free ports (the docs' ports may be taken), checked through
  /info, then driven for a few seconds by the load generator's command with its URLs pointed at them;
- everything else needs `skip`, the reason (a real cluster, Docker, a registry, root, minutes of build).

A block that is neither in `PLANS` nor plain output (`OUTPUT`) fails the test, so a new block gets a decision; so does a
plan whose block is gone.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from . import CHART, KUBE_VERSION, REPO, helm

SHELL_LANGS = {"bash", "sh", "shell", "console", ""}
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\n(?P<body>.*?)^(?P=indent)```", re.S | re.M)

CLUSTER = "needs a cluster running the operator (tests/integration runs the same operations on the local control plane)"
DOCKER = "needs Docker and a registry (neither exists where the tests run)"


@dataclass(frozen=True)
class Block:
    path: str
    line: int
    lang: str
    body: str

    @property
    def key(self) -> tuple[str, str]:
        """(file, first line): stable while the text around the block changes."""
        first = next(line for line in self.body.splitlines() if line.strip())
        return self.path, first.strip()

    def commands(self) -> list[str]:
        """Logical commands: continuation lines joined; comment-only lines and, in console blocks, output dropped."""
        lines = self.body.splitlines()
        if self.lang == "console":
            lines = [line[2:] for line in lines if line.startswith("$ ")]
        out: list[str] = []
        pending = ""
        for line in lines:
            if not pending and (not line.strip() or line.strip().startswith("#")):
                continue
            pending += line.rstrip()
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            out.append(pending.strip())
            pending = ""
        if pending:
            out.append(pending.strip())
        return out


@dataclass(frozen=True)
class Plan:
    run: tuple[int, ...] = ()
    helm: tuple[int, ...] = ()
    kubectl: tuple[int, ...] = ()
    servers: tuple[int, ...] = ()  # long-running servers: started on a free port, checked, stopped
    load: tuple[int, ...] = ()     # the load generator, against the servers of its file, for a few seconds
    skip: str = ""  # why the commands not in run/helm cannot run here


ALL = -1  # every command of the block
PUBLISHED_CHART = "oci://ghcr.io/tei-operator/charts/tei-operator"  # what the release pipeline pushes
UNPUBLISHED = ("needs the image and chart the release pipeline publishes (it has not run yet); "
               "tests/chart/test_oci.py installs and upgrades the same chart from a local OCI registry")

# Blocks that hold output or log lines, not commands: (file, first line) -> what they are.
OUTPUT = {
    ("docs/emulator.md", "# TYPE te_request_count counter"): "sample /metrics output",
    ("docs/troubleshooting.md", "Pod bge-m3-6c45fb9999-8ztk4 cannot be scheduled: 0/5 nodes are available: 1 "
     "Insufficient nvidia.com/gpu,"): "a condition message",
    ("docs/troubleshooting.md", "Container tei of pod bge-m3-7d9f-x2x8q is crash-looping (exit code 1, 4 restarts): "
     "Error: Could not download model artifacts"): "a condition message",
}

PLANS: dict[tuple[str, str], Plan] = {
    # README
    ("README.md", "$ kubectl get tei -n search"): Plan(skip=CLUSTER),
    ("README.md", "helm install tei-operator oci://ghcr.io/tei-operator/charts/tei-operator --version 0.2.0 -n "
     "tei-system --create-namespace"): Plan(helm=(0,)),
    ("README.md", "make demo         # builds the local control plane (first time: ~10 min), runs the operator, "
     "applies the"): Plan(skip="needs root (emulated pods bind port 80) and minutes; tests/e2e runs the same loop"),
    ("README.md", "make test"): Plan(skip="the whole test suite, of which this test is part"),
    ("README.md", "hack/kind-quickstart.sh   # creates a kind cluster, builds and loads the image, installs the "
     "chart, applies the CPU example"): Plan(skip=DOCKER + "; kind runs in Docker"),
    ("README.md", "python3 -m venv .venv && .venv/bin/pip install --quiet -e .    # or `make venv`, which adds the "
     "test tools"): Plan(run=(1,), skip="the install downloads from PyPI; `make venv`, which every test run "
                         "starts with, runs the same pip install -e"),
    ("README.md", "make tools                                  # build etcd, kube-apiserver, controller-manager, "
     "scheduler, kubectl, kwok, helm, crane, actionlint"): Plan(skip="starts and stops the local control plane and builds the tools "
                                             "(minutes cold); tests/harness covers `python -m tests.cluster`; "
                                             "`make test-unit` and `make crds` are what CI runs anyway"),
    # docs/gitops.md: the CRD size behind "about 40 KB"
    ("docs/gitops.md", ".venv/bin/python -c 'import json, yaml, glob; [print(f, len(json.dumps(yaml.safe_load("
     "open(f)), separators=(\",\", \":\")))) for f in sorted(glob.glob(\"crds/*.yaml\"))]'"): Plan(run=(ALL,)),
    # docs/install.md
    ("docs/install.md", "helm install tei-operator oci://ghcr.io/tei-operator/charts/tei-operator --version 0.2.0 \\"):
        Plan(helm=(0,), kubectl=(1,)),
    ("docs/install.md", "cosign verify ghcr.io/tei-operator/tei-operator:0.2.0 \\"): Plan(skip=UNPUBLISHED),
    ("docs/install.md", "# in a checkout of the repository at the tag you install; REGISTRY is yours, e.g. "
     "registry.example.com/platform"): Plan(helm=(2,), kubectl=(3,), skip=DOCKER),
    ("docs/install.md", "helm upgrade tei-operator oci://ghcr.io/tei-operator/charts/tei-operator --version 0.2.0 -n "
     "tei-system \\"): Plan(helm=(0,)),
    ("docs/install.md", "kubectl get embsvc bge-m3 -n search -o yaml \\"): Plan(skip=CLUSTER),
    ("docs/install.md", "docker build -t REGISTRY/tei-operator:0.2.0 ."): Plan(helm=(2,), skip=DOCKER),
    # docs/releasing.md
    ("docs/releasing.md", "python3 hack/version.py                 # prints it"):
        Plan(run=(0, 1, 3), skip="`set` rewrites pyproject.toml and Chart.yaml (tests/unit/test_version.py runs it "
             "on a copy)"),
    # docs/cost.md
    ("docs/cost.md", "kubectl get tei -n search -o wide        # $/HOUR and $/1M-TOKENS columns"):
        Plan(kubectl=(0,), skip="the second command reads a service bge-m3 of yours: " + CLUSTER
             + "; the lines after it are its output"),
    # docs/dev/testing.md
    ("docs/dev/testing.md", "for i in 1 2 3; do uptime; /usr/bin/time -f \"%e s wall, %U s user\" make test-unit 2>&1 "
     "| tail -2; done"): Plan(skip="runs the unit tests three times to time them: minutes, and this test is part of "
                              "the suite"),
    ("docs/install.md", "helm uninstall tei-operator -n tei-system          # services and CRDs stay (crds.keep)"):
        Plan(skip=CLUSTER),
    # docs/security.md
    ("docs/security.md", "kubectl label namespace search pod-security.kubernetes.io/enforce=baseline "
     "pod-security.kubernetes.io/warn=restricted"): Plan(kubectl=(0,)),
    # docs/troubleshooting.md
    ("docs/troubleshooting.md", "kubectl get tei -A                                   # STATUS: see the table "
     "above"): Plan(kubectl=(0, 1), skip="NAME and NS stand for a service of yours; " + CLUSTER),
    ("docs/troubleshooting.md", "kubectl annotate rrsvc NAME -n NS models.tei-operator.io/allow-unsupported=true"):
        Plan(skip="NAME and NS stand for a service of yours; " + CLUSTER),
    ("docs/troubleshooting.md", "kubectl get embsvc NAME -n NS -o jsonpath='{.status.model}'"):
        Plan(skip="NAME and NS stand for a service of yours; " + CLUSTER + "; the lines after it are its output"),
    ("docs/troubleshooting.md", "helm upgrade tei-operator charts/tei-operator -n tei-system --reuse-values \\"):
        Plan(helm=(0,)),
    # docs/autoscaling-metrics.md
    ("docs/autoscaling-metrics.md", "kubectl get embsvc bge-m3 -o jsonpath='{.status.autoscaling}'"):
        Plan(skip=CLUSTER),
    # docs/model-cache.md
    ("docs/model-cache.md", ".venv/bin/python -m bench.autoscaling.cache_effect"):
        Plan(skip="minutes of simulation per command; tests/unit/test_bench_cache_effect.py runs the script in quick "
             "mode"),
    # docs/emulator.md
    # docs/emulator.md: servers, run by test_the_emulator_commands_serve_and_the_load_generator_drives_them
    ("docs/emulator.md", "python -m tei_operator.emulator --port 8080 --model-id BAAI/bge-m3             # "
     "embedding model"): Plan(servers=(0, 1, 2, 3)),
    ("docs/emulator.md", "python -m tei_operator.emulator --port 8084 --profile bge-m3-a100 --max-batch-tokens 32768"):
        Plan(servers=(0,)),
    ("docs/emulator.md", "python -m tei_operator.emulator.loadgen --url http://127.0.0.1:8080,http://127.0.0.1:8082 "
     "\\"): Plan(load=(0,), skip="the other lines are its output"),
}


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def shell_blocks() -> list[Block]:
    blocks = []
    for path in doc_files():
        text = path.read_text()
        for match in FENCE.finditer(text):
            if match.group("lang") not in SHELL_LANGS:
                continue
            body = "\n".join(line[len(match.group("indent")):] for line in match.group("body").splitlines())
            blocks.append(Block(str(path.relative_to(REPO)), text[:match.start()].count("\n") + 1,
                                match.group("lang"), body))
    return blocks


BLOCKS = shell_blocks()


def test_every_shell_block_is_run_or_listed_with_a_reason():
    keys = {b.key for b in BLOCKS}
    undecided = [f"{b.path}:{b.line}: {b.key[1]!r}" for b in BLOCKS if b.key not in PLANS and b.key not in OUTPUT]
    assert not undecided, ("shell blocks neither run nor listed in tests/chart/test_docs_shell.py (add a Plan, with "
                           "the reason for each command that cannot run here):\n" + "\n".join(undecided))
    stale = [k for k in list(PLANS) + list(OUTPUT) if k not in keys]
    assert not stale, f"plans for blocks that no longer exist: {stale}"
    for block in BLOCKS:
        plan = PLANS.get(block.key)
        if plan is None:
            continue
        commands = block.commands()
        chosen = set(range(len(commands))) if ALL in plan.run else (
            set(plan.run) | set(plan.helm) | set(plan.kubectl) | set(plan.servers) | set(plan.load))
        assert chosen <= set(range(len(commands))), f"{block.path}:{block.line}: no command {sorted(chosen)}"
        if chosen != set(range(len(commands))):
            assert plan.skip, f"{block.path}:{block.line}: commands {sorted(set(range(len(commands))) - chosen)} " \
                              "neither run nor skipped with a reason"
        for index in plan.helm:
            assert shlex.split(commands[index])[:2] in (["helm", "install"], ["helm", "upgrade"]), commands[index]


def venv_env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


def runnable() -> list[tuple[Block, int, str]]:
    out = []
    for block in BLOCKS:
        plan = PLANS.get(block.key)
        if plan is None:
            continue
        commands = block.commands()
        indices = range(len(commands)) if ALL in plan.run else plan.run
        out += [(block, i, commands[i]) for i in indices]
    return out


@pytest.mark.parametrize("block,index,command", runnable(),
                         ids=[f"{b.path}:{b.line}#{i}" for b, i, _ in runnable()])
def test_shell_command_runs_as_written(block, index, command):
    script = command.replace(".venv/bin/", str(Path(sys.executable).parent) + "/")
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=venv_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{block.path}:{block.line}: {command}\n{result.stderr[-2000:]}"
    assert result.stdout.strip(), f"{block.path}:{block.line}: {command} printed nothing"


def helm_template_args(command: str) -> list[str]:
    """`helm install|upgrade [--install] NAME CHART [flags]` as `helm template NAME CHART [value and namespace
    flags]`: what the chart makes of the docs' values, without a cluster."""
    argv = shlex.split(command)
    assert argv[0] == "helm" and argv[1] in ("install", "upgrade"), command
    positional: list[str] = []
    flags: list[str] = []
    rest = argv[2:]
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg in ("--install", "--create-namespace", "--reuse-values", "--reset-then-reuse-values", "--wait",
                   "--atomic"):
            i += 1
        elif arg in ("-n", "--namespace", "--set", "--set-string", "-f", "--values", "--version"):
            flags += [arg, rest[i + 1]]
            i += 2
        elif arg.startswith("-"):
            raise AssertionError(f"helm flag {arg} of {command!r} not understood by this test: teach it")
        else:
            positional.append(arg)
            i += 1
    name, chart = positional[:2]
    chart_path = str(CHART) if chart.rstrip("/") in ("charts/tei-operator", "<chart>") else chart
    if chart == PUBLISHED_CHART:
        # The chart the release publishes is this checkout's chart at this version: render that one, and hold the
        # docs to the version they name.
        chart_path = str(CHART)
        if "--version" in flags:
            at = flags.index("--version")
            version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
            assert flags[at + 1] == version, f"{command!r} names version {flags[at + 1]}, the chart is {version}"
            del flags[at:at + 2]
    return ["template", name, chart_path, "--kube-version", KUBE_VERSION, *flags]


def helm_commands() -> list[tuple[Block, int, str]]:
    out = []
    for block in BLOCKS:
        plan = PLANS.get(block.key)
        if plan is not None:
            commands = block.commands()
            out += [(block, i, commands[i]) for i in plan.helm]
    return out


@pytest.mark.parametrize("block,index,command", helm_commands(),
                         ids=[f"{b.path}:{b.line}#{i}" for b, i, _ in helm_commands()])
def test_helm_command_values_are_accepted_by_the_chart(block, index, command):
    result = helm(*helm_template_args(command), check=False)
    assert result.returncode == 0, f"{block.path}:{block.line}: {command}\n{result.stderr[-2000:]}"
    assert "kind: Deployment" in result.stdout


def test_the_crds_fit_client_side_apply_as_docs_gitops_says():
    # docs/gitops.md: "each CRD is about N KB of JSON, well under the 256 KiB limit of an object's annotations".
    import json

    import yaml

    sizes = {f.name: len(json.dumps(yaml.safe_load(f.read_text()), separators=(",", ":")))
             for f in sorted((REPO / "crds").glob("*.yaml"))}
    assert len(sizes) == 2
    gitops = (REPO / "docs" / "gitops.md").read_text()
    said = re.search(r"each CRD is about (\d+) KB", gitops)
    assert said, "docs/gitops.md no longer says how large a CRD is"
    kb = int(said.group(1)) * 1000
    assert all(0.95 * kb <= size <= 1.05 * kb for size in sizes.values()), (said.group(0), sizes)
    assert all(size < 256 * 1024 for size in sizes.values())
    assert "too large" not in gitops


def kubectl_commands() -> list[tuple[Block, int, str]]:
    out = []
    for block in BLOCKS:
        plan = PLANS.get(block.key)
        if plan is not None:
            commands = block.commands()
            out += [(block, i, commands[i]) for i in plan.kubectl]
    return out


@pytest.fixture(scope="module")
def docs_cluster(cluster):
    """The local control plane with the CRDs, and the namespace the docs use (search). CRDs this fixture created
    are deleted afterwards: test_install.py's `helm install` refuses to adopt CRDs it did not create."""
    crds = ("embeddingservices.tei-operator.io", "rerankerservices.tei-operator.io")
    existed = cluster.kubectl("get", "crd", *crds, check=False).returncode == 0
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for crd in crds:
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}")
    if cluster.kubectl("get", "namespace", "search", check=False).returncode != 0:
        cluster.kubectl("create", "namespace", "search")
    # `kubectl label` refuses to overwrite: start from an unlabelled namespace (an attached cluster is reused).
    cluster.kubectl("label", "namespace", "search", "pod-security.kubernetes.io/enforce-",
                    "pod-security.kubernetes.io/warn-")
    yield cluster
    if not existed:
        cluster.kubectl("delete", "crd", *crds, "--wait=true", "--timeout=60s", check=False)


@pytest.mark.parametrize("block,index,command", kubectl_commands(),
                         ids=[f"{b.path}:{b.line}#{i}" for b, i, _ in kubectl_commands()])
def test_kubectl_command_runs_against_the_local_control_plane(docs_cluster, block, index, command, tmp_path):
    argv = shlex.split(command.split(" #", 1)[0])
    assert argv[0] == "kubectl", command
    if argv[1] == "apply":
        argv.append("--dry-run=server")
    argv = [str(REPO / a) if (REPO / a).is_file() else a for a in argv]  # paths are relative to the checkout
    # A fresh discovery cache: kubectl keeps one per API server for hours, and other tests of the session delete and
    # re-create our CRDs, so a cache from before the fixture applied them would not know the `tei` category.
    result = docs_cluster.kubectl(f"--cache-dir={tmp_path / 'kube-cache'}", *argv[1:], check=False)
    assert result.returncode == 0, f"{block.path}:{block.line}: {command}\n{result.stderr[-2000:]}"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str) -> dict | None:
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read())
    except OSError:
        return None


def test_the_emulator_commands_serve_and_the_load_generator_drives_them():
    import json
    import signal
    import time

    plans = [(b, p) for b in BLOCKS if (p := PLANS.get(b.key)) is not None and (p.servers or p.load)]
    servers = [(b.commands()[i]) for b, p in plans for i in p.servers]
    loads = [(b.commands()[i]) for b, p in plans for i in p.load]
    assert servers and loads
    python = sys.executable
    ports: dict[str, int] = {}
    procs = []
    try:
        for command in servers:
            argv = shlex.split(command.split(" #", 1)[0])
            assert argv[:3] == ["python", "-m", "tei_operator.emulator"], command
            documented = argv[argv.index("--port") + 1]
            ports[documented] = _free_port()
            argv[argv.index("--port") + 1] = str(ports[documented])
            model = argv[argv.index("--model-id") + 1] if "--model-id" in argv else "BAAI/bge-m3"
            procs.append((command, ports[documented], model,
                          subprocess.Popen([python, *argv[1:]], cwd=REPO, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)))
        # All start at once: one of them models a 20 s model load (its listener binds only afterwards, as TEI's).
        deadline = time.monotonic() + 40
        for command, port, model, proc in procs:
            info = None
            while info is None and time.monotonic() < deadline and proc.poll() is None:
                info = _get_json(f"http://127.0.0.1:{port}/info")
                time.sleep(0.2)
            assert info is not None, f"{command}: no /info (exit code {proc.poll()})"
            assert info["model_id"] == model
        for command in loads:
            text = command
            for documented, port in ports.items():
                text = text.replace(f"127.0.0.1:{documented}", f"127.0.0.1:{port}")
            argv = shlex.split(text)
            assert argv[:3] == ["python", "-m", "tei_operator.emulator.loadgen"], command
            argv[argv.index("--duration") + 1] = "3"  # the documented 60 s, shortened; the rate steps stay
            result = subprocess.run([python, *argv[1:], "--json"], cwd=REPO, capture_output=True, text=True,
                                    timeout=90)
            assert result.returncode == 0, result.stderr[-2000:]
            summary = json.loads(result.stdout.strip().splitlines()[-1])
            assert summary["sent"] > 0 and summary["ok"] > 0
            assert summary["errors"] == 0, f"the documented load fails: {summary}"
    finally:
        for *_, proc in procs:
            proc.send_signal(signal.SIGTERM)
        for *_, proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
