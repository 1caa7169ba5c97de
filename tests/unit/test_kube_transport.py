"""The client's transport without a cluster: credentials that load asynchronously (exec plugins, token files) are
loaded once, before any request goes out, however many requests come at once."""

import asyncio

from aiohttp import web
from tei_operator.kube import KubeClient
from tei_operator.kube_credentials import Credentials, CredentialSource
from tei_operator.kube_transport import ApiTransport


class SlowSource(CredentialSource):
    """Like an exec credential plugin, it takes a while to hand out a token."""

    def __init__(self, host: str) -> None:
        super().__init__()
        self.host = host
        self.loads = 0

    @property
    def server(self) -> str:
        return self.host

    async def _fetch(self) -> Credentials:
        self.loads += 1
        await asyncio.sleep(0.05)
        return Credentials(server=self.host, token="t0ken")


async def _serve_namespaces(seen: list[str | None] | None = None) -> tuple[web.AppRunner, str]:
    """A local server answering GET /api/v1/namespaces/NAME; records each request's Authorization in `seen`."""
    async def namespace(request: web.Request) -> web.Response:
        if seen is not None:
            seen.append(request.headers.get("Authorization"))
        return web.json_response({"kind": "Namespace", "metadata": {"name": request.match_info["name"]}})

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/{name}", namespace)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # noqa: SLF001


async def test_concurrent_first_requests_wait_for_the_one_credential_load():
    seen: list[str | None] = []
    runner, url = await _serve_namespaces(seen)
    loader = SlowSource(url)
    kube = KubeClient(ApiTransport(loader), timeout=5)
    try:
        answers = await asyncio.gather(*(kube.request("GET", "/api/v1/namespaces/ns") for _ in range(10)))
    finally:
        await kube.close()
        await runner.cleanup()
    assert [a["metadata"]["name"] for a in answers] == ["ns"] * 10
    assert loader.loads == 1 and seen == ["Bearer t0ken"] * 10


def test_a_close_nobody_awaits_still_closes_the_pool(caplog):
    """`kube.close()` without await as the last thing before asyncio.run ends (a thread's loop, a sync caller)."""
    import gc
    import warnings

    async def use_and_drop() -> None:
        runner, url = await _serve_namespaces()
        kube = KubeClient.for_host(url)
        try:
            assert (await kube.request("GET", "/api/v1/namespaces/a"))["metadata"]["name"] == "a"
        finally:
            await runner.cleanup()
        kube.close()  # the last thing the loop does

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(use_and_drop())
        gc.collect()
    complaints = [str(w.message) for w in caught if "Unclosed" in str(w.message) or "never awaited" in str(w.message)]
    complaints += [r.getMessage() for r in caplog.records if "Unclosed" in r.getMessage()]
    assert complaints == []
