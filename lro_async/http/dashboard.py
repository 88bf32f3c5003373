"""The dashboard: a page over the HTTP/JSON API, served by :class:`~lro_async.http.OperationsApp`.

``asgi_app(manager, dashboard=True)`` serves, besides the API:

=================================  ===========================================================
``GET /``                          the page (``index.html``)
``GET /dashboard/app.js``,         its script and style: static files shipped in the package
``GET /dashboard/style.css``       (``lro_async/http/static/``; no CDN, no build step)
``GET /dashboard/api/operations``  the list the page shows, newest first (below)
=================================  ===========================================================

The page follows the collection watch (``GET {parent}/operations:watch``, Server-Sent
Events) where the app serves it, reloading its view on each event, and polls this list every
second where it does not. It reads details with GetOperation and acts with CancelOperation
and DeleteOperation on the API itself, so every action goes through the app's authorizer; a
refusal shows the server's message.

``/dashboard/api/operations`` exists because ListOperations lists oldest first and the page
wants the newest: it takes ``parent`` (ListOperations' ``name``: ``""`` or ``-`` for every
operation, ``operations`` for the top-level ones, ``projects/p`` ...), ``filter`` (AIP-160,
as ListOperations), ``pageSize`` (1-1000, default 50) and ``page`` (an offset from the
newest). It is authorized as ListOperations on the same resource, reads up to
:data:`SCAN_LIMIT` matching operations through the manager's ListOperations, and answers
``{"operations": [{"operation": <proto3 JSON>, "progress": 0.42 | null}, ...], "matched": N,
"truncated": bool, "nextPage": "50" | ""}``; ``progress`` is
:func:`lro_async.progress_fraction` of the metadata, so the page does not reimplement it.
Past :data:`SCAN_LIMIT` matches (``truncated``) the page says so: narrow the filter (for
example ``create_time > "2026-01-01T00:00:00Z"``) to see the newest.
"""

from __future__ import annotations

import html
from importlib import resources
from typing import TYPE_CHECKING

from google.longrunning import operations_pb2

from ..errors import InvalidArgument
from ..names import list_parent
from ..progress import progress_fraction
from ..server.rules import check_access, listed
from ..wire import JSON_CONTENT_TYPE, Json, dumps, operation_to_json
from .answers import error_response, send_body
from .parsing import Scope, Send, caller_of_scope, query_of

if TYPE_CHECKING:
    from .app import OperationsApp

__all__ = ["SCAN_LIMIT", "Dashboard"]

SCAN_LIMIT = 10_000
"""The most matching operations the dashboard's list reads per request."""

_FILES = {
    "/dashboard/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/dashboard/style.css": ("style.css", "text/css; charset=utf-8"),
}
_API = "/dashboard/api/operations"
_MAX_PAGE = 1000


class Dashboard:
    """The page's routes for *app*: :meth:`handle` answers them and ignores the rest."""

    def __init__(self, app: OperationsApp) -> None:
        self.app = app
        folder = resources.files(__package__ or "lro_async.http") / "static"
        page = (folder / "index.html").read_text(encoding="utf-8")
        # The API's prefix, relative to the page, so that a root_path mount works too.
        prefix = html.escape(app.prefix.lstrip("/"), quote=True)
        self._files: dict[str, tuple[bytes, str]] = {
            "/": (page.replace("{{API_PREFIX}}", prefix).encode(), "text/html; charset=utf-8")
        }
        for path, (file, kind) in _FILES.items():
            self._files[path] = ((folder / file).read_bytes(), kind)

    async def handle(self, scope: Scope, send: Send) -> bool:
        """Answer *scope* if it is one of the dashboard's ``GET`` routes; else return False."""
        if scope["method"] not in ("GET", "HEAD"):
            return False
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        if path == "/index.html":
            path = "/"
        if path == _API:
            try:
                status, payload = 200, await self._list(scope)
            except Exception as exc:
                status, payload = error_response(exc, "a dashboard read", "")
            await _send(send, status, dumps(payload), JSON_CONTENT_TYPE, scope)
            return True
        found = self._files.get(path)
        if found is None:
            return False
        await _send(send, 200, found[0], found[1], scope)
        return True

    async def _list(self, scope: Scope) -> Json:
        query = dict(query_of(scope))
        unknown = sorted(set(query) - {"parent", "filter", "pageSize", "page"})
        if unknown:
            raise InvalidArgument(f"unknown query parameter {unknown[0][:40]!r}")
        name = query.get("parent", "").strip()
        parent = list_parent("" if name == "-" else name)
        size = _integer(query.get("pageSize", ""), "pageSize", 50)
        offset = _integer(query.get("page", ""), "page", 0)
        if not 1 <= size <= _MAX_PAGE:
            raise InvalidArgument(f"pageSize must be 1-{_MAX_PAGE}, not {size}")
        caller = caller_of_scope(scope)
        await check_access(self.app.authorize, "ListOperations", listed(parent), lambda: caller)
        filter_text = query.get("filter", "")
        matched: list[operations_pb2.Operation] = []
        token, truncated = "", False
        while True:
            operations, token = await self.app.manager.list(
                parent, filter=filter_text, page_size=_MAX_PAGE, page_token=token
            )
            matched.extend(operations)
            if not token:
                break
            if len(matched) >= SCAN_LIMIT:
                truncated = True
                break
        matched.reverse()
        page = matched[offset : offset + size]
        return {
            "operations": [
                {"operation": operation_to_json(op), "progress": _progress(op.metadata)}
                for op in page
            ],
            "matched": len(matched),
            "truncated": truncated,
            "nextPage": str(offset + size) if offset + size < len(matched) else "",
        }


def _progress(metadata: object) -> float | None:
    try:
        return progress_fraction(metadata)
    except Exception:  # a metadata type progress_fraction cannot read: no bar, not a 500
        return None


def _integer(text: str, what: str, default: int) -> int:
    if text == "":
        return default
    if not text.isdigit() or len(text) > 9:
        raise InvalidArgument(f"{what} must be a non-negative integer, not {text[:20]!r}")
    return int(text)


async def _send(send: Send, status: int, body: bytes, kind: str, scope: Scope) -> None:
    await send_body(send, status, body, kind, _NOSNIFF, head=scope["method"] == "HEAD")


_NOSNIFF = ((b"x-content-type-options", b"nosniff"),)
