"""``mlp serve``: a page to draw a digit on and watch the network read it, and its JSON API.

A WSGI application (``DigitApp``) served by waitress (``DigitServer``). waitress
reads every request, headers and body, in its event loop before a worker thread
sees it, so slow or silent clients hold a buffer, never a thread. Routes:

- ``GET /`` and the page's other static files (``web/`` in the package, read once).
- ``POST /api/predict``: the body is an image file's bytes (a canvas PNG, a
  photo); the answer is the digit, its confidence, all ten probabilities best
  first and the 28x28 input the network saw, as a PNG data URL. The image goes
  through ``classify.classify``, the very function ``mlp predict`` uses, in one of
  ``slots`` threads (the CPU count) for small images and as many for large ones: at
  most that many images are prepared at once, and a drawing never waits behind
  photos.
- ``GET /api/model``: layer sizes, the checkpoint's epoch and validation
  accuracy, and the run's metrics history (at most ``MAX_HISTORY_ROWS`` rows),
  made once at start: the model does not change while it is served.

``HEAD`` is answered for every ``GET``. Errors are JSON ``{"error": ...}``,
waitress's own included: 400 not an image, no ink, or a malformed request
(conflicting Content-Length, Content-Length with chunked, lowercase method),
404 unknown route, 405 other methods, 411 no length, 413 a body over
``MAX_BODY`` (answered as soon as the headers say so, ``Expect: 100-continue``
or not), 431 headers over ``MAX_HEADERS``, 500 an unexpected failure (logged as
one line). After waitress's own error answers the connection lingers, reading
and dropping what the client still sends, so that the client hears the answer.
No URL reaches the file system.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import json
import logging
import os
import queue
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO

import waitress
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser, ParsingError
from waitress.server import BaseWSGIServer
from waitress.task import ErrorTask
from waitress.utilities import RequestEntityTooLarge

from . import checkpoint
from .classify import Prediction, classify
from .imaging import ImageError
from .runfiles import RunError, RunFiles, read_metrics
from .train import val_score

MAX_BODY = 8 << 20          # bytes of an uploaded image; a phone photo is 2-5 MB
MAX_DRAIN = 64 << 20        # bytes read and dropped after an error answer, before closing
LINGER_S = 10               # seconds the same goes on at most
MAX_HEADERS = 64 << 10      # bytes of request line and headers
MAX_HISTORY_ROWS = 1000     # rows of the metrics history the page gets
SMALL_IMAGE = 2_000_000     # pixels declared: an upload up to this takes the small lane
CONNECTION_LIMIT = 200      # open connections (and threads); more wait in the listen backlog
IDLE_TIMEOUT_S = 20         # a connection silent this long between requests is closed
GRACE_S = 5                 # on stop, requests in flight get this long to be answered
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
        detail = str(exc)
    except (ValueError, OverflowError) as exc:      # numbers JSON allows, floats do not
        detail = f"{log_path}: not a metrics log of `mlp train` ({exc})"
    note(f"Warning: {detail}; the page shows no training curves.")
    return None


def model_info(model: checkpoint.Checkpoint, paths: list[Path],
               note: Note = log.warning) -> dict[str, Any]:
    """What the page's model panel shows, from the (first) checkpoint and its run's log."""
    meta = model.meta
    metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    history = read_history(paths[0], note)
    return {"model": ", ".join(p.name for p in paths), "members": len(paths),
            "sizes": meta["sizes"], "preset": meta.get("preset"),
            "epoch": meta.get("epoch"), "epochs": config.get("epochs"),
            "val_accuracy": val_score(metrics),
            "history": None if history is None else thin_history(history, meta.get("epoch"))}


def prediction_json(p: Prediction) -> dict[str, Any]:
    """The API's answer for one image."""
    from PIL import Image

    png = io.BytesIO()
    Image.fromarray(p.pixels, "L").save(png, format="PNG")
    return {"digit": p.digit, "confidence": p.confidence, "top": p.top(),
            "input": "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()}


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line of at most ``limit`` characters."""
    return " ".join(text.split())[:limit]


Response = tuple[int, bytes, str, dict[str, str]]   # status, body, content type, headers
STATUS_TEXT = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
               411: "Length Required", 413: "Content Too Large", 500: "Internal Server Error"}


def json_error(status: int, message: str, **headers: str) -> Response:
    return status, json.dumps({"error": message}).encode(), "application/json", headers


class DigitApp:
    """The page and its API as a WSGI application (PEP 3333): routes, limits, JSON errors.

    Args:
        model: the checkpoint (or committee) that reads the digits.
        info: what ``GET /api/model`` answers, serialised once here.
        classify_fn: ``classify.classify`` or a stand-in with its signature.
        slots: images prepared at once in each of two lanes (default: the CPU count),
            by as many threads kept for each lane, in order of arrival; the others
            wait. Images whose header declares at most ``SMALL_IMAGE`` pixels (a
            canvas, a screenshot) take the small lane, so that a queue of huge ones
            does not hold up a drawing. Always the same few threads, because the
            memory allocator keeps an arena for each thread that prepared a large image.
        note: where an unexpected failure is reported, one line each.
    """

    def __init__(self, model: checkpoint.Checkpoint, info: dict[str, Any], *,
                 classify_fn: Callable = classify, slots: int | None = None,
                 note: Note = log.error):
        self.model = model
        self.model_json = json.dumps(info).encode()
        self.files = static_files()
        self.classify = classify_fn
        self.note = note
        self.slots = slots or os.cpu_count() or 1
        self.lanes = {"small": queue.SimpleQueue(), "large": queue.SimpleQueue()}
        for name, jobs in self.lanes.items():
            for n in range(self.slots):
                threading.Thread(target=self._prepare_forever, args=(jobs,),
                                 name=f"classify-{name}-{n}", daemon=True).start()

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

    def _prepare_forever(self, jobs: queue.SimpleQueue) -> None:
        """Classify uploads, one at a time: ``(answer, body stream, length)`` from ``jobs``."""
        while True:
            answer, stream, length = jobs.get()
            try:
                answer.set_result(self.classify(self.model, [stream.read(length)])[0])
            except Exception as exc:          # noqa: BLE001 (handed to the request's thread)
                answer.set_exception(exc)

    @classmethod
    def load(cls, model_paths: list[Path], note: Note = log.warning, **kwargs: Any
             ) -> DigitApp:
        """The app for checkpoints ``model_paths`` (several: a committee).

        Raises:
            checkpoint.CheckpointError: a missing or bad model.
        """
        paths = [Path(p) for p in model_paths]
        model = checkpoint.load_committee(paths)
        return cls(model, model_info(model, paths, note), note=note, **kwargs)

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
        answer: Future = Future()     # the body is read there: a waiting request holds no copy
        stream = environ["wsgi.input"]
        self.lanes[self.lane(stream)].put((answer, stream, int(length)))
        try:
            result = answer.result()
        except Exception as exc:              # noqa: BLE001 (the server must answer)
            self.note(f"POST /api/predict failed: {type(exc).__name__}: {one_line(str(exc))}")
            return json_error(500, f"the server failed on this image "
                                   f"({type(exc).__name__}); its log says more")
        if isinstance(result, ImageError):
            return json_error(400, str(result))
        return 200, json.dumps(prediction_json(result)).encode(), "application/json", {}


# ---------------------------------------------------------------- waitress, made stricter

class _Parser(HTTPRequestParser):
    """waitress's request parser, stricter.

    ``Transfer-Encoding`` beside a ``Content-Length``, or in an HTTP/1.0 request, is a
    bad request (waitress would let chunked framing win); and a request already
    refused never gets ``100 Continue`` (waitress would invite its body).
    """

    def parse_header(self, header_plus: bytes) -> None:
        super().parse_header(header_plus)
        if self.chunked and "CONTENT_LENGTH" in self.headers:
            raise ParsingError("Content-Length with Transfer-Encoding: chunked")
        if "TRANSFER_ENCODING" in self.headers:      # HTTP/1.1 took it away if it was valid
            raise ParsingError("Transfer-Encoding in an HTTP/1.0 request")

    def received(self, data: bytes) -> int:
        used = super().received(data)
        if self.error is not None:
            self.expect_continue = False
        return used


class _JsonErrorTask(ErrorTask):
    """waitress's own error answers (malformed request, too large), as the app's JSON."""

    def execute(self) -> None:
        error = self.request.error
        if isinstance(error, RequestEntityTooLarge):
            message = f"the image is over {MAX_BODY >> 20} MB; send a smaller one"
        else:
            message = f"{error.reason.lower()}: {one_line(str(error.body))}"
        body = json.dumps({"error": message}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/json"),
                                      ("Cache-Control", "no-store"),
                                      ("X-Content-Type-Options", "nosniff")])
        self.set_close_on_finish()
        self.channel.linger = True
        self.content_length = len(body)
        self.write(body)


class _Channel(HTTPChannel):
    """waitress's connection, with a lingering close after an error answer.

    Closing a socket with unread input resets the connection, and a client still
    sending the body waitress refused (``http.client`` and ``urllib`` send it all
    before they read) would lose the answer. So the answer is sent, the sending side
    shut, and whatever still comes is read and dropped until the client closes, or for
    ``LINGER_S`` seconds and ``MAX_DRAIN`` bytes at most.
    """

    parser_class = _Parser
    error_task_class = _JsonErrorTask
    linger = False                      # set by an error answer
    linger_until: float | None = None   # once lingering, when to give up
    dropped = 0                         # bytes read and dropped while lingering

    def handle_close(self) -> None:
        if self.linger and self.linger_until is None and self.connected:
            try:
                self.socket.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            else:
                self.linger_until = time.monotonic() + LINGER_S
                return
        super().handle_close()

    def readable(self) -> bool:
        if self.linger_until is None:
            return super().readable()
        if time.monotonic() > self.linger_until or self.dropped > MAX_DRAIN:
            super().handle_close()
            return False
        return True

    def writable(self) -> bool:
        return self.linger_until is None and super().writable()

    def handle_read(self) -> None:
        if self.linger_until is None:
            super().handle_read()
        else:
            self.dropped += len(self.recv(self.adj.recv_bytes))   # b"": closed, and so are we


class DigitServer:
    """waitress serving ``app``: one event loop reads and writes every connection,
    ``threads`` worker threads run the app.

    Args:
        app: the WSGI application.
        host, port: where to listen (port 0: any free port).
        threads: worker threads (default: one per connection waitress accepts, so a
            request never waits for a thread: the page and ``/api/model`` are answered
            at once however many uploads wait for a classify slot; an idle thread costs
            some 16 KB).

    Raises:
        OSError: the address is in use, cannot be bound, or does not resolve.
    """

    def __init__(self, app: Callable, host: str = "127.0.0.1", port: int = 8000,
                 threads: int | None = None):
        self._map: dict = {}
        self._stopping = threading.Event()
        self._closing = threading.RLock()    # no wake-up through a pipe already closed
        self._closed = False
        try:
            self._server = waitress.create_server(
                app, map=self._map, host=host, port=port,
                threads=threads or CONNECTION_LIMIT,
                connection_limit=CONNECTION_LIMIT, asyncore_use_poll=True,
                channel_timeout=IDLE_TIMEOUT_S, cleanup_interval=2,
                max_request_header_size=MAX_HEADERS, max_request_body_size=MAX_BODY + 1,
                inbuf_overflow=256 << 10, expose_tracebacks=False, log_socket_errors=False,
                ident="mlp serve")
        except ValueError as exc:             # waitress: the host does not resolve
            raise OSError(str(exc)) from None
        self._listeners = [d for d in self._map.values() if isinstance(d, BaseWSGIServer)]
        for listener in self._listeners:
            listener.channel_class = _Channel
        # The queue of requests waiting for a thread is expected here, not news.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) pairs listened on."""
        return [(d.effective_host, int(d.effective_port)) for d in self._listeners]

    @property
    def url(self) -> str:
        host, port = self.addresses[0]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def serve_forever(self, stop_on: Iterable[signal.Signals] = ()) -> None:
        """Serve until ``stop()`` or one of the signals ``stop_on`` (from the main thread);
        then stop listening, give requests in flight ``GRACE_S`` to be answered, close."""
        previous = {s: signal.signal(s, lambda *_: self.stop()) for s in stop_on}
        try:
            while not self._stopping.is_set():
                wasyncore.loop(timeout=1.0, map=self._map, use_poll=True, count=1)
            for listener in self._listeners:
                listener.accepting = False
            deadline = time.monotonic() + GRACE_S
            while time.monotonic() < deadline and any(
                    isinstance(d, HTTPChannel) and (d.requests or d.total_outbufs_len)
                    for d in list(self._map.values())):
                wasyncore.loop(timeout=0.05, map=self._map, use_poll=True, count=1)
        finally:
            self._server.task_dispatcher.shutdown(timeout=1)
            with self._closing:
                self._closed = True
                wasyncore.close_all(self._map)
            for s, handler in previous.items():
                signal.signal(s, handler)

    def stop(self) -> None:
        """Make ``serve_forever`` return (from any thread, or a signal handler)."""
        self._stopping.set()
        with self._closing:
            if not self._closed:
                self._listeners[0].pull_trigger()


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to keeps the server to this machine."""
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    return bool(found) and all(
        ipaddress.ip_address(sockaddr[0].split("%")[0]).is_loopback
        for *_, sockaddr in found)
