"""lro_async's own protocol: the OperationsWatch extension (watch.proto and its generated code)."""

from __future__ import annotations
