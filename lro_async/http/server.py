"""Run an ASGI app on uvicorn inside an asyncio program, beside a gRPC server (``http`` extra)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import socket
import ssl
from collections.abc import AsyncIterator, Iterator

from .app import ASGIApp

try:
    import uvicorn
except ModuleNotFoundError as exc:  # pragma: no cover - the extra is installed in tests
    raise ImportError("serving HTTP needs the http extra: pip install 'lro-async[http]'") from exc

__all__ = ["HttpServer", "running_http_server"]


@dataclasses.dataclass(frozen=True)
class HttpServer:
    """A started HTTP server: the address it listens on, and whether it is HTTPS."""

    host: str
    port: int
    tls: bool = False

    @property
    def url(self) -> str:
        """``http(s)://host:port``, the base URL for :meth:`AsyncOperationsClient.from_url`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


class _Embedded(uvicorn.Server):
    """A uvicorn server that leaves signals to the program and says when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self.should_exit = True
        self._stopping.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the embedding program decides when to stop, not SIGINT

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()

    async def main_loop(self) -> None:
        # uvicorn's ticks every 0.1 s (for its Date header) and looks at should_exit;
        # this one ticks alike but also stops the moment stop() is called.
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864_000
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):
                    await self._stopping.wait()


@contextlib.asynccontextmanager
async def running_http_server(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    grace: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[HttpServer]:
    """Serve *app* with uvicorn on ``host:port`` (0: a free port) until the block ends.

    On exit the server stops accepting connections, closes idle ones and gives requests
    in flight *grace* seconds before they are cancelled. Stop an :class:`OperationManager`
    (``drain``) alongside, so that ``:wait`` requests answer at once.

    >>> async def main(manager: lro_async.OperationManager) -> None:
    ...     async with running_http_server(lro_async.http.asgi_app(manager)) as server:
    ...         client = lro_async.AsyncOperationsClient.from_url(server.url)

    :param ssl_context: serve HTTPS with this server-side context (its certificate, and
        with ``verify_mode = CERT_REQUIRED`` the client certificates it trusts); None:
        plain HTTP.
    :raises OSError: if the address cannot be bound.
    """
    sock = _bind(host, port)
    config = uvicorn.Config(
        app,
        log_config=None,  # the program's logging, not uvicorn's
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=math.ceil(grace),  # whole seconds, as uvicorn types it
        server_header=False,
    )
    if ssl_context is not None:
        config.load()  # uvicorn builds its context from files in load(); ours replaces it
        config.ssl = ssl_context
    server = _Embedded(config)
    serving = asyncio.get_running_loop().create_task(
        server.serve(sockets=[sock]), name="lro_async:http-server"
    )
    try:
        await _listening(server, serving)
        bound = sock.getsockname()
        yield HttpServer(str(bound[0]), int(bound[1]), tls=ssl_context is not None)
    finally:
        server.stop()
        await asyncio.wait([serving])
        sock.close()


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    # With proto=IPPROTO_TCP (as getaddrinfo gives it), asyncio sets TCP_NODELAY on the
    # connections; with 0 it does not, and each response waits out a delayed ACK (40 ms).
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
        sock.setblocking(False)  # asyncio accepts in a loop until the socket would block
    except BaseException:
        sock.close()
        raise
    return sock


async def _listening(server: _Embedded, serving: asyncio.Task[None]) -> None:
    listening = asyncio.ensure_future(server.listening.wait())
    try:
        await asyncio.wait([serving, listening], return_when=asyncio.FIRST_COMPLETED)
    finally:
        listening.cancel()
    if serving.done():
        serving.result()
        raise OSError("the HTTP server stopped as it started")
