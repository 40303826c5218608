"""The `mlp` commands end to end through click's CliRunner: options, output, exit codes."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mnist_mlp import checkpoint, run
from mnist_mlp.cli import main
from mnist_mlp.network import MLP

from .digit_images import write_bad_images

TINY = ["--hidden", "16", "--epochs", "3", "--val-size", "100", "--batch-size", "32",
        "--quiet"]


def _train(tiny_mnist, out, *extra, expect=0):
    """`mlp train` on tiny_mnist; a new run replaces an earlier one at ``out``."""
    again = () if "--resume" in extra else ("--overwrite",)
    result = CliRunner().invoke(main, ["train", "--data-dir", str(tiny_mnist), "--out", str(out),
                                       *TINY, *again, *extra])
    assert result.exit_code == expect, result.output
    return result


def test_train_then_eval(tiny_mnist, tmp_path):
    out = tmp_path / "run" / "m.npz"
    result = _train(tiny_mnist, out, "--json")
    summary = json.loads(result.stdout)
    assert summary["checkpoint"] == str(out)
    assert summary["config"]["hidden"] == [16] and summary["config"]["epochs"] == 3
    assert [row["epoch"] for row in summary["epochs"]] == [1, 2, 3]
    for key in ("lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                "train_seconds"):
        assert all(isinstance(row[key], float) for row in summary["epochs"])
    best = max(summary["epochs"], key=lambda r: r["val_accuracy"])
    assert summary["best_epoch"] == best["epoch"]
    log = [json.loads(line) for line in (tmp_path / "run" / "m.metrics.jsonl").open()]
    assert log == summary["epochs"]
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "m.curves.png", "m.last.npz", "m.lock", "m.metrics.jsonl", "m.npz"]
    assert summary["curves"] == str(out.parent / "m.curves.png")

    ckpt = checkpoint.load(out)
    assert ckpt.meta["sizes"] == [784, 16, 10] and ckpt.meta["epoch"] == best["epoch"]
    assert ckpt.meta["config"]["seed"] == 0 and "data_sha256" in ckpt.meta

    result = CliRunner().invoke(main, ["eval", "--model", str(out), "--data-dir",
                                       str(tiny_mnist), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert set(scores) == {"accuracy", "loss", "n", "per_class", "confusion"}
    assert scores["n"] == 200 and scores["accuracy"] > 0.9  # bars are easy
    assert np.array(scores["confusion"]).sum() == 200
    assert np.trace(np.array(scores["confusion"])) == round(scores["accuracy"] * 200)
    assert set(scores["per_class"][0]) == {"precision", "recall", "f1", "support"}

    table = CliRunner().invoke(main, ["eval", "--model", str(out), "--data-dir", str(tiny_mnist),
                                      "--split", "val", "--errors", str(tmp_path / "e.png")])
    assert table.exit_code == 0, table.output
    assert "accuracy" in table.output and "n 100" in table.output
    assert "confusion" in table.output
    assert (tmp_path / "e.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_config_precedence_and_errors(tiny_mnist, tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text("epochs = 2\nlr = 0.5\nhidden = [8]\n")
    result = _train(tiny_mnist, tmp_path / "m.npz", "--config", str(preset), "--lr", "0.02",
                    "--json")
    config = json.loads(result.stdout)["config"]
    # TINY's flags (--epochs 3, --hidden 16) beat the file; the file's lr lost to --lr
    assert (config["epochs"], config["lr"], config["hidden"]) == (3, 0.02, [16])

    result = CliRunner().invoke(main, ["train", "--config", str(preset), "--data-dir",
                                       str(tiny_mnist), "--val-size", "100", "--quiet",
                                       "--out", str(tmp_path / "n.npz"), "--json"])
    config = json.loads(result.stdout)["config"]
    assert (config["epochs"], config["lr"], config["hidden"]) == (2, 0.5, [8])

    preset.write_text("epochs = 2\nlearning_rate = 0.5\n")
    result = _train(tiny_mnist, tmp_path / "m.npz", "--config", str(preset), expect=1)
    assert "learning_rate" in result.output and str(preset) in result.output
    preset.write_text("epochs = '2'\n")
    result = _train(tiny_mnist, tmp_path / "m.npz", "--config", str(preset), expect=1)
    assert "epochs must be of type int" in result.output and str(preset) in result.output
    result = _train(tiny_mnist, tmp_path / "m.npz", "--lr", "-1", expect=2)
    assert "Invalid value for '--lr': -1.0 is not in the range 0<x<=1000000.0" in result.output
    result = _train(tiny_mnist, tmp_path / "m.npz", "--lr", "nan", expect=2)
    assert "lr must be in (0, 1e+06], not nan" in result.output
    result = _train(tiny_mnist, tmp_path / "m.npz", "--hidden", "8,x", expect=2)
    assert "comma list" in result.output


def test_dropout_per_hidden_layer(tiny_mnist, tmp_path):
    from mnist_mlp.config import resolve
    from mnist_mlp.run import new_trainer

    result = _train(tiny_mnist, tmp_path / "m.npz", "--hidden", "16,8", "--dropout", "0.5,0.1",
                    "--input-dropout", "0.2", "--json")
    assert json.loads(result.stdout)["config"]["dropout"] == [0.5, 0.1]
    per_layer = new_trainer(resolve({"hidden": (16, 8), "dropout": (0.5, 0.1),
                                     "input_dropout": 0.2}), 100)
    assert per_layer.dropout == [0.2, 0.5, 0.1]
    shared = new_trainer(resolve({"hidden": (16, 8), "dropout": (0.3,)}), 100)
    assert shared.dropout == [0.0, 0.3, 0.3]
    result = _train(tiny_mnist, tmp_path / "m.npz", "--hidden", "16,8", "--dropout", "0.5,0.1,0.2",
                    expect=2)
    assert "one rate or one per hidden layer" in result.output


class _SignalAfter(run.StopSignals):
    """The signal flag, with a SIGINT 'arriving' after a number of steps."""

    steps = 0
    calls = 0

    def __call__(self):
        self.calls += 1
        if self.calls >= self.steps:
            self.signum = self.signum or signal.SIGINT
        return super().__call__()


def _params(path):
    ckpt = checkpoint.load(path, with_state=True)
    return ckpt.net.params, {**ckpt.optimizer_state, **ckpt.extra}


@pytest.mark.parametrize("stop_after", [7, 19 * 2])  # mid-epoch; an epoch's last step
def test_interrupted_run_resumes_bit_for_bit(tiny_mnist, tmp_path, stop_after, monkeypatch):
    extra = ("--dropout", "0.3", "--input-dropout", "0.1", "--epochs", "4", "--augment", "elastic",
             "--max-norm", "2.0", "--label-smoothing", "0.1", "--weight-decay", "0.01",
             "--ema", "0.9", "--select-tolerance", "0.01")
    _train(tiny_mnist, tmp_path / "a" / "m.npz", *extra)

    with monkeypatch.context() as patch:
        patch.setattr(_SignalAfter, "steps", stop_after)
        patch.setattr(run, "StopSignals", _SignalAfter)
        result = _train(tiny_mnist, tmp_path / "b" / "m.npz", *extra, expect=130)
    assert "SIGINT: stopped at epoch" in result.output
    assert "mlp train --resume --out" in result.output
    assert not list((tmp_path / "b").glob("*.part")), "a temporary file was left behind"
    checkpoint.load(tmp_path / "b" / "m.last.npz")  # loadable

    _train(tiny_mnist, tmp_path / "b" / "m.npz", "--resume", "--epochs", "4")
    for name in ("m.last.npz", "m.npz"):
        (pa, sa), (pb, sb) = _params(tmp_path / "a" / name), _params(tmp_path / "b" / name)
        assert all(x.tobytes() == y.tobytes() for x, y in zip(pa, pb)), name
        assert sa.keys() == sb.keys() and all(sa[k].tobytes() == sb[k].tobytes() for k in sa)
    assert "ema.m.0" in _params(tmp_path / "b" / "m.last.npz")[1]
    log_a = (tmp_path / "a" / "m.metrics.jsonl").read_text().splitlines()
    log_b = (tmp_path / "b" / "m.metrics.jsonl").read_text().splitlines()
    def without_timing(rows):
        return [{k: v for k, v in json.loads(r).items() if k != "train_seconds"} for r in rows]

    assert without_timing(log_a) == without_timing(log_b)


def test_resume_refuses_changed_hyperparameters_and_missing_state(tiny_mnist, tmp_path):
    result = _train(tiny_mnist, tmp_path / "m.npz", "--resume", expect=1)
    assert "m.last.npz: no such checkpoint" in result.output
    _train(tiny_mnist, tmp_path / "m.npz")
    result = _train(tiny_mnist, tmp_path / "m.npz", "--resume", "--lr", "0.3", expect=2)
    assert "only epochs, patience may change, not lr" in result.output
    preset = tmp_path / "p.toml"
    preset.write_text("epochs = 5\nlr = 0.7\n")
    result = _train(tiny_mnist, tmp_path / "m.npz", "--resume", "--config", str(preset),
                    expect=2)
    assert "not lr" in result.output


def test_unwritable_out_fails_before_training(tiny_mnist, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    result = _train(tiny_mnist, blocker / "m.npz", expect=1)
    assert "cannot write checkpoints to" in result.output and "Traceback" not in result.output
    assert result.output.count("\n") == 1


def test_divergence_stops_with_advice(tiny_mnist, tmp_path):
    out = tmp_path / "m.npz"
    _train(tiny_mnist, out, "--epochs", "1")
    ckpt = checkpoint.load(out.with_name("m.last.npz"), with_state=True)
    for W in ckpt.net.W:
        W *= np.float32(1e20)  # finite, but the logits overflow float32
    checkpoint.save(out.with_name("m.last.npz"), ckpt.net, ckpt.meta, ckpt.optimizer_state,
                    ckpt.extra)
    result = _train(tiny_mnist, out, "--resume", "--epochs", "2", expect=1)
    assert "the loss became" in result.output and "lower learning rate" in result.output
    assert "the last good checkpoint is" in result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1


def _bad_checkpoints(tmp_path, good: Path) -> dict[str, tuple[Path, str]]:
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
    return cases


def test_bad_checkpoints_give_one_line(tiny_mnist, tmp_path):
    _train(tiny_mnist, tmp_path / "m.npz")
    cases = _bad_checkpoints(tmp_path, tmp_path / "m.npz")
    cases["missing"] = (tmp_path / "absent.npz", "no such checkpoint")
    for name, (path, message) in cases.items():
        result = CliRunner().invoke(main, ["eval", "--model", str(path), "--data-dir",
                                           str(tiny_mnist)])
        assert result.exit_code == 1, (name, result.output)
        assert message in result.output, (name, result.output)
        assert result.output.count("\n") == 1 and "Traceback" not in result.output, name


# ---------------------------------------------------------------- real MNIST

def test_quick_preset_on_real_mnist(real_mnist, tmp_path):
    out = tmp_path / "q.npz"
    result = CliRunner().invoke(main, ["train", "--config", "quick", "--data-dir",
                                       str(real_mnist), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["eval", "--model", str(out), "--data-dir",
                                       str(real_mnist), "--json"])
    scores = json.loads(result.stdout)
    assert scores["n"] == 10_000 and scores["accuracy"] >= 0.95


def test_resume_takes_the_saved_config_without_flags(tiny_mnist, tmp_path):
    _train(tiny_mnist, tmp_path / "m.npz", "--epochs", "1")
    result = CliRunner().invoke(main, ["train", "--resume", "--epochs", "2", "--quiet", "--json",
                                       "--data-dir", str(tiny_mnist),
                                       "--out", str(tmp_path / "m.npz")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["config"]["val_size"] == 100 and summary["config"]["hidden"] == [16]
    assert [row["epoch"] for row in summary["epochs"]] == [1, 2]


# ---------------------------------------------------------------- predict

def _toy_model(tmp_path):
    path = tmp_path / "toy.npz"
    checkpoint.save(path, MLP([784, 8, 10]), {"input_scale": 255.0})
    return path


def test_output_formats(tmp_path):
    model = _toy_model(tmp_path)
    good, _ = write_bad_images(tmp_path)
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
    good, cases = write_bad_images(tmp_path)
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
    good, _ = write_bad_images(tmp_path)
    result = CliRunner().invoke(main, ["predict", "--model", str(tmp_path / "none.npz"),
                                       str(good)])
    assert result.exit_code == 1 and "no such checkpoint" in result.output
    assert result.output.count("\n") == 1


def test_a_folder_without_images_is_an_error(tmp_path):
    model = _toy_model(tmp_path)
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["predict", "--model", str(model), str(tmp_path / "empty")])
    assert result.exit_code == 1 and "no image files" in result.output


# ---------------------------------------------------------------- hostile input

def _mlp(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnist_mlp", *args], capture_output=True,
                          text=True, timeout=60, **kwargs)


def test_output_streams_that_fail(tmp_path):
    model = _toy_model(tmp_path)
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


def test_a_fifo_among_images_neither_hangs_nor_stops_the_others(tmp_path):
    model = _toy_model(tmp_path)
    good, _ = write_bad_images(tmp_path)
    proc = _mlp("predict", "--model", str(model), str(good), str(tmp_path / "fifo.png"),
                str(good), "--json")
    assert proc.returncode == 1
    assert [r["path"] for r in json.loads(proc.stdout)] == [str(good), str(good)]
    assert proc.stderr == f"Error: {tmp_path / 'fifo.png'}: is a FIFO, not a regular file\n"


def test_pictures_never_replace_special_files(tmp_path):
    model = _toy_model(tmp_path)
    good, _ = write_bad_images(tmp_path)
    targets = {"fifo.png": "is a FIFO"}
    if os.geteuid() == 0:
        os.mknod(tmp_path / "full", stat.S_IFCHR | 0o666, os.makedev(1, 7))  # like /dev/full
        targets["full"] = "is a device"
    for name, message in targets.items():
        before = os.lstat(tmp_path / name)
        result = CliRunner().invoke(main, ["predict", "--model", str(model), str(good),
                                           "--show-input", str(tmp_path / name)])
        assert result.exit_code == 1 and message in result.stderr, result.output
        after = os.lstat(tmp_path / name)
        assert (after.st_mode, after.st_ino, after.st_rdev) == (
            before.st_mode, before.st_ino, before.st_rdev)
    (tmp_path / "seen-link.png").symlink_to(tmp_path / "seen-real.png")
    result = CliRunner().invoke(main, ["predict", "--model", str(model), str(good),
                                       "--show-input", str(tmp_path / "seen-link.png")])
    assert result.exit_code == 0 and (tmp_path / "seen-link.png").is_symlink()
    assert (tmp_path / "seen-real.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, code, message", [
    (["--hidden", "9223372036854775808"], 2, "hidden must be in [1, 65536]"),
    (["--hidden", "3000000"], 2, "hidden must be in [1, 65536], not 3000000"),
    (["--weight-decay", "inf"], 2, "Invalid value for '--weight-decay'"),
    (["--dropout", "nan"], 2, "dropout must be in [0, 1), not nan"),
    (["--epochs", "0"], 2, "Invalid value for '--epochs'"),
    (["--warmup-epochs", "5", "--epochs", "2"], 2, "warmup_epochs (5) must be between 0 and"),
])
def test_bad_settings_fail_before_any_data_is_read(tmp_path, args, code, message):
    result = CliRunner().invoke(main, ["train", "--data-dir", str(tmp_path / "none"), "--out",
                                       str(tmp_path / "m.npz"), *args])
    assert result.exit_code == code and message in result.output, result.output
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("text, message", [
    ("lr = -1.0\n", "lr must be in (0, 1e+06], not -1.0"),
    ("hidden = [100000]\n", "hidden must be in [1, 65536], not 100000"),
    ("optimizer = 'rmsprop'\n", "optimizer must be one of sgd, nesterov, adam, adamw"),
    ("hidden = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ("optimizer = '" + "x" * 500_000 + "'\n", "not 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx..."),
    ("x" * 100_000 + " = 1\n", "unknown key 'xxxxxxxxxxxx"),
])
def test_bad_config_files_name_the_file_and_key(tmp_path, text, message):
    preset = tmp_path / "p.toml"
    preset.write_text(text)
    result = CliRunner().invoke(main, ["train", "--config", str(preset), "--data-dir",
                                       str(tmp_path / "none"), "--out", str(tmp_path / "m.npz")])
    assert result.exit_code == 1 and f"{preset}: " in result.output, result.output[:300]
    assert message in result.output and result.output.count("\n") == 1
    assert len(result.output) < 400, "the message repeats a hostile value in full"


def test_eval_of_a_checkpoint_with_a_bad_saved_config(tiny_mnist, tmp_path):
    out = tmp_path / "m.npz"
    _train(tiny_mnist, out)
    ckpt = checkpoint.load(out)
    ckpt.meta["config"]["val_size"] = "lots"
    checkpoint.save(out, ckpt.net, ckpt.meta)
    result = CliRunner().invoke(main, ["eval", "--model", str(out), "--data-dir",
                                       str(tiny_mnist), "--split", "val"])
    assert result.exit_code == 1 and "its training config is unusable" in result.output
    assert "lots" in result.output
    assert result.output.count("\n") == 1
    result = CliRunner().invoke(main, ["eval", "--model", str(out), "--data-dir",
                                       str(tiny_mnist)])
    assert result.exit_code == 0


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


def test_weights_that_overflow_are_one_line(tiny_mnist, tmp_path):
    net = MLP([784, 8, 10])
    for W in net.W:
        W *= np.float32(1e20)                    # finite weights; the logits overflow
    model = tmp_path / "huge.npz"
    checkpoint.save(model, net, {"input_scale": 255.0})
    good, _ = write_bad_images(tmp_path)
    for args in (["predict", str(good)], ["eval", "--data-dir", str(tiny_mnist)]):
        result = CliRunner().invoke(main, [*args, "--model", str(model)])
        assert result.exit_code == 1 and "outputs overflow float32" in result.output
        assert result.output.count("\n") == 1 and "Traceback" not in result.output



def test_committees_in_eval_and_predict(tiny_mnist, tmp_path):
    for seed in (0, 1):
        _train(tiny_mnist, tmp_path / f"m{seed}.npz", "--seed", str(seed))
    models = ["--model", str(tmp_path / "m0.npz"), "--model", str(tmp_path / "m1.npz")]
    result = CliRunner().invoke(main, ["eval", *models, "--data-dir", str(tiny_mnist), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    alone = [json.loads(CliRunner().invoke(main, ["eval", "--model", str(tmp_path / f"m{s}.npz"),
                                                   "--data-dir", str(tiny_mnist), "--json"]
                                            ).stdout)["accuracy"] for s in (0, 1)]
    assert [m["accuracy"] for m in scores["members"]] == alone
    assert [m["model"] for m in scores["members"]] == [models[1], models[3]]
    table = CliRunner().invoke(main, ["eval", *models, "--data-dir", str(tiny_mnist)])
    assert table.stdout.startswith("committee accuracy") and "member " in table.stdout

    good, _ = write_bad_images(tmp_path)
    rows = [json.loads(CliRunner().invoke(main, ["predict", *m, str(good), "--json",
                                                 "--top-k", "10"]).stdout)[0]
            for m in (models[:2], models[2:], models)]
    for digit in range(10):
        probabilities = [dict(r["top"])[digit] for r in rows]
        assert abs(probabilities[2] - (probabilities[0] + probabilities[1]) / 2) < 1e-6

    ckpt = checkpoint.load(tmp_path / "m1.npz")
    checkpoint.save(tmp_path / "m1.npz", ckpt.net, {**ckpt.meta, "input_scale": 1.0})
    result = CliRunner().invoke(main, ["eval", *models, "--data-dir", str(tiny_mnist)])
    assert result.exit_code == 1 and "disagree on input scaling" in result.output
    assert result.output.count("\n") == 1
