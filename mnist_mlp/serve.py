"""``mlp serve``: a page to draw a digit on and watch the network read it, and its JSON API.

A WSGI application (``DigitApp``), served by ``server.DigitServer``. Routes:

- ``GET /`` and the page's other static files (``web/`` in the package, read once).
- ``POST /api/predict``: the body is an image file's bytes (a canvas PNG, a
  photo); the answer is the class read, its confidence, all ten probabilities best
  first, the 28x28 input the network saw as a PNG data URL, and why: the saliency
  map of the class read (``explain.saliency``) as shares of its largest magnitude.
  The image goes through ``classify.classify``, the very function ``mlp predict``
  uses, in one of ``slots`` threads (the cores) for small images and as many for
  large ones: at most that many images are prepared at once, and a drawing never
  waits behind photos.
- ``GET /api/model``: layer sizes, class names, the checkpoint's epoch and validation
  accuracy, and the run's metrics history (at most ``MAX_HISTORY_ROWS`` rows), made
  when a model starts being served.
- ``POST /api/correct?label=N``: the body is an image file, as for predict; it is saved
  with its 28x28 input in the samples folder as class N (``teach.Samples``).
- ``GET /api/samples``: the corrections held, per class.
- ``POST /api/teach``: fine-tune a copy of the served model on the corrections in the
  background (``teach.Teacher``; a teach under way is joined); ``GET /api/teach``: how
  far it is. Once done, the taught model reads.

``HEAD`` is answered for every ``GET``. Errors are JSON ``{"error": ...}``: 400 not
an image, no ink or a bad label, 404 unknown route, 405 other methods, 409 no
corrections kept or to teach, the dataset's files missing for a teach, the samples folder
full, or a committee to teach, 411 no
length, 413 a body over ``MAX_BODY``, 500 an unexpected failure (logged as one line),
503 an image still waiting for a thread when the server stops. No URL reaches the file
system: the samples' names are made here.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs

import numpy as np

from . import checkpoint
from .classify import Prediction, classify
from .dataset import DataSource
from .explain import saliency
from .imaging import ImageError
from .mnist import dataset_of
from .records import val_score
from .runfiles import RunError, RunFiles, read_metrics
from .teach import TEACH_LIMIT_S, Samples, SamplesFull, Teacher
from .threads import cores

MAX_BODY = 8 << 20          # bytes of an uploaded image; a phone photo is 2-5 MB
MAX_HISTORY_ROWS = 1000     # rows of the metrics history the page gets
SMALL_IMAGE = 2_000_000     # pixels declared: an upload up to this takes the small lane
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}
ALLOWED = {"/api/predict": "POST", "/api/model": "GET, HEAD", "/api/correct": "POST",
           "/api/samples": "GET, HEAD", "/api/teach": "GET, HEAD, POST"}   # static: GET, HEAD
SALIENCY_DIGITS = 3         # decimals of each pixel's share of the map's largest magnitude

Note = Callable[[str], None]
log = logging.getLogger(__name__)


def static_files() -> dict[str, tuple[bytes, str]]:
    """URL path -> (bytes, content type) of the page's files, read once."""
    folder = resources.files("mnist_mlp") / "web"
    table = {}
    for item in folder.iterdir():
        suffix = Path(item.name).suffix
        if suffix in CONTENT_TYPES:
            table["/" + item.name] = (item.read_bytes(), CONTENT_TYPES[suffix])
    table["/"] = table["/index.html"]
    return table


def thin_history(rows: Sequence[dict], kept: Any, limit: int = MAX_HISTORY_ROWS) -> list[dict]:
    """At most ``limit`` rows sampled evenly; always the first, the kept epoch's and the last."""
    n = len(rows)
    if n <= limit:
        return list(rows)
    picks = {round(i * (n - 1) / (limit - 2)) for i in range(limit - 1)}
    if type(kept) is int and 1 <= kept <= n:
        picks.add(kept - 1)
    return [rows[i] for i in sorted(picks)]


def read_history(path: Path, note: Note) -> list[dict] | None:
    """The run's metrics history beside checkpoint ``path``; None (and one note) when the
    log is there but cannot be read, None silently when there is no log."""
    log_path = RunFiles(path).metrics
    if not log_path.exists():
        return None
    try:
        return read_metrics(log_path)
    except RunError as exc:
        note(f"Warning: {exc}; the page shows no training curves.")
    return None


def model_info(ckpt: checkpoint.Checkpoint, paths: list[Path],
               note: Note = log.warning) -> dict[str, Any]:
    """What the page's model panel shows, from the (first) checkpoint and its run's log."""
    meta = ckpt.meta
    metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    history = read_history(paths[0], note)
    dataset = dataset_of(meta)
    return {"model": ", ".join(p.name for p in paths), "members": len(paths),
            "sizes": meta["sizes"], "class_names": list(dataset.class_names),
            "subject": dataset.subject,
            "preset": meta.get("preset"),
            "epoch": meta.get("epoch"), "epochs": config.get("epochs"),
            "kept_val_accuracy": val_score(metrics),
            "history": None if history is None else thin_history(history, meta.get("epoch"))}


def saliency_json(gradient: np.ndarray) -> dict[str, Any]:
    """A saliency map (28, 28) as the page draws it: each pixel's share of the map's
    largest magnitude, rounded (28 rows of 28), and that magnitude."""
    scale = float(np.abs(gradient).max())
    shares = np.round(gradient / max(scale, 1e-30), SALIENCY_DIGITS) + 0.0   # no -0.0
    return {"map": shares.tolist(), "scale": scale}


def prediction_json(p: Prediction, gradient: np.ndarray) -> dict[str, Any]:
    """The API's answer for one image, with its saliency map ``gradient`` (28, 28)."""
    from PIL import Image

    png = io.BytesIO()
    Image.fromarray(p.pixels, "L").save(png, format="PNG")
    answer = {"digit": p.digit, "label": p.label, "confidence": p.confidence, "top": p.top(),
              "input": "data:image/png;base64," + base64.b64encode(png.getvalue()).decode(),
              "saliency": saliency_json(gradient)}
    return answer


def trim_heap() -> None:
    """Give the C allocator's free memory back to the system (glibc's ``malloc_trim``;
    nothing elsewhere). Freed pages stay in the arena of the thread that freed them, so
    without this each image thread keeps the peak of the largest image it decoded."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    import ctypes

    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):       # not glibc
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line of at most ``limit`` characters."""
    return " ".join(text.split())[:limit]


Response = tuple[int, bytes, str, dict[str, str]]   # status, body, content type, headers
STATUS_TEXT = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found",
               405: "Method Not Allowed", 409: "Conflict", 411: "Length Required",
               413: "Content Too Large", 500: "Internal Server Error",
               503: "Service Unavailable"}
STOPPING = "the server is stopping; try again when it is back"


def json_error(status: int, message: str, **headers: str) -> Response:
    return status, json.dumps({"error": message}).encode(), "application/json", headers


def json_answer(value: Any, status: int = 200) -> Response:
    return status, json.dumps(value).encode(), "application/json", {}


def default_samples(model: Path) -> Path:
    """Where a model's corrections go unless told: ``NAME.samples/`` beside it."""
    return model.with_name(f"{model.stem}.samples")


class DigitApp:
    """The page and its API as a WSGI application (PEP 3333): routes, limits, JSON errors.

    Args:
        ckpt: the checkpoint (or committee) that reads the digits.
        info: what ``GET /api/model`` answers, serialised here (and by ``serve_taught``).
        classify_fn: ``classify.classify`` or a stand-in with its signature.
        slots: images prepared at once in each of two lanes (default: the cores),
            by as many threads kept for each lane, in order of arrival; the others
            wait. Images whose header declares at most ``SMALL_IMAGE`` pixels (a
            canvas, a screenshot) take the small lane, so that a queue of huge ones
            does not hold up a drawing. Always the same few threads (a pool's are
            kept), because the memory allocator keeps an arena for each thread that
            prepared a large image (its free memory given back: ``trim_heap``).
        note: where an unexpected failure is reported, one line each.
        samples: where corrections go (None: none are kept).
        teacher: teaches the corrections (None: no teaching, as for a committee).
    """

    def __init__(self, ckpt: checkpoint.Checkpoint, info: dict[str, Any], *,
                 classify_fn: Callable = classify, slots: int | None = None,
                 note: Note = log.error, samples: Samples | None = None,
                 teacher: Teacher | None = None):
        self.ckpt = ckpt
        self.model_json = json.dumps(info).encode()
        self.files = static_files()
        self.classify = classify_fn
        self.note = note
        self.samples = samples
        self.teacher = teacher
        self.slots = slots or cores()
        self.lanes = {name: ThreadPoolExecutor(self.slots, thread_name_prefix=f"classify-{name}")
                      for name in ("small", "large")}

    @staticmethod
    def lane(stream: BinaryIO) -> str:
        """"small" or "large": the pixels an upload's header declares (the stream is
        rewound); "small" when Pillow cannot read even that, as classify soon says too."""
        from PIL import Image

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")      # Pillow's DecompressionBombWarning
                with Image.open(stream) as img:
                    small = img.width * img.height <= SMALL_IMAGE
        except Exception:                     # noqa: BLE001 (only a routing guess)
            small = True
        stream.seek(0)
        return "small" if small else "large"

    def close(self) -> None:
        """Stop preparing images: those still waiting are answered 503 at once, the ones
        being prepared finish (a stopping server waits for a few images, not its queue);
        a teach under way stops, saving its resumable state (``wait`` for it)."""
        for pool in self.lanes.values():
            pool.shutdown(wait=False, cancel_futures=True)
        if self.teacher is not None:
            self.teacher.stop()

    def wait(self) -> None:
        """Wait for a teach that ``close`` stopped to have saved what it saves."""
        if self.teacher is not None:
            self.teacher.join()

    def _prepare(self, stream: BinaryIO, length: int, large: bool,
                 work: Callable[[bytes], Response]) -> Response:
        """Read one upload's body (only now: a waiting request holds no copy) and do
        ``work`` on it; after a large image, give the memory its decoding freed back."""
        try:
            return work(stream.read(length))
        finally:
            if large:
                trim_heap()

    @classmethod
    def load(cls, model_paths: list[Path], note: Note = log.warning, *,
             samples: Path | None = None, source: DataSource | None = None,
             teach_limit_s: float = TEACH_LIMIT_S, teach_flags: dict[str, Any] | None = None,
             **kwargs: Any) -> DigitApp:
        """The app for checkpoints ``model_paths`` (several: a committee, not taught),
        keeping corrections in ``samples`` (default: ``NAME.samples/`` beside the first)
        and teaching them with the model's dataset from ``source`` (default:
        ``DataSource.from_env()``).

        Raises:
            checkpoint.CheckpointError: a missing or bad model.
            OSError: ``samples`` is there but not a folder, or cannot be read.
        """
        paths = [Path(p) for p in model_paths]
        ckpt = checkpoint.load_committee(paths)
        kept = Samples(samples or default_samples(paths[0]), dataset_of(ckpt.meta))
        app = cls(ckpt, model_info(ckpt, paths, note), note=note, samples=kept, **kwargs)
        if len(paths) == 1:
            app.teacher = Teacher(paths[0], kept, source or DataSource.from_env(),
                                  app.serve_taught, limit_s=teach_limit_s, flags=teach_flags)
        return app

    def serve_taught(self, path: Path) -> None:
        """Read with the checkpoint at ``path`` from now on.

        Raises:
            checkpoint.CheckpointError: it cannot be loaded.
        """
        ckpt = checkpoint.load(path)
        self.model_json = json.dumps(model_info(ckpt, [path], self.note)).encode()
        self.ckpt = ckpt

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> list[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        status, body, content_type, extra = self.respond(method, path, environ)
        start_response(f"{status} {STATUS_TEXT[status]}", [
            ("Content-Type", content_type), ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
            *extra.items()])
        return [b"" if method == "HEAD" else body]

    def respond(self, method: str, path: str, environ: dict[str, Any]) -> Response:
        """The answer to one request."""
        allowed = ALLOWED.get(path, "GET, HEAD" if path in self.files else None)
        if method not in ("GET", "HEAD", "POST"):
            return json_error(405, f"{method[:20]} is not served here",
                              Allow=allowed or "GET, HEAD, POST")
        if allowed is None:
            return json_error(404, f"no such page: {path[:100]}")
        if method not in allowed:
            if method == "POST":
                return json_error(405, "POST goes to /api/predict, /api/correct or "
                                       f"/api/teach, not {path[:100]}", Allow=allowed)
            return json_error(405, f"POST an image file to {path}", Allow=allowed)
        if path == "/api/predict":
            return self.upload(environ, path, self._predict)
        if path == "/api/correct":
            return self.correct(environ)
        if path == "/api/model":
            return 200, self.model_json, "application/json", {}
        if path == "/api/samples":
            return self.held()
        if path == "/api/teach":
            return self.teach(method)
        return 200, *self.files[path], {}

    def upload(self, environ: dict[str, Any], path: str,
               work: Callable[[bytes], Response]) -> Response:
        """A POSTed image file: its length checked, ``work`` done on its bytes in a lane."""
        length = environ.get("CONTENT_LENGTH", "")
        if not length.isdigit():
            return json_error(411, "send the image with a Content-Length")
        if int(length) > MAX_BODY:
            return json_error(413, f"the image is over {MAX_BODY >> 20} MB; send a smaller one")
        stream = environ["wsgi.input"]
        lane = self.lane(stream)
        try:
            answer = self.lanes[lane].submit(self._prepare, stream, int(length),
                                             lane == "large", work)
        except RuntimeError:                  # the pools are shut down: see close()
            return json_error(503, STOPPING)
        try:
            return answer.result()
        except CancelledError:                # still waiting when the server stopped
            return json_error(503, STOPPING)
        except Exception as exc:              # noqa: BLE001 (the server must answer)
            self.note(f"POST {path} failed: {type(exc).__name__}: {one_line(str(exc))}")
            return json_error(500, f"the server failed on this image "
                                   f"({type(exc).__name__}); its log says more")

    def _predict(self, body: bytes) -> Response:
        """``POST /api/predict``: the reading of one image, and why."""
        ckpt = self.ckpt                      # the same one throughout, taught or not
        result = self.classify(ckpt, [body])[0]
        if isinstance(result, ImageError):
            return json_error(400, str(result))
        _, maps = saliency(ckpt.net, result.pixels[None], np.array([result.digit]))
        return json_answer(prediction_json(result, maps[0]))

    def correct(self, environ: dict[str, Any]) -> Response:
        """``POST /api/correct?label=N``: keep an image as class N."""
        if self.samples is None:
            return json_error(409, "this server keeps no corrections")
        names = self.samples.dataset.class_names
        labels = parse_qs(environ.get("QUERY_STRING", "")).get("label", [])
        if len(labels) != 1 or not (labels[0].isascii() and labels[0].isdigit()) \
                or len(labels[0]) > 3 or int(labels[0]) >= len(names):
            return json_error(400, f"give the class as ?label=N, N from 0 to {len(names) - 1}")
        label = int(labels[0])

        def keep(body: bytes) -> Response:
            result = self.classify(self.ckpt, [body])[0]
            if isinstance(result, ImageError):
                return json_error(400, str(result))
            try:
                name = self.samples.add(body, result.pixels, label)
            except SamplesFull as exc:
                return json_error(409, str(exc))
            except OSError as exc:
                self.note(f"cannot save a correction in {self.samples.folder}: "
                          f"{exc.strerror or exc}")
                return json_error(500, f"the server cannot save corrections "
                                       f"({exc.strerror or exc}); its log says more")
            return json_answer({"saved": name, "label": label, "class_name": names[label],
                                **self.samples_json()})

        return self.upload(environ, "/api/correct", keep)

    def samples_json(self) -> dict[str, Any]:
        counts = self.samples.counts()
        return {"counts": list(counts.values()), "total": sum(counts.values()),
                "limit": self.samples.limit}

    def held(self) -> Response:
        """``GET /api/samples``: the corrections held per class (in class order)."""
        if self.samples is None:
            return json_error(409, "this server keeps no corrections")
        return json_answer(self.samples_json())

    def teach(self, method: str) -> Response:
        """``POST /api/teach``: start a teach, or join the one under way (202);
        ``GET /api/teach``: its status."""
        if self.teacher is None:
            return json_error(409, "only a single model can be taught, not a committee")
        if method != "POST":
            return json_answer(self.teacher.status())
        try:
            started, status = self.teacher.start()
        except RunError as exc:
            return json_error(409, str(exc))
        return json_answer({"started": started, **status}, 202)
