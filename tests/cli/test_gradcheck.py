"""`mlp gradcheck`: the default network and a trained checkpoint pass on real digits, random
inputs without MNIST, the report of a failing engine, one line for each bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mnist_mlp import checkpoint
from mnist_mlp.cli.gradcheck import _as_json, format_report
from mnist_mlp.gradcheck import RANDOM, THRESHOLD, TOP, check_gradients
from mnist_mlp.network import MLP

from ..test_gradcheck import NoReluDerivative
from .runner import mlp, one_line


def test_the_default_network_passes_on_real_digits(real_mnist):
    out = mlp("gradcheck", "--data-dir", real_mnist).stdout
    assert out.startswith("gradcheck of 784-800-10 (fresh, seed 0, on 8 MNIST test digits)")
    rows = [line.split()[0] for line in out.splitlines() if line[:2] in ("W[", "b[")]
    assert rows == ["W[1]", "b[1]", "W[0]", "b[0]"]
    assert "dL/dW = dL/dz · xᵀ,  dL/dz = a - y   (batched: dW = dZᵀ A" in out
    assert "⊙ ReLU'(z)" in out and "dL/dx" not in out
    assert out.splitlines()[-1].startswith("passed: every gradient matches")


def test_a_trained_checkpoint_passes_with_its_input_gradient(real_model, real_mnist):
    result = json.loads(mlp("gradcheck", "--model", real_model, "--data-dir", real_mnist,
                            "--explain", "--samples", 5, "--seed", 3, "--json").stdout)
    assert result["passed"] and result["inputs"] == "mnist-test" and result["samples"] == 5
    assert result["sizes"] == [784, 128, 10] and result["model"] == str(real_model)
    assert [c["name"] for c in result["checks"]] == ["W[1]", "b[1]", "W[0]", "b[0]", "x"]
    x = result["checks"][-1]
    assert x["shape"] == [5, 784] and x["checked"] + x["skipped"] == TOP + RANDOM
    assert all(c["error"] < c["threshold"] == 1e-6 for c in result["checks"])
    assert result["loss"] < 0.5


def test_a_fashion_model_is_checked_on_its_own_test_garments(real_fashion, real_mnist,
                                                             tmp_path):
    model = tmp_path / "f.npz"
    checkpoint.save(model, MLP([784, 16, 10], seed=2), {"dataset": "fashion-mnist"})
    out = mlp("gradcheck", "--model", model, "--data-dir", real_fashion, "--samples", 4).stdout
    assert f"({model}, on 4 Fashion-MNIST test garments)" in out.splitlines()[0]
    result = json.loads(mlp("gradcheck", "--hidden", "16", "--dataset", "fashion-mnist",
                            "--data-dir", real_fashion, "--samples", 4, "--json").stdout)
    assert result["passed"] and result["inputs"] == "fashion-mnist-test"
    one_line(mlp("gradcheck", "--model", model, "--data-dir", real_mnist, expect=1),
             "MNIST's file, not Fashion-MNIST's")
    one_line(mlp("gradcheck", "--model", model, "--dataset", "mnist", expect=1),
             "trained on Fashion-MNIST, it cannot be scored on MNIST")


def test_without_mnist_it_checks_random_inputs_and_says_so(tmp_path):
    result = mlp("gradcheck", "--data-dir", tmp_path / "none", "--hidden", "32,16",
                 "--samples", 3, "--json")
    assert result.stderr.startswith(f"no MNIST test files in {tmp_path / 'none'}: checking on "
                                    "3 random inputs")
    checks = json.loads(result.stdout)
    assert checks["passed"] and checks["inputs"] == "random" and checks["sizes"] == [
        784, 32, 16, 10]


def test_arrays_with_every_coordinate_at_a_kink_are_not_checked_not_wrong(tmp_path):
    result = mlp("gradcheck", "--hidden", ",".join(["1"] * 30), "--data-dir", tmp_path / "none",
                 expect=1)
    verdict = result.stdout.splitlines()[-1]
    assert verdict.startswith("FAILED: b[29], b[28]") and "disagree" not in verdict
    assert verdict.endswith("not checked: every coordinate tried was at a ReLU kink (try "
                            "--seed or --samples)")
    rows = [line for line in result.stdout.splitlines() if line.startswith("b[29]")]
    assert rows[0].split()[2] == "0" and rows[0].endswith("UNCHECKED")


def test_a_failing_engine_is_reported_by_layer():
    rng = np.random.default_rng(0)
    base = MLP([784, 16, 10], seed=1)
    report = check_gradients(NoReluDerivative.from_params(base.W, base.b),
                             rng.random((4, 784)), rng.integers(0, 10, 4))
    text = format_report(report, "test")
    assert text.splitlines()[-1] == "FAILED: W[0], b[0] disagree with their finite differences"
    flagged = [line.split()[0] for line in text.splitlines() if line.endswith("FAILED")]
    assert flagged == ["W[0]", "b[0]"]
    as_json = _as_json(report, "fresh", "random")
    assert not as_json["passed"]
    assert [c["passed"] for c in as_json["checks"]] == [True, True, False, False]


def test_bad_inputs_are_one_line(tmp_path):
    one_line(mlp("gradcheck", "--model", tmp_path / "missing.npz", expect=1),
             "missing.npz", "no such checkpoint")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    one_line(mlp("gradcheck", "--model", tmp_path / "bad.npz", expect=1), "bad.npz")


@pytest.mark.parametrize("args, message", [
    (["--samples", "0"], "0 is not in the range 1<=x<=1000"),
    (["--hidden", "32,x"], "'32,x' is not a comma list of widths"),
    (["--hidden", "0"], "hidden must be in [1, 65536]"),
    (["--hidden", ",".join(["1"] * 32)], "at most 31 hidden layers"),
    (["--hidden", "65536,65536,65536"], "needs about"),
    (["--hidden", "65536", "--samples", "1000"], "takes about 1.7e+13 multiply-adds of "
     "finite differences, more than the 1e+12 (minutes) a check may take; 60 samples fit"),
    (["--hidden", ",".join(["2400"] * 30), "--samples", "1"], "even on one sample"),
    (["--hidden", "8", "--model", "m.npz"], "give --model or --hidden, not both"),
])
def test_bad_values_exit_2_naming_the_option(args, message):
    result = mlp("gradcheck", *args, expect=2)
    assert "Traceback" not in result.output
    assert result.output.splitlines()[-1].startswith("Error: Invalid value for ")
    assert message in result.output


def test_the_help_states_the_sampled_coordinates():
    help_text = " ".join(mlp("gradcheck", "--help").stdout.split())
    assert f"up to {TOP + RANDOM} coordinates of each array (its {TOP} largest gradients " \
           f"and {RANDOM} at random)" in help_text
    assert f"Exit 0 when every error is below {THRESHOLD:.0e}, 1 otherwise" in help_text


def test_a_network_whose_outputs_overflow_is_one_line(tmp_path):
    net = MLP([784, *[8] * 8, 10], seed=0)
    for W in net.W:
        W[:] = np.float32(1e37)                   # logits beyond float64's range
    checkpoint.save(tmp_path / "huge.npz", net, {})
    result = mlp("gradcheck", "--model", tmp_path / "huge.npz", "--data-dir", tmp_path,
                 expect=1)
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[1:] == [f"Error: {tmp_path / 'huge.npz'}: the network's "
                                              "outputs overflow float64: its weights are far "
                                              "too large"]
