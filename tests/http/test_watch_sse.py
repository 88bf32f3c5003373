"""The Watch extension over HTTP: Server-Sent Events against real uvicorn."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from google.protobuf import wrappers_pb2

from lro_async import TenantPolicy

from ..waiting import until
from .conftest import Served, serve_http

Json = dict[str, Any]


class Sse:
    """One SSE response: its events (data of each) read with a deadline."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines: AsyncIterator[str] = response.aiter_lines()
        self.comments = 0

    async def next(self, timeout: float = 10.0) -> tuple[str, Json] | None:
        """The next event as (type, data), or None when the stream ended."""
        kind, data = "message", ""
        async with asyncio.timeout(timeout):
            async for line in self.lines:
                if line.startswith(":"):
                    self.comments += 1
                elif line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data = line.removeprefix("data: ")
                elif line == "" and data:
                    return kind, json.loads(data)
        return None

    async def take(self, count: int) -> list[Json]:
        events: list[Json] = []
        for _ in range(count):
            event = await self.next()
            assert event is not None, f"the stream ended after {len(events)} of {count} events"
            assert event[0] == "message", event
            events.append(event[1])
        return events

    async def rest(self) -> list[tuple[str, Json]]:
        events: list[tuple[str, Json]] = []
        while (event := await self.next()) is not None:
            events.append(event)
        return events


async def watched(served: Served, count: int) -> None:
    """Return once the stream's names are watched (the hub holds *count* of them)."""
    await until(
        lambda: served.manager.watched >= count,
        f"{count} names never watched",
        details=lambda: f"{served.manager.watched} watched",
    )


async def test_a_names_watch_answers_done_operations_and_ends(served: Served) -> None:
    manager = served.manager
    first, second = await manager.create(), await manager.create()
    await manager.complete(first.name, wrappers_pb2.Int64Value(value=1))
    body = {"names": [first.name, second.name]}
    async with served.http.stream("POST", "/v1/operations:watch", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        sse = Sse(response)
        (done,) = await sse.take(1)  # level-triggered: done already
        assert (done["kind"], done["name"], done["operation"]["done"]) == ("DONE", first.name, True)
        await watched(served, 1)
        await manager.complete(second.name)
        (later,) = await sse.take(1)
        assert (later["kind"], later["name"]) == ("DONE", second.name)
        assert await sse.rest() == []  # every name answered: the stream ends
    assert served.app.watches is not None and served.app.watches.streams == 0


async def test_per_name_errors_are_events_and_the_stream_goes_on(served: Served) -> None:
    running = await served.manager.create()
    body = {"names": ["not a name", "operations/missing", running.name]}
    async with served.http.stream("POST", "/v1/operations:watch", json=body) as response:
        sse = Sse(response)
        errors = await sse.take(2)
        assert {(e["kind"], e["name"], e["error"]["code"]) for e in errors} == {
            ("ERROR", "not a name", 3),
            ("ERROR", "operations/missing", 5),
        }
        reasons = {e["error"]["details"][0]["reason"] for e in errors}
        assert all(reasons), errors
        await served.manager.complete(running.name)
        (done,) = await sse.take(1)
        assert (done["kind"], done["name"]) == ("DONE", running.name)


async def test_names_are_authorized_one_by_one() -> None:
    async with serve_http(authorize=TenantPolicy()) as served:
        mine = await served.manager.create(parent="tenants/acme")
        theirs = await served.manager.create(parent="tenants/other")
        await served.manager.complete(mine.name)
        await served.manager.complete(theirs.name)
        body = {"names": [theirs.name, mine.name]}
        headers = {"x-tenant": "acme"}
        async with served.http.stream(
            "POST", "/v1/operations:watch", json=body, headers=headers
        ) as response:
            events = [data for _, data in await Sse(response).rest()]
        by_name = {e["name"]: e for e in events}
        assert by_name[mine.name]["kind"] == "DONE"
        assert by_name[theirs.name]["kind"] == "ERROR"
        assert by_name[theirs.name]["error"]["code"] in (5, 7)  # as the policy answers


async def test_a_collection_watch_sees_the_snapshot_then_changes_in_order(served: Served) -> None:
    manager = served.manager
    before = await manager.create(parent="projects/p")
    await manager.create(parent="projects/q")  # another parent: never seen
    url = "/v1/projects/p/operations:watch"
    async with served.http.stream("GET", url, params={"metadataChanges": "true"}) as response:
        assert response.status_code == 200
        sse = Sse(response)
        snapshot, synced = await sse.take(2)
        assert (snapshot["kind"], snapshot["name"]) == ("SNAPSHOT", before.name)
        assert synced == {"kind": "SNAPSHOT_END"}
        created = await manager.create(parent="projects/p")
        assert [(e["kind"], e["name"]) for e in await sse.take(1)] == [("CREATED", created.name)]
        await manager.set_metadata(created.name, wrappers_pb2.Int64Value(value=5))
        assert [(e["kind"], e["name"]) for e in await sse.take(1)] == [("CHANGED", created.name)]
        await manager.complete(created.name)
        assert [(e["kind"], e["name"]) for e in await sse.take(1)] == [("DONE", created.name)]
        await manager.delete(created.name)
        assert await sse.take(1) == [{"kind": "DELETED", "name": created.name}]


async def test_a_filter_limits_the_collection_watch(served: Served) -> None:
    await served.manager.create(parent="projects/p")
    done = await served.manager.create(parent="projects/p")
    await served.manager.complete(done.name)
    params = {"filter": "done = true"}
    async with served.http.stream("GET", "/v1/-/operations:watch", params=params) as response:
        sse = Sse(response)
        assert [(e["kind"], e.get("name")) for e in await sse.take(2)] == [
            ("SNAPSHOT", done.name),
            ("SNAPSHOT_END", None),
        ]


@pytest.mark.parametrize(
    ("url", "params"),
    [
        ("/v1/projects/p/operations:watch", {"filter": "done = = true"}),
        ("/v1/projects/p/operations:watch", {"pageSize": "x"}),
        ("/v1/projects/p/operations:watch", {"colour": "red"}),
    ],
)
async def test_a_bad_collection_request_is_400_invalid_argument(
    served: Served, url: str, params: dict[str, str]
) -> None:
    response = await served.http.get(url, params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert served.app.watches is not None and served.app.watches.streams == 0


@pytest.mark.parametrize("body", [b"[1]", b"{not json", b'{"names": 3}'])
async def test_a_bad_names_body_is_400_invalid_argument(served: Served, body: bytes) -> None:
    response = await served.http.post("/v1/operations:watch", content=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


async def test_a_forbidden_collection_is_refused_before_the_stream() -> None:
    async with serve_http(authorize=TenantPolicy()) as served:
        headers = {"x-tenant": "acme"}
        url = "/v1/tenants/other/operations:watch"
        response = await served.http.get(url, headers=headers)
        assert response.status_code in (403, 404), response.text
        allowed = "/v1/tenants/acme/operations:watch"
        async with served.http.stream("GET", allowed, headers=headers) as ok:
            assert ok.status_code == 200
            assert await Sse(ok).take(1) == [{"kind": "SNAPSHOT_END"}]


async def test_streams_past_the_limit_per_client_are_429_and_names_past_theirs_errors() -> None:
    async with serve_http(max_watch_streams=1, max_watch_names=1) as served:
        first, second = await served.manager.create(), await served.manager.create()
        body = {"names": [first.name, second.name]}
        async with served.http.stream("POST", "/v1/operations:watch", json=body) as open_:
            sse = Sse(open_)
            (error,) = await sse.take(1)
            assert (error["kind"], error["name"]) == ("ERROR", second.name)
            assert error["error"]["code"] == 8  # RESOURCE_EXHAUSTED: one name per stream
            refused = await served.http.post("/v1/operations:watch", json={"names": []})
            assert refused.status_code == 429
            assert refused.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
            await served.manager.complete(first.name)
            assert [e["name"] for e in await sse.take(1)] == [first.name]


async def test_drain_ends_the_stream_with_the_latest_state(served: Served) -> None:
    running = await served.manager.create(metadata=wrappers_pb2.Int64Value(value=3))
    body = {"names": [running.name]}
    async with served.http.stream("POST", "/v1/operations:watch", json=body) as response:
        await watched(served, 1)
        await served.manager.drain(grace=0)
        events = await Sse(response).rest()
    assert [(kind, e["kind"], e["name"]) for kind, e in events] == [
        ("message", "CHANGED", running.name)
    ]
    assert events[0][1]["operation"]["metadata"]["value"] == "3"


async def test_an_idle_stream_gets_heartbeats() -> None:
    async with serve_http(heartbeat=0.05) as served:
        running = await served.manager.create()
        body = {"names": [running.name]}
        async with served.http.stream("POST", "/v1/operations:watch", json=body) as response:
            sse = Sse(response)
            async with asyncio.timeout(10):
                async for line in sse.lines:
                    if line == ": keep-alive":
                        break
            await served.manager.complete(running.name)
            assert [e["kind"] for e in await sse.take(1)] == ["DONE"]


async def test_a_client_that_leaves_frees_its_stream(served: Served) -> None:
    running = await served.manager.create()
    async with served.http.stream(
        "POST", "/v1/operations:watch", json={"names": [running.name]}
    ) as response:
        assert response.status_code == 200
        await watched(served, 1)
    watches = served.app.watches
    assert watches is not None
    await until(
        lambda: not watches.streams and not served.manager.watched,
        "the stream the client left was never freed",
        details=lambda: f"{watches.streams} streams, {served.manager.watched} names watched",
    )


async def test_without_watch_the_routes_are_not_there() -> None:
    async with serve_http(watch=False) as served:
        response = await served.http.post("/v1/operations:watch", json={"names": []})
        assert response.status_code in (404, 405, 501)
