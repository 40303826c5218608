"""Classifying users' images: real MNIST digits rendered as photos and drawings read as the
originals do, through the same function `mlp predict` and `mlp serve` use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import BytesIO
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from mnist_mlp import checkpoint
from mnist_mlp.classify import Prediction, classify, predict_pixels
from mnist_mlp.cli import main
from mnist_mlp.dataset import DataSource
from mnist_mlp.imaging import ImageError
from mnist_mlp.network import MLP

from .big_images import png_header
from .digit_images import RENDERINGS, render_all, stroke_digit, write_bad_images

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


def _encoded(img: Image.Image, kind: str, **kwargs) -> bytes:
    out = BytesIO()
    img.save(out, format=kind, **kwargs)
    return out.getvalue()


def _damaged_tiff(page: Image.Image) -> bytes:
    """A deflate TIFF whose compressed data is damaged: libtiff reports it on stderr."""
    raw = bytearray(_encoded(page, "TIFF", compression="tiff_adobe_deflate"))
    for i in range(20, 60):
        raw[i] ^= 0x5A
    return bytes(raw)


def test_each_bad_image_is_one_error_line_and_the_others_are_classified(tmp_path):
    """Run as a process: libtiff's messages and Pillow's warnings would reach fd 2 directly."""
    model = tmp_path / "toy.npz"
    checkpoint.save(model, MLP([784, 8, 10]), {"input_scale": 255.0})
    page = Image.fromarray(np.round((1 - stroke_digit(4)) * 255).astype(np.uint8)).resize(
        (112, 112))
    exif = Image.Exif()
    exif[0x010E] = "a description long enough to be cut"
    bad = {"damaged.tif": _damaged_tiff(page),
           "strip.png": png_header(1, 39_999_999),
           "texture.dds": _encoded(page, "DDS")}
    good = {"lab.tif": lambda p: page.convert("RGB").convert("LAB").save(p),
            "cmyk.jpg": lambda p: page.convert("CMYK").save(p),
            "exif.jpg": lambda p: page.save(p, exif=exif.tobytes()[:-12]),  # Pillow warns
            "good.png": lambda p: page.save(p)}
    for name, raw in bad.items():
        (tmp_path / name).write_bytes(raw)
    for name, write in good.items():
        write(tmp_path / name)
    paths = [str(tmp_path / name) for name in ["damaged.tif", *good, "strip.png", "texture.dds"]]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=str(Path(checkpoint.__file__).parents[1]))
    proc = subprocess.run([sys.executable, "-m", "mnist_mlp", "predict", "--model", str(model),
                           *paths], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1
    assert [line.split(": ")[0] for line in proc.stdout.splitlines()] == [
        str(tmp_path / name) for name in good]
    errors = proc.stderr.splitlines()
    assert [line.split(": ")[1] for line in errors] == [
        str(tmp_path / name) for name in bad], proc.stderr
    assert all(line.startswith("Error: ") for line in errors)
    assert "damaged or truncated image" in errors[0]
    assert "is a strip, not a digit" in errors[1] and "not an image file" in errors[2]
