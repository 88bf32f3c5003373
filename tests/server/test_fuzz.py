"""Fuzzing of the ListOperations filter parser and the page-token decoder (hypothesis).

Filters come from a grammar-aware generator that also knows what each filter means (a
reference evaluator written independently of ``listing.py``), from mutations of such
filters, and from arbitrary text and bytes. Whatever the input, only InvalidArgument
may escape; a filter that parses evaluates on any record without raising, and a filter
from the grammar selects exactly what the reference says it selects.

Page tokens: arbitrary strings, tampered real tokens and tokens used with another
parent or filter are all InvalidArgument; real tokens round-trip for any page key.

Every property is bounded: a fixed number of examples, and a per-example deadline far
above the time an example takes (about a millisecond), so a pathological input (an
exponential regular expression, a runaway recursion) fails the run rather than hanging it.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import operator
import re
import string
import time
from collections.abc import Callable

import pytest
from google.longrunning import operations_pb2
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lro_async import InvalidArgument
from lro_async.filtering import MAX_FILTER_DEPTH, MAX_FILTER_LENGTH, parse_filter
from lro_async.server.tokens import PageTokens
from lro_async.stores import Filter, OperationRecord

FUZZ = settings(
    max_examples=300,
    deadline=datetime.timedelta(seconds=2),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# -- records to evaluate filters on ----------------------------------------------------

TYPE_URLS = [
    "",
    "type.googleapis.com/google.protobuf.Struct",
    "type.googleapis.com/google.protobuf.Empty",
    "type.googleapis.com/lro_async.demo.v1.SleepMetadata",
    "example.com/x/pkg.Msg",
    "pkg.Msg",
    "/",
]
_NAME_CHARS = "abop/*:._-"


@st.composite
def records(draw: st.DrawFn) -> OperationRecord:
    """An operation as a store keeps it: running, succeeded or failed, any name and types."""
    parent = draw(st.sampled_from(["", "projects/p", "projects/a*b", "tenants/x/y"]))
    suffix = draw(st.text(_NAME_CHARS, max_size=8))
    name = draw(
        st.one_of(
            st.just(f"{parent}/operations/{suffix}" if parent else f"operations/{suffix}"),
            st.text(max_size=12),
        )
    )
    operation = operations_pb2.Operation(name=name)
    operation.metadata.type_url = draw(st.one_of(st.sampled_from(TYPE_URLS), st.text(max_size=8)))
    outcome = draw(st.sampled_from(["running", "response", "error"]))
    if outcome != "running":
        operation.done = True
    if outcome == "response":
        operation.response.type_url = draw(st.sampled_from(TYPE_URLS[1:]))
    elif outcome == "error":
        operation.error.code = draw(st.one_of(st.integers(1, 16), st.integers(-(2**31), 2**31 - 1)))
        operation.error.message = "failed"
    create_time = draw(st.integers(-(2**63), 2**63 - 1))
    return OperationRecord(operation, create_time, create_time)


RECORD_LISTS = st.lists(records(), min_size=1, max_size=5)


def _fixed(
    name: str, create_time: int, *, code: int | None = None, response: str = ""
) -> OperationRecord:
    operation = operations_pb2.Operation(name=name, done=code is not None or bool(response))
    operation.metadata.type_url = response[::-1]
    if code is not None:
        operation.error.code = code
    if response:
        operation.response.type_url = response
    return OperationRecord(operation, create_time, create_time)


SAMPLE = [  # for properties that spend their time budget on the filters instead
    _fixed("operations/a", 0),
    _fixed("projects/p/operations/b*", -(2**63), code=1),
    _fixed("", 2**63 - 1, response=TYPE_URLS[1]),
    _fixed("é/operations/\x00", 1_767_323_045_000_000, code=-(2**31)),
    _fixed("a" * 600, -1, response="/"),
    _fixed("projects/a*b/operations/op", 42, code=2**31 - 1),
]

# -- the reference semantics, written from the module docstring, not from the code ------

Predicate = Callable[[OperationRecord], bool]
CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12,
    "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}  # fmt: skip


def _wildcard(pattern: str, text: str) -> bool:
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, text, re.DOTALL) is not None


def _compare(op: str, actual: str | int | bool, value: str | int | bool) -> bool:
    if op == ":":
        assert isinstance(actual, str) and isinstance(value, str)
        return actual != "" if value == "*" else value in actual
    if op in ("=", "!="):
        if isinstance(value, str) and "*" in value:
            assert isinstance(actual, str)
            equal = _wildcard(value, actual)
        else:
            equal = actual == value
        return equal if op == "=" else not equal
    order = {"<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge}[op]
    return bool(order(actual, value))


def _field(field: str, value: str | int | bool, op: str) -> Callable[[OperationRecord], object]:
    if field == "name":
        return lambda r: r.operation.name
    if field == "done":
        return lambda r: r.operation.done
    if field == "error.code":
        return lambda r: r.operation.error.code if r.operation.done else 0
    if field == "create_time":
        return lambda r: r.create_time
    which = field.split(".")[0]

    def type_url(r: OperationRecord) -> str:
        url: str = getattr(r.operation, which).type_url
        if op != ":" and "/" not in str(value):
            return url.rpartition("/")[2]
        return url

    return type_url


@dataclasses.dataclass(frozen=True)
class Cmp:
    text: str
    field: str
    op: str
    value: str | int | bool

    def evaluate(self, record: OperationRecord) -> bool:
        actual = _field(self.field, self.value, self.op)(record)
        assert isinstance(actual, str | int | bool)
        return _compare(self.op, actual, self.value)


@dataclasses.dataclass(frozen=True)
class RNot:
    child: RNode
    dash: bool

    def evaluate(self, record: OperationRecord) -> bool:
        return not self.child.evaluate(record)


@dataclasses.dataclass(frozen=True)
class RAnd:
    children: tuple[RNode, ...]
    juxtapose: bool

    def evaluate(self, record: OperationRecord) -> bool:
        return all(child.evaluate(record) for child in self.children)


@dataclasses.dataclass(frozen=True)
class ROr:
    children: tuple[RNode, ...]

    def evaluate(self, record: OperationRecord) -> bool:
        return any(child.evaluate(record) for child in self.children)


RNode = Cmp | RNot | RAnd | ROr


def render(node: RNode, level: str = "expression") -> str:
    """The filter text of *node*: AND is loosest, then OR, then NOT and parentheses."""
    if isinstance(node, Cmp):
        return node.text
    if isinstance(node, RNot):
        return ("-" if node.dash else "NOT ") + render(node.child, "term")
    if isinstance(node, RAnd):
        text = (" " if node.juxtapose else " AND ").join(render(c, "factor") for c in node.children)
        return text if level == "expression" else f"({text})"
    text = " OR ".join(render(c, "term") for c in node.children)
    return text if level in ("expression", "factor") else f"( {text} )"


# -- generating comparisons ------------------------------------------------------------
# Strategies are module constants and helpers take ``draw``: hypothesis validates each new
# strategy object on first use, which would otherwise dominate the time of every example.

_BARE = re.compile(r"[^\s()\"']+")
_BOOL = st.booleans()
_QUOTES = st.sampled_from("\"'")
_FIELDS = st.sampled_from(
    ["name", "done", "error.code", "metadata.@type", "response.@type", "create_time"]
)
_ALL_OPS = st.sampled_from(["=", "!=", "<", ">", "<=", ">=", ":"])
_ORDERED_OPS = st.sampled_from(["=", "!=", "<", ">", "<=", ">="])
_EQUALITY_OPS = st.sampled_from(["=", "!="])
_TYPE_OPS = st.sampled_from(["=", "!=", ":"])
_NAME_VALUES = st.one_of(st.text(_NAME_CHARS, max_size=10), st.text(max_size=6))
_CODE_NUMBERS = st.one_of(st.integers(-3, 20), st.sampled_from([2**31 - 1, -(2**31)]))
_CODE_NAMES = st.sampled_from(sorted(CODES))
_SIGNS = st.sampled_from(["", "+"])
_CASES: st.SearchStrategy[Callable[[str], str]] = st.sampled_from(
    [str, str.lower, str.upper, str.title]
)
_TYPE_VALUES = st.one_of(
    st.sampled_from(
        [*TYPE_URLS[1:], "Struct", "google.protobuf.*", "*", "*Msg", "type.googleapis"]
    ),
    st.text("abgop./*", min_size=1, max_size=8),
)
_TIME_FIELDS = st.sampled_from(["create_time", "createTime"])
_SPACES = st.sampled_from(["", " ", "  ", "\t"])
_DAYS = st.integers(1, datetime.date.max.toordinal())
_SECONDS = st.integers(0, 86_399)
_DIGITS = st.text("0123456789", max_size=9)
_OFFSETS = st.integers(-(23 * 60 + 59), 23 * 60 + 59)
_UTC = st.sampled_from(["Z", "z", "+00:00", "-00:00"])
_SEPARATORS = st.sampled_from("Tt ")


def spell(draw: st.DrawFn, value: str) -> str:
    """*value* as a filter value: bare when it can be, else quoted with escapes."""
    if _BARE.fullmatch(value) and value not in ("AND", "OR", "NOT") and draw(_BOOL):
        return value
    quote = draw(_QUOTES)
    escapes = {"\\": "\\\\", quote: "\\" + quote}
    if draw(_BOOL):
        other = "'" if quote == '"' else '"'
        escapes.update({"\n": "\\n", "\r": "\\r", "\t": "\\t", other: "\\" + other})
    return quote + "".join(escapes.get(ch, ch) for ch in value) + quote


def timestamp(draw: st.DrawFn) -> tuple[int, str]:
    """An RFC 3339 timestamp in any accepted spelling, and its microseconds since the epoch."""
    day = datetime.date.fromordinal(draw(_DAYS))
    moment = datetime.datetime(day.year, day.month, day.day)
    moment += datetime.timedelta(seconds=draw(_SECONDS))
    digits = draw(_DIGITS)
    offset = draw(_OFFSETS)
    if offset == 0:
        zone = draw(_UTC)
    else:
        sign = "-" if offset < 0 else "+"
        zone = f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    fraction = f".{digits}" if digits else ""
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}{draw(_SEPARATORS)}"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}{fraction}{zone}"
    )
    micros = (moment - datetime.datetime(1970, 1, 1)) // datetime.timedelta(microseconds=1)
    micros += int(digits.ljust(6, "0")[:6]) - offset * 60_000_000
    return micros, text


@st.composite
def comparisons(draw: st.DrawFn) -> Cmp:
    field = draw(_FIELDS)
    value: str | int | bool
    if field == "name":
        op = draw(_ALL_OPS)
        value = draw(_NAME_VALUES)
        text = spell(draw, value)
    elif field == "done":
        op = draw(_EQUALITY_OPS)
        value = draw(_BOOL)
        text = spell(draw, draw(_CASES)("true" if value else "false"))
    elif field == "error.code":
        op = draw(_ORDERED_OPS)
        if draw(_BOOL):
            value = draw(_CODE_NUMBERS)
            sign = draw(_SIGNS) if value >= 0 else ""
            text = spell(draw, f"{sign}{value}")
        else:
            name = draw(_CODE_NAMES)
            value = CODES[name]
            text = spell(draw, draw(_CASES)(name))
    elif field in ("metadata.@type", "response.@type"):
        op = draw(_TYPE_OPS)
        value = draw(_TYPE_VALUES)
        text = spell(draw, value)
    else:
        op = draw(_ORDERED_OPS)
        value, stamp = timestamp(draw)
        text = spell(draw, stamp)
        field = draw(_TIME_FIELDS)
    before, after = draw(_SPACES), draw(_SPACES)
    if op in ("<", ">") and text.startswith("=") and not after:
        after = " "  # "a<" "=b" would read as "a <= b"
    rendered = f"{field}{before}{op}{after}{text}"
    return Cmp(rendered, "create_time" if field == "createTime" else field, op, value)


def trees(max_leaves: int = 6) -> st.SearchStrategy[RNode]:
    return st.recursive(
        comparisons(),
        lambda children: st.one_of(
            st.builds(RNot, children, st.booleans()),
            st.builds(RAnd, st.lists(children, min_size=2, max_size=4).map(tuple), st.booleans()),
            st.builds(ROr, st.lists(children, min_size=2, max_size=4).map(tuple)),
        ),
        max_leaves=max_leaves,
    )


# Built once: hypothesis validates a strategy object on its first use, at a cost.
TREES = trees()
SMALL_TREES = trees(4)
GRAMMAR_FILTERS = SMALL_TREES.map(render)
"""Valid filter texts (for other test modules to throw at the server)."""


# -- mutations and arbitrary input -----------------------------------------------------

_HOSTILE = [*"()\"'\\=!<>:-* \t\n\x00é\u2028", "AND", "OR", "NOT", "\U0001f600"]


@st.composite
def mutated(draw: st.DrawFn, text: str) -> str:
    """*text* with a few random edits: deletions, insertions, swaps, truncation."""
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["delete", "insert", "swap", "truncate", "duplicate"]))
        if edit == "delete":
            text = text[:position] + text[position + 1 :]
        elif edit == "insert":
            text = text[:position] + draw(st.sampled_from(_HOSTILE)) + text[position:]
        elif edit == "swap" and position + 1 < len(text):
            a, b = text[position], text[position + 1]
            text = text[:position] + b + a + text[position + 2 :]
        elif edit == "truncate":
            text = text[:position]
        else:
            text = text[:position] + text[position : position + 8] + text[position:]
    return text


def arbitrary_texts() -> st.SearchStrategy[str]:
    """Any text, including lone surrogates (as a Python caller could pass) and raw bytes."""
    return st.one_of(
        st.text(max_size=200),
        st.text(st.characters(codec=None, exclude_categories=()), max_size=60),
        st.binary(max_size=120).map(lambda data: data.decode("utf-8", "surrogateescape")),
        st.binary(max_size=120).map(lambda data: data.decode("latin-1")),
        st.lists(
            st.sampled_from([*_HOSTILE, "done", "name", "error.code", "true"]), max_size=40
        ).map("".join),
    )


def _check_any(text: str, sample: list[OperationRecord]) -> Filter | None:
    """Parse *text*: a Filter that evaluates without raising, or InvalidArgument that says where."""
    try:
        parsed = parse_filter(text)
    except InvalidArgument as exc:
        message = exc.message
        assert message.startswith("invalid filter"), message
        if match := re.match(r"invalid filter at position (\d+):", message):
            assert 1 <= int(match.group(1)) <= len(text) + 1, message
        return None
    if parsed is None:
        assert not text.strip(), "only blank filters mean everything"
        return None
    assert parsed.text == text
    for record in sample:
        assert parsed.matches(record) in (True, False)
    return parsed


# -- the properties ----------------------------------------------------------------------


@settings(FUZZ, max_examples=200)
@given(TREES, RECORD_LISTS)
def test_grammar_filters_parse_and_select_what_the_reference_selects(
    tree: RNode, sample: list[OperationRecord]
) -> None:
    text = render(tree)
    parsed = parse_filter(text)
    assert parsed is not None, text
    for record in sample:
        assert parsed.matches(record) == tree.evaluate(record), (text, record.operation)


@settings(FUZZ, max_examples=200)
@given(st.data())
def test_mutated_grammar_filters_parse_or_raise_only_invalid_argument(data: st.DataObject) -> None:
    text = data.draw(mutated(render(data.draw(SMALL_TREES, label="tree"))), label="mutated")
    _check_any(text, SAMPLE)


@FUZZ
@given(arbitrary_texts())
def test_arbitrary_text_parses_or_raises_only_invalid_argument(text: str) -> None:
    first = _check_any(text, SAMPLE)
    again = _check_any(text, SAMPLE)
    assert (first is None) == (again is None), "parsing is deterministic"


@settings(FUZZ, max_examples=60)
@given(
    st.integers(0, MAX_FILTER_DEPTH + 8),
    st.sampled_from(["(", "NOT ", "-", "NOT (", "- ("]),
    st.sampled_from(
        ["done = true", 'name = "*a*a*a*a*a*a*a*a*b"', "create_time>0001-01-01T00:00:00Z"]
    ),
)
def test_deep_nesting_is_refused_cleanly_never_a_recursion_error(
    depth: int, opener: str, inner: str
) -> None:
    closer = ")" * opener.count("(")
    text = opener * depth + inner + closer * depth
    levels = depth * (opener.count("(") + ("NOT" in opener or "-" in opener))
    if levels > MAX_FILTER_DEPTH:
        with pytest.raises(InvalidArgument, match="nested more than"):
            parse_filter(text)
    else:
        assert parse_filter(text) is not None


@pytest.mark.parametrize("length", [MAX_FILTER_LENGTH, MAX_FILTER_LENGTH + 1])
def test_long_hostile_filters_are_bounded_in_time(length: int) -> None:
    """The worst the length limit allows: a star-heavy glob over a long name, many clauses."""
    glob = 'name = "' + "*a" * ((length - 11) // 2) + '"'
    many = " OR ".join(["done = true"] * length)[:length].rsplit(" OR ", 1)[0]
    victims = [
        OperationRecord(operations_pb2.Operation(name=name), 0, 0)
        for name in ("a" * 4000, "a" * 4000 + "b", "ab" * 2000)
    ]
    for text in (glob.ljust(length), many.ljust(length)):
        started = time.monotonic()
        if length > MAX_FILTER_LENGTH:
            with pytest.raises(InvalidArgument, match="limit"):
                parse_filter(text)
            continue
        parsed = parse_filter(text)
        assert parsed is not None
        for victim in victims:
            parsed.matches(victim)
        assert time.monotonic() - started < 2.0, text[:40]


# -- page tokens -------------------------------------------------------------------------

TOKENS = PageTokens(bytes(range(32)))
BAD_TOKEN = "page_token is invalid or does not match this request's parent and filter"
PARENTS = st.one_of(st.none(), st.sampled_from(["", "projects/p"]), st.text(max_size=20))
FILTER_TEXTS = st.one_of(st.sampled_from(["", "done = true"]), st.text(max_size=30))
PAGE_KEYS = st.tuples(
    st.integers(-(2**63), 2**63 - 1),
    st.one_of(
        st.text(max_size=40),
        st.text(st.characters(codec=None, exclude_categories=()), max_size=20),
        st.tuples(st.integers(200, 500), st.integers(0, 300)).map(  # near the 1 KiB limit
            lambda counts: "é" * counts[0] + "a" * counts[1]
        ),
    ),
)
_URLSAFE = string.ascii_letters + string.digits + "-_"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def _fits(key: tuple[int, str]) -> bool:
    """Whether a token can hold *key*: version, create_time, name and MAC in 1 KiB."""
    return 1 + 8 + len(key[1].encode("utf-8", "surrogatepass")) + 16 <= 1024


def _rejected(token: str, parent: str | None, filter_text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        TOKENS.decode(token, parent=parent, filter_text=filter_text)
    assert caught.value.message == BAD_TOKEN


@FUZZ
@given(
    st.one_of(
        st.text(max_size=80),
        st.text(_URLSAFE, min_size=1, max_size=40),
        st.binary(max_size=1100).map(_b64),  # up to past the 1 KiB limit
        st.integers(1300, 1500).map(lambda n: "A" * n),
        st.binary(max_size=200).map(lambda raw: base64.b64encode(raw).decode("ascii")),
        st.binary(max_size=80).map(lambda raw: raw.decode("latin-1")),
    ),
    PARENTS,
    FILTER_TEXTS,
)
def test_arbitrary_page_tokens_are_invalid_argument(
    token: str, parent: str | None, filter_text: str
) -> None:
    assume(token)  # an empty token means the first page and is never decoded
    _rejected(token, parent, filter_text)


@FUZZ
@given(PAGE_KEYS, PARENTS, FILTER_TEXTS, st.data())
def test_tampered_page_tokens_are_invalid_argument(
    key: tuple[int, str], parent: str | None, filter_text: str, data: st.DataObject
) -> None:
    assume(_fits(key))  # a name too long for a token is refused at encode, tested below
    token = TOKENS.encode(key, parent=parent, filter_text=filter_text)
    raw = _unb64(token)
    how = data.draw(st.sampled_from(["bit", "char", "cut", "extend", "rebind", "splice"]))
    if how == "bit":
        index = data.draw(st.integers(0, len(raw) - 1))
        flipped = bytearray(raw)
        flipped[index] ^= 1 << data.draw(st.integers(0, 7))
        forged, used = _b64(bytes(flipped)), (parent, filter_text)
    elif how == "char":
        index = data.draw(st.integers(0, len(token) - 1))
        forged = token[:index] + data.draw(st.sampled_from(_URLSAFE)) + token[index + 1 :]
        used = (parent, filter_text)
    elif how == "cut":
        forged, used = token[: data.draw(st.integers(1, len(token) - 1))], (parent, filter_text)
    elif how == "extend":
        forged = token + data.draw(st.text(_URLSAFE + "=", min_size=1, max_size=8))
        used = (parent, filter_text)
    elif how == "rebind":
        forged = token
        used = (data.draw(PARENTS), data.draw(FILTER_TEXTS))
        assume(used != (parent, filter_text))
    else:  # the payload of one token with the MAC of another
        other = TOKENS.encode((key[0] ^ 1, key[1]), parent=parent, filter_text=filter_text)
        forged, used = _b64(_unb64(other)[:-16] + raw[-16:]), (parent, filter_text)
    assume(forged != token or used != (parent, filter_text))
    _rejected(forged, *used)


@FUZZ
@given(PAGE_KEYS, PARENTS, FILTER_TEXTS)
def test_page_tokens_round_trip_for_any_page_key(
    key: tuple[int, str], parent: str | None, filter_text: str
) -> None:
    if not _fits(key):
        with pytest.raises(ValueError, match="too long"):
            TOKENS.encode(key, parent=parent, filter_text=filter_text)
        return
    token = TOKENS.encode(key, parent=parent, filter_text=filter_text)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token) and len(token) <= 1366
    assert TOKENS.decode(token, parent=parent, filter_text=filter_text) == key
