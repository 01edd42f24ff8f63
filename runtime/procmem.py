"""This process's memory as Linux reports it (``/proc/self/status``), with a portable fallback."""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def status_kib(key: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmHWM``: peak resident set, ``VmRSS``: current), in KiB;
    ``None`` where there is no such file (not Linux) or field."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB: ``VmHWM`` on Linux (reset by exec, unlike ``ru_maxrss``,
    which keeps the spawning parent's size, and by ``/proc/self/clear_refs``), else ``ru_maxrss``."""
    peak = status_kib("VmHWM")
    if peak is not None:
        return peak / 1024
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
