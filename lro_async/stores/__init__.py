"""Where operations live: the OperationStore extension point and the stores lro_async ships.

``SQLiteStore`` uses the standard library's sqlite3; ``PostgresStore`` needs the ``postgres``
extra (asyncpg). Both are imported on first use.
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Any

from ..server.listing import Filter as Filter
from .base import Lease as Lease
from .base import OperationRecord as OperationRecord
from .base import OperationStore as OperationStore
from .base import PageKey as PageKey
from .base import Records as Records
from .base import Written as Written
from .memory import MemoryStore as MemoryStore

if TYPE_CHECKING:
    from .postgres import PostgresStore as PostgresStore
    from .sqlite import SQLiteStore as SQLiteStore

__all__ = [
    "Filter",
    "Lease",
    "MemoryStore",
    "OperationRecord",
    "OperationStore",
    "PageKey",
    "PostgresStore",
    "Records",
    "SQLiteStore",
    "Written",
    "from_url",
]


def __getattr__(name: str) -> Any:
    if name == "SQLiteStore":
        from .sqlite import SQLiteStore

        return SQLiteStore
    if name == "PostgresStore":
        from .postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def from_url(url: str) -> OperationStore:
    """Return the store a URL names.

    - ``memory``: a :class:`MemoryStore`;
    - ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``: a ``SQLiteStore``;
    - ``postgresql://user@host:5432/db`` (or ``postgres://``): a ``PostgresStore``; a
      ``schema=NAME`` query parameter picks the schema (default ``lro_async``), the
      other parameters go to asyncpg.

    :raises ValueError: for anything else.
    """
    if url == "memory":
        return MemoryStore()
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if not path:
            raise ValueError("sqlite:/// needs a path, e.g. sqlite:///lro_async.db")
        from .sqlite import SQLiteStore

        return SQLiteStore(path)
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        schema = [value for key, value in query if key == "schema"]
        rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "schema"])
        dsn = urllib.parse.urlunsplit(parts._replace(query=rest))
        return PostgresStore(dsn, schema=schema[-1]) if schema else PostgresStore(dsn)
    raise ValueError(
        f"unknown store {url!r}: use memory, sqlite:///PATH or postgresql://USER@HOST/DB"
    )
