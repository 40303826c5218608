"""`mlp export`: a network or a committee written as ONNX; bad models and outputs one line;
the missing extra named."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner

from mnist_mlp import checkpoint, export
from mnist_mlp.cli import main
from mnist_mlp.dataset import DataSource, to_input

from ..onnx_runner import perturbed_copy, run_onnx, without_onnx


def _cli(*args: str | Path, expect: int):
    result = CliRunner().invoke(main, ["export", *map(str, args)])
    assert result.exit_code == expect, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
    return result


def _one_error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_cli_exports_a_network_and_a_committee(real_model, real_mnist, tmp_path):
    out = tmp_path / "out" / "m.onnx"
    result = _cli("--model", real_model, out, expect=0)
    assert result.output.startswith(f"saved {out} (") and "784-128-10" in result.output
    member = tmp_path / "perturbed.npz"
    perturbed = perturbed_copy(checkpoint.load(real_model), member)
    result = _cli("--model", real_model, "--model", member, out, "--overwrite", expect=0)
    assert "committee of 2" in result.output
    model = onnx.load(out)
    members = json.loads({p.key: p.value for p in model.metadata_props}["members"])
    assert [m["name"] for m in members] == [str(real_model), str(member)]
    images, _ = DataSource(real_mnist).load("test", flat=False)
    pixels = images[:300].reshape(300, -1).astype(np.float32)
    committee = export.network({"a": checkpoint.load(real_model), "b": perturbed})
    expected = committee.predict_proba(to_input(pixels, committee.input_scale))
    assert np.abs(run_onnx(model, pixels)[1] - expected).max() < 1e-5


def test_cli_refuses_bad_models_in_one_line(real_model, tmp_path):
    out = tmp_path / "m.onnx"
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(real_model.read_bytes()[:20_000])
    text = tmp_path / "notes.npz"
    text.write_text("not a checkpoint\n")
    for bad, reason in ((tmp_path / "none.npz", "no such checkpoint"),
                        (truncated, "not a readable .npz"), (text, "not a readable .npz")):
        line = _one_error_line(_cli("--model", real_model, "--model", bad, out, expect=1))
        assert str(bad) in line and reason in line
    assert not out.exists()


def test_cli_refuses_bad_outputs_in_one_line(real_model, tmp_path):
    fifo = tmp_path / "fifo.onnx"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.onnx"
    folder.mkdir()
    dangling = tmp_path / "dangling.onnx"
    dangling.symlink_to(tmp_path / "gone" / "m.onnx")
    existing = tmp_path / "existing.onnx"
    existing.write_bytes(b"keep me")
    unwritable = Path("/sys/mnist-mlp-export-test.onnx")     # root cannot create files there
    for out, reason in ((fifo, "is a FIFO"), (folder, "is a folder"),
                        (dangling, "which does not exist"),
                        (existing, "already exists; --overwrite replaces it"),
                        (unwritable, "Permission denied")):
        overwrite = [] if out is existing else ["--overwrite"]
        line = _one_error_line(_cli("--model", real_model, out, *overwrite, expect=1))
        assert line.startswith(f"Error: {out}: ") and reason in line
    assert existing.read_bytes() == b"keep me" and not (tmp_path / "gone").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dangling.onnx", "existing.onnx", "fifo.onnx", "folder.onnx"]


def test_cli_without_onnx_says_which_extra(real_model, tmp_path):
    result = without_onnx("from mnist_mlp.cli import entry\n"
                           f"sys.argv = ['mlp', 'export', '--model', {str(real_model)!r}, "
                           f"{str(tmp_path / 'm.onnx')!r}]\n"
                           "entry()\n")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "Error: mlp export needs the onnx extra: pip install 'mnist-mlp[onnx]'"]
