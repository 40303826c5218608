"""BLAS threads: a limit that holds inside its block and is undone after; the cores shared
among the live workers counted by their lock files; a dead worker's file not counted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from threadpoolctl import threadpool_info, threadpool_limits

from mnist_mlp.threads import cores, default_threads, limit_threads, live_workers, registered_worker

ROOT = Path(__file__).resolve().parents[1]


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_limit_holds_inside_and_is_undone_after():
    with threadpool_limits(2, user_api="blas"):
        assert set(_blas_threads()) == {2}
        with limit_threads(1):
            assert set(_blas_threads()) == {1}
        assert set(_blas_threads()) == {2}


def test_each_worker_gets_its_share_of_the_cores():
    n = cores()
    assert n == len(os.sched_getaffinity(0))
    assert default_threads() == n
    assert default_threads(2) == max(1, n // 2)
    assert default_threads(n + 1) == 1
    assert default_threads(0) == n


def test_live_workers_are_counted_while_they_live(tmp_path):
    folder = tmp_path / "workers"
    with registered_worker(folder):
        assert live_workers(folder) == 1
        with registered_worker(folder):
            assert live_workers(folder) == 2
        assert live_workers(folder) == 1
    assert live_workers(folder) == 0
    assert list(folder.iterdir()) == []


def test_a_killed_workers_file_is_not_counted_and_is_removed(tmp_path):
    folder = tmp_path / "workers"
    code = ("import sys, time; from pathlib import Path; "
            "from mnist_mlp.threads import registered_worker\n"
            "with registered_worker(Path(sys.argv[1])):\n"
            "    print('in', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True)
    try:
        assert proc.stdout.readline() == "in\n"
        with registered_worker(folder):
            assert live_workers(folder) == 2
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            time.sleep(0.1)
            assert live_workers(folder) == 1
            assert len(list(folder.glob("*.lock"))) == 1   # the dead one's file is gone
    finally:
        proc.kill()
        proc.wait()
