"""Reading an HTTP request: headers into a Caller, query parameters, JSON bodies."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from ..errors import InvalidArgument
from ..server.auth import Caller
from ..wire import SERVER_TIMEOUT_HEADER

__all__ = [
    "ListParameters",
    "Receive",
    "Scope",
    "Send",
    "caller_of_scope",
    "header",
    "list_parameters",
    "no_parameters",
    "parse_body",
    "query_of",
    "server_timeout",
]

M = TypeVar("M", bound=Message)
Scope = MutableMapping[str, Any]
"""An ASGI connection scope."""
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
"""An ASGI receive callable."""
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
"""An ASGI send callable."""

#: A request header giving the client's deadline in seconds, as Google's front ends read it.

# Google's system parameters: accepted anywhere, and ignored.
_SYSTEM_PARAMETERS = frozenset({"$alt", "alt", "$.xgafv", "prettyPrint", "key", "quotaUser"})
_LIST_PARAMETERS = {
    "filter": "filter",
    "pageSize": "page_size",
    "page_size": "page_size",
    "pageToken": "page_token",
    "page_token": "page_token",
    "returnPartialSuccess": "return_partial_success",
    "return_partial_success": "return_partial_success",
}
_INT32 = re.compile(r"-?[0-9]{1,10}")
_BOOLS = {"true": True, "false": False, "1": True, "0": False}


def header(scope: Scope, key: str) -> str | None:
    wanted = key.encode()
    for name, value in scope.get("headers", ()):
        if name.lower() == wanted:
            return str(value.decode("latin-1"))
    return None


def caller_of_scope(scope: Scope) -> Caller:
    headers: dict[str, str] = {}
    for raw_key, raw_value in scope.get("headers", ()):
        key, value = raw_key.decode("latin-1").lower(), raw_value.decode("latin-1")
        # Repeated headers combine as HTTP says, so a policy cannot be shown just one.
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    client = scope.get("client")
    peer = ""
    if client:
        host, port = client[0], client[1]
        peer = f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
    return Caller(metadata=headers, peer=peer, transport="http")


def query_of(scope: Scope) -> list[tuple[str, str]]:
    raw: bytes = scope.get("query_string", b"")
    try:
        pairs = urllib.parse.parse_qsl(
            raw.decode("latin-1"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=16,
        )
    except ValueError as exc:  # bad UTF-8, or too many fields
        raise InvalidArgument(f"the query string cannot be read: {exc}") from exc
    return [(key, value) for key, value in pairs if key not in _SYSTEM_PARAMETERS]


def no_parameters(query: list[tuple[str, str]]) -> None:
    if query:
        raise InvalidArgument(f"unknown query parameter {query[0][0][:50]!r}")


@dataclasses.dataclass(slots=True)
class ListParameters:
    filter: str = ""
    page_size: int = 0
    page_token: str = ""
    return_partial_success: bool = False


def list_parameters(query: list[tuple[str, str]]) -> ListParameters:
    parameters = ListParameters()
    seen: set[str] = set()
    for key, value in query:
        field = _LIST_PARAMETERS.get(key)
        if field is None:
            raise InvalidArgument(f"unknown query parameter {key[:50]!r}")
        if field in seen:
            raise InvalidArgument(f"the query parameter {key!r} is given more than once")
        seen.add(field)
        if field == "page_size":
            if not _INT32.fullmatch(value) or not -(2**31) <= int(value) < 2**31:
                raise InvalidArgument(f"pageSize must be an integer, not {value[:20]!r}")
            parameters.page_size = int(value)
        elif field == "return_partial_success":
            if value not in _BOOLS:
                raise InvalidArgument(f"{key} must be true or false, not {value[:20]!r}")
            parameters.return_partial_success = _BOOLS[value]
        else:
            setattr(parameters, field, value)
    return parameters


def parse_body(body: bytes, request: M, name: str) -> M:
    """Read a JSON request body into *request*; a ``name`` in it must be the path's."""
    if body.strip():
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise InvalidArgument("the request body is not valid JSON") from exc
        if not isinstance(data, dict):
            raise InvalidArgument("the request body must be a JSON object")
        try:
            json_format.ParseDict(data, request)
        except (json_format.ParseError, TypeError, ValueError, RecursionError) as exc:
            raise InvalidArgument(f"the request body is not valid: {exc}"[:300]) from exc
    if getattr(request, "name", "") not in ("", name):
        raise InvalidArgument("the name in the body differs from the name in the path")
    return request


def server_timeout(caller: Caller) -> float | None:
    value = caller.metadata.get(SERVER_TIMEOUT_HEADER)
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise InvalidArgument(f"{SERVER_TIMEOUT_HEADER} must be seconds, not {value[:20]!r}")
    return seconds
