"""The benchmark scripts run against this version of the package: a smoke run of bench.py on
real MNIST, and the others' command lines (their full runs take minutes)."""

from __future__ import annotations

import json
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
    assert "| network.backward |" in done.stdout and "| optimiser step |" in done.stdout
    assert "| augment elastic |" in done.stdout and "| augment none |" in done.stdout
    assert "float32 GEMM 2048³" in done.stdout and "Machine:" in done.stdout


@pytest.mark.parametrize("script", ["users.py", "selection.py", "committee.py"])
def test_the_other_scripts_start(script):
    done = _run(script, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:") and "--data-dir" in done.stdout


@pytest.mark.parametrize("script, args", [
    ("bench.py", ["--only", "profile"]),
    ("selection.py", []),
    ("users.py", ["--model", "missing.npz"]),
    ("committee.py", ["--model", "missing.npz", "--model", "other.npz"]),
])
def test_a_missing_file_is_one_line(tmp_path, script, args):
    done = _run(script, "--data-dir", str(tmp_path / "nowhere"), *args)
    assert done.returncode == 1
    assert done.stderr.startswith(f"{script}: ") and done.stderr.count("\n") == 1, done.stderr


def test_committee_agrees_with_mlp_eval_on_the_committee_and_its_members(real_mnist,
                                                                         real_model, tmp_path):
    from mnist_mlp import checkpoint, metrics, run
    from mnist_mlp.dataset import DataSource, to_input

    source = DataSource(real_mnist, mirrors=())
    other = tmp_path / "quick-seed1.npz"
    spec = run.build_spec(other, "quick", {"seed": 1}, data=source)
    run.train(spec, run.Hooks(progress=False, plots=False))
    done = _run("committee.py", "--model", str(real_model), "--model", str(other),
                "--data-dir", str(real_mnist), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)

    pixels, y = source.load("test", flat=False)
    both = checkpoint.load_committee([real_model, other])
    scored = metrics.evaluate(both.net, to_input(pixels, both.input_scale), y)
    assert report["committees"] == [{"members": [real_model.name, other.name],
                                     "accuracy": scored["accuracy"]}]
    assert [m["accuracy"] for m in report["members"]] == list(scored["members"].values())
    errors = [m["errors"] for m in report["members"]]
    assert [round(len(y) * (1 - m["accuracy"])) for m in report["members"]] == errors
    (pair,) = report["shared_errors"]
    assert report["missed_by_all"] == pair["errors"] <= min(errors)
    assert report["missed_by_any"] == sum(errors) - pair["errors"]
