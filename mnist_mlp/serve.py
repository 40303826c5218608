"""``mlp serve``: a page to draw a digit on and watch the network read it, and its JSON API.

A WSGI application (``DigitApp``), served by ``server.DigitServer``. Routes:

- ``GET /`` and the page's other static files (``web/`` in the package, read once).
- ``POST /api/predict``: the body is an image file's bytes (a canvas PNG, a
  photo); the answer is the digit, its confidence, all ten probabilities best
  first and the 28x28 input the network saw, as a PNG data URL. The image goes
  through ``classify.classify``, the very function ``mlp predict`` uses, in one of
  ``slots`` threads (the cores) for small images and as many for large ones: at
  most that many images are prepared at once, and a drawing never waits behind
  photos.
- ``GET /api/model``: layer sizes, the checkpoint's epoch and validation
  accuracy, and the run's metrics history (at most ``MAX_HISTORY_ROWS`` rows),
  made once at start: the model does not change while it is served.

``HEAD`` is answered for every ``GET``. Errors are JSON ``{"error": ...}``: 400 not
an image or no ink, 404 unknown route, 405 other methods, 411 no length, 413 a body
over ``MAX_BODY``, 500 an unexpected failure (logged as one line), 503 an image still
waiting for a thread when the server stops. No URL reaches the file system.
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

from . import checkpoint
from .classify import Prediction, classify
from .imaging import ImageError
from .records import val_score
from .runfiles import RunError, RunFiles, read_metrics
from .threads import cores

MAX_BODY = 8 << 20          # bytes of an uploaded image; a phone photo is 2-5 MB
MAX_HISTORY_ROWS = 1000     # rows of the metrics history the page gets
SMALL_IMAGE = 2_000_000     # pixels declared: an upload up to this takes the small lane
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}
ALLOWED = {"/api/predict": "POST", "/api/model": "GET, HEAD"}   # static files: GET, HEAD

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
    return {"model": ", ".join(p.name for p in paths), "members": len(paths),
            "sizes": meta["sizes"], "preset": meta.get("preset"),
            "epoch": meta.get("epoch"), "epochs": config.get("epochs"),
            "kept_val_accuracy": val_score(metrics),
            "history": None if history is None else thin_history(history, meta.get("epoch"))}


def prediction_json(p: Prediction) -> dict[str, Any]:
    """The API's answer for one image."""
    from PIL import Image

    png = io.BytesIO()
    Image.fromarray(p.pixels, "L").save(png, format="PNG")
    return {"digit": p.digit, "confidence": p.confidence, "top": p.top(),
            "input": "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()}


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
STATUS_TEXT = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
               411: "Length Required", 413: "Content Too Large", 500: "Internal Server Error",
               503: "Service Unavailable"}
STOPPING = "the server is stopping; try again when it is back"


def json_error(status: int, message: str, **headers: str) -> Response:
    return status, json.dumps({"error": message}).encode(), "application/json", headers


class DigitApp:
    """The page and its API as a WSGI application (PEP 3333): routes, limits, JSON errors.

    Args:
        ckpt: the checkpoint (or committee) that reads the digits.
        info: what ``GET /api/model`` answers, serialised once here.
        classify_fn: ``classify.classify`` or a stand-in with its signature.
        slots: images prepared at once in each of two lanes (default: the cores),
            by as many threads kept for each lane, in order of arrival; the others
            wait. Images whose header declares at most ``SMALL_IMAGE`` pixels (a
            canvas, a screenshot) take the small lane, so that a queue of huge ones
            does not hold up a drawing. Always the same few threads (a pool's are
            kept), because the memory allocator keeps an arena for each thread that
            prepared a large image (its free memory given back: ``trim_heap``).
        note: where an unexpected failure is reported, one line each.
    """

    def __init__(self, ckpt: checkpoint.Checkpoint, info: dict[str, Any], *,
                 classify_fn: Callable = classify, slots: int | None = None,
                 note: Note = log.error):
        self.ckpt = ckpt
        self.model_json = json.dumps(info).encode()
        self.files = static_files()
        self.classify = classify_fn
        self.note = note
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
        being prepared finish (a stopping server waits for a few images, not its queue)."""
        for pool in self.lanes.values():
            pool.shutdown(wait=False, cancel_futures=True)

    def _prepare(self, stream: BinaryIO, length: int, large: bool) -> Any:
        """Read one upload's body (only now: a waiting request holds no copy) and classify
        it; after a large image, give the memory its decoding freed back to the system."""
        try:
            return self.classify(self.ckpt, [stream.read(length)])[0]
        finally:
            if large:
                trim_heap()

    @classmethod
    def load(cls, model_paths: list[Path], note: Note = log.warning, **kwargs: Any
             ) -> DigitApp:
        """The app for checkpoints ``model_paths`` (several: a committee).

        Raises:
            checkpoint.CheckpointError: a missing or bad model.
        """
        paths = [Path(p) for p in model_paths]
        ckpt = checkpoint.load_committee(paths)
        return cls(ckpt, model_info(ckpt, paths, note), note=note, **kwargs)

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
        if path == "/api/predict":
            if method != "POST":
                return json_error(405, "POST an image file to /api/predict", Allow=allowed)
            return self.predict(environ)
        if method == "POST":
            return json_error(405, f"POST goes to /api/predict, not {path[:100]}",
                              Allow=allowed)
        if path == "/api/model":
            return 200, self.model_json, "application/json", {}
        return 200, *self.files[path], {}

    def predict(self, environ: dict[str, Any]) -> Response:
        """``POST /api/predict``: classify the body, one image."""
        length = environ.get("CONTENT_LENGTH", "")
        if not length.isdigit():
            return json_error(411, "send the image with a Content-Length")
        if int(length) > MAX_BODY:
            return json_error(413, f"the image is over {MAX_BODY >> 20} MB; send a smaller one")
        stream = environ["wsgi.input"]
        lane = self.lane(stream)
        try:
            answer = self.lanes[lane].submit(self._prepare, stream, int(length), lane == "large")
        except RuntimeError:                  # the pools are shut down: see close()
            return json_error(503, STOPPING)
        try:
            result = answer.result()
        except CancelledError:                # still waiting when the server stopped
            return json_error(503, STOPPING)
        except Exception as exc:              # noqa: BLE001 (the server must answer)
            self.note(f"POST /api/predict failed: {type(exc).__name__}: {one_line(str(exc))}")
            return json_error(500, f"the server failed on this image "
                                   f"({type(exc).__name__}); its log says more")
        if isinstance(result, ImageError):
            return json_error(400, str(result))
        return 200, json.dumps(prediction_json(result)).encode(), "application/json", {}
