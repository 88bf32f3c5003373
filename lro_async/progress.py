"""progress_fraction: how far along an operation is, read from any service's metadata.

Services spell progress in a handful of ways; this reads them through the descriptors,
so it works on any protobuf message (and proto-plus message, and ``Struct``) without
knowing its type. Looked for in this order, on the message and then in nested messages:

1. a percentage 0-100: ``percent``, ``progress_percent``, ``percent_complete``,
   ``percentage``, ``percent_done`` (Spanner's and Bigtable's ``OperationProgress``);
2. a fraction 0-1: ``fraction``, ``progress_fraction``, or ``progress`` when it is a
   float or double (an integer ``progress`` is read as a percentage);
3. a done/total pair: ``completed_work``/``estimated_work``,
   ``work_completed``/``work_estimated`` (Firestore's ``Progress``),
   ``processed``/``total``, ``completed``/``total``, ``done``/``total``,
   ``processed_count``/``total_count``, ... (a total of 0 means unknown);
4. a nested message named ``progress`` or ``progress_*`` (Firestore's
   ``progress_documents``); a repeated ``progress`` (Spanner's DDL metadata, one entry
   per statement) counts as the mean of its entries.

A ``Struct`` is read by the same names; its one number type makes a ``progress`` there a
fraction 0-1. The answer is clamped to [0, 1]; None when no shape matches.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import any_pb2, descriptor_pool, message_factory, struct_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

__all__ = ["progress_fraction"]

_PERCENT = ("percent", "progress_percent", "percent_complete", "percentage", "percent_done")
_FRACTION = ("fraction", "progress_fraction", "completion_fraction")
_PAIRS = (
    ("completed_work", "estimated_work"),
    ("work_completed", "work_estimated"),
    ("processed", "total"),
    ("completed", "total"),
    ("done", "total"),
    ("current", "total"),
    ("processed_count", "total_count"),
    ("completed_count", "total_count"),
    ("done_count", "total_count"),
    ("processed_items", "total_items"),
    ("completed_items", "total_items"),
)
_INTEGER = frozenset(
    {
        FieldDescriptor.CPPTYPE_INT32,
        FieldDescriptor.CPPTYPE_INT64,
        FieldDescriptor.CPPTYPE_UINT32,
        FieldDescriptor.CPPTYPE_UINT64,
    }
)
_REAL = frozenset({FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE})
_NUMERIC = _INTEGER | _REAL
_STRUCT = struct_pb2.Struct.DESCRIPTOR.full_name
_DEPTH = 4  # how deep nested progress messages are looked for


def progress_fraction(metadata: object) -> float | None:
    """How far along an operation is, in [0, 1], from its metadata; None if unknown.

    Example::

        async for md in op.progress():
            fraction = lro_async.progress_fraction(md)
            print("?" if fraction is None else f"{fraction:.0%}")

    :param metadata: a protobuf message, a proto-plus message, a ``Struct``, or a packed
        ``Any`` of a type this process has imported (None gives None).
    """
    message = _as_message(metadata)
    if message is None:
        return None
    found = _from_message(message, _DEPTH)
    return None if found is None else min(1.0, max(0.0, found))


def _as_message(metadata: object) -> Message | None:
    if isinstance(metadata, any_pb2.Any):
        try:
            descriptor = descriptor_pool.Default().FindMessageTypeByName(metadata.TypeName())
        except KeyError:
            return None
        message: Message = message_factory.GetMessageClass(descriptor)()
        return message if metadata.Unpack(message) else None
    if isinstance(metadata, Message):
        return metadata
    pb = getattr(type(metadata), "pb", None)  # a proto-plus message
    if callable(pb) and callable(getattr(type(metadata), "wrap", None)):
        raw = pb(metadata)
        return raw if isinstance(raw, Message) else None
    return None


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _from_message(message: Message, depth: int) -> float | None:
    if message.DESCRIPTOR.full_name == _STRUCT:  # struct_pb2.Struct, or one of another pool
        return _from_mapping(_struct_values(message), depth)  # type: ignore[arg-type]
    fields = message.DESCRIPTOR.fields_by_name

    def scalar(name: str, kinds: frozenset[int]) -> float | None:
        field = fields.get(name)
        if field is None or field.cpp_type not in kinds or _repeated(field):
            return None
        return _finite(float(getattr(message, name)))

    for name in _PERCENT:
        if (value := scalar(name, _NUMERIC)) is not None:
            return value / 100
    for name in _FRACTION:
        if (value := scalar(name, _REAL)) is not None:
            return value
    if (value := scalar("progress", _REAL)) is not None:
        return value
    if (value := scalar("progress", _INTEGER)) is not None:
        return value / 100
    for done_name, total_name in _PAIRS:
        done, total = scalar(done_name, _NUMERIC), scalar(total_name, _NUMERIC)
        if done is not None and total is not None:
            return done / total if total > 0 else None
    if depth <= 0:
        return None
    nested = [
        field
        for field in message.DESCRIPTOR.fields
        if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE
        and (field.name == "progress" or field.name.startswith("progress_"))
    ]
    nested.sort(key=lambda field: field.name != "progress")  # "progress" first
    for field in nested:
        if _repeated(field):
            if field.message_type is None or field.message_type.GetOptions().map_entry:
                continue
            value = _mean(_from_message(item, depth - 1) for item in getattr(message, field.name))
        elif message.HasField(field.name):
            value = _from_message(getattr(message, field.name), depth - 1)
        else:
            continue
        if value is not None:
            return value
    return None


def _repeated(field: Any) -> bool:
    # protobuf 7 has only is_repeated; older releases have label.
    is_repeated = getattr(field, "is_repeated", None)
    if isinstance(is_repeated, bool):
        return is_repeated
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


def _mean(values: Iterable[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return sum(known) / len(known) if known else None


def _struct_values(struct: struct_pb2.Struct) -> dict[str, Any]:
    return {key: _value(value) for key, value in struct.fields.items()}


def _value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return value.number_value
    if kind == "struct_value":
        return _struct_values(value.struct_value)
    if kind == "list_value":
        return [_value(item) for item in value.list_value.values]
    return None


def _from_mapping(values: Mapping[str, Any], depth: int) -> float | None:
    def number(name: str) -> float | None:
        value = values.get(name)
        return _finite(value) if isinstance(value, float) else None

    for name in _PERCENT:
        if (value := number(name)) is not None:
            return value / 100
    for name in (*_FRACTION, "progress"):  # JSON has one number type: progress is 0-1
        if (value := number(name)) is not None:
            return value
    for done_name, total_name in _PAIRS:
        done, total = number(done_name), number(total_name)
        if done is not None and total is not None:
            return done / total if total > 0 else None
    if depth <= 0:
        return None
    names = sorted(
        (name for name in values if name == "progress" or name.startswith("progress_")),
        key=lambda name: name != "progress",
    )
    for name in names:
        nested = values[name]
        if isinstance(nested, dict):
            value = _from_mapping(nested, depth - 1)
        elif isinstance(nested, list):
            value = _mean(
                _from_mapping(item, depth - 1) for item in nested if isinstance(item, dict)
            )
        else:
            continue
        if value is not None:
            return value
    return None
