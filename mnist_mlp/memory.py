"""How much memory this process may still take, to refuse work that would not fit."""

from __future__ import annotations

import os


def available_memory() -> int:
    """Bytes this process may still allocate: MemAvailable, or what the address-space limit
    leaves beside the address space already in use, whichever is less."""
    import resource

    limit = _proc_bytes("/proc/meminfo", "MemAvailable")
    if limit is None:
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limit = min(limit, max(soft - address_space_in_use(), 0))
    return int(limit)


def address_space_in_use() -> int:
    """Bytes of address space this process has mapped (VmSize), what RLIMIT_AS counts;
    0 where /proc does not say."""
    return _proc_bytes("/proc/self/status", "VmSize") or 0


def _proc_bytes(path: str, key: str) -> int | None:
    """The ``key:  N kB`` line of a /proc file, in bytes; None when it cannot be read."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def show_size(n: int) -> str:
    """``n`` bytes for a message: "1.5 GiB", "300 MiB"."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
