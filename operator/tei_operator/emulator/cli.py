"""The emulator as a process: flags and environment in, logs out, graceful stop on SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from tei_operator.emulator.config import EmulatorConfig, EmulatorConfigError, parse_config
from tei_operator.emulator.server import ApiOptions, EmulatorServer

log = logging.getLogger("tei_operator.emulator")


class _JsonFormatter(logging.Formatter):
    """One JSON object per line (`--json-output`), like TEI's JSON logs: timestamp, level, target, message."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({
            "timestamp": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "target": record.name,
            "message": record.getMessage(),
        })


def _configure_logging(json_output: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_output:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


#: Settings of what the emulated model is (beyond EmulatorConfig): flag -> (environment variable, ApiOptions field).
_OPTION_FLAGS: dict[str, tuple[str, str]] = {
    "--model-sha": ("EMULATOR_MODEL_SHA", "model_sha"),
    "--task": ("TASK", "task"),
    "--prompts": ("EMULATOR_PROMPTS", "prompts"),
    "--default-prompt-name": ("DEFAULT_PROMPT_NAME", "default_prompt_name"),
    "--default-prompt": ("DEFAULT_PROMPT", "default_prompt"),
}
#: Flags only this module reads (the others are TEI flags the configuration parser accepts and ignores).
_OWN_FLAGS = ("--model-sha", "--task", "--prompts")


def parse_options(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[ApiOptions, list[str]]:
    """The model's settings from `--model-sha`, `--task`/TASK (as in TEI, only `sentence-similarity` changes
    anything; other values are ignored), `--prompts` (a JSON object of prompt names to texts),
    `--default-prompt-name`, `--default-prompt`, and the arguments left for `parse_config`.

    Raises `EmulatorConfigError` naming the flag or variable at fault."""
    parser = argparse.ArgumentParser(add_help=False)
    for flag, (_env, field) in _OPTION_FLAGS.items():
        parser.add_argument(flag, dest=field, default=None)
    known, _rest = parser.parse_known_args(list(argv))
    values: dict[str, Any] = {}
    for flag, (env, field) in _OPTION_FLAGS.items():
        raw, source = getattr(known, field), flag
        if raw is None and environ.get(env, "") != "":
            raw, source = environ[env], env
        if raw is None:
            continue
        if field == "prompts":
            try:
                prompts = json.loads(raw)
            except ValueError as exc:
                raise EmulatorConfigError(f"{source}: expected a JSON object of prompt names to texts: {exc}") from None
            if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
                raise EmulatorConfigError(f"{source}: expected a JSON object of prompt names to texts, got {raw!r}")
            values[field] = prompts
        elif field == "model_sha" and not re.fullmatch(r"[0-9a-f]{40}", raw):
            raise EmulatorConfigError(f"{source}: expected a 40-character lowercase hex commit sha, got {raw!r}")
        else:
            values[field] = raw
    if values.get("default_prompt_name") and values.get("default_prompt"):
        raise EmulatorConfigError("--default-prompt-name and --default-prompt are mutually exclusive: set at most one")
    rest: list[str] = []
    skip = False
    for index, arg in enumerate(argv):  # drop the flags only this module knows; keep TEI's for parse_config
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in _OWN_FLAGS:
            skip = "=" not in arg and index + 1 < len(argv)
            continue
        rest.append(arg)
    return ApiOptions(**values), rest


async def serve(config: EmulatorConfig, options: ApiOptions | None = None) -> None:
    """Load (wait), listen, and on SIGTERM/SIGINT stop accepting and finish what is in flight.

    A signal during the loading time ends the process at once, as nothing is in flight yet.
    """
    server = EmulatorServer(config, options)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        starting = asyncio.create_task(server.start())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            await server.engine.stop()
            log.info("Received %s while loading model %s; exited", received[0], config.model_id)
            return
        stopping.cancel()
        starting.result()  # a bind error (port in use) surfaces here
        await stop.wait()
        log.info("Received %s; shutting down gracefully", received[0])
        await server.stop()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run(argv: Sequence[str] | None = None) -> int:
    """Parse flags and environment, then serve until a signal. Exit code 2 for bad settings, 1 for a bind error."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        try:
            parse_config(["--help"], {})
        finally:  # argparse printed TEI's flags and exits; add the ones this module reads
            print("\nwhat the emulated model is (docs/emulator.md):")
            for flag, (env, _field) in _OPTION_FLAGS.items():
                print(f"  {flag} VALUE  [env {env}]")
    try:
        options, rest = parse_options(args, os.environ)
        config = parse_config(rest, os.environ)
        options.default_prompt_text(config.model_id)  # a default prompt name the model lacks: TEI refuses to start
    except (EmulatorConfigError, ValueError) as exc:
        print(f"tei-emulator: error: {exc}", file=sys.stderr)
        return 2
    _configure_logging(config.json_output)
    log.info("Started TEI emulator %s model_sha=%s task=%s", config.describe(), options.resolved_sha(
        config.model_id, config.revision), options.task or "-")
    try:
        asyncio.run(serve(config, options))
    except OSError as exc:
        log.error("Failed to listen on %s:%s: %s", config.host, config.port, exc)
        return 1
    return 0
