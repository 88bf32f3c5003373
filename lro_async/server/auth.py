"""Authorization: who may get, list, wait on, cancel and delete which operations.

An authorizer is any callable (sync or async) given an :class:`Access` and returning
whether to allow it. The servicer (and the HTTP app) ask it before they look anything
up, so a forbidden operation and a missing one look the same to the caller: both are
PERMISSION_DENIED.

>>> policy = TenantPolicy(header="x-tenant")          # tenant "acme" sees tenants/acme/...
>>> caller = Caller(metadata={"x-tenant": "acme"}, peer="ipv4:127.0.0.1:5000")
>>> policy(Access("GetOperation", "tenants/acme/operations/42", caller))
True
>>> policy(Access("GetOperation", "tenants/other/operations/42", caller))
False
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

import grpc

__all__ = ["Access", "Authorizer", "Caller", "TenantPolicy", "caller_of", "is_allowed"]

Rpc = Literal[
    "GetOperation", "ListOperations", "WaitOperation", "CancelOperation", "DeleteOperation"
]

_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,127}")


@dataclasses.dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, as the transport saw it.

    :param metadata: request metadata (gRPC) or headers (HTTP); keys lowercase, text values.
    :param peer: the peer address, e.g. ``ipv4:127.0.0.1:53122``.
    :param auth_context: gRPC's auth context (with TLS client certificates:
        ``x509_common_name`` and friends); empty over HTTP or without TLS.
    :param transport: ``"grpc"`` or ``"http"``.
    """

    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    peer: str = ""
    auth_context: Mapping[str, Sequence[bytes]] = dataclasses.field(default_factory=dict)
    transport: Literal["grpc", "http"] = "grpc"


@dataclasses.dataclass(frozen=True, slots=True)
class Access:
    """One request to authorize.

    :param rpc: the Operations method.
    :param resource: the operation's name; for ListOperations the parent listed
        (``""`` when the caller lists every operation).
    :param caller: who asks.
    """

    rpc: Rpc
    resource: str
    caller: Caller


Authorizer = Callable[[Access], bool | Awaitable[bool]]
"""Returns (or resolves to) True to allow the access."""


async def is_allowed(authorizer: Authorizer, access: Access) -> bool:
    """Ask *authorizer*, awaiting it if it is async."""
    verdict = authorizer(access)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    return verdict is True


def caller_of(context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
    """The :class:`Caller` of a grpc.aio call."""
    metadata = {
        key.lower(): value
        for key, value in (context.invocation_metadata() or ())
        if isinstance(value, str)
    }
    auth = {key: tuple(values) for key, values in (context.auth_context() or {}).items()}
    return Caller(metadata=metadata, peer=context.peer() or "", auth_context=auth)


class TenantPolicy:
    """A ready-made policy: each caller sees only operations under its tenant's prefix.

    The tenant comes from a request header (``x-tenant`` by default) or from a function
    of the caller (e.g. a verified token's subject, or a TLS certificate's common name).
    A caller may touch ``{prefix}/...`` only: Get/Wait/Cancel/Delete of operations under
    it, and ListOperations of parents under it. Listing every operation is refused.

    :param tenant_of: returns the caller's tenant, or None to refuse it; default: the
        *header* value. Tenants are 1-128 characters of letters, digits and ``._~-``.
    :param header: the header the default *tenant_of* reads.
    :param prefix: the resource prefix of a tenant, with ``{tenant}`` in it.
    """

    def __init__(
        self,
        tenant_of: Callable[[Caller], str | None] | None = None,
        *,
        header: str = "x-tenant",
        prefix: str = "tenants/{tenant}",
    ) -> None:
        if "{tenant}" not in prefix:
            raise ValueError(f"prefix must contain '{{tenant}}', not {prefix!r}")
        self._header = header.lower()
        self._tenant_of = tenant_of or self._from_header
        self.prefix = prefix

    def _from_header(self, caller: Caller) -> str | None:
        return caller.metadata.get(self._header)

    def root(self, caller: Caller) -> str | None:
        """The prefix *caller* may use, or None if it has no valid tenant."""
        tenant = self._tenant_of(caller)
        if tenant is None or not _TENANT.fullmatch(tenant):
            return None
        return self.prefix.format(tenant=tenant)

    def __call__(self, access: Access) -> bool:
        root = self.root(access.caller)
        if root is None:
            return False
        return access.resource == root or access.resource.startswith(root + "/")
