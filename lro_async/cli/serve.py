"""``lro-async serve``: Operations, the demo service, health checking and reflection."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import logging
import signal
import socket
import ssl
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..demo.service import DemoService
from ..errors import LroError
from ..server.manager import OperationManager
from ..server.servicer import server_options
from ..stores import OperationStore, from_url
from .exits import EXIT_OK, EXIT_RPC, EXIT_USAGE, CommandError
from .metrics import check_metrics_extra, metrics_server
from .reflection import V1_SERVICE_NAME, enable_reflection
from .tls import check_files

__all__ = [
    "Running",
    "open_store",
    "serve_command",
    "running_server",
    "serve_forever",
    "server_credentials",
    "server_ssl_context",
]

logger = logging.getLogger("lro_async")

OPERATIONS_SERVICE = "google.longrunning.Operations"
DEMO_SERVICE = "lro_async.demo.v1.Demo"
_SERVICES = (
    OPERATIONS_SERVICE,
    DEMO_SERVICE,
    health.SERVICE_NAME,
    reflection.SERVICE_NAME,
    V1_SERVICE_NAME,
)


@dataclasses.dataclass(frozen=True)
class Running:
    """A started server: its manager, its address, and the health servicer it reports to."""

    manager: OperationManager
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    target: str
    http_target: str | None = None
    """``host:port`` of the HTTP/JSON server, if one runs."""


@contextlib.asynccontextmanager
async def running_server(
    host: str,
    port: int,
    store_url: str,
    *,
    grace: float = 10.0,
    lease: float = 30.0,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    credentials: grpc.ServerCredentials | None = None,
    http_port: int | None = None,
    http_ssl: ssl.SSLContext | None = None,
    dashboard: bool = False,
) -> AsyncIterator[Running]:
    """Start a server with every lro-async service on ``host:port``; drain it on exit.

    On exit health turns NOT_SERVING and the manager drains while the server still
    answers (so that health checks see NOT_SERVING, not a closed port): new operations
    are refused with UNAVAILABLE, waiters get the latest state at once, and running
    operations get *grace* seconds to finish before the rest are cancelled (recorded
    ABORTED, "the server shut down before the operation finished"). Then the server
    stops; nothing acknowledged is lost. Cancelling the task during the drain cuts the
    grace short: the rest is recorded at once and the server stops without waiting.

    :param credentials: serve TLS with these (see :func:`server_credentials`); None: plaintext.
    :param http_port: also serve Operations over HTTP/JSON on ``host:http_port`` (0: a
        free port) from the same manager; it drains and stops with the gRPC server.
        Needs the ``http`` extra.
    :param http_ssl: serve that as HTTPS with this context (see :func:`server_ssl_context`).
    :param dashboard: serve the dashboard page at ``/`` of the HTTP server too.
    :param store_url: ``memory``, a store URL (:func:`lro_async.stores.from_url`) or the
        path of a SQLite file.
    :raises ValueError: for an unknown store URL.
    :raises CommandError: (bad usage) if the store needs an extra that is not installed.
    :raises OSError: if the address cannot be bound.
    """
    manager = OperationManager(open_store(store_url), lease=lease)
    # One server per port: without SO_REUSEPORT a second serve on a taken port fails
    # instead of silently sharing the clients at random.
    options = [(k, v) for k, v in server_options() if k != "grpc.so_reuseport"]
    server = grpc.aio.server(
        options=[*options, ("grpc.so_reuseport", 0)], interceptors=interceptors
    )
    try:
        await manager.open()
        manager.add_to_server(server)
        DemoService(manager).add_to_server(server)
        checker = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        enable_reflection(_SERVICES, server)
        try:
            address = f"{host}:{port}"
            bound = (
                server.add_insecure_port(address)
                if credentials is None
                else server.add_secure_port(address, credentials)
            )
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {address}: {_why_not_bound(host, port)}") from exc
        await server.start()
    except BaseException:
        await manager.aclose()
        raise
    async with contextlib.AsyncExitStack() as http:
        try:
            http_target = (
                None
                if http_port is None
                else await _serve_http(
                    http, manager, host, http_port, grace, http_ssl, dashboard=dashboard
                )
            )
        except BaseException:
            await asyncio.gather(server.stop(None), manager.aclose())
            raise
        for service in ("", OPERATIONS_SERVICE, DEMO_SERVICE):
            await checker.set(service, health_pb2.HealthCheckResponse.SERVING)
        try:
            yield Running(manager, server, checker, f"{host}:{bound}", http_target)
        finally:
            await _shut_down(manager, server, checker, http, grace)


async def _shut_down(
    manager: OperationManager,
    server: grpc.aio.Server,
    checker: health.aio.HealthServicer,
    http: contextlib.AsyncExitStack,
    grace: float,
) -> None:
    """Report NOT_SERVING, drain the manager, stop the servers; cancelled: at once."""
    loop = asyncio.get_running_loop()
    draining = loop.time()
    cut_short = False
    try:
        await checker.enter_graceful_shutdown()
        await manager.drain(grace)
    except asyncio.CancelledError:
        cut_short = True  # told to stop now: no grace left for anyone
        await manager.aclose()  # (done already if the drain had begun)
        raise
    finally:
        # Waiters are answered by now; long streams (health Watch) get what is left of
        # the grace, and every call at least a moment to send its last answer.
        left = 0.0 if cut_short else max(grace - (loop.time() - draining), min(grace, 1.0))
        try:
            await asyncio.gather(server.stop(left), http.aclose())
        except asyncio.CancelledError:  # told to stop now, while stopping
            await server.stop(0)
            raise


def open_store(url: str) -> OperationStore:
    """The store ``--store`` names: ``memory``, a URL, or a plain path of a SQLite file.

    :raises ValueError: for an unknown URL.
    :raises CommandError: (bad usage) if the store's extra is not installed.
    """
    try:
        return from_url(url)
    except ImportError as exc:
        if "asyncpg" in (exc.name or str(exc)):
            raise CommandError(
                "--store postgresql://... needs asyncpg: pip install 'lro-async[postgres]'",
                EXIT_USAGE,
            ) from exc
        raise


def _why_not_bound(host: str, port: int) -> str:
    """Why gRPC could not bind ``host:port`` (it says only "Failed to bind")."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"cannot resolve {host!r} ({exc.strerror or exc})"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "the port is taken (another server listens there)"
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"{host} is not an address of this machine"
            if exc.errno == errno.EACCES:
                return "permission denied (ports below 1024 need privileges)"
            return exc.strerror or str(exc)
    return "gRPC could not bind it (GRPC_VERBOSITY=debug shows why)"


async def serve_command(args: argparse.Namespace) -> int:
    """``lro-async serve``: check the TLS files and extras, then serve until a signal.

    :raises CommandError: one line and an exit code for every way it cannot start.
    """
    cert, key, ca = check_files(args.tls_cert, args.tls_key, args.tls_ca, server=True)
    credentials = (
        None
        if cert is None or key is None
        else grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
        )
    )
    if args.dashboard and args.http_port is None:
        raise CommandError(
            "--dashboard needs --http-port (the page is served over HTTP)", EXIT_USAGE
        )
    if args.http_port is not None:
        try:  # before anything starts: the server module imports uvicorn
            from ..http import server  # noqa: F401
        except ImportError as exc:
            raise CommandError(
                "--http-port needs the http extra: pip install 'lro-async[http]'", EXIT_USAGE
            ) from exc
    http_ssl = (
        server_ssl_context(args.tls_cert, args.tls_key, args.tls_ca)
        if credentials is not None and args.http_port is not None
        else None
    )
    metrics: contextlib.AbstractContextManager[str | None] = contextlib.nullcontext()
    if args.metrics_port is not None:
        check_metrics_extra()
        metrics = metrics_server(args.host, args.metrics_port)
    with metrics as metrics_target:
        if metrics_target is not None:
            print(f"lro-async: metrics on http://{metrics_target}/metrics", flush=True)
        return await _serve(args, credentials, http_ssl)


async def _serve(
    args: argparse.Namespace,
    credentials: grpc.ServerCredentials | None,
    http_ssl: ssl.SSLContext | None,
) -> int:
    try:
        await serve_forever(
            args.host,
            args.port,
            args.store,
            grace=args.grace,
            lease=args.lease,
            credentials=credentials,
            http_port=args.http_port,
            http_ssl=http_ssl,
            dashboard=args.dashboard,
        )
    except (ValueError, TypeError) as exc:
        raise CommandError(str(exc), EXIT_USAGE) from exc
    except (LroError, OSError) as exc:
        raise CommandError(" ".join(str(exc).split()) or type(exc).__name__, EXIT_RPC) from exc
    return EXIT_OK


async def _serve_http(
    stack: contextlib.AsyncExitStack,
    manager: OperationManager,
    host: str,
    port: int,
    grace: float,
    ssl_context: ssl.SSLContext | None,
    *,
    dashboard: bool = False,
) -> str:
    """Start the HTTP/JSON server on *stack*; return its ``host:port``."""
    try:
        from ..http import asgi_app, running_http_server
    except ImportError as exc:  # without the http extra
        raise CommandError(f"--http-port: {exc}", EXIT_USAGE) from exc

    served = await stack.enter_async_context(
        running_http_server(
            asgi_app(manager, dashboard=dashboard), host, port, grace=grace, ssl_context=ssl_context
        )
    )
    return f"{host}:{served.port}"


def server_credentials(
    cert: str | None, key: str | None, client_ca: str | None
) -> grpc.ServerCredentials | None:
    """TLS credentials from ``--tls-cert``, ``--tls-key`` and ``--tls-ca``; None for plaintext.

    With *client_ca*, clients must present a certificate signed by it (mutual TLS); the
    authorizer then finds its subject in ``Caller.auth_context`` (``x509_common_name``).

    :raises CommandError: if the flags do not go together or a file cannot be read.
    """
    if cert is None and key is None and client_ca is None:
        return None
    cert_pem, key_pem, root = check_files(cert, key, client_ca, server=True)
    assert cert_pem is not None and key_pem is not None  # check_files insists on both
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=root, require_client_auth=root is not None
    )


def server_ssl_context(cert: str, key: str, client_ca: str | None) -> ssl.SSLContext:
    """The HTTPS side of ``--tls-cert``, ``--tls-key`` and ``--tls-ca`` (mutual TLS).

    The HTTP/JSON app sees no certificate names: with *client_ca* only clients holding
    a certificate it signed get in, but an authorizer tells them apart by headers alone.

    :raises CommandError: if the files are not a matching PEM certificate and key, or
        *client_ca* is not PEM certificates.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
        if client_ca is not None:
            context.load_verify_locations(cafile=client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise CommandError(f"cannot serve HTTPS with these TLS files: {exc}", EXIT_USAGE) from exc
    return context


async def serve_forever(
    host: str,
    port: int,
    store_url: str,
    *,
    grace: float = 10.0,
    lease: float = 30.0,
    credentials: grpc.ServerCredentials | None = None,
    http_port: int | None = None,
    http_ssl: ssl.SSLContext | None = None,
    dashboard: bool = False,
) -> None:
    """Serve until SIGINT or SIGTERM, then drain gracefully within *grace* seconds.

    A second SIGINT or SIGTERM during the drain stops at once: work still running is
    recorded ABORTED ("the server shut down before the operation finished") without
    waiting for the rest of the grace.

    :param credentials: serve TLS with these; None: plaintext.
    :param http_port: also serve HTTP/JSON on this port.
    :param http_ssl: serve that as HTTPS with this context.
    :param dashboard: serve the dashboard page at ``/`` of the HTTP server too.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    serving = asyncio.current_task()
    forced = False

    def on_signal() -> None:
        nonlocal forced
        if not stop.is_set():
            stop.set()
        elif not forced and serving is not None:
            forced = True
            print("lro-async: stopping now (second signal)", file=sys.stderr, flush=True)
            serving.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    try:
        async with running_server(
            host,
            port,
            store_url,
            grace=grace,
            lease=lease,
            credentials=credentials,
            http_port=http_port,
            http_ssl=http_ssl,
            dashboard=dashboard,
        ) as running:
            tls = "" if credentials is None else "TLS, "
            print(f"lro-async: serving on {running.target} ({tls}store {store_url})", flush=True)
            if running.http_target is not None:
                scheme = "HTTP" if http_ssl is None else "HTTPS"
                print(f"lro-async: serving {scheme}/JSON on {running.http_target}", flush=True)
                if dashboard:
                    url = f"{scheme.lower()}://{running.http_target}/"
                    print(f"lro-async: the dashboard is at {url}", flush=True)
            await stop.wait()
            print(
                f"lro-async: draining (up to {grace:g}s; a second signal stops at once)",
                file=sys.stderr,
                flush=True,
            )
    except asyncio.CancelledError:
        if not forced or serving is None:
            raise
        serving.uncancel()  # the stop we were asked for, not an error
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    print("lro-async: stopped", file=sys.stderr, flush=True)


async def demo_command(args: argparse.Namespace) -> int:
    """``lro-async demo``: a server on a scratch SQLite file (or ``--store``), then the demo."""
    from ..demo.run import check_plan, run_demo
    from ..testing import RpcCounter

    check_plan(args.operations, args.seconds)
    counter = RpcCounter()
    with tempfile.TemporaryDirectory(prefix="lro-async-demo-") as folder:
        url = args.store or f"sqlite:///{folder}/demo.db"
        async with running_server("127.0.0.1", 0, url, grace=1.0, interceptors=[counter]) as server:
            return await run_demo(
                server.target, counter, store=url, count=args.operations, seconds=args.seconds
            )
