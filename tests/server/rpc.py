"""Helpers for talking to the servicer through the generated stub."""

from __future__ import annotations

from collections.abc import Awaitable

import grpc
import pytest
from google.longrunning import operations_pb2
from google.rpc import error_details_pb2, status_pb2


async def rpc_fails(call: Awaitable[object], code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """Await *call*, expect it to fail with *code* and a google.rpc.ErrorInfo detail."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    assert error.code() == code, error.details()
    assert error.details(), "every error status carries a message"
    trailers = dict(error.trailing_metadata() or ())
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == code.value[0]
    info = error_details_pb2.ErrorInfo()
    assert status.details and status.details[0].Unpack(info)
    assert info.domain == "lro-async" and info.reason
    return error


def wait_request(name: str, timeout: float | None = None) -> operations_pb2.WaitOperationRequest:
    request = operations_pb2.WaitOperationRequest(name=name)
    if timeout is not None:
        request.timeout.FromNanoseconds(int(timeout * 1e9))
    return request
