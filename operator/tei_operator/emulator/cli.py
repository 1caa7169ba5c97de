"""The emulator as a process: flags and environment in, logs out, graceful stop on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence

from tei_operator.emulator.config import EmulatorConfig, EmulatorConfigError, parse_config
from tei_operator.emulator.server import EmulatorServer

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


async def serve(config: EmulatorConfig) -> None:
    """Load (wait), listen, and on SIGTERM/SIGINT stop accepting and finish what is in flight.

    A signal during the loading time ends the process at once, as nothing is in flight yet.
    """
    server = EmulatorServer(config)
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
    try:
        config = parse_config(argv, os.environ)
    except EmulatorConfigError as exc:
        print(f"tei-emulator: error: {exc}", file=sys.stderr)
        return 2
    _configure_logging(config.json_output)
    log.info("Started TEI emulator %s", config.describe())
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        log.error("Failed to listen on %s:%s: %s", config.host, config.port, exc)
        return 1
    return 0
