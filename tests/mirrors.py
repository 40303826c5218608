"""Loopback HTTP mirrors for download tests: a well-behaved one and hostile ones."""

from __future__ import annotations

import gzip
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Mirror:
    """A real HTTP server on 127.0.0.1 serving a dict of path -> bytes (404 otherwise)."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests = files, []
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                mirror.requests.append(self.path)
                body = mirror.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/mnist/"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class HostileMirror:
    """A loopback server that misbehaves: sends forever, drips, or never answers."""

    def __init__(self, how: str):
        self.how, self.stop = how, threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        conns = []
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conns.append(conn)
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()
        for conn in conns:
            conn.close()

    def _answer(self, conn):
        try:
            conn.recv(65536)
            if self.how == "silent":
                self.stop.wait(30)
                return
            if self.how == "drip-headers":
                for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream" * 9:
                    if self.stop.wait(0.3):
                        return
                    conn.sendall(bytes([byte]))
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
            if self.how == "endless":
                block = os.urandom(1 << 16)
                head = gzip.compress(b"")[:10]        # a gzip header, then stored noise
                conn.sendall(head)
                while not self.stop.is_set():
                    conn.sendall(block)
            elif self.how == "drip":
                for byte in gzip.compress(b"\0" * 1000):
                    if self.stop.wait(0.3):
                        return
                    conn.sendall(bytes([byte]))
        except OSError:
            pass

    def close(self):
        self.stop.set()
        self.sock.close()
