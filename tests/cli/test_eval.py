"""`mlp eval`: scores of a checkpoint or a committee on real MNIST, each member on its own
input scale; pictures of the errors and the confusion; one line for each bad input."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
from PIL import Image

from mnist_mlp import checkpoint
from mnist_mlp.network import MLP

from ..mirrors import Mirror
from .runner import mlp, one_line


def _eval(model_args, real_mnist, *extra, expect=0):
    models = [a for m in model_args for a in ("--model", m)]
    return mlp("eval", *models, "--data-dir", real_mnist, "--quiet", *extra, expect=expect)


def _scores(models, real_mnist, *extra):
    return json.loads(_eval(models, real_mnist, "--json", *extra).stdout)


def _for_raw_pixels(src, dst):
    """``src`` rewritten as the same network for pixels 0-255: W.0 / 255, input_scale 1."""
    ckpt = checkpoint.load(src)
    W = [ckpt.net.W[0] / np.float32(255), *ckpt.net.W[1:]]
    checkpoint.save(dst, MLP.from_params(W, ckpt.net.b, input_scale=1), ckpt.meta)
    return dst


def test_scores_as_json_and_as_a_table(real_model, real_mnist, tmp_path):
    scores = _scores([real_model], real_mnist)
    assert set(scores) == {"accuracy", "loss", "n", "per_class", "confusion", "class_names"}
    assert scores["class_names"] == [str(d) for d in range(10)]
    assert scores["n"] == 10_000 and scores["accuracy"] >= 0.95
    confusion = np.array(scores["confusion"])
    assert confusion.sum() == 10_000 and np.trace(confusion) == round(scores["accuracy"] * 1e4)
    assert set(scores["per_class"][0]) == {"precision", "recall", "f1", "support"}
    assert [c["support"] for c in scores["per_class"]] == confusion.sum(axis=1).tolist()

    table = _eval([real_model], real_mnist, "--split", "val", "--errors", tmp_path / "e.png")
    first = table.stdout.splitlines()[0]
    assert first.startswith("accuracy ") and first.endswith("n 5000")
    assert "confusion (rows: true digit, columns: predicted)" in table.stdout
    with Image.open(tmp_path / "e.png") as errors:
        assert errors.format == "PNG"


def test_the_checkpoints_input_scale_is_honoured(real_model, real_mnist, tmp_path):
    raw = _for_raw_pixels(real_model, tmp_path / "raw.npz")
    assert checkpoint.load(raw).input_scale == 1
    scaled, unscaled = _scores([real_model], real_mnist), _scores([raw], real_mnist)
    assert unscaled["accuracy"] > 0.95      # chance level when pixels were divided by 255 anyway
    assert abs(unscaled["accuracy"] - scaled["accuracy"]) <= 2e-4
    assert unscaled["n"] == scaled["n"] == 10_000


def test_a_committee_of_other_input_scales_equals_the_originals(real_model, real_mnist,
                                                               tmp_path):
    twin = shutil.copy(real_model, tmp_path / "twin.npz")   # one path given twice is one member
    raw = _for_raw_pixels(twin, tmp_path / "raw.npz")
    originals = _scores([real_model, twin], real_mnist)
    mixed = _scores([real_model, raw], real_mnist)
    assert abs(mixed["accuracy"] - originals["accuracy"]) <= 2e-4 and mixed["accuracy"] > 0.95
    assert [m["model"] for m in mixed["members"]] == [str(real_model), str(raw)]
    first_raw = _scores([raw, real_model], real_mnist)
    assert abs(first_raw["accuracy"] - originals["accuracy"]) <= 2e-4


def test_committees_score_each_member(real_model, tiny_run, real_mnist):
    models = [real_model, tiny_run]
    scores = _scores(models, real_mnist)
    alone = [_scores([m], real_mnist)["accuracy"] for m in models]
    assert [m["accuracy"] for m in scores["members"]] == alone
    assert [m["model"] for m in scores["members"]] == [str(m) for m in models]
    table = _eval(models, real_mnist).stdout.splitlines()
    assert table[0].startswith("committee accuracy")
    assert table[1:3] == [f"  member {m}: {100 * a:.2f}%" for m, a in zip(models, alone)]


def _bad_checkpoints(tmp_path, good) -> dict[str, tuple[object, str]]:
    data = good.read_bytes()
    cases = {}

    def case(name, content, message):
        path = tmp_path / f"{name}.npz"
        path.write_bytes(content) if isinstance(content, bytes) else content(path)
        cases[name] = (path, message)

    case("truncated", data[: len(data) // 2], "not a readable .npz checkpoint")
    case("not-npz", b"hello, world", "not a readable .npz checkpoint")
    case("empty", b"", "not a readable .npz checkpoint")
    ckpt = checkpoint.load(good)
    case("no-meta", lambda p: np.savez(p, **{"W.0": ckpt.net.W[0]}),
         "missing or unreadable metadata")

    def rewrite(meta_change=None, drop=None, reshape=None):
        def write(path):
            with np.load(good) as npz:
                arrays = {k: npz[k] for k in npz.files}
            meta = json.loads(str(arrays["meta"]))
            meta.update(meta_change or {})
            arrays["meta"] = np.array(json.dumps(meta))
            if drop:
                del arrays[drop]
            if reshape:
                arrays[reshape] = arrays[reshape][:, :-1]
            np.savez(path, **arrays)
        return write

    case("future", rewrite({"format_version": 99}), "checkpoint format 99")
    case("missing-array", rewrite(drop="b.1"), "b.1 is missing")
    case("wrong-shape", rewrite(reshape="W.0"), "W.0 is float32 (16, 783)")
    case("wrong-sizes", rewrite({"sizes": [784, 32, 10]}), "W.0 is float32 (16, 784)")
    cases["missing"] = (tmp_path / "absent.npz", "no such checkpoint")
    return cases


def test_bad_checkpoints_give_one_line(tiny_run, tmp_path):
    for name, (path, message) in _bad_checkpoints(tmp_path, tiny_run).items():
        # refused before any data is looked for
        one_line(mlp("eval", "--model", path, "--data-dir", tmp_path / "none", expect=1),
                 message)
    assert not (tmp_path / "none").exists()


def test_a_checkpoint_with_a_bad_saved_config(tiny_run, real_mnist, tmp_path):
    out = tmp_path / "m.npz"
    ckpt = checkpoint.load(tiny_run)
    ckpt.meta["config"]["val_size"] = "lots"
    checkpoint.save(out, ckpt.net, ckpt.meta)
    one_line(_eval([out], real_mnist, "--split", "val", expect=1),
             "its training config is unusable", "lots")
    assert _scores([out], real_mnist)["n"] == 10_000         # the test split still scores it


def test_a_model_trained_on_all_the_data_has_no_val_split(tiny_run, real_mnist, tmp_path):
    out = tmp_path / "m.npz"
    ckpt = checkpoint.load(tiny_run)
    ckpt.meta["config"]["val_size"] = 0
    checkpoint.save(out, ckpt.net, ckpt.meta)
    one_line(_eval([out], real_mnist, "--split", "val", expect=1), "no validation split")
    assert _scores([out], real_mnist, "--split", "train")["n"] == 60_000


def test_weights_that_overflow_are_one_line(real_mnist, tmp_path):
    net = MLP([784, 8, 10])
    for W in net.W:
        W *= np.float32(1e20)                    # finite weights; the logits overflow
    checkpoint.save(tmp_path / "huge.npz", net, {})
    one_line(_eval([tmp_path / "huge.npz"], real_mnist, expect=1), "outputs overflow float32")


def test_the_confusion_picture(tiny_run, real_mnist, tmp_path):
    out = tmp_path / "confusion.png"
    assert _scores([tiny_run], real_mnist, "--confusion", out)["n"] == 10_000
    with Image.open(out) as picture:
        assert picture.format == "PNG"
    os.mkfifo(tmp_path / "fifo.png")
    for option, path, message in (("--confusion", tmp_path / "fifo.png", "is a FIFO"),
                                  ("--errors", tmp_path / "fifo.png", "is a FIFO"),
                                  ("--confusion", tmp_path / "c.txt", "cannot write a .txt"),
                                  ("--errors", tiny_run / "e.png", "e.png: "),
                                  ("--errors", "/dev/stdout", "a stream of this process")):
        one_line(_eval([tiny_run], real_mnist, option, path, expect=1), message)
    assert not list(tmp_path.glob("*.part"))


def test_missing_data_that_cannot_be_downloaded_is_one_line(tiny_run, tmp_path, monkeypatch):
    mirror = Mirror({})                                   # answers 404 to everything
    monkeypatch.setenv("MLP_MNIST_MIRRORS", mirror.url)
    try:
        one_line(mlp("eval", "--model", tiny_run, "--data-dir", tmp_path / "d", "--quiet",
                     expect=1), "could not download", f"{mirror.url}", "HTTP 404")
    finally:
        mirror.close()


def test_a_fashion_model_is_scored_on_its_own_dataset_by_class_name(
        real_fashion_model, real_fashion, real_mnist, tmp_path):
    scores = json.loads(mlp("eval", "--model", real_fashion_model, "--data-dir", real_fashion,
                            "--json").stdout)
    assert scores["class_names"][0] == "T-shirt/top" and scores["accuracy"] > 0.8
    table = mlp("eval", "--model", real_fashion_model, "--data-dir", real_fashion,
                "--confusion", tmp_path / "c.png").stdout
    assert "confusion (rows: true class, columns: predicted)" in table
    assert " Ankle boot  " in table and table.count("\n") > 20
    one_line(mlp("eval", "--model", real_fashion_model, "--dataset", "mnist", expect=1),
             "trained on Fashion-MNIST, it cannot be scored on MNIST")
    one_line(mlp("eval", "--model", real_fashion_model, "--data-dir", real_mnist, expect=1),
             "MNIST's file, not Fashion-MNIST's")


def test_a_committee_of_two_datasets_is_refused(real_fashion_model, real_model):
    one_line(mlp("eval", "--model", real_fashion_model, "--model", real_model, expect=1),
             "members trained on different datasets (fashion-mnist, mnist)")


def test_a_labelled_folder_is_scored_like_the_test_set(real_model, tmp_path):
    from PIL import ImageDraw

    strokes = {1: [(50, 10), (50, 90)], 7: [(20, 15), (80, 15), (40, 90)]}
    for label, points in strokes.items():
        (tmp_path / "mine" / str(label)).mkdir(parents=True)
        for shift in (-8, 0, 8):
            image = Image.new("L", (100, 100), 255)
            ImageDraw.Draw(image).line([(x + shift, y) for x, y in points], fill=0, width=9)
            image.save(tmp_path / "mine" / str(label) / f"{shift}.png")
    (tmp_path / "mine" / "7" / "torn.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    result = mlp("eval", "--model", real_model, "--images", tmp_path / "mine", "--json",
                 "--errors", tmp_path / "e.png")
    scores = json.loads(result.stdout)
    assert scores["n"] == 6 and [c["support"] for c in scores["per_class"]] == [
        0, 3, 0, 0, 0, 0, 0, 3, 0, 0]
    assert np.array(scores["confusion"]).sum() == 6 and scores["accuracy"] >= 4 / 6
    assert result.stderr == f"skipped {tmp_path / 'mine' / '7' / 'torn.png'}: not an image " \
                            "file (PNG, JPEG, BMP, GIF, TIFF, WEBP)\n"
    one_line(mlp("eval", "--model", real_model, "--images", tmp_path, expect=1),
             f"{tmp_path}: no class sub-folders")
    usage = mlp("eval", "--model", real_model, "--images", tmp_path / "mine", "--split", "test",
                expect=2)
    assert "Invalid value for --split: a split is of the dataset's files" in usage.output
