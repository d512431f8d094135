"""A misbehaving HTTP server for the fetch and image-stage tests.

``serve()`` starts a ``ThreadingHTTPServer`` (daemon threads) on an ephemeral
port of 127.0.0.1 (or another loopback address, e.g. a *canary* on 127.0.0.2
that a redirect must never reach) and records every request, so tests can
assert how often a route was hit. Each route is one misbehaviour seen on the
web; ``ROUTES`` below lists them with the outcome winnow must reach.

Routes that hold a connection open (trickle, silent, huge declared length)
wait on the server's stop event, so stopping the server ends them. Routes
whose behaviour depends on the attempt (429 once, 503 once) count attempts by
the full request path, query included: give each test its own ``?k=...`` so
tests sharing a module-scoped server do not see each other's attempts.

    with serve() as server, serve("127.0.0.2") as canary:
        url = server.url("/redirect", to=canary.url("/img/good.jpg"))
        ...
        assert canary.hits() == []
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

from image_factory import (
    animated_gif,
    animated_webp,
    bomb_png,
    cmyk_jpeg,
    encode,
    exif_rotated_jpeg,
    gray16_png,
    html_page,
    jpeg_bytes,
    palette_png,
    png_bytes,
    scene,
    webp_bytes,
)

# Expected outcome per route, for readers (the tests assert them one by one).
ROUTES = {
    "/img/good.jpg": "accepted: 400x300 JPEG",
    "/img/good.png": "accepted: 400x300 PNG",
    "/img/good.jpg?ct=text/plain": "accepted: a valid JPEG served as text/plain (servers lie)",
    "/img/truncated.jpg": "image-undecodable: JPEG cut in half, Content-Length of the cut body",
    "/img/empty": "image-file-too-small: 200 with a zero-byte body",
    "/img/page.html": "image-undecodable: an 8 KiB HTML page, 200, text/html",
    "/img/small.png": "image-low-resolution: 100x100 (but > 5 KiB)",
    "/img/wide.jpg": "image-aspect-ratio: 1000x200",
    "/img/tiny.jpg": "image-file-too-small: a valid 300x300 JPEG under 5 KiB",
    "/img/bomb.png": "image-too-many-pixels: a valid ~110 KB PNG declaring 30000x30000",
    "/img/bomb100m.png": "image-too-many-pixels: 10000x10000, between Pillow's warning and error limits",
    "/img/<name>?nolength=1": "the same body without Content-Length (ends at close)",
    "/status/<code>[?retry_after=S]": "that status every time (http-4xx / http-5xx)",
    "/flaky/<code>?k=K&fail=N&retry_after=S": "<code> for the first N attempts (default 1), then good.jpg",
    "/redirect?to=URL[&status=302]": "a redirect to any URL (private address, file://, ftp://)",
    "/redirect-no-location": "http-3xx: a 302 without Location",
    "/loop/a": "too-many-redirects: /loop/a -> /loop/b -> /loop/a ...",
    "/chain/<n>": "n relative redirects, then good.jpg (10 > the cap of 5; 3 is fine)",
    "/trickle": "timeout: declares 100000 bytes, sends one every 0.2 s",
    "/trickle-headers?every=S": "timeout: the status line and headers one byte every S seconds (default 0.5)",
    "/endless": "too-large: streams forever without Content-Length",
    "/lying-length": "truncated: declares 100000 bytes, sends 500 and closes",
    "/huge-length": "too-large: declares 10 GB, sends 1 KiB and holds the connection",
    "/robots?tag=T[&tag=T2]": "good.jpg with X-Robots-Tag headers",
    "/robots-hold?tag=T": "X-Robots-Tag, declares 100000 bytes, sends 1 KiB and holds (must not be read)",
    "/silent": "timeout: reads the request, never answers",
    "/sleep?s=S": "good.jpg after S seconds (records concurrency)",
}


@functools.cache
def images() -> dict[str, tuple[bytes, str]]:
    """Bodies of the /img/ routes: name -> (bytes, content type). Built once per process."""
    good_jpeg = jpeg_bytes(400, 300, seed=11)
    return {
        "good.jpg": (good_jpeg, "image/jpeg"),
        "good.png": (png_bytes(400, 300, seed=12), "image/png"),
        "truncated.jpg": (good_jpeg[: len(good_jpeg) // 2], "image/jpeg"),
        "empty": (b"", "image/jpeg"),
        "page.html": (html_page(8192), "text/html; charset=utf-8"),
        "small.png": (png_bytes(100, 100, seed=13), "image/png"),
        "wide.jpg": (jpeg_bytes(1000, 200, seed=14), "image/jpeg"),
        "tiny.jpg": (encode(scene(300, 300, seed=15, noise=0), "JPEG", quality=30), "image/jpeg"),
        "bomb.png": (bomb_png(30000, 30000), "image/png"),
        "bomb100m.png": (bomb_png(10000, 10000), "image/png"),
        "portrait.png": (png_bytes(300, 600, seed=16), "image/png"),
        # Pixel modes and containers that trip naive decoders.
        "cmyk.jpg": (cmyk_jpeg(400, 300, seed=17), "image/jpeg"),
        "gray16.png": (gray16_png(400, 300, seed=18), "image/png"),
        "palette.png": (palette_png(400, 300, seed=19), "image/png"),
        "palette-alpha.png": (palette_png(400, 300, seed=20, transparency=True), "image/png"),
        "animated.gif": (animated_gif(300, 250, seed=21), "image/gif"),
        "animated.webp": (animated_webp(300, 250, seed=22), "image/webp"),
        "exif-rotated.jpg": (exif_rotated_jpeg(400, 300, seed=23, orientation=6), "image/jpeg"),
        "photo.webp": (webp_bytes(400, 300, seed=24), "image/webp"),
    }


@dataclass(frozen=True)
class Hit:
    """One request as the server saw it."""

    method: str
    path: str  # with the query string
    headers: dict[str, str]  # lower-case names
    at: float  # time.monotonic() when the headers were read


@dataclass
class _State:
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    hits: list[Hit] = field(default_factory=list)
    sleeping: int = 0
    max_sleeping: int = 0
    closed: dict[str, float] = field(default_factory=dict)  # path -> when the client was seen gone


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for the well-behaved routes
    server_version = "hostile/1.0"
    state: _State  # set per server, on a subclass

    def log_message(self, format: str, *args) -> None:
        pass

    def do_GET(self) -> None:
        hit = Hit(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, time.monotonic())
        with self.state.lock:
            self.state.hits.append(hit)
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        tags = parse_qs(parts.query).get("tag", [])
        route, _, arg = parts.path.lstrip("/").partition("/")
        try:
            handler = getattr(self, "route_" + route.replace("-", "_"), None)
            if handler is None:
                self.send_body(404, b"no such route", "text/plain")
            else:
                handler(arg, query, tags)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
            self.close_connection = True

    do_HEAD = do_GET

    # -- helpers -----------------------------------------------------------

    def send_body(self, status: int, body: bytes, content_type: str, headers: dict | None = None, length=True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            for v in value if isinstance(value, list) else [value]:
                self.send_header(name, v)
        if length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_good(self, headers: dict | None = None) -> None:
        body, ctype = images()["good.jpg"]
        self.send_body(200, body, ctype, headers)

    def redirect(self, location: str | None, status: int = 302) -> None:
        self.send_response(status)
        if location is not None:
            self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def hold(self, seconds: float = 3600.0) -> None:
        """Keep the connection open without sending anything until the server stops."""
        self.state.stopping.wait(seconds)
        self.close_connection = True

    def trickle(self, data: bytes, every: float) -> None:
        """Send ``data`` a byte at a time, one every ``every`` seconds, until the client goes away
        (recorded in ``closed``) or the server stops."""
        self.close_connection = True
        for i in range(len(data)):
            if self.peer_gone(every):
                return
            self.wfile.write(data[i : i + 1])
            self.wfile.flush()

    def peer_gone(self, wait: float) -> bool:
        """Wait up to ``wait`` seconds; True (and the time recorded) when the client closed meanwhile."""
        gone = _wait_for_close(self.connection, wait, self.state.stopping)
        if gone:
            with self.state.lock:
                self.state.closed[self.path] = time.monotonic()
        return gone or self.state.stopping.is_set()

    def attempts(self) -> int:
        """How many times this exact path (query included) has been requested, this one counted."""
        with self.state.lock:
            return sum(1 for h in self.state.hits if h.path == self.path)

    # -- routes --------------------------------------------------------------

    def route_img(self, name: str, query: dict, tags: list) -> None:
        if name not in images():
            self.send_body(404, b"no such image", "text/plain")
            return
        body, ctype = images()[name]
        self.send_body(200, body, query.get("ct", ctype), length=query.get("nolength") != "1")

    def route_status(self, code: str, query: dict, tags: list) -> None:
        headers = {"Retry-After": query["retry_after"]} if "retry_after" in query else None
        self.send_body(int(code), f"<h1>status {code}</h1>".encode(), "text/html", headers)

    def route_flaky(self, code: str, query: dict, tags: list) -> None:
        if self.attempts() <= int(query.get("fail", "1")):
            headers = {}
            if query.get("retry_after", "").startswith("date:"):
                seconds = float(query["retry_after"][5:])
                headers["Retry-After"] = email.utils.formatdate(time.time() + seconds, usegmt=True)
            elif "retry_after" in query:
                headers["Retry-After"] = query["retry_after"]
            self.send_body(int(code), b"<h1>try again later</h1>", "text/html", headers)
        else:
            self.send_good()

    def route_redirect(self, _: str, query: dict, tags: list) -> None:
        self.redirect(query.get("to"), int(query.get("status", "302")))

    def route_redirect_no_location(self, _: str, query: dict, tags: list) -> None:
        self.redirect(None)

    def route_loop(self, name: str, query: dict, tags: list) -> None:
        self.redirect("/loop/b" if name == "a" else "/loop/a")

    def route_chain(self, hops: str, query: dict, tags: list) -> None:
        n = int(hops)
        if n <= 0:
            self.send_good()
        else:
            suffix = f"?{urlencode(query)}" if query else ""
            self.redirect(f"/chain/{n - 1}{suffix}", 301 if n % 2 else 302)

    def route_trickle(self, _: str, query: dict, tags: list) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.flush()
        body = images()["good.jpg"][0]
        self.trickle((body * (100000 // len(body) + 1))[:100000], 0.2)

    def route_trickle_headers(self, _: str, query: dict, tags: list) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 100\r\n\r\n"
        self.trickle(head, float(query.get("every", "0.5")))

    def route_endless(self, _: str, query: dict, tags: list) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        chunk = b"\xff" * 65536
        while not self.state.stopping.is_set():
            self.wfile.write(chunk)

    def route_lying_length(self, _: str, query: dict, tags: list) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(images()["good.jpg"][0][:500])
        self.wfile.flush()
        self.close_connection = True

    def route_huge_length(self, _: str, query: dict, tags: list) -> None:
        self.send_and_hold(10 * 1024**3)

    def send_and_hold(self, length: int, headers: dict | None = None) -> None:
        """Declare ``length`` bytes, send 1 KiB of them, then hold the connection: a client that reads on waits."""
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(images()["good.jpg"][0][:1024])
        self.wfile.flush()
        self.hold()

    def route_robots(self, _: str, query: dict, tags: list) -> None:
        self.send_good({"X-Robots-Tag": tags})

    def route_robots_hold(self, _: str, query: dict, tags: list) -> None:
        self.send_and_hold(100_000, {"X-Robots-Tag": ", ".join(tags)})

    def route_silent(self, _: str, query: dict, tags: list) -> None:
        self.hold()

    def route_sleep(self, _: str, query: dict, tags: list) -> None:
        with self.state.lock:
            self.state.sleeping += 1
            self.state.max_sleeping = max(self.state.max_sleeping, self.state.sleeping)
        try:
            self.state.stopping.wait(float(query.get("s", "0.3")))
        finally:
            with self.state.lock:
                self.state.sleeping -= 1
        self.send_good()


def _wait_for_close(sock: socket.socket, wait: float, stopping: threading.Event) -> bool:
    """Whether the peer of ``sock`` closes (or resets) it within ``wait`` seconds."""
    end = time.monotonic() + wait
    while not stopping.is_set():
        left = end - time.monotonic()
        if left <= 0:
            return False
        readable, _, _ = select.select([sock], [], [], min(left, 0.05))
        if readable:
            try:
                if sock.recv(1, socket.MSG_PEEK) == b"":
                    return True
            except OSError:
                return True
            sock.recv(65536)  # the client sent something: drop it, keep waiting
    return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256  # socketserver's 5 drops SYNs under a burst: clients would see connect timeouts

    def handle_error(self, request, client_address) -> None:
        pass  # clients hang up on misbehaving routes: that is the point


class HostileServer:
    """A running hostile server: URLs, recorded requests, a port that refuses connections."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.state = _State()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._httpd = _Server((host, 0), handler)
        self.port = self._httpd.server_address[1]
        # Bound but not listening: connecting gets ECONNREFUSED, and holding it
        # keeps the port from being reused by another test meanwhile.
        self._refusing = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._refusing.bind((host, 0))
        self.refused_port = self._refusing.getsockname()[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> HostileServer:
        images()  # build the bodies before the first request, not inside a client's deadline
        self._thread.start()
        return self

    def stop(self) -> None:
        self.state.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._refusing.close()
        self._thread.join(timeout=5)

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str, **query) -> str:
        """An absolute URL on this server; keyword arguments become the query string."""
        pairs = [(k, x) for k, v in query.items() for x in (v if isinstance(v, list) else [v])]
        return self.base + path + (("&" if "?" in path else "?") + urlencode(pairs) if pairs else "")

    @property
    def refused_url(self) -> str:
        return f"http://{self.host}:{self.refused_port}/img/good.jpg"

    def hits(self, path: str | None = None, prefix: bool = False) -> list[Hit]:
        """Requests seen, all or those for ``path`` (exactly, query included, or as a prefix)."""
        with self.state.lock:
            hits = list(self.state.hits)
        if path is None:
            return hits
        return [h for h in hits if (h.path.startswith(path) if prefix else h.path == path)]

    def count(self, url_or_path: str) -> int:
        """How many requests hit this URL (or path with query)."""
        path = url_or_path.removeprefix(self.base)
        return len(self.hits(path))

    @property
    def max_concurrent_sleeps(self) -> int:
        with self.state.lock:
            return self.state.max_sleeping

    def closed_at(self, url_or_path: str) -> float | None:
        """When the server saw the client of this URL (or path with query) go away, if it did."""
        with self.state.lock:
            return self.state.closed.get(url_or_path.removeprefix(self.base))

    def reset_concurrency(self) -> None:
        with self.state.lock:
            self.state.max_sleeping = 0


class TlsStall:
    """A loopback TCP server whose TLS handshake never completes: it reads the ClientHello, then
    sends the header of a 16 KiB handshake record and its body one byte every ``every`` seconds,
    so no read ever times out. ``closed`` holds when each client was seen gone."""

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self.closed: list[float] = []
        self.accepted: list[float] = []
        self._stopping = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(time.monotonic())
            threading.Thread(target=self._stall, args=(conn,), daemon=True).start()

    def _stall(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)  # the ClientHello
                conn.sendall(b"\x16\x03\x03\x40\x00")  # handshake record, 16384 bytes to come
                while not _wait_for_close(conn, self.every, self._stopping):
                    conn.sendall(b"\x00")
                if not self._stopping.is_set():
                    self.closed.append(time.monotonic())
            except OSError:
                self.closed.append(time.monotonic())

    def __enter__(self) -> TlsStall:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._sock.close()
        self._thread.join(timeout=5)


@contextlib.contextmanager
def serve(host: str = "127.0.0.1") -> Iterator[HostileServer]:
    """A started HostileServer on ``host``, stopped on exit (held connections included)."""
    server = HostileServer(host).start()
    try:
        yield server
    finally:
        server.stop()
