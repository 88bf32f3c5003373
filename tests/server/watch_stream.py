"""A raw OperationsWatch stream for tests: write requests, read events with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import cast

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from lro_async.v1 import watch_pb2, watch_pb2_grpc
from lro_async.v1.watch_pb2_grpc import OperationsWatchStub

Event = watch_pb2.Event
WatchRequest = watch_pb2.WatchRequest


def add(*names: str, metadata: bool = False) -> WatchRequest:
    return WatchRequest(add=WatchRequest.Add(names=names, metadata_changes=metadata))


def remove(*names: str) -> WatchRequest:
    return WatchRequest(remove=WatchRequest.Remove(names=names))


def collection(
    parent: str, filter: str = "", *, page_size: int = 0, metadata: bool = False
) -> WatchRequest:
    return WatchRequest(
        collection=WatchRequest.Collection(
            parent=parent, filter=filter, page_size=page_size, metadata_changes=metadata
        )
    )


def error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo:
    info = error_details_pb2.ErrorInfo()
    assert status.details and status.details[0].Unpack(info), status
    return info


class Stream:
    """One Watch call over a raw stub, and every response read from it so far."""

    def __init__(self, channel: grpc.aio.Channel, *, metadata: Iterable[tuple[str, str]] = ()):
        stub = cast("watch_pb2_grpc.OperationsWatchAsyncStub", OperationsWatchStub(channel))
        self.call: grpc.aio.StreamStreamCall[WatchRequest, watch_pb2.WatchResponse] = stub.Watch(
            metadata=tuple(metadata)
        )
        self.responses: list[watch_pb2.WatchResponse] = []
        self.events: list[Event] = []
        self._taken = 0

    async def send(self, *requests: WatchRequest) -> None:
        for request in requests:
            await self.call.write(request)

    async def read_response(self) -> watch_pb2.WatchResponse:
        response = await self.call.read()
        assert response is not grpc.aio.EOF, "the stream ended"
        assert isinstance(response, watch_pb2.WatchResponse)
        self.responses.append(response)
        self.events.extend(response.events)
        return response

    async def take(self, count: int, *, within: float = 10.0) -> list[Event]:
        """The next *count* events (reading as many responses as that takes)."""
        try:
            async with asyncio.timeout(within):
                while len(self.events) < self._taken + count:
                    await self.read_response()
        except TimeoutError:
            got = len(self.events) - self._taken
            pytest.fail(f"{count} events expected within {within} s, {got} came: {self.events}")
        taken = self.events[self._taken : self._taken + count]
        self._taken += count
        return taken

    async def until(self, predicate: Callable[[Event], bool]) -> Event:
        """Events up to the first that satisfies *predicate*; return it."""
        while True:
            (event,) = await self.take(1)
            if predicate(event):
                return event

    async def rest(self, *, within: float = 10.0) -> list[Event]:
        """Every event until the stream ends; then its status code is in ``code()``."""
        try:
            async with asyncio.timeout(within):
                while (response := await self.call.read()) is not grpc.aio.EOF:
                    assert isinstance(response, watch_pb2.WatchResponse)
                    self.responses.append(response)
                    self.events.extend(response.events)
        except TimeoutError:
            pytest.fail(f"the stream did not end within {within} s; events: {self.events}")
        rest = self.events[self._taken :]
        self._taken = len(self.events)
        return rest

    async def code(self) -> grpc.StatusCode:
        code: grpc.StatusCode = await self.call.code()
        return code
