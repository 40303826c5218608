"""The `mlp` group and its entry point: commands, version, help, shell completion, and an
output that cannot be written as one line."""

from __future__ import annotations

import os
import subprocess
import sys

from ..digit_images import write_bad_images
from .runner import mlp, toy_model


def test_the_group_lists_its_commands():
    result = mlp("--help")
    for command in ("download", "train", "eval", "predict", "plot", "serve", "export"):
        assert f"  {command} " in result.stdout
    assert mlp("-h").stdout == result.stdout
    assert mlp("--version").stdout.startswith("mlp, version ")


def test_shell_completion_offers_commands_and_choices():
    env = {**os.environ, "_MLP_COMPLETE": "bash_complete",
           "COMP_WORDS": "mlp train --optimizer ", "COMP_CWORD": "3"}
    proc = subprocess.run([sys.executable, "-m", "mnist_mlp"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.stdout.split() == ["plain,sgd", "plain,nesterov", "plain,adam", "plain,adamw"]
    env.update(COMP_WORDS="mlp se", COMP_CWORD="1")
    proc = subprocess.run([sys.executable, "-m", "mnist_mlp"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.stdout.split() == ["plain,serve"]
    env["_MLP_COMPLETE"] = "zsh_source"
    proc = subprocess.run([sys.executable, "-m", "mnist_mlp"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert "#compdef mlp" in proc.stdout


def test_output_streams_that_fail(tmp_path):
    model = toy_model(tmp_path)
    good, _ = write_bad_images(tmp_path)
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "mnist_mlp", "predict", "--model",
                               str(model), str(good)], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr == "Error: cannot write the output: No space left on device\n"
    proc = subprocess.Popen([sys.executable, "-m", "mnist_mlp", "predict", "--model",
                             str(model), *[str(good)] * 50], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()                        # a reader that went away (`| head -0`)
    err = proc.stderr.read()
    assert proc.wait(timeout=60) != 0
    assert "Traceback" not in err and "Exception ignored" not in err
