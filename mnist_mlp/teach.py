"""Teaching a served model users' corrections: the samples folder, and fine-tuning in the
background.

The samples folder is a labelled folder (``labelled``'s layout): each correction is the
image as uploaded in ``SAMPLES/<class>/<name>`` and the 28x28 input the network saw in
``SAMPLES/inputs/<class>/<name>.png`` (``inputs`` is no class name, so training reads only
the uploads, prepared again exactly as ``mlp predict`` prepares them). Names are made here
(time and random), never taken from a client.

A teach fine-tunes a copy of the served model's weights on all the corrections, with its
dataset replayed (the ``tune`` preset), in a thread of its own, and saves the result beside the
model as ``NAME.taught-N.npz``: ``teach_job`` is the one call into training.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import glob
import io
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import checkpoint
from .config import ConfigError
from .dataset import DataSource
from .files import write_bytes_atomic
from .labelled import ReadStopped, class_of, folder_name, is_image_file
from .mnist import DataError, Dataset
from .runfiles import RunError
from .train import Callback, TrainingDiverged

MAX_SAMPLES = 2_000          # corrections a samples folder holds at most
TEACH_LIMIT_S = 120          # a teach is stopped after this long
TEACH_PRESET = "tune"
INPUTS = "inputs"            # sub-folder of the 28x28 inputs the network saw
ORIGINAL_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "GIF": ".gif",
                     "TIFF": ".tif", "WEBP": ".webp"}


class SamplesFull(Exception):
    """The samples folder holds ``MAX_SAMPLES`` corrections already."""


class Samples:
    """A folder of corrections in the labelled layout, bounded in count.

    Args:
        folder: where they go (created on the first correction).
        dataset: whose classes name the sub-folders.
        limit: corrections held at most (those already there count).

    Raises:
        OSError: ``folder`` is there but not a folder (a file, a FIFO), or unreadable.
    """

    def __init__(self, folder: Path, dataset: Dataset, limit: int = MAX_SAMPLES):
        self.folder, self.dataset, self.limit = Path(folder), dataset, limit
        if os.path.lexists(self.folder) and not self.folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(self.folder))
        self._lock = threading.Lock()
        self._counts = self._count()

    def _count(self) -> list[int]:
        """Image files per class already in the folder."""
        counts = [0] * len(self.dataset.class_names)
        if self.folder.is_dir():
            for sub in self.folder.iterdir():
                label = class_of(sub.name, self.dataset) if sub.is_dir() else None
                if label is not None:
                    counts[label] += sum(1 for p in sub.iterdir() if is_image_file(p))
        return counts

    def counts(self) -> dict[str, int]:
        """Corrections held, by class name."""
        with self._lock:
            return dict(zip(self.dataset.class_names, self._counts))

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts)

    def add(self, original: bytes, pixels: np.ndarray, label: int) -> str:
        """Save one correction: ``original`` (an image file's bytes, as uploaded) and
        ``pixels`` (uint8 (28, 28), what the network saw), each written atomically; the
        name given to both.

        Raises:
            ValueError: ``label`` is not a class index.
            SamplesFull: the folder holds ``limit`` corrections.
            OSError: the folder cannot be written.
        """
        from PIL import Image

        if not 0 <= label < len(self.dataset.class_names):
            raise ValueError(f"no class {label}")
        with Image.open(io.BytesIO(original)) as img:
            suffix = ORIGINAL_SUFFIXES.get(img.format or "", ".png")
        with self._lock:
            if sum(self._counts) >= self.limit:
                raise SamplesFull(f"the samples folder holds {self.limit:,} corrections, its "
                                  "limit; move some out of it")
            self._counts[label] += 1               # taken now: the cap holds under a race
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(6)}"
        sub = folder_name(self.dataset.class_names[label])
        png = io.BytesIO()
        Image.fromarray(np.asarray(pixels, dtype=np.uint8), "L").save(png, format="PNG")
        try:   # the input first: a crash between the two leaves only it, which no one trains on
            write_bytes_atomic(self.folder / INPUTS / sub / f"{name}.png", png.getvalue())
            write_bytes_atomic(self.folder / sub / f"{name}{suffix}", original)
        except BaseException:
            with self._lock:
                self._counts[label] -= 1
            with contextlib.suppress(OSError):          # no input left without its original
                (self.folder / INPUTS / sub / f"{name}.png").unlink(missing_ok=True)
            raise
        return name


def taught_path(model: Path) -> Path:
    """The next free ``NAME.taught-N.npz`` beside ``model`` (none of its run's files there)."""
    n = 1
    while True:
        out = model.with_name(f"{model.stem}.taught-{n}.npz")
        if not any(out.parent.glob(f"{glob.escape(out.stem)}.*")):
            return out
        n += 1


def teach_job(model: Path, samples: Samples, out: Path, source: DataSource, *,
              flags: dict[str, Any] | None = None, callbacks: Sequence[Callback] = (),
              should_stop: Callable[[], bool] = lambda: False):
    """Fine-tune a copy of checkpoint ``model`` on the corrections ``samples`` with its
    dataset replayed (the ``tune`` preset; ``flags`` override it) on one BLAS thread, saved
    at ``out`` (a run there is replaced).

    Returns:
        run.RunResult: its ``ending`` is "finished" or "stopped" (by ``should_stop``).

    Raises:
        ConfigError, RunError, checkpoint.CheckpointError, mnist.DataError,
        TrainingDiverged.
    """
    from . import run

    spec = run.build_spec(out, TEACH_PRESET, {"dataset": samples.dataset.name, **(flags or {})},
                          data=dataclasses.replace(source, extra=(samples.folder,)),
                          start=run.Start("overwrite", model))
    hooks = run.Hooks(progress=False, plots=False, callbacks=callbacks,
                      should_stop=should_stop)
    return run.train(dataclasses.replace(spec, threads=1), hooks)


class Progress(Callback):
    """Where a teach is: epoch and batch, for the page to poll."""

    def __init__(self, status: dict[str, Any], lock: threading.Lock):
        self.status, self.lock = status, lock

    def on_epoch_begin(self, trainer, epoch, n_samples, done):
        with self.lock:
            self.status.update(epoch=epoch, epochs=trainer.cfg.epochs, batch=0,
                               batches=math.ceil(n_samples / trainer.cfg.batch_size))

    def on_batch_end(self, trainer, n, loss):
        with self.lock:
            self.status["batch"] += 1


class Teacher:
    """One teach at a time, in a thread of its own (one BLAS thread), bounded in time.

    Args:
        model: the checkpoint served, whose weights every teach starts from.
        samples: the corrections.
        source: where the model's dataset comes from (the replay).
        on_taught: called with the taught checkpoint's path when a teach saved one.
        limit_s: a teach is stopped after this many seconds.
        flags: override the ``tune`` preset (tests make it longer or shorter).
    """

    def __init__(self, model: Path, samples: Samples, source: DataSource,
                 on_taught: Callable[[Path], None], *, limit_s: float = TEACH_LIMIT_S,
                 flags: dict[str, Any] | None = None):
        self.model, self.samples, self.source = Path(model), samples, source
        self.on_taught, self.limit_s, self.flags = on_taught, limit_s, flags
        self._lock = threading.Lock()
        self._status: dict[str, Any] = {"state": "idle"}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def status(self) -> dict[str, Any]:
        """The current (or last) teach: state "idle", "running", "done" or "failed", and
        epoch, batch, elapsed seconds, the corrections held when it started, the taught
        model's file name."""
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> dict[str, Any]:
        """The status (the lock held)."""
        status = dict(self._status)
        if "started" in status:
            status["elapsed_s"] = round(time.monotonic() - status.pop("started"), 1)
        return status

    def start(self) -> tuple[bool, dict[str, Any]]:
        """Start a teach unless one runs (then join it): (started, status).

        Raises:
            RunError: no corrections to teach, the dataset's files missing, or the server
                is stopping.
        """
        with self._lock:
            if self._status["state"] == "running":
                return False, self._snapshot()
            if self._stop.is_set():
                raise RunError("the server is stopping")
            held = self.samples.total
            if not held:
                raise RunError("no corrections to teach yet: correct a reading first")
            self._check_data()
            out = taught_path(self.model)
            self._status = {"state": "running", "started": time.monotonic(), "epoch": 0,
                            "epochs": None, "batch": 0, "batches": None,
                            "samples": held, "model": out.name}
            self._thread = threading.Thread(target=self._run, name="teach",
                                            args=(out, self._status["started"]))
            self._thread.start()
            return True, self._snapshot()

    def _check_data(self) -> None:
        """Refuse to teach without the dataset's files at hand: a teach replays them, and a
        download inside it would outlast its time limit and a stop.

        Raises:
            RunError: a file is missing (the message says how to fetch them).
        """
        source = self.source.with_dataset(self.samples.dataset)
        if any(source.path(r) is None for r in source.resources):
            raise RunError(f"teaching replays the {source.dataset.title} files, not all in "
                           f"{source.folder}: fetch them with {source.download_command}, "
                           "then teach")

    def _run(self, out: Path, started: float) -> None:
        deadline = started + self.limit_s
        try:
            result = teach_job(self.model, self.samples, out, self.source,
                               flags=self.flags, callbacks=[Progress(self._status, self._lock)],
                               should_stop=lambda: self._stop.is_set()
                               or time.monotonic() > deadline)
            if out.exists():
                self.on_taught(out)
                ending = {"state": "done", "ending": result.ending}
            else:                              # stopped before its first epoch ended
                ending = _stopped(started)
        except ReadStopped:                    # stopped while it read the corrections
            ending = _stopped(started)
        except Exception as exc:               # noqa: BLE001 (the page must hear of it)
            ending = {"state": "failed", "error": _failure(exc)}
        with self._lock:
            self._status.update(ending, elapsed_s=round(time.monotonic() - started, 1))
            self._status.pop("started")

    def stop(self) -> None:
        """Stop a teach under way (it saves its resumable state) and refuse new ones."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the teach under way, if any, to end."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)


def _stopped(started: float) -> dict[str, Any]:
    """The status of a teach stopped (by its time limit or the server) before it taught."""
    return {"state": "failed", "error": f"stopped after {time.monotonic() - started:.0f} s, "
                                        "before an epoch ended: nothing taught"}


def _failure(exc: Exception) -> str:
    """The page's line for a teach that failed: the error's message; its class named too
    when it is not one the library writes its messages for."""
    text = " ".join(str(exc).split())[:300]
    known = isinstance(exc, (ConfigError, RunError, checkpoint.CheckpointError, DataError,
                             TrainingDiverged, OSError))
    return text if known else f"{type(exc).__name__}: {text}"
