"""Operation names: ``{parent}/operations/{id}`` or ``operations/{id}``, with unguessable ids."""

from __future__ import annotations

import re
import secrets

from .errors import InvalidArgument

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_REQUEST_ID_LENGTH",
    "check_name",
    "check_parent",
    "check_request_id",
    "list_parent",
    "new_name",
    "parent_of",
]

_OPERATIONS = "/operations/"
MAX_NAME_LENGTH = 512
_MAX_PARENT_LENGTH = MAX_NAME_LENGTH - len("/operations/") - 22  # an id is 22 characters

_SEGMENT = r"[A-Za-z0-9._~:@+-]+"
_PARENT = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")
_NAME = re.compile(rf"(?:{_SEGMENT}/)*operations/{_SEGMENT}")

MAX_REQUEST_ID_LENGTH = 64
_REQUEST_ID = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_REQUEST_ID_LENGTH}}}", re.ASCII)


def new_name(parent: str) -> str:
    """Return a fresh name under *parent* with a 128-bit random id."""
    operation_id = secrets.token_urlsafe(16)  # 16 bytes: 128 random bits, 22 characters
    return f"{parent}/operations/{operation_id}" if parent else f"operations/{operation_id}"


def check_name(name: str) -> str:
    """Return *name* if it is a well-formed operation name.

    :raises InvalidArgument: if it is empty, too long or malformed.
    """
    if not isinstance(name, str):
        raise InvalidArgument(f"an operation name must be a string, not {type(name).__name__}")
    if not name:
        raise InvalidArgument("the operation name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument(
            f"the operation name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}"
        )
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"{name[:100]!r} is not an operation name: expected "
            "'operations/{id}' or '{parent}/operations/{id}'"
        )
    return name


def check_parent(parent: str) -> str:
    """Return *parent* if operations may be created under it (``""``: top level).

    :raises InvalidArgument: if it is malformed or ends in an ``operations`` collection.
    """
    if not isinstance(parent, str):
        raise InvalidArgument(f"a parent must be a string, not {type(parent).__name__}")
    if parent == "":
        return parent
    if len(parent) > _MAX_PARENT_LENGTH:
        raise InvalidArgument(
            f"the parent is {len(parent)} characters long; the limit is {_MAX_PARENT_LENGTH}"
        )
    if not _PARENT.fullmatch(parent) or parent.split("/")[-1] == "operations":
        raise InvalidArgument(
            f"{parent[:100]!r} is not a parent resource name such as 'projects/p' "
            "(segments of letters, digits and ._~:@+- joined by '/')"
        )
    return parent


def list_parent(name: str) -> str | None:
    """Turn ListOperations' ``name`` into the parent to list: None for all operations.

    ``""`` lists every operation; ``"operations"`` the top-level ones; ``"projects/p"`` and
    ``"projects/p/operations"`` the operations under ``projects/p``.
    """
    if name == "":
        return None
    if name == "operations":
        return ""
    parent = name.removesuffix("/operations")
    if not parent:
        raise InvalidArgument(f"{name!r} is not a parent to list: use '' or 'operations'")
    return check_parent(parent)


def check_request_id(request_id: str | None) -> str | None:
    """Return *request_id* if it is a well-formed AIP-155 request id; None for none.

    AIP-155 asks for a UUID; lro_async accepts 1-64 ASCII letters, digits, ``-`` and ``_``
    (a UUID with or without dashes, a ULID, a base64url token), compared exactly (case
    included). None and ``""`` mean no request id.

    :raises InvalidArgument: if it is not a string, too long, or has another character.
    """
    if request_id is None or request_id == "":
        return None
    if not isinstance(request_id, str):
        raise InvalidArgument(f"a request id must be a string, not {type(request_id).__name__}")
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise InvalidArgument(
            f"the request id is {len(request_id)} characters long; "
            f"the limit is {MAX_REQUEST_ID_LENGTH}"
        )
    if not _REQUEST_ID.fullmatch(request_id):
        raise InvalidArgument(
            f"{request_id!r} is not a request id: use a UUID "
            "(1-64 of the letters A-Z and a-z, digits, '-' and '_')"
        )
    return request_id


def parent_of(name: str) -> str:
    """Return the parent of ``{parent}/operations/{id}``, or ``""`` for ``operations/{id}``."""
    head, sep, _ = name.rpartition(_OPERATIONS)
    return head if sep else ""
