"""What this process (or another, by pid) spends: CPU seconds and resident memory."""

from __future__ import annotations

import os
import resource

__all__ = ["cpu_seconds", "rss_bytes"]

_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process so far, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of a process now, in bytes (Linux ``/proc``)."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE
