"""Hostile input gets a 4xx JSON error, never a 500: paths, queries, bodies, headers."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..waiting import until
from .conftest import Served, serve_http
from .test_status_table import error_of

NAME = "projects/p/operations/AAAAAAAAAAAAAAAAAAAAAA"


def raw(served: Served, path: str, query: str = "") -> httpx.URL:
    """A URL with exactly this path and query on the wire (nothing normalised away)."""
    base = httpx.URL(served.url)
    return base.copy_with(raw_path=(path + (f"?{query}" if query else "")).encode("ascii"))


BAD_URLS = [
    ("/v2/operations/x", "", 404, "NOT_FOUND"),  # outside the prefix
    ("/v1", "", 404, "NOT_FOUND"),
    (f"/v1/{NAME}%FF", "", 400, "INVALID_ARGUMENT"),  # not UTF-8
    (f"/v1/{NAME}%00", "", 400, "INVALID_ARGUMENT"),
    (f"/v1/{'a/' * 400}operations/x", "", 400, "INVALID_ARGUMENT"),  # too long
    (f"/v1/{NAME}", "x=1", 400, "INVALID_ARGUMENT"),  # unknown parameter
    (f"/v1/{NAME}", "alt=json&prettyPrint=false", 404, "NOT_FOUND"),  # ignored ones
    ("/v1/projects/p/operations", "pageSize=ten", 400, "INVALID_ARGUMENT"),
    ("/v1/projects/p/operations", "pageSize=99999999999", 400, "INVALID_ARGUMENT"),
    ("/v1/projects/p/operations", "pageSize=1.5", 400, "INVALID_ARGUMENT"),
    ("/v1/projects/p/operations", "pageSize=1&page_size=2", 400, "INVALID_ARGUMENT"),
    ("/v1/projects/p/operations", "filter=%FF", 400, "INVALID_ARGUMENT"),
    ("/v1/projects/p/operations", "&".join(["f=1"] * 50), 400, "INVALID_ARGUMENT"),
    ("/v1/projects/p/operations", "returnPartialSuccess=maybe", 400, "INVALID_ARGUMENT"),
    ("/v1/projects/p/operations", "name=projects/q", 400, "INVALID_ARGUMENT"),
]

BAD_BODIES = [
    ("cancel", b"{"),
    ("cancel", b"[]"),
    ("cancel", b'"x"'),
    ("cancel", b"\xff\xfe"),
    ("cancel", b'{"unknown": 1}'),
    ("cancel", b'{"name": "projects/q/operations/x"}'),
    ("wait", b'{"timeout": "soon"}'),
    ("wait", b'{"timeout": 30}'),
    ("wait", b'{"timeout": "315576000001s"}'),
    ("wait", b"[" * 100_00 + b"]" * 100_00),
    ("wait", b'{"timeout": "1s", "timeout": "2s", "name": 5}'),
]


async def test_bad_paths_and_queries(served: Served) -> None:
    for path, query, status, code in BAD_URLS:
        error_of(await served.http.get(raw(served, path, query)), status, code)


async def test_bad_bodies(served: Served) -> None:
    for verb, body in BAD_BODIES:
        response = await served.http.post(f"/v1/{NAME}:{verb}", content=body)
        error_of(response, 400, "INVALID_ARGUMENT")


async def test_huge_bodies_are_refused_before_they_are_read() -> None:
    async with serve_http(max_body_bytes=1024) as served:
        response = await served.http.post(f"/v1/{NAME}:cancel", content=b" " * 2000)
        assert error_of(response, 413, "INVALID_ARGUMENT")["details"][0]["reason"] == (
            "BODY_TOO_LARGE"
        )

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
            for _ in range(100):
                yield b" " * 100

        response = await served.http.post(f"/v1/{NAME}:cancel", content=chunks())
        error_of(response, 413, "INVALID_ARGUMENT")
        # A body where none is expected is left unread; the connection stays usable.
        for _ in range(2):
            response = await served.http.request("GET", f"/v1/{NAME}", content=b" " * 500_000)
            error_of(response, 404, "NOT_FOUND")


async def test_methods_and_verbs_that_do_not_exist(served: Served) -> None:
    for method in ("PUT", "PATCH", "OPTIONS"):
        response = await served.http.request(method, f"/v1/{NAME}")
        error_of(response, 405, "UNIMPLEMENTED")
        assert response.headers["allow"] == "GET, POST, DELETE"
    error_of(await served.http.post(f"/v1/{NAME}"), 404, "NOT_FOUND")
    error_of(await served.http.post(f"/v1/{NAME}:explode"), 404, "NOT_FOUND")


async def test_a_bad_deadline_header_is_invalid_argument(served: Served) -> None:
    for value in ("soon", "-1", "nan", "inf"):
        response = await served.http.post(
            f"/v1/{NAME}:wait", json={}, headers={"x-server-timeout": value}
        )
        error_of(response, 400, "INVALID_ARGUMENT")


async def test_too_many_waits_get_resource_exhausted_with_a_retry_hint() -> None:
    async with serve_http(max_waits=1) as served:
        proto = await served.manager.create(parent="projects/p")
        first = served.http.post(f"/v1/{proto.name}:wait", json={"timeout": "5s"})
        task = asyncio.create_task(first)
        await until(lambda: served.app.waiting == 1, "the first :wait never arrived")
        response = await served.http.post(f"/v1/{proto.name}:wait", json={"timeout": "0s"})
        error = error_of(response, 429, "RESOURCE_EXHAUSTED")
        assert error["details"][1]["@type"] == "type.googleapis.com/google.rpc.RetryInfo"
        await served.manager.complete(proto.name)
        assert (await task).json()["done"] is True


SEGMENTS = st.text(
    alphabet=st.sampled_from("abc09._~:@+-%/ \x00é☃?#&=;,*"), min_size=0, max_size=30
)
QUERY_KEYS = st.sampled_from(
    ["filter", "pageSize", "page_size", "pageToken", "returnPartialSuccess", "name", "x", "$alt"]
)
QUERY_VALUES = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(2**40), max_value=2**40).map(str),
    st.sampled_from(["true", "false", "", "0", "1e3", "NaN"]),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["GET", "POST", "DELETE", "PUT"]),
    path=st.lists(SEGMENTS, max_size=6).map("/".join),
    verb=st.sampled_from(["", ":cancel", ":wait", ":", ":x"]),
    query=st.lists(st.tuples(QUERY_KEYS, QUERY_VALUES), max_size=4),
    body=st.one_of(st.none(), st.binary(max_size=64), st.just(b'{"timeout": "0s"}')),
)
async def test_no_input_makes_a_500(
    served: Served,
    method: str,
    path: str,
    verb: str,
    query: list[tuple[str, str]],
    body: bytes | None,
) -> None:
    wire_path = "/v1/" + urllib.parse.quote(path + verb, safe="/:@+~")
    url = raw(served, wire_path, urllib.parse.urlencode(query))
    response = await served.http.request(method, url, content=body)
    assert response.status_code < 500 or response.status_code == 501, response.text
    if response.status_code >= 400:
        assert response.json()["error"]["status"]
