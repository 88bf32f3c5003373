"""The JSON wire format: proto3 JSON, the fallback for unknown Any types, Google's errors."""

from __future__ import annotations

import grpc
import pytest
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2, wrappers_pb2
from google.rpc import error_details_pb2, status_pb2

from lro_async.protobuf import pack
from lro_async.wire import (
    any_from_json,
    any_to_json,
    error_from_body,
    list_response_from_json,
    list_response_to_json,
    operation_from_json,
    operation_to_json,
)

from .conftest import Served

UNKNOWN = any_pb2.Any(type_url="type.googleapis.com/acme.v1.Secret", value=b"\x08\x96\x01\xff")


def test_known_types_use_the_proto3_json_mapping() -> None:
    assert any_to_json(pack(wrappers_pb2.Int64Value(value=7))) == {
        "@type": "type.googleapis.com/google.protobuf.Int64Value",
        "value": "7",
    }
    assert any_to_json(pack(duration_pb2.Duration(seconds=3))) == {
        "@type": "type.googleapis.com/google.protobuf.Duration",
        "value": "3s",
    }
    info = any_to_json(pack(error_details_pb2.ErrorInfo(reason="R", domain="d")))
    assert info == {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "R",
        "domain": "d",
    }
    for message in (
        wrappers_pb2.Int64Value(value=7),
        struct_pb2.Struct(),
        error_details_pb2.ErrorInfo(),
    ):
        assert any_from_json(any_to_json(pack(message))) == pack(message)


def test_unknown_types_travel_as_base64_and_come_back_intact() -> None:
    data = any_to_json(UNKNOWN)
    assert data == {"@type": UNKNOWN.type_url, "value": "CJYB/w=="}
    assert any_from_json(data) == UNKNOWN
    assert any_from_json({"@type": UNKNOWN.type_url, "value": "CJYB_w=="}) == UNKNOWN  # URL-safe


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {},
        {"@type": 5},
        {"@type": UNKNOWN.type_url},
        {"@type": UNKNOWN.type_url, "value": "%%"},
    ],
)
def test_what_is_not_an_any_is_a_value_error(data: object) -> None:
    with pytest.raises(ValueError, match="Any"):
        any_from_json(data)


def test_operations_and_listings_round_trip() -> None:
    failed = operations_pb2.Operation(name="operations/1", done=True, metadata=UNKNOWN)
    failed.error.CopyFrom(status_pb2.Status(code=5, message="m", details=[UNKNOWN]))
    succeeded = operations_pb2.Operation(name="operations/2", done=True)
    succeeded.response.CopyFrom(
        pack(struct_pb2.Struct(fields={"a": struct_pb2.Value(bool_value=True)}))
    )
    running = operations_pb2.Operation(name="operations/3")
    listing = operations_pb2.ListOperationsResponse(
        operations=[failed, succeeded, running], next_page_token="t"
    )
    assert list_response_from_json(list_response_to_json(listing)) == listing
    assert operation_to_json(running) == {"name": "operations/3"}
    with pytest.raises(ValueError, match="done"):
        operation_from_json({"name": "x", "done": "yes"})


def test_error_bodies_of_other_servers() -> None:
    html = error_from_body(502, b"<html>Bad gateway</html>")
    assert html.code is grpc.StatusCode.UNAVAILABLE
    assert "Bad gateway" in html.message
    listed = error_from_body(
        400, b'[{"error": {"code": 400, "message": "m", "status": "FAILED_PRECONDITION"}}]'
    )
    assert (listed.code, listed.message) == (grpc.StatusCode.FAILED_PRECONDITION, "m")
    numeric = error_from_body(429, b'{"error": {"code": 429, "message": "slow down"}}')
    assert numeric.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    odd = error_from_body(418, b'{"error": {"status": "OK", "details": [1, {"@type": 2}]}}')
    assert (odd.code, odd.details) == (grpc.StatusCode.UNKNOWN, ())


async def test_an_unknown_response_type_reaches_the_http_client_intact(served: Served) -> None:
    proto = await served.manager.create(parent="projects/p", metadata=UNKNOWN)
    await served.manager.complete(proto.name, UNKNOWN)
    body = (await served.http.get(f"/v1/{proto.name}")).json()
    assert body["response"] == {"@type": UNKNOWN.type_url, "value": "CJYB/w=="}
    operation = await served.client.get_operation(proto.name)
    assert operation.response == UNKNOWN
    assert operation.metadata == UNKNOWN
