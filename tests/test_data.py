"""Data module: IDX parsing, verification, the download path over real HTTP, real MNIST."""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from mnist_mlp import data
from mnist_mlp.cli import main

from .conftest import idx_bytes, synthetic_digits


# ---------------------------------------------------------------- parsing

def test_parse_idx_reads_header_and_data():
    images, labels = synthetic_digits(5, seed=0)
    parsed = data.parse_idx(idx_bytes(images), data.IMAGES_MAGIC)
    assert parsed.shape == (5, 28, 28) and parsed.dtype == np.uint8
    np.testing.assert_array_equal(parsed, images)
    np.testing.assert_array_equal(data.parse_idx(idx_bytes(labels), data.LABELS_MAGIC), labels)


@pytest.mark.parametrize("payload, message", [
    (idx_bytes(np.zeros((3, 28, 28)))[:-1], r"header \(3, 28, 28\) calls for"),
    (idx_bytes(np.zeros((3, 28, 28))) + b"\0", r"header \(3, 28, 28\) calls for"),
    (idx_bytes(np.zeros(3)), "wrong magic number 0x00000801, expected 0x00000803"),
    (b"\0\0\x08", "too short for an IDX header"),
])
def test_parse_idx_rejects_malformed(payload, message):
    with pytest.raises(data.CorruptFile, match=message):
        data.parse_idx(payload, data.IMAGES_MAGIC, "x-images")


def _rename_all(folder: Path, style: str) -> None:
    """Rewrite tiny_mnist's .gz files as raw ('raw'), or in the dotted naming style."""
    for gz in list(folder.glob("*.gz")):
        base = gz.name.removesuffix(".gz")
        if style == "raw":
            (folder / base).write_bytes(gzip.decompress(gz.read_bytes()))
            gz.unlink()
        elif style == "dotted":
            gz.rename(folder / (base.replace("-idx", ".idx") + ".gz"))


@pytest.mark.parametrize("style", ["gz", "raw", "dotted"])
def test_load_mnist_any_storage_style(tiny_mnist, style):
    expected_images, expected_labels = synthetic_digits(600, seed=1)
    _rename_all(tiny_mnist, style)
    X, y = data.load_mnist("train", tiny_mnist)
    assert X.shape == (600, 784) and X.dtype == np.float32
    assert 0.0 <= X.min() and X.max() == 1.0
    np.testing.assert_array_equal(np.rint(X * 255).astype(np.uint8).reshape(-1, 28, 28),
                                  expected_images)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, expected_labels)
    images, _ = data.load_mnist("test", tiny_mnist, flat=False)
    assert images.shape == (200, 28, 28) and images.dtype == np.uint8


def test_validation_split_is_the_last_samples(tiny_mnist):
    X_all, y_all = data.load_mnist("train", tiny_mnist)
    X_tr, y_tr = data.load_mnist("train", tiny_mnist, val_size=100)
    X_val, y_val = data.load_mnist("val", tiny_mnist, val_size=100)
    np.testing.assert_array_equal(X_tr, X_all[:500])
    np.testing.assert_array_equal(X_val, X_all[500:])
    np.testing.assert_array_equal(np.concatenate([y_tr, y_val]), y_all)
    with pytest.raises(ValueError, match="leaves no training samples"):
        data.load_mnist("train", tiny_mnist, val_size=600)


def _damage(folder: Path, name: str, how: str) -> None:
    path = folder / f"{name}.gz"
    payload = gzip.decompress(path.read_bytes())
    if how == "truncated-gzip":
        path.write_bytes(path.read_bytes()[:200])
    elif how == "truncated-payload":
        path.write_bytes(gzip.compress(payload[:-10]))
    elif how == "flipped-byte":
        damaged = bytearray(payload)
        damaged[len(damaged) // 2] ^= 0xFF
        path.write_bytes(gzip.compress(bytes(damaged)))
    elif how == "wrong-magic":
        path.write_bytes(gzip.compress(b"\0\0\x08\x01" + payload[4:]))


@pytest.mark.parametrize("how, message", [
    ("truncated-gzip", "the gzip stream ends early"),
    ("truncated-payload", "bytes, MNIST's train-images-idx3-ubyte has"),
    ("flipped-byte", "does not match MNIST"),
    ("wrong-magic", "does not match MNIST"),
])
def test_damaged_file_is_named_with_the_fix(tiny_mnist, how, message):
    _damage(tiny_mnist, "train-images-idx3-ubyte", how)
    with pytest.raises(data.CorruptFile, match=message) as info:
        data.load_mnist("train", tiny_mnist)
    assert "train-images-idx3-ubyte.gz" in str(info.value)
    assert "mlp download" in str(info.value)


def _trust(monkeypatch, payloads: dict[str, bytes]) -> None:
    """Make the resource table expect these payloads, as if they were MNIST's."""
    resources = tuple(
        data.Resource(r.name, hashlib.sha256(payloads[r.name]).hexdigest(), r.split, r.kind,
                      r.count) if r.name in payloads else r
        for r in data.RESOURCES)
    monkeypatch.setattr(data, "RESOURCES", resources)


def test_structural_checks_behind_the_checksum(tiny_mnist, monkeypatch):
    """Counts, image size and label range are checked even for files whose checksum holds."""
    images, labels = synthetic_digits(600, seed=1)
    labels[7] = 12
    files = {"train-labels-idx1-ubyte": idx_bytes(labels)}
    for name, payload in files.items():
        (tiny_mnist / f"{name}.gz").write_bytes(gzip.compress(payload))
    _trust(monkeypatch, files)
    with pytest.raises(data.CorruptFile, match="label 12 outside 0-9"):
        data.load_mnist("train", tiny_mnist)
    bad_images = idx_bytes(np.zeros((600, 14, 56), np.uint8))
    (tiny_mnist / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bad_images))
    _trust(monkeypatch, {"train-images-idx3-ubyte": bad_images})
    with pytest.raises(data.CorruptFile, match=r"images of \(14, 56\) pixels, not 28x28"):
        data.load_mnist("train", tiny_mnist)


def test_missing_file_says_how_to_get_it(tmp_path):
    with pytest.raises(data.DatasetNotFound, match="mlp download"):
        data.load_mnist("test", tmp_path)


def test_every_load_checks_the_content(tiny_mnist):
    """A file changed in place, its size and modification time restored, is still caught."""
    data.load_mnist("test", tiny_mnist)
    path = tiny_mnist / "t10k-labels-idx1-ubyte.gz"
    before = path.stat()
    payload = bytearray(gzip.decompress(path.read_bytes()))
    payload[20] = (payload[20] + 1) % 10
    damaged = gzip.compress(bytes(payload), mtime=0)
    damaged = damaged[:before.st_size].ljust(before.st_size, b"\0")
    path.write_bytes(damaged)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    with pytest.raises(data.CorruptFile, match="t10k-labels-idx1-ubyte.gz"):
        data.load_mnist("test", tiny_mnist)


def test_cli_reports_damaged_file_in_one_line(tiny_mnist):
    _damage(tiny_mnist, "t10k-labels-idx1-ubyte", "flipped-byte")
    result = CliRunner().invoke(main, ["download", "--data-dir", str(tiny_mnist)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert "t10k-labels-idx1-ubyte.gz" in lines[0] and "mlp download" in lines[0]
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- download over HTTP

class Mirror:
    """A real HTTP server on 127.0.0.1 serving a dict of path -> bytes (404 otherwise)."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests = files, []
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                mirror.requests.append(self.path)
                body = mirror.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/mnist/"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def served(tiny_mnist):
    """tiny_mnist's files behind a local mirror; yields (mirror, empty target folder)."""
    files = {f"/mnist/{p.name}": p.read_bytes() for p in tiny_mnist.glob("*.gz")}
    mirror = Mirror(files)
    yield mirror, tiny_mnist.parent / "downloads"
    mirror.close()


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


GZ_NAMES = sorted(r.gz_name for r in data.RESOURCES)


def test_download_then_nothing_more(served):
    mirror, target = served
    report = data.ensure_mnist(target, (mirror.url,), progress=False)
    assert [status for _, status in report] == ["downloaded"] * 4
    assert _listing(target) == sorted(GZ_NAMES + [data.LOCK_NAME])
    assert len(mirror.requests) == 4
    report = data.ensure_mnist(target, ("http://127.0.0.1:9/",), progress=False)
    assert [status for _, status in report] == ["present"] * 4
    assert len(mirror.requests) == 4
    X, y = data.load_mnist("test", target)
    assert X.shape == (200, 784)


def test_falls_through_a_404_mirror(served):
    mirror, target = served
    missing = mirror.url.replace("/mnist/", "/elsewhere/")
    data.ensure_mnist(target, (missing, mirror.url), progress=False)
    assert _listing(target) == sorted(GZ_NAMES + [data.LOCK_NAME])


@pytest.mark.parametrize("damage", ["flipped", "not-gzip", "cut-short"])
def test_bad_payload_leaves_nothing_and_falls_through(served, damage):
    mirror, target = served
    bad = {}
    for path, body in mirror.files.items():
        payload = bytearray(gzip.decompress(body))
        payload[100] ^= 1
        bad[path.replace("/mnist/", "/bad/")] = {
            "flipped": gzip.compress(bytes(payload)),
            "not-gzip": bytes(payload),
            "cut-short": body[:len(body) // 2],
        }[damage]
    mirror.files.update(bad)
    bad_url = mirror.url.replace("/mnist/", "/bad/")
    with pytest.raises(data.DownloadError) as info:
        data.ensure_mnist(target, (bad_url,), progress=False)
    assert bad_url in str(info.value)
    assert _listing(target) == [data.LOCK_NAME], "a file that failed verification was left behind"
    data.ensure_mnist(target, (bad_url, mirror.url), progress=False)
    assert _listing(target) == sorted(GZ_NAMES + [data.LOCK_NAME])


def test_all_mirrors_fail_names_each(tmp_path):
    mirror = Mirror({})
    try:
        refused = "http://127.0.0.1:9/"
        with pytest.raises(data.DownloadError) as info:
            data.download_resource(data.RESOURCES[0], tmp_path, (refused, mirror.url),
                                   progress=False, retries=0)
    finally:
        mirror.close()
    message = str(info.value)
    assert f"{refused}train-images-idx3-ubyte.gz: could not connect" in message
    assert f"{mirror.url}train-images-idx3-ubyte.gz: HTTP 404" in message
    assert "--mirror" in message and str(tmp_path) in message
    assert _listing(tmp_path) == []


def test_unwritable_data_folder_is_one_line(served):
    mirror, target = served
    target.write_text("a file where the folder should be")
    result = CliRunner().invoke(main, ["download", "--data-dir", str(target / "sub"),
                                       "--mirror", mirror.url])
    assert result.exit_code == 1 and "cannot write" in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_cli_download(served, monkeypatch):
    mirror, target = served
    runner = CliRunner()
    result = runner.invoke(main, ["download", "--data-dir", str(target), "--mirror", mirror.url])
    assert result.exit_code == 0, result.output
    assert result.output.count("downloaded") == 4
    monkeypatch.setenv("MLP_MNIST_MIRRORS", "http://127.0.0.1:9/")
    result = runner.invoke(main, ["download", "--data-dir", str(target)])
    assert result.exit_code == 0 and result.output.count("present") == 4


def test_cli_download_failure_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MLP_MNIST_MIRRORS", "http://127.0.0.1:9/")
    monkeypatch.setattr(data, "_session", _no_retry_session(data._session))
    result = CliRunner().invoke(main, ["download", "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "http://127.0.0.1:9/" in result.output
    assert "MLP_MNIST_MIRRORS" in result.output


def _no_retry_session(real):
    return lambda retries: real(0)


# ---------------------------------------------------------------- real MNIST

def test_real_mnist(real_mnist):
    report = data.ensure_mnist(real_mnist, ("http://127.0.0.1:9/",), progress=False)
    assert [s for _, s in report] == ["present"] * 4
    X, y = data.load_mnist("train", real_mnist)
    assert X.shape == (60_000, 784) and X.dtype == np.float32
    assert float(X.min()) == 0.0 and float(X.max()) == 1.0
    counts = np.bincount(y, minlength=10)
    assert counts.sum() == 60_000
    assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    images, y_test = data.load_mnist("test", real_mnist, flat=False)
    assert images.shape == (10_000, 28, 28)
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974,
                                            1009]


def test_real_mnist_download_from_local_mirror(real_mnist, tmp_path):
    files = {f"/m/{r.gz_name}": (real_mnist / r.gz_name).read_bytes() for r in data.RESOURCES}
    mirror = Mirror(files)
    try:
        url = mirror.url.replace("/mnist/", "/m/")
        data.ensure_mnist(tmp_path, (url,), progress=False)
    finally:
        mirror.close()
    assert _listing(tmp_path) == sorted(GZ_NAMES + [data.LOCK_NAME])


# ---------------------------------------------------------------- hostile files and mirrors

def test_a_gzip_bomb_stops_at_the_payload_size(tiny_mnist):
    path = tiny_mnist / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"\0" * (64 << 20)))    # 64 MiB of zeros, 64 KiB on disk
    resource = next(r for r in data.RESOURCES if r.name == "t10k-images-idx3-ubyte")
    fed = []
    real_take = data.PayloadDecoder._take
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(data.PayloadDecoder, "_take",
                      lambda self, out: fed.append(len(out)) or real_take(self, out))
        with pytest.raises(data.CorruptFile, match=f"longer than the {resource.size:,} bytes"):
            data.load_mnist("test", tiny_mnist)
    assert sum(fed) <= resource.size + 1, "decompressed past the payload's size"


def test_trailing_bytes_are_refused_by_load_and_download_alike(tiny_mnist, served):
    mirror, target = served
    path = tiny_mnist / "t10k-labels-idx1-ubyte.gz"
    padded = path.read_bytes() + b"trailing"
    path.write_bytes(padded)
    with pytest.raises(data.CorruptFile, match="data after the end of the gzip stream"):
        data.load_mnist("test", tiny_mnist)
    with pytest.raises(data.CorruptFile, match="data after the end of the gzip stream"):
        data.ensure_mnist(tiny_mnist, ("http://127.0.0.1:9/",), progress=False)
    mirror.files["/mnist/t10k-labels-idx1-ubyte.gz"] = padded
    with pytest.raises(data.DownloadError, match="data after the end of the gzip stream"):
        data.ensure_mnist(target, (mirror.url,), progress=False)
    assert not (target / "t10k-labels-idx1-ubyte.gz").exists()


@pytest.mark.parametrize("shape", [(2**31, 2**31, 4), (2**32 - 1, 2**32 - 1, 2**32 - 1)])
def test_overflowing_idx_headers_are_corrupt_files(shape):
    header = struct.pack(">I", data.IMAGES_MAGIC) + struct.pack(">3I", *shape)
    with pytest.raises(data.CorruptFile, match="calls for"):
        data.parse_idx(header + b"\0" * 64, data.IMAGES_MAGIC, "x")


def test_special_files_in_the_data_folder_are_refused(tiny_mnist):
    path = tiny_mnist / "t10k-images-idx3-ubyte.gz"
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(data.CorruptFile, match="is a FIFO, not a regular file"):
        data.load_mnist("test", tiny_mnist)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(payload=st.binary(max_size=200), magic=st.sampled_from([data.IMAGES_MAGIC,
                                                                data.LABELS_MAGIC]))
def test_fuzzed_idx_raises_only_corrupt_file(payload, magic):
    try:
        parsed = data.parse_idx(payload, magic, "fuzz")
    except data.CorruptFile:
        return
    assert parsed.dtype == np.uint8 and parsed.ndim == (magic & 0xFF)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.data())
def test_fuzzed_files_raise_only_corrupt_file(data_):
    images, labels = synthetic_digits(3, seed=0)
    payload = idx_bytes(labels)
    resource = data.Resource("t10k-labels-idx1-ubyte",
                             hashlib.sha256(payload).hexdigest(), "test", "labels", 3)
    raw = bytearray(data_.draw(st.sampled_from([gzip.compress(payload), payload])))
    for i in data_.draw(st.lists(st.integers(0, len(raw) - 1), max_size=4)):
        raw[i] = data_.draw(st.integers(0, 255))
    raw = raw[:data_.draw(st.integers(0, len(raw)))] + data_.draw(st.binary(max_size=8))
    decoder = data.PayloadDecoder(resource, "fuzz")
    try:
        for start in range(0, len(raw), 7):        # fed in pieces, as a download arrives
            decoder.feed(bytes(raw[start:start + 7]))
        got = decoder.finish()
    except data.CorruptFile:
        return
    assert got == payload


class HostileMirror:
    """A loopback server that misbehaves: sends forever, drips, or never answers."""

    def __init__(self, how: str):
        self.how, self.stop = how, threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        conns = []
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conns.append(conn)
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()
        for conn in conns:
            conn.close()

    def _answer(self, conn):
        try:
            conn.recv(65536)
            if self.how == "silent":
                self.stop.wait(30)
                return
            if self.how == "drip-headers":
                for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream" * 9:
                    if self.stop.wait(0.3):
                        return
                    conn.sendall(bytes([byte]))
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
            if self.how == "endless":
                block = os.urandom(1 << 16)
                head = gzip.compress(b"")[:10]        # a gzip header, then stored noise
                conn.sendall(head)
                while not self.stop.is_set():
                    conn.sendall(block)
            elif self.how == "drip":
                for byte in gzip.compress(b"\0" * 1000):
                    if self.stop.wait(0.3):
                        return
                    conn.sendall(bytes([byte]))
        except OSError:
            pass

    def close(self):
        self.stop.set()
        self.sock.close()


@pytest.mark.parametrize("how, message", [
    ("endless", "longer than the|sent more than|damaged gzip"),
    ("drip", "timed out: not complete after 2 s"),
    ("drip-headers", "timed out: not complete after 2 s"),
    ("silent", "timed out: connected, but the server sent nothing"),
])
def test_hostile_mirrors_fail_in_bounded_time(tmp_path, monkeypatch, how, message):
    monkeypatch.setattr(data, "READ_TIMEOUT_S", 1)
    mirror = HostileMirror(how)
    start = time.monotonic()
    try:
        with pytest.raises(data.DownloadError, match=message):
            data.download_resource(data.RESOURCES[3], tmp_path, (mirror.url,), progress=False,
                                   retries=0, deadline_s=2)
    finally:
        mirror.close()
    assert time.monotonic() - start < 10
    assert _listing(tmp_path) == [], "a partial download was left behind"


def test_mirror_credentials_are_never_shown(tmp_path):
    with pytest.raises(data.DownloadError) as info:
        data.download_resource(data.RESOURCES[3], tmp_path,
                               ("http://user:s3cret@127.0.0.1:9/",), progress=False, retries=0)
    assert "s3cret" not in str(info.value) and "http://***@127.0.0.1:9/" in str(info.value)


def test_stale_parts_of_a_killed_download_are_cleaned(served):
    mirror, target = served
    target.mkdir()
    stale = target / "t10k-images-idx3-ubyte.gz.k1ll3d.part"
    stale.write_bytes(b"half a download")
    data.ensure_mnist(target, (mirror.url,), progress=False)
    assert _listing(target) == sorted(GZ_NAMES + [data.LOCK_NAME])
