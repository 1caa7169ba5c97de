"""The `tei-operator` command: crds, docs, render (exit 2 with field paths on bad input), run, emulator."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import yaml

from tei_operator import cli
from tei_operator.api.crd import crds_yaml
from tei_operator.api.docs import api_reference_markdown

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

GOOD = """
apiVersion: tei-operator.io/v1alpha1
kind: EmbeddingService
metadata: {name: bge-m3, namespace: search}
spec:
  model: {id: BAAI/bge-m3}
  gpu: {count: 1, type: h100}
  replicas: 2
---
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated}
---
apiVersion: tei-operator.io/v1alpha1
kind: RerankerService
metadata: {name: rerank}
spec:
  model: {id: BAAI/bge-reranker-v2-m3}
"""

BAD = """
apiVersion: tei-operator.io/v1alpha1
kind: EmbeddingService
metadata: {name: bge-m3}
spec:
  model: {id: BAAI/bge-m3}
  gpu: {count: -1}
---
apiVersion: tei-operator.io/v1alpha1
kind: RerankerService
metadata: {name: rr}
spec:
  model: {id: BAAI/bge-reranker-v2-m3, pooling: cls}
  autoscaling: {enabled: true}
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("TEI_OPERATOR_"):
            monkeypatch.delenv(name)


def test_crds_prints_every_crd(capsys):
    assert cli.main(["crds"]) == 0
    out = capsys.readouterr().out
    assert out == crds_yaml()
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(out)] == [
        "embeddingservices.tei-operator.io", "rerankerservices.tei-operator.io"]


def test_crds_output_dir(tmp_path):
    assert cli.main(["crds", "--output-dir", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["tei-operator.io_embeddingservices.yaml", "tei-operator.io_rerankerservices.yaml"]
    committed = Path(__file__).resolve().parents[2] / "crds"
    for name in written:
        assert (tmp_path / name).read_text() == (committed / name).read_text()


def test_docs(capsys):
    assert cli.main(["docs"]) == 0
    assert capsys.readouterr().out == api_reference_markdown()


def test_render_files_and_skips_other_kinds(tmp_path, capsys):
    manifest = tmp_path / "services.yaml"
    manifest.write_text(GOOD)
    assert cli.main(["render", "-f", str(manifest)]) == 0
    captured = capsys.readouterr()
    docs = list(yaml.safe_load_all(captured.out))
    assert [(d["kind"], d["metadata"]["name"], d["metadata"]["namespace"]) for d in docs] == [
        ("Deployment", "bge-m3", "search"), ("Service", "bge-m3", "search"), ("PodDisruptionBudget", "bge-m3", "search"),
        ("Deployment", "rerank", "default"), ("Service", "rerank", "default")]
    assert docs[0]["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":hopper-1.9.3")
    assert f"{manifest}: skipped ConfigMap/unrelated" in captured.err


def test_render_reads_stdin_and_several_files(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(GOOD))
    assert cli.main(["render", "-f", "-", "-f", str(EXAMPLES / "embedding-cpu.yaml"), "-n", "team"]) == 0
    names = [(d["kind"], d["metadata"]["name"], d["metadata"]["namespace"])
             for d in yaml.safe_load_all(capsys.readouterr().out)]
    assert ("Deployment", "rerank", "team") in names and ("Deployment", "bge-small-cpu", "team") in names


def test_render_refuses_bad_input_with_field_paths(tmp_path, capsys):
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(BAD)
    assert cli.main(["render", "-f", str(manifest)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing half-rendered for a pipe into kubectl apply
    lines = captured.err.splitlines()
    assert f"{manifest}: EmbeddingService/bge-m3: spec.gpu.count: must be >= 0 (got -1)" in lines
    assert any(line.startswith(f"{manifest}: RerankerService/rr: spec.model.pooling: unknown field") for line in lines)


def test_render_reports_unreadable_files(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [unclosed\n")
    assert cli.main(["render", "-f", str(broken), "-f", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"{broken}: cannot read" in err and "missing.yaml: cannot read" in err


def test_render_with_invalid_settings_names_the_variable(monkeypatch, capsys):
    monkeypatch.setenv("TEI_OPERATOR_SCRAPE_VIA", "carrier-pigeon")
    assert cli.main(["render", "-f", str(EXAMPLES / "embedding-cpu.yaml")]) == 2
    assert "TEI_OPERATOR_SCRAPE_VIA" in capsys.readouterr().err


def test_run_passes_settings_to_the_controller(monkeypatch):
    # The controller needs a cluster; here only what `run` hands it is checked.
    import tei_operator.controller.runner as runner

    seen = []
    monkeypatch.setattr(runner, "run", seen.append)
    assert cli.main(["run", "-n", "search", "--namespace", "rag", "--liveness", "http://0.0.0.0:9090/healthz"]) == 0
    assert seen[0].namespaces == ["search", "rag"]
    assert (seen[0].health_host, seen[0].health_port) == ("0.0.0.0", 9090)
    monkeypatch.setenv("TEI_OPERATOR_NAMESPACES", "a,b")
    assert cli.main(["run", "--all-namespaces"]) == 0
    assert seen[1].namespaces == []
    assert cli.main(["run"]) == 0
    assert seen[2].namespaces == ["a", "b"]


def test_run_refuses_contradictory_flags(capsys):
    assert cli.main(["run", "-n", "a", "-A"]) == 2
    assert cli.main(["run", "--liveness", "ftp://host/x"]) == 2
    assert "--liveness must look like" in capsys.readouterr().err


def test_emulator_gets_its_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["emulator", "--help"])
    assert exit_info.value.code == 0
    assert "--tokens-per-second" in capsys.readouterr().out  # the emulator's own flags, not ours


def test_render_warns_about_a_model_the_operator_will_not_roll_out(tmp_path, capsys):
    manifest = tmp_path / "qwen.yaml"
    manifest.write_text(yaml.safe_dump({
        "apiVersion": "tei-operator.io/v1alpha1", "kind": "RerankerService", "metadata": {"name": "qwen"},
        "spec": {"model": {"id": "Qwen/Qwen3-Reranker-4B"}, "gpu": {"count": 1, "type": "h100"}}}))
    assert cli.main(["render", "-f", str(manifest)]) == 0
    out = capsys.readouterr()
    assert "warning: RerankerService/qwen: UnsupportedModel: Model Qwen/Qwen3-Reranker-4B does not run" in out.err
    assert "kind: Deployment" in out.out  # still rendered, for review
