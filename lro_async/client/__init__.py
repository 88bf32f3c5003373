"""The client half: waiting on long-running operations (see ``lro_async`` for the API)."""

from __future__ import annotations
