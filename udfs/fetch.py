"""Fetching untrusted image URLs: pure Python (requests + urllib3), no Spark.

A crawl dump is hostile input. Every URL goes through ``Fetcher.fetch``, which
never raises: it returns the body, or a reject reason from ``schemas.reasons``
with a detail. ``FetchConfig`` is the ``[fetch]`` config section: its fields are
the defaults, and the object the fetcher is built from. What it enforces:

- schemes: http and https; ``file://`` only with ``allow_file_urls``; plain
  paths only under ``local_root`` (resolved, so ``../`` cannot leave it);
- addresses: the host is resolved by winnow and every address must be public
  (not private, loopback, link-local, multicast, reserved, shared or a cloud
  metadata address) unless it is inside ``allow_networks``. The check runs in
  the connection itself, on the address actually connected to, so it covers
  the first hop, every redirect and DNS answers that change between checks;
- one deadline per attempt that bounds all of it: DNS, connect, the TLS
  handshake, the status line and headers, every redirect hop and the body. A
  watchdog thread shuts the attempt's sockets down when it passes, so a server
  that trickles a header (or anything else) a byte at a time is cut off there;
  ``detail`` says what was still pending;
- a byte cap (declared Content-Length or counted while streaming), a redirect
  cap, loop detection;
- retries with exponential backoff and full jitter on connection errors, 429
  and 5xx, honouring Retry-After up to ``max_retry_after``;
- ``X-Robots-Tag: noai`` / ``noimageai`` (for every bot or for ours) refuses
  the image before its body is read.

``map_bounded`` runs many fetches on a thread pool with a cap per host, so one
slow or hostile domain occupies at most ``max_per_host`` threads of a task.
"""

from __future__ import annotations

import functools
import heapq
import ipaddress
import math
import os
import random
import re
import socket
import stat
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import unquote, urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from schemas import __version__, reasons

MAX_URL_CHARS = 8192
CHUNK_BYTES = 64 * 1024
# Addresses refused even though Python may call them global: cloud metadata services.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "100.100.100.200", "fd00:ec2::254", "169.254.170.2")
)
# IPv6 prefixes that carry an IPv4 address a gateway or the host itself connects to: the IPv4
# address must be allowed too. NAT64 well-known (RFC 6052) and local-use (RFC 8215; not global, but
# Python 3.11 calls it global), IPv4-compatible (deprecated, RFC 4291), 6to4 (RFC 3056), Teredo
# (RFC 4380: the client address, bit-inverted, in the last 32 bits; the server in bits 32..63).
NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")

K = TypeVar("K")
P = TypeVar("P")
R = TypeVar("R")


@dataclass(frozen=True)
class FetchConfig:
    """``[fetch]``: what the image stage's fetcher may do (hashable: one fetcher per worker and config)."""

    allow_networks: tuple[str, ...] = ()
    """Networks (CIDR) exempt from the private-address refusal; empty: every private, loopback,
    link-local, multicast and metadata address is refused. Tests and the demo allow 127.0.0.1/32."""
    allow_file_urls: bool = False
    """Read file:// URLs (they read the executor's disk)."""
    local_root: str = ""
    """Plain paths are read only under this folder (resolved, so ../ cannot leave it); "" = refused."""
    timeout: float = 10.0
    """Total seconds per attempt: resolve + connect + headers + body."""
    connect_timeout: float = 5.0
    """Seconds to resolve the host and to connect."""
    max_bytes: int = 20_000_000
    """A bigger body ends as too-large (declared, or counted while streaming)."""
    max_redirects: int = 5
    """Hops followed; every hop's address is checked again."""
    retries: int = 2
    """Extra attempts on connection errors, 429 and 5xx (exponential backoff with full jitter)."""
    backoff: float = 0.5
    """Seconds of the first backoff; it doubles per attempt."""
    max_retry_after: float = 10.0
    """A server's Retry-After up to this many seconds is honoured; a longer one ends the row."""
    threads: int = 16
    """Concurrent fetches per task."""
    max_per_host: int = 4
    """Concurrent fetches per host (its registrable domain, ``registrable_host``) within a task that
    fetches several hosts (a unit of packed hosts, or rows spread by id)."""
    host_split_rows: int = 10_000
    """A host with more rows than this is split over several units (image-stage tasks) of at most this
    many rows; smaller hosts are packed whole into units of about this size (img2dataset's shard size)."""
    max_tasks_per_host: int = 4
    """A host sees at most ``max_per_host`` x ``max_tasks_per_host`` connections from the whole run
    (16 by default), across the cluster: the units of a split host (each holding only that host,
    fetched with up to ``threads`` of those connections) run within that budget, so at most this
    many of them at a time (one with the defaults: 16 threads of a budget of 16)."""
    robots_optout_tokens: tuple[str, ...] = ("noai", "noimageai")
    """X-Robots-Tag directives that opt an image out ([] = ignore the header); directives addressed
    to another bot ("otherbot: noai") are ignored."""
    user_agent_token: str = "winnow"
    """The bot name X-Robots-Tag directives may address, and the User-Agent's first word."""
    user_agent: str = ""
    """The User-Agent header; "" = winnow/<version> (+ the robots tokens honoured)."""

    def agent(self) -> str:
        if self.user_agent:
            return self.user_agent
        return f"{self.user_agent_token}/{__version__} (image-text dataset curation; honours X-Robots-Tag noai)"

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, why) of every impossible value."""
        for cidr in self.allow_networks:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                yield "allow_networks", f"{cidr!r} is not a network such as 127.0.0.1/32"
        for key in ("timeout", "connect_timeout"):
            value = getattr(self, key)
            if not (0 < value and math.isfinite(value)):
                yield key, "must be a finite number of seconds above 0"
        for key in ("backoff", "max_retry_after"):
            value = getattr(self, key)
            if not (0 <= value and math.isfinite(value)):
                yield key, "must be a finite number of seconds, not negative"
        if self.max_bytes < 1:
            yield "max_bytes", "must be at least 1"
        if self.max_redirects < 0:
            yield "max_redirects", "must not be negative"
        if self.retries < 0:
            yield "retries", "must not be negative"
        if self.threads < 1:
            yield "threads", "must be at least 1"
        for key in ("max_per_host", "host_split_rows", "max_tasks_per_host"):
            if getattr(self, key) < 1:
                yield key, "must be at least 1"
        if re.fullmatch(r"[A-Za-z0-9_.-]+", self.user_agent_token) is None:
            yield "user_agent_token", "must be one word (letters, digits, _ . -)"
        if self.local_root and not os.path.isdir(self.local_root):
            yield "local_root", f"not a folder: {self.local_root}"


@dataclass
class Fetched:
    """The outcome of one URL: ``data`` when ``reason`` is None, else a reject reason."""

    data: bytes | None
    reason: str | None
    detail: str | None = None
    status: int | None = None
    content_type: str | None = None
    final_url: str | None = None
    attempts: int = 0


class _Refused(Exception):
    """Raised inside a connection: the resolved address is not allowed (not an OSError,
    so urllib3 neither wraps nor retries it)."""


class _Unresolvable(Exception):
    """Raised inside a connection: the host does not resolve (or resolving timed out)."""


class _Reject(Exception):
    """Ends one attempt with a reject reason."""

    def __init__(self, reason: str, detail: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.status, self.retry_after = reason, detail, status, retry_after


@dataclass
class AddressGuard:
    """Decides which resolved addresses a connection may use."""

    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    resolve_timeout: float = 5.0
    _resolver: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(4, "winnow-dns"), repr=False)

    def permits(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """Whether a connection may go to ``ip``: in ``allow``, or public and reaching no refused
        IPv4 address through a translator or tunnel.

        The IPv4 networks of ``allow`` cover their addresses and the IPv4-mapped forms of them
        (``::ffff:127.0.0.1`` is 127.0.0.1 on this host), never a NAT64, 6to4, Teredo or
        IPv4-compatible form: those reach the IPv4 address through another machine (a NAT64
        gateway's own loopback is not ours). Name the IPv6 network in ``allow`` to allow one.
        """
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip.version == net.version and ip in net for net in self.allow):
            return True
        if not _public(ip):
            return False
        return isinstance(ip, ipaddress.IPv4Address) or all(_public(v4) for v4 in embedded_ipv4(ip))

    def resolve(self, host: str, port: int, deadline: float) -> list[tuple[Any, ...]]:
        """getaddrinfo with a deadline (it has no timeout of its own), then the address check."""
        host = host.strip("[]")
        try:
            future = self._resolver.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
            infos = future.result(timeout=max(0.01, min(self.resolve_timeout, deadline - time.monotonic())))
        except TimeoutError:
            raise _Unresolvable(f"resolving {host} timed out") from None
        except (OSError, UnicodeError) as exc:
            raise _Unresolvable(f"{host} does not resolve: {exc}") from None
        allowed, refused = [], []
        for info in infos:
            ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
            (allowed if self.permits(ip) else refused).append((info, ip))
        if refused:  # one bad answer refuses the host: a name that also points inside is hostile
            raise _Refused(f"{host} resolves to {refused[0][1]}, a non-public address")
        if not allowed:
            raise _Unresolvable(f"{host} has no address")
        return [info for info, _ in allowed]


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if ip.version == 6 and ip in NAT64_LOCAL:
        return False  # a local translator (RFC 8215): it reaches whatever it is configured to
    return ip.is_global and not ip.is_multicast and ip not in METADATA_ADDRESSES


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address stands for: NAT64 (the /96 form, the one in use),
    IPv4-compatible (``::a.b.c.d``), 6to4, and Teredo's server and client."""
    found: list[ipaddress.IPv4Address] = []
    if ip in NAT64 or ip in NAT64_LOCAL or (ip in IPV4_COMPATIBLE and int(ip) > 1):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)  # (server, client)
    return found


class Attempt:
    """One attempt at a URL (redirects included): its deadline, its sockets, what it waits for.

    The watchdog shuts its sockets down when the deadline passes, whatever the
    thread is blocked in (connect, the TLS handshake, the status line, a header
    trickled a byte at a time, the body): the blocked call fails and the
    attempt ends as ``timeout``. Sockets are watched through a duplicate of
    their file descriptor, so a socket that TLS wrapped (and detached) is shut
    down all the same; ``shutdown`` ends the connection for every descriptor of it.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.pending = "DNS"  # what the attempt waits for, for the detail of a timeout
        self.expired = False
        self._watched: list[socket.socket] = []
        self._lock = threading.Lock()
        self._finished = False

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down when the deadline passes (at once, if it has)."""
        try:
            dup = socket.fromfd(sock.fileno(), sock.family, sock.type)
        except OSError:
            return  # already closed: nothing to wait on
        with self._lock:
            if not self.expired and not self._finished:
                self._watched.append(dup)
                return
        _shut(dup)

    def expire(self) -> None:
        """The deadline passed: end every connection of the attempt."""
        with self._lock:
            if self._finished:
                return
            self.expired = True
            watched, self._watched = self._watched, []
        for dup in watched:
            _shut(dup)

    def finish(self) -> None:
        """The attempt is over: stop watching (its connections may go back to the pool)."""
        with self._lock:
            self._finished = True
            watched, self._watched = self._watched, []
        for dup in watched:
            dup.close()


def _shut(dup: socket.socket) -> None:
    try:
        dup.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected (any more)
    dup.close()


class _Watchdog:
    """One thread per process that expires attempts at their deadlines (started on first use,
    again in a forked child: threads do not survive a fork)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Attempt]] = []
        self._cond = threading.Condition()
        self._pid = -1
        self._count = 0

    def add(self, attempt: Attempt) -> None:
        with self._cond:
            if self._pid != os.getpid():
                self._pid, self._heap = os.getpid(), []
                threading.Thread(target=self._run, name="winnow-fetch-deadlines", daemon=True).start()
            self._count += 1
            heapq.heappush(self._heap, (attempt.deadline, self._count, attempt))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(timeout=max(0.0, self._heap[0][0] - time.monotonic()) if self._heap else None)
                _, _, attempt = heapq.heappop(self._heap)
            attempt.expire()


WATCHDOG = _Watchdog()


def _guarded(base: type, guard: AddressGuard, attempt_of: Callable[[], Attempt]) -> type:
    """A urllib3 connection class that resolves, checks and connects to the checked address,
    and hands every socket it opens to the current attempt's watchdog."""

    class GuardedConnection(base):  # type: ignore[misc, valid-type]
        def _new_conn(self) -> socket.socket:
            attempt = attempt_of()
            attempt.pending = f"DNS ({self.host})"
            infos = guard.resolve(self._dns_host, self.port, attempt.deadline)
            last: OSError | None = None
            for family, socktype, proto, _name, address in infos:
                sock = socket.socket(family, socktype, proto)
                try:
                    attempt.pending = f"connect ({self.host})"
                    attempt.watch(sock)
                    sock.settimeout(self.timeout if isinstance(self.timeout, (int, float)) else None)
                    for opt in self.socket_options or ():
                        sock.setsockopt(*opt)
                    sock.connect(address)
                    attempt.pending = (
                        "TLS handshake" if isinstance(self, HTTPSConnection) else "status line and headers"
                    )
                    return sock
                except TimeoutError:
                    sock.close()
                    raise urllib3.exceptions.ConnectTimeoutError(self, f"connect to {self.host} timed out") from None
                except OSError as exc:
                    sock.close()
                    last = exc
            raise urllib3.exceptions.NewConnectionError(self, f"cannot connect to {self.host}: {last}")

        def connect(self) -> None:
            super().connect()  # for https, the TLS handshake too
            attempt_of().pending = "status line and headers"

    return GuardedConnection


def _watched_pool(base: type, connection: type, attempt_of: Callable[[], Attempt]) -> type:
    """A urllib3 pool whose kept-alive connections are watched by the attempt that reuses them."""

    class WatchedPool(base):  # type: ignore[misc, valid-type]
        ConnectionCls = connection

        def _get_conn(self, timeout: float | None = None) -> Any:
            conn = super()._get_conn(timeout)
            if getattr(conn, "sock", None) is not None:
                attempt = attempt_of()
                attempt.watch(conn.sock)
                attempt.pending = "status line and headers"
            return conn

    return WatchedPool


class _GuardedAdapter(HTTPAdapter):
    """requests adapter whose pools use guarded connections and never retry on their own."""

    def __init__(self, guard: AddressGuard, attempt_of: Callable[[], Attempt], pool_size: int):
        self._guard, self._attempt_of = guard, attempt_of
        super().__init__(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        http_conn = _guarded(HTTPConnection, self._guard, self._attempt_of)
        https_conn = _guarded(HTTPSConnection, self._guard, self._attempt_of)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _watched_pool(HTTPConnectionPool, http_conn, self._attempt_of),
            "https": _watched_pool(HTTPSConnectionPool, https_conn, self._attempt_of),
        }


def robots_optout(header: str | None, tokens: tuple[str, ...], agent_token: str) -> str | None:
    """The X-Robots-Tag directive that opts out of ``tokens`` for us, or None.

    ``X-Robots-Tag: noai, noimageai`` applies to every bot; ``otherbot: noai``
    only to otherbot. Several headers arrive joined by commas.
    """
    if not header or not tokens:
        return None
    wanted = {t.lower() for t in tokens}
    applies = True
    for part in header.split(","):
        part = part.strip().lower()
        if ":" in part:
            bot, _, part = part.partition(":")
            bot, part = bot.strip(), part.strip()
            if bot in ("unavailable_after",):
                continue
            applies = bot == agent_token.lower()
        if applies and part in wanted:
            return part
    return None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def host_key(url: str | None) -> str:
    """The host a URL will hit first ("" for no host): the unit of the per-host cap."""
    if not url:
        return ""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


@functools.cache
def _suffixes() -> Any:
    from publicsuffixlist import PublicSuffixList  # the list ships inside the wheel: nothing is downloaded

    return PublicSuffixList()


def registrable_host(url: str | None) -> str:
    """The site a URL names: its registrable domain by the Public Suffix List (``cdn1.example.co.uk``
    -> ``example.co.uk``), an IP address as it is, a name with no public suffix (``localhost``) as it
    is; "" when the URL names no host. The unit of politeness: the per-host caps count it."""
    host = host_key(url)
    if not host:
        return ""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    return _suffixes().privatesuffix(host.rstrip(".")) or host


class Fetcher:
    """One per Python worker process (``get_fetcher``): a pooled requests.Session shared by threads."""

    def __init__(self, policy: FetchConfig):
        self.policy = policy
        allow = tuple(ipaddress.ip_network(n, strict=False) for n in policy.allow_networks)
        self._guard = AddressGuard(allow, resolve_timeout=policy.connect_timeout)
        self._local = threading.local()
        self._root = os.path.realpath(policy.local_root) if policy.local_root else ""
        self._tokens = tuple(t.lower() for t in policy.robots_optout_tokens)
        session = requests.Session()
        session.trust_env = False  # no proxies, .netrc or CA bundles from the environment
        session.headers.update({"User-Agent": policy.agent(), "Accept-Encoding": "identity", "Accept": "image/*,*/*"})
        adapter = _GuardedAdapter(self._guard, self._attempt_now, pool_size=max(10, policy.threads))
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self._session = session

    def _attempt_now(self) -> Attempt:
        """The attempt this thread is making (connections are opened in the thread that asks)."""
        attempt = getattr(self._local, "attempt", None)
        if attempt is None:  # a connection outside an attempt: bounded all the same
            attempt = self._local.attempt = Attempt(self.policy.timeout)
            WATCHDOG.add(attempt)
        return attempt

    def close(self) -> None:
        """Close the kept-alive connections (the fetcher stays usable: new ones are opened on demand).
        The image stage calls it when a task ends, so a host sees only the running tasks' connections."""
        self._session.close()

    # -- the public entry point -------------------------------------------------

    def fetch(self, url: str | None) -> Fetched:
        """Bytes of ``url`` or a reject reason; never raises."""
        try:
            return self._fetch(url)
        except Exception as exc:  # a bug or a library surprise must not fail the job
            return Fetched(None, reasons.IMAGE_ERROR, f"{type(exc).__name__}: {exc}"[:500])

    def _fetch(self, url: str | None) -> Fetched:
        if url is None or not url.strip():
            return Fetched(None, reasons.URL_INVALID, "no URL")
        url = url.strip()
        if len(url) > MAX_URL_CHARS:
            return Fetched(None, reasons.URL_INVALID, f"URL of {len(url)} characters (limit {MAX_URL_CHARS})")
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            return Fetched(None, reasons.URL_INVALID, str(exc))
        scheme = parts.scheme.lower()
        if scheme == "file":
            if not self.policy.allow_file_urls:
                return Fetched(None, reasons.UNSUPPORTED_SCHEME, "file:// URLs are off (fetch.allow_file_urls)")
            return self._read_file(unquote(parts.path), check_root=bool(self._root))
        if not scheme or (len(scheme) == 1 and url[1:3] in (":\\", ":/")):
            if not self._root:
                return Fetched(None, reasons.UNSUPPORTED_SCHEME, "no scheme; set fetch.local_root to read local paths")
            return self._read_file(os.path.join(self._root, url), check_root=True)
        if scheme not in ("http", "https"):
            return Fetched(None, reasons.UNSUPPORTED_SCHEME, f"{scheme}: is not http(s)")
        return self._fetch_http(url)

    # -- local files ------------------------------------------------------------

    def _read_file(self, path: str, check_root: bool) -> Fetched:
        real = os.path.realpath(path)
        if check_root and os.path.commonpath([real, self._root]) != self._root:
            return Fetched(None, reasons.PATH_OUTSIDE_ROOT, f"{path} is outside {self._root}")
        try:
            # A FIFO or device would block or never end: only regular files are read.
            if not stat.S_ISREG(os.stat(real).st_mode):
                return Fetched(None, reasons.FILE_MISSING, f"{path} is not a regular file")
            with open(real, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size > self.policy.max_bytes:
                    return Fetched(None, reasons.TOO_LARGE, f"{size} bytes (limit {self.policy.max_bytes})")
                data = fh.read(self.policy.max_bytes + 1)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            return Fetched(None, reasons.FILE_MISSING, f"{path}: {exc.strerror}")
        except OSError as exc:
            return Fetched(None, reasons.FILE_MISSING, f"{path}: {exc.strerror or exc}")
        if len(data) > self.policy.max_bytes:
            return Fetched(None, reasons.TOO_LARGE, f"more than {self.policy.max_bytes} bytes")
        return Fetched(data, None, final_url=real)

    # -- HTTP -------------------------------------------------------------------

    def _fetch_http(self, url: str) -> Fetched:
        p = self.policy
        attempt = 0
        while True:
            attempt += 1
            try:
                data, status, ctype, final = self._attempt(url)
                return Fetched(data, None, None, status, ctype, final, attempt)
            except _Reject as rej:
                retryable = rej.reason in (reasons.CONNECT, reasons.HTTP_5XX) or rej.status == 429
                if not retryable or attempt > p.retries:
                    detail = rej.detail if attempt == 1 else f"{rej.detail} (after {attempt} attempts)"
                    return Fetched(None, rej.reason, detail, rej.status, attempts=attempt)
                if rej.retry_after is not None:
                    if rej.retry_after > p.max_retry_after:
                        detail = f"{rej.detail}; Retry-After {rej.retry_after:.0f}s is above {p.max_retry_after:g}s"
                        return Fetched(None, rej.reason, detail, rej.status, attempts=attempt)
                    delay = rej.retry_after
                else:  # full jitter: uniform in [0, backoff * 2^(attempt-1)]
                    delay = random.uniform(0, p.backoff * 2 ** (attempt - 1))
                time.sleep(delay)

    def _attempt(self, url: str) -> tuple[bytes, int, str | None, str]:
        """One attempt, redirects included, under one total deadline: the watchdog ends it there,
        whatever it waits for (DNS, connect, TLS, the status line, headers, the body)."""
        attempt = self._local.attempt = Attempt(self.policy.timeout)
        WATCHDOG.add(attempt)
        try:
            got = self._hops(url, attempt)
        except _Reject as rej:
            if attempt.expired:
                raise self._timed_out(attempt, rej.status) from None
            raise
        except Exception:
            if attempt.expired:  # whatever the shut-down socket made the library raise
                raise self._timed_out(attempt, None) from None
            raise
        finally:
            attempt.finish()
            self._local.attempt = None
        if attempt.expired:  # a body cut off by the watchdog can look complete (no Content-Length)
            raise self._timed_out(attempt, got[1])
        return got

    def _timed_out(self, attempt: Attempt, status: int | None) -> _Reject:
        return _Reject(
            reasons.TIMEOUT, f"deadline of {attempt.timeout:g}s passed while waiting for {attempt.pending}", status
        )

    def _hops(self, url: str, attempt: Attempt) -> tuple[bytes, int, str | None, str]:
        p = self.policy
        seen = {url}
        for _hop in range(p.max_redirects + 1):
            resp = self._request(url, attempt)
            try:
                if resp.is_redirect or 300 <= resp.status_code < 400:
                    location = resp.headers.get("Location")
                    if not location:
                        raise _Reject(reasons.HTTP_3XX, f"status {resp.status_code} without Location", resp.status_code)
                    try:
                        url = urljoin(url, location.strip())
                        scheme = urlsplit(url).scheme.lower()
                    except ValueError as exc:
                        raise _Reject(reasons.HTTP_3XX, f"unusable Location {location[:200]!r}: {exc}") from None
                    if scheme not in ("http", "https"):
                        raise _Reject(reasons.UNSUPPORTED_SCHEME, f"redirect to {scheme}: refused")
                    if url in seen:
                        raise _Reject(reasons.TOO_MANY_REDIRECTS, f"redirect loop back to {url[:200]}")
                    seen.add(url)
                    continue
                return self._body(resp, attempt) + (url,)
            finally:
                resp.close()
        raise _Reject(reasons.TOO_MANY_REDIRECTS, f"more than {p.max_redirects} redirects")

    def _request(self, url: str, attempt: Attempt) -> requests.Response:
        remaining = attempt.deadline - time.monotonic()
        if remaining <= 0:
            raise self._timed_out(attempt, None)
        try:
            return self._session.get(
                url,
                stream=True,
                allow_redirects=False,
                timeout=(min(self.policy.connect_timeout, remaining), remaining),
            )
        except _Refused as exc:
            raise _Reject(reasons.SSRF_REFUSED, str(exc)) from None
        except _Unresolvable as exc:
            raise _Reject(reasons.DNS, str(exc)) from None
        except requests.exceptions.SSLError as exc:
            raise _Reject(reasons.TLS, _short(exc)) from None
        except (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError) as exc:
            raise _Reject(reasons.TIMEOUT, f"{attempt.pending} timed out: {_short(exc)}") from None
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.URLRequired,
            requests.exceptions.MissingSchema,
        ) as e:
            raise _Reject(reasons.URL_INVALID, _short(e)) from None
        except requests.exceptions.InvalidSchema as exc:
            raise _Reject(reasons.UNSUPPORTED_SCHEME, _short(exc)) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            cause = exc.args[0] if exc.args else exc
            reason = getattr(cause, "reason", None)
            if isinstance(reason, (_Refused, _Unresolvable)):  # wrapped by urllib3 on some paths
                raise _Reject(
                    reasons.SSRF_REFUSED if isinstance(reason, _Refused) else reasons.DNS, str(reason)
                ) from None
            raise _Reject(reasons.CONNECT, _short(exc)) from None
        except (UnicodeError, ValueError, urllib3.exceptions.LocationParseError) as exc:
            raise _Reject(reasons.URL_INVALID, _short(exc)) from None

    def _body(self, resp: requests.Response, attempt: Attempt) -> tuple[bytes, int, str | None]:
        p, status, deadline = self.policy, resp.status_code, attempt.deadline
        if status >= 400:
            reason = reasons.HTTP_5XX if status >= 500 else reasons.HTTP_4XX
            retry_after = parse_retry_after(resp.headers.get("Retry-After")) if status in (429, 503) else None
            raise _Reject(reason, f"status {status}", status, retry_after)
        if status != 200 and status != 203:
            raise _Reject(reasons.HTTP_4XX if status >= 400 else reasons.HTTP_3XX, f"status {status}", status)
        directive = robots_optout(resp.headers.get("X-Robots-Tag"), self._tokens, p.user_agent_token)
        if directive:
            raise _Reject(reasons.ROBOTS_OPTOUT, f"X-Robots-Tag: {directive}", status)
        declared = resp.headers.get("Content-Length")
        if declared is not None and declared.strip().isdigit() and int(declared) > p.max_bytes:
            raise _Reject(reasons.TOO_LARGE, f"Content-Length {declared} (limit {p.max_bytes})", status)
        raw = resp.raw
        expected = int(declared) if declared is not None and declared.strip().isdigit() else None
        chunks, total = [], 0
        try:
            while expected is None or total < expected:
                attempt.pending = f"the body ({total} bytes so far)"
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timed_out(attempt, status)
                # Look the socket up on every read: once the body is complete urllib3 hands the
                # connection back to the pool (or closes it), and the old socket must not be touched.
                sock = getattr(getattr(raw, "_connection", None), "sock", None)
                if sock is not None:
                    sock.settimeout(remaining)
                chunk = raw.read1(CHUNK_BYTES, decode_content=False)
                if not chunk:
                    break
                total += len(chunk)
                if total > p.max_bytes:
                    raise _Reject(reasons.TOO_LARGE, f"more than {p.max_bytes} bytes", status)
                chunks.append(chunk)
        except _Reject:
            raise
        except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
            raise self._timed_out(attempt, status) from None
        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.IncompleteRead, OSError) as exc:
            raise _Reject(reasons.TRUNCATED, f"body broke off after {total} bytes: {_short(exc)}", status) from None
        except urllib3.exceptions.HTTPError as exc:
            raise _Reject(reasons.TRUNCATED, f"body broke off after {total} bytes: {_short(exc)}", status) from None
        if expected is not None and total < expected:
            raise _Reject(reasons.TRUNCATED, f"{total} of {expected} declared bytes", status)
        return b"".join(chunks), status, resp.headers.get("Content-Type")


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


@functools.cache
def get_fetcher(policy: FetchConfig) -> Fetcher:
    """The worker's fetcher for ``policy``: one pooled session per Python worker process."""
    return Fetcher(policy)


def map_bounded(
    items: Iterable[tuple[K, str, P]],
    work: Callable[[P], R],
    threads: int,
    max_per_host: int,
    max_pending: int = 4096,
) -> Iterator[tuple[K, R]]:
    """Run ``work(payload)`` for each ``(key, host, payload)`` on ``threads`` threads,
    at most ``max_per_host`` at a time per host; yield ``(key, result)`` as they finish.

    Items of a busy host wait in a queue of their own instead of occupying a
    thread, so a slow host holds at most ``max_per_host`` threads while the
    others keep working. At most ``max_pending`` items are read ahead.
    ``work`` must not raise (an exception is re-raised here and ends the task).
    """
    source = iter(items)
    queues: dict[str, deque[tuple[K, P]]] = {}
    busy: Counter[str] = Counter()
    running: dict[Future[R], tuple[K, str]] = {}
    queued = 0
    exhausted = False
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="winnow-fetch") as pool:
        while True:
            while not exhausted and queued < max_pending:
                try:
                    key, host, payload = next(source)
                except StopIteration:
                    exhausted = True
                    break
                queues.setdefault(host, deque()).append((key, payload))
                queued += 1
            for host in list(queues):
                queue = queues[host]
                while queue and busy[host] < max_per_host and len(running) < threads:
                    key, payload = queue.popleft()
                    queued -= 1
                    busy[host] += 1
                    running[pool.submit(work, payload)] = (key, host)
                if not queue:
                    del queues[host]
            if not running:
                if exhausted and not queues:
                    return
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                key, host = running.pop(future)
                busy[host] -= 1
                yield key, future.result()
