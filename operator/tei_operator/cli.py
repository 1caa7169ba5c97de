"""`tei-operator`: run the operator, print the CRDs or the API reference, render manifests, run the TEI emulator.

`crds`, `docs` and `render` need no cluster and no controller code: the controller and the emulator are imported
only by the commands that use them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import yaml

from .api import API_VERSION, KINDS, InvalidSpecError, ServiceResource
from .settings import SettingsError, load_settings

EXIT_INVALID = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tei-operator",
        description="Kubernetes operator for Hugging Face Text Embeddings Inference (TEI) on GPUs.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="start the operator (settings from TEI_OPERATOR_* variables)")
    run.add_argument("-n", "--namespace", action="append", default=[], metavar="NS",
                     help="watch this namespace (repeatable); overrides TEI_OPERATOR_NAMESPACES")
    run.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    run.add_argument("--liveness", metavar="URL",
                     help="serve the liveness endpoint at this URL, e.g. http://0.0.0.0:8080/healthz "
                     "(overrides TEI_OPERATOR_HEALTH_HOST and TEI_OPERATOR_HEALTH_PORT)")

    crds = sub.add_parser("crds", help="print the CustomResourceDefinitions (multi-document YAML)")
    crds.add_argument("--output-dir", type=Path, metavar="DIR",
                      help="write one file per kind into DIR (as in crds/) instead of printing")

    render = sub.add_parser("render", help="print the children the operator would create for the services in FILEs")
    render.add_argument("-f", "--filename", action="append", required=True, metavar="FILE",
                        help="manifest file, multi-document YAML; '-' reads standard input (repeatable)")
    render.add_argument("-n", "--namespace", default="default", metavar="NS",
                        help="namespace of services that set none (default: default)")

    docs = sub.add_parser("docs", help="print the API reference (Markdown)")
    docs.add_argument("--settings", action="store_true",
                      help="print the operator settings reference (docs/settings.md) instead")
    bench = sub.add_parser("bench", help="probe a live TEI service's capacity and recommend autoscaling settings "
                           "(docs/capacity-probe.md)")
    bench.add_argument("url", metavar="URL", help="base URL of one TEI replica or service, e.g. http://127.0.0.1:8080")
    bench.add_argument("--inputs-per-request", type=int, default=8, help="inputs per /embed request (default 8)")
    bench.add_argument("--words-per-input", type=int, default=100,
                       help="words per generated input, about 1.3 tokens each (default 100)")
    bench.add_argument("--texts", type=Path, metavar="FILE",
                       help="sample texts, one per line, instead of generated ones")
    bench.add_argument("--step-seconds", type=float, default=10.0, help="seconds per concurrency step (default 10)")
    bench.add_argument("--max-concurrency", type=int, default=256, help="last concurrency step (default 256)")
    bench.add_argument("--min-growth", type=float, default=0.05,
                       help="stop when tokens/s grows by this fraction or less (default 0.05)")
    bench.add_argument("--api-key", default=os.environ.get("TEI_API_KEY"),
                       help="bearer token (default: environment variable TEI_API_KEY)")
    bench.add_argument("--json", action="store_true", help="print the report as JSON")
    sub.add_parser("emulator", help="run the TEI emulator (arguments go to it; see `tei-operator emulator --help`)",
                   add_help=False)
    return parser


def _run(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.all_namespaces and args.namespace:
        print("tei-operator run: --namespace and --all-namespaces exclude each other", file=sys.stderr)
        return EXIT_INVALID
    if args.all_namespaces:
        overrides["namespaces"] = []
    elif args.namespace:
        overrides["namespaces"] = list(args.namespace)
    if args.liveness:
        url = urlsplit(args.liveness)
        if url.scheme != "http" or not url.hostname or url.path not in ("", "/healthz"):
            print(f"tei-operator run: --liveness must look like http://HOST:PORT/healthz (got {args.liveness!r})",
                  file=sys.stderr)
            return EXIT_INVALID
        overrides["health_host"] = url.hostname
        if url.port:
            overrides["health_port"] = url.port
    settings = load_settings(**overrides)
    from .controller.runner import run  # the controller is only needed here

    run(settings)
    return 0


def _crds(args: argparse.Namespace, out: TextIO) -> int:
    from .api.crd import crd_filename, crd_yaml, crds_yaml, generate_crd

    if args.output_dir is None:
        out.write(crds_yaml())
        return 0
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for info in KINDS.values():
        path = args.output_dir / crd_filename(info)
        path.write_text(crd_yaml(generate_crd(info)))
        print(f"Wrote {path}", file=sys.stderr)
    return 0


def _documents(filename: str) -> list[Any]:
    text = sys.stdin.read() if filename == "-" else Path(filename).read_text()
    return list(yaml.safe_load_all(text))


def render_files(filenames: Sequence[str], namespace: str, out: TextIO, err: TextIO) -> int:
    """Render every EmbeddingService/RerankerService in the files to `out`; report problems on `err`.

    Exit code 0, or 2 when a file cannot be read or a service is invalid (nothing is printed then, so a pipe into
    kubectl apply never applies half a set).
    """
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"tei-operator render: {exc}", file=err)
        return EXIT_INVALID
    from .api.unsupported import refusal_message
    from .render.cache import render_cache_pvc, render_download_job
    from .render.rollout import render_as_stored

    manifests: list[dict[str, Any]] = []
    problems: list[str] = []
    for filename in filenames:
        label = "<stdin>" if filename == "-" else filename
        try:
            documents = _documents(filename)
        except (OSError, yaml.YAMLError) as exc:
            problems.append(f"{label}: cannot read: {exc}")
            continue
        for doc in documents:
            if doc is None:
                continue
            if not isinstance(doc, dict):
                problems.append(f"{label}: a document is not a mapping ({type(doc).__name__})")
                continue
            kind, name = doc.get("kind"), (doc.get("metadata") or {}).get("name")
            if kind not in KINDS or doc.get("apiVersion") != API_VERSION:
                print(f"{label}: skipped {kind or '?'}/{name or '?'} ({doc.get('apiVersion')}): not an "
                      f"EmbeddingService or RerankerService of {API_VERSION}", file=err)
                continue
            try:
                resource = ServiceResource.from_body(doc, default_namespace=namespace)
            except InvalidSpecError as exc:
                problems += [f"{label}: {kind}/{name or '?'}: {line}" for line in exc.errors]
                continue
            refusal = refusal_message(resource.spec.model.id, (doc.get("metadata") or {}).get("annotations"))
            if refusal is not None:  # valid, but the operator will not roll it out (docs/troubleshooting.md)
                print(f"{label}: warning: {kind}/{name or '?'}: UnsupportedModel: {refusal}", file=err)
            if resource.spec.cache.managed is not None:  # the claim and its download Job come first (model-cache.md)
                manifests += [render_cache_pvc(resource), render_download_job(resource, settings)]
            manifests += render_as_stored(resource, settings, doc.get("status")).all()
    if problems:
        for line in problems:
            print(line, file=err)
        return EXIT_INVALID
    if manifests:
        out.write(yaml.safe_dump_all(manifests, sort_keys=False, explicit_start=True))
    return 0


def _bench(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import asyncio

    from .probe import ProbeError, format_report, run_probe

    texts = None
    if args.texts is not None:
        try:
            texts = [line.strip() for line in args.texts.read_text().splitlines() if line.strip()]
        except OSError as exc:
            print(f"tei-operator bench: --texts: cannot read {args.texts}: {exc}", file=err)
            return EXIT_INVALID
    try:
        report = asyncio.run(run_probe(
            args.url, inputs_per_request=args.inputs_per_request, words_per_input=args.words_per_input, texts=texts,
            step_seconds=args.step_seconds, max_concurrency=args.max_concurrency, min_growth=args.min_growth,
            api_key=args.api_key))
    except ValueError as exc:
        print(f"tei-operator bench: {exc}", file=err)
        return EXIT_INVALID
    except ProbeError as exc:
        print(f"tei-operator bench: {exc}", file=err)
        return 1
    out.write(json.dumps(report.to_dict(), indent=2) + "\n" if args.json else format_report(report))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tei-operator` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "emulator":
        from .emulator import main as emulator_main  # written separately; loaded only for this command

        return int(emulator_main(argv[1:]) or 0)
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "crds":
            return _crds(args, sys.stdout)
        if args.command == "render":
            return render_files(args.filename, args.namespace, sys.stdout, sys.stderr)
        if args.command == "bench":
            return _bench(args, sys.stdout, sys.stderr)
        if args.command == "docs":
            if args.settings:
                from .settings import settings_reference_markdown

                sys.stdout.write(settings_reference_markdown())
                return 0
            from .api.docs import api_reference_markdown

            sys.stdout.write(api_reference_markdown())
            return 0
    except SettingsError as exc:
        print(f"tei-operator: {exc}", file=sys.stderr)
        return EXIT_INVALID
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
