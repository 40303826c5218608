"""`mlp predict`: one line or JSON object per image, bad images failing alone, committees,
and pictures of the inputs that never replace special files."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import numpy as np

from mnist_mlp import checkpoint
from mnist_mlp.network import MLP

from ..digit_images import write_bad_images
from .runner import mlp, one_line, toy_model


def test_output_formats(tmp_path):
    model = toy_model(tmp_path)
    good, _ = write_bad_images(tmp_path)
    result = mlp("predict", "--model", model, "--json", "--top-k", "4", good)
    (row,) = json.loads(result.stdout)
    assert set(row) == {"path", "digit", "label", "confidence", "top"}
    assert row["label"] == str(row["digit"])                       # MNIST's classes: digits
    assert len(row["top"]) == 4 and row["top"][0] == [row["digit"], row["confidence"]]
    probs = [p for _, p in row["top"]]
    assert probs == sorted(probs, reverse=True)
    result = mlp("predict", "--model", model, good, "--show-input", tmp_path / "seen.png")
    assert result.stdout.startswith(f"{good}: {row['digit']} (")
    assert result.stdout.count("then") == 1 and result.stdout.count("\n") == 1
    assert (tmp_path / "seen.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_images_fail_alone(tmp_path):
    model = toy_model(tmp_path)
    good, cases = write_bad_images(tmp_path)
    names = sorted(cases)
    result = mlp("predict", "--model", model, "--json", good, *[tmp_path / n for n in names],
                 expect=1)
    assert [r["path"] for r in json.loads(result.stdout)] == [str(good)]
    errors = result.stderr.strip().splitlines()
    assert len(errors) == len(names)
    for line, name in zip(errors, names):
        assert line.startswith(f"Error: {tmp_path / name}: ") and cases[name] in line
    assert "Traceback" not in result.output


def test_missing_model_is_one_line(tmp_path):
    good, _ = write_bad_images(tmp_path)
    one_line(mlp("predict", "--model", tmp_path / "none.npz", good, expect=1),
             "no such checkpoint")


def test_a_folder_without_images_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    one_line(mlp("predict", "--model", toy_model(tmp_path), tmp_path / "empty", expect=1),
             "no image files")


def test_weights_that_overflow_are_one_line(tmp_path):
    net = MLP([784, 8, 10])
    for W in net.W:
        W *= np.float32(1e20)                    # finite weights; the logits overflow
    checkpoint.save(tmp_path / "huge.npz", net, {})
    good, _ = write_bad_images(tmp_path)
    one_line(mlp("predict", good, "--model", tmp_path / "huge.npz", expect=1),
             "outputs overflow float32")


def test_a_committee_averages_its_members_whatever_their_input_scales(tmp_path):
    first, second = toy_model(tmp_path, 0, "a.npz"), toy_model(tmp_path, 1, "b.npz")
    ckpt = checkpoint.load(second)
    raw = MLP.from_params([ckpt.net.W[0] / np.float32(255), ckpt.net.W[1]], ckpt.net.b,
                          input_scale=1)
    checkpoint.save(tmp_path / "b-raw.npz", raw, {})
    good, _ = write_bad_images(tmp_path)

    def probabilities(*models):
        args = [a for m in models for a in ("--model", m)]
        (row,) = json.loads(mlp("predict", *args, good, "--json", "--top-k", "10").stdout)
        return dict(row["top"])

    a, b = probabilities(first), probabilities(second)
    for pair in ((first, second), (first, tmp_path / "b-raw.npz"),
                 (tmp_path / "b-raw.npz", first)):
        both = probabilities(*pair)
        for digit in range(10):
            assert abs(both[digit] - (a[digit] + b[digit]) / 2) < 1e-5


# ---------------------------------------------------------------- hostile input

def test_a_fifo_among_images_neither_hangs_nor_stops_the_others(tmp_path):
    model = toy_model(tmp_path)
    good, _ = write_bad_images(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "mnist_mlp", "predict", "--model", str(model),
                           str(good), str(tmp_path / "fifo.png"), str(good), "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert [r["path"] for r in json.loads(proc.stdout)] == [str(good), str(good)]
    assert proc.stderr == f"Error: {tmp_path / 'fifo.png'}: is a FIFO, not a regular file\n"


def test_pictures_never_replace_special_files(tmp_path):
    model = toy_model(tmp_path)
    good, _ = write_bad_images(tmp_path)
    targets = {"fifo.png": "is a FIFO"}
    if os.geteuid() == 0:
        os.mknod(tmp_path / "full", stat.S_IFCHR | 0o666, os.makedev(1, 7))  # like /dev/full
        targets["full"] = "is a device"
    for name, message in targets.items():
        before = os.lstat(tmp_path / name)
        result = mlp("predict", "--model", model, good, "--show-input", tmp_path / name,
                     expect=1)
        assert message in result.stderr, result.output
        after = os.lstat(tmp_path / name)
        assert (after.st_mode, after.st_ino, after.st_rdev) == (
            before.st_mode, before.st_ino, before.st_rdev)
    (tmp_path / "seen-real.png").write_bytes(b"")
    (tmp_path / "seen-link.png").symlink_to(tmp_path / "seen-real.png")
    mlp("predict", "--model", model, good, "--show-input", tmp_path / "seen-link.png")
    assert (tmp_path / "seen-link.png").is_symlink()
    assert (tmp_path / "seen-real.png").read_bytes()[:4] == b"\x89PNG"


def test_a_picture_that_cannot_be_written_is_refused_before_anything_is_read(tmp_path):
    """``--show-input /dev/stdout`` would mix a PNG into the predictions: refused at once,
    so the error is the only line (no prediction printed first); so are a format the
    picture cannot take and a path through a file."""
    model = toy_model(tmp_path)
    good, _ = write_bad_images(tmp_path)
    for option, path, message in (
            ("--show-input", "/dev/stdout", "a stream of this process"),
            ("--explain", "/dev/fd/1", "a stream of this process"),
            ("--show-input", tmp_path / "seen.txt", "cannot write a .txt file"),
            ("--explain", good / "why.png", "a folder on its path is a file")):
        result = mlp("predict", "--model", model, good, option, path, expect=1)
        one_line(result, str(path), message)


def test_a_fashion_model_reads_a_garment_photo_by_class_name(real_fashion_model, tmp_path):
    from PIL import Image, ImageDraw

    photo = Image.new("RGB", (600, 800), (250, 250, 247))           # trousers on light paper
    ImageDraw.Draw(photo).polygon([(200, 100), (400, 100), (430, 700), (330, 700), (300, 300),
                                   (270, 700), (170, 700)], fill=(40, 50, 90))
    photo.save(tmp_path / "trousers.jpg")
    (row,) = json.loads(mlp("predict", "--model", real_fashion_model, "--json",
                            tmp_path / "trousers.jpg").stdout)
    assert (row["digit"], row["label"]) == (1, "Trouser")
    line = mlp("predict", "--model", real_fashion_model, tmp_path / "trousers.jpg").stdout
    assert line.startswith(f"{tmp_path / 'trousers.jpg'}: Trouser (")


def test_explain_saves_each_input_beside_its_map(tmp_path):
    from PIL import Image

    model = toy_model(tmp_path)
    good, _ = write_bad_images(tmp_path)
    mlp("predict", "--model", model, good, "--explain", tmp_path / "why.png")
    with Image.open(tmp_path / "why.png") as sheet:
        assert sheet.mode == "RGB" and sheet.size == (2 * 84 + 6, 84 + 14 + 4)
    failed = mlp("predict", "--model", model, good, "--explain", good / "w.png", expect=1)
    assert failed.stderr == f"Error: {good / 'w.png'}: a folder on its path is a file\n"


def test_explain_draws_at_most_a_hundred(tmp_path):
    from PIL import Image

    from mnist_mlp.cli.predict import MAX_EXPLAINED
    from mnist_mlp.gallery import CELL, COLUMNS

    model = toy_model(tmp_path)
    good, _ = write_bad_images(tmp_path)
    (tmp_path / "many").mkdir()
    for i in range(MAX_EXPLAINED + 1):
        (tmp_path / "many" / f"{i:03d}.png").write_bytes(good.read_bytes())
    mlp("predict", "--model", model, tmp_path / "many", "--explain", tmp_path / "why.png")
    with Image.open(tmp_path / "why.png") as sheet:
        rows = -(-MAX_EXPLAINED // (COLUMNS // 2))
        assert sheet.height == rows * (CELL + 14 + 4)
