"""How the command shows operations: one-line states, text, proto3 JSON, progress."""

from __future__ import annotations

import base64
import json
from typing import Any

import grpc
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, descriptor_pool, json_format, message_factory, text_format
from google.protobuf.message import Message

from ..demo import demo_pb2  # noqa: F401 - registers the demo's types for display
from ..progress import progress_fraction

__all__ = ["any_text", "describe", "dumps", "operation_json", "percent_of", "state", "unpack_any"]

_CODES = {code.value[0]: code.name for code in grpc.StatusCode}


def unpack_any(packed: any_pb2.Any) -> Message | None:
    """Unpack *packed* if its type is known to this process, else None."""
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(packed.TypeName())
    except KeyError:
        return None
    message: Message = message_factory.GetMessageClass(descriptor)()
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


def any_text(packed: any_pb2.Any) -> str:
    message = unpack_any(packed)
    if message is None:
        return f"({packed.type_url}, {len(packed.value)} bytes)"
    body = text_format.MessageToString(message, as_one_line=True)
    return f"{message.DESCRIPTOR.full_name} {{{body}}}" if body else message.DESCRIPTOR.full_name


def describe(operation: operations_pb2.Operation) -> str:
    """A few lines for people."""
    lines = [operation.name, f"  state:    {state(operation)}"]
    if operation.HasField("metadata"):
        lines.append(f"  metadata: {any_text(operation.metadata)}")
    if operation.HasField("response"):
        lines.append(f"  response: {any_text(operation.response)}")
    return "\n".join(lines)


def _any_json(packed: any_pb2.Any) -> dict[str, Any]:
    if unpack_any(packed) is not None:
        result: dict[str, Any] = json_format.MessageToDict(packed)
        return result
    # A type this process does not know: proto3 JSON cannot show its fields; keep the bytes.
    return {"@type": packed.type_url, "value": base64.b64encode(packed.value).decode()}


def operation_json(operation: operations_pb2.Operation) -> dict[str, Any]:
    """The operation in the proto3 JSON mapping (as a dict ready for ``json.dumps``)."""
    plain = operations_pb2.Operation()
    plain.CopyFrom(operation)
    plain.ClearField("metadata")
    plain.ClearField("response")
    result: dict[str, Any] = json_format.MessageToDict(plain)
    if operation.HasField("metadata"):
        result["metadata"] = _any_json(operation.metadata)
    if operation.HasField("response"):
        result["response"] = _any_json(operation.response)
    return result


def dumps(value: object) -> str:
    return json.dumps(value, indent=2, sort_keys=False)


def percent_of(metadata: Message | None) -> float | None:
    """A progress percentage (0-100) read by :func:`lro_async.progress_fraction`."""
    fraction = progress_fraction(metadata)
    return None if fraction is None else fraction * 100
