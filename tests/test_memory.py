"""How much memory the process may still take: MemAvailable, or its address-space limit."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from mnist_mlp.memory import available_memory, show_size


def _meminfo(key: str) -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))


def test_available_memory_is_what_the_machine_has_left():
    have = available_memory()
    assert 0 < have <= _meminfo("MemTotal")
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        assert abs(have - _meminfo("MemAvailable")) < _meminfo("MemTotal") // 10


def test_an_address_space_limit_is_honoured():
    limit = 1 << 30
    if _meminfo("MemAvailable") < 2 * limit:
        pytest.skip("too little memory available to tell a 1 GiB limit apart")
    code = ("import resource; from mnist_mlp.memory import available_memory, "
            "address_space_in_use; "
            f"resource.setrlimit(resource.RLIMIT_AS, ({limit}, resource.RLIM_INFINITY)); "
            "print(available_memory(), address_space_in_use())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    have, in_use = map(int, proc.stdout.split())
    assert in_use > 1 << 20                       # an interpreter maps megabytes
    assert abs(have - (limit - in_use)) < 1 << 20  # what the limit leaves beside them


def test_sizes_are_shown_in_mib_or_gib():
    assert show_size(300 * 2**20) == "300 MiB"
    assert show_size(2**30 - 1) == "1024 MiB"
    assert show_size(2**30) == "1.0 GiB"
    assert show_size(3 * 2**29) == "1.5 GiB"
