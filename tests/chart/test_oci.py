"""The chart as users get it: from an OCI registry, pinned to a version, and upgraded in place with services running.

A real registry (go-containerregistry's `crane registry serve`, built by hack/build-tools.sh) listens on 127.0.0.1
on a port the kernel picks. Two versions are pushed to it with `helm package` + `helm push` over plain HTTP:

- the current chart (the version in pyproject.toml, CHANGELOG.md's newest), and
- the previous version (CHANGELOG.md's next one) packaged from a modified copy of the current chart: its version
  and appVersion set back, and one field (`spec.podLabels`) removed from both CRD schemas, so the upgrade has a
  CRD change to deliver. It is not the previous release's chart as it was (that was never published): it is the
  current one dressed as an older version.

Then `helm install oci://127.0.0.1:PORT/charts/tei-operator --version PREVIOUS` into the local control plane, the
operator running (with the release's ServiceAccount token, outside the pod, as in tests/chart/test_install.py:
there is no container runtime here), two services created and reconciled, and `helm upgrade ... --version
CURRENT`: the services, their Deployments and Services keep their UIDs, the CRDs carry the new schema (as
docs/install.md says: the chart upgrades them) and the new field works at once.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.cluster import tools

from . import CHART, helm, token_kubeconfig
from .test_install import OUR_CRDS, forbidden_lines, operator_process, wait_established, wait_for

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("hack_version", REPO / "hack" / "version.py")
version_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(version_tool)

CURRENT = version_tool.package_version(REPO)
PREVIOUS = next(v for v in version_tool.changelog_versions(REPO) if v not in (CURRENT, "Unreleased", "unreleased"))
REMOVED_FIELD = "podLabels"  # present in CURRENT's CRDs, absent from the PREVIOUS copy's
IMAGE = "ghcr.io/tei-operator/tei-operator"
HELM_CHART_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART_LAYER = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
SERVICES = {"EmbeddingService": "embedding-cpu.yaml", "RerankerService": "reranker-bge-reranker-v2-m3.yaml"}


def crane(*args: str) -> str:
    result = subprocess.run([str(tools.binary("crane")), *args, "--insecure"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, f"crane {' '.join(args)} failed: {result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """`crane registry serve` on 127.0.0.1, blobs on disk; yields HOST:PORT."""
    workdir = tmp_path_factory.mktemp("registry")
    log = workdir / "crane.log"
    (workdir / "blobs").mkdir()  # crane's disk store writes uploads there and does not create it
    env = {k: v for k, v in os.environ.items() if k != "PORT"}
    with log.open("w") as out:
        proc = subprocess.Popen([str(tools.binary("crane")), "registry", "serve", "--address", "127.0.0.1:0",
                                 "--disk", str(workdir / "blobs")], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 30
        while not (match := re.search(r"serving on port (\d+)", log.read_text())):
            assert proc.poll() is None, f"crane registry serve exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"crane registry serve did not start: {log.read_text()}"
            time.sleep(0.1)
        yield f"127.0.0.1:{match.group(1)}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def remove_property(template: Path, name: str) -> None:
    """Drops one property (its whole block) from a generated CRD template: the block starts at `<indent>name:` and
    ends before the next line indented as much or less."""
    lines = template.read_text().splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == f"{name}:"]
    assert len(starts) == 1, f"{template}: expected one `{name}:` property, found {len(starts)}"
    start = starts[0]
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
        end += 1
    template.write_text("".join(lines[:start] + lines[end:]))


def older_copy(destination: Path) -> Path:
    """The current chart with PREVIOUS as its version and appVersion and REMOVED_FIELD gone from both CRDs."""
    chart = destination / "tei-operator"
    shutil.copytree(CHART, chart)
    meta = chart / "Chart.yaml"
    text = re.sub(r"^version:.*$", f"version: {PREVIOUS}", meta.read_text(), count=1, flags=re.M)
    meta.write_text(re.sub(r"^appVersion:.*$", f'appVersion: "{PREVIOUS}"', text, count=1, flags=re.M))
    for crd in sorted((chart / "templates").glob("crd-*.yaml")):
        remove_property(crd, REMOVED_FIELD)
    return chart


@pytest.fixture(scope="module")
def pushed(registry, tmp_path_factory) -> dict[str, str]:
    """Both versions packaged and pushed to oci://REGISTRY/charts; returns {version: manifest digest}."""
    work = tmp_path_factory.mktemp("charts")
    dist = work / "dist"
    digests = {}
    for version, chart in ((PREVIOUS, older_copy(work / "previous")), (CURRENT, CHART)):
        helm("package", str(chart), "--destination", str(dist))
        package = dist / f"tei-operator-{version}.tgz"
        assert package.is_file(), sorted(p.name for p in dist.iterdir())
        result = helm("push", str(package), f"oci://{registry}/charts", "--plain-http")
        output = result.stdout + result.stderr
        assert f"Pushed: {registry}/charts/tei-operator:{version}" in output, output
        digests[version] = re.search(r"^Digest: (sha256:[0-9a-f]{64})$", output, re.M).group(1)
    return digests


def chart_ref(registry: str) -> str:
    return f"oci://{registry}/charts/tei-operator"


def test_both_versions_are_helm_charts_in_the_registry(registry, pushed):
    assert crane("catalog", registry).split() == ["charts/tei-operator"]
    assert sorted(crane("ls", f"{registry}/charts/tei-operator").split()) == sorted([PREVIOUS, CURRENT])
    for version, digest in pushed.items():
        manifest = json.loads(crane("manifest", f"{registry}/charts/tei-operator:{version}"))
        assert manifest["config"]["mediaType"] == HELM_CHART_CONFIG
        assert [layer["mediaType"] for layer in manifest["layers"]] == [HELM_CHART_LAYER]
        assert crane("digest", f"{registry}/charts/tei-operator:{version}").strip() == digest
        shown = yaml.safe_load(helm("show", "chart", chart_ref(registry), "--version", version, "--plain-http").stdout)
        assert (shown["version"], shown["appVersion"]) == (version, version)


def test_a_version_that_is_not_in_the_registry_is_refused(registry, pushed):
    result = helm("show", "chart", chart_ref(registry), "--version", "0.0.0-missing", "--plain-http", check=False)
    assert result.returncode != 0 and "0.0.0-missing" in result.stderr, result.stderr


# ---------------------------------------------------------------- install from the registry, upgrade in place

def hand_existing_crds_to(cluster, release: str, namespace: str) -> None:
    """The control plane is shared by the test session: other tests may have left our CRDs (kept on uninstall, or
    applied from crds/). Give them to this release the way Helm adopts objects (its ownership label and
    annotations), so the install below runs exactly as on a fresh cluster."""
    for crd in OUR_CRDS:
        if cluster.kubectl("get", "crd", crd, check=False).returncode == 0:
            cluster.kubectl("label", "crd", crd, "app.kubernetes.io/managed-by=Helm", "--overwrite")
            cluster.kubectl("annotate", "crd", crd, f"meta.helm.sh/release-name={release}",
                            f"meta.helm.sh/release-namespace={namespace}", "--overwrite")


def get(cluster, kind: str, name: str, namespace: str | None = None) -> dict:
    args = ["get", kind, name, "-o", "json"] + (["-n", namespace] if namespace else [])
    return json.loads(cluster.kubectl(*args).stdout)


def crd_properties(cluster, crd: str) -> dict:
    schema = get(cluster, "crd", crd)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema["properties"]["spec"]["properties"]


def service_manifests(namespace: str) -> list[dict]:
    manifests = []
    for kind, example in SERVICES.items():
        manifest = yaml.safe_load((REPO / "examples" / example).read_text())
        assert manifest["kind"] == kind and REMOVED_FIELD not in manifest["spec"]
        manifest["metadata"]["namespace"] = namespace
        manifests.append(manifest)
    return manifests


def uids(cluster, manifests: list[dict]) -> dict[str, str]:
    """UIDs of every service and of the Deployment and Service the operator made for it."""
    found = {}
    for manifest in manifests:
        name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        for kind in (manifest["kind"], "deployment", "service"):
            found[f"{kind}/{name}"] = get(cluster, kind, name, namespace)["metadata"]["uid"]
    return found


def operator_image(cluster, release: str, namespace: str) -> str:
    deployment = get(cluster, "deployment", f"{release}-tei-operator", namespace)
    return deployment["spec"]["template"]["spec"]["containers"][0]["image"]


def test_install_a_version_from_the_registry_then_upgrade_with_services_running(cluster, registry, pushed,
                                                                                 tmp_path):
    release, release_ns, ns = "tei", f"tei-oci-{uuid.uuid4().hex[:6]}", f"t-oci-{uuid.uuid4().hex[:6]}"
    kc = cluster.kubeconfig
    for name in (release_ns, ns):
        cluster.kubectl("create", "namespace", name)
    hand_existing_crds_to(cluster, release, release_ns)
    log = tmp_path / "operator.log"
    try:
        # ------------------------------------------------ install PREVIOUS from the registry
        helm("install", release, chart_ref(registry), "--version", PREVIOUS, "--plain-http", "-n", release_ns,
             "--wait", "--timeout", "120s", kubeconfig=kc)
        listed = json.loads(helm("list", "-n", release_ns, "-o", "json", kubeconfig=kc).stdout)
        assert [(r["name"], r["chart"], r["app_version"]) for r in listed] == \
            [(release, f"tei-operator-{PREVIOUS}", PREVIOUS)]
        assert operator_image(cluster, release, release_ns) == f"{IMAGE}:{PREVIOUS}"
        wait_established(cluster, *OUR_CRDS)
        for crd in OUR_CRDS:
            assert get(cluster, "crd", crd)["metadata"]["labels"]["helm.sh/chart"] == f"tei-operator-{PREVIOUS}"
            assert REMOVED_FIELD not in crd_properties(cluster, crd)

        # ------------------------------------------------ services, reconciled by the operator
        token = token_kubeconfig(cluster, release_ns, f"{release}-tei-operator", tmp_path / "sa.kubeconfig")
        manifests = service_manifests(ns)
        with operator_process(token, log) as proc:
            cluster.apply(manifests)
            for manifest in manifests:
                name = manifest["metadata"]["name"]
                wait_for(f"{manifest['kind']} {name}'s conditions", lambda: get(
                    cluster, manifest["kind"], name, ns).get("status", {}).get("conditions"), log)
                wait_for(f"Deployment {name}", lambda: cluster.kubectl(
                    "get", "deployment", name, "-n", ns, check=False).returncode == 0, log)
            before = uids(cluster, manifests)
            # the older CRD does not know the field yet: the API server refuses it, naming it
            labelled = json.loads(json.dumps(manifests[0]))
            labelled["spec"][REMOVED_FIELD] = {"team": "search"}
            refused = cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(labelled), check=False)
            assert refused.returncode != 0, "the older CRD accepted a field it does not have"
            assert f".spec.{REMOVED_FIELD}: field not declared in schema" in refused.stderr, refused.stderr

            # ------------------------------------------------ upgrade to CURRENT, services running
            helm("upgrade", release, chart_ref(registry), "--version", CURRENT, "--plain-http", "-n", release_ns,
                 "--wait", "--timeout", "120s", kubeconfig=kc)
            history = json.loads(helm("history", release, "-n", release_ns, "-o", "json", kubeconfig=kc).stdout)
            assert [(h["revision"], h["chart"], h["status"]) for h in history] == \
                [(1, f"tei-operator-{PREVIOUS}", "superseded"), (2, f"tei-operator-{CURRENT}", "deployed")]
            assert operator_image(cluster, release, release_ns) == f"{IMAGE}:{CURRENT}"

            # the CRDs are the new version's, as docs/install.md says the chart upgrades them
            rendered = helm("template", release, chart_ref(registry), "--version", CURRENT, "--plain-http",
                            "-n", release_ns, *[f"--show-only=templates/crd-{c.split('.')[0]}.yaml" for c in OUR_CRDS])
            for new in (d for d in yaml.safe_load_all(rendered.stdout) if d):
                live = get(cluster, "crd", new["metadata"]["name"])
                assert live["metadata"]["labels"]["helm.sh/chart"] == f"tei-operator-{CURRENT}"
                assert [v["schema"] for v in live["spec"]["versions"]] == \
                    [v["schema"] for v in new["spec"]["versions"]]
                assert REMOVED_FIELD in crd_properties(cluster, new["metadata"]["name"])

            # every service, Deployment and Service is the same object as before the upgrade
            assert uids(cluster, manifests) == before

            # the new field is accepted now, and the operator (same token, upgraded RBAC) carries it to the pods
            cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(labelled))
            name = labelled["metadata"]["name"]
            wait_for("the new field on the Deployment's pods", lambda: get(cluster, "deployment", name, ns)[
                "spec"]["template"]["metadata"]["labels"].get("team") == "search", log)
            assert uids(cluster, manifests) == before
            assert proc.poll() is None, log.read_text()[-4000:]
        assert forbidden_lines(log) == [], "the operator was refused something after the upgrade"
    finally:
        helm("uninstall", release, "-n", release_ns, "--wait", kubeconfig=kc, check=False)
        for name in (ns, release_ns):
            cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
