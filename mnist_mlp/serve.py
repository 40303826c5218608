"""``mlp serve``: a page to draw a digit on and watch the network read it, and its JSON API.

Standard library only (``http.server.ThreadingHTTPServer``): the page's three
static files from the package's ``web/`` folder, and two routes:

- ``POST /api/predict``: the body is an image file's bytes (a canvas PNG, a
  photo); the answer is the digit, its confidence, all ten probabilities best
  first and the 28x28 input the network saw, as a PNG data URL. The image goes
  through ``classify.classify``, the very function ``mlp predict`` uses.
- ``GET /api/model``: layer sizes, the checkpoint's epoch and validation
  accuracy, and the run's metrics history when its log is beside it.

Errors are JSON ``{"error": ...}``: 400 not an image or no ink, 404 unknown
route, 405 wrong method, 411 no length, 413 a body over ``MAX_BODY`` (refused
before it is read), 503 when ``MAX_CLIENTS`` connections are already open (so
slow or silent clients cannot pile up threads). No URL reaches the file system: the static files are a
fixed table read at start.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

from . import checkpoint
from .classify import Prediction, classify
from .runfiles import RunError, RunFiles, read_metrics
from .train import val_score

MAX_BODY = 8 << 20        # bytes of an uploaded image; a phone photo is 2-5 MB
READ_TIMEOUT_S = 10       # a client that stops sending is dropped after this
MAX_CLIENTS = 32          # connections served at once; more get 503 at once
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}


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


def model_info(model: checkpoint.Checkpoint, paths: list[Path]) -> dict[str, Any]:
    """What the page's model panel shows, from the (first) checkpoint and its run's log."""
    path = paths[0]
    meta = model.meta
    metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    try:
        history = read_metrics(RunFiles(path).metrics)
    except RunError:
        history = None
    return {"model": ", ".join(p.name for p in paths), "members": len(paths),
            "sizes": meta["sizes"], "preset": meta.get("preset"),
            "epoch": meta.get("epoch"), "epochs": config.get("epochs"),
            "val_accuracy": val_score(metrics), "history": history}


def prediction_json(p: Prediction) -> dict[str, Any]:
    """The API's answer for one image."""
    from PIL import Image

    png = io.BytesIO()
    Image.fromarray(p.pixels, "L").save(png, format="PNG")
    return {"digit": p.digit, "confidence": p.confidence, "top": p.top(),
            "input": "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()}


class Handler(BaseHTTPRequestHandler):
    """One request; the server carries the model, its info and the static files."""

    server: "DigitServer"
    timeout = READ_TIMEOUT_S           # socket timeout for a slow or silent client
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        pass                           # quiet: the terminal shows the URL, not each request

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _error(self, status: HTTPStatus, message: str, close: bool = False) -> None:
        if close:
            self.close_connection = True
        self._json(status, {"error": message})

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/api/model":
            self._json(HTTPStatus.OK, self.server.info)
        elif path == "/api/predict":
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, "POST an image file to /api/predict")
        elif path in self.server.files:
            self._send(HTTPStatus.OK, *self.server.files[path])
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such page: {path[:100]}")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path != "/api/predict":
            status = (HTTPStatus.METHOD_NOT_ALLOWED if path in self.server.files
                      or path == "/api/model" else HTTPStatus.NOT_FOUND)
            self._error(status, f"POST goes to /api/predict, not {path[:100]}", close=True)
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._error(HTTPStatus.LENGTH_REQUIRED, "send the image with a Content-Length",
                        close=True)
            return
        if int(length) > MAX_BODY:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"the image is over {MAX_BODY // 2**20} MB; send a smaller one",
                        close=True)
            return
        body = self.rfile.read(int(length))
        if len(body) < int(length):
            self.close_connection = True   # the client went away mid-body: nothing to answer
            return
        try:
            (result,) = classify(self.server.model, [body])
        except FloatingPointError as exc:      # the model, not the image
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))
            return
        if isinstance(result, Prediction):
            self._json(HTTPStatus.OK, prediction_json(result))
        else:
            self._error(HTTPStatus.BAD_REQUEST, str(result))

    def _wrong_method(self) -> None:
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} is not served here",
                    close=True)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _wrong_method


class DigitServer(ThreadingHTTPServer):
    """The HTTP server with the model loaded once; one thread per connection."""

    daemon_threads = True

    def __init__(self, model_paths: Path | list[Path], host: str = "127.0.0.1",
                 port: int = 8000):
        """Load the model (several: a committee) and bind.

        Raises:
            checkpoint.CheckpointError: a missing or bad model.
            OSError: the address is in use or cannot be bound.
        """
        paths = [Path(p) for p in (model_paths if isinstance(model_paths, list)
                                   else [model_paths])]
        self.model = checkpoint.load_committee(paths)
        self.info = model_info(self.model, paths)
        self.files = static_files()
        self.slots = threading.BoundedSemaphore(MAX_CLIENTS)
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def process_request(self, request, client_address) -> None:
        """A thread for the connection if a slot is free; otherwise 503 and close."""
        if not self.slots.acquire(blocking=False):
            body = json.dumps({"error": "too many clients at once"}).encode()
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
                                b"application/json\r\nConnection: close\r\nContent-Length: "
                                + str(len(body)).encode() + b"\r\n\r\n" + body)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address) -> None:
        """A client that disconnects or times out concerns only its own thread."""
        import sys

        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server to this machine."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
