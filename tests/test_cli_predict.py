"""`mlp predict` end to end: real MNIST digits rendered as users' images, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mnist_mlp import checkpoint, data
from mnist_mlp.cli import main
from mnist_mlp.config import resolve
from mnist_mlp.network import MLP
from mnist_mlp.runner import new_trainer

from .conftest import REAL_MNIST
from .digit_images import RENDERINGS, render_all
from .test_imaging import _write_bad

N_DIGITS = 200        # real test digits, each rendered four ways
MIN_AGREEMENT = 0.95  # measured here: 0.98-0.995 per kind with this model


@pytest.fixture(scope="module")
def real_model(tmp_path_factory):
    """784-128-10 trained for 3 epochs on real MNIST (about 97% test accuracy)."""
    if not (REAL_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found in {REAL_MNIST} (set MLP_TEST_MNIST)")
    cfg = resolve({"hidden": (128,), "epochs": 3})
    X, y = data.load_mnist("train", REAL_MNIST, val_size=cfg.val_size)
    X_val, y_val = data.load_mnist("val", REAL_MNIST, val_size=cfg.val_size)
    trainer = new_trainer(cfg, len(X))
    trainer.fit(X, y, X_val, y_val)
    path = tmp_path_factory.mktemp("model") / "m.npz"
    checkpoint.save(path, trainer.net, {"input_scale": data.PIXEL_SCALE})
    return path


def test_users_images_of_mnist_digits_agree_with_the_originals(real_model, tmp_path):
    images, _ = data.load_mnist("test", REAL_MNIST, flat=False)
    pick = np.random.default_rng(0).choice(len(images), N_DIGITS, replace=False)
    net = checkpoint.load(real_model).net
    original = net.predict(images[pick].reshape(N_DIGITS, -1).astype(np.float32) / 255)
    paths = {kind: [] for kind in RENDERINGS}
    for j, i in enumerate(pick):
        for kind, path in render_all(images[i] / 255.0, tmp_path, f"{j:03d}").items():
            paths[kind].append(str(path))
    rates = {}
    for kind, files in paths.items():
        result = CliRunner().invoke(main, ["predict", "--model", str(real_model), "--json",
                                           *files])
        assert result.exit_code == 0, result.output
        rows = json.loads(result.stdout)
        assert [r["path"] for r in rows] == files
        rates[kind] = float(np.mean([r["digit"] for r in rows] == original))
    print("agreement with the original MNIST prediction:", rates)
    assert all(rate >= MIN_AGREEMENT for rate in rates.values()), rates


def _toy_model(tmp_path):
    path = tmp_path / "toy.npz"
    checkpoint.save(path, MLP([784, 8, 10]), {"input_scale": 255.0})
    return path


def test_output_formats(tmp_path):
    model = _toy_model(tmp_path)
    good, _ = _write_bad(tmp_path)
    result = CliRunner().invoke(main, ["predict", "--model", str(model), "--json",
                                       "--top-k", "4", str(good)])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert set(row) == {"path", "digit", "confidence", "top"}
    assert len(row["top"]) == 4 and row["top"][0] == [row["digit"], row["confidence"]]
    probs = [p for _, p in row["top"]]
    assert probs == sorted(probs, reverse=True)
    result = CliRunner().invoke(main, ["predict", "--model", str(model), str(good),
                                       "--show-input", str(tmp_path / "seen.png")])
    assert result.exit_code == 0
    assert result.stdout.startswith(f"{good}: {row['digit']} (")
    assert (tmp_path / "seen.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_images_fail_alone(tmp_path):
    model = _toy_model(tmp_path)
    good, cases = _write_bad(tmp_path)
    names = sorted(cases)
    result = CliRunner().invoke(main, ["predict", "--model", str(model), "--json", str(good),
                                       *[str(tmp_path / n) for n in names]])
    assert result.exit_code == 1
    assert [r["path"] for r in json.loads(result.stdout)] == [str(good)]
    errors = result.stderr.strip().splitlines()
    assert len(errors) == len(names)
    for line, name in zip(errors, names):
        assert line.startswith(f"Error: {tmp_path / name}: ") and cases[name] in line
    assert "Traceback" not in result.output


def test_missing_model_is_one_line(tmp_path):
    good, _ = _write_bad(tmp_path)
    result = CliRunner().invoke(main, ["predict", "--model", str(tmp_path / "none.npz"),
                                       str(good)])
    assert result.exit_code == 1 and "no such checkpoint" in result.output
    assert result.output.count("\n") == 1


def test_a_folder_without_images_is_an_error(tmp_path):
    model = _toy_model(tmp_path)
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["predict", "--model", str(model), str(tmp_path / "empty")])
    assert result.exit_code == 1 and "no image files" in result.output
