"""Downloads and verification: the one payload check, mirrors over real HTTP on loopback,
hostile files and hostile mirrors."""

from __future__ import annotations

import gzip
import hashlib
import os
import time
from pathlib import Path

import pytest
import requests
import urllib3
from hypothesis import given, settings
from hypothesis import strategies as st

from mnist_mlp import download
from mnist_mlp.dataset import DataSource
from mnist_mlp.files import exclusive_lock
from mnist_mlp.mnist import RESOURCES, CorruptFile, DatasetNotFound, DownloadError, Resource

from .mirrors import HostileMirror, Mirror
from .tiny_data import idx_bytes, synthetic_digits


def _resource(source, name):
    return next(r for r in source.resources if r.name == name)


# ---------------------------------------------------------------- the one check

@pytest.mark.parametrize("style", ["gz", "raw"])
def test_read_payload_verifies_gzip_and_raw_alike(tiny_mnist, style):
    resource = _resource(tiny_mnist, "t10k-labels-idx1-ubyte")
    gz = tiny_mnist.folder / resource.gz_name
    payload = gzip.decompress(gz.read_bytes())
    path = gz
    if style == "raw":
        path = tiny_mnist.folder / resource.name
        path.write_bytes(payload)
    assert download.read_payload(path, resource) == payload
    assert hashlib.sha256(payload).hexdigest() == resource.sha256


def test_the_first_candidate_present_is_found_whatever_it_is(tmp_path):
    resource = RESOURCES[3]
    assert download.find_file(tmp_path, resource) is None
    (tmp_path / "t10k-labels.idx1-ubyte").write_bytes(b"x")
    assert download.find_file(tmp_path, resource).name == "t10k-labels.idx1-ubyte"
    (tmp_path / resource.gz_name).symlink_to(tmp_path / "nowhere")   # a broken link counts
    assert download.find_file(tmp_path, resource).name == resource.gz_name


def test_a_missing_file_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFound, match=f"mlp download --data-dir {tmp_path}"):
        DataSource(tmp_path).payload(RESOURCES[0])


def test_a_gzip_bomb_stops_at_the_payload_size(tiny_mnist):
    resource = _resource(tiny_mnist, "t10k-images-idx3-ubyte")
    bomb = gzip.compress(b"\0" * (64 << 20))      # 64 MiB of zeros, 64 KiB on disk

    class Counting(download.PayloadDecoder):
        fed = 0

        def _take(self, out):
            Counting.fed += len(out)
            super()._take(out)

    decoder = Counting(resource, "bomb.gz")
    with pytest.raises(CorruptFile, match=f"longer than the {resource.size:,} bytes"):
        for start in range(0, len(bomb), 1 << 16):
            decoder.feed(bomb[start:start + (1 << 16)])
    assert Counting.fed <= resource.size + 1, "decompressed past the payload's size"
    path = tiny_mnist.folder / resource.gz_name
    path.write_bytes(bomb)
    with pytest.raises(CorruptFile, match=f"longer than the {resource.size:,} bytes"):
        download.read_payload(path, resource)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.data())
def test_fuzzed_files_raise_only_corrupt_file(data_):
    _, labels = synthetic_digits(3, seed=0)
    payload = idx_bytes(labels)
    resource = Resource("t10k-labels-idx1-ubyte", hashlib.sha256(payload).hexdigest(), "test",
                        "labels", 3)
    raw = bytearray(data_.draw(st.sampled_from([gzip.compress(payload), payload])))
    for i in data_.draw(st.lists(st.integers(0, len(raw) - 1), max_size=4)):
        raw[i] = data_.draw(st.integers(0, 255))
    raw = raw[:data_.draw(st.integers(0, len(raw)))] + data_.draw(st.binary(max_size=8))
    decoder = download.PayloadDecoder(resource, "fuzz")
    try:
        for start in range(0, len(raw), 7):        # fed in pieces, as a download arrives
            decoder.feed(bytes(raw[start:start + 7]))
        got = decoder.finish()
    except CorruptFile:
        return
    assert got == payload


def test_special_files_are_refused(tiny_mnist):
    resource = _resource(tiny_mnist, "t10k-images-idx3-ubyte")
    path = tiny_mnist.folder / resource.gz_name
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(CorruptFile, match="is a FIFO, not a regular file"):
        tiny_mnist.payload(resource)


# ---------------------------------------------------------------- download over HTTP

@pytest.fixture
def served(tiny_mnist):
    """tiny_mnist's files behind a local mirror; yields (mirror, an empty target folder,
    the tiny resource table)."""
    files = {f"/mnist/{p.name}": p.read_bytes() for p in tiny_mnist.folder.glob("*.gz")}
    mirror = Mirror(files)
    yield mirror, tiny_mnist.folder.parent / "downloads", tiny_mnist.resources
    mirror.close()


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


DOWNLOADED = sorted([r.gz_name for r in RESOURCES] + [download.LOCK_NAME])


def test_download_then_nothing_more(served):
    mirror, target, resources = served
    report = download.ensure_mnist(target, (mirror.url,), resources, progress=False)
    assert [(r.name, status) for r, status in report] == [(r.name, "downloaded")
                                                          for r in resources]
    assert _listing(target) == DOWNLOADED
    assert len(mirror.requests) == 4
    report = download.ensure_mnist(target, ("http://127.0.0.1:9/",), resources, progress=False)
    assert [status for _, status in report] == ["present"] * 4
    assert len(mirror.requests) == 4
    for resource in resources:
        DataSource(target, resources=resources).payload(resource)     # verified


def test_falls_through_a_404_mirror(served):
    mirror, target, resources = served
    missing = mirror.url.replace("/mnist/", "/elsewhere/")
    download.ensure_mnist(target, (missing, mirror.url), resources, progress=False)
    assert _listing(target) == DOWNLOADED


@pytest.mark.parametrize("damage", ["flipped", "not-gzip", "cut-short"])
def test_bad_payload_leaves_nothing_and_falls_through(served, damage):
    mirror, target, resources = served
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
    with pytest.raises(DownloadError) as info:
        download.ensure_mnist(target, (bad_url,), resources, progress=False)
    assert bad_url in str(info.value)
    assert _listing(target) == [download.LOCK_NAME], "a file that failed verification was left"
    download.ensure_mnist(target, (bad_url, mirror.url), resources, progress=False)
    assert _listing(target) == DOWNLOADED


def test_all_mirrors_fail_names_each(tmp_path):
    mirror = Mirror({})
    try:
        refused = "http://127.0.0.1:9/"
        with pytest.raises(DownloadError) as info:
            download.download_resource(RESOURCES[0], tmp_path, (refused, mirror.url),
                                       progress=False, retries=0)
    finally:
        mirror.close()
    message = str(info.value)
    assert f"{refused}train-images-idx3-ubyte.gz: could not connect" in message
    assert f"{mirror.url}train-images-idx3-ubyte.gz: HTTP 404" in message
    assert "--mirror" in message and str(tmp_path) in message
    assert _listing(tmp_path) == []


def test_present_files_are_verified_only_when_asked(tiny_mnist):
    path = tiny_mnist.folder / "t10k-labels-idx1-ubyte.gz"
    payload = bytearray(gzip.decompress(path.read_bytes()))
    payload[20] = (payload[20] + 1) % 10
    path.write_bytes(gzip.compress(bytes(payload)))
    report = download.ensure_mnist(tiny_mnist.folder, (), tiny_mnist.resources,
                                   progress=False, verify=False)
    assert [status for _, status in report] == ["present"] * 4
    with pytest.raises(CorruptFile, match="t10k-labels-idx1-ubyte.gz: SHA-256"):
        download.ensure_mnist(tiny_mnist.folder, (), tiny_mnist.resources, progress=False)


def test_a_folder_another_process_downloads_into_is_refused(served):
    mirror, target, resources = served
    target.mkdir()
    with exclusive_lock(target / download.LOCK_NAME):
        with pytest.raises(DownloadError, match=f"another mlp is downloading into {target}"):
            download.ensure_mnist(target, (mirror.url,), resources, progress=False)
    assert mirror.requests == []


def test_an_unwritable_folder_is_a_download_error(served):
    mirror, target, resources = served
    target.write_text("a file where the folder should be")
    with pytest.raises(DownloadError, match="cannot write"):
        download.ensure_mnist(target / "sub", (mirror.url,), resources, progress=False)


def test_real_mnist_download_from_local_mirror(real_mnist, tmp_path):
    files = {f"/m/{r.gz_name}": (real_mnist / r.gz_name).read_bytes() for r in RESOURCES}
    mirror = Mirror(files)
    try:
        url = mirror.url.replace("/mnist/", "/m/")
        download.ensure_mnist(tmp_path, (url,), progress=False)
    finally:
        mirror.close()
    assert _listing(tmp_path) == DOWNLOADED


def test_trailing_bytes_are_refused_by_load_and_download_alike(tiny_mnist, served):
    mirror, target, resources = served
    resource = _resource(tiny_mnist, "t10k-labels-idx1-ubyte")
    path = tiny_mnist.folder / resource.gz_name
    padded = path.read_bytes() + b"trailing"
    path.write_bytes(padded)
    with pytest.raises(CorruptFile, match="data after the end of the gzip stream"):
        download.read_payload(path, resource)
    with pytest.raises(CorruptFile, match="data after the end of the gzip stream"):
        download.ensure_mnist(tiny_mnist.folder, ("http://127.0.0.1:9/",), resources,
                              progress=False)
    mirror.files["/mnist/t10k-labels-idx1-ubyte.gz"] = padded
    with pytest.raises(DownloadError, match="data after the end of the gzip stream"):
        download.ensure_mnist(target, (mirror.url,), resources, progress=False)
    assert not (target / "t10k-labels-idx1-ubyte.gz").exists()


def test_stale_parts_of_a_killed_download_are_cleaned(served):
    mirror, target, resources = served
    target.mkdir()
    stale = target / "t10k-images-idx3-ubyte.gz.k1ll3d.part"
    stale.write_bytes(b"half a download")
    download.ensure_mnist(target, (mirror.url,), resources, progress=False)
    assert _listing(target) == DOWNLOADED


# ---------------------------------------------------------------- hostile mirrors

@pytest.mark.parametrize("how, message", [
    ("endless", "longer than the|sent more than|damaged gzip"),
    ("drip", "timed out: not complete after 2 s"),
    ("drip-headers", "timed out: not complete after 2 s"),
    # the read timeout (30 s) never comes before a 2 s deadline
    ("silent", "timed out: not complete after 2 s|timed out: connected, but"),
])
def test_hostile_mirrors_fail_in_bounded_time(tmp_path, how, message):
    mirror = HostileMirror(how)
    start = time.monotonic()
    try:
        with pytest.raises(DownloadError, match=message):
            download.download_resource(RESOURCES[3], tmp_path, (mirror.url,), progress=False,
                                       retries=0, deadline_s=2)
    finally:
        mirror.close()
    assert time.monotonic() - start < 10
    assert _listing(tmp_path) == [], "a partial download was left behind"


@pytest.mark.parametrize("exc", [
    requests.ReadTimeout("HTTPConnectionPool(host='m', port=80): Read timed out."),
    requests.ConnectionError(urllib3.exceptions.MaxRetryError(
        None, "/x", urllib3.exceptions.ReadTimeoutError(None, "/x", "Read timed out."))),
])
def test_a_server_that_goes_silent_is_named_as_such(exc):
    assert download._describe(exc) == ("timed out: connected, but the server sent nothing for "
                                       "too long")


def test_mirror_credentials_are_never_shown(tmp_path):
    assert download.redact("https://user:pw@host/x") == "https://***@host/x"
    with pytest.raises(DownloadError) as info:
        download.download_resource(RESOURCES[3], tmp_path,
                                   ("http://user:s3cret@127.0.0.1:9/",), progress=False,
                                   retries=0)
    assert "s3cret" not in str(info.value) and "http://***@127.0.0.1:9/" in str(info.value)
