"""BLAS threads: a process's share of the cores, so local workers never oversubscribe them.

Two ``mlp train`` at once on 2 cores with 2 BLAS threads each run 4.3x slower each;
with 1 thread each they train nearly twice as many images a second as one run alone.
So each local worker of a sweep training a trial limits its BLAS to
``cores // local workers training``.

Those workers are counted by lock files: each holds an ``flock`` on its own file in a
folder while registered (the kernel drops it however the process ends); a file
nobody holds is a dead worker's and is removed when counted.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .files import LockHeld, exclusive_lock


def cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads(workers: int = 1) -> int:
    """BLAS threads for one of ``workers`` processes sharing this machine: its share, at least 1."""
    return max(1, cores() // max(1, workers))


@contextmanager
def limit_threads(n: int) -> Iterator[None]:
    """Run the block with at most ``n`` BLAS threads (OpenBLAS, MKL, BLIS), restored after
    (``set_threads`` inside the block changes the limit until then)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n, user_api="blas"):
        yield


def set_threads(n: int) -> None:
    """At most ``n`` BLAS threads from now on (inside ``limit_threads``: until its end)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n, user_api="blas")


@contextmanager
def registered_worker(folder: Path) -> Iterator[None]:
    """Count this process among ``folder``'s live workers while the block runs.

    Raises:
        OSError: the folder cannot be created or written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"  # never reused, unlike a pid
    new, path = folder / f"{name}.new", folder / f"{name}.lock"
    try:
        with exclusive_lock(new):
            os.rename(new, path)  # counted only once locked
            yield
    finally:
        path.unlink(missing_ok=True)
        new.unlink(missing_ok=True)


def live_workers(folder: Path) -> int:
    """How many processes hold a worker lock in ``folder``; dead workers' files are removed."""
    live = 0
    for path in folder.glob("*.lock"):
        try:
            with exclusive_lock(path):
                path.unlink(missing_ok=True)  # nobody held it: its worker is gone
        except LockHeld:
            live += 1
        except OSError:  # vanished meanwhile, or not ours to judge
            pass
    return live
