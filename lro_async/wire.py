"""What both halves say on the wire: headers, error reasons and the HTTP/JSON format.

- Headers and error reasons: :data:`SERVER_TIMEOUT_HEADER`, :data:`WATCH_SERVED_HEADER`, the
  ``ErrorInfo`` domain
  (:data:`ERROR_DOMAIN`) and the reasons a client acts on (:data:`OPERATION_NOT_FOUND`).

- Messages travel in the proto3 JSON mapping (``google.protobuf.json_format``). An ``Any``
  whose type is not in the descriptor pool cannot be written as JSON, so it travels as
  ``{"@type": url, "value": base64 of the packed bytes}`` instead, and is read back the
  same way.
- Errors travel as Google's JSON error body,
  ``{"error": {"code": 404, "message": ..., "status": "NOT_FOUND", "details": [...]}}``,
  with the HTTP status AIP-193 gives each code (:data:`HTTP_STATUS`).

There is a known ambiguity in the fallback: a message type that the *reader* knows, the
*writer* did not, and whose only set field is a string or bytes field named ``value``, is
read as that field. lro_async's server and client use the same types on both sides.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import grpc
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, json_format
from google.protobuf import message as protobuf_message
from google.rpc import status_pb2

from .errors import RpcError, rpc_error
from .v1 import watch_pb2

__all__ = [
    "ERROR_DOMAIN",
    "HTTP_STATUS",
    "JSON_CONTENT_TYPE",
    "OPERATION_NOT_FOUND",
    "SERVER_TIMEOUT_HEADER",
    "WATCH_SERVED_HEADER",
    "Json",
    "any_from_json",
    "any_to_json",
    "code_of_http_status",
    "dumps",
    "error_body",
    "error_from_body",
    "event_from_json",
    "event_to_json",
    "list_response_from_json",
    "list_response_to_json",
    "operation_from_json",
    "operation_to_json",
    "status_from_json",
    "status_to_json",
]

Json = dict[str, Any]
"""A JSON object as ``json.loads`` returns it."""

ERROR_DOMAIN = "lro-async"
"""The ``google.rpc.ErrorInfo`` domain of every error lro_async's server sends."""
OPERATION_NOT_FOUND = "OPERATION_NOT_FOUND"
"""The ``ErrorInfo`` reason of a NOT_FOUND that names a missing operation (not a missing route)."""
SERVER_TIMEOUT_HEADER = "x-server-timeout"
"""The request header (seconds) by which a caller tells the server how long it may wait."""
WATCH_SERVED_HEADER = "lro-async-watch"
"""The initial-metadata key a Watch server sends as soon as it serves a stream: clients
write their names only after seeing it. (A server without the extension ends the call
at once, and a write racing that end would turn its UNIMPLEMENTED into grpc's INTERNAL.)"""

JSON_CONTENT_TYPE = "application/json; charset=utf-8"

_C = grpc.StatusCode
#: The HTTP status of each code (AIP-193, as ``google/rpc/code.proto`` documents it).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    _C.OK: 200,
    _C.CANCELLED: 499,
    _C.UNKNOWN: 500,
    _C.INVALID_ARGUMENT: 400,
    _C.DEADLINE_EXCEEDED: 504,
    _C.NOT_FOUND: 404,
    _C.ALREADY_EXISTS: 409,
    _C.PERMISSION_DENIED: 403,
    _C.UNAUTHENTICATED: 401,
    _C.RESOURCE_EXHAUSTED: 429,
    _C.FAILED_PRECONDITION: 400,
    _C.ABORTED: 409,
    _C.OUT_OF_RANGE: 400,
    _C.UNIMPLEMENTED: 501,
    _C.INTERNAL: 500,
    _C.UNAVAILABLE: 503,
    _C.DATA_LOSS: 500,
}

# What an HTTP status means when the body does not say (a proxy's HTML page, say):
# 429 and the gateway errors are retryable, as they are in google-api-core.
_CODE_OF_HTTP: dict[int, grpc.StatusCode] = {
    400: _C.INVALID_ARGUMENT,
    401: _C.UNAUTHENTICATED,
    403: _C.PERMISSION_DENIED,
    404: _C.NOT_FOUND,
    405: _C.UNIMPLEMENTED,
    409: _C.ABORTED,
    412: _C.FAILED_PRECONDITION,
    413: _C.INVALID_ARGUMENT,
    416: _C.OUT_OF_RANGE,
    429: _C.RESOURCE_EXHAUSTED,
    499: _C.CANCELLED,
    500: _C.INTERNAL,
    501: _C.UNIMPLEMENTED,
    502: _C.UNAVAILABLE,
    503: _C.UNAVAILABLE,
    504: _C.DEADLINE_EXCEEDED,
}


def code_of_http_status(status: int) -> grpc.StatusCode:
    """The code an HTTP error status stands for when the body names none."""
    return _CODE_OF_HTTP.get(status, _C.UNKNOWN)


def dumps(body: Json) -> bytes:
    """Encode a JSON body compactly as UTF-8."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


# -- Any --------------------------------------------------------------------------------


def any_to_json(value: any_pb2.Any) -> Json:
    """An Any in the proto3 JSON mapping, or ``{"@type", "value": base64}`` if unknown."""
    try:
        converted: Json = json_format.MessageToDict(value)
    except (TypeError, ValueError, protobuf_message.Error, json_format.Error):
        return {
            "@type": value.type_url,
            "value": base64.b64encode(value.value).decode("ascii"),
        }
    return converted


def any_from_json(data: object) -> any_pb2.Any:
    """Read an Any written by :func:`any_to_json` (or by any proto3 JSON printer).

    :raises ValueError: if *data* is neither.
    """
    if not isinstance(data, dict) or not isinstance(data.get("@type"), str):
        raise ValueError("an Any must be a JSON object with an '@type'")
    try:
        return json_format.ParseDict(data, any_pb2.Any())
    except (json_format.ParseError, TypeError, ValueError, RecursionError) as exc:
        value = data.get("value")
        if set(data) != {"@type", "value"} or not isinstance(value, str):
            raise ValueError(f"cannot read an Any of type {data['@type']!r}: {exc}") from exc
        # proto3 JSON writes bytes as standard base64; readers accept URL-safe too.
        standard = value.replace("-", "+").replace("_", "/")
        try:
            raw = base64.b64decode(standard, validate=True)
        except (binascii.Error, ValueError) as error:
            raise ValueError(f"the value of an Any of {data['@type']!r} is not base64") from error
        return any_pb2.Any(type_url=data["@type"], value=raw)


# -- Status and Operation ---------------------------------------------------------------


def status_to_json(status: status_pb2.Status) -> Json:
    """A ``google.rpc.Status`` in the proto3 JSON mapping (its code as a number)."""
    body: Json = {"code": status.code}
    if status.message:
        body["message"] = status.message
    if status.details:
        body["details"] = [any_to_json(detail) for detail in status.details]
    return body


def status_from_json(data: object) -> status_pb2.Status:
    """:raises ValueError: if *data* is not a Status."""
    if not isinstance(data, dict):
        raise ValueError("a Status must be a JSON object")
    status = status_pb2.Status(
        code=_int(data.get("code", 0), "code"), message=_str(data.get("message", ""), "message")
    )
    details = data.get("details") or []
    if not isinstance(details, list):
        raise ValueError("Status.details must be a list")
    status.details.extend(any_from_json(detail) for detail in details)
    return status


def operation_to_json(operation: operations_pb2.Operation) -> Json:
    """An Operation in the proto3 JSON mapping."""
    body: Json = {"name": operation.name}
    if operation.HasField("metadata"):
        body["metadata"] = any_to_json(operation.metadata)
    if operation.done:
        body["done"] = True
    result = operation.WhichOneof("result")
    if result == "error":
        body["error"] = status_to_json(operation.error)
    elif result == "response":
        body["response"] = any_to_json(operation.response)
    return body


def operation_from_json(data: object) -> operations_pb2.Operation:
    """Read an Operation; unknown fields are ignored.

    :raises ValueError: if *data* is not an Operation.
    """
    if not isinstance(data, dict):
        raise ValueError("an Operation must be a JSON object")
    operation = operations_pb2.Operation(name=_str(data.get("name", ""), "name"))
    done = data.get("done", False)
    if not isinstance(done, bool):
        raise ValueError("Operation.done must be a boolean")
    operation.done = done
    if data.get("metadata") is not None:
        operation.metadata.CopyFrom(any_from_json(data["metadata"]))
    if data.get("error") is not None:
        operation.error.CopyFrom(status_from_json(data["error"]))
    elif data.get("response") is not None:
        operation.response.CopyFrom(any_from_json(data["response"]))
    return operation


def list_response_to_json(response: operations_pb2.ListOperationsResponse) -> Json:
    body: Json = {"operations": [operation_to_json(op) for op in response.operations]}
    if response.next_page_token:
        body["nextPageToken"] = response.next_page_token
    return body


def list_response_from_json(data: object) -> operations_pb2.ListOperationsResponse:
    """:raises ValueError: if *data* is not a ListOperationsResponse."""
    if not isinstance(data, dict):
        raise ValueError("a ListOperationsResponse must be a JSON object")
    operations = data.get("operations") or []
    if not isinstance(operations, list):
        raise ValueError("ListOperationsResponse.operations must be a list")
    token = data.get("nextPageToken", data.get("next_page_token", ""))
    return operations_pb2.ListOperationsResponse(
        operations=[operation_from_json(op) for op in operations],
        next_page_token=_str(token, "nextPageToken"),
    )


def _str(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string")
    return value


def _int(value: object, field: str) -> int:
    # proto3 JSON writes int32 as a number, and readers accept a decimal string too.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{field} must be an integer")
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{field} must be an integer") from None
    if not -(2**31) <= number < 2**31:
        raise ValueError(f"{field} is out of range")
    return number


# -- errors -----------------------------------------------------------------------------


def error_body(
    code: grpc.StatusCode,
    message: str,
    details: list[any_pb2.Any] | tuple[any_pb2.Any, ...] = (),
    *,
    http_status: int | None = None,
) -> tuple[int, Json]:
    """Google's JSON error body for a status, and the HTTP status to send it with.

    :param http_status: instead of the AIP-193 status of *code* (for 405 and 413).
    """
    status = http_status or HTTP_STATUS[code]
    error: Json = {"code": status, "message": message, "status": code.name}
    error["details"] = [any_to_json(detail) for detail in details]
    return status, {"error": error}


def error_from_body(http_status: int, content: bytes) -> RpcError:
    """The :class:`RpcError` an HTTP error response stands for.

    The code is the body's ``status`` if it names one; else the HTTP status decides
    (:func:`code_of_http_status`). Details that cannot be read are dropped.
    """
    error: object = None
    try:
        payload = json.loads(content)
    except (ValueError, RecursionError):
        payload = None
    if isinstance(payload, list) and payload:  # some Google front ends wrap it in a list
        payload = payload[0]
    if isinstance(payload, dict):
        error = payload.get("error")
    if not isinstance(error, dict):
        text = content.decode("utf-8", "replace").strip()[:200]
        return rpc_error(code_of_http_status(http_status), text or f"HTTP {http_status}")
    code = _named_code(error.get("status")) or code_of_http_status(http_status)
    message = error.get("message")
    raw_details = error.get("details")
    details = []
    for detail in raw_details if isinstance(raw_details, list) else ():
        try:
            details.append(any_from_json(detail))
        except ValueError:
            continue
    return rpc_error(code, message if isinstance(message, str) else f"HTTP {http_status}", details)


def _named_code(name: object) -> grpc.StatusCode | None:
    if not isinstance(name, str) or name == "OK":
        return None
    code: grpc.StatusCode | None = getattr(_C, name, None)
    return code if isinstance(code, grpc.StatusCode) else None


# -- Watch events (Server-Sent Events of the Watch extension) ---------------------------


def event_to_json(event: watch_pb2.Event) -> Json:
    """A Watch ``Event`` in the proto3 JSON mapping: its kind by name."""
    body: Json = {"kind": watch_pb2.Event.Kind.Name(event.kind)}
    if event.name:
        body["name"] = event.name
    state = event.WhichOneof("state")
    if state == "operation":
        body["operation"] = operation_to_json(event.operation)
    elif state == "error":
        body["error"] = status_to_json(event.error)
    return body


def event_from_json(data: object) -> watch_pb2.Event:
    """Read a Watch ``Event``; a kind this reader does not know is KIND_UNSPECIFIED.

    :raises ValueError: if *data* is not an Event.
    """
    if not isinstance(data, dict):
        raise ValueError("an Event must be a JSON object")
    kind = data.get("kind", "KIND_UNSPECIFIED")
    if not isinstance(kind, str):
        raise ValueError("Event.kind must be a string")
    event = watch_pb2.Event(name=_str(data.get("name", ""), "name"))
    event.kind = watch_pb2.Event.Kind.Value(kind) if kind in _KIND_NAMES else 0  # type: ignore[assignment]
    if "operation" in data:
        event.operation.CopyFrom(operation_from_json(data["operation"]))
    elif "error" in data:
        event.error.CopyFrom(status_from_json(data["error"]))
    return event


_KIND_NAMES = frozenset(watch_pb2.Event.Kind.keys())
