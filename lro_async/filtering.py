"""The AIP-160 filter subset of ``ListOperations`` and the Watch stream: parse and evaluate.

:func:`parse_filter` turns a filter into a :class:`Filter`: the original text, an AST of
frozen dataclasses (:class:`And`, :class:`Or`, :class:`Not`, :class:`Compare`) that a SQL
store may translate, and :meth:`Filter.matches`, the reference semantics::

    f = parse_filter('done = true AND error.code != 0 AND create_time > "2026-01-02T00:00:00Z"')
    failed = [record for record in records if f.matches(record)]

Grammar (AIP-160): ``field OP value`` with OP in ``= != < > <= >= :``; ``AND``; ``OR``,
which binds tighter than ``AND``; juxtaposition, an implicit ``AND``; ``NOT x`` or ``-x``;
parentheses. Keywords are uppercase. A value is a quoted string (``"..."`` or ``'...'``,
escapes ``\\\\ \\" \\' \\n \\r \\t``) or bare: after an operator a bare value runs to the
next whitespace or parenthesis, so ``create_time > 2026-01-02T03:04:05+01:00`` works.
Quoting never changes what a value means. The fields, and what ``Compare.value`` holds:

- ``name`` (all operators): ``str``. In ``=`` and ``!=``, ``*`` matches any run of characters.
- ``done`` (``= !=``): ``bool``, from ``true`` or ``false``.
- ``error.code`` (``= != < > <= >=``): ``int``; a ``google.rpc.Code`` name (any case) is
  accepted. Operations that are running or succeeded have code 0 (OK).
- ``metadata.@type``, ``response.@type`` (``= != :``): ``str``; an absent Any has type ``""``.
  A value without ``/`` (``pkg.Msg``) is compared with the part of the type URL after its
  last ``/``, so it matches ``type.googleapis.com/pkg.Msg``; ``*`` as for ``name``.
- ``create_time`` (``= != < > <= >=``, alias ``createTime``): ``int`` microseconds since the
  epoch, from an RFC 3339 timestamp; digits finer than a microsecond are dropped.

On strings ``:`` is a substring test, and ``field:*`` a presence test (non-empty).

Stores translate the syntax tree into their queries; page tokens live in
:mod:`lro_async.server.tokens`.
"""

from __future__ import annotations

import dataclasses
import operator
import re
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeAlias, cast, get_args

import grpc

from .errors import InvalidArgument

if TYPE_CHECKING:
    from google.longrunning import operations_pb2

__all__ = [
    "MAX_FILTER_DEPTH",
    "MAX_FILTER_LENGTH",
    "And",
    "Comparator",
    "Compare",
    "FieldName",
    "Filter",
    "Filterable",
    "Node",
    "Not",
    "Or",
    "Value",
    "parse_filter",
]

MAX_FILTER_LENGTH: Final = 4096
"""The longest filter accepted, in characters."""
MAX_FILTER_DEPTH: Final = 32
"""How deeply parentheses and negations may nest in a filter."""


class Filterable(Protocol):
    """What a filter reads of an operation (a store's ``OperationRecord`` is one)."""

    @property
    def operation(self) -> operations_pb2.Operation: ...

    @property
    def create_time(self) -> int:
        """Microseconds since the Unix epoch when the operation was created."""
        ...


FieldName: TypeAlias = Literal[
    "name", "done", "error.code", "metadata.@type", "response.@type", "create_time"
]
Comparator: TypeAlias = Literal["=", "!=", "<", ">", "<=", ">=", ":"]
Value: TypeAlias = str | int | bool


@dataclasses.dataclass(frozen=True, slots=True)
class Compare:
    """``field op value``; see the module docstring for what each field's value holds."""

    field: FieldName
    op: Comparator
    value: Value


@dataclasses.dataclass(frozen=True, slots=True)
class Not:
    """Matches what *child* does not match."""

    child: Node


@dataclasses.dataclass(frozen=True, slots=True)
class And:
    """Matches what all *children* (two or more) match."""

    children: tuple[Node, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Or:
    """Matches what any of the *children* (two or more) matches."""

    children: tuple[Node, ...]


Node: TypeAlias = And | Or | Not | Compare

_FIELDS: Final[dict[str, FieldName]] = {
    **{field: field for field in get_args(FieldName)},
    "createTime": "create_time",
}
_ORDERED: Final = ("=", "!=", "<", ">", "<=", ">=")
_OPS: Final[dict[FieldName, tuple[str, ...]]] = {
    "name": (*_ORDERED, ":"),
    "done": ("=", "!="),
    "error.code": _ORDERED,
    "metadata.@type": ("=", "!=", ":"),
    "response.@type": ("=", "!=", ":"),
    "create_time": _ORDERED,
}
_KEYWORDS: Final = frozenset({"AND", "OR", "NOT"})
# grpc.StatusCode names and numbers are google.rpc.Code's.
_CODES: Final[dict[str, int]] = {code.name: code.value[0] for code in grpc.StatusCode}
_INT32: Final = range(-(2**31), 2**31)
_EXPECTS: Final = {
    "done": "true or false",
    "error.code": "an integer or a google.rpc.Code name such as CANCELLED",
    "create_time": 'an RFC 3339 timestamp such as "2026-01-02T03:04:05Z"',
}

_CMP_RE: Final = re.compile(r"<=|>=|!=|[=<>:]")
_WORD_RE: Final = re.compile(r"[^\s()\"'=!<>:]+")
_VALUE_RE: Final = re.compile(r"[^\s()\"']+")
_INT_RE: Final = re.compile(r"[+-]?[0-9]+", re.ASCII)
_TIMESTAMP_RE: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))",
    re.ASCII,
)
_EPOCH: Final = datetime(1970, 1, 1)
_ESCAPES: Final = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "r": "\r", "t": "\t"}


def _error(message: str, pos: int) -> InvalidArgument:
    return InvalidArgument(f"invalid filter at position {pos + 1}: {message}")


@dataclasses.dataclass(frozen=True, slots=True)
class _Token:
    kind: Literal["word", "string", "cmp", "(", ")", "-", "end"]
    text: str
    pos: int

    def describe(self) -> str:
        return "the end of the filter" if self.kind == "end" else repr(self.text)

    def is_keyword(self, keyword: str | None = None) -> bool:
        return self.kind == "word" and (
            self.text in _KEYWORDS if keyword is None else self.text == keyword
        )


def _read_string(text: str, start: int) -> tuple[str, int]:
    quote, pos, chars = text[start], start + 1, list[str]()
    while pos < len(text):
        ch = text[pos]
        if ch == quote:
            return "".join(chars), pos + 1
        if ch == "\\" and pos + 1 < len(text):
            escaped = _ESCAPES.get(text[pos + 1])
            if escaped is None:
                raise _error(f"unknown escape {text[pos : pos + 2]!r} in a string", pos)
            chars.append(escaped)
            pos += 2
        else:
            chars.append(ch)
            pos += 1
    raise _error(f"unterminated string (no closing {quote})", start)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos, expect_value = 0, False
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            tokens.append(_Token("end", "", pos))
            return tokens
        ch = text[pos]
        start = pos
        if ch in "\"'":
            value, pos = _read_string(text, pos)
            tokens.append(_Token("string", value, start))
        elif ch in "()":
            tokens.append(_Token("(" if ch == "(" else ")", ch, start))
            pos += 1
        elif expect_value and (match := _VALUE_RE.match(text, pos)):
            # After an operator a bare value runs to whitespace: "2026-01-02T03:04:05+01:00".
            tokens.append(_Token("word", match.group(), start))
            pos = match.end()
        elif match := _CMP_RE.match(text, pos):
            tokens.append(_Token("cmp", match.group(), start))
            pos, expect_value = match.end(), True
            continue
        elif ch == "-":
            tokens.append(_Token("-", ch, start))
            pos += 1
        elif match := _WORD_RE.match(text, pos):
            tokens.append(_Token("word", match.group(), start))
            pos = match.end()
        else:
            raise _error(f"unexpected {ch!r}", pos)
        expect_value = False


class _Parser:
    """Recursive descent over AIP-160's expression / sequence / factor / term."""

    def __init__(self, text: str) -> None:
        self._tokens = _tokenize(text)
        self._index = 0
        self._depth = 0

    def parse(self) -> Node:
        node = self._expression()
        token = self._peek()
        if token.kind != "end":
            extra = " (no matching '(')" if token.kind == ")" else ""
            raise _error(f"unexpected {token.describe()}{extra}", token.pos)
        return node

    def _peek(self) -> _Token:
        return self._tokens[self._index]

    def _next(self) -> _Token:
        token = self._tokens[self._index]
        if token.kind != "end":
            self._index += 1
        return token

    def _expression(self) -> Node:
        # AIP-160's expression and sequence: AND and juxtaposition both mean AND.
        children = [self._factor()]
        while True:
            token = self._peek()
            if token.is_keyword("AND"):
                self._next()
            elif token.kind not in ("word", "string", "(", "-") or token.is_keyword("OR"):
                break
            children.append(self._factor())
        return children[0] if len(children) == 1 else And(tuple(children))

    def _factor(self) -> Node:
        children = [self._term()]
        while self._peek().is_keyword("OR"):
            self._next()
            children.append(self._term())
        return children[0] if len(children) == 1 else Or(tuple(children))

    def _term(self) -> Node:
        token = self._peek()
        if token.kind == "-" or token.is_keyword("NOT"):
            self._next()
            self._enter(token)
            node: Node = Not(self._term())
        elif token.kind == "(":
            self._next()
            self._enter(token)
            node = self._expression()
            close = self._next()
            if close.kind != ")":
                raise _error(
                    f"expected ')' to close the '(' at position {token.pos + 1}, "
                    f"got {close.describe()}",
                    close.pos,
                )
        else:
            return self._comparison()
        self._depth -= 1
        return node

    def _enter(self, token: _Token) -> None:
        self._depth += 1
        if self._depth > MAX_FILTER_DEPTH:
            raise _error(f"nested more than {MAX_FILTER_DEPTH} levels deep", token.pos)

    def _comparison(self) -> Compare:
        token = self._next()
        if token.kind != "word" or token.is_keyword():
            raise _error(
                f"expected a comparison such as 'done = true', got {token.describe()}", token.pos
            )
        field = _FIELDS.get(token.text)
        if field is None:
            hint = " (AND, OR and NOT must be uppercase)" if token.text.upper() in _KEYWORDS else ""
            raise _error(
                f"unknown field {token.text!r}{hint}; filterable fields are "
                + ", ".join(dict.fromkeys(_FIELDS.values())),
                token.pos,
            )
        op = self._next()
        if op.kind != "cmp":
            raise _error(
                f"expected an operator (= != < > <= >= :) after {field}, got {op.describe()}",
                op.pos,
            )
        if op.text not in _OPS[field]:
            raise _error(f"{field} supports only {' '.join(_OPS[field])}, not {op.text}", op.pos)
        value = self._next()
        if value.kind not in ("word", "string") or (value.kind == "word" and value.is_keyword()):
            raise _error(f"expected a value after {op.text!r}, got {value.describe()}", value.pos)
        return Compare(field, cast(Comparator, op.text), _convert(field, value))


def _convert(field: FieldName, token: _Token) -> Value:
    text = token.text
    if field == "done" and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if field == "error.code" and _INT_RE.fullmatch(text):
        if int(text) not in _INT32:
            raise _error(f"error.code {text} is out of range", token.pos)
        return int(text)
    if field == "error.code" and text.upper() in _CODES:
        return _CODES[text.upper()]
    if field == "create_time" and (micros := _timestamp(text)) is not None:
        return micros
    if field in ("done", "error.code", "create_time"):
        raise _error(f"{field} expects {_EXPECTS[field]}, got {text!r}", token.pos)
    return text


def _timestamp(text: str) -> int | None:
    match = _TIMESTAMP_RE.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    except ValueError:
        return None
    offset = 0
    if sign is not None:
        if int(off_h) > 23 or int(off_m) > 59:
            return None
        offset = (int(off_h) * 60 + int(off_m)) * (1 if sign == "+" else -1)
    delta = moment - _EPOCH  # naive arithmetic: no overflow near year 1 or 9999
    micros = int((fraction or "").ljust(6, "0")[:6])
    return (delta.days * 86_400 + delta.seconds - offset * 60) * 1_000_000 + micros


# -- evaluation ------------------------------------------------------------------------

_Predicate: TypeAlias = Callable[["Filterable"], bool]
_ORDER: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}
_GETTERS: Final[dict[FieldName, Callable[[Filterable], Value]]] = {
    "name": lambda record: record.operation.name,
    "done": lambda record: record.operation.done,
    # An unset error reads as 0, so running and succeeded operations have code OK.
    "error.code": lambda record: record.operation.error.code if record.operation.done else 0,
    # An unset Any (no metadata yet, or no response) reads as type URL "".
    "metadata.@type": lambda record: record.operation.metadata.type_url,
    "response.@type": lambda record: record.operation.response.type_url,
    "create_time": lambda record: record.create_time,
}


def _value_test(op: str, value: Value) -> Callable[[Value], bool]:
    if op == ":":
        text = str(value)
        return bool if text == "*" else lambda actual: text in str(actual)
    if op in _ORDER:
        order = _ORDER[op]
        return lambda actual: order(actual, value)
    negate = op == "!="
    if isinstance(value, str) and "*" in value:
        glob = _glob(value)
        return lambda actual: glob(str(actual)) is not negate
    return lambda actual: (actual == value) is not negate


def _glob(pattern: str) -> Callable[[str], bool]:
    # Greedy, leftmost matching of the parts between stars: O(len(text) * len(pattern)) at
    # worst, where a regular expression could backtrack exponentially on a hostile pattern.
    first, *middle, last = pattern.split("*")

    def glob(text: str) -> bool:
        end = len(text) - len(last)
        if end < len(first) or not (text.startswith(first) and text.endswith(last)):
            return False
        pos = len(first)
        for part in middle:
            pos = text.find(part, pos, end)
            if pos < 0:
                return False
            pos += len(part)
        return True

    return glob


def _message_name(get: Callable[[Filterable], Value]) -> Callable[[Filterable], Value]:
    return lambda record: str(get(record)).rpartition("/")[2]


def _compile(node: Node) -> _Predicate:
    if isinstance(node, And):
        parts = [_compile(child) for child in node.children]
        return lambda record: all(part(record) for part in parts)
    if isinstance(node, Or):
        parts = [_compile(child) for child in node.children]
        return lambda record: any(part(record) for part in parts)
    if isinstance(node, Not):
        inner = _compile(node.child)
        return lambda record: not inner(record)
    get = _GETTERS[node.field]
    if node.field.endswith(".@type") and node.op != ":" and "/" not in str(node.value):
        # "pkg.Msg" matches "type.googleapis.com/pkg.Msg": compare the message name only.
        get = _message_name(get)
    test = _value_test(node.op, node.value)
    return lambda record: test(get(record))


@dataclasses.dataclass(frozen=True, slots=True)
class Filter:
    """A parsed ``ListOperations`` filter; build it with :func:`parse_filter`.

    :param text: the filter as the caller wrote it.
    :param root: its syntax tree, for stores that translate filters into queries.
    """

    text: str
    root: Node
    _predicate: _Predicate = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_predicate", _compile(self.root))

    def matches(self, record: Filterable) -> bool:
        """Return whether *record* satisfies the filter (the reference semantics)."""
        return self._predicate(record)


def parse_filter(text: str) -> Filter | None:
    """Parse an AIP-160 ``ListOperations`` filter (the subset in the module docstring).

    :param text: the request's ``filter`` field.
    :return: the filter, or None if *text* is empty or only whitespace (match everything).
    :raises InvalidArgument: for any filter that is not valid; the message says where and why.
    """
    if len(text) > MAX_FILTER_LENGTH:
        raise InvalidArgument(
            f"invalid filter: {len(text)} characters long, the limit is {MAX_FILTER_LENGTH}"
        )
    if not text or text.isspace():
        return None
    return Filter(text, _Parser(text).parse())
