"""How the HTTP face answers: one bounded body reader, one error path, one JSON response.

The API routes (:mod:`.app`), the Watch stream's routes (:mod:`.watching`) and the dashboard's
JSON read (:mod:`.dashboard`) all answer through here, so an error has the same body, status
and headers whichever route refused it.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from ..errors import RpcError
from ..server.rules import error_parts
from ..wire import JSON_CONTENT_TYPE, Json, dumps, error_body
from .parsing import Receive, Scope, Send, header

__all__ = [
    "ClientGone",
    "Refused",
    "error_response",
    "read_body",
    "respond",
    "send_body",
    "too_large",
]


class Refused(RpcError):
    """A request refused before it reaches the manager: no route, no method, too large.

    :param reason: the ErrorInfo reason (e.g. ``NO_ROUTE``), for the code alone does not say.
    :param http_status: the HTTP status, where it is not the one AIP-193 gives the code.
    """

    def __init__(
        self, message: str, *, code: grpc.StatusCode, reason: str, http_status: int | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.reason = reason
        self.http_status = http_status


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


def too_large(limit: int) -> Refused:
    return Refused(
        f"the request body is larger than {limit} bytes",
        code=grpc.StatusCode.INVALID_ARGUMENT,
        reason="BODY_TOO_LARGE",
        http_status=413,
    )


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request's body, refused as :func:`too_large` past *limit* bytes.

    :raises ClientGone: if the client disconnects first.
    """
    length = header(scope, "content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def error_response(exc: Exception, what: str, name: str) -> tuple[int, Json]:
    """The HTTP status and Google's JSON error body that answer *exc*.

    :param what: what failed, for the server's log (e.g. ``"an HTTP request"``).
    :param name: the operation or parent the request named, for the ErrorInfo.
    """
    refused = exc if isinstance(exc, Refused) else None
    reason = refused.reason if refused is not None else None
    code, message, details = error_parts(exc, what, name, reason=reason)
    http_status = refused.http_status if refused is not None else None
    return error_body(code, message, details, http_status=http_status)


async def respond(
    send: Send, status: int, payload: Json, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Send *payload* as a whole JSON response, never cached; a 429 says when to retry."""
    extra = [(b"retry-after", b"1"), *headers] if status == 429 else headers
    await send_body(send, status, dumps(payload), JSON_CONTENT_TYPE, extra)


async def send_body(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
    *,
    head: bool = False,
) -> None:
    """Send a whole response of *content_type*, never cached (*head*: without its body)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else body})
