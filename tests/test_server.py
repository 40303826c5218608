"""`mlp serve`'s HTTP server: the front before waitress (framing, time per request, a share
of connections per client address, early refusals heard by the client), the hosts it
listens on, stopping on signals."""

from __future__ import annotations

import http.client
import io
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
from PIL import Image, ImageDraw

from mnist_mlp import serve
from mnist_mlp.server import GRACE_S, DigitServer, Limits, client_of, is_loopback

from .serving import address, canvas_pngs, json_body, raw, real_server, request, running

server = pytest.fixture(scope="module", name="server")(real_server)
canvas_digits = pytest.fixture(scope="module", name="canvas_digits")(canvas_pngs)


def test_oversized_body_refused_before_it_is_read(server):
    start = time.monotonic()
    answer = raw(server, b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: "
                 + str(2**40).encode() + b"\r\n\r\n", b"\x89PNG")
    assert answer.startswith(b"HTTP/1.1 413") and "over 8 MB" in json_body(answer)["error"]
    assert time.monotonic() - start < 5
    answer = raw(server, b"POST /api/predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 411") and "Content-Length" in json_body(answer)["error"]


@pytest.mark.parametrize("size", [serve.MAX_BODY + 1, 40 << 20])
def test_a_python_client_hears_the_413_of_a_large_upload(server, size):
    """http.client (and urllib) send the whole body before reading: the server reads and
    drops it, then answers, instead of closing on a client still sending."""
    status, answer = request(server, "POST", "/api/predict", b"\x89PNG" + bytes(size - 4))
    assert status == 413 and answer == {"error": "the image is over 8 MB; send a smaller one"}


def test_expect_100_continue(server, canvas_digits):
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Length: " + str(serve.MAX_BODY + 1).encode() + b"\r\n\r\n")
        answer = sock.recv(65536)      # refused at once, the body never invited
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    body = canvas_digits[0][0].read_bytes()
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Connection: close\r\nContent-Length: " + str(len(body)).encode()
                     + b"\r\n\r\n")
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and "digit" in json_body(answer)


def test_ambiguous_lengths_are_bad_requests(server, canvas_digits):
    body = canvas_digits[0][0].read_bytes()
    n = str(len(body)).encode()
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    cases = [
        (b"HTTP/1.1", b"Content-Length: " + n + b"\r\nContent-Length: " + n, body),
        (b"HTTP/1.1", b"Content-Length: " + n + b"\r\nContent-Length: 5", body),
        (b"HTTP/1.1", b"Content-Length: " + n + b", " + n, body),
        (b"HTTP/1.1", b"Transfer-Encoding: chunked\r\nContent-Length: " + n, chunked),
        (b"HTTP/1.1", b"Content-Length: " + n + b"\r\nTransfer-Encoding: chunked", chunked),
        (b"HTTP/1.0", b"Transfer-Encoding: chunked\r\nContent-Length: " + n, body),
    ]
    for version, headers, payload in cases:
        answer = raw(server, b"POST /api/predict " + version + b"\r\nHost: x\r\n" + headers
                     + b"\r\n\r\n", payload)
        assert answer.startswith(b"HTTP/1.1 400"), (headers, answer[:300])
        message = json_body(answer)["error"]
        assert "Content-Length" in message or "Transfer-Encoding" in message


def _answer_while_open(srv, sent: bytes) -> bytes:
    """What the server answers to ``sent`` while the client keeps the connection open."""
    with socket.create_connection(address(srv), timeout=5) as sock:
        sock.sendall(sent)
        answer = b""
        while chunk := sock.recv(65536):      # socket.timeout: no answer, no close
            answer += chunk
        return answer


def test_chunked_uploads_are_refused_at_once(server):
    for chunk in (b"ffffffffffffffffff\r\n", b"4\r\nabcd\r\n"):
        answer = _answer_while_open(server, b"POST /api/predict HTTP/1.1\r\nHost: x\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n" + chunk)
        assert answer.startswith(b"HTTP/1.1 411"), answer[:300]
        assert "Content-Length" in json_body(answer)["error"]


@pytest.mark.parametrize("sent, status", [
    (b"GET /api/model HTTP/1.1\nHost: x\n\n", b"400"),                # bare LF
    (b"GET /api/model HTTP/1.1\r\nHost: x\n\r\n", b"400"),
    (b"GET /api/model HTTP/9.9\r\nHost: x\r\n\r\n", b"505"),
    (b"GET /api/model HTTP/2.0\r\nHost: x\r\n\r\n", b"505"),
    (b"GET /api/model  HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
    (b"GET /api/model HTTP/1.1\r\nHost : x\r\n\r\n", b"400"),
    (b"GET /api/model HTTP/1.1\r\nX-A: \x01\r\n\r\n", b"400"),
])
def test_malformed_heads_are_answered_at_once(server, sent, status):
    answer = _answer_while_open(server, sent)
    assert answer.split(b" ")[1] == status and "error" in json_body(answer), answer[:300]


def test_headers_over_64_kb_are_431_and_under_it_served(server):
    """The documented bound: 64 KB of request line and headers (literal sizes: a bound
    made four times larger lets the first request through)."""
    def head(size: int) -> bytes:
        start = b"GET /api/model HTTP/1.1\r\nHost: x\r\nX-Pad: "
        return start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"

    answer = _answer_while_open(server, head((64 << 10) + 100))
    assert answer.startswith(b"HTTP/1.1 431") and "64 KB" in json_body(answer)["error"]
    answer = raw(server, head(60 << 10))
    assert answer.startswith(b"HTTP/1.1 200") and "sizes" in json_body(answer)


def test_a_client_leaving_mid_body_does_not_disturb_others(server, canvas_digits):
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
                     b"only a little")
    silent = socket.create_connection(address(server), timeout=10)  # says nothing
    try:
        status, _ = request(server, "POST", "/api/predict", canvas_digits[0][0].read_bytes())
        assert status == 200
    finally:
        silent.close()


def _from_other_address() -> str:
    """A second loopback address for the slow clients (Linux routes all of 127/8)."""
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.2", 0))
    except OSError:
        pytest.skip("127.0.0.2 is not a loopback address here")
    return "127.0.0.2"


def test_slow_clients_get_their_share_and_no_more(server, canvas_digits):
    """200 clients from one address that send a request line, then a header line now and
    then: 20 are held, the others answered 503 at once, and a client from another address
    still gets the model and a drawing at once."""
    source = _from_other_address()
    slow = []
    for _ in range(Limits().connections):
        sock = socket.create_connection(address(server), timeout=10, source_address=(source, 0))
        sock.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\n")
        slow.append(sock)
    try:
        for sock in slow[:Limits().per_client]:
            sock.sendall(b"X-Slow: 1\r\n")
        body = canvas_digits[1][0].read_bytes()
        for method, path, payload in (("GET", "/api/model", None),
                                      ("POST", "/api/predict", body)):
            status, _ = request(server, method, path, payload)
            assert status == 200, (path, status)
        refused = []
        for sock in slow[Limits().per_client:]:
            answer = sock.recv(65536)
            refused.append(answer.startswith(b"HTTP/1.1 503") and b"your address" in answer)
        assert all(refused)
        slow[0].sendall(b"\r\n")            # the first ones were held, not dropped
        assert slow[0].recv(65536).startswith(b"HTTP/1.1 411")
    finally:
        for sock in slow:
            sock.close()


def _empty_200(environ, start_response):
    start_response("200 OK", [("Content-Length", "0")])
    return []


def test_when_every_slot_is_taken_the_slowest_arrival_makes_room():
    """Slow clients from as many addresses as there are slots: a newcomer closes the one
    whose request has been arriving longest, instead of being turned away."""
    srv = DigitServer(_empty_200, "127.0.0.1", 0, Limits(connections=10))
    thread = running(srv)
    slow = []
    try:
        for _ in range(10):
            sock = socket.create_connection(address(srv), timeout=10)
            sock.sendall(b"GET / HTTP/1.1\r\n")
            slow.append(sock)
            time.sleep(0.05)                 # the first one has been arriving longest
        answer = raw(srv, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert slow[0].recv(100) == b""      # closed to make room
        slow[1].sendall(b"\r\n")             # the others still held
        assert slow[1].recv(100).startswith(b"HTTP/1.1 200")
    finally:
        for sock in slow:
            sock.close()
        srv.stop()
        thread.join(10)


@pytest.fixture(name="brisk")
def brisk_server():
    """A server of an echoing app that allows 1 s for a request's head and 2 s for all of it."""
    def echo(environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    srv = DigitServer(echo, "127.0.0.1", 0, Limits(head_s=1, request_s=2))
    thread = running(srv)
    yield srv
    srv.stop()
    thread.join(10)


@pytest.mark.parametrize("head, drip", [
    (b"GET / HTTP/1.1\r\n", b"X-Slow: 1\r\n"),                            # headers
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", b"x"),   # body
    (b"", b""),                                                             # nothing
])
def test_a_request_that_arrives_too_slowly_is_cut_off(brisk, head, drip):
    """Each byte would reset an idle timer; the bound is on the whole request."""
    with socket.create_connection(address(brisk), timeout=10) as sock:
        sock.sendall(head)
        answer = b""
        for _ in range(60):                          # 18 s at most
            try:
                sock.sendall(drip)
            except OSError:                          # closed on us after the 408
                break
            sock.settimeout(0.3)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            answer += chunk
            if not chunk:
                break
    assert answer.startswith(b"HTTP/1.1 408") and "took over" in json_body(answer)["error"]


def test_a_request_in_time_is_answered(brisk):
    assert raw(brisk, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n",
               b"abc").endswith(b"\r\n\r\nabc")


def test_concurrent_clients(server, canvas_digits):
    bodies = [(p.read_bytes(), request(server, "POST", "/api/predict", p.read_bytes())[1])
              for p, _ in canvas_digits[:8]]

    def client(i: int) -> int:
        body, expected = bodies[i]
        ok = 0
        for _ in range(25):
            status, answer = request(server, "POST", "/api/predict", body)
            ok += status == 200 and answer["top"] == expected["top"]
        return ok

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(client, range(8))) == [25] * 8


def test_a_client_is_an_ipv4_address_or_an_ipv6_64():
    assert client_of("192.0.2.7") == client_of("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_of("192.0.2.7") != client_of("192.0.2.8")
    assert client_of("2001:db8:1:2::1") == client_of("2001:db8:1:2:ffff:1:2:3")
    assert client_of("2001:db8:1:2::1") != client_of("2001:db8:1:3::1")
    assert client_of("fe80::1%eth0") == client_of("fe80::2")


def test_is_loopback():
    for host in ("127.0.0.1", "127.1", "127.8.9.10", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.0.2.1", "no-such-host.invalid"):
        assert not is_loopback(host), host


# ---------------------------------------------------------------- `mlp serve` in its own process

def _start(model, *args: str) -> tuple[subprocess.Popen, str, int]:
    """``mlp serve`` in its own process; it, and where it listens."""
    proc = subprocess.Popen([sys.executable, "-m", "mnist_mlp", "serve", "--model",
                             str(model), "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert "serving" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
    url = urlsplit(line.split(" at ")[1].split()[0])
    return proc, url.hostname, url.port


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("host, connect, stop, warned", [
    ("::1", "::1", signal.SIGINT, False),
    ("[::1]", "::1", signal.SIGTERM, False),
    ("127.1", "127.0.0.1", signal.SIGTERM, False),
    ("0.0.0.0", "127.0.0.1", signal.SIGTERM, True),
])
def test_hosts_warnings_and_stopping(real_model, host, connect, stop, warned):
    if ":" in host and not _ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    proc, _, port = _start(real_model, "--host", host)
    try:
        conn = http.client.HTTPConnection(connect, port, timeout=10)
        conn.request("GET", "/api/model")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        proc.send_signal(stop)
        err = proc.communicate(timeout=20)[1]
    assert proc.returncode == 0 and "Traceback" not in err
    assert ("anyone who can reach this machine" in err) == warned, err
    assert err.count("\n") == warned


def _upload(host: str, port: int, body: bytes, answers: list[int | str]) -> None:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("POST", "/api/predict", body=body)
        answers.append(conn.getresponse().status)
    except (http.client.HTTPException, OSError) as exc:
        answers.append(type(exc).__name__)


def test_a_signal_with_requests_in_flight_still_exits_0(real_model, tmp_path):
    big = Image.new("RGBA", (6000, 6000), (255, 255, 255, 255))   # seconds to prepare
    ImageDraw.Draw(big).line([(3000, 1000), (3000, 5000)], fill=(0, 0, 0, 255), width=300)
    png = io.BytesIO()
    big.save(png, format="PNG")
    for stop, upload in ((signal.SIGTERM, True), (signal.SIGINT, False)):
        proc, host, port = _start(real_model)
        half = socket.create_connection((host, port), timeout=10)   # headers, half a body
        half.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab")
        answers: list[int | str] = []
        uploads = [threading.Thread(target=_upload, args=(host, port, png.getvalue(), answers))
                   for _ in range(24 if upload else 0)]   # a queue far longer than GRACE_S
        for thread in uploads:
            thread.start()
        time.sleep(1.5)
        start = time.monotonic()
        proc.send_signal(stop)
        err = proc.communicate(timeout=20)[1]
        half.close()
        assert proc.returncode == 0 and "Traceback" not in err, (stop, err)
        assert time.monotonic() - start < GRACE_S + 3
        for thread in uploads:
            thread.join(20)
        # The queue is answered 503 at once, not worked off; those being prepared are answered
        # if done within GRACE_S, else cut off (seen as a reset, or a broken pipe by a client
        # still sending its upload).
        assert len(answers) == len(uploads)
        assert set(answers) <= {200, 400, 503, "RemoteDisconnected", "ConnectionResetError",
                                "BrokenPipeError"}
        assert (503 in answers) == upload
