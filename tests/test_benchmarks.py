"""The benchmark scripts run against this version of the package: a smoke run of bench.py on
real MNIST, and the others' command lines (their full runs take minutes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
ONE_THREAD = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *args], env=ONE_THREAD,
                          capture_output=True, text=True, timeout=300)


def test_bench_profiles_a_few_steps_of_real_mnist(real_mnist):
    done = _run("bench.py", "--data-dir", str(real_mnist), "--images", "640", "--reps", "1",
                "--only", "profile", "--only", "best", "--model", "784-128-10",
                "--profile-steps", "3", "--best-steps", "2")
    assert done.returncode == 0, done.stderr
    assert "| phase of a step, 784-128-10" in done.stdout
    assert "| optimiser update |" in done.stdout
    assert "| augment elastic |" in done.stdout and "| augment none |" in done.stdout
    assert "float32 GEMM 2048³" in done.stdout and "Machine:" in done.stdout


@pytest.mark.parametrize("script", ["users.py", "selection.py"])
def test_the_other_scripts_start(script):
    done = _run(script, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:") and "--data-dir" in done.stdout


@pytest.mark.parametrize("script, args", [
    ("bench.py", ["--only", "profile"]),
    ("selection.py", []),
    ("users.py", ["--model", "missing.npz"]),
])
def test_a_missing_file_is_one_line(tmp_path, script, args):
    done = _run(script, "--data-dir", str(tmp_path / "nowhere"), *args)
    assert done.returncode == 1
    assert done.stderr.startswith(f"{script}: ") and done.stderr.count("\n") == 1, done.stderr
