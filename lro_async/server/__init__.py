"""Everything that serves operations: the manager, its context, the servicer, the hub."""

from __future__ import annotations
