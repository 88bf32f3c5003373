"""gRPC server reflection, both halves: ``serve`` answers it, the client commands ask it.

``serve`` answers ``grpc.reflection.v1.ServerReflection`` (what newer tools such as grpcurl
ask first) as well as ``grpc.reflection.v1alpha.ServerReflection``. grpcio-reflection ships
only v1alpha's code (up to 1.85 at least); the two protos differ in their package name
alone, so v1 is served by the same servicer with the same wire messages, and its
descriptor (v1alpha's, renamed) is added to the pool so that the v1 service can be
described too.

The client commands ask the server for the file descriptors of the types they meet in an
operation's metadata and response, so that ``get``, ``wait`` and ``watch`` show other
services' messages decoded; they fall back to the raw form when the server does not answer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor
from grpc_reflection.v1alpha import reflection, reflection_pb2

from ..errors import RpcError, rpc_call

__all__ = ["V1_SERVICE_NAME", "TypeResolver", "enable_reflection"]

logger = logging.getLogger("lro_async")

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"
_METHOD = "ServerReflectionInfo"
_MAX_FILES = 200  # most descriptor files one type may pull in


def _add_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    """Add grpc/reflection/v1/reflection.proto (v1alpha's, renamed) to *pool* once."""
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    proto.name, proto.package = _V1_FILE, "grpc.reflection.v1"
    proto.ClearField("options")
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name.removeprefix(old)
    for service in proto.service:
        for method in service.method:
            method.input_type = new + method.input_type.removeprefix(old)
            method.output_type = new + method.output_type.removeprefix(old)
    pool.Add(proto)


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection v1 and v1alpha for *service_names* (which should name both)."""
    names = tuple(service_names)
    servicer = reflection.aio.ReflectionServicer(names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(reflection.SERVICE_NAME, {_METHOD: handler}),
            grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {_METHOD: handler}),
        )
    )
    _add_v1_descriptor(descriptor_pool.Default())


class TypeResolver:
    """Message descriptors for type names: this process's own, or learned from the server.

    Learned descriptors live in a private pool, so a server's files never clash with the
    ones this process imported. Each type is asked for at most once; a server without
    reflection is asked once in all.

    :param channel: the channel to the server that sent the operations.
    :param timeout: the deadline of each reflection call, in seconds.
    """

    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self._channel = channel
        self._timeout = timeout
        self.pool = descriptor_pool.DescriptorPool()
        self._asked: set[str] = set()
        self._services = [V1_SERVICE_NAME, reflection.SERVICE_NAME]  # v1 first, as tools do

    def find(self, type_name: str) -> tuple[Descriptor, descriptor_pool.DescriptorPool] | None:
        """The descriptor of *type_name* and the pool that holds it, if known."""
        for pool in (descriptor_pool.Default(), self.pool):
            try:
                return pool.FindMessageTypeByName(type_name), pool
            except KeyError:
                continue
        return None

    async def learn(self, type_name: str) -> None:
        """Ask the server for *type_name*'s descriptors unless it is known or was asked."""
        if not type_name or type_name in self._asked or self.find(type_name) is not None:
            return
        self._asked.add(type_name)
        if not self._services:
            return
        try:
            await self._fetch(
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=type_name)
            )
        except RpcError as exc:
            logger.debug("no descriptor for %s from the server: %s", type_name, exc)

    async def _fetch(self, request: reflection_pb2.ServerReflectionRequest) -> None:
        """Send *request*, then ask for missing dependencies by file name; add all files."""
        files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        pending = [request]
        while pending and len(files) < _MAX_FILES:
            response = await self._ask(pending.pop())
            if response is None:
                return
            for blob in response.file_descriptor_response.file_descriptor_proto:
                proto = descriptor_pb2.FileDescriptorProto.FromString(blob)
                files.setdefault(proto.name, proto)
            for proto in list(files.values()):
                for dependency in proto.dependency:
                    if dependency not in files and not self._have_file(dependency):
                        if self._copy_default(dependency, files):
                            continue
                        pending.append(
                            reflection_pb2.ServerReflectionRequest(file_by_filename=dependency)
                        )
        self._add(files)

    async def _ask(
        self, request: reflection_pb2.ServerReflectionRequest
    ) -> reflection_pb2.ServerReflectionResponse | None:
        """One request on the first reflection service the server implements."""
        while self._services:
            method = self._channel.stream_stream(
                f"/{self._services[0]}/{_METHOD}",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            call = method(iter([request]), timeout=self._timeout)
            try:
                response = await rpc_call(call.read())
            except RpcError as exc:
                if exc.code != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                self._services.pop(0)
                continue
            finally:
                call.cancel()
            if not isinstance(response, reflection_pb2.ServerReflectionResponse):
                return None  # the stream ended without an answer
            if response.HasField("error_response"):
                return None
            return response
        return None

    def _have_file(self, name: str) -> bool:
        try:
            self.pool.FindFileByName(name)
        except KeyError:
            return False
        return True

    @staticmethod
    def _copy_default(name: str, files: dict[str, descriptor_pb2.FileDescriptorProto]) -> bool:
        """Take *name* (and its dependencies) from this process's pool, if it has them."""
        try:
            found = descriptor_pool.Default().FindFileByName(name)
        except KeyError:
            return False
        todo = [found]
        while todo:
            file = todo.pop()
            if file.name in files:
                continue
            proto = descriptor_pb2.FileDescriptorProto()
            file.CopyToProto(proto)
            files[file.name] = proto
            todo.extend(file.dependencies)
        return True

    def _add(self, files: dict[str, descriptor_pb2.FileDescriptorProto]) -> None:
        """Add *files* to the private pool, each after its dependencies."""
        left = {name: proto for name, proto in files.items() if not self._have_file(name)}
        while left:
            ready = [
                name
                for name, proto in left.items()
                if all(self._have_file(d) for d in proto.dependency)
            ]
            if not ready:
                logger.debug("reflection gave files with missing dependencies: %s", sorted(left))
                return
            for name in ready:
                try:
                    self.pool.Add(left.pop(name))
                except (TypeError, ValueError) as exc:  # a malformed or conflicting file
                    logger.debug("cannot use the descriptor %s: %s", name, exc)
                    return
