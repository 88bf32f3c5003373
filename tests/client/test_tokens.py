"""op.token() and client.operation_from_token(): resume a typed operation from one string."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import sys
import urllib.parse
from typing import Any

import pytest
from google.cloud import redis_v1
from google.protobuf import struct_pb2, wrappers_pb2

import lro_async
import lro_async.testing
from lro_async.demo import demo_pb2


def forge(fields: dict[str, object]) -> str:
    """A token with a valid checksum around *fields*: the documented format, by hand."""
    body = json.dumps(fields, separators=(",", ":")).encode()
    digest = hashlib.blake2b(body, digest_size=8, person=b"lro_async").digest()

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return f"lro1.{b64(body)}.{b64(digest)}"


@pytest.fixture
async def client() -> lro_async.AsyncOperationsClient:
    # No RPC is made by token() and operation_from_token(): any channel will do.
    async with lro_async.testing.serve() as served:
        return lro_async.AsyncOperationsClient(served.channel)


@pytest.mark.parametrize(
    ("result_type", "metadata_type"),
    [
        (struct_pb2.Struct, wrappers_pb2.Int32Value),
        (redis_v1.Instance, redis_v1.OperationMetadata),
        (redis_v1.Instance, None),
        (None, demo_pb2.SleepMetadata),
        (None, None),
    ],
)
async def test_a_token_gives_back_the_name_and_the_types(
    client: lro_async.AsyncOperationsClient, result_type: type, metadata_type: type | None
) -> None:
    op: lro_async.AsyncOperation[Any, Any] = client.operation(
        "projects/p/operations/a-b_c",
        result_type=result_type,
        metadata_type=metadata_type,
    )
    token = op.token()
    assert urllib.parse.quote(token, safe="") == token, "URL-safe"
    resumed = client.operation_from_token(token)
    assert resumed.name == op.name
    assert resumed._result_type is result_type
    assert resumed._metadata_type is metadata_type


async def test_a_token_is_compact_versioned_json(client: lro_async.AsyncOperationsClient) -> None:
    op = client.operation(
        "operations/42", result_type=redis_v1.Instance, metadata_type=wrappers_pb2.Int32Value
    )
    token = op.token()
    prefix, body, _ = token.split(".")
    assert prefix == "lro1"
    fields = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert fields == {
        "v": 1,
        "n": "operations/42",
        "r": "google.cloud.redis.v1.Instance",
        "rk": "pp",
        "m": "google.protobuf.Int32Value",
        "mk": "pb",
    }
    assert len(token) < 200


@pytest.mark.parametrize(
    ("mangle", "error"),
    [
        (lambda t: t[:-3], "truncated or altered"),
        (lambda t: t[: len(t) // 2], "truncated"),
        (lambda t: t.replace("lro1.", "lro1.x", 1), "truncated or altered"),
        (lambda t: t.rsplit(".", 1)[0], "truncated or altered"),
        (lambda t: t[:12] + "!" + t[13:], "not valid base64url"),
        (lambda t: "gAN9cQAu", "not an lro_async operation token"),  # a pickle, base64'd
        (lambda t: "", "not an lro_async operation token"),
    ],
)
async def test_a_mangled_token_is_a_clear_value_error(
    client: lro_async.AsyncOperationsClient, mangle: object, error: str
) -> None:
    token = client.operation("operations/42", result_type=struct_pb2.Struct).token()
    assert callable(mangle)
    with pytest.raises(ValueError, match=error):
        client.operation_from_token(mangle(token))


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"v": 2, "n": "operations/1"}, "version 2; this lro_async reads version 1"),
        ({"n": "operations/1"}, "version None"),
        ({"v": 1}, "no operation name"),
        ({"v": 1, "n": ""}, "no operation name"),
        ({"v": 1, "n": "operations/1", "x": 1}, r"unknown fields: \['x'\]"),
        (
            {"v": 1, "n": "operations/1", "r": "no.such.Type", "rk": "pb"},
            "result type 'no.such.Type' \\(protobuf\\) is unknown to this process: import",
        ),
        (
            {"v": 1, "n": "operations/1", "m": "google.protobuf.Int32Value", "mk": "pp"},
            "metadata type 'google.protobuf.Int32Value' \\(proto-plus\\) is unknown",
        ),
        ({"v": 1, "n": "operations/1", "r": "google.protobuf.Struct"}, "result type is malformed"),
        ({"v": 1, "n": "operations/1", "m": 3, "mk": "pb"}, "metadata type is malformed"),
    ],
)
async def test_a_token_that_names_the_wrong_things_is_a_clear_value_error(
    client: lro_async.AsyncOperationsClient, fields: dict[str, object], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        client.operation_from_token(forge(fields))


async def test_a_json_array_is_not_a_token(client: lro_async.AsyncOperationsClient) -> None:
    body = b"[1,2]"
    digest = hashlib.blake2b(body, digest_size=8, person=b"lro_async").digest()
    token = "lro1." + ".".join(
        base64.urlsafe_b64encode(part).rstrip(b"=").decode() for part in (body, digest)
    )
    with pytest.raises(ValueError, match="not hold a JSON object"):
        client.operation_from_token(token)


CHILD = """
import sys
import grpc
from google.cloud import redis_v1
import lro_async

client = lro_async.AsyncOperationsClient(grpc.aio.insecure_channel(sys.argv[1]))
op = client.operation(
    sys.argv[2], result_type=redis_v1.Instance, metadata_type=redis_v1.OperationMetadata
)
print(op.token())
"""


async def test_a_token_made_in_another_process_resumes_the_typed_operation() -> None:
    async with lro_async.testing.serve() as served:
        release = asyncio.Event()

        async def work(ctx: lro_async.OperationContext) -> object:
            await release.wait()
            return redis_v1.Instance.pb(redis_v1.Instance(name="i", memory_size_gb=4))

        started = await served.manager.start(
            work,  # type: ignore[arg-type]
            metadata=redis_v1.OperationMetadata.pb(redis_v1.OperationMetadata(verb="create")),
        )
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            served.target,
            started.name,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            out, err = await child.communicate()
        assert child.returncode == 0, err.decode()
        token = out.decode().strip()
        async with lro_async.AsyncOperationsClient(served.channel) as client:
            op = client.operation_from_token(token)
            assert op.name == started.name
            metadata = await op.until(lambda md: md.verb == "create", timeout=30)
            assert isinstance(metadata, redis_v1.OperationMetadata)
            release.set()
            instance = await op.result(timeout=30)
    assert isinstance(instance, redis_v1.Instance)
    assert instance.memory_size_gb == 4
