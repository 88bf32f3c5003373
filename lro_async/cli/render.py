"""How the command shows operations: one-line states, text, proto3 JSON, progress.

Well-known types (Struct, Any, the wrappers, Timestamp, Duration, Empty, FieldMask,
google.rpc.Status and its error details) are always decoded; other services' types when a
:class:`~lro_async.cli.reflection.TypeResolver` has learned them from the server's
reflection; anything else keeps its raw form (type URL and size, or base64 in JSON).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import grpc
from google.longrunning import operations_pb2
from google.protobuf import (  # noqa: F401 - imported to register the well-known types
    any_pb2,
    descriptor_pool,
    duration_pb2,
    empty_pb2,
    field_mask_pb2,
    json_format,
    message_factory,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2  # noqa: F401 - registered for display

from ..progress import progress_fraction
from .reflection import TypeResolver

__all__ = [
    "any_text",
    "compact",
    "describe",
    "dumps",
    "learn",
    "operation_json",
    "percent_of",
    "state",
    "unpack_any",
]

_CODES = {code.value[0]: code.name for code in grpc.StatusCode}


def _pool_of(
    type_name: str, types: TypeResolver | None
) -> tuple[Message, descriptor_pool.DescriptorPool] | None:
    """An empty message of *type_name* and the pool that knows it, if any does."""
    default = descriptor_pool.Default()
    if types is not None:
        found = types.find(type_name)
    else:
        try:
            found = default.FindMessageTypeByName(type_name), default
        except KeyError:
            found = None
    if found is None:
        return None
    descriptor, pool = found
    return message_factory.GetMessageClass(descriptor)(), pool


async def learn(operation: operations_pb2.Operation, types: TypeResolver | None) -> None:
    """Ask the server about the types of *operation*'s metadata and response, once each."""
    if types is None:
        return
    for field in ("metadata", "response"):
        if operation.HasField(field):
            await types.learn(getattr(operation, field).TypeName())
    for detail in operation.error.details:
        await types.learn(detail.TypeName())


def unpack_any(packed: any_pb2.Any, types: TypeResolver | None = None) -> Message | None:
    """Unpack *packed* if its type is known (here or learned from the server), else None."""
    found = _pool_of(packed.TypeName(), types)
    if found is None:
        return None
    message = found[0]
    return message if packed.Unpack(message) else None


def state(operation: operations_pb2.Operation) -> str:
    """``running``, ``done``, ``cancelled`` or ``failed: CODE: message``."""
    if not operation.done:
        return "running"
    if operation.HasField("error"):
        code = _CODES.get(operation.error.code, str(operation.error.code))
        if code == "CANCELLED":
            return "cancelled"
        return f"failed: {code}: {operation.error.message}".rstrip(": ")
    return "done"


def _text(message: Message, pool: descriptor_pool.DescriptorPool) -> str:
    """``TYPE {"field": value, ...}``: proto3 JSON on one line, as ``--json`` shows it."""
    value = json_format.MessageToDict(message, descriptor_pool=pool)
    return f"{message.DESCRIPTOR.full_name} {json.dumps(value, separators=(', ', ': '))}"


def any_text(packed: any_pb2.Any, types: TypeResolver | None = None) -> str:
    """One line for an ``Any``: its type and fields, or its type URL and size if unknown."""
    found = _pool_of(packed.TypeName(), types)
    if found is None or not packed.Unpack(found[0]):
        return f"({packed.type_url}, {len(packed.value)} bytes)"
    return _text(found[0], found[1])


def describe(operation: operations_pb2.Operation, types: TypeResolver | None = None) -> str:
    """A few lines for people."""
    lines = [operation.name, f"  state:    {state(operation)}"]
    if operation.HasField("metadata"):
        lines.append(f"  metadata: {any_text(operation.metadata, types)}")
    if operation.HasField("response"):
        lines.append(f"  response: {any_text(operation.response, types)}")
    for detail in operation.error.details:
        lines.append(f"  detail:   {any_text(detail, types)}")
    return "\n".join(lines)


def _any_json(packed: any_pb2.Any, types: TypeResolver | None) -> dict[str, Any]:
    found = _pool_of(packed.TypeName(), types)
    if found is not None:
        try:
            result: dict[str, Any] = json_format.MessageToDict(packed, descriptor_pool=found[1])
        except (TypeError, KeyError, json_format.Error):  # e.g. a nested Any of an unknown type
            pass
        else:
            return result
    # A type nobody could tell us about: proto3 JSON cannot show its fields; keep the bytes.
    return {"@type": packed.type_url, "value": base64.b64encode(packed.value).decode()}


def operation_json(
    operation: operations_pb2.Operation, types: TypeResolver | None = None
) -> dict[str, Any]:
    """The operation in the proto3 JSON mapping (as a dict ready for ``json.dumps``)."""
    plain = operations_pb2.Operation()
    plain.CopyFrom(operation)
    plain.ClearField("metadata")
    plain.ClearField("response")
    if plain.HasField("error"):
        del plain.error.details[:]
    result: dict[str, Any] = json_format.MessageToDict(plain)
    if operation.HasField("metadata"):
        result["metadata"] = _any_json(operation.metadata, types)
    if operation.HasField("response"):
        result["response"] = _any_json(operation.response, types)
    if operation.error.details:
        result["error"]["details"] = [_any_json(d, types) for d in operation.error.details]
    return result


def dumps(value: object) -> str:
    """A whole document, indented (``get``, ``wait``, ``list``, ``cancel``)."""
    return json.dumps(value, indent=2, sort_keys=False)


def compact(value: object) -> str:
    """One object on one line: a line of a stream (``watch --json``)."""
    return json.dumps(value, separators=(",", ":"))


def percent_of(metadata: Message | None) -> float | None:
    """A progress percentage (0-100) read by :func:`lro_async.progress_fraction`."""
    fraction = progress_fraction(metadata)
    return None if fraction is None else fraction * 100
