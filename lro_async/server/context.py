"""OperationContext: what a coroutine run by ``OperationManager.start`` gets to work with."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..stores.base import parent_of

if TYPE_CHECKING:
    from google.longrunning import operations_pb2
    from google.protobuf.message import Message

    from .manager import OperationManager

__all__ = ["OperationContext"]


class OperationContext:
    """The running operation, as its coroutine sees it.

    Cancellation (CancelOperation, or the manager shutting down) arrives as
    ``asyncio.CancelledError`` at the coroutine's next ``await``; the operation is already
    recorded as CANCELLED by then, so cleanup code need not report anything.

    >>> from google.protobuf import struct_pb2
    >>> async def work(ctx: OperationContext) -> struct_pb2.Struct:
    ...     for percent in (25, 50, 100):
    ...         await ctx.set_metadata(struct_pb2.Struct(fields={}))
    ...     return struct_pb2.Struct()
    """

    __slots__ = ("_manager", "name")

    def __init__(self, manager: OperationManager, name: str) -> None:
        self._manager = manager
        self.name = name

    def __repr__(self) -> str:
        return f"<OperationContext {self.name!r}>"

    @property
    def parent(self) -> str:
        """The parent the operation was created under (``""``: top level)."""
        return parent_of(self.name)

    async def set_metadata(self, metadata: Message) -> bool:
        """Publish new metadata (progress) for the operation; wakes progress watchers.

        :return: False if the operation is done already (e.g. cancelled) and nothing changed.
        """
        return await self._manager.set_metadata(self.name, metadata)

    async def get(self) -> operations_pb2.Operation:
        """The operation's latest state, as clients see it."""
        return await self._manager.get(self.name)
