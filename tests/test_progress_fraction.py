"""progress_fraction over the shapes services use for progress."""

from __future__ import annotations

import math
from typing import Any

import pytest
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory, struct_pb2
from google.protobuf.message import Message

import lro_async
from lro_async.cli import render
from lro_async.demo import demo_pb2

F = descriptor_pb2.FieldDescriptorProto

# Shapes of real services' metadata, declared here (their libraries are not installed):
# Spanner/Bigtable OperationProgress, Spanner's DDL metadata (repeated progress, one per
# statement), Firestore's Progress and ExportDocumentsMetadata, and plain spellings.
SHAPES: dict[str, list[tuple[str, int, str | None, bool]]] = {
    # message: [(field, type, message type name or None, repeated)]
    "OperationProgress": [("progress_percent", F.TYPE_INT32, None, False)],
    "CreateBackupMetadata": [
        ("name", F.TYPE_STRING, None, False),
        ("progress", F.TYPE_MESSAGE, "OperationProgress", False),
    ],
    "UpdateDatabaseDdlMetadata": [("progress", F.TYPE_MESSAGE, "OperationProgress", True)],
    "Progress": [
        ("work_estimated", F.TYPE_INT64, None, False),
        ("work_completed", F.TYPE_INT64, None, False),
    ],
    "ExportDocumentsMetadata": [
        ("operation_state", F.TYPE_INT32, None, False),
        ("progress_bytes", F.TYPE_MESSAGE, "Progress", False),
        ("progress_documents", F.TYPE_MESSAGE, "Progress", False),
    ],
    "Percent": [("percent", F.TYPE_INT32, None, False)],
    "PercentComplete": [("percent_complete", F.TYPE_DOUBLE, None, False)],
    "Percentage": [("percentage", F.TYPE_FLOAT, None, False)],
    "Fraction": [("fraction", F.TYPE_DOUBLE, None, False)],
    "FloatProgress": [("progress", F.TYPE_FLOAT, None, False)],
    "IntProgress": [("progress", F.TYPE_UINT32, None, False)],
    "Work": [
        ("completed_work", F.TYPE_INT64, None, False),
        ("estimated_work", F.TYPE_INT64, None, False),
    ],
    "Counts": [("processed", F.TYPE_INT32, None, False), ("total", F.TYPE_INT32, None, False)],
    "Stages": [("stage", F.TYPE_STRING, None, False)],
    "StructProgress": [("progress", F.TYPE_MESSAGE, ".google.protobuf.Struct", False)],
    "Both": [
        ("percent", F.TYPE_INT32, None, False),
        ("progress", F.TYPE_MESSAGE, "OperationProgress", False),
    ],
    "RepeatedPercent": [("percent", F.TYPE_INT32, None, True)],
}


def _classes() -> dict[str, type[Message]]:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(struct_pb2.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(
        name="shapes.proto",
        package="shapes",
        syntax="proto3",
        dependency=["google/protobuf/struct.proto"],
    )
    for message_name, fields in SHAPES.items():
        message = file.message_type.add(name=message_name)
        for number, (name, kind, type_name, repeated) in enumerate(fields, start=1):
            field = message.field.add(name=name, number=number, type=kind)
            field.label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
            if type_name is not None:
                field.type_name = type_name if type_name.startswith(".") else f".shapes.{type_name}"
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"shapes.{name}"))
        for name in SHAPES
    }


C = _classes()


def make(message_name: str, /, **fields: object) -> Message:
    return C[message_name](**fields)


def progress(percent: int) -> Message:
    return make("OperationProgress", progress_percent=percent)


def struct(**values: Any) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(values)
    return result


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (progress(42), 0.42),
        (make("CreateBackupMetadata", name="b", progress=progress(75)), 0.75),
        (make("UpdateDatabaseDdlMetadata", progress=[progress(100), progress(50)]), 0.75),
        (make("UpdateDatabaseDdlMetadata", progress=[progress(100), progress(0)]), 0.5),
        (make("Progress", work_estimated=200, work_completed=50), 0.25),
        (
            make(
                "ExportDocumentsMetadata",
                progress_bytes=make("Progress", work_estimated=10, work_completed=1),
                progress_documents=make("Progress", work_estimated=10, work_completed=9),
            ),
            0.1,  # the first progress_* field by name, like any other service's
        ),
        (
            make(
                "ExportDocumentsMetadata",
                progress_documents=make("Progress", work_estimated=4, work_completed=3),
            ),
            0.75,
        ),
        (make("Percent", percent=30), 0.3),
        (make("PercentComplete", percent_complete=12.5), 0.125),
        (make("Percentage", percentage=80.0), 0.8),
        (make("Fraction", fraction=0.6), 0.6),
        (make("FloatProgress", progress=0.25), 0.25),
        (make("IntProgress", progress=40), 0.4),
        (make("Work", completed_work=3, estimated_work=4), 0.75),
        (make("Counts", processed=1, total=8), 0.125),
        (make("Both", percent=10, progress=progress(90)), 0.1),
        (make("StructProgress", progress=struct(percent=20)), 0.2),
        (demo_pb2.SleepMetadata(percent=65), 0.65),
        (struct(percent=55), 0.55),
        (struct(progress_percent=5), 0.05),
        (struct(fraction=0.5), 0.5),
        (struct(progress=0.7), 0.7),
        (struct(completed_work=1, estimated_work=4), 0.25),
        (struct(work_completed=3, work_estimated=4), 0.75),
        (struct(processed=2, total=4), 0.5),
        (struct(state="RUNNING", progress={"percent": 40}), 0.4),
        (struct(progress=[{"percent": 100}, {"percent": 0}, {"stage": "x"}]), 0.5),
        # clamped
        (make("Percent", percent=150), 1.0),
        (make("Percent", percent=-5), 0.0),
        (make("Fraction", fraction=1.5), 1.0),
        (make("Work", completed_work=9, estimated_work=4), 1.0),
    ],
)
def test_a_shape_gives_its_fraction(metadata: Message, expected: float) -> None:
    fraction = lro_async.progress_fraction(metadata)
    assert fraction is not None
    assert math.isclose(fraction, expected), fraction


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        make("Stages", stage="copying"),
        make("CreateBackupMetadata", name="no progress yet"),
        make("UpdateDatabaseDdlMetadata"),  # no statements
        make("Work", completed_work=3, estimated_work=0),  # estimate unknown
        make("Progress"),
        make("Fraction", fraction=math.nan),
        make("PercentComplete", percent_complete=math.inf),
        make("RepeatedPercent", percent=[10, 20]),
        struct(state="RUNNING"),
        struct(percent="50"),
        struct(processed=1, total=0),
        struct(),
        {"percent": 50},
        "50%",
    ],
)
def test_anything_else_is_unknown(metadata: object) -> None:
    assert lro_async.progress_fraction(metadata) is None


def test_a_packed_any_of_a_known_type_is_unpacked_first() -> None:
    packed = any_pb2.Any()
    packed.Pack(demo_pb2.SleepMetadata(percent=40))
    assert lro_async.progress_fraction(packed) == pytest.approx(0.4)
    unknown = any_pb2.Any(type_url="type.googleapis.com/no.such.Type", value=b"\x08\x01")
    assert lro_async.progress_fraction(unknown) is None


def test_a_proto_plus_message_is_read_through_its_protobuf() -> None:
    from google.cloud import redis_v1

    # A proto-plus message with a progress shape of its own: Instance has none, but an
    # Instance wrapped around a message with one would be read the same way.
    assert lro_async.progress_fraction(redis_v1.OperationMetadata(verb="create")) is None
    assert lro_async.progress_fraction(redis_v1.Instance(memory_size_gb=3)) is None


def test_a_proto_plus_message_with_a_percent_field_gives_its_fraction() -> None:
    import proto  # type: ignore[import-untyped]

    class Job(proto.Message):  # type: ignore[misc]
        percent_complete = proto.Field(proto.DOUBLE, number=1)
        state = proto.Field(proto.STRING, number=2)

    assert lro_async.progress_fraction(Job(percent_complete=25.0, state="x")) == 0.25


def test_the_command_shows_any_service_s_percentage() -> None:
    assert render.percent_of(make("Work", completed_work=1, estimated_work=4)) == 25.0
    assert render.percent_of(progress(30)) == pytest.approx(30.0)
    assert render.percent_of(make("Stages", stage="x")) is None
    assert render.percent_of(None) is None
