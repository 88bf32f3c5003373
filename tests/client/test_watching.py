"""The Watch stream client's requests: merged, but never one too large for the server."""

from __future__ import annotations

from lro_async.client.watching import ADD_BYTES, WatchRequest, _merged


def _add(name: str, metadata: bool = False) -> WatchRequest:
    return WatchRequest(add=WatchRequest.Add(names=[name], metadata_changes=metadata))


def test_a_hundred_thousand_adds_become_requests_far_below_the_message_limit() -> None:
    names = [f"projects/bench/operations/{number:022d}" for number in range(100_000)]
    merged = _merged([_add(name) for name in names])
    # Before, one request of 4.7 MB: past gRPC's 4 MiB default, the call broke and every
    # waiter retried with all its names again, for ever.
    assert all(r.ByteSize() < 2 * ADD_BYTES for r in merged)
    assert len(merged) < 30
    assert [name for r in merged for name in r.add.names] == names


def test_adds_of_either_mode_and_removes_keep_their_order() -> None:
    remove = WatchRequest(remove=WatchRequest.Remove(names=["b"]))
    merged = _merged([_add("a"), _add("b"), _add("c", True), remove, _add("d"), _add("e")])
    shape = [
        ("add", list(r.add.names)) if r.HasField("add") else ("remove", list(r.remove.names))
        for r in merged
    ]
    assert shape == [("add", ["a", "b"]), ("add", ["c"]), ("remove", ["b"]), ("add", ["d", "e"])]
