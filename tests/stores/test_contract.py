"""The OperationStore contract, run against every store lro_async ships.

MemoryStore is the reference: whatever the other stores return must equal what it does.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import pytest
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, duration_pb2, empty_pb2, message
from google.rpc import status_pb2

from lro_async import StoreError
from lro_async.filtering import And, Compare, Not, Or, parse_filter
from lro_async.stores import MemoryStore, OperationRecord, OperationStore, PageKey, _sql

if TYPE_CHECKING:
    from lro_async.stores import Filter


def pack(msg: message.Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


def record(
    name: str,
    create_time: int = 1,
    *,
    update_time: int | None = None,
    metadata: any_pb2.Any | None = None,
    response: any_pb2.Any | None = None,
    error: status_pb2.Status | None = None,
) -> OperationRecord:
    operation = operations_pb2.Operation(name=name)
    if metadata is not None:
        operation.metadata.CopyFrom(metadata)
    if response is not None:
        operation.done = True
        operation.response.CopyFrom(response)
    if error is not None:
        operation.done = True
        operation.error.CopyFrom(error)
    return OperationRecord(
        operation, create_time, create_time if update_time is None else update_time
    )


def names(records: list[OperationRecord]) -> list[str]:
    return [r.name for r in records]


async def list_all(
    store: OperationStore, parent: str | None, filter: Filter | None = None, page: int = 1000
) -> list[OperationRecord]:
    """Every page of a listing, following keyset pagination."""
    result: list[OperationRecord] = []
    after: PageKey | None = None
    while True:
        chunk = await store.list(parent, filter=filter, after=after, limit=page)
        result.extend(chunk)
        if len(chunk) < page:
            return result
        after = chunk[-1].page_key


# -- create / get -----------------------------------------------------------------------


async def test_create_then_get_returns_an_equal_record(store: OperationStore) -> None:
    created = record("projects/p/operations/a", 5, metadata=pack(duration_pb2.Duration(seconds=3)))
    await store.create(created)
    got = await store.get("projects/p/operations/a")
    assert got == created
    assert got is not None
    assert (got.parent, got.done, got.page_key) == ("projects/p", False, (5, got.name))


async def test_get_of_an_unknown_name_is_none(store: OperationStore) -> None:
    assert await store.get("operations/nope") is None


async def test_creating_a_name_twice_raises_store_error_and_keeps_the_first(
    store: OperationStore,
) -> None:
    await store.create(record("operations/a", 1))
    with pytest.raises(StoreError, match="exists"):
        await store.create(record("operations/a", 2, error=status_pb2.Status(code=2)))
    got = await store.get("operations/a")
    assert got == record("operations/a", 1)


async def test_a_done_operation_can_be_created(store: OperationStore) -> None:
    created = record("operations/d", 1, response=pack(empty_pb2.Empty()))
    await store.create(created)
    assert await store.get("operations/d") == created


async def test_records_handed_in_or_out_are_never_aliased(store: OperationStore) -> None:
    original = record("operations/a", 1)
    mine = record("operations/a", 1)
    await store.create(mine)
    mine.operation.done = True  # the caller's copy, changed after the create
    got = await store.get("operations/a")
    assert got == original
    assert got is not None
    got.operation.metadata.type_url = "changed"
    written = await store.set_metadata("operations/a", pack(empty_pb2.Empty()), 2)
    assert written is not None
    written.record.operation.metadata.type_url = "changed again"
    [listed] = await store.list(None, limit=10)
    listed.operation.name = "renamed"
    [running] = await store.running(10)
    running.operation.done = True
    again = await store.get("operations/a")
    assert again is not None
    assert again.operation.name == "operations/a"
    assert not again.done
    assert again.operation.metadata == pack(empty_pb2.Empty())


# -- create_once (AIP-155 request ids) ----------------------------------------------------


async def test_a_repeated_request_id_returns_the_first_operation_and_inserts_nothing(
    store: OperationStore,
) -> None:
    first = record("projects/p/operations/a", 1, metadata=pack(duration_pb2.Duration(seconds=1)))
    created = await store.create_once(first, "req-1")
    assert created.applied and created.record == first
    await store.set_metadata(first.name, pack(duration_pb2.Duration(seconds=2)), 5)
    again = await store.create_once(record("projects/p/operations/b", 2), "req-1")
    assert not again.applied
    assert again.record == await store.get(first.name)  # its current state
    assert again.record.operation.metadata == pack(duration_pb2.Duration(seconds=2))
    assert await store.get("projects/p/operations/b") is None
    assert names(await store.list(None, limit=10)) == [first.name]


async def test_request_ids_are_scoped_to_their_parent_and_compared_exactly(
    store: OperationStore,
) -> None:
    created = [
        await store.create_once(record(name, i), request_id)
        for i, (name, request_id) in enumerate(
            [
                ("projects/p/operations/a", "req"),
                ("projects/q/operations/b", "req"),  # another parent
                ("operations/c", "req"),  # top level
                ("projects/p/operations/d", "REQ"),  # another id: case counts
                ("projects/p/operations/e", "req2"),
            ]
        )
    ]
    assert all(written.applied for written in created)
    assert len(await store.list(None, limit=10)) == 5
    again = await store.create_once(record("projects/q/operations/f", 9), "req")
    assert (again.applied, again.record.name) == (False, "projects/q/operations/b")


async def test_operations_without_a_request_id_never_collide_with_one(
    store: OperationStore,
) -> None:
    await store.create(record("projects/p/operations/a", 1))
    await store.create(record("projects/p/operations/b", 2))
    assert (await store.create_once(record("projects/p/operations/c", 3), "r")).applied
    await store.create(record("projects/p/operations/d", 4))
    assert len(await store.list("projects/p", limit=10)) == 4


async def test_create_once_of_a_taken_name_raises_store_error_and_keeps_the_first(
    store: OperationStore,
) -> None:
    await store.create(record("operations/a", 1))
    with pytest.raises(StoreError, match="exists"):
        await store.create_once(record("operations/a", 2, error=status_pb2.Status(code=2)), "r")
    assert await store.get("operations/a") == record("operations/a", 1)
    assert (await store.create_once(record("operations/b", 3), "r")).applied  # r is free


async def test_deleting_or_expiring_an_operation_frees_its_request_id(
    store: OperationStore,
) -> None:
    await store.create_once(record("operations/a", 1), "deleted")
    assert await store.delete("operations/a")
    written = await store.create_once(record("operations/b", 2), "deleted")
    assert written.applied and written.record.name == "operations/b"
    done = record("operations/c", 1, update_time=10, response=pack(empty_pb2.Empty()))
    await store.create_once(done, "expired")
    assert await store.expire(100, 10) == 1
    written = await store.create_once(record("operations/d", 200), "expired")
    assert written.applied and written.record.name == "operations/d"


async def test_of_fifty_concurrent_creates_with_one_request_id_exactly_one_inserts(
    store: OperationStore,
) -> None:
    results = await asyncio.gather(
        *(store.create_once(record(f"projects/p/operations/{i:02d}", i), "race") for i in range(50))
    )
    winners = [written.record for written in results if written.applied]
    assert len(winners) == 1
    assert all(written.record == winners[0] for written in results)
    assert names(await store.list(None, limit=100)) == [winners[0].name]


# -- set_metadata / finish ----------------------------------------------------------------


async def test_set_metadata_replaces_the_metadata_of_a_running_operation(
    store: OperationStore,
) -> None:
    await store.create(record("operations/a", 10, metadata=pack(duration_pb2.Duration(seconds=1))))
    written = await store.set_metadata("operations/a", pack(duration_pb2.Duration(seconds=2)), 20)
    assert written is not None
    assert written.applied
    assert written.record.operation.metadata == pack(duration_pb2.Duration(seconds=2))
    assert (written.record.create_time, written.record.update_time) == (10, 20)
    assert await store.get("operations/a") == written.record


async def test_update_time_never_goes_backwards(store: OperationStore) -> None:
    await store.create(record("operations/a", 10, update_time=50))
    written = await store.set_metadata("operations/a", pack(empty_pb2.Empty()), 20)
    assert written is not None
    assert written.record.update_time == 50
    finished = await store.finish("operations/a", 30, response=pack(empty_pb2.Empty()))
    assert finished is not None
    assert finished.record.update_time == 50
    assert await store.get("operations/a") == finished.record


async def test_writes_to_an_unknown_operation_return_none(store: OperationStore) -> None:
    assert await store.set_metadata("operations/x", pack(empty_pb2.Empty()), 1) is None
    assert await store.finish("operations/x", 1, response=pack(empty_pb2.Empty())) is None
    assert await store.finish("operations/x", 1, error=status_pb2.Status(code=1)) is None


async def test_finish_with_a_response(store: OperationStore) -> None:
    metadata = pack(duration_pb2.Duration(seconds=1))
    await store.create(record("operations/a", 1, metadata=metadata))
    written = await store.finish("operations/a", 7, response=pack(duration_pb2.Duration(nanos=5)))
    assert written is not None
    assert written.applied
    operation = written.record.operation
    assert operation.done
    assert operation.WhichOneof("result") == "response"
    assert operation.response == pack(duration_pb2.Duration(nanos=5))
    assert operation.metadata == metadata  # kept
    assert await store.get("operations/a") == written.record


async def test_finish_with_an_error(store: OperationStore) -> None:
    await store.create(record("operations/a", 1))
    error = status_pb2.Status(code=5, message="gone", details=[pack(empty_pb2.Empty())])
    written = await store.finish("operations/a", 2, error=error)
    assert written is not None
    assert written.applied
    assert written.record.operation.WhichOneof("result") == "error"
    assert written.record.operation.error == error
    assert await store.get("operations/a") == written.record


async def test_finish_takes_exactly_one_of_response_or_error(store: OperationStore) -> None:
    await store.create(record("operations/a", 1))
    with pytest.raises(ValueError, match="exactly one"):
        await store.finish("operations/a", 2)
    with pytest.raises(ValueError, match="exactly one"):
        await store.finish(
            "operations/a", 2, response=pack(empty_pb2.Empty()), error=status_pb2.Status(code=1)
        )
    assert await store.get("operations/a") == record("operations/a", 1)


async def test_a_done_operation_never_changes(store: OperationStore) -> None:
    await store.create(record("operations/a", 1))
    first = await store.finish("operations/a", 2, error=status_pb2.Status(code=1, message="x"))
    assert first is not None
    assert first.applied
    again = await store.finish("operations/a", 3, response=pack(empty_pb2.Empty()))
    metadata = await store.set_metadata("operations/a", pack(empty_pb2.Empty()), 4)
    assert again is not None
    assert metadata is not None
    assert (again.applied, metadata.applied) == (False, False)
    assert again.record == metadata.record == first.record
    assert await store.get("operations/a") == first.record


async def test_of_fifty_concurrent_finishes_exactly_one_applies(store: OperationStore) -> None:
    await store.create(record("operations/race", 1))

    async def finish(i: int) -> tuple[bool, OperationRecord]:
        if i % 2:
            written = await store.finish("operations/race", 10 + i, error=status_pb2.Status(code=i))
        else:
            written = await store.finish(
                "operations/race", 10 + i, response=pack(duration_pb2.Duration(seconds=i))
            )
        assert written is not None
        return written.applied, written.record

    results = await asyncio.gather(*(finish(i) for i in range(1, 51)))
    winners = [rec for applied, rec in results if applied]
    assert len(winners) == 1
    final = await store.get("operations/race")
    assert final == winners[0]
    assert all(rec == final for _, rec in results)


# -- delete -------------------------------------------------------------------------------


async def test_delete_removes_the_operation_everywhere(store: OperationStore) -> None:
    await store.create(record("operations/a", 1))
    await store.create(record("operations/b", 2))
    assert await store.delete("operations/a")
    assert not await store.delete("operations/a")
    assert await store.get("operations/a") is None
    assert names(await store.list(None, limit=10)) == ["operations/b"]
    assert names(await store.running(10)) == ["operations/b"]
    await store.create(record("operations/a", 3))  # the name is free again
    assert names(await store.list(None, limit=10)) == ["operations/b", "operations/a"]


# -- list ---------------------------------------------------------------------------------

_PARENTS = ["", "projects/p", "projects/q", "projects/p/operations/x", "projects/p/locations/l"]


async def test_list_orders_by_create_time_then_name_and_pages_by_key(
    store: OperationStore,
) -> None:
    created = []
    for i in range(23):
        parent = _PARENTS[i % len(_PARENTS)]
        name = f"{parent}/operations/{(i * 7) % 23:02d}".lstrip("/")
        created.append(record(name, create_time=(i * 5) % 6))  # many ties on create_time
    for rec in created:
        await store.create(rec)
    expected = sorted(created, key=lambda r: r.page_key)
    assert await store.list(None, limit=100) == expected
    for page in (1, 2, 5, 23):
        assert await list_all(store, None, page=page) == expected
    assert await store.list(None, limit=0) == []
    key = expected[10].page_key
    assert await store.list(None, after=key, limit=100) == expected[11:]
    between = (key[0], key[1] + "\x00")  # a key of no record
    assert await store.list(None, after=between, limit=100) == expected[11:]
    assert await store.list(None, after=(99, ""), limit=100) == []


@pytest.mark.parametrize("parent", [None, *_PARENTS, "projects", "projects/p/operations"])
async def test_list_is_scoped_to_exactly_its_parent(
    store: OperationStore, parent: str | None
) -> None:
    created = [
        record(f"{p}/operations/{i}".lstrip("/"), create_time=i) for i, p in enumerate(_PARENTS * 3)
    ]
    for rec in created:
        await store.create(rec)
    expected = [r for r in created if parent is None or r.parent == parent]
    assert await store.list(parent, limit=100) == expected
    assert await list_all(store, parent, page=2) == expected


def _dataset() -> list[OperationRecord]:
    def md(type_url: str) -> any_pb2.Any:
        return any_pb2.Any(type_url=type_url, value=b"\x08\x01")

    duration = "type.googleapis.com/google.protobuf.Duration"
    empty = "type.googleapis.com/google.protobuf.Empty"
    return [
        record("operations/a", 1),
        record("operations/b_1", 2, metadata=md(duration)),
        record("operations/b%1", 2, metadata=md(empty)),
        record("operations/bx1", 3, metadata=md("example.com/a/b/pkg.Msg")),
        record("operations/c[1]", 3, metadata=md("noslash.Msg")),
        record("operations/c1", 4, metadata=md("trailing/")),
        record("operations/d?", 4, metadata=md("x/pkg.M*g")),
        record("operations/dd", 5, metadata=any_pb2.Any()),
        record("operations/e*f", 5, response=pack(empty_pb2.Empty())),
        record("operations/eXf", 6, response=pack(duration_pb2.Duration())),
        record("operations/g\\h", 6, error=status_pb2.Status(code=1, message="cancelled")),
        record("operations/É", 7, error=status_pb2.Status(code=3)),
        record("operations/z", 8, error=status_pb2.Status(code=13), metadata=md(duration)),
        record("operations/zz", 8, error=status_pb2.Status(code=0)),  # odd, but storable
        record("OPERATIONS/upper", 9),
        record("projects/p/operations/1", 9, response=any_pb2.Any(type_url="Empty")),
        record("projects/p/operations/2", 10, response=any_pb2.Any(type_url="a/Empty")),
        record("projects/p/operations/3", 11, error=status_pb2.Status(code=5)),
        record("projects/p/operations/4", 12, metadata=md(empty)),
        record("projects/p/operations/5", 13, response=pack(empty_pb2.Empty()), metadata=md(empty)),
        record("projects/P/operations/1", 14),
        record("projects/p/locations/l/operations/x", 15, metadata=md(duration)),
        record("projects/p/operations/x/operations/y", 16, error=status_pb2.Status(code=9)),
        record("operations/new\nline", 20, metadata=md("a\nb/c")),
    ]


_FILTERS = [
    "done = true",
    "done = false",
    "done != true",
    "NOT done = true",
    "-done = false",
    "error.code = 0",
    "error.code != 0",
    "error.code > 3",
    "error.code <= 3",
    "error.code = CANCELLED",
    "error.code = 13 OR error.code = 5",
    'name = "operations/a"',
    'name = "projects/p/operations/*"',
    'name = "*1"',
    'name != "*operations*"',
    'name = "*_*"',
    'name = "*%*"',
    'name = "*[1]"',
    'name = "*?"',
    'name = "*\\\\*"',
    'name = "operations/e*f"',
    'name = "OPERATIONS/*"',
    'name = "*\nline"',
    'name = "operations/*line"',
    "name : b",
    'name : "_"',
    'name : "%"',
    'name : "*f"',
    "name:*",
    'name : ""',
    'name < "operations/c"',
    'name >= "projects/p/operations/3"',
    'name > "operations/z"',
    'name = "*É*"',
    'metadata.@type = "type.googleapis.com/google.protobuf.Duration"',
    'metadata.@type = "google.protobuf.Duration"',
    'metadata.@type = "google.protobuf.*"',
    'metadata.@type = "*Msg"',
    'metadata.@type = "pkg.M*g"',
    'metadata.@type = "*/pkg.Msg"',
    'metadata.@type = "x/pkg.M*g"',
    'metadata.@type = "c"',
    'metadata.@type : "protobuf"',
    "metadata.@type:*",
    "-metadata.@type:*",
    'metadata.@type = ""',
    'metadata.@type != "google.protobuf.Empty"',
    'metadata.@type = "noslash.Msg"',
    'metadata.@type = "trailing/"',
    'metadata.@type = "*"',
    'response.@type = "google.protobuf.Empty"',
    'response.@type != "google.protobuf.Empty"',
    'response.@type = "Empty"',
    'response.@type = "a/Empty"',
    "response.@type:*",
    'response.@type = "*"',
    'create_time > "1970-01-01T00:00:00.000010Z"',
    'create_time <= "1970-01-01T00:00:00.000005Z"',
    "create_time = 1970-01-01T00:00:00.000003Z",
    "createTime != 1970-01-01T00:00:00.000003Z",
    "done = true AND (error.code = 1 OR response.@type:*)",
    "done = true error.code != 0",
    '-(name : "projects")',
    "NOT (done = true OR metadata.@type:*)",
    'name : "p" OR NOT error.code = 0 AND create_time < "1970-01-01T00:00:00.000012Z"',
]


async def test_filters_select_what_memory_store_selects(store: OperationStore) -> None:
    reference = MemoryStore()
    for rec in _dataset():
        await store.create(rec)
        await reference.create(rec)
    mismatches = []
    for text in _FILTERS:
        parsed = parse_filter(text)
        for parent in (None, "", "projects/p"):
            expected = names(await reference.list(parent, filter=parsed, limit=1000))
            got = names(await store.list(parent, filter=parsed, limit=1000))
            paged = names(await list_all(store, parent, parsed, page=2))
            if not got == paged == expected:
                mismatches.append(
                    f"{text!r} parent={parent!r}: {got} / paged {paged} != {expected}"
                )
    assert not mismatches, "\n".join(mismatches)
    assert names(await store.list(None, filter=parse_filter("done = true"), limit=1000))  # sanity


@dataclasses.dataclass(frozen=True)
class _Opaque:
    """A filter node no store knows: it must be evaluated by ``matches``."""


class _PythonOnly:
    def __init__(self, root: object, predicate: Callable[[OperationRecord], bool]) -> None:
        self.text = "python only"
        self.root = root
        self.matches = predicate


@pytest.mark.parametrize(
    "root",
    [
        And((Compare("done", "=", True), _Opaque())),  # type: ignore[arg-type]
        Or((Compare("done", "=", True), _Opaque())),  # type: ignore[arg-type]
        Not(_Opaque()),  # type: ignore[arg-type]
        _Opaque(),
    ],
    ids=["and", "or", "not", "bare"],
)
async def test_a_filter_the_store_cannot_translate_still_fills_every_page(
    store: OperationStore, root: object
) -> None:
    for i in range(450):
        kind = {"error": status_pb2.Status(code=2)} if i % 3 else {}
        await store.create(record(f"operations/{i:04d}", create_time=i // 2, **kind))  # type: ignore[arg-type]

    def sparse(rec: OperationRecord) -> bool:
        return rec.done and int(rec.name[-4:]) % 40 == 1

    filter = cast("Filter", _PythonOnly(root, sparse))
    expected = [f"operations/{i:04d}" for i in range(450) if i % 3 and i % 40 == 1]
    assert names(await store.list(None, filter=filter, limit=3)) == expected[:3]
    assert names(await list_all(store, None, filter, page=3)) == expected
    assert names(await list_all(store, None, filter, page=1000)) == expected


# -- expire / running ---------------------------------------------------------------------


async def test_expire_deletes_old_done_operations_in_batches(store: OperationStore) -> None:
    for i in range(7):
        await store.create(
            record(f"operations/old{i}", 1, update_time=10 + i, error=status_pb2.Status(code=1))
        )
    await store.create(
        record("operations/new", 1, update_time=1000, response=pack(empty_pb2.Empty()))
    )
    await store.create(
        record("operations/edge", 1, update_time=500, response=pack(empty_pb2.Empty()))
    )
    await store.create(record("operations/running", 1, update_time=1))
    batches = [await store.expire(500, 3) for _ in range(4)]
    assert batches == [3, 3, 1, 0]
    assert await store.expire(10**12, 0) == 0
    left = names(await store.list(None, limit=100))
    assert sorted(left) == ["operations/edge", "operations/new", "operations/running"]


async def test_running_lists_unfinished_operations_by_name(store: OperationStore) -> None:
    for i, name in enumerate(
        ["operations/c", "operations/a", "projects/p/operations/b", "operations/b"]
    ):
        await store.create(record(name, 10 - i))
    await store.create(record("operations/done", 1, response=pack(empty_pb2.Empty())))
    await store.create(record("operations/aa", 1))
    await store.finish("operations/aa", 2, error=status_pb2.Status(code=1))
    expected = ["operations/a", "operations/b", "operations/c", "projects/p/operations/b"]
    assert names(await store.running(10)) == expected
    assert names(await store.running(2)) == expected[:2]
    assert names(await store.running(10, after="operations/b")) == expected[2:]
    assert names(await store.running(10, after="operations/bb")) == expected[2:]
    assert await store.running(0) == []
    assert all(not r.done for r in await store.running(10))


@pytest.mark.parametrize(
    "dialect", [_sql.SQLiteDialect(), _sql.PostgresDialect()], ids=["sqlite", "postgres"]
)
def test_every_filter_of_the_table_becomes_sql_entirely(dialect: _sql.Dialect) -> None:
    """So that the comparison above checks the SQL, not the Python fallback."""
    for text in _FILTERS:
        query = _sql.Query(dialect)
        sql, exact = _sql.list_query(query, "t", "p", parse_filter(text), (1, "n"), 10)
        assert exact, text
        assert sql.count(dialect.placeholder(1)[0]) >= len(query.params)
