"""Safe file I/O: what is not a regular file is never replaced nor waited on; symlinks are
written through; stale parts are cleaned; the lock names its holder."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mnist_mlp import files


def _special_files(tmp_path):
    """A FIFO, a socket and (as root) a character device, each where a file might go."""
    made = {}
    os.mkfifo(tmp_path / "fifo")
    made["fifo"] = "a FIFO"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    made["sock"] = "a socket"
    if os.geteuid() == 0:
        os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))  # like /dev/null
        made["null"] = "a device"
    return made, sock


def test_atomic_writes_never_replace_special_files(tmp_path):
    made, sock = _special_files(tmp_path)
    try:
        for name, kind in made.items():
            before = os.lstat(tmp_path / name)
            with pytest.raises(OSError, match=f"is {kind}, not a regular file"):
                files.write_bytes_atomic(tmp_path / name, b"data")
            after = os.lstat(tmp_path / name)
            assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino), name
        (tmp_path / "dir").mkdir()
        with pytest.raises(OSError, match="is a folder"):
            files.write_bytes_atomic(tmp_path / "dir", b"data")
        assert not list(tmp_path.glob("*.part"))
    finally:
        sock.close()


def test_symlinks_are_written_through(tmp_path):
    target = tmp_path / "real.txt"
    target.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    files.write_bytes_atomic(link, b"new")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new"
    dangling = tmp_path / "dangling.txt"
    dangling.symlink_to(tmp_path / "sub-missing.txt")
    with pytest.raises(OSError, match="is a symlink to .*sub-missing.txt, which does not "
                                      "exist; refusing to write through it"):
        files.write_bytes_atomic(dangling, b"made")
    assert dangling.is_symlink() and not (tmp_path / "sub-missing.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.txt", "link.txt",
                                                          "real.txt"]
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "to-fifo").symlink_to(tmp_path / "fifo")
    with pytest.raises(OSError, match="is a FIFO"):
        files.write_bytes_atomic(tmp_path / "to-fifo", b"x")


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with files.atomic_writer(path) as f:
            f.write(b"half")
            raise KeyboardInterrupt
    assert path.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [path]


def test_reads_open_only_regular_files_and_are_bounded(tmp_path):
    made, sock = _special_files(tmp_path)
    try:
        for name, kind in made.items():
            start = time.monotonic()
            with pytest.raises(OSError, match=f"is {kind}"):
                files.read_bounded(tmp_path / name, 100)
            assert time.monotonic() - start < 5, f"{name}: waited"
    finally:
        sock.close()
    (tmp_path / "big").write_bytes(b"x" * 101)
    with pytest.raises(OSError, match="larger than 100 bytes"):
        files.read_bounded(tmp_path / "big", 100)
    assert files.read_bounded(tmp_path / "big", 101) == b"x" * 101


def test_stale_parts_are_removed(tmp_path):
    target = tmp_path / "m.npz"
    stale = [tmp_path / "m.npz.abc123.part", tmp_path / "m.npz.zz.part"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    other = tmp_path / "n.npz.abc.part"
    other.write_bytes(b"another file's")
    assert sorted(files.remove_stale_parts(target)) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == [other]


def test_stale_parts_of_a_name_with_glob_characters_are_its_own(tmp_path):
    own, others = tmp_path / "x[1]*.npz.def.part", [tmp_path / "x1.npz.abc.part",
                                                     tmp_path / "x1*.npz.abc.part"]
    for p in (own, *others):
        p.write_bytes(b"half a checkpoint")
    assert files.remove_stale_parts(tmp_path / "x[1]*.npz") == [own]
    assert sorted(tmp_path.iterdir()) == sorted(others)


def test_the_lock_is_exclusive_and_names_its_holder(tmp_path):
    lock = tmp_path / "run.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from mnist_mlp.files import exclusive_lock\n"
         f"with exclusive_lock({str(lock)!r}):\n    print('held', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(files.LockHeld) as info:
            with files.exclusive_lock(lock):
                pass
        assert info.value.pid == holder.pid
    finally:
        holder.kill()
        holder.wait()
    with files.exclusive_lock(lock):  # a killed holder's lock is gone with it
        assert lock.read_text().strip() == str(os.getpid())


def test_a_lock_can_be_waited_for(tmp_path):
    lock, took = tmp_path / "sweep.lock", threading.Event()

    def waiter():
        with files.exclusive_lock(lock, wait=True):
            took.set()

    with files.exclusive_lock(lock):
        thread = threading.Thread(target=waiter)
        thread.start()
        assert not took.wait(0.3)             # blocked while it is held
    thread.join(10)
    assert took.is_set()                      # and taken once it is let go


def test_standard_output_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OSError, match="is standard output"):
        files.write_target(Path("-"))
    assert not (tmp_path / "-").exists()


def _write_with_streams_redirected(tmp_path, names):
    """Try ``write_bytes_atomic`` on each of ``names`` in a child whose stdout and stderr
    are redirected to files, as ``>> keep.txt`` does; each refusal's strerror, and the files."""
    (tmp_path / "out.txt").write_text("keep stdout\n")
    (tmp_path / "err.txt").write_text("keep stderr\n")
    code = ("import sys; from pathlib import Path; from mnist_mlp import files\n"
            "for name in sys.argv[1:]:\n"
            "    try:\n        files.write_bytes_atomic(Path(name), b'replaced')\n"
            "    except OSError as exc:\n        print(exc.strerror, file=sys.stderr)\n")
    with open(tmp_path / "out.txt", "ab") as out, open(tmp_path / "err.txt", "ab") as err:
        subprocess.run([sys.executable, "-c", code, *names], stdout=out, stderr=err,
                       timeout=60, check=True)
    return (tmp_path / "out.txt").read_text(), (tmp_path / "err.txt").read_text()


def test_streams_redirected_to_files_are_refused_by_name(tmp_path):
    (tmp_path / "to-stdout").symlink_to("/dev/stdout")
    (tmp_path / "fds").symlink_to("/proc/self/fd")
    names = ["/dev/stdout", "/dev/stderr", "/dev/fd/1", "/proc/self/fd/2",
             "/dev/../dev/stdout", str(tmp_path / "to-stdout"), str(tmp_path / "fds" / "1"),
             f"/proc/{os.getpid()}/fd/1"]
    out, err = _write_with_streams_redirected(tmp_path, names)
    assert out == "keep stdout\n"
    assert err.splitlines() == ["keep stderr"] + [
        "is a stream of this process; this is written to files only (give a file name)"
    ] * len(names)
    assert not list(tmp_path.glob("*.part"))
    assert not files.names_a_stream(tmp_path / "fds.txt")
    assert not files.names_a_stream(Path("/dev/stdout-like.txt"))


def test_dev_stdout_through_a_pipe_is_refused_by_name(tmp_path):
    code = ("import sys; from pathlib import Path; from mnist_mlp import files\n"
            "try:\n    files.write_target(Path('/dev/stdout'))\n"
            "except OSError as exc:\n    print(exc.strerror, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stderr.strip() == ("is a stream of this process; this is written to files "
                                   "only (give a file name)")


def test_the_format_follows_the_extension(tmp_path):
    formats = {".png": "png", ".svg": "svg"}
    assert files.format_for(tmp_path / "a.SVG", formats) == "svg"
    with pytest.raises(OSError, match=r"cannot write a \.jpg file here; name it with one of "
                                      r"\.png, \.svg"):
        files.format_for(tmp_path / "a.jpg", formats)
    with pytest.raises(OSError, match="a file without an extension"):
        files.format_for(tmp_path / "a", formats)
    with pytest.raises(OSError, match="is standard output"):
        files.format_for(Path("-"), formats)
