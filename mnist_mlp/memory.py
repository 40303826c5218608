"""How much memory this process may still take, to refuse work that would not fit."""

from __future__ import annotations

import math
import os


def available_memory() -> int:
    """Bytes this process may still allocate: MemAvailable, or the address-space limit."""
    import resource

    limit = math.inf
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    limit = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limit = min(limit, soft)
    return int(limit)


def show_size(n: int) -> str:
    """``n`` bytes for a message: "1.5 GiB", "300 MiB"."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
