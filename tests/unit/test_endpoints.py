"""The operator's HTTP endpoints (controller/endpoints.py), served for real on loopback ports."""

from __future__ import annotations

import socket

import aiohttp
import pytest

from tei_operator.controller.endpoints import EndpointError, Endpoints
from tei_operator.metrics import OperatorMetrics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_health_readiness_and_metrics():
    state = {"ready": (False, "controller starting")}
    metrics = OperatorMetrics(process_collectors=False)
    metrics.set_leader(True)
    health, served = free_port(), free_port()
    endpoints = Endpoints("127.0.0.1", health, served, lambda: state["ready"], metrics=metrics)
    await endpoints.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{health}/healthz") as r:
                assert r.status == 200
            async with http.get(f"http://127.0.0.1:{health}/readyz") as r:
                assert (r.status, await r.text()) == (503, "controller starting\n")
            state["ready"] = (True, "ready: standby op-1_ab, Lease held by op-0_cd")
            async with http.get(f"http://127.0.0.1:{health}/readyz") as r:
                assert r.status == 200 and "standby" in await r.text()
            async with http.get(f"http://127.0.0.1:{served}/metrics") as r:
                assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
                assert "tei_operator_leader 1.0" in await r.text()
            async with http.get(f"http://127.0.0.1:{health}/metrics") as r:
                assert r.status == 404  # the metrics have their own port
    finally:
        await endpoints.close()


async def test_a_taken_port_is_an_error_naming_the_setting():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        endpoints = Endpoints("127.0.0.1", free_port(), port, lambda: (True, "ok"),
                              metrics=OperatorMetrics(process_collectors=False))
        with pytest.raises(EndpointError, match=f"cannot listen on 127.0.0.1:{port} \\(TEI_OPERATOR_METRICS_PORT"):
            await endpoints.start()


async def test_metrics_port_zero_serves_no_metrics():
    health = free_port()
    endpoints = Endpoints("127.0.0.1", health, 0, lambda: (True, "ok"),
                          metrics=OperatorMetrics(process_collectors=False))
    await endpoints.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{health}/readyz") as r:
                assert r.status == 200
    finally:
        await endpoints.close()
