"""Checkpoints: round trip, atomic writes, and hostile files refused before they cost memory."""

from __future__ import annotations

import io
import json
import math
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnist_mlp import checkpoint
from mnist_mlp.network import MLP

META = {"input_scale": 255.0}


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.npz"
    net = MLP([784, 16, 10], seed=3)
    checkpoint.save(path, net, META, {"t": np.array(5), "m.0": np.ones((16, 784))},
                    {"order": np.arange(10)})
    return path


def _arrays(path) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def _rewrite(src, dst, meta_change=None, **arrays):
    """A copy of ``src`` with metadata keys changed and arrays replaced (None: removed)."""
    items = _arrays(src)
    meta = json.loads(str(items["meta"]))
    meta.update(meta_change or {})
    items["meta"] = np.array(json.dumps(meta))
    for name, value in arrays.items():
        name = name.replace("_", ".")
        if value is None:
            del items[name]
        else:
            items[name] = value
    np.savez(dst, **items)
    return dst


def test_round_trip(good):
    ckpt = checkpoint.load(good, with_state=True)
    net = MLP([784, 16, 10], seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(ckpt.net.params, net.params))
    assert ckpt.net.sizes == [784, 16, 10] and ckpt.input_scale == 255.0
    assert int(ckpt.optimizer_state["t"]) == 5 and ckpt.extra["order"].tolist() == list(range(10))
    plain = checkpoint.load(good)
    assert plain.optimizer_state == {} and plain.extra == {}


class Interrupted:
    """An array that is interrupted (Ctrl-C) while it is being written."""

    def __array__(self, dtype=None, copy=None):
        raise KeyboardInterrupt


def test_writes_are_atomic(tmp_path):
    path = tmp_path / "m.npz"
    checkpoint.save(path, MLP([784, 3, 10]), {**META, "note": "first"})
    with pytest.raises(KeyboardInterrupt):         # the weights written, then interrupted
        checkpoint.save(path, MLP([784, 3, 10]), {**META, "note": "second"},
                        extra={"late": Interrupted()})
    assert checkpoint.load(path).meta["note"] == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


@pytest.mark.parametrize("change, message", [
    ({"sizes": [100, 10]}, "not a network for MNIST"),
    ({"sizes": [784, 5]}, "not a network for MNIST"),
    ({"sizes": [784, 20]}, "not a network for MNIST"),
    ({"sizes": [784, 0, 10]}, "not a network for MNIST"),
    ({"sizes": [784, 10**12, 10]}, "not a network for MNIST"),
    ({"sizes": [784, 16.0, 10]}, "not a network for MNIST"),
    ({"sizes": [784, True, 10]}, "not a network for MNIST"),
    ({"sizes": "784-16-10"}, "not a network for MNIST"),
    ({"sizes": [784] + [16] * 40 + [10]}, "not a network for MNIST"),
    ({"input_scale": 0}, r"input_scale 0 is not a pixel divisor in \[1, 65535\]"),
    ({"input_scale": -255}, "is not a pixel divisor"),
    ({"input_scale": 1e-300}, "is not a pixel divisor"),
    ({"input_scale": "255"}, "is not a pixel divisor"),
    ({"input_scale": None}, "is not a pixel divisor"),
    ({"format_version": 99}, "checkpoint format 99"),
    ({"activation": "tanh"}, "unknown activation"),
    ({"dataset": "kmnist"}, "no dataset 'kmnist'; choose one of mnist, fashion-mnist"),
    ({"dataset": 5}, "its dataset '5' is not a name"),
])
def test_metadata_is_checked(good, tmp_path, change, message):
    bad = _rewrite(good, tmp_path / "bad.npz", change)
    with pytest.raises(checkpoint.CheckpointError, match=message):
        checkpoint.load(bad)


def test_non_finite_weights_are_refused(good, tmp_path):
    W = _arrays(good)["W.1"]
    W[3, 4] = np.nan
    with pytest.raises(checkpoint.CheckpointError, match="W.1 holds NaN or infinite"):
        checkpoint.load(_rewrite(good, tmp_path / "nan.npz", W_1=W))


def test_deeply_nested_metadata_is_a_clean_error(good, tmp_path):
    items = _arrays(good)
    items["meta"] = np.array("[" * 100_000 + "]" * 100_000)
    np.savez(tmp_path / "deep.npz", **items)
    with pytest.raises(checkpoint.CheckpointError, match="not an mnist-mlp checkpoint"):
        checkpoint.load(tmp_path / "deep.npz")


def _npy_header(shape, dtype="<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_a_member_declaring_terabytes_is_not_allocated(good, tmp_path):
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            if info.filename == "W.0.npy":   # 3.6 TiB declared, a few bytes present
                dst.writestr(info.filename, _npy_header((1 << 20, 1 << 20, 900)) + b"\0" * 64)
            else:
                dst.writestr(info, src.read(info))
    start = time.monotonic()
    with pytest.raises(checkpoint.CheckpointError, match=r"W.0 is float32 \(1048576, "):
        checkpoint.load(path)
    assert time.monotonic() - start < 5


def test_a_zip_bomb_member_is_not_read_in_full(good, tmp_path):
    path = tmp_path / "bomb.npz"
    W0 = _arrays(good)["W.0"]
    padding = b"\0" * (64 << 20)                  # 64 MiB of zeros: 64 KiB compressed
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename == "W.0.npy":
                body = _npy_header(W0.shape) + W0.tobytes() + padding
            dst.writestr(info.filename, body)
            if info.filename == "extra.order.npy":  # an extra too: ignored unless resuming
                dst.writestr("extra.junk.npy", _npy_header((1 << 31,), "<f8") + padding)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(checkpoint.CheckpointError, match="W.0 declares"):
        checkpoint.load(path)


def _deflated_zeros(path, src, name, header, n_bytes):
    """A copy of checkpoint ``src`` with member ``name``: ``header`` then ``n_bytes`` zeros,
    deflated (a megabyte on disk for a gigabyte declared)."""
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            if info.filename != name + ".npy":
                new.writestr(info.filename, old.read(info))
        with new.open(name + ".npy", "w", force_zip64=True) as f:
            f.write(header)
            zeros = b"\0" * (1 << 22)
            for start in range(0, n_bytes, len(zeros)):
                f.write(zeros[:n_bytes - start])
    return path


def _load_measured(path, **kwargs):
    """``checkpoint.load``'s CheckpointError, and the seconds and traced bytes it took."""
    tracemalloc.start()
    start = time.monotonic()
    try:
        with pytest.raises(checkpoint.CheckpointError) as refused:
            checkpoint.load(path, **kwargs)
        return refused.value, time.monotonic() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_metadata_is_bounded_in_bytes_not_characters(good, tmp_path):
    chars = 25_000_000                            # one 0-d string of 100 MB: 100 KB deflated
    path = _deflated_zeros(tmp_path / "meta.npz", good, "meta",
                           _npy_header((), f"<U{chars}"), 4 * chars)
    error, seconds, peak = _load_measured(path)
    assert "meta declares 100,000,128 bytes, more than the 1,048,576 it may hold" in str(error)
    assert seconds < 1 and peak < 8 << 20
    header_only = _deflated_zeros(tmp_path / "claim.npz", good, "meta",
                                  _npy_header((), "<U500000000"), 64)
    with pytest.raises(checkpoint.CheckpointError, match=r"meta is <U500000000 \(\): "
                       "2,000,000,000 bytes, more than the 1,048,576 it may hold"):
        checkpoint.load(header_only)
    just_over = _rewrite(good, tmp_path / "long.npz", {"note": "x" * (1 << 18)})
    with pytest.raises(checkpoint.CheckpointError, match="more than the 1,048,576 it may hold"):
        checkpoint.load(just_over)


def test_integer_weights_are_refused(good, tmp_path):
    W = _arrays(good)["W.0"]
    bad = _rewrite(good, tmp_path / "int.npz", W_0=np.round(W * 100).astype(np.int32))
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"W.0 is int32 \(16, 784\), the metadata calls for f"):
        checkpoint.load(bad)


def test_unknown_state_is_refused_before_any_state_is_read(good, tmp_path):
    path = _deflated_zeros(tmp_path / "junk.npz", good, "opt.junk",
                           _npy_header((1 << 25,), "<f8"), 8 << 25)   # 256 MB declared
    error, seconds, peak = _load_measured(path, with_state=True)
    assert "unexpected saved state ['opt.junk'] for sizes [784, 16, 10]" in str(error)
    assert seconds < 1 and peak < 8 << 20


@pytest.mark.parametrize("name, shape, dtype, message", [
    ("opt.m.0", (1 << 25,), "<f8", r"opt.m.0 is float64 \(33554432,\), the metadata calls "
                                   r"for f \(16, 784\)"),
    ("opt.m.3", (10,), "<i8", r"opt.m.3 is int64 \(10,\), the metadata calls for f \(10,\)"),
    ("opt.m.4", (10,), "<f4", r"unexpected saved state \['opt.m.4'\]"),
    ("opt.t", (3,), "<i8", r"opt.t is int64 \(3,\), the metadata calls for i/u \(\)"),
    ("opt.v.0", (16, 784), "<f16", "more than the 100,352 it may hold"),
    ("extra.order", (1 << 25,), "<i8", "more than the 134,217,728 it may hold"),
    ("extra.order", (4, 4), "<i8", "not a sample order"),
])
def test_state_names_and_shapes_follow_the_network(good, tmp_path, name, shape, dtype, message):
    path = _deflated_zeros(tmp_path / "state.npz", good, name, _npy_header(shape, dtype),
                           min(math.prod(shape) * np.dtype(dtype).itemsize, 1 << 16))
    assert checkpoint.load(path).net.sizes == [784, 16, 10]     # state unread: it loads
    with pytest.raises(checkpoint.CheckpointError, match=message):
        checkpoint.load(path, with_state=True)


def test_state_that_would_not_fit_in_memory_is_refused(good, monkeypatch):
    ckpt = checkpoint.load(good, with_state=True)   # the state's bytes count towards memory
    assert set(ckpt.optimizer_state) == {"t", "m.0"}
    weights_only = checkpoint.load_memory([784, 16, 10])
    monkeypatch.setattr(checkpoint, "available_memory", lambda: weights_only + 1000)
    checkpoint.load(good)
    with pytest.raises(checkpoint.CheckpointError, match="network and its saved state needs"):
        checkpoint.load(good, with_state=True)


def test_extras_are_ignored_unless_resuming(good, tmp_path):
    path = tmp_path / "junk.npz"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        dst.writestr("extra.junk.npy", _npy_header((1 << 31,), "<f8") + b"\0" * 1024)
    assert checkpoint.load(path).net.sizes == [784, 16, 10]   # not read at all
    with pytest.raises(checkpoint.CheckpointError, match=r"state \['extra.junk'\] for sizes"):
        checkpoint.load(path, with_state=True)


def test_pickled_objects_are_refused(good, tmp_path):
    evil = np.array([{"code": "anything"}], dtype=object)
    for name in ("extra.order", "W.0", "meta"):
        items = _arrays(good)
        items[name] = evil
        np.savez(tmp_path / "evil.npz", **items)   # numpy pickles object arrays on save
        with pytest.raises(checkpoint.CheckpointError, match="holds Python objects"):
            checkpoint.load(tmp_path / "evil.npz", with_state=True)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_checkpoints_raise_only_checkpoint_errors(good, tmp_path, data):
    raw = bytearray(good.read_bytes())
    how = data.draw(st.sampled_from(["flip", "cut", "splice"]))
    if how == "flip":
        for i in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=8)):
            raw[i] = data.draw(st.integers(0, 255))
    elif how == "cut":
        raw = raw[:data.draw(st.integers(0, len(raw)))]
    else:
        at = data.draw(st.integers(0, len(raw)))
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=64))
    path = tmp_path / "fuzzed.npz"
    path.write_bytes(bytes(raw))
    try:
        ckpt = checkpoint.load(path, with_state=True)
    except checkpoint.CheckpointError:
        return
    assert ckpt.net.sizes[0] == 784 and ckpt.net.sizes[-1] == 10
    assert all(np.isfinite(p).all() for p in ckpt.net.params)


def test_a_network_saves_its_own_input_scale(tmp_path):
    net = MLP.from_params(MLP([784, 4, 10]).W, MLP([784, 4, 10]).b, input_scale=1)
    checkpoint.save(tmp_path / "raw.npz", net, {"input_scale": 255.0, "note": "kept"})
    ckpt = checkpoint.load(tmp_path / "raw.npz")
    assert ckpt.input_scale == ckpt.net.input_scale == ckpt.meta["input_scale"] == 1
    assert ckpt.meta["note"] == "kept"


def test_a_committee_of_checkpoints_keeps_each_members_scale(good, tmp_path):
    ckpt = checkpoint.load(good)
    raw = MLP.from_params([ckpt.net.W[0] / np.float32(255), ckpt.net.W[1]], ckpt.net.b,
                          input_scale=1)
    checkpoint.save(tmp_path / "raw.npz", raw, {"note": "raw"})
    committee = checkpoint.load_committee([good, tmp_path / "raw.npz", good])
    assert committee.meta["members"] == [str(good), str(tmp_path / "raw.npz")]
    assert committee.input_scale == 255.0 and committee.meta["sizes"] == [784, 16, 10]
    assert [m.input_scale for m in committee.net.members.values()] == [255.0, 1.0]
    pixels = np.random.default_rng(0).integers(0, 256, (8, 784)).astype(np.float32)
    np.testing.assert_allclose(committee.net.predict_proba(pixels / 255),
                               ckpt.net.predict_proba(pixels / 255), rtol=1e-5)
    assert checkpoint.load_committee([good]).net.__class__ is MLP
    with pytest.raises(checkpoint.CheckpointError, match="none.npz: no such checkpoint"):
        checkpoint.load_committee([good, tmp_path / "none.npz"])


def test_a_committee_member_naming_no_dataset_is_one_error(tmp_path):
    from mnist_mlp.network import MLP

    checkpoint.save(tmp_path / "a.npz", MLP([784, 8, 10]), {})
    checkpoint.save(tmp_path / "b.npz", MLP([784, 8, 10]), {"dataset": ["mnist"]})
    with pytest.raises(checkpoint.CheckpointError, match="is not a name"):
        checkpoint.load_committee([tmp_path / "a.npz", tmp_path / "b.npz"])
