"""Where operations live: the OperationStore extension point and the stores lro_async ships."""

from __future__ import annotations

from .base import OperationRecord as OperationRecord
from .base import OperationStore as OperationStore
from .base import PageKey as PageKey
from .base import Written as Written
from .memory import MemoryStore as MemoryStore

__all__ = ["MemoryStore", "OperationRecord", "OperationStore", "PageKey", "Written"]
