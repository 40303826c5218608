"""The HTTP server of ``mlp serve``: a small front on the public address, waitress behind it.

The front (asyncio, one thread) owns the listening socket. It reads each request's head
within ``Limits.head_s`` and checks it (one request line of HTTP/1.0 or 1.1, an upper-case
method, CRLF line ends, headers up to ``MAX_HEADERS`` bytes, one plain Content-Length and
no Transfer-Encoding, a body up to ``serve.MAX_BODY``), then passes the request to waitress
and its body within ``Limits.request_s`` of the connection's start, and the answer back.
It gives each client (an IPv4 address, an IPv6 /64) at most ``Limits.per_client`` of the
``Limits.connections`` connections: beyond its share a client is answered 503; when all
are taken, the connection whose request has been arriving longest is closed to make room
(503 when every request has arrived). Every other
refusal is the app's JSON ``{"error": ...}`` too, followed by a lingering close: the front
reads and drops what the client still sends (``MAX_DRAIN`` bytes, ``LINGER_S`` seconds at
most), so that a client still sending hears the answer.

waitress (its documented ``create_server`` and arguments) serves the WSGI app on a Unix
socket in a private folder, one request per connection, a worker thread per connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import signal
import socket
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

import waitress

from .serve import MAX_BODY

MAX_HEADERS = 64 << 10      # bytes of request line and headers
MAX_DRAIN = 64 << 20        # bytes read and dropped after a refusal, before closing
LINGER_S = 10               # seconds the same goes on at most
GRACE_S = 5                 # on stop, requests in flight get this long to be answered
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection"}
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")
BAD_LINE_END = re.compile(rb"(?<!\r)\n|\r(?!\n)")
CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True)
class Limits:
    """How much of the server one client may hold.

    Attributes:
        connections: open connections at most; more close the one whose request has
            been arriving longest, or are answered 503 when every request has arrived.
        per_client: open connections from one client address at most; more: 503.
        head_s: seconds from a connection's start to the end of its request's headers.
        request_s: seconds from a connection's start to the end of its request's body.
    """

    connections: int = 200
    per_client: int = 20
    head_s: float = 10
    request_s: float = 60


class HttpError(Exception):
    """A request refused: its status and the JSON answer's message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

    def answer(self) -> bytes:
        """The whole HTTP answer, closing the connection."""
        body = json.dumps({"error": self.message}).encode()
        return (f"HTTP/1.1 {self.status} {HTTPStatus(self.status).phrase}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
                "Connection: close\r\n\r\n").encode() + body


@dataclass(frozen=True)
class Request:
    """A checked request head: its body's length and the head passed on to waitress."""

    length: int
    forward: bytes


def parse_head(head: bytes) -> Request:
    """Check a request head (its lines without the blank line that ends it).

    Raises:
        HttpError: 400 a malformed or ambiguous head, 411 chunked framing, 413 a body
            over ``MAX_BODY``, 505 an HTTP version other than 1.0 and 1.1.
    """
    request_line, *lines = head.split(b"\r\n")
    method, target, version = (request_line.split(b" ") + [b"", b""])[:3]
    if request_line.count(b" ") != 2 or not TOKEN.fullmatch(method) or not target \
            or not VERSION.fullmatch(version):
        raise HttpError(400, f"malformed request line: {request_line[:80]!r}")
    if version not in (b"HTTP/1.0", b"HTTP/1.1"):
        raise HttpError(505, f"{version.decode()} is not served here; speak HTTP/1.1")
    if method != method.upper():
        raise HttpError(400, f"the method must be upper case, not {method.decode()}")
    names = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not TOKEN.fullmatch(name) or CONTROL.search(value):
            raise HttpError(400, f"malformed header line: {line[:80]!r}")
        names.append(name.lower())
    lengths = [line.partition(b":")[2].strip(b" \t") for line, name in zip(lines, names)
               if name == b"content-length"]
    if len(lengths) > 1 or (lengths and not lengths[0].isdigit()):
        raise HttpError(400, "send one Content-Length, a plain number")
    if b"transfer-encoding" in names:
        if lengths:
            raise HttpError(400, "Content-Length with Transfer-Encoding")
        if version == b"HTTP/1.0":
            raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
        raise HttpError(411, "send the image with a Content-Length, not Transfer-Encoding")
    digits = lengths[0].lstrip(b"0") if lengths else b""
    length = int(digits or b"0") if len(digits) <= 18 else MAX_BODY + 1   # no 4300-digit int
    if length > MAX_BODY:
        raise HttpError(413, f"the image is over {MAX_BODY >> 20} MB; send a smaller one")
    kept = [line for line, name in zip(lines, names) if name not in HOP_BY_HOP]
    return Request(length, b"\r\n".join([request_line, *kept, b"Connection: close", b"", b""]))


async def read_head(reader: asyncio.StreamReader) -> tuple[bytes | None, bytes]:
    """A request's head (without its blank line) and the bytes after it; None when the
    client closes first.

    Raises:
        HttpError: 400 a line not ended by CRLF, 431 a head over ``MAX_HEADERS``.
    """
    data = b""
    while True:
        while data.startswith(b"\r\n"):           # empty lines before a request: ignored
            data = data[2:]
        end = data.find(b"\r\n\r\n")
        head = data[:end + 4] if end >= 0 else data + b"\n" * data.endswith(b"\r")
        if BAD_LINE_END.search(head):           # (a last CR may yet be followed by LF)
            raise HttpError(400, "a line of the request does not end in CRLF")
        if (end if end >= 0 else len(data)) + 4 > MAX_HEADERS:
            raise HttpError(431, f"the request's headers are over {MAX_HEADERS >> 10} KB")
        if end >= 0:
            return data[:end], data[end + 4:]
        chunk = await reader.read(65536)
        if not chunk:
            return None, b""
        data += chunk


async def copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
               length: int | None = None) -> None:
    """Pass ``length`` bytes (None: until the end) from ``reader`` to ``writer``.

    Raises:
        ConnectionError: the reader ended first.
    """
    while length is None or length > 0:
        chunk = await reader.read(65536 if length is None else min(length, 65536))
        if not chunk:
            if length is None:
                return
            raise ConnectionResetError("the client left mid-body")
        writer.write(chunk)
        await writer.drain()
        if length is not None:
            length -= len(chunk)


async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 error: HttpError) -> None:
    """Answer ``error``, shut the sending side, read and drop what still comes (a
    client sending its body hears the answer), at most ``MAX_DRAIN`` bytes and ``LINGER_S``."""
    writer.write(error.answer())
    await writer.drain()
    writer.write_eof()
    dropped = 0
    try:
        async with asyncio.timeout(LINGER_S):
            while dropped <= MAX_DRAIN and (chunk := await reader.read(65536)):
                dropped += len(chunk)
    except TimeoutError:
        pass


def client_of(address: str) -> str:
    """The client whose share a peer ``address`` counts against: an IPv4 address itself
    (also inside an IPv4-mapped IPv6 one); for IPv6 its /64, which one host often holds."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


def bare_host(host: str) -> str:
    """``host`` without the brackets of a URL's IPv6 literal (``[::1]`` -> ``::1``)."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


class DigitServer:
    """The front on ``host``:``port`` and waitress serving ``app`` behind it.

    waitress reads each request whole (the body into a file past 256 KB) before a worker
    thread, one per connection, runs the app: the page and ``/api/model`` are answered at
    once however many uploads wait for a classify slot.

    Args:
        app: the WSGI application.
        host, port: where to listen (port 0: any free port; ``[::1]`` is ``::1``).
        limits: connections, per client, and the time a request may take to arrive.

    Raises:
        OSError: the address is in use, cannot be bound, or does not resolve.
    """

    def __init__(self, app: Callable, host: str = "127.0.0.1", port: int = 8000,
                 limits: Limits = Limits()):
        self.limits = limits
        self._loop = asyncio.new_event_loop()
        self._stopping = asyncio.Event()
        self._open: dict[asyncio.Task, None] = {}   # every connection's task, oldest first
        self._in_flight: set[asyncio.Task] = set()  # those whose request reached the app
        self._clients: Counter[str] = Counter()
        try:
            self._front = self._loop.run_until_complete(
                asyncio.start_server(self._connection, bare_host(host), port))
        except BaseException:
            self._loop.close()
            raise
        self._folder = tempfile.TemporaryDirectory(prefix="mlp-serve-")
        self._socket = str(Path(self._folder.name) / "app.sock")
        self._backend = waitress.create_server(
            app, unix_socket=self._socket, unix_socket_perms="600",
            threads=limits.connections, connection_limit=limits.connections,
            asyncore_use_poll=True, max_request_header_size=2 * MAX_HEADERS,
            max_request_body_size=MAX_BODY, inbuf_overflow=256 << 10,
            expose_tracebacks=False, log_socket_errors=False, ident="mlp serve")

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) pairs listened on."""
        return [sock.getsockname()[:2] for sock in self._front.sockets]

    @property
    def url(self) -> str:
        host, port = self.addresses[0]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def serve_forever(self, stop_on: Iterable[signal.Signals] = (),
                      on_stop: Callable[[], None] = lambda: None) -> None:
        """Serve until ``stop()`` or one of the signals ``stop_on`` (from the main thread);
        then stop listening, drop requests still arriving, call ``on_stop`` (the app gives
        up work it has not started), give requests in flight ``GRACE_S`` to be answered."""
        previous = {s: signal.signal(s, lambda *_: self.stop()) for s in stop_on}
        backend = threading.Thread(target=self._backend.run, name="waitress", daemon=True)
        backend.start()
        try:
            self._loop.run_until_complete(self._serve(on_stop))
        finally:
            self._loop.close()
            # waitress's close(), which its run() calls on Ctrl-C: waits up to 5 s for
            # worker threads still preparing an image, so not on the way out of the process.
            threading.Thread(target=self._backend.close, daemon=True).start()
            self._folder.cleanup()
            for s, handler in previous.items():
                signal.signal(s, handler)

    def stop(self) -> None:
        """Make ``serve_forever`` return (from any thread, or a signal handler)."""
        try:
            self._loop.call_soon_threadsafe(self._stopping.set)
        except RuntimeError:              # already stopped: the loop is closed
            pass

    async def _serve(self, on_stop: Callable[[], None]) -> None:
        await self._stopping.wait()
        self._front.close()
        for task in self._open.keys() - self._in_flight:
            task.cancel()
        on_stop()
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=GRACE_S)
        for task in self._open:
            task.cancel()
        await asyncio.gather(*self._open, return_exceptions=True)
        await asyncio.sleep(0)            # the closed connections' sockets close

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        client = client_of(writer.get_extra_info("peername")[0])
        if self._clients[client] >= self.limits.per_client:
            return self._turn_away(writer, f"over {self.limits.per_client} connections "
                                            "from your address")
        if len(self._open) >= self.limits.connections:
            arriving = next((t for t in self._open if t not in self._in_flight), None)
            if arriving is None:
                return self._turn_away(writer, "the server is busy; try again")
            del self._open[arriving]          # the slowest request still arriving makes room
            arriving.cancel()
        task = asyncio.current_task()
        self._open[task] = None
        self._clients[client] += 1
        try:
            await self._exchange(reader, writer)
        except (OSError, asyncio.CancelledError):   # the client left, or the server stops
            pass
        finally:
            self._open.pop(task, None)
            self._in_flight.discard(task)
            self._clients[client] -= 1
            if not self._clients[client]:
                del self._clients[client]
            writer.close()

    @staticmethod
    def _turn_away(writer: asyncio.StreamWriter, message: str) -> None:
        """Answer 503 and close, without lingering: a client turned away holds no slot."""
        writer.write(HttpError(503, message).answer())
        writer.close()

    async def _exchange(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        """One request: its head checked, passed on with its body, the answer passed back."""
        start = self._loop.time()
        try:
            async with asyncio.timeout_at(start + self.limits.head_s):
                head, rest = await read_head(reader)
            if head is None:
                return
            request = parse_head(head)
        except TimeoutError:
            return await refuse(reader, writer, HttpError(
                408, f"the request's headers took over {self.limits.head_s:g} s"))
        except HttpError as error:
            return await refuse(reader, writer, error)
        app_reader, app_writer = await asyncio.open_unix_connection(self._socket)
        answer = asyncio.ensure_future(copy(app_reader, writer))   # also "100 Continue"
        try:
            app_writer.write(request.forward + rest[:request.length])
            try:
                async with asyncio.timeout_at(start + self.limits.request_s):
                    await copy(reader, app_writer, request.length - len(rest))
            except TimeoutError:
                answer.cancel()
                return await refuse(reader, writer, HttpError(
                    408, f"the request took over {self.limits.request_s:g} s to arrive"))
            self._in_flight.add(asyncio.current_task())
            await answer
        finally:
            answer.cancel()
            app_writer.close()


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to keeps the server to this machine."""
    try:
        found = socket.getaddrinfo(bare_host(host), None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    return bool(found) and all(
        ipaddress.ip_address(sockaddr[0].split("%")[0]).is_loopback
        for *_, sockaddr in found)
