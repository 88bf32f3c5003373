"""``lro-async serve``: Operations, the demo service, health checking and reflection."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
from collections.abc import AsyncIterator, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..demo.service import DemoService
from ..server.manager import OperationManager
from ..server.servicer import server_options
from ..stores import from_url

__all__ = ["Running", "running_server", "serve_forever"]

logger = logging.getLogger("lro_async")

OPERATIONS_SERVICE = "google.longrunning.Operations"
DEMO_SERVICE = "lro_async.demo.v1.Demo"
_SERVICES = (OPERATIONS_SERVICE, DEMO_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)


@dataclasses.dataclass(frozen=True)
class Running:
    """A started server: its manager, its address, and the health servicer it reports to."""

    manager: OperationManager
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    target: str


@contextlib.asynccontextmanager
async def running_server(
    host: str,
    port: int,
    store_url: str,
    *,
    grace: float = 10.0,
    lease: float = 30.0,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> AsyncIterator[Running]:
    """Start a server with every lro-async service on ``host:port``; drain it on exit.

    On exit health turns NOT_SERVING, the server stops taking calls, waiters get the
    latest state at once and running operations get *grace* seconds to finish before
    the rest are cancelled (recorded CANCELLED); nothing acknowledged is lost.

    :raises ValueError: for an unknown store URL.
    :raises OSError: if the address cannot be bound.
    """
    manager = OperationManager(from_url(store_url), lease=lease)
    server = grpc.aio.server(options=server_options(), interceptors=interceptors)
    try:
        await manager.open()
        manager.add_to_server(server)
        DemoService(manager).add_to_server(server)
        checker = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        reflection.enable_server_reflection(_SERVICES, server)
        try:
            bound = server.add_insecure_port(f"{host}:{port}")
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {host}:{port}: {exc}") from exc
        await server.start()
    except BaseException:
        await manager.aclose()
        raise
    for service in ("", OPERATIONS_SERVICE, DEMO_SERVICE):
        await checker.set(service, health_pb2.HealthCheckResponse.SERVING)
    try:
        yield Running(manager, server, checker, f"{host}:{bound}")
    finally:
        await checker.enter_graceful_shutdown()
        await asyncio.gather(server.stop(grace), manager.drain(grace))


async def serve_forever(
    host: str, port: int, store_url: str, *, grace: float = 10.0, lease: float = 30.0
) -> None:
    """Serve until SIGINT or SIGTERM, then drain gracefully within *grace* seconds."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with running_server(host, port, store_url, grace=grace, lease=lease) as running:
            print(f"lro-async: serving on {running.target} (store {store_url})", flush=True)
            await stop.wait()
            print(f"lro-async: draining (up to {grace:g}s)", file=sys.stderr, flush=True)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    print("lro-async: stopped", file=sys.stderr, flush=True)
