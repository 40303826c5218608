"""Classifying users' images: real MNIST digits rendered as photos and drawings read as the
originals do, through the same function `mlp predict` and `mlp serve` use."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from mnist_mlp import checkpoint
from mnist_mlp.classify import Prediction, classify, predict_pixels
from mnist_mlp.cli import main
from mnist_mlp.dataset import DataSource
from mnist_mlp.imaging import ImageError

from .digit_images import RENDERINGS, render_all, write_bad_images

N_DIGITS = 200        # real test digits, each rendered several ways
MIN_AGREEMENT = 0.95  # measured here: 0.97-0.99 per kind with the quick model


def test_users_images_of_mnist_digits_agree_with_the_originals(real_model, real_mnist,
                                                                 tmp_path):
    images, _ = DataSource(real_mnist).load("test", flat=False)
    pick = np.random.default_rng(0).choice(len(images), N_DIGITS, replace=False)
    model = checkpoint.load(real_model)
    original = predict_pixels(model, images[pick]).argmax(axis=1)
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


def test_one_batch_for_all_images_and_errors_in_place(real_model, tmp_path, monkeypatch):
    model = checkpoint.load(real_model)
    good, cases = write_bad_images(tmp_path)
    calls = []
    real = model.net.predict_proba
    monkeypatch.setattr(model.net, "predict_proba", lambda X: calls.append(len(X)) or real(X))
    sources = [good, tmp_path / "text.png", good.read_bytes(), tmp_path / "fifo.png"]
    results = classify(model, sources)
    assert calls == [2], "every readable image goes through one forward pass"
    assert [type(r) for r in results] == [Prediction, ImageError, Prediction, ImageError]
    assert results[0].digit == results[2].digit == 1
    np.testing.assert_array_equal(results[0].proba, results[2].proba)
    assert results[2].source == "the image"
    top = results[0].top()
    assert [d for d, _ in top] == list(np.argsort(-results[0].proba, kind="stable"))
    assert abs(sum(p for _, p in top) - 1) < 1e-5
