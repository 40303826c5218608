"""Safe file I/O: atomic writes that replace only regular files, bounded reads of
regular files only, and an exclusive lock that names its holder.

Writes go to a ``*.part`` file beside the target and are renamed over it only
when complete, so readers see the old file or the whole new one. A symlink is
written *through* (its target is replaced, the link kept). A device, FIFO,
socket or folder is never replaced, nor is the file a shell redirected
``/dev/stdout``, ``/dev/stderr`` or ``/dev/fd/N`` to (those names are refused):
that is an ``OSError`` before anything is written. Reads open a path only when
it is a regular file (a FIFO would block, a device never ends) and never take
more than a stated number of bytes.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

PART_SUFFIX = ".part"
MAX_SYMLINKS = 40        # as Linux follows
STREAM_PATH = re.compile(r"/dev/(stdin|stdout|stderr|fd(/.*)?)"
                         r"|/proc/(self|thread-self|\d+)(/task/\d+)?/fd(/.*)?")


def not_regular(path: Path, mode: int) -> OSError:
    """The error for a path that is there but is not a regular file."""
    kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode)
            or stat.S_ISBLK(mode) else "not a regular file")
    return OSError(errno.EINVAL, f"is {kind}, not a regular file", str(path))


def names_a_stream(path: Path) -> bool:
    """Whether ``path``, or a symlink on the way to its end, names one of this process's
    streams (``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N``, ``/proc/self/fd/N``): replacing
    what such a name resolves to would replace the file a shell redirected to."""
    current = os.path.abspath(path)
    for _ in range(MAX_SYMLINKS):
        if STREAM_PATH.fullmatch(os.path.normpath(current)):
            return True
        parts = Path(current).parts
        for i in range(2, len(parts) + 1):                      # the first symlink, if any
            prefix = os.path.join(*parts[:i])
            if os.path.islink(prefix):
                current = os.path.join(os.path.dirname(prefix), os.readlink(prefix),
                                       *parts[i:])
                break
        else:
            return False
    return False                                                # a loop: opening says so


def write_target(path: Path) -> Path:
    """Where writing ``path`` really lands: the end of its symlinks, checked to be replaceable.

    Raises:
        OSError: ``-`` or a name of a stream (``names_a_stream``), a dangling symlink,
            or a target that exists and is not a regular file.
    """
    if str(path) == "-" or names_a_stream(path):
        what = "standard output" if str(path) == "-" else "a stream of this process"
        raise OSError(errno.EINVAL, f"is {what}; this is written to files only "
                      "(give a file name)", str(path))
    try:
        mode = os.stat(path).st_mode  # through symlinks, /proc's magic ones too
    except NotADirectoryError:
        raise OSError(errno.ENOTDIR, "a folder on its path is a file", str(path)) from None
    except FileNotFoundError:  # new; folders missing on its path are made when written
        if os.path.islink(path):
            raise OSError(errno.ENOENT, f"is a symlink to {os.readlink(path)}, which does "
                          "not exist; refusing to write through it", str(path)) from None
        return Path(os.path.realpath(path))
    if not stat.S_ISREG(mode):
        raise not_regular(path, mode)
    return Path(os.path.realpath(path))


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield the path of a new empty file beside the target; on success sync it to disk
    and rename it over the target (for writers that need a name, not a file object).

    On any exception (KeyboardInterrupt included) the temporary ``*.part`` file
    is deleted and the target keeps whatever it held before.

    Raises:
        OSError: the target is not a regular file, or the folder is not writable.
    """
    target = write_target(Path(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=PART_SUFFIX, dir=target.parent)
    try:
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would outlive the rename
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        write_target(target)  # still replaceable: nothing swapped in a FIFO meanwhile
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """Yield a binary file in the target's folder; rename it over the target on success
    (``atomic_path``'s guarantees)."""
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "wb") as f:
            yield f


def format_for(path: Path, formats: dict[str, str]) -> str:
    """The file format ``path``'s extension asks for, from ``formats`` (".png" -> "png").

    Raises:
        OSError: not a file to write (see ``write_target``), or an extension not in
            ``formats``; the message lists those that are.
    """
    write_target(path)  # "-", a FIFO or a device named as such first
    suffix = Path(path).suffix.lower()
    fmt = formats.get(suffix)
    if fmt is None:
        kind = f"a {suffix} file" if suffix else "a file without an extension"
        raise OSError(errno.EINVAL, f"cannot write {kind} here; name it with one of "
                      f"{', '.join(formats)}", str(path))
    return fmt


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` (or its symlink's target) with ``data`` atomically."""
    with atomic_writer(path) as f:
        f.write(data)


def remove_stale_parts(path: Path) -> list[Path]:
    """Delete ``*.part`` files that ``atomic_writer`` left for ``path`` (a killed writer's).

    Call only while holding the lock that serialises writers of ``path``.
    """
    target = Path(os.path.realpath(path))
    stale = [p for p in target.parent.glob(glob.escape(target.name) + ".*" + PART_SUFFIX)
             if p.is_file() and not p.is_symlink()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file (never blocks on a FIFO).

    Raises:
        FileNotFoundError: no such file.
        OSError: a folder, FIFO, device or socket, or unreadable.
    """
    mode = os.stat(path).st_mode           # a clear refusal before open (a socket: ENXIO)
    if not stat.S_ISREG(mode):
        raise not_regular(Path(path), mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode        # and what was opened, in case it was swapped
        if not stat.S_ISREG(mode):
            raise not_regular(Path(path), mode)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of regular file ``path``, refusing files larger than ``limit``.

    Raises:
        OSError: not a regular file, unreadable, or larger than ``limit`` (EFBIG).
    """
    with open_regular(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit:,} bytes", str(path))
    return data


class LockHeld(Exception):
    """Another process holds the lock; ``pid`` is the holder's, when it said."""

    def __init__(self, path: Path, pid: int | None):
        self.path, self.pid = path, pid
        self.holder = f"process {pid}" if pid else "another process"
        super().__init__(f"{path} is locked by {self.holder}")


@contextmanager
def exclusive_lock(path: Path, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the ``with`` block;
    ``wait``: until another holder lets go, rather than raising LockHeld.

    The lock file holds the holder's pid. The kernel drops the lock when the
    process ends, however it ends, so a killed holder never blocks the next.

    Raises:
        LockHeld: another process holds it.
        OSError: the lock file cannot be created or is not a regular file.
    """
    import fcntl

    flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(path, flags, 0o644)      # never through a symlink: a lock is our own file
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise not_regular(Path(path), mode)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            raise LockHeld(Path(path), int(text) if text.isdigit() else None) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
