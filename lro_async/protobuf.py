"""Protobuf helpers: Any packing, Status <-> exception, Duration and Timestamp conversion.

Message types are protobuf classes or proto-plus classes (the types of the google-cloud-*
libraries). proto-plus is recognised by duck typing, so it is never imported here: a
proto-plus class has ``pb()``, ``wrap()`` and ``meta.full_name``.
"""

from __future__ import annotations

import datetime
import hashlib
import math
from typing import Any, Literal, TypeVar

from google.longrunning import operations_pb2
from google.protobuf import any_pb2, descriptor_pool, duration_pb2, message_factory, timestamp_pb2
from google.protobuf.message import Message
from google.rpc import status_pb2

from .errors import OperationFailed, UnexpectedOperationState, code_number, status_code

__all__ = [
    "WAIT_MODE_HEADER",
    "WAIT_MODE_PROGRESS",
    "MessageKind",
    "check_message_type",
    "describe",
    "duration_seconds",
    "find_message_type",
    "full_name_of",
    "metadata_fingerprint",
    "parse_progress_header",
    "progress_header",
    "pack",
    "seconds_duration",
    "status_of",
    "timestamp_datetime",
    "type_url_of",
    "unpack",
]

M = TypeVar("M", bound=Message)
T = TypeVar("T")

_TYPE_URL_PREFIX = "type.googleapis.com/"


def pack(message: Message) -> any_pb2.Any:
    """Pack *message* into an Any (an Any is returned as is)."""
    if isinstance(message, any_pb2.Any):
        return message
    if not isinstance(message, Message):
        raise TypeError(f"expected a protobuf message, not {type(message).__name__}")
    # What Any.Pack does, without its pure-Python checks: pack is on every finish.
    return any_pb2.Any(
        type_url=_TYPE_URL_PREFIX + message.DESCRIPTOR.full_name,
        value=message.SerializeToString(),
    )


def type_url_of(message_type: type[Message]) -> str:
    """Return the type URL an Any of *message_type* carries."""
    return _TYPE_URL_PREFIX + message_type.DESCRIPTOR.full_name


#: ``"pb"``: a protobuf message class; ``"pp"``: a proto-plus message class.
MessageKind = Literal["pb", "pp"]


def _is_proto_plus(message_type: object) -> bool:
    return (
        isinstance(message_type, type)
        and callable(getattr(message_type, "pb", None))
        and callable(getattr(message_type, "wrap", None))
        and isinstance(getattr(getattr(message_type, "meta", None), "full_name", None), str)
    )


def check_message_type(message_type: object, *, what: str) -> MessageKind:
    """Return the kind of *message_type*, or raise TypeError if it is not a message class.

    :param what: the parameter's name, for the error (e.g. ``"result_type"``).
    :raises TypeError: for anything but a protobuf or a proto-plus message class.
    """
    if isinstance(message_type, type) and issubclass(message_type, Message):
        return "pb"
    if _is_proto_plus(message_type):
        return "pp"
    shown = message_type.__name__ if isinstance(message_type, type) else repr(message_type)
    raise TypeError(
        f"{what} must be a protobuf message class or a proto-plus message class "
        f"(e.g. google.cloud.redis_v1.Instance), not {shown}"
    )


def full_name_of(message_type: type[Any]) -> str:
    """The full protobuf name of a protobuf or proto-plus message class."""
    if check_message_type(message_type, what="message_type") == "pp":
        name: str = message_type.meta.full_name
        return name
    return str(message_type.DESCRIPTOR.full_name)


def find_message_type(full_name: str, kind: MessageKind) -> type[Any]:
    """Find the message class of *full_name* among the types this process has imported.

    Protobuf classes come from the default descriptor pool; proto-plus classes from the
    rules proto-plus registers for each of its types.

    :raises KeyError: no such type is known (its module has not been imported).
    """
    descriptor = descriptor_pool.Default().FindMessageTypeByName(full_name)
    pb_class: type[Message] = message_factory.GetMessageClass(descriptor)
    if kind == "pb":
        return pb_class
    # proto-plus keeps, per package, a marshal whose rules map each protobuf class to the
    # proto-plus class wrapping it; the marshal module is loaded once any proto-plus
    # class exists.
    import sys

    marshal = sys.modules.get("proto.marshal.marshal")
    instances = getattr(getattr(marshal, "Marshal", None), "_instances", {})
    for instance in list(instances.values()):
        wrapper = getattr(getattr(instance, "_rules", {}).get(pb_class), "_wrapper", None)
        if wrapper is not None and _is_proto_plus(wrapper):
            found: type[Any] = wrapper
            return found
    raise KeyError(full_name)


def unpack(packed: any_pb2.Any, message_type: type[T], *, what: str = "value") -> T:
    """Unpack *packed* into a new *message_type* (a protobuf or a proto-plus class).

    :param what: names the value in the error, e.g. ``"response of 'operations/42'"``.
    :raises UnexpectedOperationState: if the Any holds another type or does not parse.
    """
    if issubclass(message_type, Message):
        return _unpack(packed, message_type, what)
    if _is_proto_plus(message_type):
        wrapper: Any = message_type
        wrapped: T = wrapper.wrap(_unpack(packed, wrapper.pb(), what))
        return wrapped
    check_message_type(message_type, what=what)
    raise AssertionError("unreachable")  # pragma: no cover


def _unpack(packed: any_pb2.Any, message_type: type[M], what: str) -> M:
    message = message_type()
    if packed.TypeName() != message_type.DESCRIPTOR.full_name:
        raise UnexpectedOperationState(
            f"{what} has type {packed.type_url or '(empty)'!r}, expected "
            f"{type_url_of(message_type)!r}"
        )
    try:
        ok = packed.Unpack(message)
    except Exception as exc:
        raise UnexpectedOperationState(
            f"{what} of type {packed.type_url!r} does not parse"
        ) from exc
    if not ok:  # pragma: no cover - Is() said it matches
        raise UnexpectedOperationState(
            f"{what} could not be unpacked as {type_url_of(message_type)}"
        )
    return message


def status_of(error: OperationFailed) -> status_pb2.Status:
    """Return the ``google.rpc.Status`` recording *error*."""
    return status_pb2.Status(
        code=code_number(status_code(error.code)),
        message=error.message,
        details=list(error.details),
    )


def duration_seconds(duration: duration_pb2.Duration) -> float:
    """Return a Duration as float seconds (negative durations stay negative)."""
    return duration.seconds + duration.nanos / 1e9


def seconds_duration(seconds: float) -> duration_pb2.Duration:
    """Return float *seconds* as a Duration."""
    if not math.isfinite(seconds):
        raise ValueError(f"a duration must be finite, not {seconds!r}")
    whole = math.floor(seconds)
    nanos = round((seconds - whole) * 1e9)
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    if whole < 0 and nanos:  # Duration wants seconds and nanos of the same sign
        whole, nanos = whole + 1, nanos - 1_000_000_000
    return duration_pb2.Duration(seconds=whole, nanos=nanos)


def timestamp_datetime(timestamp: timestamp_pb2.Timestamp) -> datetime.datetime:
    """Return a Timestamp as an aware UTC datetime."""
    return timestamp.ToDatetime(tzinfo=datetime.UTC)


def describe(operation: operations_pb2.Operation) -> str:
    """A short human description: ``'operations/42' done (error NOT_FOUND)``."""
    if not operation.done:
        return f"{operation.name!r} running"
    if operation.HasField("error"):
        code = status_code(operation.error.code) if 0 <= operation.error.code <= 16 else None
        return f"{operation.name!r} failed ({code.name if code else operation.error.code})"
    return f"{operation.name!r} done"


#: A WaitOperation request header lro_async's server understands: with the value
#: :data:`WAIT_MODE_PROGRESS` the call also returns (early, with done=false) as soon as
#: the operation's metadata changes, so a client can stream progress with one open call.
#: Servers that ignore it just wait for the end, which WaitOperation's contract allows.
WAIT_MODE_HEADER = "lro-async-wait-mode"
WAIT_MODE_PROGRESS = "progress"


def metadata_fingerprint(metadata: any_pb2.Any) -> str:
    """A short digest of an operation's metadata, for :data:`WAIT_MODE_HEADER`."""
    encoded = metadata.SerializeToString(deterministic=True)
    return hashlib.blake2b(encoded, digest_size=8).hexdigest()


def progress_header(seen: any_pb2.Any | None = None) -> tuple[str, str]:
    """The request header asking lro_async's WaitOperation to return on a metadata change.

    :param seen: the metadata the caller has already seen; the call then returns at once
        if the operation's metadata differs from it. None: differs from the start of the call.
    """
    value = (
        WAIT_MODE_PROGRESS
        if seen is None
        else (f"{WAIT_MODE_PROGRESS};seen={metadata_fingerprint(seen)}")
    )
    return (WAIT_MODE_HEADER, value)


def parse_progress_header(value: str) -> str | None:
    """Return the fingerprint a progress header names (``""``: none), or None if it is not one."""
    mode, _, seen = value.partition(";seen=")
    if mode.strip() != WAIT_MODE_PROGRESS:
        return None
    seen = seen.strip()
    return seen if len(seen) == 16 and all(c in "0123456789abcdef" for c in seen) else ""
