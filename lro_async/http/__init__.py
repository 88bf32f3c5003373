"""HTTP/JSON: ``google.longrunning.Operations`` as an ASGI app over an OperationManager.

:func:`asgi_app` needs nothing beyond lro_async itself; :func:`running_http_server` (uvicorn)
and the client's transport (``AsyncOperationsClient.from_url``, httpx) need the ``http``
extra: ``pip install lro-async[http]``. They are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..wire import SERVER_TIMEOUT_HEADER as SERVER_TIMEOUT_HEADER
from .app import OperationsApp as OperationsApp
from .app import asgi_app as asgi_app

if TYPE_CHECKING:
    from .server import HttpServer as HttpServer
    from .server import running_http_server as running_http_server

__all__ = [
    "SERVER_TIMEOUT_HEADER",
    "HttpServer",
    "OperationsApp",
    "asgi_app",
    "running_http_server",
]


def __getattr__(name: str) -> Any:
    if name in ("HttpServer", "running_http_server"):
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
