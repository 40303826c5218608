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


def test_teach_exports_other_writers_scans_as_labelled_folders(tmp_path):
    from mnist_mlp.labelled import read_labelled
    from mnist_mlp.mnist import MNIST

    done = _run("teach.py", "export", str(tmp_path), "--per-digit", "2")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"corrections": 20, "validation": 300, "held-out": 1477}
    corrections = read_labelled(tmp_path / "corrections", MNIST)
    assert corrections.labels.tolist() == [d for d in range(10) for _ in range(2)]
    assert corrections.skipped == () and corrections.pixels.shape == (20, 28, 28)
    again = _run("teach.py", "export", str(tmp_path / "again"), "--per-digit", "2")
    assert again.returncode == 0
    assert read_labelled(tmp_path / "again" / "corrections", MNIST).sha256 == corrections.sha256
    done = _run("teach.py", "measure", "--model", str(tmp_path / "missing.npz"), "--work",
                str(tmp_path / "work"), "--per-digit", "1")
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("teach.py: mlp eval: ") and "missing.npz" in done.stderr


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
