"""A DigitServer in a thread on loopback, and the HTTP clients the tests of the app
(test_serve) and of its server (test_server) talk to it with.

``real_server`` and ``canvas_pngs`` are fixture functions: each test module makes them
its fixtures (``server = pytest.fixture(scope="module", name="server")(real_server)``).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading

import numpy as np

from mnist_mlp.dataset import DataSource
from mnist_mlp.serve import DigitApp
from mnist_mlp.server import DigitServer

from .digit_images import canvas_png


def running(srv: DigitServer) -> threading.Thread:
    """``srv`` serving in a (daemon) thread, returned; ``srv.stop()`` ends it."""
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    return thread


def address(srv: DigitServer) -> tuple[str, int]:
    return srv.addresses[0]


def request(srv, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(*address(srv), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def raw(srv, head: bytes, body: bytes = b"") -> bytes:
    """Send raw bytes; the answer, read until the server closes the connection."""
    with socket.create_connection(address(srv), timeout=10) as sock:
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def json_body(answer: bytes) -> dict:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


def real_server(real_model):
    """The app for the real model, served on a free loopback port (a fixture)."""
    srv = DigitServer(DigitApp.load([real_model]), "127.0.0.1", 0)
    thread = running(srv)
    yield srv
    srv.stop()
    thread.join(10)


def canvas_pngs(real_mnist, tmp_path_factory):
    """40 real test digits as canvas PNGs (white strokes on transparency) (a fixture)."""
    folder = tmp_path_factory.mktemp("canvas")
    images, labels = DataSource(real_mnist).load("test", flat=False)
    pick = np.random.default_rng(1).choice(len(images), 40, replace=False)
    return [(canvas_png(images[i] / 255.0, folder / f"{j:02d}.png"), int(labels[i]))
            for j, i in enumerate(pick)]
