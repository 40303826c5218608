"""Downloading a dataset's files and verifying them: mirrors tried in turn, streamed, checked.

Each of the four files is checked by the SHA-256 of its *decompressed* IDX
payload, so a mirror that recompresses the gzip container still verifies.
One check serves every path: ``PayloadDecoder`` takes a file's bytes as they
arrive (from disk or from a mirror), gzip or raw, stops at the first byte past
the payload's known size, refuses anything after the end of the gzip stream,
and hashes as it goes. Downloads are streamed to a ``*.part`` file beside their
final name and renamed into place only after that check holds.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
import zlib
from pathlib import Path
from typing import BinaryIO

from .files import LockHeld, atomic_writer, exclusive_lock, open_regular, remove_stale_parts
from .mnist import (
    RESOURCES,
    CorruptFile,
    DownloadError,
    Resource,
    mirrors_env,
    payload_owner,
    redo_hint,
)

MIRRORS_ENV = mirrors_env("MNIST")
LOCK_NAME = ".mnist-download.lock"
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 30        # the longest silence from a mirror
DOWNLOAD_DEADLINE_S = 300  # the longest one file's download may take, retries included
GZIP_SLACK = 1 << 16       # a gzip file may exceed its payload by headers and stored blocks
CHUNK = 1 << 16


def redact(url: str) -> str:
    """``url`` without a password or token: ``https://user:pw@host/`` -> ``https://***@host/``."""
    return re.sub(r"(?<=://)[^/@]*@", "***@", url)


# ---------------------------------------------------------------- the one check

class PayloadDecoder:
    """A file's bytes, fed as they arrive -> its verified IDX payload.

    gzip or raw IDX is told from the first two bytes. The payload may not grow
    past ``resource.size`` (a gzip bomb stops there), nothing may follow the
    gzip stream, and ``finish`` checks the size and the SHA-256.
    """

    def __init__(self, resource: Resource, source: str, keep: bool = True):
        self.resource, self.source, self.keep = resource, source, keep
        self.digest = hashlib.sha256()
        self.parts: list[bytes] = []
        self.size = 0
        self.head = b""           # the first bytes, until gzip or raw is decided
        self.inflate = None       # zlib decompressor when gzip
        self.raw = False

    def _fail(self, what: str) -> CorruptFile:
        hint = (redo_hint(self.source) if "://" not in self.source
                else f"not {self.resource.dataset}'s file")
        return CorruptFile(f"{self.source}: {what}; {hint}")

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of the file.

        Raises:
            CorruptFile: damaged gzip data, data after the gzip stream, or a
                payload longer than the resource's.
        """
        if not self.raw and self.inflate is None:
            self.head += chunk
            if len(self.head) < 2:
                return
            chunk, self.head = self.head, b""
            if chunk[:2] == b"\x1f\x8b":
                self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip container
            else:
                self.raw = True
        if self.raw:
            self._take(chunk)
            return
        if self.inflate.eof:
            if chunk:
                raise self._fail("data after the end of the gzip stream")
            return
        room = self.resource.size - self.size
        try:
            out = self.inflate.decompress(chunk, room + 1)  # never more than one byte too many
        except zlib.error as exc:
            raise self._fail(f"damaged gzip data ({exc})") from None
        self._take(out)
        if self.inflate.eof and self.inflate.unused_data:
            raise self._fail("data after the end of the gzip stream")

    def _take(self, out: bytes) -> None:
        self.size += len(out)
        if self.size > self.resource.size:
            raise self._fail(f"longer than the {self.resource.size:,} bytes of "
                             f"{self.resource.dataset}'s {self.resource.name}")
        self.digest.update(out)
        if self.keep:
            self.parts.append(out)

    def finish(self) -> bytes:
        """The payload (empty unless ``keep``), once the whole file has been fed.

        Raises:
            CorruptFile: cut short, or a checksum that is not the dataset's.
        """
        if self.head or (self.inflate is not None and not self.inflate.eof):
            raise self._fail("the gzip stream ends early (truncated)")
        if self.size != self.resource.size:
            raise self._fail(f"{self.size:,} bytes, {self.resource.dataset}'s "
                             f"{self.resource.name} has {self.resource.size:,}")
        digest = self.digest.hexdigest()
        if (other := payload_owner(digest)) and other != self.resource.dataset:
            raise CorruptFile(f"{self.source}: {other}'s file, not {self.resource.dataset}'s; "
                              f"give the folder of the {self.resource.dataset} files")
        if digest != self.resource.sha256:
            raise self._fail(f"SHA-256 {digest[:12]}... does not match {self.resource.dataset}'s "
                             f"{self.resource.sha256[:12]}...")
        return b"".join(self.parts)


def read_payload(path: Path, resource: Resource) -> bytes:
    """The verified IDX payload of ``path``, decompressed when it is gzip.

    Raises:
        CorruptFile: not a regular file, unreadable, damaged, or not the dataset's file.
    """
    decoder = PayloadDecoder(resource, str(path))
    try:
        with open_regular(path) as f:
            while chunk := f.read(1 << 20):
                decoder.feed(chunk)
    except OSError as exc:
        raise CorruptFile(f"{path}: cannot read ({exc.strerror or exc})") from None
    return decoder.finish()



def find_file(folder: Path, resource: Resource) -> Path | None:
    """The first candidate name for ``resource`` that exists in ``folder`` (of any kind)."""
    return next((p for p in resource.candidates(folder) if os.path.lexists(p)), None)


# ---------------------------------------------------------------- download

def _session(retries: int):
    """A requests session that retries refused connections and 429/5xx, not silences."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(total=retries, connect=retries, read=0, backoff_factor=0.5,
                  status_forcelist=(429, 500, 502, 503, 504), allowed_methods=("GET",),
                  raise_on_status=False)
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class _TooSlow(Exception):
    """The file's deadline passed mid-download."""


def _with_deadline(work, deadline: float) -> None:
    """Run ``work()`` in a thread and wait for it until ``deadline`` (``time.monotonic``).

    A server can hold any stage of a request (connecting, the headers, the
    body) with a byte every few seconds, which no socket timeout notices; so
    the request runs apart and is abandoned when its time is up. An abandoned
    thread only waits on its socket: its output file is closed and removed by
    the caller, and the process does not wait for it at exit.

    Raises:
        _TooSlow: the deadline passed; whatever ``work`` raised, otherwise.
    """
    box: dict[str, BaseException] = {}

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # handed to the waiting thread below
            box["error"] = exc

    worker = threading.Thread(target=run, name="mnist-download", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    if worker.is_alive():
        raise _TooSlow
    if "error" in box:
        raise box["error"]


def _fetch(session, url: str, out: BinaryIO, resource: Resource, progress: bool,
           deadline: float) -> None:
    """Stream ``url`` into ``out`` through the payload check, with a bar on stderr.

    Raises:
        CorruptFile: too long, damaged, or not the dataset's file.
    """
    from tqdm import tqdm

    decoder = PayloadDecoder(resource, redact(url), keep=False)
    cap = resource.size + GZIP_SLACK
    read_timeout = max(0.1, min(READ_TIMEOUT_S, deadline - time.monotonic()))
    with session.get(url, stream=True, timeout=(CONNECT_TIMEOUT_S, read_timeout)) as resp:
        resp.raise_for_status()
        total = int(resp.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                  desc=resource.gz_name, leave=False,
                  disable=not progress or None) as bar:  # None: off when stderr is no terminal
            written = 0
            while chunk := resp.raw.read1(CHUNK, decode_content=True):  # whatever has arrived
                written += len(chunk)
                if written > cap:
                    raise CorruptFile(f"{redact(url)}: sent more than {cap:,} bytes; not "
                                      f"{resource.dataset}'s file")
                out.write(chunk)
                decoder.feed(chunk)
                bar.update(len(chunk))
    decoder.finish()


def _describe(exc: Exception) -> str:
    """A short reason for a failed request, naming a timeout as one."""
    import requests
    import urllib3

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason}"
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
    if isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError)) or isinstance(
            reason, urllib3.exceptions.ReadTimeoutError):
        if isinstance(exc, requests.ConnectTimeout):
            return f"timed out connecting (no answer in {CONNECT_TIMEOUT_S} s)"
        return "timed out: connected, but the server sent nothing for too long"
    if isinstance(exc, requests.ConnectionError):
        return "could not connect"
    return redact(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__


def download_resource(resource: Resource, folder: Path, mirrors: tuple[str, ...],
                      progress: bool = True, retries: int = 3,
                      deadline_s: float = DOWNLOAD_DEADLINE_S) -> Path:
    """Download one file, trying ``mirrors`` in order, and return its verified path.

    The bytes go to ``<name>.gz.<random>.part`` in ``folder`` and are renamed to
    ``<name>.gz`` only after the payload check holds; a file that fails is
    deleted and the next mirror tried. Each mirror gets ``deadline_s`` seconds.

    Raises:
        DownloadError: no mirror gave a file that verifies; the message names each.
    """
    import requests
    import urllib3

    final = folder / resource.gz_name
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + resource.gz_name
        deadline = time.monotonic() + deadline_s
        try:
            # A session per mirror: an abandoned request keeps its own connections.
            with _session(retries) as session, atomic_writer(final) as out:
                _with_deadline(lambda: _fetch(session, url, out, resource, progress, deadline),
                               deadline)
            return final
        except _TooSlow:
            failures.append(f"{redact(url)}: timed out: not complete after {deadline_s:g} s")
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            failures.append(f"{redact(url)}: {_describe(exc)}")
        except CorruptFile as exc:
            failures.append(str(exc))
        except OSError as exc:  # the folder, not the mirror: no point trying others
            raise DownloadError(f"cannot write {final}: {exc.strerror or exc}") from None
    raise DownloadError(
        f"could not download {resource.gz_name} ({'; '.join(failures)}). Copy the "
        f"{resource.dataset} files into {folder}, or give a working mirror with --mirror URL or "
        f"{mirrors_env(resource.dataset)}.")


def ensure_mnist(folder: Path, mirrors: tuple[str, ...],
                 resources: tuple[Resource, ...] = RESOURCES,
                 *, progress: bool = True, verify: bool = True,
                 deadline_s: float = DOWNLOAD_DEADLINE_S, elsewhere: tuple[Path, ...] = ()
                 ) -> list[tuple[Resource, str]]:
    """Make all four files present in ``folder``, downloading (and verifying) what is missing.

    Args:
        mirrors: base URLs tried in turn for each missing file.
        resources: the files expected (MNIST's four).
        verify: also check the files already there (loading checks them anyway).
        elsewhere: read-only folders (a system package's copy) whose files count as
            present when ``folder`` lacks them.

    Returns:
        (resource, status) pairs, status one of "present" or "downloaded".

    Raises:
        DownloadError: a missing file could not be downloaded, or the folder is
            busy with another download.
        CorruptFile: a file already there is damaged (it is left for the user to delete).
    """
    report = []
    missing = []
    for resource in resources:
        path = next((p for f in (folder, *elsewhere) if (p := find_file(f, resource))), None)
        if path is None:
            missing.append(resource)
        elif verify:
            read_payload(path, resource)
        report.append([resource, "present"])
    if missing:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with exclusive_lock(folder / LOCK_NAME):
                for resource in missing:
                    remove_stale_parts(folder / resource.gz_name)
                    if find_file(folder, resource) is None:  # not fetched by another meanwhile
                        download_resource(resource, folder, mirrors, progress,
                                          deadline_s=deadline_s)
                        report[resources.index(resource)][1] = "downloaded"
        except LockHeld as exc:
            raise DownloadError(f"another mlp is downloading into {folder} "
                                f"({exc}); wait for it to finish") from None
        except OSError as exc:
            raise DownloadError(f"cannot write {exc.filename or folder}: "
                                f"{exc.strerror or exc}") from None
    return [tuple(pair) for pair in report]
