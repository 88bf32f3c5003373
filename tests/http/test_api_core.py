"""google-api-core's REST operations clients against lro_async's HTTP server."""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

import pytest
from google.api_core import client_options, exceptions, operations_v1
from google.auth.credentials import AnonymousCredentials
from google.protobuf import wrappers_pb2

from .conftest import Served

HAS_ASYNC_REST = "AsyncOperationsRestClient" in operations_v1.__all__ and (
    importlib.util.find_spec("aiohttp") is not None
)


# api-core is untyped: these typed doors keep mypy --strict quiet about it.
def rest_client(url: str) -> Any:
    options = client_options.ClientOptions(api_endpoint=url)
    return operations_v1.AbstractOperationsClient(
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options=options,
    )


def async_rest_client(url: str) -> Any:
    from google.auth.aio.credentials import AnonymousCredentials as AsyncAnonymous

    options = client_options.ClientOptions(api_endpoint=url)
    return operations_v1.AsyncOperationsRestClient(
        credentials=AsyncAnonymous(),  # type: ignore[no-untyped-call]
        client_options=options,
    )


async def seed(served: Served, count: int) -> list[str]:
    names = []
    for i in range(count):
        op = await served.manager.create(
            parent="projects/p", metadata=wrappers_pb2.Int32Value(value=i)
        )
        names.append(op.name)
    return names


async def test_the_sync_rest_client_gets_lists_cancels_and_deletes(served: Served) -> None:
    names = await seed(served, 7)
    client = rest_client(served.url)
    try:

        def scenario() -> list[str]:
            fetched = client.get_operation(names[0])
            assert fetched.name == names[0]
            assert fetched.metadata.type_url.endswith("Int32Value")
            listed = [op.name for op in client.list_operations("projects/p", "", page_size=3)]
            client.cancel_operation(names[1])
            client.delete_operation(names[2])
            with pytest.raises(exceptions.NotFound) as caught:
                client.get_operation(names[2])
            assert caught.value.reason == "OPERATION_NOT_FOUND"
            with pytest.raises(exceptions.BadRequest):
                list(client.list_operations("projects/p", "done ==="))
            return listed

        listed = await asyncio.to_thread(scenario)  # a blocking client: keep the loop free
    finally:
        client.transport._session.close()
    assert listed == names  # all three pages
    assert served.counted.counts["LIST"] == 3 + 1
    cancelled = await served.manager.get(names[1])
    assert cancelled.done and cancelled.error.code == 1


@pytest.mark.skipif(not HAS_ASYNC_REST, reason="needs google-api-core[async_rest] (aiohttp)")
async def test_the_async_rest_client_gets_lists_cancels_and_deletes(served: Served) -> None:
    names = await seed(served, 5)
    client = async_rest_client(served.url)
    try:
        assert (await client.get_operation(names[0])).name == names[0]
        pager = await client.list_operations("projects/p", "", page_size=2)
        assert [op.name async for op in pager] == names
        await client.cancel_operation(names[1])
        await client.delete_operation(names[2])
        with pytest.raises(exceptions.NotFound):
            await client.get_operation(names[2])
    finally:
        await client.transport._session.close()
    assert (await served.manager.get(names[1])).error.code == 1
