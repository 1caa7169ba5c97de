"""The operator's HTTP endpoints: /healthz and /readyz on the health port, /metrics on the metrics port.

They run in the operator's event loop from the moment it starts, on the leader and on a standby alike (kopf's own
liveness endpoint only exists while kopf runs, that is on the leader):
- /healthz (liveness): 200 while the event loop answers. A stuck loop times out the kubelet's probe.
- /readyz (readiness): 200 when this replica can do its job: the leader has started its controller, a standby reads
  the Lease (it reaches the API server and can take over); 503 with the reason otherwise. A standby is Ready on
  purpose: the operator's PodDisruptionBudget counts Ready pods, and a drain must be able to evict one replica.
- /metrics: the Prometheus text format of `metrics.METRICS`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from ..metrics import CONTENT_TYPE, METRICS, OperatorMetrics

logger = logging.getLogger("tei_operator.controller")

Readiness = Callable[[], tuple[bool, str]]


class EndpointError(RuntimeError):
    """An endpoint could not listen (port taken, address unknown); the message names the setting."""


class Endpoints:
    """Start with `await start()`, stop with `await close()`."""

    def __init__(self, host: str, health_port: int, metrics_port: int, readiness: Readiness, *,
                 metrics: OperatorMetrics = METRICS) -> None:
        self.host = host
        self.health_port = health_port
        self.metrics_port = metrics_port
        self.readiness = readiness
        self.metrics = metrics
        self._runners: list[web.AppRunner] = []

    async def start(self) -> None:
        health = web.Application()
        health.router.add_get("/healthz", self._healthz)
        health.router.add_get("/readyz", self._readyz)
        await self._serve(health, self.health_port, "TEI_OPERATOR_HEALTH_PORT")
        if self.metrics_port:
            served = web.Application()
            served.router.add_get("/metrics", self._metrics)
            await self._serve(served, self.metrics_port, "TEI_OPERATOR_METRICS_PORT")
        logger.info("Serving /healthz and /readyz on %s:%d%s", self.host, self.health_port,
                    f", /metrics on {self.host}:{self.metrics_port}" if self.metrics_port else " (metrics off)")

    async def _serve(self, app: web.Application, port: int, setting: str) -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, port).start()
        except OSError as exc:
            await runner.cleanup()
            await self.close()
            raise EndpointError(f"cannot listen on {self.host}:{port} ({setting}, TEI_OPERATOR_HEALTH_HOST): "
                                f"{exc.strerror or exc}") from None
        self._runners.append(runner)

    async def close(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        ready, why = self.readiness()
        return web.Response(status=200 if ready else 503, text=why + "\n")

    async def _metrics(self, _request: web.Request) -> web.Response:
        response = web.Response(body=self.metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response
