# Type stubs for googleapis-common-protos' generated google.longrunning gRPC module, which
# ships as untyped Python. Only what lro_async uses; the stubs are typed for grpc.aio.
from typing import Any

import grpc
import grpc.aio
from google.longrunning import operations_pb2
from google.protobuf import empty_pb2

_Context = grpc.aio.ServicerContext[Any, Any]

class OperationsStub:
    def __init__(self, channel: grpc.aio.Channel) -> None: ...
    ListOperations: grpc.aio.UnaryUnaryMultiCallable[
        operations_pb2.ListOperationsRequest, operations_pb2.ListOperationsResponse
    ]
    GetOperation: grpc.aio.UnaryUnaryMultiCallable[
        operations_pb2.GetOperationRequest, operations_pb2.Operation
    ]
    DeleteOperation: grpc.aio.UnaryUnaryMultiCallable[
        operations_pb2.DeleteOperationRequest, empty_pb2.Empty
    ]
    CancelOperation: grpc.aio.UnaryUnaryMultiCallable[
        operations_pb2.CancelOperationRequest, empty_pb2.Empty
    ]
    WaitOperation: grpc.aio.UnaryUnaryMultiCallable[
        operations_pb2.WaitOperationRequest, operations_pb2.Operation
    ]

class OperationsServicer:
    async def ListOperations(
        self, request: operations_pb2.ListOperationsRequest, context: _Context
    ) -> operations_pb2.ListOperationsResponse: ...
    async def GetOperation(
        self, request: operations_pb2.GetOperationRequest, context: _Context
    ) -> operations_pb2.Operation: ...
    async def DeleteOperation(
        self, request: operations_pb2.DeleteOperationRequest, context: _Context
    ) -> empty_pb2.Empty: ...
    async def CancelOperation(
        self, request: operations_pb2.CancelOperationRequest, context: _Context
    ) -> empty_pb2.Empty: ...
    async def WaitOperation(
        self, request: operations_pb2.WaitOperationRequest, context: _Context
    ) -> operations_pb2.Operation: ...

def add_OperationsServicer_to_server(
    servicer: OperationsServicer, server: grpc.Server | grpc.aio.Server
) -> None: ...
