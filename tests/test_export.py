"""ONNX export: the graph run by ONNX Runtime against the NumPy network on real MNIST,
the metadata, the input scale, atomic saving and its refusals."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from mnist_mlp import checkpoint, export, metrics
from mnist_mlp.dataset import DataSource, to_input
from mnist_mlp.network import MLP, Committee, softmax

from .onnx_runner import perturbed_copy, run_onnx, without_onnx


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
    return perturbed_copy(quick, tmp_path_factory.mktemp("perturbed") / "perturbed.npz")


def _check_against_numpy(members, mnist_test):
    model = export.to_onnx(members)
    pixels, y = mnist_test
    logits, probs = run_onnx(model, pixels)                                 # 10,000 in one batch
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
        one_logits, one_probs = run_onnx(model, pixels[i:i + 1])
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
    _, committee = run_onnx(export.to_onnx({"a": quick, "b": perturbed}), pixels)
    _, p1 = run_onnx(export.to_onnx(quick), pixels)
    _, p2 = run_onnx(export.to_onnx(perturbed), pixels)
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
        size, diff = export.write(models, path)
        assert size == path.stat().st_size and 0 <= diff < 1e-5
        model = onnx.load(path)
        assert model == export.to_onnx(models)
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
        assert props["dataset"] == "mnist" and json.loads(props["class_names"]) == list(
            "0123456789")
        assert export.session(path).get_modelmeta().custom_metadata_map == props
        described = json.loads(props["members"])
        assert [m.get("name") for m in described] == ([None] if n == 1 else ["q.npz", "p.npz"])
        assert [m["sizes"] for m in described] == [[784, 128, 10]] * n
        assert [m["input_scale"] for m in described] == [255] * n
        assert described[0]["preset"] == "quick"
        assert described[0]["epoch"] == quick.meta["epoch"]
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
    _, expected = run_onnx(export.to_onnx(quick), pixels)
    _, got = run_onnx(export.to_onnx(raw), pixels)
    assert json.loads(export.metadata(raw)["members"])[0]["input_scale"] == 1
    assert np.abs(got - expected).max() < 1e-5
    _, unscaled = run_onnx(export.to_onnx(raw), pixels / np.float32(255))   # the scale matters
    assert np.abs(unscaled - expected).max() > 0.1


def test_committee_members_keep_their_own_input_scales(quick, raw, perturbed, mnist_test):
    pixels = mnist_test[0][:2000]
    mixed = {"raw": raw, "perturbed": perturbed}
    _, got = run_onnx(export.to_onnx(mixed), pixels)
    _, expected = run_onnx(export.to_onnx({"quick": quick, "perturbed": perturbed}), pixels)
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


def test_writes_are_atomic_and_refuse_special_outputs(quick, tmp_path):
    out = tmp_path / "m.onnx"
    export.write(quick, out)
    first = out.read_bytes()
    with pytest.raises(FileExistsError):
        export.write(quick, out)
    overflowing = checkpoint.Checkpoint(MLP.from_params(      # finite weights, no answer
        [W * np.float32(1e37) for W in quick.net.W], quick.net.b, 255), quick.meta)
    with pytest.raises(export.ExportError, match="NumPy: the network's outputs overflow"):
        export.write(overflowing, out, overwrite=True)
    assert out.read_bytes() == first
    export.write({"a": quick, "b": quick}, out, overwrite=True)
    assert out.read_bytes() != first and onnx.load(out).graph.node
    link = tmp_path / "link.onnx"
    link.symlink_to(tmp_path / "elsewhere" / "missing.onnx")
    fifo = tmp_path / "fifo.onnx"
    os.mkfifo(fifo)
    for bad, reason in ((fifo, "FIFO"), (tmp_path, "folder"), (link, "which does not exist")):
        with pytest.raises(OSError, match=reason):
            export.write(quick, bad, overwrite=True)
    assert not (tmp_path / "elsewhere").exists()
    with pytest.raises(PermissionError):                     # root cannot write there either
        export.write(quick, Path("/sys/mnist-mlp-export-test.onnx"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo.onnx", "link.onnx", "m.onnx"]


def test_a_redirected_standard_stream_is_not_replaced(tmp_path):
    """``mlp export --overwrite /dev/stdout >> keep.txt`` would replace keep.txt."""
    model = tmp_path / "m.npz"
    checkpoint.save(model, MLP([784, 4, 10], seed=0), {"input_scale": 255.0})
    keep = tmp_path / "keep.txt"
    for stream in ("/dev/stdout", "/dev/stderr", "/dev/fd/1"):
        keep.write_text("kept\n")
        with open(keep, "ab") as appended:
            done = subprocess.run(
                [sys.executable, "-m", "mnist_mlp", "export", "--model", str(model),
                 "--overwrite", stream], stdout=appended,
                stderr=appended if stream == "/dev/stderr" else subprocess.PIPE, timeout=120)
        assert done.returncode == 1
        error = (keep.read_text().split("\n", 1)[1] if stream == "/dev/stderr"
                 else done.stderr.decode())
        assert keep.read_text().startswith("kept\n")
        assert error == (f"Error: {stream}: is a stream of this process; this is written to "
                         "files only (give a file name)\n")


def test_an_export_that_would_not_fit_is_refused_before_the_graph_is_built(quick, tmp_path):
    need = export.export_memory(quick)
    assert need >= 3 * sum(p.nbytes for p in quick.net.params)
    out = tmp_path / "m.onnx"
    for attempt in (lambda: export.write(quick, out, available=need - 1),
                    lambda: export.to_onnx(quick, available=need - 1)):
        with pytest.raises(export.ExportError, match=r"exporting 0.00 GiB of weights takes "
                           r"about \d+ MiB of memory beside the model, more than the \d+ MiB"):
            attempt()
    assert list(tmp_path.iterdir()) == []
    export.write(quick, out, available=need)
    assert out.exists()


def _in_child(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``code`` after a 784-4096-4096-10 checkpoint (80 MB of weights) is loaded as
    ``ckpt``, with ``status()`` giving /proc/self/status as a dict of kB."""
    model = tmp_path / "wide.npz"
    checkpoint.save(model, MLP([784, 4096, 4096, 10], seed=0), {"input_scale": 255.0})
    head = ("import resource, sys\nfrom mnist_mlp import checkpoint, export\n"
            "def status():\n    return {k: int(v.split()[0]) for k, v in (l.split(':', 1) "
            "for l in open('/proc/self/status')) if v.strip().endswith('kB')}\n"
            f"ckpt = checkpoint.load({str(model)!r})\nexport.to_onnx(checkpoint.Checkpoint("
            "checkpoint.MLP([784, 1, 10]), {}))\n")             # onnx's own memory in use
    return subprocess.run([sys.executable, "-c", head + code], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)


def test_the_estimate_covers_what_writing_takes(tmp_path):
    """Peak RSS while writing, beside the loaded model: at most the estimate (it took twice
    the weights more when the graph, the checker and ONNX Runtime each kept their copy)."""
    done = _in_child(
        "before = status()['VmRSS']\n"
        "open('/proc/self/clear_refs', 'w').write('5')            # VmHWM from here\n"
        "export.write(ckpt, 'wide.onnx')\n"
        "print(status()['VmHWM'] - before, export.export_memory(ckpt) // 1024)\n", tmp_path)
    assert done.returncode == 0, done.stderr
    peak, estimate = map(int, done.stdout.split())
    assert 3 * 80_000 < estimate and peak <= estimate, (peak, estimate)


_LIMITED = ("limit = status()['VmSize'] * 1024 + (150 << 20)   # less than the graph and "
            "its bytes\nresource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))\n")


def test_an_address_space_limit_is_counted_beside_what_is_in_use(tmp_path):
    done = _in_child(_LIMITED + "try:\n    export.write(ckpt, 'wide.onnx')\n"
                     "except export.ExportError as exc:\n    print(exc)\n", tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith("exporting 0.07 GiB of weights takes about "), done.stdout
    have = re.search(r"more than the (\d+) MiB available", done.stdout)
    assert have and int(have[1]) <= 150, done.stdout   # the limit less what is mapped already
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wide.npz"]


def test_running_out_of_memory_while_writing_is_an_export_error(tmp_path):
    """Told it fits (``available``), the export runs out of memory anyway: one error."""
    done = _in_child(_LIMITED + "try:\n    export.write(ckpt, 'wide.onnx', available=1 << 40)\n"
                     "except export.ExportError as exc:\n    print(exc)\n", tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith("not enough memory to build the ONNX model (")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wide.npz"]


def test_imports_without_onnx_and_says_what_to_install():
    result = without_onnx("from mnist_mlp import export\n"
                           "from mnist_mlp.checkpoint import Checkpoint\n"
                           "from mnist_mlp.network import MLP\n"
                           "try:\n"
                           "    export.to_onnx(Checkpoint(MLP([784, 4, 10]), {}))\n"
                           "except export.OnnxMissing as exc:\n"
                           "    print(exc)\n")
    assert result.returncode == 0, result.stderr
    assert "pip install 'mnist-mlp[onnx]'" in result.stdout


def test_a_fashion_models_classes_and_a_mixed_committee(quick):
    fashion = dataclasses.replace(quick, meta={**quick.meta, "dataset": "fashion-mnist"})
    props = export.metadata(fashion)
    assert props["dataset"] == "fashion-mnist"
    assert json.loads(props["class_names"])[9] == "Ankle boot"
    with pytest.raises(export.ExportError, match="different datasets"):
        export.metadata({"a.npz": quick, "b.npz": fashion})
    with pytest.raises(export.ExportError, match="no dataset 'emnist'"):
        export.metadata(dataclasses.replace(quick, meta={"dataset": "emnist"}))
