"""``python -m lro_async``: the lro-async command."""

from __future__ import annotations

from .cli import main

main()
