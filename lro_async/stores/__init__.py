"""Where operations live: the OperationStore extension point and the stores lro_async ships.

``SQLiteStore`` uses the standard library's sqlite3; ``PostgresStore`` needs the ``postgres``
extra (asyncpg). Both are imported on first use.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

from ..filtering import Filter as Filter
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
    """Return the store a URL or a file path names.

    - ``memory``: a :class:`MemoryStore` (its operations end with the process);
    - a file path: a ``SQLiteStore`` on that file, e.g. ``ops.db``, ``./data/ops.db``,
      ``/var/lib/lro/ops.db`` or ``~/ops.db``; relative paths start in the current
      folder. The form no one misreads. A bare word with neither a dot nor a slash
      (``memroy``) is refused rather than taken for a file name (``./memroy`` is one);
    - ``sqlite:`` URLs read as ``file:`` URLs do (RFC 8089), the path being what follows
      ``sqlite://`` (taken literally: no %-decoding):

      - ``sqlite:///var/lib/lro/ops.db``: the absolute path ``/var/lib/lro/ops.db``;
      - ``sqlite:////var/lib/lro/ops.db``: the same file (SQLAlchemy's absolute form);
      - ``sqlite:data/ops.db`` or ``sqlite:./data/ops.db``: ``data/ops.db``, relative;
      - ``sqlite:///ops.db``, a file name without a folder: ``ops.db`` in the current
        folder, as in earlier versions (no one keeps a database in ``/``);
      - ``?mode=ro`` at the end opens the file read-only, to inspect it while its owner
        serves from it (``SQLiteStore(path, read_only=True)``).

      Earlier versions (and SQLAlchemy) read ``sqlite:///data/ops.db`` as the relative
      ``data/ops.db``. So that an old URL never opens a new, empty database instead of
      an existing one, such a URL is refused (ValueError, saying both readings) when
      ``/data/ops.db`` does not exist but ``data/ops.db`` (or its folder ``data``, while
      ``/data`` is missing) does;
    - ``postgresql://user@host:5432/db`` (or ``postgres://``): a ``PostgresStore``; a
      ``schema=NAME`` query parameter picks the schema (default ``lro_async``), the
      other parameters go to asyncpg.

    Nothing is opened here: a path that cannot hold a database (a missing folder, a
    read-only file) fails when the store opens, with a StoreError naming it and why.

    :raises ValueError: for anything else, in one line that says what is accepted.
    """
    if url == "memory":
        return MemoryStore()
    if url.startswith("sqlite:"):
        path, read_only = _sqlite_path(url)
        from .sqlite import SQLiteStore

        return SQLiteStore(path, read_only=read_only)
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        schema = [value for key, value in query if key == "schema"]
        rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "schema"])
        dsn = urllib.parse.urlunsplit(parts._replace(query=rest))
        return PostgresStore(dsn, schema=schema[-1]) if schema else PostgresStore(dsn)
    if not _URL.match(url) and _looks_like_a_path(url):
        from .sqlite import SQLiteStore

        return SQLiteStore(os.path.expanduser(url))
    raise ValueError(
        f"unknown store {url!r}: use memory, a file path such as ./ops.db or "
        "/var/lib/lro/ops.db, sqlite:///ABSOLUTE/PATH, or postgresql://USER@HOST/DB"
    )


_URL: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
"""A URL scheme (``postgresql:``), which a plain path never starts with here."""


def _looks_like_a_path(text: str) -> bool:
    name = os.path.basename(text)
    return bool(name) and (os.sep in text or "/" in text or text.startswith("~") or "." in name)


def _sqlite_path(url: str) -> tuple[str, bool]:
    """The file a ``sqlite:`` URL names, and whether it asks for read-only."""
    rest, _, query = url.removeprefix("sqlite:").partition("?")
    if query not in ("", "mode=ro"):
        raise ValueError(f"{url!r}: a sqlite URL takes no query but ?mode=ro (read-only)")
    read_only = query == "mode=ro"
    if not rest.strip("/"):
        raise ValueError(f"{url!r} names no file: write e.g. sqlite:///var/lib/lro/ops.db")
    if rest.startswith("//"):
        rest = rest.removeprefix("//")
        if not rest.startswith("/"):
            raise ValueError(
                f"{url!r}: a sqlite URL names no host; write sqlite:///ABSOLUTE/PATH, "
                "sqlite:RELATIVE/PATH or just the path"
            )
        absolute = "/" + rest.lstrip("/")
        if rest.startswith("//") or "/" not in absolute[1:]:
            # sqlite:////abs (SQLAlchemy's absolute form), or sqlite:///ops.db: no doubt.
            return (absolute if rest.startswith("//") else absolute[1:]), read_only
        _refuse_if_meant_relative(url, absolute, absolute[1:])
        return absolute, read_only
    return rest, read_only


def _refuse_if_meant_relative(url: str, absolute: str, relative: str) -> None:
    """Refuse ``sqlite:///a/b.db`` when only the old, relative reading names something."""
    if os.path.exists(absolute):
        return
    folder = os.path.dirname(relative)
    if os.path.exists(relative):
        why = f"while {relative} exists in the current folder"
    elif os.path.isdir(folder) and not os.path.isdir(os.path.dirname(absolute)):
        why = f"nor does its folder, while {folder}/ exists in the current folder"
    else:
        return
    raise ValueError(
        f"{url!r} names the absolute path {absolute} (sqlite:/// URLs are absolute, as "
        f"file: URLs are), which does not exist, {why}: write {relative} or "
        f"sqlite:{relative} for that one, or {absolute} for the absolute one"
    )
