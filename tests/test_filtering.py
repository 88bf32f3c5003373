"""ListOperations filters (AIP-160 subset) and page tokens."""

from __future__ import annotations

import base64
import re

import pytest
from google.longrunning import operations_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from lro_async import InvalidArgument
from lro_async.filtering import (
    MAX_FILTER_DEPTH,
    MAX_FILTER_LENGTH,
    And,
    Compare,
    Filter,
    Node,
    Not,
    Or,
    parse_filter,
)
from lro_async.server.tokens import PageTokens
from lro_async.stores import OperationRecord

T0 = 1_767_323_045_000_000  # 2026-01-02T03:04:05Z in microseconds
SECOND = 1_000_000
STRUCT = "type.googleapis.com/google.protobuf.Struct"
EMPTY = "type.googleapis.com/google.protobuf.Empty"


def record(
    name: str,
    *,
    create_time: int,
    done: bool = False,
    code: int | None = None,
    response: str | None = None,
    metadata: str | None = None,
) -> OperationRecord:
    operation = operations_pb2.Operation(name=name, done=done)
    if metadata is not None:
        operation.metadata.type_url = metadata
    if code is not None:
        operation.error.code = code
        operation.error.message = "failed"
    if response is not None:
        operation.response.type_url = response
    return OperationRecord(operation=operation, create_time=create_time, update_time=create_time)


RECORDS = [
    record("operations/top", create_time=T0 - 86_400 * SECOND),
    record("projects/p/operations/run", create_time=T0, metadata=STRUCT),
    record("projects/p/operations/ok", create_time=T0 + SECOND, done=True, response=EMPTY,
           metadata=STRUCT),
    record("projects/p/operations/failed", create_time=T0 + 2 * SECOND, done=True, code=5),
    record("projects/q/operations/cancelled", create_time=T0 + 3 * SECOND, done=True, code=1),
]  # fmt: skip
ALL = {"top", "run", "ok", "failed", "cancelled"}


def parsed(text: str) -> Filter:
    result = parse_filter(text)
    assert result is not None
    return result


def matching(text: str) -> set[str]:
    return {r.name.rpartition("/")[2] for r in RECORDS if parsed(text).matches(r)}


# -- grammar and semantics --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # done
        ("done = true", {"ok", "failed", "cancelled"}),
        ("done=false", {"top", "run"}),
        ("done != true", {"top", "run"}),
        ('done = "TRUE"', {"ok", "failed", "cancelled"}),
        # name: exact, wildcard, substring, lexicographic
        ('name = "operations/top"', {"top"}),
        ("name = operations/top", {"top"}),
        ("name = 'operations/top'", {"top"}),
        ('name = "projects/p/operations/*"', {"run", "ok", "failed"}),
        ('name != "projects/p/operations/*"', {"top", "cancelled"}),
        ('name = "*/operations/*"', ALL - {"top"}),
        ('name = "projects/*/operations/ok"', {"ok"}),
        ('name : "fail"', {"failed"}),
        ("name:operations", ALL),
        ('name : "*"', ALL),
        ('name < "projects/p/operations/ok"', {"top", "failed"}),
        ('name <= "projects/p/operations/ok"', {"top", "failed", "ok"}),
        ('name > "projects/p/operations/ok"', {"run", "cancelled"}),
        ('name >= "projects/q"', {"cancelled"}),
        # error.code: not done and succeeded count as 0 (OK)
        ("error.code = 0", {"top", "run", "ok"}),
        ("error.code = OK", {"top", "run", "ok"}),
        ("error.code != 0", {"failed", "cancelled"}),
        ("error.code = CANCELLED", {"cancelled"}),
        ("error.code = cancelled", {"cancelled"}),
        ('error.code = "NOT_FOUND"', {"failed"}),
        ("error.code = 5", {"failed"}),
        ("error.code > 1", {"failed"}),
        ("error.code >= 1", {"failed", "cancelled"}),
        ("error.code < 5", {"top", "run", "ok", "cancelled"}),
        ("error.code <= Cancelled", {"top", "run", "ok", "cancelled"}),
        ("error.code = +5", {"failed"}),
        # metadata.@type / response.@type: full URL or message name, wildcards, presence
        ("metadata.@type = google.protobuf.Struct", {"run", "ok"}),
        (f'metadata.@type = "{STRUCT}"', {"run", "ok"}),
        ('metadata.@type = "example.com/google.protobuf.Struct"', set()),
        ('metadata.@type = "Struct"', set()),
        ('metadata.@type != "google.protobuf.Struct"', {"top", "failed", "cancelled"}),
        ('metadata.@type = ""', {"top", "failed", "cancelled"}),
        ("metadata.@type:*", {"run", "ok"}),
        ("metadata.@type : Struct", {"run", "ok"}),
        ('response.@type = "google.protobuf.Empty"', {"ok"}),
        (f"response.@type = {EMPTY}", {"ok"}),
        ("response.@type : Empty", {"ok"}),
        ('response.@type = "*.Empty"', {"ok"}),
        ('response.@type = "type.googleapis.com/*"', {"ok"}),
        ('response.@type != "type.googleapis.com/*"', ALL - {"ok"}),
        ("response.@type:*", {"ok"}),
        ("-response.@type:*", ALL - {"ok"}),
        # create_time: RFC 3339, quoted or bare, offsets, fractions, either case of T/Z
        ('create_time > "2026-01-02T03:04:05Z"', {"ok", "failed", "cancelled"}),
        ("create_time >= 2026-01-02T03:04:05Z", {"run", "ok", "failed", "cancelled"}),
        ("create_time = 2026-01-02t03:04:05z", {"run"}),
        ('create_time = "2026-01-02T04:04:06+01:00"', {"ok"}),
        ('create_time = "2026-01-02T03:04:06.000+00:00"', {"ok"}),
        ("create_time < 2026-01-02T03:04:06.5-00:00", {"top", "run", "ok"}),
        ('create_time <= "2026-01-01T22:04:07.000001-05:00"', {"top", "run", "ok", "failed"}),
        ("create_time != 2026-01-02T03:04:05.000000000Z", ALL - {"run"}),
        ('create_time < "2026-01-02 00:00:00Z"', {"top"}),
        ("createTime > 2026-01-02T03:04:07Z", {"cancelled"}),
        # precedence: OR binds tighter than AND (and than juxtaposition)
        ("done = true OR name : run AND error.code = 0", {"ok", "run"}),
        ("done = true AND error.code = 0 OR name : top", {"ok"}),
        ("name : top done = false OR done = true", {"top"}),
        ("error.code = 0 done = true OR name : failed", {"ok"}),
        # implicit AND by juxtaposition
        ("done = true error.code != 0", {"failed", "cancelled"}),
        ("name:operations done=false", {"top", "run"}),
        ('name:"projects/p"  done=true\terror.code=0', {"ok"}),
        # NOT and -
        ("NOT done = true", {"top", "run"}),
        ("-done = true", {"top", "run"}),
        ("NOT(done = true)", {"top", "run"}),
        ("NOT (done = true OR name : top)", {"run"}),
        ("-(error.code = 0)", {"failed", "cancelled"}),
        ("NOT NOT done = true", {"ok", "failed", "cancelled"}),
        ("- -done = true", {"ok", "failed", "cancelled"}),
        ("NOT done = true AND NOT name : top", {"run"}),
        # parentheses
        ("(done = true AND error.code = 0) OR name : top", {"ok", "top"}),
        ("((done = true))", {"ok", "failed", "cancelled"}),
        ("(name:run)(name:projects)", {"run"}),
        ("(name : run OR name : ok) AND (done = true OR name : top)", {"ok"}),
        # leading and trailing whitespace
        ("  \n done = false  ", {"top", "run"}),
    ],
)
def test_filter_matches(text: str, expected: set[str]) -> None:
    assert matching(text) == expected


def test_empty_filter_is_none() -> None:
    assert parse_filter("") is None
    assert parse_filter("  \t\n ") is None


def test_filter_keeps_text_and_is_immutable_and_comparable() -> None:
    done = parsed("done = true")
    assert done.text == "done = true"
    assert done == parse_filter("done = true")
    assert hash(done) == hash(parse_filter("done = true"))
    assert done != parse_filter("done=true")  # same tree, different text
    with pytest.raises(AttributeError):
        done.text = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "root"),
    [
        ("done = true", Compare("done", "=", True)),
        ("createTime > 1970-01-01T00:00:01.5Z", Compare("create_time", ">", 1_500_000)),
        ("create_time <= 1969-12-31T23:00:00-01:00", Compare("create_time", "<=", 0)),
        (
            "create_time = 0001-01-01T00:00:00+01:00",
            Compare("create_time", "=", -62_135_600_400 * SECOND),
        ),
        ("error.code = DEADLINE_EXCEEDED", Compare("error.code", "=", 4)),
        ('name = "a\\"b\\\\c\\n"', Compare("name", "=", 'a"b\\c\n')),
        ("name = 'it\\'s'", Compare("name", "=", "it's")),
        ("metadata.@type:x", Compare("metadata.@type", ":", "x")),
        (
            "done = true name : x",
            And((Compare("done", "=", True), Compare("name", ":", "x"))),
        ),
        (
            "done = true OR done = false AND error.code = CANCELLED",
            And(
                (
                    Or((Compare("done", "=", True), Compare("done", "=", False))),
                    Compare("error.code", "=", 1),
                )
            ),
        ),
        (
            "name:a name:b AND name:c OR name:d",
            And(
                (
                    Compare("name", ":", "a"),
                    Compare("name", ":", "b"),
                    Or((Compare("name", ":", "c"), Compare("name", ":", "d"))),
                )
            ),
        ),
        ("-(done=true)", Not(Compare("done", "=", True))),
        ("NOT done=true", Not(Compare("done", "=", True))),
    ],
)
def test_filter_syntax_tree(text: str, root: Node) -> None:
    assert parse_filter(text) == Filter(text, root)


def test_filter_built_from_a_tree_matches() -> None:
    built = Filter("hand-made", Or((Compare("name", ":", "top"), Compare("error.code", "=", 5))))
    assert {r.name for r in RECORDS if built.matches(r)} == {
        "operations/top",
        "projects/p/operations/failed",
    }


# -- invalid filters ----------------------------------------------------------------------

_FIELD_LIST = "name, done, error.code, metadata.@type, response.@type, create_time"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nme = x", f"position 1: unknown field 'nme'; filterable fields are {_FIELD_LIST}"),
        ("error = 1", "unknown field 'error'"),
        ("metadata.type_url = x", "unknown field"),
        ("done = true and name : x", "unknown field 'and' (AND, OR and NOT must be uppercase)"),
        ("done = true Or name : x", "must be uppercase"),
        ("done = yes", "position 8: done expects true or false, got 'yes'"),
        ("done = 1", "done expects true or false"),
        ("done > true", "position 6: done supports only = !=, not >"),
        ("done : true", "done supports only = !="),
        ("error.code = FOO", "error.code expects an integer or a google.rpc.Code name"),
        ("error.code = 1.5", "got '1.5'"),
        ("error.code = true", "error.code expects"),
        ("error.code = 99999999999", "error.code 99999999999 is out of range"),
        ("error.code : 1", "error.code supports only = != < > <= >="),
        ("create_time > yesterday", "create_time expects an RFC 3339 timestamp"),
        ('create_time > "2026-13-01T00:00:00Z"', "RFC 3339"),
        ("create_time > 2026-02-30T00:00:00Z", "RFC 3339"),
        ("create_time > 2026-01-02T24:00:00Z", "RFC 3339"),
        ("create_time > 2026-01-02T00:00:60Z", "RFC 3339"),
        ("create_time > 2026-01-02T00:00:00+24:00", "RFC 3339"),
        ("create_time > 2026-01-02T00:00:00", "RFC 3339"),  # no offset
        ("create_time > 2026-01-02", "RFC 3339"),
        ("create_time > 1767323045", "RFC 3339"),
        ("create_time > 0000-01-01T00:00:00Z", "RFC 3339"),
        ("create_time > 2026-01-02T00:00:00.Z", "RFC 3339"),
        ("create_time : 2026-01-02T00:00:00Z", "create_time supports only"),
        ("metadata.@type < x", "metadata.@type supports only = != :"),
        ("response.@type >= x", "response.@type supports only"),
        ("(done = true", "position 13: expected ')' to close the '(' at position 1"),
        ("((done = true)", "expected ')'"),
        ("done = true)", "position 12: unexpected ')' (no matching '(')"),
        ("done = true AND", "got the end of the filter"),
        ("done = true OR", "got the end of the filter"),
        ("AND done = true", "position 1: expected a comparison such as 'done = true', got 'AND'"),
        ("OR done = true", "got 'OR'"),
        ("done = true OR OR done = false", "position 16"),
        ("done = true AND AND done = false", "position 17"),
        ("done = true AND OR done = false", "got 'OR'"),
        ("done =", "position 7: expected a value after '=', got the end of the filter"),
        ("done = )", "expected a value after '='"),
        ("name = AND", "expected a value after '=', got 'AND'"),
        ("name:", "expected a value after ':'"),
        ("= true", "position 1: expected a comparison such as 'done = true', got '='"),
        ("done true", "position 6: expected an operator (= != < > <= >= :) after done, got 'true'"),
        ("name", "after name, got the end of the filter"),
        ("done = true = false", "unexpected '='"),
        ("done == true", "done expects true or false, got '='"),
        ("done ! true", "position 6: unexpected '!'"),
        ("()", "position 2: expected a comparison"),
        ("( )", "expected a comparison"),
        ("NOT", "got the end of the filter"),
        ("-", "got the end of the filter"),
        ("NOT AND done = true", "got 'AND'"),
        ('"done" = true', "expected a comparison such as 'done = true', got 'done'"),
        ("done = true 'x'", "got 'x'"),
        ('name = "abc', 'position 8: unterminated string (no closing ")'),
        ("name = 'abc", "unterminated string"),
        ('name = "abc\\', "unterminated string"),
        ('name = "a\\qb"', "position 10: unknown escape '\\\\q' in a string"),
    ],
)
def test_invalid_filter_is_rejected_with_a_helpful_message(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_filter(text)
    assert caught.value.message.startswith("invalid filter")
    assert message in caught.value.message
    assert "position" in caught.value.message


def test_filter_length_limit() -> None:
    longest = "done = true".ljust(MAX_FILTER_LENGTH)
    assert parse_filter(longest) is not None
    with pytest.raises(InvalidArgument, match="4097 characters long, the limit is 4096"):
        parse_filter(longest + " ")
    with pytest.raises(InvalidArgument, match="the limit is 4096"):
        parse_filter(" " * (MAX_FILTER_LENGTH + 1))


@pytest.mark.parametrize(
    ("prefix", "suffix"),
    [("(", ")"), ("NOT ", ""), ("-", ""), ("NOT (", ")")],
)
def test_filter_depth_limit(prefix: str, suffix: str) -> None:
    levels = MAX_FILTER_DEPTH if prefix != "NOT (" else MAX_FILTER_DEPTH // 2
    deepest = prefix * levels + "done = true" + suffix * levels
    assert parse_filter(deepest) is not None
    too_deep = prefix + deepest + suffix
    with pytest.raises(InvalidArgument, match=f"nested more than {MAX_FILTER_DEPTH} levels"):
        parse_filter(too_deep)


def test_pathological_nesting_is_invalid_argument_not_recursion_error() -> None:
    for text in ("(" * 2000, "(" * 2000 + "done=true" + ")" * 2000, "NOT " * 1000, "-" * 4096):
        with pytest.raises(InvalidArgument):
            parse_filter(text)


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("*", "", True),
        ("a*", "abc", True),
        ("*c", "abc", True),
        ("a*c", "ac", True),
        ("a*b*c", "aXbYc", True),
        ("a*b*c", "acb", False),
        ("aa*aa", "aaa", False),  # the parts may not overlap
        ("aa*aa", "aaaa", True),
        ("*a*", "bbb", False),
        ("a**b", "ab", True),
        ("x*", "yx", False),
    ],
)
def test_wildcard(pattern: str, name: str, expected: bool) -> None:
    assert parsed(f'name = "{pattern}"').matches(record(name, create_time=0)) is expected
    assert parsed(f'name != "{pattern}"').matches(record(name, create_time=0)) is not expected


def test_hostile_wildcard_is_evaluated_in_linear_time() -> None:
    hostile = parsed('name = "' + "a*" * 2000 + 'b"')  # a regex would backtrack for ages
    long_name = record("a" * 3000, create_time=0)
    assert not hostile.matches(long_name)
    assert parsed('name = "*aaa*aaa*"').matches(long_name)


_PIECES = st.sampled_from(
    [
        *("name", "done", "error.code", "metadata.@type", "response.@type", "create_time"),
        *("=", "!=", "<", ">", "<=", ">=", ":", "!", "AND", "OR", "NOT", "and", "-", "(", ")"),
        *('"', "'", "\\", "*", "true", "false", "CANCELLED", "0", "5", "-1", "1e3", "x"),
        *("2026-01-02T03:04:05Z", "2026-01-02T03:04:05.5+01:00", "type.googleapis.com/a.B"),
        *(" ", "\t", "\n", "\x00", "é", "\ud800", "\u2028", "٣", "\u00a0"),
    ]
)
_TEXTS = st.one_of(
    st.text(max_size=80),
    st.lists(_PIECES, max_size=30).map("".join),
    st.lists(_PIECES, max_size=30).map(" ".join),
)


def _outcome(text: str) -> Filter | str | None:
    """The parsed filter, or the message of the InvalidArgument; anything else propagates."""
    try:
        return parse_filter(text)
    except InvalidArgument as exc:
        return exc.message


@settings(max_examples=200, deadline=None, database=None)
@given(_TEXTS)
def test_any_text_parses_or_raises_invalid_argument(text: str) -> None:
    first = _outcome(text)
    assert _outcome(text) == first  # deterministic
    if not isinstance(first, Filter):
        return
    matched = [first.matches(r) for r in RECORDS]
    negated = _outcome(f"NOT ({text})")
    if isinstance(negated, Filter):  # else: one level too deep
        assert [negated.matches(r) for r in RECORDS] == [not m for m in matched]


# -- page tokens -------------------------------------------------------------------------

KEY = bytes(range(32))
TOKENS = PageTokens(KEY)
_BAD = "page_token is invalid or does not match this request's parent and filter"


@pytest.mark.parametrize(
    "after",
    [(0, "operations/a"), (T0, "projects/p/operations/x"), (-1, ""), (2**63 - 1, "é/☃"),
     (-(2**63), "n" * 900)],
)  # fmt: skip
@pytest.mark.parametrize("parent", [None, "", "projects/p"])
@pytest.mark.parametrize("filter_text", ["", "done = true", 'name : "\\u00e9"'])
def test_page_token_round_trip(
    after: tuple[int, str], parent: str | None, filter_text: str
) -> None:
    token = TOKENS.encode(after, parent=parent, filter_text=filter_text)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert TOKENS.decode(token, parent=parent, filter_text=filter_text) == after
    assert PageTokens(KEY).decode(token, parent=parent, filter_text=filter_text) == after


def test_page_token_is_deterministic_and_opaque() -> None:
    token = TOKENS.encode((T0, "operations/secret"), parent=None, filter_text="")
    assert token == TOKENS.encode((T0, "operations/secret"), parent=None, filter_text="")
    assert "secret" not in token
    assert "=" not in token


@pytest.mark.parametrize(
    ("issued", "used"),
    [
        ((None, ""), ("", "")),
        (("", ""), (None, "")),
        (("projects/p", ""), ("projects/q", "")),
        (("projects/p", ""), ("projects/pp", "")),
        (("projects/p", ""), (None, "")),
        ((None, "done = true"), (None, "done=true")),
        ((None, "done = true"), (None, "")),
        ((None, ""), (None, "done = true")),
        # field framing: moving bytes between parent and filter does not keep the MAC
        (("ab", "c"), ("a", "bc")),
    ],
)
def test_page_token_is_bound_to_parent_and_filter(
    issued: tuple[str | None, str], used: tuple[str | None, str]
) -> None:
    token = TOKENS.encode((T0, "operations/a"), parent=issued[0], filter_text=issued[1])
    assert TOKENS.decode(token, parent=issued[0], filter_text=issued[1]) == (T0, "operations/a")
    with pytest.raises(InvalidArgument) as caught:
        TOKENS.decode(token, parent=used[0], filter_text=used[1])
    assert caught.value.message == _BAD


def test_page_token_from_another_key_is_rejected() -> None:
    token = PageTokens(b"k" * 16).encode((T0, "operations/a"), parent=None, filter_text="")
    with pytest.raises(InvalidArgument, match="page_token is invalid"):
        TOKENS.decode(token, parent=None, filter_text="")


def _unb64(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_page_token_tampering_is_rejected() -> None:
    token = TOKENS.encode((T0, "projects/p/operations/abc"), parent="projects/p", filter_text="")
    raw = _unb64(token)
    forged: set[str] = set()
    for index in range(len(raw)):
        for bit in range(8):
            flipped = bytearray(raw)
            flipped[index] ^= 1 << bit
            forged.add(_b64(bytes(flipped)))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for index in range(len(token)):
        forged.update(token[:index] + ch + token[index + 1 :] for ch in alphabet)
        forged.add(token[:index])  # truncated
        forged.add(token[:index] + token[index + 1 :])  # a character dropped
    forged.update({token + "A", token + "=", token + "==", " " + token, token + "\n"})
    forged.discard(token)
    for candidate in forged:
        with pytest.raises(InvalidArgument) as caught:
            TOKENS.decode(candidate, parent="projects/p", filter_text="")
        assert caught.value.message == _BAD


@pytest.mark.parametrize(
    "garbage",
    ["", "A", "AA", "AAA", "AAAA", "!!!!", "====", "a b", "é", "\x00", "A" * 40, "_" * 33,
     "A" * 5000, "eyJ0eXAiOiJKV1QifQ", "%2F%2F"],
)  # fmt: skip
def test_page_token_garbage_is_rejected(garbage: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        TOKENS.decode(garbage, parent=None, filter_text="")
    assert caught.value.message == _BAD


@settings(max_examples=100, deadline=None, database=None)
@given(st.one_of(st.text(max_size=64), st.binary(max_size=64).map(_b64)))
def test_page_token_decode_raises_only_invalid_argument(text: str) -> None:
    with pytest.raises(InvalidArgument):
        TOKENS.decode(text, parent=None, filter_text="")


def test_page_token_key_must_be_long_enough() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        PageTokens(b"k" * 15)
    PageTokens(b"k" * 16)


def test_page_token_for_an_overlong_name_is_refused_at_encode() -> None:
    with pytest.raises(ValueError, match="too long"):
        TOKENS.encode((T0, "n" * 1000), parent=None, filter_text="")
