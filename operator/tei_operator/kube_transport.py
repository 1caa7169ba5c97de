"""How `KubeClient` reaches the API server: one aiohttp connection pool, no threads.

The credentials come from kube_credentials.py (a kubeconfig, or the in-cluster service account with its rotating
token; exec credential plugins), read as kubectl reads them; the requests are plain aiohttp calls. A request the API
server refuses with 401 is sent once more after the credentials are fetched again, when that can help (a token file
or an exec plugin may have a newer one).

A pool belongs to the event loop it was opened in (aiohttp's rule). The operator runs one loop, but tests and
tools sometimes call one client from several loops in turn (`asyncio.run` per call, a module-scoped fixture
shared by function-scoped loops): the transport then retires the old loop's pool and opens one in the new loop.
Two loops using one client at the same time (two threads) is not supported: give each thread its own client.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Generator, Mapping
from typing import Any

import aiohttp

from .kube_credentials import Credentials, CredentialSource, StaticSource, credential_source

DEFAULT_POOL_SIZE = 32  # connections to the API server; a request beyond that waits for a free one
READ_BUFFER_BYTES = 2**21  # a List of large objects can exceed aiohttp's 64 KiB default line/chunk buffer


@dataclasses.dataclass(frozen=True)
class RawResponse:
    """What came back, undecoded: `KubeClient` maps it to a dict or a `KubeApiError`."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes


def source_for(kubeconfig: str | None = None) -> CredentialSource:
    """The credentials to use: an explicit kubeconfig, else $KUBECONFIG or ~/.kube/config, else the in-cluster
    service account (kube_credentials.credential_source). The files are read and checked here, so a missing or
    broken kubeconfig fails at start-up, not at the first request."""
    return credential_source(kubeconfig)


class _Closing:
    """What `ApiTransport.close()` returns: awaiting it waits until the sockets are closed; a synchronous caller
    may drop it (the pool is closed either way, and unlike a coroutine it warns about nothing)."""

    def __init__(self, tasks: list[asyncio.Future]) -> None:
        self._tasks = tasks

    def __await__(self) -> Generator[Any, None, None]:
        if self._tasks:
            yield from asyncio.gather(*self._tasks, return_exceptions=True).__await__()


class ApiTransport:
    """One aiohttp session (connection pool of `pool_size`) to the API server, opened on first use. `source`: the
    credentials (a `CredentialSource`, or fixed `Credentials`)."""

    def __init__(self, source: CredentialSource | Credentials, *, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1 connection, got {pool_size}")
        self.source = StaticSource(source) if isinstance(source, Credentials) else source
        self.pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tls: tuple[Any, ...] | None = None  # what the open pool's TLS context was built from

    @property
    def host(self) -> str:
        return self.source.server.rstrip("/")

    def _open(self, creds: Credentials) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        tls = creds.tls_identity()
        if self._session is not None and self._loop is loop and not self._session.closed and self._tls == tls:
            return self._session
        if self._session is not None:
            # Another loop's pool, or the TLS identity changed (an exec plugin's new client certificate).
            self._retire(self._session, self._loop)
        connector = aiohttp.TCPConnector(limit=self.pool_size, limit_per_host=self.pool_size,
                                         ssl=creds.ssl_context())
        self._session = aiohttp.ClientSession(connector=connector, read_bufsize=READ_BUFFER_BYTES,
                                              auto_decompress=True, raise_for_status=False)
        self._loop, self._tls = loop, tls
        return self._session

    async def send(self, method: str, path_and_query: str, *, headers: Mapping[str, str], data: bytes | None,
                   timeout: float) -> RawResponse:
        """One request, read to the end within `timeout` seconds in all. Raises aiohttp/asyncio errors for a
        server that could not be reached or did not answer in time, `CredentialsError` for credentials that could
        not be read (the caller maps them)."""
        response = await self._send_once(method, path_and_query, headers, data, timeout)
        if response.status == 401 and self.source.refreshable:
            self.source.invalidate()  # a rotated token file, an exec credential revoked before its expiry
            response = await self._send_once(method, path_and_query, headers, data, timeout)
        return response

    async def _send_once(self, method: str, path_and_query: str, headers: Mapping[str, str], data: bytes | None,
                         timeout: float) -> RawResponse:
        creds = await self.source.get()
        session = self._open(creds)
        authorization = creds.authorization()
        all_headers = {**headers, "Authorization": authorization} if authorization else dict(headers)
        async with session.request(method, self.host + path_and_query, headers=all_headers, data=data,
                                   timeout=aiohttp.ClientTimeout(total=timeout), proxy=creds.proxy_url,
                                   server_hostname=creds.tls_server_name) as response:
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
