"""Resume tokens: an operation's name and its type names in one URL-safe string.

A token is ``lro1.<base64url of compact JSON>.<base64url of an 8-byte BLAKE2b digest>``;
the JSON is ``{"v": 1, "n": name, "r": result type, "rk": kind, "m": metadata type,
"mk": kind}`` where a kind is ``"pb"`` (protobuf) or ``"pp"`` (proto-plus) and absent
types are left out. It is never pickle: decoding runs no code and only looks types up
among those this process has imported. The digest catches a truncated or edited token;
it is not a signature (anyone can make a token, and the server decides who may read
an operation).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from ..protobuf import MessageKind, check_message_type, find_message_type, full_name_of

__all__ = ["decode_token", "encode_token"]

_PREFIX = "lro1."
_VERSION = 1
_KEYS = frozenset({"v", "n", "r", "rk", "m", "mk"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _digest(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=8, person=b"lro_async").digest()


def encode_token(name: str, result_type: type[Any] | None, metadata_type: type[Any] | None) -> str:
    """The token of operation *name* with these types (None: kept as a packed ``Any``)."""
    fields: dict[str, object] = {"v": _VERSION, "n": name}
    for key, message_type in (("r", result_type), ("m", metadata_type)):
        if message_type is not None:
            fields[key] = full_name_of(message_type)
            fields[key + "k"] = check_message_type(message_type, what="message type")
    body = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
    return f"{_PREFIX}{_b64(body)}.{_b64(_digest(body))}"


def decode_token(token: str) -> tuple[str, type[Any] | None, type[Any] | None]:
    """Return the name, result type and metadata type a token carries.

    :raises ValueError: saying what is wrong: not a token, a truncated or edited one, an
        unknown version, or a type this process does not know (import its module first).
    """
    if not isinstance(token, str) or not token.startswith(_PREFIX):
        raise ValueError("not an lro_async operation token (it should start with 'lro1.')")
    body_text, dot, digest_text = token[len(_PREFIX) :].partition(".")
    try:
        body = _unb64(body_text)
        digest = _unb64(digest_text)
    except (binascii.Error, ValueError):
        raise ValueError(
            "the operation token is not valid base64url (truncated or altered)"
        ) from None
    if not dot or len(digest) != 8 or digest != _digest(body):
        raise ValueError("the operation token is truncated or altered (checksum mismatch)")
    try:
        fields = json.loads(body)
    except ValueError:  # pragma: no cover - the digest matched what encode_token wrote
        raise ValueError("the operation token does not hold JSON") from None
    if not isinstance(fields, dict):
        raise ValueError("the operation token does not hold a JSON object")
    if fields.get("v") != _VERSION:
        raise ValueError(
            f"the operation token has version {fields.get('v')!r}; this lro_async reads "
            f"version {_VERSION}"
        )
    unknown = set(fields) - _KEYS
    if unknown:
        raise ValueError(f"the operation token has unknown fields: {sorted(unknown)}")
    name = fields.get("n")
    if not isinstance(name, str) or not name:
        raise ValueError("the operation token has no operation name")
    return name, _type_of(fields, "r", "result"), _type_of(fields, "m", "metadata")


def _type_of(fields: dict[str, Any], key: str, what: str) -> type[Any] | None:
    full_name, kind = fields.get(key), fields.get(key + "k")
    if full_name is None and kind is None:
        return None
    if not isinstance(full_name, str) or kind not in ("pb", "pp"):
        raise ValueError(f"the operation token's {what} type is malformed")
    checked: MessageKind = kind
    try:
        return find_message_type(full_name, checked)
    except KeyError:
        flavour = "proto-plus" if checked == "pp" else "protobuf"
        raise ValueError(
            f"the operation token's {what} type {full_name!r} ({flavour}) is unknown to this "
            "process: import the module that defines it before resuming"
        ) from None
