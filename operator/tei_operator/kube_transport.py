"""How `KubeClient` reaches the API server: one aiohttp connection pool, no threads.

The credentials come from kubernetes_asyncio's config loaders (a kubeconfig, or the in-cluster service account with
its rotating token), so authentication behaves as in the official clients; the requests themselves are plain
aiohttp calls, because the operator sends dicts with content types the generated per-kind methods do not offer.

A pool belongs to the event loop it was opened in (aiohttp's rule). The operator runs one loop, but tests and
tools sometimes call one client from several loops in turn (`asyncio.run` per call, a module-scoped fixture
shared by function-scoped loops): the transport then retires the old loop's pool and opens one in the new loop.
Two loops using one client at the same time (two threads) is not supported: give each thread its own client.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import ssl
from collections.abc import Awaitable, Generator, Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio.client import Configuration
from kubernetes_asyncio.config import kube_config
from kubernetes_asyncio.config.incluster_config import load_incluster_config

DEFAULT_POOL_SIZE = 32  # connections to the API server; a request beyond that waits for a free one
READ_BUFFER_BYTES = 2**21  # a List of large objects can exceed aiohttp's 64 KiB default line/chunk buffer


@dataclasses.dataclass(frozen=True)
class RawResponse:
    """What came back, undecoded: `KubeClient` maps it to a dict or a `KubeApiError`."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes


def configuration_for(kubeconfig: str | None = None) -> tuple[Configuration, Any]:
    """The connection settings to load: an explicit kubeconfig, else $KUBECONFIG or ~/.kube/config, else the
    in-cluster service account. Returns the Configuration and, for a kubeconfig, the loader whose (asynchronous)
    `load_and_set` fills it in on first use; the file is read and its current context checked here, so a missing
    or broken kubeconfig fails at start-up, not at the first request."""
    configuration = Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG")
    default = os.path.expanduser(kube_config.KUBE_CONFIG_DEFAULT_LOCATION)
    if path or os.path.exists(default):
        merged = kube_config.KubeConfigMerger(path or default)
        # persist_config off: never write refreshed tokens back into the user's kubeconfig.
        return configuration, kube_config.KubeConfigLoader(config_dict=merged.config, config_base_path=None)
    load_incluster_config(client_configuration=configuration)
    return configuration, None


def _ssl_context(configuration: Configuration) -> ssl.SSLContext | bool:
    if not configuration.host.startswith("https:"):
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _Closing:
    """What `ApiTransport.close()` returns: awaiting it waits until the sockets are closed; a synchronous caller
    may drop it (the pool is closed either way, and unlike a coroutine it warns about nothing)."""

    def __init__(self, tasks: list[asyncio.Future]) -> None:
        self._tasks = tasks

    def __await__(self) -> Generator[Any, None, None]:
        if self._tasks:
            yield from asyncio.gather(*self._tasks, return_exceptions=True).__await__()


class ApiTransport:
    """One aiohttp session (connection pool of `pool_size`) to the API server, opened on first use."""

    def __init__(self, configuration: Configuration, *, pool_size: int = DEFAULT_POOL_SIZE,
                 loader: Any = None) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1 connection, got {pool_size}")
        self.configuration = configuration
        self.pool_size = pool_size
        self._loader = loader  # a KubeConfigLoader still to apply (asynchronous: exec plugins, token files)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ssl: ssl.SSLContext | bool | None = None
        self._loading: asyncio.Task | None = None

    @property
    def host(self) -> str:
        return self.configuration.host.rstrip("/")

    async def _open(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is not None and self._loop is loop and not self._session.closed:
            return self._session
        if self._loader is not None:
            # Every request that comes before the credentials are loaded waits for the one load (a second load
            # racing it would do no harm, but a request must not go out before it ends).
            if self._loading is None or self._loading.get_loop() is not loop:
                self._loading = loop.create_task(self._load())
            await asyncio.shield(self._loading)
            if self._session is not None and self._loop is loop and not self._session.closed:
                return self._session  # opened by another request while this one waited
        if self._session is not None:
            self._retire(self._session, self._loop)
        if self._ssl is None:
            self._ssl = _ssl_context(self.configuration)
        connector = aiohttp.TCPConnector(limit=self.pool_size, limit_per_host=self.pool_size, ssl=self._ssl)
        self._session = aiohttp.ClientSession(connector=connector, read_bufsize=READ_BUFFER_BYTES,
                                              auto_decompress=True, raise_for_status=False)
        self._loop = loop
        return self._session

    async def _load(self) -> None:
        try:
            await self._loader.load_and_set(self.configuration)
        except BaseException:
            self._loading = None  # the next request tries again
            raise
        self._loader = None
        self._ssl = None  # the loader may have set the CA and client certificate

    async def _auth_headers(self) -> dict[str, str]:
        # Runs the refresh hook of the loaders (in-cluster token rotation, exec plugins) when they set one.
        token = await self.configuration.get_api_key_with_prefix("BearerToken")
        if token:
            return {"Authorization": token}
        if self.configuration.username or self.configuration.password:
            return {"Authorization": self.configuration.get_basic_auth_token()}
        return {}

    async def send(self, method: str, path_and_query: str, *, headers: Mapping[str, str], data: bytes | None,
                   timeout: float) -> RawResponse:
        """One request, read to the end within `timeout` seconds in all. Raises aiohttp/asyncio errors for a
        server that could not be reached or did not answer in time (the caller maps them)."""
        session = await self._open()
        all_headers = {**headers, **await self._auth_headers()}
        async with session.request(method, self.host + path_and_query, headers=all_headers, data=data,
                                   timeout=aiohttp.ClientTimeout(total=timeout),
                                   server_hostname=self.configuration.tls_server_name or None) as response:
            body = await response.read()
            return RawResponse(response.status, response.reason or "", dict(response.headers), body)

    def close(self) -> Awaitable[None]:
        """Close the pool. In the pool's own running loop, `await` it to wait for the sockets; called from
        synchronous code (a fixture's teardown) it closes them at once."""
        session, loop = self._session, self._loop
        self._session = self._loop = None
        if session is None:
            return _Closing([])
        return _Closing(self._retire(session, loop))

    @staticmethod
    def _retire(session: aiohttp.ClientSession, loop: asyncio.AbstractEventLoop | None) -> list[asyncio.Future]:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and loop is running:
            return [loop.create_task(session.close())]
        if loop is not None and not loop.is_closed() and not loop.is_running():
            loop.run_until_complete(session.close())
            return []
        # The pool's loop is gone (or runs in another thread): its sockets died with it. Mark the connector
        # closed without touching that loop; aiohttp has no public synchronous close for this case.
        connector = session.connector
        session.detach()
        if connector is not None:
            connector._close()  # noqa: SLF001 - see above
        return []
