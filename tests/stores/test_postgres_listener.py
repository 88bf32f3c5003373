"""PostgresStore's LISTEN connection notices a peer that went silent, through its pings.

A connection whose peer vanishes without closing it (a dead host, a dropped NAT entry, a
frozen proxy) sends no termination event; only the listener's pings find it out. The test
puts a TCP proxy between the store and PostgreSQL and freezes the connections it carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import AsyncIterator

import pytest

from lro_async import Backoff
from lro_async.stores import PostgresStore

from ..waiting import until
from .conftest import MakePostgres, admin_connection
from .test_postgres import Inbox, running

pytestmark = pytest.mark.postgres

PING = "SELECT 1"  # what the listener sends an idle LISTEN connection


class FreezingProxy:
    """Forwards TCP connections to a server; :meth:`freeze` silences those open now.

    A frozen connection stays open in both directions but carries no more bytes, as a
    peer that vanished without a FIN or RST would look. Later connections work normally.
    """

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._frozen = asyncio.Event()  # replaced by freeze(): new connections get a fresh one
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0
        self.upstream_ports: list[int] = []  # the client_port PostgreSQL sees for each

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        self._frozen.set()
        self._frozen = asyncio.Event()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        self.upstream_ports.append(up_writer.get_extra_info("sockname")[1])
        self._writers += [writer, up_writer]
        frozen = self._frozen
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink, frozen))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pump(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, frozen: asyncio.Event
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while not frozen.is_set():
                read = asyncio.ensure_future(source.read(65536))
                stop = asyncio.ensure_future(frozen.wait())
                await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                if frozen.is_set():
                    read.cancel()
                    return
                data = read.result()
                if not data:
                    sink.close()
                    return
                sink.write(data)
                await sink.drain()


async def _pinged(dsn: str, application_name: str, ports: list[int], *, pings: int) -> None:
    """Wait until PostgreSQL has run *pings* pings on the one backend of *application_name*
    that came in from one of *ports* (through the proxy)."""
    admin = await admin_connection(dsn)
    query = (
        "SELECT pid, query, state_change FROM pg_stat_activity"
        " WHERE application_name = $1 AND client_port = ANY($2::int[])"
    )
    seen: set[object] = set()  # the state_change of each ping the server ran
    backends: list[tuple[object, ...]] = []
    try:
        [first] = await admin.fetch(query, application_name, ports)

        async def counted() -> bool:
            backends[:] = [tuple(row) for row in await admin.fetch(query, application_name, ports)]
            assert [pid for pid, _, _ in backends] == [first["pid"]], "the connection was replaced"
            seen.update(at for _, query, at in backends if query == PING)
            return len(seen) >= pings

        await until(
            counted,
            f"PostgreSQL ran {pings} pings ({PING}) on the LISTEN connection",
            details=lambda: f"{len(seen)} seen; pg_stat_activity: {backends}",
        )
    finally:
        await admin.close()


@pytest.fixture
async def proxy(postgres_dsn: str) -> AsyncIterator[FreezingProxy]:
    url = urllib.parse.urlsplit(postgres_dsn)
    proxy = FreezingProxy(url.hostname or "127.0.0.1", url.port or 5432)
    await proxy.start()
    yield proxy
    await proxy.aclose()


def _through(dsn: str, port: int) -> str:
    url = urllib.parse.urlsplit(dsn)
    user = f"{url.username}@" if url.username else ""
    return urllib.parse.urlunsplit(url._replace(netloc=f"{user}127.0.0.1:{port}"))


async def test_a_listener_whose_connection_went_silent_reconnects_and_hears_again(
    make_postgres: MakePostgres, postgres_dsn: str, pg_schema: str, proxy: FreezingProxy
) -> None:
    writer = await make_postgres()
    inbox = Inbox()
    reconnected = asyncio.Event()
    listener = PostgresStore(
        _through(postgres_dsn, proxy.port),
        schema=pg_schema,
        timeout=0.5,  # how long a ping may go unanswered
        ping_interval=0.05,
        reconnect=Backoff(initial=0.05, multiplier=2.0, maximum=0.2),
    )
    await listener.open(inbox, notify_all=reconnected.set)
    try:
        await writer.create(running("operations/before"))
        await inbox.next("operations/before")
        # While the peer answers, the server sees the pings on the one LISTEN connection
        # it has had all along: each ping is that backend's latest query, at a new time.
        await _pinged(
            postgres_dsn, listener.listener_application_name, proxy.upstream_ports, pings=3
        )
        assert not reconnected.is_set(), "a connection that answers its pings is kept"
        proxy.freeze()  # the LISTEN connection (and the pool's) now carry nothing
        await writer.create(running("operations/unheard"))
        # Without pings nothing ever tells the listener; with them it reconnects.
        async with asyncio.timeout(10):
            await reconnected.wait()
        await writer.create(running("operations/after"))
        await inbox.next("operations/after", timeout=5)
    finally:
        await asyncio.wait_for(listener.aclose(), 10)
