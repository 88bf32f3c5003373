"""protobuf.py: Any packing, Status, Duration and Timestamp helpers, the progress header."""

from __future__ import annotations

import datetime
import math

import grpc
import pytest
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2, timestamp_pb2, wrappers_pb2
from google.rpc import status_pb2

import lro_async
from lro_async.protobuf import (
    WAIT_MODE_HEADER,
    describe,
    duration_seconds,
    metadata_fingerprint,
    pack,
    parse_progress_header,
    progress_header,
    seconds_duration,
    status_of,
    timestamp_datetime,
    type_url_of,
    unpack,
)


def test_pack_is_what_any_pack_makes_and_unpack_reverses_it() -> None:
    message = wrappers_pb2.StringValue(value="hello")
    expected = any_pb2.Any()
    expected.Pack(message)
    assert pack(message) == expected
    assert unpack(pack(message), wrappers_pb2.StringValue) == message
    assert type_url_of(wrappers_pb2.StringValue) == expected.type_url


def test_pack_returns_an_any_as_it_is_and_refuses_other_objects() -> None:
    packed = pack(wrappers_pb2.Int64Value(value=1))
    assert pack(packed) is packed
    with pytest.raises(TypeError, match="expected a protobuf message, not dict"):
        pack({"value": 1})  # type: ignore[arg-type]


def test_unpack_names_the_value_and_both_types_when_they_differ() -> None:
    with pytest.raises(lro_async.UnexpectedOperationState) as caught:
        unpack(pack(struct_pb2.Struct()), wrappers_pb2.StringValue, what="response of 'op'")
    assert str(caught.value) == (
        "response of 'op' has type 'type.googleapis.com/google.protobuf.Struct', expected "
        "'type.googleapis.com/google.protobuf.StringValue'"
    )
    with pytest.raises(lro_async.UnexpectedOperationState, match=r"has type '\(empty\)'"):
        unpack(any_pb2.Any(), wrappers_pb2.StringValue)


def test_unpack_of_bytes_that_do_not_parse_is_an_unexpected_state() -> None:
    broken = any_pb2.Any(type_url=type_url_of(wrappers_pb2.StringValue), value=b"\x0a\xff")
    with pytest.raises(lro_async.UnexpectedOperationState, match="does not parse"):
        unpack(broken, wrappers_pb2.StringValue)


def test_status_of_records_code_message_and_details() -> None:
    detail = pack(wrappers_pb2.StringValue(value="why"))
    error = lro_async.OperationFailed(grpc.StatusCode.ABORTED, "stopped", [detail])
    assert status_of(error) == status_pb2.Status(code=10, message="stopped", details=[detail])


@pytest.mark.parametrize(
    ("seconds", "whole", "nanos"),
    [
        (0.0, 0, 0),
        (1.5, 1, 500_000_000),
        (-1.5, -1, -500_000_000),
        (2.9999999999, 3, 0),  # rounding carries into the seconds
        (-0.25, 0, -250_000_000),
    ],
)
def test_seconds_duration_keeps_seconds_and_nanos_of_one_sign(
    seconds: float, whole: int, nanos: int
) -> None:
    duration = seconds_duration(seconds)
    assert (duration.seconds, duration.nanos) == (whole, nanos)
    assert duration_seconds(duration) == pytest.approx(seconds, abs=1e-9)


def test_seconds_duration_refuses_what_is_not_finite() -> None:
    for value in (math.inf, -math.inf, math.nan):
        with pytest.raises(ValueError, match="must be finite"):
            seconds_duration(value)


def test_duration_seconds_reads_negative_durations() -> None:
    assert duration_seconds(duration_pb2.Duration(seconds=-2, nanos=-5)) == pytest.approx(-2.0)


def test_timestamp_datetime_is_aware_utc() -> None:
    stamp = timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=123_000_000)
    when = timestamp_datetime(stamp)
    assert when.tzinfo is datetime.UTC
    assert when == datetime.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=datetime.UTC)


def test_describe_says_running_done_or_how_it_failed() -> None:
    assert describe(operations_pb2.Operation(name="operations/1")) == "'operations/1' running"
    done = operations_pb2.Operation(name="operations/2", done=True)
    done.response.CopyFrom(pack(wrappers_pb2.Int64Value(value=1)))
    assert describe(done) == "'operations/2' done"
    failed = operations_pb2.Operation(name="operations/3", done=True)
    failed.error.code = 5
    assert describe(failed) == "'operations/3' failed (NOT_FOUND)"
    failed.error.code = 77  # a peer's code that gRPC does not know
    assert describe(failed) == "'operations/3' failed (77)"


def test_the_progress_header_round_trips_a_fingerprint() -> None:
    seen = pack(struct_pb2.Struct(fields={"percent": struct_pb2.Value(number_value=10)}))
    key, value = progress_header(seen)
    assert key == WAIT_MODE_HEADER
    fingerprint = parse_progress_header(value)
    assert fingerprint == metadata_fingerprint(seen) and len(fingerprint) == 16
    assert parse_progress_header(progress_header()[1]) == ""


def test_fingerprints_differ_when_the_metadata_does() -> None:
    one = pack(wrappers_pb2.Int64Value(value=1))
    two = pack(wrappers_pb2.Int64Value(value=2))
    assert metadata_fingerprint(one) == metadata_fingerprint(pack(wrappers_pb2.Int64Value(value=1)))
    assert metadata_fingerprint(one) != metadata_fingerprint(two)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("other", None),
        ("", None),
        ("progress;seen=XYZ", ""),  # a malformed fingerprint means "from the start"
        ("progress;seen=0123456789abcdeF", ""),
        (" progress ;seen= 0123456789abcdef ", "0123456789abcdef"),
    ],
)
def test_parse_progress_header_is_strict_about_what_it_accepts(
    value: str, expected: str | None
) -> None:
    assert parse_progress_header(value) == expected
