"""ListOperations page tokens: opaque, tamper-evident, bound to the request's parent and filter."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from typing import TYPE_CHECKING, Final

from ..errors import InvalidArgument

if TYPE_CHECKING:
    from ..stores.base import PageKey

__all__ = ["PageTokens"]

_TOKEN_VERSION: Final = 1
_TOKEN_HEAD: Final = struct.Struct(">Bq")  # version, create_time
_MAC_SIZE: Final = 16  # truncated HMAC-SHA256: 128 bits
_MAX_TOKEN_BYTES: Final = 1024
_MAX_TOKEN_CHARS: Final = -(-_MAX_TOKEN_BYTES * 4 // 3)
_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
_MAC_DOMAIN: Final = b"lro_async ListOperations page_token\x00"
_BAD_TOKEN: Final = "page_token is invalid or does not match this request's parent and filter"


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _framed(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


class PageTokens:
    """Opaque, tamper-evident ``ListOperations`` page tokens.

    A token is URL-safe base64 (unpadded) of ``version | create_time | name`` followed by
    a 128-bit truncated HMAC-SHA256 over that payload, the parent and the filter text, so a
    token only works for the request it continues. Replicas that serve the same listings
    must share the key. An empty ``page_token`` means the first page: do not decode it.

    >>> tokens = PageTokens(b"0123456789abcdef")
    >>> token = tokens.encode((1, "operations/a"), parent=None, filter_text="done = true")
    >>> tokens.decode(token, parent=None, filter_text="done = true")
    (1, 'operations/a')

    :param key: the HMAC key, at least 16 bytes (32 random bytes recommended).
    :raises ValueError: if the key is shorter than 16 bytes.
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a page token key must be at least 16 bytes long")
        self._key = bytes(key)

    def _mac(self, payload: bytes, parent: str | None, filter_text: str) -> bytes:
        # Length framing keeps fields apart; the leading byte tells None ("all") from "".
        bound = b"\x00" if parent is None else b"\x01" + _framed(_utf8(parent))
        message = _MAC_DOMAIN + _framed(payload) + bound + _framed(_utf8(filter_text))
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_SIZE]

    def encode(self, after: PageKey, *, parent: str | None, filter_text: str) -> str:
        """Return the token for the page that starts after *after*.

        :param after: the page key ``(create_time, name)`` of the page's last operation.
        :param parent: the request's parent (None: all parents; ``""``: top-level ones).
        :param filter_text: the request's filter, exactly as received.
        :raises ValueError: if the token would exceed 1 KiB (a name of about 1000 bytes).
        """
        create_time, name = after
        payload = _TOKEN_HEAD.pack(_TOKEN_VERSION, create_time) + _utf8(name)
        raw = payload + self._mac(payload, parent, filter_text)
        if len(raw) > _MAX_TOKEN_BYTES:
            raise ValueError(f"operation name too long for a page token: {name[:64]!r}...")
        return _b64(raw)

    def decode(self, token: str, *, parent: str | None, filter_text: str) -> PageKey:
        """Return the page key in *token*, checking it was issued for this parent and filter.

        :raises InvalidArgument: if the token is malformed, altered, truncated, issued with
            another key, or issued for another parent or filter.
        """
        after = self._open(token, parent, filter_text)
        if after is None:
            raise InvalidArgument(_BAD_TOKEN)
        return after

    def _open(self, token: str, parent: str | None, filter_text: str) -> PageKey | None:
        if len(token) > _MAX_TOKEN_CHARS or not _TOKEN_RE.fullmatch(token):
            return None  # checked before any work: at most 1 KiB is ever decoded
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            payload, mac = raw[:-_MAC_SIZE], raw[-_MAC_SIZE:]
            version, create_time = _TOKEN_HEAD.unpack_from(payload)
            name = payload[_TOKEN_HEAD.size :].decode("utf-8", "surrogatepass")
        except (binascii.Error, struct.error, UnicodeDecodeError):
            return None
        authentic = hmac.compare_digest(mac, self._mac(payload, parent, filter_text))
        # Only the canonical spelling is accepted (no variants in unused trailing bits).
        if authentic and version == _TOKEN_VERSION and _b64(raw) == token:
            return (create_time, name)
        return None
