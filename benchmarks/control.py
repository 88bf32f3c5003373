"""The side channel a benchmark client uses to drive a benchmark server.

A generic gRPC service, ``lro_async.bench.Control``, whose methods take and return a
``google.protobuf.Struct``, so no .proto has to be compiled. It is served beside the
Operations service and never counted as an Operations RPC.

- ``Create {count, parent}`` -> ``{names}``: make *count* running operations (names joined
  by newlines, which is far cheaper than a list of 100,000 Struct values);
- ``Schedule {delay, spread}`` -> ``{start}``: finish them in order, the first *delay*
  seconds from now and the last *spread* seconds after it (0: all at once);
- ``CompleteAll {}`` -> ``{start, end}``: finish every unfinished one now, in one go;
- ``Stats {}`` -> ``{cpu, rss, waiting, done, rpcs, gc}``: the server process's CPU
  seconds and resident bytes, open WaitOperation calls, finished operations, Operations
  RPCs received so far by method, and its garbage collector's pauses
  (:class:`~benchmarks.gcpauses.GcPauses`); ``{objects: true}`` also counts the objects
  its garbage collector tracks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

__all__ = ["SERVICE", "Control", "Stats", "control_handler"]

SERVICE = "lro_async.bench.Control"

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def _to_struct(values: dict[str, Any]) -> struct_pb2.Struct:
    return json_format.ParseDict(values, struct_pb2.Struct())


def _from_struct(message: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def control_handler(methods: dict[str, Handler]) -> grpc.GenericRpcHandler:
    """The Control service for a grpc.aio server, from its methods by name."""

    def wrap(handler: Handler) -> Callable[[struct_pb2.Struct, Any], Awaitable[struct_pb2.Struct]]:
        async def call(request: struct_pb2.Struct, context: Any) -> struct_pb2.Struct:
            return _to_struct(await handler(_from_struct(request)))

        return call

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            name: grpc.unary_unary_rpc_method_handler(
                wrap(handler),
                request_deserializer=struct_pb2.Struct.FromString,
                response_serializer=struct_pb2.Struct.SerializeToString,
            )
            for name, handler in methods.items()
        },
    )


@dataclasses.dataclass(frozen=True)
class Stats:
    """What ``Stats`` answers: a snapshot of the server process."""

    cpu: float
    rss: int
    waiting: int
    done: int
    rpcs: dict[str, int]
    gc: dict[str, Any]
    objects: int  # gc-tracked objects, or -1 if not asked for
    notice_part_us: float  # the median server's part of a long-polled notice, or -1

    def rpcs_since(self, before: Stats) -> dict[str, int]:
        """Operations RPCs received between *before* and this snapshot, by method."""
        return {
            method: count - before.rpcs.get(method, 0)
            for method, count in self.rpcs.items()
            if count - before.rpcs.get(method, 0)
        }


class Control:
    """The client side of the Control service, over a grpc.aio channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel

    async def _call(self, method: str, timeout: float = 600.0, **values: Any) -> dict[str, Any]:
        callable_: grpc.aio.UnaryUnaryMultiCallable[struct_pb2.Struct, struct_pb2.Struct] = (
            self._channel.unary_unary(
                f"/{SERVICE}/{method}",
                request_serializer=struct_pb2.Struct.SerializeToString,
                response_deserializer=struct_pb2.Struct.FromString,
            )
        )
        return _from_struct(await callable_(_to_struct(values), timeout=timeout))

    async def create(self, count: int, parent: str = "projects/bench") -> list[str]:
        answer = await self._call("Create", count=count, parent=parent)
        text = str(answer.get("names", ""))
        return text.split("\n") if text else []

    async def schedule(self, delay: float, spread: float) -> float:
        """Finish every created operation on a schedule; return the server's start time."""
        return float((await self._call("Schedule", delay=delay, spread=spread))["start"])

    async def complete_all(self) -> tuple[float, float]:
        """Finish every unfinished operation now; return the server's start and end times."""
        answer = await self._call("CompleteAll")
        return float(answer["start"]), float(answer["end"])

    async def stats(self, *, objects: bool = False) -> Stats:
        """A snapshot of the server; *objects* also counts its gc-tracked objects (slow)."""
        answer = await self._call("Stats", timeout=60.0, objects=objects)
        return Stats(
            cpu=float(answer["cpu"]),
            rss=int(answer["rss"]),
            waiting=int(answer["waiting"]),
            done=int(answer["done"]),
            rpcs={str(k): int(v) for k, v in dict(answer.get("rpcs", {})).items()},
            gc=dict(answer["gc"]),
            objects=int(answer["objects"]),
            notice_part_us=float(answer["notice_part_us"]),
        )
