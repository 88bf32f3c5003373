"""What the SQL stores share: the derived columns, and ListOperations filters as SQL.

Both :class:`~lro_async.stores.sqlite.SQLiteStore` and
:class:`~lro_async.stores.postgres.PostgresStore` keep the serialized ``Operation`` in one
column plus the columns a listing filters and orders by, derived here from the operation
itself so that they always agree with what ``Filter.matches`` would read from it.

A filter becomes a WHERE clause with bound parameters (never interpolated values). A
node the translation does not know (a field, operator or value type added to the filter
language later) is not guessed at: the enclosing AND keeps the parts it can express (a
looser clause that every match satisfies) and the store checks ``filter.matches`` on each
row it reads, reading on until the page is full.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, Final

from google.longrunning import operations_pb2

from ..filtering import And, Compare, Not, Or
from .base import OperationRecord

if TYPE_CHECKING:
    from ..filtering import Filter, Node
    from .base import PageKey

__all__ = [
    "LIST_BATCH",
    "Dialect",
    "PostgresDialect",
    "Query",
    "SQLiteDialect",
    "derived_columns",
    "list_query",
    "record_from_row",
]

LIST_BATCH: Final = 200
"""Rows read per query while a filter is checked in Python (the page may need more)."""

_COLUMNS: Final[dict[str, str]] = {
    "name": "name",
    "done": "done",
    "error.code": "error_code",
    "metadata.@type": "metadata_type",
    "response.@type": "response_type",
    "create_time": "create_time",
}
_TYPE_FIELDS: Final = frozenset({"metadata.@type", "response.@type"})
_STRING_FIELDS: Final = frozenset({"name", "metadata.@type", "response.@type"})
_INT_RANGES: Final = {"error.code": range(-(2**31), 2**31), "create_time": range(-(2**63), 2**63)}
# Operators each field supports (as in listing.py); anything else is left to Python.
_OPERATORS: Final[dict[str, frozenset[str]]] = {
    "name": frozenset({"=", "!=", "<", ">", "<=", ">=", ":"}),
    "done": frozenset({"=", "!="}),
    "error.code": frozenset({"=", "!=", "<", ">", "<=", ">="}),
    "metadata.@type": frozenset({"=", "!=", ":"}),
    "response.@type": frozenset({"=", "!=", ":"}),
    "create_time": frozenset({"=", "!=", "<", ">", "<=", ">="}),
}
_SQL_OPERATORS: Final = {"=": "=", "!=": "<>", "<": "<", ">": ">", "<=": "<=", ">=": ">="}


def derived_columns(operation: operations_pb2.Operation) -> tuple[int, str, str]:
    """Return ``(error_code, metadata_type, response_type)`` exactly as a filter sees them."""
    result = operation.WhichOneof("result")
    error_code = operation.error.code if result == "error" else 0
    metadata_type = operation.metadata.type_url if operation.HasField("metadata") else ""
    response_type = operation.response.type_url if result == "response" else ""
    return error_code, metadata_type, response_type


def record_from_row(blob: bytes, create_time: int, update_time: int) -> OperationRecord:
    """Rebuild a record from its ``operation``, ``create_time`` and ``update_time`` columns."""
    return OperationRecord(operations_pb2.Operation.FromString(blob), create_time, update_time)


class Dialect(abc.ABC):
    """How one database spells what a filter needs."""

    @abc.abstractmethod
    def placeholder(self, index: int) -> str:
        """The placeholder of the *index*-th (from 1) bound parameter."""

    @abc.abstractmethod
    def boolean(self, value: bool) -> object:
        """The parameter value of a boolean column."""

    @abc.abstractmethod
    def wildcard(self, expr: str, pattern: str) -> str:
        """SQL testing that *expr* matches the bound *pattern* (from :meth:`pattern`) whole."""

    @abc.abstractmethod
    def pattern(self, value: str) -> str:
        """The pattern parameter for a filter value in which ``*`` matches any text."""

    @abc.abstractmethod
    def contains(self, expr: str, needle: str) -> str:
        """SQL testing that the bound *needle* occurs in *expr* (case-sensitive)."""

    @abc.abstractmethod
    def message_name(self, expr: str) -> str:
        """SQL for the part of the type URL *expr* after its last ``/`` (all of it if none)."""


class SQLiteDialect(Dialect):
    """SQLite: ``?`` parameters, case-sensitive GLOB, 0/1 booleans."""

    def placeholder(self, index: int) -> str:
        return "?"

    def boolean(self, value: bool) -> object:
        return int(value)

    def wildcard(self, expr: str, pattern: str) -> str:
        return f"{expr} GLOB {pattern}"  # LIKE ignores ASCII case in SQLite; GLOB does not

    def pattern(self, value: str) -> str:
        # In GLOB a bracket expression is the only escape: [[] is "[", [?] is "?".
        escape = str.maketrans({"[": "[[]", "?": "[?]"})
        return "*".join(piece.translate(escape) for piece in value.split("*"))

    def contains(self, expr: str, needle: str) -> str:
        return f"instr({expr}, {needle}) > 0"

    def message_name(self, expr: str) -> str:
        # rtrim() strips the trailing run of characters other than "/", leaving the prefix
        # up to the last "/"; what follows it is the message name.
        return f"substr({expr}, length(rtrim({expr}, replace({expr}, '/', ''))) + 1)"


class PostgresDialect(Dialect):
    """PostgreSQL: ``$n`` parameters, LIKE with ``\\`` escapes over ``COLLATE "C"`` text."""

    def placeholder(self, index: int) -> str:
        return f"${index}"

    def boolean(self, value: bool) -> object:
        return value

    def wildcard(self, expr: str, pattern: str) -> str:
        return f"{expr} LIKE {pattern} ESCAPE '\\'"

    def pattern(self, value: str) -> str:
        escape = str.maketrans({"\\": "\\\\", "%": "\\%", "_": "\\_"})
        return "%".join(piece.translate(escape) for piece in value.split("*"))

    def contains(self, expr: str, needle: str) -> str:
        return f"strpos({expr}, {needle}) > 0"

    def message_name(self, expr: str) -> str:
        return f"substring({expr} from '[^/]*$')"


class Query:
    """Bound parameters of a statement being built, in placeholder order."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.params: list[object] = []

    def bind(self, value: object) -> str:
        """Add a parameter; return its placeholder."""
        self.params.append(value)
        return self.dialect.placeholder(len(self.params))


@dataclasses.dataclass(frozen=True, slots=True)
class _Clause:
    sql: str | None  # None: no constraint expressible
    exact: bool  # True: sql matches exactly what the node matches


_ANYTHING: Final = _Clause(None, False)


def _compare(node: Compare, query: Query) -> _Clause:
    column = _COLUMNS.get(node.field)
    value = node.value
    if column is None or node.op not in _OPERATORS[node.field]:
        return _ANYTHING
    dialect = query.dialect
    if node.field == "done":
        if not isinstance(value, bool):
            return _ANYTHING
        return _Clause(f"done {_SQL_OPERATORS[node.op]} {query.bind(dialect.boolean(value))}", True)
    if node.field in _INT_RANGES:
        if isinstance(value, bool) or not isinstance(value, int):
            return _ANYTHING
        if value not in _INT_RANGES[node.field]:
            return _ANYTHING
        return _Clause(f"{column} {_SQL_OPERATORS[node.op]} {query.bind(value)}", True)
    if node.field not in _STRING_FIELDS or not isinstance(value, str) or "\x00" in value:
        return _ANYTHING  # PostgreSQL text cannot hold NUL: let Python compare it
    if node.op == ":":
        if value == "*":
            return _Clause(f"{column} <> ''", True)
        if not value:
            return _Clause("1 = 1", True)
        return _Clause(dialect.contains(column, query.bind(value)), True)
    expr = column
    if node.field in _TYPE_FIELDS and "/" not in value:
        expr = dialect.message_name(column)  # "pkg.Msg" matches ".../pkg.Msg"
    if node.op in ("=", "!=") and "*" in value:
        sql = dialect.wildcard(expr, query.bind(dialect.pattern(value)))
        return _Clause(sql if node.op == "=" else f"NOT ({sql})", True)
    return _Clause(f"{expr} {_SQL_OPERATORS[node.op]} {query.bind(value)}", True)


def _translate(node: Node | object, query: Query) -> _Clause:
    mark = len(query.params)
    if isinstance(node, Compare):
        return _compare(node, query)
    if isinstance(node, And):
        parts = [_translate(child, query) for child in node.children]
        sqls = [f"({part.sql})" for part in parts if part.sql is not None]
        exact = all(part.exact for part in parts)
        return _Clause(" AND ".join(sqls) if sqls else None, exact)
    if isinstance(node, Or):
        parts = [_translate(child, query) for child in node.children]
        if all(part.sql is not None for part in parts):
            return _Clause(
                " OR ".join(f"({part.sql})" for part in parts), all(p.exact for p in parts)
            )
    elif isinstance(node, Not):
        part = _translate(node.child, query)
        if part.exact:
            return _Clause(f"NOT ({part.sql})", True)
    # Nothing expressible: drop what the children bound (placeholders are positional).
    del query.params[mark:]
    return _ANYTHING


def list_query(
    query: Query,
    table: str,
    parent: str | None,
    filter: Filter | None,
    after: PageKey | None,
    limit: int,
) -> tuple[str, bool]:
    """Build a listing's SELECT of ``operation, create_time, update_time``.

    :return: the statement (parameters in *query*) and whether it applies *filter*
        exactly; if not, the caller must check ``filter.matches`` on every row.
    """
    where: list[str] = []
    if parent is not None:
        where.append(f"parent = {query.bind(parent)}")
    if after is not None:
        where.append(f"(create_time, name) > ({query.bind(after[0])}, {query.bind(after[1])})")
    exact = True
    if filter is not None:
        clause = _translate(getattr(filter, "root", None), query)
        exact = clause.exact
        if clause.sql is not None:
            where.append(f"({clause.sql})")
    sql = f"SELECT operation, create_time, update_time FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY create_time, name LIMIT {query.bind(limit)}"
    return sql, exact
