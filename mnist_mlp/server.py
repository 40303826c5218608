"""The HTTP server of ``mlp serve``: waitress, made stricter, serving the WSGI app.

waitress reads every request, headers and body, in its event loop before a worker
thread sees it, so slow or silent clients hold a buffer, never a thread. Its own
error answers are the app's JSON ``{"error": ...}``: 400 a malformed request
(conflicting Content-Length, Content-Length with chunked, lowercase method), 413 a
body over ``serve.MAX_BODY`` (answered as soon as the headers say so,
``Expect: 100-continue`` or not), 431 headers over ``MAX_HEADERS``. After them the
connection lingers, reading and dropping what the client still sends, so that the
client hears the answer.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable

import waitress
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser, ParsingError
from waitress.server import BaseWSGIServer
from waitress.task import ErrorTask
from waitress.utilities import RequestEntityTooLarge

from .serve import MAX_BODY, one_line

MAX_DRAIN = 64 << 20        # bytes read and dropped after an error answer, before closing
LINGER_S = 10               # seconds the same goes on at most
MAX_HEADERS = 64 << 10      # bytes of request line and headers
CONNECTION_LIMIT = 200      # open connections (and threads); more wait in the listen backlog
IDLE_TIMEOUT_S = 20         # a connection silent this long between requests is closed
GRACE_S = 5                 # on stop, requests in flight get this long to be answered


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
    """waitress serving ``app``: one event loop reads and writes every connection, and
    a worker thread per connection waitress accepts runs the app, so a request never
    waits for a thread: the page and ``/api/model`` are answered at once however many
    uploads wait for a classify slot (an idle thread costs some 16 KB).

    Args:
        app: the WSGI application.
        host, port: where to listen (port 0: any free port).

    Raises:
        OSError: the address is in use, cannot be bound, or does not resolve.
    """

    def __init__(self, app: Callable, host: str = "127.0.0.1", port: int = 8000):
        self._map: dict = {}
        self._stopping = threading.Event()
        self._closing = threading.RLock()    # no wake-up through a pipe already closed
        self._closed = False
        try:
            self._server = waitress.create_server(
                app, map=self._map, host=host, port=port,
                threads=CONNECTION_LIMIT,
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

    def serve_forever(self, stop_on: Iterable[signal.Signals] = (),
                      on_stop: Callable[[], None] = lambda: None) -> None:
        """Serve until ``stop()`` or one of the signals ``stop_on`` (from the main thread);
        then stop listening, call ``on_stop`` (the app gives up work it has not started),
        give requests in flight ``GRACE_S`` to be answered, close."""
        previous = {s: signal.signal(s, lambda *_: self.stop()) for s in stop_on}
        try:
            while not self._stopping.is_set():
                wasyncore.loop(timeout=1.0, map=self._map, use_poll=True, count=1)
            for listener in self._listeners:
                listener.accepting = False
            on_stop()
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
