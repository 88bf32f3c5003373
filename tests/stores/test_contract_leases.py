"""The lease part of the OperationStore contract, run against every store lro_async ships.

A lease says which replica runs an operation and until when; ``renew`` extends the
leases a replica holds on the operations it names (those it still runs), ``expired_leases``
finds those no one renewed. Only
operations that are not done hold a lease: a finish (or a delete) ends it for good.
MemoryStore is the reference. (That of racing finishes from two replicas exactly one
wins is in test_contract.py and, across two PostgresStores, in test_postgres.py.)
"""

from __future__ import annotations

from google.protobuf import duration_pb2, empty_pb2
from google.rpc import status_pb2

from lro_async.stores import Lease, OperationStore, PostgresStore

from .test_contract import names, pack, record

A, B = "host-a/1/aaaa", "host-b/2/bbbb"


ALL_OF_A = ["operations/a1", "operations/a2", "operations/a-created-done", "operations/a-finished"]


async def test_renew_extends_only_the_owners_leases_of_running_operations(
    store: OperationStore,
) -> None:
    await store.create(record("operations/a1", 1), lease=Lease(A, 100))
    await store.create(record("operations/a2", 2), lease=Lease(A, 100))
    await store.create(record("operations/b1", 3), lease=Lease(B, 100))
    await store.create(record("operations/free", 4))  # created by hand: no lease
    await store.create(
        record("operations/a-created-done", 5, response=pack(empty_pb2.Empty())),
        lease=Lease(A, 100),
    )
    await store.create(record("operations/a-finished", 6), lease=Lease(A, 100))
    await store.finish("operations/a-finished", 7, error=status_pb2.Status(code=10))

    everything = [*ALL_OF_A, "operations/b1", "operations/free", "operations/unknown"]
    assert await store.renew(A, 500, everything) == 2
    assert names(await store.expired_leases(300, 10)) == ["operations/b1"]
    assert names(await store.expired_leases(501, 10)) == [
        "operations/a1",
        "operations/a2",
        "operations/b1",
    ]
    assert await store.renew(B, 1000, everything) == 1
    assert await store.renew("host-c/3/cccc", 1000, everything) == 0
    assert names(await store.expired_leases(600, 10)) == ["operations/a1", "operations/a2"]


async def test_renew_extends_only_the_named_leases_and_lets_the_others_run_out(
    store: OperationStore,
) -> None:
    for index in range(3):
        await store.create(record(f"operations/a{index}", index), lease=Lease(A, 100))
    assert await store.renew(A, 500, []) == 0
    # The same name twice counts once; a1, not named, keeps its old lease.
    assert await store.renew(A, 500, ["operations/a0", "operations/a2", "operations/a0"]) == 2
    assert names(await store.expired_leases(101, 10)) == ["operations/a1"]
    assert names(await store.expired_leases(501, 10)) == [
        "operations/a0",
        "operations/a1",
        "operations/a2",
    ]
    # Many names at once (more than one SQL statement's worth of parameters).
    many = [f"operations/m{index:04}" for index in range(1200)]
    for index, name in enumerate(many):
        await store.create(record(name, 10 + index), lease=Lease(A, 100))
    assert await store.renew(A, 700, many[::2]) == 600
    assert len(await store.expired_leases(101, 2000)) == 1 + 600  # a1 and every other m


async def test_renewing_changes_neither_the_operation_nor_its_update_time(
    store: OperationStore,
) -> None:
    created = record("operations/a", 5, metadata=pack(duration_pb2.Duration(seconds=1)))
    await store.create(created, lease=Lease(A, 10))
    assert await store.renew(A, 20, ["operations/a"]) == 1
    assert await store.get("operations/a") == created
    # A lease does not get in the way of writes, nor writes in the way of a lease.
    written = await store.set_metadata("operations/a", pack(empty_pb2.Empty()), 6)
    assert written is not None
    assert written.applied
    assert names(await store.expired_leases(21, 10)) == ["operations/a"]


async def test_expired_leases_are_exactly_those_that_expired_before_now(
    store: OperationStore,
) -> None:
    # Created out of name order: expired_leases orders by name.
    for name, expires in (("c", 30), ("a", 10), ("d", 40), ("b", 20)):
        await store.create(record(f"operations/{name}", expires), lease=Lease(A, expires))
    assert await store.expired_leases(10, 10) == []  # expires == now: not yet
    assert names(await store.expired_leases(11, 10)) == ["operations/a"]
    assert names(await store.expired_leases(31, 10)) == [
        "operations/a",
        "operations/b",
        "operations/c",
    ]
    assert names(await store.expired_leases(10**18, 2)) == ["operations/a", "operations/b"]
    assert await store.expired_leases(10**18, 0) == []
    # Whole records, as get() returns them.
    [expired] = await store.expired_leases(11, 10)
    assert expired == await store.get("operations/a")


async def test_a_finished_operation_never_shows_up_as_expired_nor_is_renewed(
    store: OperationStore,
) -> None:
    for name in ("response", "error", "racing"):
        await store.create(record(f"operations/{name}", 1), lease=Lease(A, 10))
    await store.finish("operations/response", 2, response=pack(empty_pb2.Empty()))
    await store.finish("operations/error", 2, error=status_pb2.Status(code=1))
    assert names(await store.expired_leases(11, 10)) == ["operations/racing"]
    # A finish of an operation whose lease expired (what another replica's reaper does).
    reaped = await store.finish("operations/racing", 3, error=status_pb2.Status(code=10))
    assert reaped is not None
    assert reaped.applied
    assert await store.expired_leases(10**18, 10) == []
    assert await store.renew(A, 10**18, ["operations/response", "operations/racing"]) == 0
    # A refused second finish does not bring a lease back.
    again = await store.finish("operations/racing", 4, response=pack(empty_pb2.Empty()))
    assert again is not None
    assert not again.applied
    assert await store.expired_leases(10**18, 10) == []


async def test_a_deleted_operation_takes_its_lease_with_it(store: OperationStore) -> None:
    await store.create(record("operations/a", 1), lease=Lease(A, 10))
    assert await store.delete("operations/a")
    assert await store.renew(A, 20, ["operations/a"]) == 0
    assert await store.expired_leases(10**18, 10) == []
    # The name may be used again, without the old lease.
    await store.create(record("operations/a", 2))
    assert await store.expired_leases(10**18, 10) == []


async def test_only_a_store_shared_by_processes_has_a_shared_secret(
    store: OperationStore,
) -> None:
    secret = await store.shared_secret()
    if isinstance(store, PostgresStore):
        assert isinstance(secret, bytes)
        assert len(secret) == 32
        assert await store.shared_secret() == secret
    else:  # MemoryStore lives in one process; SQLiteStore is served by one process
        assert secret is None
