"""ONNX export: the graph run by ONNX Runtime against the NumPy network on real MNIST,
the metadata, the input scale, atomic saving and its refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from mnist_mlp import checkpoint, export, metrics
from mnist_mlp.cli import main
from mnist_mlp.dataset import DataSource, to_input
from mnist_mlp.network import MLP, Committee, softmax


def _run(model: onnx.ModelProto, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ONNX Runtime's logits and probabilities (n, 10) for pixels (n, 784), as a user runs it."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    logits, probs = sess.run(["logits", "probabilities"], {"pixels": pixels})
    return logits, probs


@pytest.fixture(scope="module")
def mnist_test(real_mnist) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 test images as IDX bytes in float32 (n, 784), labels (n,)."""
    images, y = DataSource(real_mnist).load("test", flat=False)         # uint8 (n, 28, 28)
    return images.reshape(len(images), -1).astype(np.float32), y


@pytest.fixture(scope="module")
def quick(real_model) -> checkpoint.Checkpoint:
    return checkpoint.load(real_model)


@pytest.fixture(scope="module")
def perturbed(quick, tmp_path_factory) -> checkpoint.Checkpoint:
    """A second committee member: the quick model with noise on its weights, saved and loaded."""
    rng = np.random.default_rng(7)
    W = [w + rng.normal(0, 0.5 * w.std(), w.shape).astype(np.float32) for w in quick.net.W]
    path = tmp_path_factory.mktemp("perturbed") / "perturbed.npz"
    checkpoint.save(path, MLP.from_params(W, quick.net.b, quick.input_scale), quick.meta)
    return checkpoint.load(path)


def _check_against_numpy(members, mnist_test):
    model = export.to_onnx(members)
    pixels, y = mnist_test
    logits, probs = _run(model, pixels)                                 # 10,000 in one batch
    net = export.network(members)
    X = to_input(pixels, net.input_scale)
    expected = net.predict_proba(X)
    assert logits.shape == probs.shape == (10_000, 10) and probs.dtype == np.float32
    assert np.abs(probs - expected).max() < 1e-5
    assert np.allclose(logits, net.logits(X), rtol=1e-4, atol=1e-4)
    assert np.abs(softmax(logits) - probs).max() < 1e-5
    accuracy = metrics.accuracy(y, probs.argmax(axis=1))
    assert accuracy == metrics.evaluate(net, X, y)["accuracy"]
    for i in (0, 1234, 9999):                                           # batches of one
        one_logits, one_probs = _run(model, pixels[i:i + 1])
        assert one_probs.shape == (1, 10) and np.abs(one_probs - probs[i]).max() < 1e-6
        assert np.allclose(one_logits, logits[i], rtol=1e-5, atol=1e-5)
    return accuracy


def test_network_matches_numpy_on_the_test_set(quick, mnist_test):
    accuracy = _check_against_numpy(quick, mnist_test)
    assert accuracy > 0.9


def test_committee_matches_numpy_on_the_test_set(quick, perturbed, mnist_test):
    accuracy = _check_against_numpy({"quick": quick, "perturbed": perturbed}, mnist_test)
    pixels, y = mnist_test
    alone = [metrics.accuracy(y, c.net.predict(to_input(pixels, c.input_scale)))
             for c in (quick, perturbed)]
    assert alone[0] != alone[1] and accuracy > 0.9     # two different voters, one graph


def test_committee_graph_averages_the_members(quick, perturbed, mnist_test):
    pixels = mnist_test[0][:500]
    _, committee = _run(export.to_onnx({"a": quick, "b": perturbed}), pixels)
    _, p1 = _run(export.to_onnx(quick), pixels)
    _, p2 = _run(export.to_onnx(perturbed), pixels)
    assert np.abs(committee - (p1 + p2) / 2).max() < 1e-6
    assert isinstance(export.network({"a": quick, "b": perturbed}), Committee)


def test_contract_opset_ir_and_metadata_round_trip(quick, perturbed, real_model, tmp_path):
    log = real_model.parent / (real_model.stem + ".metrics.jsonl")
    kept = next(row for row in map(json.loads, log.read_text().splitlines())
                if row["epoch"] == quick.meta["epoch"])
    kept_score = max(v for v in (kept["val_accuracy"], kept.get("ema_val_accuracy"))
                     if v is not None)
    for models in (quick, {"q.npz": quick, "p.npz": perturbed}):
        n = 1 if models is quick else 2
        path = tmp_path / f"{n}.onnx"
        size = export.save(export.to_onnx(models), path)
        assert size == path.stat().st_size
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        assert model.ir_version == 7 and [(o.domain, o.version) for o in model.opset_import] == [
            ("", 13)]
        (inp,) = model.graph.input
        dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
        assert inp.name == "pixels" and dims == ["N", 784]
        assert [o.name for o in model.graph.output] == ["logits", "probabilities"]
        for out in model.graph.output:
            assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == [
                "N", 10]
        props = {p.key: p.value for p in model.metadata_props}
        assert props == export.metadata(models)
        assert export.session(path).get_modelmeta().custom_metadata_map == props
        described = json.loads(props["members"])
        assert [m.get("name") for m in described] == ([None] if n == 1 else ["q.npz", "p.npz"])
        assert [m["sizes"] for m in described] == [[784, 128, 10]] * n
        assert [m["input_scale"] for m in described] == [255] * n
        assert described[0]["preset"] == "quick"
        assert described[0]["kept_epoch"] == quick.meta["epoch"]
        assert described[0]["kept_val_accuracy"] == kept_score
        assert json.loads(props["input"])["shape"] == ["N", 784]
        assert props["model"] == ("network" if n == 1 else "committee")


@pytest.fixture(scope="module")
def raw(quick, tmp_path_factory) -> checkpoint.Checkpoint:
    """The quick model rewritten for inputs in [0, 255]: W0 / 255 and input_scale 1."""
    W = [quick.net.W[0] / np.float32(255), *quick.net.W[1:]]
    path = tmp_path_factory.mktemp("raw") / "raw.npz"
    checkpoint.save(path, MLP.from_params(W, quick.net.b, input_scale=1), quick.meta)
    return checkpoint.load(path)


def test_input_scale_is_applied_in_the_graph(quick, raw, mnist_test):
    pixels = mnist_test[0][:2000]
    _, expected = _run(export.to_onnx(quick), pixels)
    _, got = _run(export.to_onnx(raw), pixels)
    assert json.loads(export.metadata(raw)["members"])[0]["input_scale"] == 1
    assert np.abs(got - expected).max() < 1e-5
    _, unscaled = _run(export.to_onnx(raw), pixels / np.float32(255))   # the scale matters
    assert np.abs(unscaled - expected).max() > 0.1


def test_committee_members_keep_their_own_input_scales(quick, raw, perturbed, mnist_test):
    pixels = mnist_test[0][:2000]
    mixed = {"raw": raw, "perturbed": perturbed}
    _, got = _run(export.to_onnx(mixed), pixels)
    _, expected = _run(export.to_onnx({"quick": quick, "perturbed": perturbed}), pixels)
    assert np.abs(got - expected).max() < 1e-5
    assert export.verify(export.to_onnx(mixed), mixed, pixels) < 1e-5   # as NumPy's Committee


def test_verify_compares_with_numpy(quick, perturbed):
    model = export.to_onnx(quick)
    assert 0 <= export.verify(model, quick) < 1e-5
    with pytest.raises(export.ExportError, match="differ from NumPy's"):
        export.verify(model, perturbed)


def test_refuses_what_it_cannot_export(quick):
    with pytest.raises(export.ExportError, match="no checkpoint"):
        export.to_onnx({})
    committee = checkpoint.Checkpoint(Committee({"a": quick.net, "b": quick.net}), quick.meta)
    with pytest.raises(export.ExportError, match="not as a loaded committee"):
        export.to_onnx(committee)


def test_save_is_atomic_and_refuses_special_outputs(quick, tmp_path):
    model = export.to_onnx(quick)
    out = tmp_path / "m.onnx"
    export.save(model, out)
    first = out.read_bytes()
    with pytest.raises(FileExistsError):
        export.save(model, out)
    assert out.read_bytes() == first
    export.save(export.to_onnx({"a": quick, "b": quick}), out, overwrite=True)
    assert out.read_bytes() != first and onnx.load(out).graph.node
    link = tmp_path / "link.onnx"
    link.symlink_to(tmp_path / "elsewhere" / "missing.onnx")
    fifo = tmp_path / "fifo.onnx"
    os.mkfifo(fifo)
    for bad, reason in ((fifo, "FIFO"), (tmp_path, "folder"), (link, "which does not exist")):
        with pytest.raises(OSError, match=reason):
            export.save(model, bad, overwrite=True)
    assert not (tmp_path / "elsewhere").exists()
    with pytest.raises(PermissionError):                     # root cannot write there either
        export.save(model, Path("/sys/mnist-mlp-export-test.onnx"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo.onnx", "link.onnx", "m.onnx"]


def _without_onnx(code: str) -> subprocess.CompletedProcess:
    """Python running ``code`` where ``import onnx`` fails, as without the extra."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-c", "import sys; sys.modules['onnx'] = None\n"
                           + code], capture_output=True, text=True, env=env, timeout=60,
                          check=False)


def test_imports_without_onnx_and_says_what_to_install():
    result = _without_onnx("from mnist_mlp import export\n"
                           "from mnist_mlp.checkpoint import Checkpoint\n"
                           "from mnist_mlp.network import MLP\n"
                           "try:\n"
                           "    export.to_onnx(Checkpoint(MLP([784, 4, 10]), {}))\n"
                           "except export.OnnxMissing as exc:\n"
                           "    print(exc)\n")
    assert result.returncode == 0, result.stderr
    assert "pip install 'mnist-mlp[onnx]'" in result.stdout


# ---------------------------------------------------------------- mlp export

def _cli(*args: str | Path, expect: int):
    result = CliRunner().invoke(main, ["export", *map(str, args)])
    assert result.exit_code == expect, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
    return result


def _one_error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_cli_exports_a_network_and_a_committee(real_model, perturbed, mnist_test, tmp_path):
    out = tmp_path / "out" / "m.onnx"
    result = _cli("--model", real_model, out, expect=0)
    assert result.output.startswith(f"saved {out} (") and "784-128-10" in result.output
    member = tmp_path / "perturbed.npz"
    checkpoint.save(member, perturbed.net, perturbed.meta)
    result = _cli("--model", real_model, "--model", member, out, "--overwrite", expect=0)
    assert "committee of 2" in result.output
    model = onnx.load(out)
    members = json.loads({p.key: p.value for p in model.metadata_props}["members"])
    assert [m["name"] for m in members] == [str(real_model), str(member)]
    pixels = mnist_test[0][:300]
    committee = export.network({"a": checkpoint.load(real_model), "b": perturbed})
    expected = committee.predict_proba(to_input(pixels, committee.input_scale))
    assert np.abs(_run(model, pixels)[1] - expected).max() < 1e-5


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
    result = _without_onnx("from mnist_mlp.cli import entry\n"
                           f"sys.argv = ['mlp', 'export', '--model', {str(real_model)!r}, "
                           f"{str(tmp_path / 'm.onnx')!r}]\n"
                           "entry()\n")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "Error: mlp export needs the onnx extra: pip install 'mnist-mlp[onnx]'"]
