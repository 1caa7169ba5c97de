"""`KeepAliveFetcher.fetch_many`: a whole sweep of pods read with one wait, against real local HTTP servers.

What it must keep from one GET per task: a page or the reason per pod, in order; one kept connection per pod across
sweeps; a per-pod timeout (a slow pod costs the sweep its timeout, not the others' answers); a kept connection the
pod closed is tried once more on a new one. What it must not do: a task per pod.
"""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
import time

import pytest
from aiohttp import web

from tei_operator.autoscaling.sources import PodTarget, ServiceTarget
from tei_operator.autoscaling.sources.scrape import KeepAliveFetcher, ScrapeError, ScrapeSource

PAGE = "# TYPE te_queue_size gauge\nte_queue_size 2\n"


async def _site(runner: web.AppRunner, host: str = "127.0.0.1") -> int:
    site = web.TCPSite(runner, host, 0)
    await site.start()
    return site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the port the OS picked


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pods:
    """aiohttp answering by port: `ok` (a page), `slow` (1 s late), `e503` (an error); counts the connections."""

    def __init__(self) -> None:
        # (port, the server side of the connection): held, so two connections are never one object. A client's
        # (address, port) would not do: Linux gives connections to different addresses the same local port.
        self.peers: list[tuple[int, object]] = []
        self.ports: dict[str, int] = {}

    async def start(self) -> Pods:
        async def handle(request: web.Request) -> web.StreamResponse:
            port = request.transport.get_extra_info("sockname")[1]
            self.peers.append((port, request.transport))
            if port == self.ports["slow"]:
                await asyncio.sleep(1.0)
            if port == self.ports["e503"]:
                return web.Response(status=503, text="loading")
            return web.Response(text=PAGE, content_type="text/plain")

        app = web.Application()
        app.router.add_get("/metrics", handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        for name in ("ok", "slow", "e503"):
            self.ports[name] = await _site(self.runner)
        return self

    def connections(self, name: str) -> int:
        return len({id(peer) for port, peer in self.peers if port == self.ports[name]})


async def _answer_page(writer: asyncio.StreamWriter) -> None:
    body = PAGE.encode()
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + str(len(body)).encode()
                 + b"\r\n\r\n" + body)
    await writer.drain()


async def _serve_pages(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A pod: the page to every request, on a kept-alive connection."""
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            await _answer_page(writer)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()


async def _flaky_server() -> tuple[asyncio.Server, list[int]]:
    """Answers the first request of a connection (kept alive) and closes the connection at its second one without
    an answer: a pod whose keep-alive timeout crossed the next request. Returns the server and, per connection,
    how many requests it saw."""
    seen: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(0)
        index = len(seen) - 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                seen[index] += 1
                if seen[index] > 1:
                    break
                await _answer_page(writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), seen


def pod(name: str, port: int | None, ip: str | None = "127.0.0.1") -> PodTarget:
    return PodTarget("ns", name, f"uid-{name}", ip, port or 80, 0.0)


async def test_a_sweep_answers_every_pod_in_order_within_one_timeout_and_keeps_connections():
    pods = await Pods().start()
    flaky, seen = await _flaky_server()
    targets = [pod("ok", pods.ports["ok"]), pod("slow", pods.ports["slow"]), pod("e503", pods.ports["e503"]),
               pod("noip", None, ip=None), pod("refused", _closed_port()),
               pod("flaky", flaky.sockets[0].getsockname()[1])]
    fetcher = KeepAliveFetcher()
    try:
        for sweep in (1, 2):
            started = time.monotonic()
            answers = await fetcher.fetch_many(targets, 0.4)
            elapsed = time.monotonic() - started
            ok, slow, e503, noip, refused, flaky_answer = answers
            assert ok == PAGE and flaky_answer == PAGE, (sweep, answers)
            assert isinstance(slow, TimeoutError), (sweep, slow)
            assert isinstance(e503, ScrapeError) and "answered 503" in str(e503)
            assert isinstance(noip, ScrapeError) and "no IP" in str(noip)
            assert isinstance(refused, ScrapeError) and "ConnectionRefusedError" in str(refused)
            assert 0.35 < elapsed < 0.9, f"sweep {sweep} took {elapsed:.2f}s with a 0.4 s timeout"
        # Two sweeps: the good pod over one kept connection; the slow pod's connection was closed at its timeout
        # (its answer could still come) and a new one opened; the flaky pod closed the kept connection at the
        # second request, which went once more over a new connection (2 connections, 3 requests).
        assert pods.connections("ok") == 1
        assert pods.connections("slow") == 2
        assert seen == [2, 1]
    finally:
        await fetcher.close()
        flaky.close()
        await pods.runner.cleanup()


async def test_a_sweep_of_kept_connections_runs_without_a_task_per_pod():
    pods = await Pods().start()
    app_port = await _site(pods.runner, "0.0.0.0")  # answers at 127.0.0.N: one address per simulated pod
    pods.ports["any"] = app_port
    targets = [pod(f"p{n}", app_port, ip=f"127.0.0.{n}") for n in range(1, 41)]
    fetcher = KeepAliveFetcher()
    created: list[str] = []
    loop = asyncio.get_running_loop()

    def factory(loop: asyncio.AbstractEventLoop, coro, **kwargs) -> asyncio.Task:
        code = getattr(coro, "cr_code", None)
        if code is not None and "tei_operator" in code.co_filename:  # not the test server's own tasks
            created.append(coro.__qualname__)
        return asyncio.Task(coro, loop=loop, **kwargs)

    try:
        assert await fetcher.fetch_many(targets, 2.0) == [PAGE] * 40  # connects: a worker per pod in flight
        loop.set_task_factory(factory)
        try:
            assert await fetcher.fetch_many(targets, 2.0) == [PAGE] * 40
        finally:
            loop.set_task_factory(None)
        assert len(created) <= 2, created
        assert pods.connections("any") == 40  # one connection per pod, kept from the first sweep
    finally:
        await fetcher.close()
        await pods.runner.cleanup()


async def test_the_scrape_source_reads_a_sweep_at_once_and_names_a_timeout():
    pods = await Pods().start()
    source = ScrapeSource(KeepAliveFetcher(), timeout=0.3, window=10)
    service = ServiceTarget("ns", "svc", (pod("ok", pods.ports["ok"]), pod("slow", pods.ports["slow"])))
    try:
        result = await source.fetch([service], 100.0)
    finally:
        await source.close()
        await pods.runner.cleanup()
    assert result.pods["uid-ok"].queue_size == 2
    assert "uid-slow" not in result.pods
    assert result.pod_errors["uid-slow"] == "/metrics did not answer within 0.3s"


@pytest.mark.parametrize("answer", [PAGE, ScrapeError("GET /metrics answered 503"), TimeoutError()])
def test_a_sweep_answer_reads_as_the_per_pod_path_would(answer):
    source = ScrapeSource(KeepAliveFetcher(), timeout=2, window=10)
    uid, sample, t, error = source._read("u", answer, 101.0, 100.0)  # noqa: SLF001
    if isinstance(answer, str):
        assert sample is not None and sample.queue_size == 2 and t == 101.0 and error is None
    else:
        assert sample is None and t == 100.0
        assert error == ("/metrics did not answer within 2s" if isinstance(answer, TimeoutError) else str(answer))


async def test_answers_that_trickle_in_are_read_several_per_poll_and_the_poll_stops_with_the_sweep():
    """Pods answering 1 ms apart (a busy machine, pods at their own pace): the fetcher's own selector is polled a
    few times for the sweep, each pass reading every answer that came since, instead of the event loop waking once
    per answer; once every answer is in, nothing is polled any more."""
    delays: dict[str, float] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        delay = delays.get(writer.get_extra_info("sockname")[0], 0.0)
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await asyncio.sleep(delay)
                await _answer_page(writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "0.0.0.0", 0)
    port = server.sockets[0].getsockname()[1]
    targets = [pod(f"p{n}", port, ip=f"127.0.0.{n}") for n in range(1, 61)]
    for n in range(1, 61):
        delays[f"127.0.0.{n}"] = 0.001 * n
    fetcher = KeepAliveFetcher()
    try:
        assert await fetcher.fetch_many(targets, 2.0) == [PAGE] * 60  # connects
        polls = fetcher.polls
        assert await fetcher.fetch_many(targets, 2.0) == [PAGE] * 60
        swept = fetcher.polls - polls
        assert 1 <= swept < 60, swept  # fewer passes than answers (~18 for 60 answers over ~60 ms)
        await asyncio.sleep(0.2)
        assert fetcher.polls == polls + swept  # no poll without an answer awaited
    finally:
        await fetcher.close()
        server.close()
        await server.wait_closed()


def test_a_sweep_cancelled_with_its_event_loop_leaves_the_fetcher_working_in_the_next_loop():
    """A sweep cancelled while answers are awaited (its loop ends with it) closes the connections it waited on, and
    the next event loop gets polls of its own (the first loop's pending poll never runs)."""
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            requests.append(self.path)
            if len(requests) == 2:
                time.sleep(0.5)  # the second sweep's answer comes after it was cancelled
            body = PAGE.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target = pod("a", server.server_address[1])
    fetcher = KeepAliveFetcher()
    try:
        assert asyncio.run(fetcher.fetch_many([target], 2.0)) == [PAGE]  # connects, keeps the connection
        with pytest.raises(TimeoutError):
            asyncio.run(asyncio.wait_for(fetcher.fetch_many([target], 2.0), 0.1))
        assert not fetcher._busy  # noqa: SLF001 - nothing is awaited any more
        started = time.monotonic()
        assert asyncio.run(fetcher.fetch_many([target], 2.0)) == [PAGE]  # a new connection, polled in this loop
        assert time.monotonic() - started < 1.5
    finally:
        asyncio.run(fetcher.close())
        server.shutdown()
        server.server_close()


async def test_a_failure_while_reading_one_answer_leaves_the_others_read():
    class Failing(KeepAliveFetcher):
        failing = False

        def _answered(self, key, connection, answer, now):
            if self.failing and key[0] == "127.0.0.2":
                raise RuntimeError("a bug while handling one answer")
            return super()._answered(key, connection, answer, now)

    server = await asyncio.start_server(_serve_pages, "0.0.0.0", 0)
    port = server.sockets[0].getsockname()[1]
    targets = [pod("a", port, ip="127.0.0.1"), pod("b", port, ip="127.0.0.2"), pod("c", port, ip="127.0.0.3")]
    fetcher = Failing()
    try:
        assert await fetcher.fetch_many(targets, 0.5) == [PAGE] * 3  # connects
        fetcher.failing = True
        answers = await fetcher.fetch_many(targets, 0.5)  # kept connections: read by the poll
        assert answers[0] == PAGE and answers[2] == PAGE and isinstance(answers[1], ScrapeError)
    finally:
        await fetcher.close()
        server.close()
        await server.wait_closed()
