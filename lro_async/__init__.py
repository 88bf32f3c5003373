"""lro_async: Google-style long-running operations for asyncio.

Await any ``google.longrunning`` operation (``await op``) with one shared long-poll per
operation, and serve operations from grpc.aio with an event-driven WaitOperation.
Synchronous callers use :mod:`lro_async.sync` (``import lro_async.sync``).
"""

from __future__ import annotations

from . import stores as stores
from .backoff import Backoff as Backoff
from .client.bulk import BulkResult as BulkResult
from .client.many import as_completed as as_completed
from .client.many import gather as gather
from .client.operation import AsyncOperation as AsyncOperation
from .client.operations import AsyncOperationsClient as AsyncOperationsClient
from .client.policy import WaitPolicy as WaitPolicy
from .client.policy import channel_options as channel_options
from .client.watching import Change as Change
from .errors import InvalidArgument as InvalidArgument
from .errors import LroError as LroError
from .errors import OperationCancelled as OperationCancelled
from .errors import OperationFailed as OperationFailed
from .errors import OperationNotFound as OperationNotFound
from .errors import OperationTimeout as OperationTimeout
from .errors import PermissionDenied as PermissionDenied
from .errors import ResourceExhausted as ResourceExhausted
from .errors import RpcError as RpcError
from .errors import StoreError as StoreError
from .errors import UnexpectedOperationState as UnexpectedOperationState
from .progress import progress_fraction as progress_fraction
from .server.auth import Access as Access
from .server.auth import Authorizer as Authorizer
from .server.auth import Caller as Caller
from .server.auth import TenantPolicy as TenantPolicy
from .server.context import OperationContext as OperationContext
from .server.manager import OperationManager as OperationManager
from .server.servicer import AsyncOperationsServicer as AsyncOperationsServicer
from .server.servicer import add_service as add_service
from .server.servicer import rpc_method as rpc_method
from .server.servicer import server_options as server_options

__version__ = "0.1.0.dev0"

__all__ = [
    # client
    "AsyncOperation",
    "AsyncOperationsClient",
    "BulkResult",
    "Change",
    "WaitPolicy",
    "as_completed",
    "channel_options",
    "gather",
    "progress_fraction",
    # configuration
    "Backoff",
    # errors
    "InvalidArgument",
    "LroError",
    "OperationCancelled",
    "OperationFailed",
    "OperationNotFound",
    "OperationTimeout",
    "PermissionDenied",
    "ResourceExhausted",
    "RpcError",
    "StoreError",
    "UnexpectedOperationState",
    # server
    "Access",
    "AsyncOperationsServicer",
    "Authorizer",
    "Caller",
    "TenantPolicy",
    "OperationContext",
    "OperationManager",
    "add_service",
    "rpc_method",
    "server_options",
    # stores
    "stores",
]
