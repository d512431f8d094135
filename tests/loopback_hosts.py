"""Several image hosts on loopback, each counting what politeness is about.

``serve_hosts(n)`` starts one HTTP/1.1 server (keep-alive) per address
127.0.0.1, 127.0.0.2, ... 127.0.0.n (Linux routes all of 127.0.0.0/8 to
loopback), each on its own ephemeral port. Every server serves
``/img/<name>.jpg`` (one JPEG, after ``delay`` seconds: a host's latency) and
records

- ``opened``: connections accepted;
- ``peak_open``: the most connections open at once (idle kept-alive ones too);
- ``peak_active``: the most requests being answered at once;
- ``paths``: every path requested, in order.

A run that honours ``max_per_host`` x ``max_tasks_per_host`` never has more
open (or active) at one host; a run that reuses its connections opens far
fewer than it requests. The winnow side must allow ``127.0.0.0/29`` (or the
addresses used) in ``fetch.allow_networks``: nothing here leaves loopback.

    with serve_hosts(8, delay=0.02) as hosts:
        urls = [hosts[0].url(f"/img/{i}.jpg") for i in range(100)]
        ...
        print(hosts[0].peak_open, hosts[0].opened, len(hosts[0].paths))
"""

from __future__ import annotations

import contextlib
import io
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def jpeg(width: int = 320, height: int = 240, seed: int = 1) -> bytes:
    """A photo-like JPEG above the COYO minimums (5 KiB, 200 px side)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 255 // width), (y * 255 // height), ((x + y) * 127 // (width + height))], axis=-1)
    pixels = np.clip(base + rng.integers(0, 60, size=base.shape), 0, 255).astype("uint8")
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


class HostServer(ThreadingHTTPServer):
    """One loopback host (see the module docstring)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: str, body: bytes, delay: float) -> None:
        self.body, self.delay = body, delay
        self.opened = self.open = self.peak_open = 0
        self.active = self.peak_active = 0
        self.paths: list[str] = []
        self._lock = threading.Lock()
        super().__init__((address, 0), _Handler)

    @property
    def address(self) -> str:
        return self.server_address[0]

    def url(self, path: str) -> str:
        return f"http://{self.server_address[0]}:{self.server_address[1]}{path}"

    def process_request(self, request: socket.socket, client_address: object) -> None:
        with self._lock:
            self.opened += 1
            self.open += 1
            self.peak_open = max(self.peak_open, self.open)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:
        with self._lock:
            self.open -= 1
        super().shutdown_request(request)

    def handle_error(self, request: socket.socket, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client killed mid-request is expected
            super().handle_error(request, client_address)

    def begin(self, path: str) -> None:
        with self._lock:
            self.paths.append(path)
            self.active += 1
            self.peak_active = max(self.peak_active, self.active)

    def end(self) -> None:
        with self._lock:
            self.active -= 1

    def reset(self) -> None:
        """Forget the counts (between the runs of one test); open connections stay counted."""
        with self._lock:
            self.opened = 0
            self.peak_open = self.open
            self.peak_active = self.active
            self.paths = []


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HostServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.begin(self.path)
        try:
            time.sleep(self.server.delay)
            if not self.path.startswith("/img/"):
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(self.server.body)))
            self.end_headers()
            self.wfile.write(self.server.body)
        finally:
            self.server.end()


@contextlib.contextmanager
def serve_hosts(n: int, delay: float = 0.0, body: bytes | None = None) -> Iterator[list[HostServer]]:
    """``n`` hosts on 127.0.0.1 ... 127.0.0.n while the block runs (see the module docstring)."""
    data = body if body is not None else jpeg()
    servers = [HostServer(f"127.0.0.{i + 1}", data, delay) for i in range(n)]
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True) for s in servers]
    for t in threads:
        t.start()
    try:
        yield servers
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
