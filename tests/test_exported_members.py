"""The public API is what lro_async.__all__ says, and every name in it exists."""

from __future__ import annotations

import lro_async
import lro_async.stores


def test_all_is_complete_and_every_name_exists() -> None:
    public = {
        name
        for name, value in vars(lro_async).items()
        if not name.startswith("_")
        and getattr(value, "__module__", "lro_async").startswith("lro_async")
        and not isinstance(value, type(lro_async))
    }
    assert public <= set(lro_async.__all__) | {"annotations"}
    for name in lro_async.__all__:
        assert hasattr(lro_async, name), name


def test_the_documented_api_is_exported() -> None:
    documented = {
        "AsyncOperation",
        "AsyncOperationsClient",
        "AsyncOperationsServicer",
        "Backoff",
        "InvalidArgument",
        "LroError",
        "OperationCancelled",
        "OperationContext",
        "OperationFailed",
        "OperationManager",
        "OperationNotFound",
        "OperationTimeout",
        "RpcError",
        "StoreError",
        "UnexpectedOperationState",
        "as_completed",
        "gather",
        "server_options",
        "stores",
    }
    assert documented <= set(lro_async.__all__)


def test_stores_exports_every_store_lazily() -> None:
    for name in lro_async.stores.__all__:
        assert getattr(lro_async.stores, name) is not None, name
    assert lro_async.stores.SQLiteStore.__name__ == "SQLiteStore"
    assert lro_async.stores.PostgresStore.__name__ == "PostgresStore"


def test_errors_form_one_tree() -> None:
    assert issubclass(lro_async.OperationCancelled, lro_async.OperationFailed)
    assert issubclass(lro_async.OperationTimeout, TimeoutError)
    assert issubclass(lro_async.OperationNotFound, lro_async.RpcError)
    for name in lro_async.__all__:
        value = getattr(lro_async, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, lro_async.LroError), name
