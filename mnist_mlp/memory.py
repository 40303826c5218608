"""How much memory this process may still take, to refuse work that would not fit."""

from __future__ import annotations

import math
import os


def available_memory() -> int:
    """Bytes this process may still allocate: MemAvailable, or what the address-space limit
    leaves beside the address space already in use, whichever is less."""
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
        limit = min(limit, max(soft - address_space_in_use(), 0))
    return int(limit)


def address_space_in_use() -> int:
    """Bytes of address space this process has mapped (VmSize), what RLIMIT_AS counts;
    0 where /proc does not say."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def show_size(n: int) -> str:
    """``n`` bytes for a message: "1.5 GiB", "300 MiB"."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
