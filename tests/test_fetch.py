"""Pure tests (no Spark) of udfs.fetch against the hostile server in tests/hostile_server.py.

One test per misbehaviour, asserting the exact reason code (schemas.reasons)
and, where it means something, the detail and the server-side hit count. Only
127.0.0.1/32 is allowed, as in the demo: the canary on 127.0.0.2 must never
see a request.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
import uuid
from collections import Counter

import pytest
from hostile_server import TlsStall, images, serve

from jobs import __version__
from jobs.config import load_config
from schemas import reasons
from udfs.fetch import AddressGuard, FetchConfig, Fetched, Fetcher, get_fetcher, host_key, map_bounded

pytestmark = pytest.mark.timeout(60)

LOOPBACK_ONLY = ("127.0.0.1/32",)


@pytest.fixture(scope="module")
def server():
    with serve() as s:
        yield s


@pytest.fixture(scope="module")
def canary():
    """A server on 127.0.0.2: loopback, but outside the allow-list. Its hits must stay zero."""
    with serve("127.0.0.2") as s:
        yield s


@pytest.fixture(autouse=True)
def canary_stays_untouched(request):
    """Every test that uses the canary ends with it unvisited."""
    canary = request.getfixturevalue("canary") if "canary" in request.fixturenames else None
    before = len(canary.hits()) if canary else 0
    yield
    if canary:
        assert canary.hits()[before:] == [], f"the canary on 127.0.0.2 was reached: {canary.hits()[before:]}"


@pytest.fixture
def no_network(monkeypatch):
    """Fail loudly if anything opens a TCP connection; returns the addresses attempted."""
    attempted: list = []

    def refuse(self, address, *args):
        attempted.append(address)
        raise OSError(f"test forbids network traffic (connect to {address})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempted


def key() -> str:
    """A fresh query key: attempt counters on the server are per path, query included."""
    return uuid.uuid4().hex[:12]


def policy(**overrides) -> FetchConfig:
    values = dict(allow_networks=LOOPBACK_ONLY, timeout=2.0, connect_timeout=1.0, retries=1, backoff=0.05)
    values.update(overrides)
    return FetchConfig(**values)


def fetch(url: str | None, **overrides) -> Fetched:
    fetcher = Fetcher(policy(**overrides))
    try:
        return fetcher.fetch(url)
    finally:
        fetcher.close()


def timed_fetch(url: str | None, **overrides) -> tuple[Fetched, float]:
    start = time.monotonic()
    got = fetch(url, **overrides)
    return got, time.monotonic() - start


def assert_rejected(got: Fetched, reason: str) -> None:
    assert (got.reason, got.data) == (reason, None), f"expected {reason}, got {got}"
    assert got.reason in reasons.FETCH_REASONS
    assert got.detail, "a reject carries a detail for the rejects table"


def assert_body(got: Fetched, name: str) -> None:
    assert got.reason is None, f"expected the body of {name}, got {got.reason}: {got.detail}"
    assert got.data == images()[name][0]
    assert got.status == 200


# --- well-behaved and lying-but-harmless servers ---------------------------------------------------------------------


def test_good_jpeg(server):
    url = server.url("/img/good.jpg", k=key())
    got = fetch(url)
    assert_body(got, "good.jpg")
    assert got.content_type == "image/jpeg"
    assert got.final_url == url
    assert got.attempts == 1
    assert server.count(url) == 1


def test_good_png(server):
    got = fetch(server.url("/img/good.png"))
    assert_body(got, "good.png")
    assert got.content_type == "image/png"


def test_request_headers_ask_for_identity_encoding_and_name_winnow(server):
    url = server.url("/img/good.jpg", k=key())
    assert fetch(url).reason is None
    (hit,) = server.hits(url.removeprefix(server.base))
    assert hit.headers["accept-encoding"] == "identity"
    assert hit.headers["user-agent"].startswith(f"winnow/{__version__}")


def test_configured_user_agent_is_sent_as_is(server):
    url = server.url("/img/good.jpg", k=key())
    assert fetch(url, user_agent="curator-bot/2 (+https://example.org/bot)").reason is None
    (hit,) = server.hits(url.removeprefix(server.base))
    assert hit.headers["user-agent"] == "curator-bot/2 (+https://example.org/bot)"


def test_wrong_content_type_with_a_valid_image_is_fetched(server):
    got = fetch(server.url("/img/good.jpg", ct="text/plain"))
    assert_body(got, "good.jpg")
    assert got.content_type == "text/plain"


def test_body_without_content_length_is_read_to_the_end(server):
    assert_body(fetch(server.url("/img/good.png", nolength="1")), "good.png")


@pytest.mark.parametrize("name", ["truncated.jpg", "empty", "page.html", "bomb.png"])
def test_bodies_the_image_rules_judge_are_fetched_whole(server, name):
    """A truncated JPEG with an honest length, a zero-byte 200, an HTML page, a bomb: the fetch
    succeeds and hands the exact bytes to the image rules (image-undecodable, image-file-too-small ...)."""
    assert_body(fetch(server.url(f"/img/{name}")), name)


def test_uppercase_scheme_is_http(server):
    assert_body(fetch(server.url("/img/good.jpg").replace("http://", "HTTP://")), "good.jpg")


# --- status codes, retries, Retry-After ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [403, 404, 410])
def test_4xx_is_rejected_at_once_with_its_status(server, code):
    url = server.url(f"/status/{code}", k=key())
    got = fetch(url, retries=2)
    assert_rejected(got, reasons.HTTP_4XX)
    assert got.status == code
    assert str(code) in got.detail
    assert server.count(url) == 1, "a 4xx other than 429 is not retried"


def test_429_with_retry_after_1_is_retried_after_a_second(server):
    url = server.url("/flaky/429", k=key(), retry_after="1")
    got, elapsed = timed_fetch(url, retries=2, backoff=0.01)
    assert_body(got, "good.jpg")
    assert got.attempts == 2
    first, second = server.hits(url.removeprefix(server.base))
    assert second.at - first.at >= 0.95, "Retry-After: 1 was not honoured"
    assert elapsed >= 0.95


def test_retry_after_as_an_http_date_is_honoured(server):
    # The date has whole seconds: "now + 2 s" rounds down to between 1 and 2 s from now.
    url = server.url("/flaky/503", k=key(), retry_after="date:2")
    got = fetch(url, retries=1, backoff=0.01)
    assert_body(got, "good.jpg")
    first, second = server.hits(url.removeprefix(server.base))
    assert second.at - first.at >= 0.9, "the Retry-After date was not honoured"


def test_retry_after_above_the_cap_gives_up_without_sleeping(server):
    url = server.url("/status/429", k=key(), retry_after="3600")
    got, elapsed = timed_fetch(url, retries=3, max_retry_after=10.0)
    assert_rejected(got, reasons.HTTP_4XX)
    assert got.status == 429
    assert "429" in got.detail
    assert elapsed < 1.0, f"slept {elapsed:.1f}s for a Retry-After of an hour"
    assert server.count(url) == 1


def test_429_after_the_retries_is_http_4xx(server):
    url = server.url("/flaky/429", k=key(), fail="9", retry_after="0")
    got = fetch(url, retries=2)
    assert_rejected(got, reasons.HTTP_4XX)
    assert got.status == 429
    assert got.attempts == 3
    assert server.count(url) == 3


def test_503_once_then_success(server):
    url = server.url("/flaky/503", k=key())
    got = fetch(url, retries=2)
    assert_body(got, "good.jpg")
    assert got.attempts == 2
    assert server.count(url) == 2


def test_500_always_is_http_5xx_after_every_retry(server):
    url = server.url("/status/500", k=key())
    got = fetch(url, retries=2)
    assert_rejected(got, reasons.HTTP_5XX)
    assert got.status == 500
    assert "500" in got.detail
    assert got.attempts == 3
    assert server.count(url) == 3, "retries=2 means three requests"


def test_retries_zero_means_one_request(server):
    url = server.url("/flaky/503", k=key())
    got = fetch(url, retries=0)
    assert_rejected(got, reasons.HTTP_5XX)
    assert server.count(url) == 1


def test_retries_are_counted_on_the_server(server):
    # Full jitter: each wait is uniform in [0, backoff * 2^n]; a 0 s base makes the retries immediate.
    url = server.url("/status/500", k=key())
    got, elapsed = timed_fetch(url, retries=3, backoff=0.0)
    assert_rejected(got, reasons.HTTP_5XX)
    assert server.count(url) == 4
    assert elapsed < 1.5


# --- redirects -------------------------------------------------------------------------------------------------------


def test_chain_of_3_redirects_ends_at_the_image(server):
    k = key()
    got = fetch(server.url("/chain/3", k=k))
    assert_body(got, "good.jpg")
    assert got.final_url == server.url("/chain/0", k=k)
    assert len(server.hits(f"/chain/{0}?k={k}")) == 1


def test_redirect_cap_is_exact(server):
    """max_redirects=5: five hops are followed, a sixth is refused without being requested."""
    assert_body(fetch(server.url("/chain/5", k=key()), max_redirects=5), "good.jpg")
    k = key()
    got = fetch(server.url("/chain/6", k=k), max_redirects=5)
    assert_rejected(got, reasons.TOO_MANY_REDIRECTS)
    assert server.hits(f"/chain/0?k={k}") == []


def test_chain_of_10_redirects_is_too_many(server):
    k = key()
    got = fetch(server.url("/chain/10", k=k))
    assert_rejected(got, reasons.TOO_MANY_REDIRECTS)
    assert len([h for h in server.hits("/chain/", prefix=True) if h.path.endswith(k)]) == 6


def test_redirect_loop_is_too_many_redirects(server):
    before = len(server.hits("/loop/", prefix=True))
    got = fetch(server.url("/loop/a"), max_redirects=20)
    assert_rejected(got, reasons.TOO_MANY_REDIRECTS)
    assert len(server.hits("/loop/", prefix=True)) - before <= 3, "a loop is detected, not walked to the cap"


def test_max_redirects_zero_refuses_any_redirect(server):
    assert_rejected(fetch(server.url("/chain/1", k=key()), max_redirects=0), reasons.TOO_MANY_REDIRECTS)


def test_redirect_without_location_is_http_3xx(server):
    got = fetch(server.url("/redirect-no-location"))
    assert_rejected(got, reasons.HTTP_3XX)
    assert got.status == 302


def test_redirect_to_a_private_address_is_refused_before_connecting(server, canary):
    got = fetch(server.url("/redirect", to=canary.url("/img/good.jpg")))
    assert_rejected(got, reasons.SSRF_REFUSED)
    assert "127.0.0.2" in got.detail


@pytest.mark.parametrize(
    "target",
    ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/x.jpg", "http://[::1]/x.jpg", "http://0.0.0.0/"],
)
def test_redirect_to_an_internal_address_never_connects_there(server, monkeypatch, target):
    connected: list = []
    real_connect = socket.socket.connect

    def spy(self, address):
        connected.append(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", spy)
    got = fetch(server.url("/redirect", to=target))
    assert_rejected(got, reasons.SSRF_REFUSED)
    assert {a[0] for a in connected} <= {"127.0.0.1"}, f"connected to {connected}"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_every_redirect_status_is_rechecked(server, canary, status):
    got = fetch(server.url("/redirect", to=canary.url("/img/good.jpg"), status=str(status)))
    assert_rejected(got, reasons.SSRF_REFUSED)


def test_redirect_to_file_url_is_refused(server):
    got = fetch(server.url("/redirect", to="file:///etc/passwd"))
    assert_rejected(got, reasons.UNSUPPORTED_SCHEME)


def test_redirect_to_file_url_is_refused_even_when_file_urls_are_on(server):
    """allow_file_urls is for the operator's own input; a web server must never make us read local files."""
    got = fetch(server.url("/redirect", to="file:///etc/passwd"), allow_file_urls=True)
    assert_rejected(got, reasons.UNSUPPORTED_SCHEME)


def test_redirect_to_ftp_is_refused(server):
    got = fetch(server.url("/redirect", to="ftp://127.0.0.1/image.jpg"))
    assert_rejected(got, reasons.UNSUPPORTED_SCHEME)


# --- deadlines, byte caps, broken bodies -----------------------------------------------------------------------------


def assert_cut_at_the_deadline(got: Fetched, elapsed: float, timeout: float, pending: str) -> None:
    """Ended as timeout by the deadline of ``timeout`` s (within 1 s of it), naming what was pending."""
    assert_rejected(got, reasons.TIMEOUT)
    assert timeout - 0.1 <= elapsed < timeout + 1.0, f"took {elapsed:.2f}s for a {timeout}s deadline"
    assert pending in got.detail, got.detail


def closed_within(server, url: str, timeout: float) -> None:
    """The server saw the connection closed within the deadline (+ 1 s) of the request."""
    (hit,) = server.hits(url.removeprefix(server.base))
    # The server's handler thread records the close when it next runs: wait for it until the bound
    # has passed (the fetch may return before that thread is scheduled), then check the bound.
    closed = server.closed_at(url)
    while closed is None and time.monotonic() < hit.at + timeout + 1.0:
        time.sleep(0.02)
        closed = server.closed_at(url)
    assert closed is not None and closed - hit.at < timeout + 1.0, (hit.at, closed)


def test_trickle_ends_at_the_total_deadline(server):
    """A byte every 0.2 s never trips a socket read timeout: only a total deadline stops it."""
    url = server.url("/trickle", k=key())
    got, elapsed = timed_fetch(url, timeout=1.5, retries=0)
    assert_cut_at_the_deadline(got, elapsed, 1.5, "deadline of 1.5s passed while waiting for the body")
    closed_within(server, url, 1.5)


def test_trickled_status_line_and_headers_end_at_the_deadline(server):
    """One byte every 0.5 s of the status line and headers: each read succeeds, the deadline ends it."""
    url = server.url("/trickle-headers", k=key())
    got, elapsed = timed_fetch(url, timeout=2.0, retries=0)
    assert_cut_at_the_deadline(got, elapsed, 2.0, "deadline of 2s passed while waiting for status line and headers")
    closed_within(server, url, 2.0)


def test_trickled_headers_on_a_kept_alive_connection_end_at_the_deadline(server):
    """The second request of a pooled connection is watched too."""
    fetcher = Fetcher(policy(timeout=2.0, retries=0))
    try:
        assert_body(fetcher.fetch(server.url("/img/good.jpg", k=key())), "good.jpg")
        url = server.url("/trickle-headers", k=key())
        start = time.monotonic()
        got = fetcher.fetch(url)
        assert_cut_at_the_deadline(got, time.monotonic() - start, 2.0, "status line and headers")
        closed_within(server, url, 2.0)
    finally:
        fetcher.close()


def test_a_tls_handshake_that_never_completes_ends_at_the_deadline():
    with TlsStall(every=0.5) as stall:
        # connect_timeout above the deadline: the deadline has to end the handshake
        url = f"https://127.0.0.1:{stall.port}/x.jpg"
        got, elapsed = timed_fetch(url, timeout=2.0, connect_timeout=5.0, retries=0)
        assert_cut_at_the_deadline(got, elapsed, 2.0, "TLS handshake")
        deadline = time.monotonic() + 2.0
        while not stall.closed and time.monotonic() < deadline:
            time.sleep(0.05)
        (accepted,) = stall.accepted
        assert stall.closed and stall.closed[0] - accepted < 2.0 + 1.0, (accepted, stall.closed)


def test_silent_server_times_out(server):
    got, elapsed = timed_fetch(server.url("/silent"), timeout=1.0, retries=0)
    assert_rejected(got, reasons.TIMEOUT)
    assert elapsed < 1.0 + 1.0


def test_deadline_covers_redirect_hops(server):
    """One deadline for the whole attempt: a fast redirect does not restart the clock."""
    got, elapsed = timed_fetch(server.url("/redirect", to=server.url("/trickle")), timeout=1.0, retries=0)
    assert_rejected(got, reasons.TIMEOUT)
    assert elapsed < 2.0


def test_endless_body_hits_the_byte_cap(server):
    got, elapsed = timed_fetch(server.url("/endless"), max_bytes=1_000_000, timeout=5.0, retries=0)
    assert_rejected(got, reasons.TOO_LARGE)
    assert elapsed < 5.0


def test_declared_length_above_the_cap_is_refused_without_reading(server):
    """10 GB declared, 1 KiB sent, then the server holds: reading on would end as a timeout."""
    got, elapsed = timed_fetch(server.url("/huge-length"), timeout=3.0)
    assert_rejected(got, reasons.TOO_LARGE)
    assert elapsed < 1.5


def test_honest_length_above_the_cap_is_too_large(server):
    assert_rejected(fetch(server.url("/img/good.png"), max_bytes=100_000), reasons.TOO_LARGE)


def test_streamed_body_above_the_cap_is_too_large(server):
    assert_rejected(fetch(server.url("/img/good.png", nolength="1"), max_bytes=100_000), reasons.TOO_LARGE)


def test_body_of_exactly_max_bytes_is_accepted(server):
    size = len(images()["good.jpg"][0])
    assert_body(fetch(server.url("/img/good.jpg"), max_bytes=size), "good.jpg")
    assert_rejected(fetch(server.url("/img/good.jpg"), max_bytes=size - 1), reasons.TOO_LARGE)


def test_lying_content_length_is_truncated(server):
    got = fetch(server.url("/lying-length"), retries=0)
    assert_rejected(got, reasons.TRUNCATED)


# --- X-Robots-Tag ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tags",
    [["noai"], ["noimageai"], ["winnow: noai"], ["noindex, noai"], ["noindex", "noimageai"], ["NoAI"]],
    ids=["noai", "noimageai", "winnow-noai", "list", "two-headers", "case"],
)
def test_robots_optout(server, tags):
    got = fetch(server.url("/robots", tag=tags))
    assert_rejected(got, reasons.ROBOTS_OPTOUT)


@pytest.mark.parametrize(
    "tags",
    [["otherbot: noai"], ["noindex, nofollow"], ["otherbot: noai, noimageai"], ["winnowbot: noai"]],
    ids=["otherbot", "unrelated", "otherbot-list", "prefix-of-name"],
)
def test_robots_directives_that_do_not_opt_us_out(server, tags):
    assert_body(fetch(server.url("/robots", tag=tags)), "good.jpg")


def test_robots_tokens_empty_ignores_the_header(server):
    assert_body(fetch(server.url("/robots", tag="noai"), robots_optout_tokens=()), "good.jpg")


def test_robots_optout_is_decided_before_the_body_is_read(server):
    """The body (100000 bytes declared) never comes: reading it would end as a timeout."""
    got, elapsed = timed_fetch(server.url("/robots-hold", tag="noai"), timeout=3.0)
    assert_rejected(got, reasons.ROBOTS_OPTOUT)
    assert elapsed < 1.5


def test_robots_optout_uses_the_configured_agent_token(server):
    got = fetch(server.url("/robots", tag="curator: noai"), user_agent_token="curator")
    assert_rejected(got, reasons.ROBOTS_OPTOUT)


# --- connection and name failures ------------------------------------------------------------------------------------


def test_connection_refused_is_connect_after_retries(server):
    got, elapsed = timed_fetch(server.refused_url, retries=2, backoff=0.01)
    assert_rejected(got, reasons.CONNECT)
    assert got.attempts == 3
    assert elapsed < 3.0


def test_unresolvable_host_is_dns():
    # .invalid never resolves (RFC 6761), with or without a network.
    got, elapsed = timed_fetch("http://winnow-test-host.invalid/x.jpg", retries=0)
    assert_rejected(got, reasons.DNS)
    assert elapsed < 3.0


# --- address refusal without any traffic -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/x.jpg",
        "http://172.16.5.4/x.jpg",
        "http://192.168.1.1/x.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "http://[::1]/x.jpg",
        "http://[::1]:8080/x.jpg",
        "http://[fe80::1]/x.jpg",
        "http://[fd00:ec2::254]/x.jpg",
        "http://[::ffff:169.254.169.254]/x.jpg",
        "http://[::ffff:10.0.0.1]/x.jpg",
        "http://0.0.0.0/x.jpg",
        "http://127.0.0.1/x.jpg",
        "http://127.0.0.1:9/x.jpg",
        "http://127.1/x.jpg",
        "http://2130706433/x.jpg",
        "http://0x7f000001/x.jpg",
        "http://224.0.0.1/x.jpg",
        "https://10.0.0.1/x.jpg",
    ],
)
def test_literal_private_addresses_are_refused_without_traffic(no_network, url):
    got = fetch(url, allow_networks=())
    assert_rejected(got, reasons.SSRF_REFUSED)
    assert no_network == []


@pytest.mark.parametrize("host", ["127.0.0.2", "[::ffff:127.0.0.2]", "127.0.1.1", "[::1]"])
def test_allow_list_is_exact(no_network, host):
    """127.0.0.1/32 allows that address only, not the rest of 127/8 nor ::1."""
    got = fetch(f"http://{host}:8080/x.jpg", allow_networks=LOOPBACK_ONLY)
    assert_rejected(got, reasons.SSRF_REFUSED)
    assert no_network == []


def test_allowed_loopback_with_the_canary_address_is_refused(canary):
    assert_rejected(fetch(canary.url("/img/good.jpg")), reasons.SSRF_REFUSED)


def test_loopback_is_refused_without_the_allow_list(server):
    url = server.url("/img/good.jpg", k=key())
    assert_rejected(fetch(url, allow_networks=()), reasons.SSRF_REFUSED)
    assert server.count(url) == 0


def test_allow_list_can_name_a_wider_network():
    with serve("127.0.0.3") as other:
        url = other.url("/img/good.jpg")
        assert_body(fetch(url, allow_networks=("127.0.0.0/8",)), "good.jpg")
        assert_rejected(fetch(url, allow_networks=("127.0.0.1/32", "127.0.0.2/32")), reasons.SSRF_REFUSED)
        assert other.count(url) == 1


# --- IPv6 forms of refused IPv4 addresses ----------------------------------------------------------------------------

# Each reaches a refused IPv4 address through a translator, a tunnel or the host's own stack.
EMBEDDED = [
    "64:ff9b::a9fe:a9fe",  # NAT64 (RFC 6052) of 169.254.169.254, the metadata service
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b:1::a9fe:a9fe",  # local-use NAT64 (RFC 8215)
    "64:ff9b:1::808:808",  # local-use NAT64, even of a public address: a local translator
    "2002:a9fe:a9fe::1",  # 6to4 (RFC 3056) of 169.254.169.254
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1 (bit-inverted)
    "::a9fe:a9fe",  # IPv4-compatible ::169.254.169.254
    "::7f00:1",  # IPv4-compatible ::127.0.0.1
    "::ffff:c0a8:101",  # IPv4-mapped ::ffff:192.168.1.1
]


@pytest.fixture
def loopback_only(monkeypatch):
    """Any connect to an address outside 127.0.0.0/8 fails in the test instead of leaving the machine."""
    attempted: list = []
    real = socket.socket.connect

    def connect(self, address, *args):
        if ipaddress.ip_address(address[0].split("%")[0]) not in ipaddress.ip_network("127.0.0.0/8"):
            attempted.append(address)
            raise OSError(f"test forbids traffic off loopback (connect to {address})")
        return real(self, address, *args)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempted


@pytest.mark.parametrize("address", EMBEDDED)
def test_ipv6_forms_of_refused_addresses_are_refused_without_traffic(no_network, address):
    got = fetch(f"http://[{address}]/x.jpg", allow_networks=LOOPBACK_ONLY)
    assert_rejected(got, reasons.SSRF_REFUSED)
    assert no_network == []


@pytest.mark.parametrize("address", EMBEDDED)
def test_a_redirect_to_an_ipv6_form_is_refused(server, canary, loopback_only, address):
    got = fetch(server.url("/redirect", to=f"http://[{address}]:{canary.port}/img/good.jpg", k=key()))
    assert_rejected(got, reasons.SSRF_REFUSED)
    assert loopback_only == []


def test_a_redirect_to_the_mapped_canary_is_refused(server, canary):
    got = fetch(server.url("/redirect", to=f"http://[::ffff:127.0.0.2]:{canary.port}/img/good.jpg", k=key()))
    assert_rejected(got, reasons.SSRF_REFUSED)


@pytest.mark.parametrize("address", EMBEDDED)
def test_a_hostname_resolving_to_an_ipv6_form_is_refused(no_network, monkeypatch, address):
    def resolve(host, port, *args, **kwargs):
        assert host == "translated.winnow.test"
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    got = fetch("http://translated.winnow.test/x.jpg", allow_networks=LOOPBACK_ONLY)
    assert_rejected(got, reasons.SSRF_REFUSED)
    assert address in got.detail and no_network == []


@pytest.mark.parametrize(
    ("address", "permitted"),
    [
        ("127.0.0.1", True),  # the allowed IPv4 network
        ("::ffff:127.0.0.1", True),  # ... mapped: the same address on this host
        ("::127.0.0.1", False),  # IPv4-compatible, NAT64, 6to4: another machine's 127.0.0.1
        ("64:ff9b::7f00:1", False),
        ("2002:7f00:1::1", False),
        ("::ffff:127.0.0.2", False),
        ("64:ff9b::7f00:2", False),
        ("2002:7f00:2::1", False),
        ("64:ff9b::808:808", True),  # public: 8.8.8.8 through NAT64
        ("2002:808:808::1", True),  # public: 8.8.8.8 through 6to4
        ("2606:4700:4700::1111", True),  # a public IPv6 address
        ("8.8.8.8", True),
    ],
)
def test_allow_networks_keeps_working_for_its_ipv4_networks(address, permitted):
    guard = AddressGuard(allow=(ipaddress.ip_network("127.0.0.1/32"),))
    assert guard.permits(ipaddress.ip_address(address)) is permitted


def test_an_allowed_ipv6_network_covers_its_translated_forms():
    guard = AddressGuard(allow=(ipaddress.ip_network("64:ff9b::a00:0/120"),))
    assert guard.permits(ipaddress.ip_address("64:ff9b::a00:1"))  # 10.0.0.1 through this NAT64, by name
    assert not guard.permits(ipaddress.ip_address("64:ff9b::a01:1"))  # 10.0.1.1: not in it


# --- schemes and malformed URLs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/x.jpg",
        "data:image/png;base64,iVBORw0KGgo=",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/_x",
        "mailto:someone@example.org",
        "ws://127.0.0.1/x",
        "x.jpg",  # a path, and no fetch.local_root
        "//example.org/x.jpg",  # scheme-relative: no scheme to use
    ],
)
def test_unsupported_schemes(no_network, url):
    assert_rejected(fetch(url), reasons.UNSUPPORTED_SCHEME)
    assert no_network == []


@pytest.mark.parametrize(
    "url",
    [
        None,
        "",
        "   ",
        "http://",
        "http:///x.jpg",
        "http://:80/x.jpg",
        "http://127.0.0.1:99999/x.jpg",
        "http://127.0.0.1:abc/x.jpg",
        "http://[::1/x.jpg",
        "http://127.0.0.1:8080/" + "a" * 10_000,
    ],
    ids=["none", "empty", "blank", "no-host", "empty-host", "port-only", "port-range", "port-alpha", "bracket", "10k"],
)
def test_invalid_urls(no_network, url):
    assert_rejected(fetch(url), reasons.URL_INVALID)
    assert no_network == []


@pytest.mark.parametrize(
    "url",
    [
        "http://\x00/x.jpg",
        "http://a b/x.jpg",
        "http://%zz/x.jpg",
        "http://[fe80::1%25eth0]/x.jpg",
        "http://xn--/x.jpg",
        "http://" + "a" * 300 + ".org/x.jpg",
        "\x00",
        "http://\u2028/x.jpg",
        "https://[::]/",
    ],
)
def test_garbage_never_raises_and_is_rejected(url):
    got = fetch(url)
    assert got.reason is not None and got.data is None


def test_crlf_in_a_url_does_not_inject_headers(server):
    k = key()
    got = fetch(server.url("/img/good.jpg", k=k) + "\r\nX-Injected: 1")
    assert all("x-injected" not in h.headers for h in server.hits())
    if got.reason is None:  # sent with the CR LF percent-encoded: fine, as long as it is one request line
        assert len(server.hits("/img/good.jpg?k=" + k, prefix=True)) == 1


def test_url_with_surrounding_whitespace_is_fetched(server):
    assert_body(fetch("  " + server.url("/img/good.jpg") + "\n"), "good.jpg")


# --- local files ----------------------------------------------------------------------------------------------------


@pytest.fixture
def local_root(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "img.jpg").write_bytes(images()["good.jpg"][0])
    (root / "sub" / "img.png").write_bytes(images()["good.png"][0])
    (tmp_path / "outside.jpg").write_bytes(images()["good.jpg"][0])
    os.symlink(tmp_path / "outside.jpg", root / "escape.jpg")
    return root


@pytest.mark.parametrize(
    ("path", "name"),
    [("img.jpg", "good.jpg"), ("sub/img.png", "good.png"), ("sub/../img.jpg", "good.jpg"), ("./img.jpg", "good.jpg")],
)
def test_local_paths_inside_the_root_are_read(local_root, no_network, path, name):
    got = fetch(path, local_root=str(local_root))
    assert got.reason is None, got
    assert got.data == images()[name][0]


def test_absolute_path_inside_the_root_is_read(local_root):
    got = fetch(str(local_root / "img.jpg"), local_root=str(local_root))
    assert got.data == images()["good.jpg"][0]


@pytest.mark.parametrize("path", ["../outside.jpg", "sub/../../outside.jpg", "escape.jpg", "/etc/passwd"])
def test_local_paths_outside_the_root_are_refused(local_root, path):
    assert_rejected(fetch(path, local_root=str(local_root)), reasons.PATH_OUTSIDE_ROOT)


def test_local_root_prefix_is_not_a_parent(local_root):
    """/tmp/x/root-other is not inside /tmp/x/root even though the string starts the same."""
    other = local_root.parent / (local_root.name + "-other")
    other.mkdir()
    (other / "img.jpg").write_bytes(b"x" * 10_000)
    assert_rejected(fetch(f"../{other.name}/img.jpg", local_root=str(local_root)), reasons.PATH_OUTSIDE_ROOT)


@pytest.mark.parametrize("path", ["missing.jpg", "sub/missing.png", "sub"])
def test_missing_local_files(local_root, path):
    assert_rejected(fetch(path, local_root=str(local_root)), reasons.FILE_MISSING)


def test_fifo_and_devices_are_not_read(local_root):
    """A named pipe would block the reading thread forever; a device could be endless."""
    os.mkfifo(local_root / "pipe.jpg")
    assert_rejected(fetch("pipe.jpg", local_root=str(local_root)), reasons.FILE_MISSING)
    assert_rejected(fetch((local_root / "pipe.jpg").as_uri(), allow_file_urls=True), reasons.FILE_MISSING)
    assert_rejected(fetch("file:///dev/zero", allow_file_urls=True), reasons.FILE_MISSING)


def test_local_file_above_the_cap_is_too_large(local_root):
    assert_rejected(fetch("sub/img.png", local_root=str(local_root), max_bytes=1000), reasons.TOO_LARGE)


def test_file_urls_when_enabled(local_root, no_network):
    got = fetch((local_root / "img.jpg").as_uri(), allow_file_urls=True)
    assert got.reason is None, got
    assert got.data == images()["good.jpg"][0]


def test_file_url_to_a_missing_file(local_root):
    got = fetch((local_root / "nope.jpg").as_uri(), allow_file_urls=True)
    assert_rejected(got, reasons.FILE_MISSING)


def test_file_urls_are_off_by_default(local_root):
    assert_rejected(fetch((local_root / "img.jpg").as_uri()), reasons.UNSUPPORTED_SCHEME)


# --- policy and fetcher plumbing -------------------------------------------------------------------------------------


def test_the_fetch_section_is_the_fetchers_policy():
    cfg = load_config(
        sets=[
            "fetch.allow_networks=127.0.0.1/32",
            "fetch.timeout=2",
            "fetch.retries=1",
            "fetch.robots_optout_tokens=noai",
            "fetch.max_per_host=3",
        ]
    )
    p = cfg.fetch
    assert isinstance(p, FetchConfig) and p.allow_networks == ("127.0.0.1/32",)
    assert p.robots_optout_tokens == ("noai",)
    assert (p.timeout, p.retries, p.max_per_host) == (2.0, 1, 3)
    hash(p)  # get_fetcher caches on it
    assert load_config().fetch == FetchConfig()


def test_get_fetcher_is_one_per_policy():
    a, b = policy(), policy()
    assert get_fetcher(a) is get_fetcher(b)
    assert get_fetcher(a) is not get_fetcher(policy(timeout=3.0))


def concurrent_fetches(fetcher: Fetcher, urls: list[str]) -> dict[str, Fetched]:
    results: dict[str, Fetched] = {}
    lock = threading.Lock()

    def run(u: str) -> None:
        got = fetcher.fetch(u)
        with lock:
            results[u] = got

    threads = [threading.Thread(target=run, args=(u,)) for u in urls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_one_fetcher_serves_its_threads(server):
    fetcher = Fetcher(policy(threads=8))
    try:
        urls = [server.url("/img/good.jpg", k=key()) for _ in range(6)] + [
            server.url("/status/404", k=key()) for _ in "ab"
        ]
        results = concurrent_fetches(fetcher, urls)
    finally:
        fetcher.close()
    assert Counter(r.reason for r in results.values()) == {None: 6, reasons.HTTP_4XX: 2}
    assert all(r.data == images()["good.jpg"][0] for r in results.values() if r.reason is None)


def test_fetcher_shared_by_more_threads_than_its_pool(server):
    """A complete body is never reported as truncated, whatever urllib3 does with the connection
    afterwards (a full pool closes it as soon as the body is read)."""
    fetcher = Fetcher(policy(threads=4))  # pool of max(10, threads) connections
    try:
        urls = [server.url("/img/good.jpg", k=key()) for _ in range(24)]
        results = concurrent_fetches(fetcher, urls)
    finally:
        fetcher.close()
    wrong = {u: (r.reason, r.detail) for u, r in results.items() if r.reason is not None}
    assert wrong == {}
    assert len(results) == 24


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://Example.ORG:8080/x", "example.org"),
        ("http://[::1]/", "::1"),
        (None, ""),
        ("x.jpg", ""),
        ("http://[", ""),
    ],
)
def test_host_key(url, host):
    assert host_key(url) == host


# --- map_bounded -----------------------------------------------------------------------------------------------------


def sleeper(seconds_by_payload):
    def work(payload):
        time.sleep(seconds_by_payload(payload))
        return payload

    return work


def test_map_bounded_yields_every_key_once():
    items = [(i, f"host{i % 7}", i * 10) for i in range(500)]
    out = list(map_bounded(items, lambda p: p + 1, threads=8, max_per_host=2, max_pending=32))
    assert sorted(k for k, _ in out) == list(range(500))
    assert all(r == k * 10 + 1 for k, r in out)


def test_map_bounded_with_no_items():
    assert list(map_bounded([], lambda p: p, threads=4, max_per_host=2)) == []


def test_map_bounded_one_thread():
    items = [(i, "h", i) for i in range(20)]
    assert sorted(map_bounded(items, lambda p: p, threads=1, max_per_host=1)) == [(i, i) for i in range(20)]


def test_map_bounded_yields_in_completion_order():
    items = [("slow", "a", 0.6), ("medium", "b", 0.3), ("fast", "c", 0.0)]
    out = [k for k, _ in map_bounded(items, sleeper(lambda p: p), threads=3, max_per_host=1)]
    assert out == ["fast", "medium", "slow"]


def test_map_bounded_honours_the_per_host_cap():
    lock = threading.Lock()
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()

    def work(host):
        with lock:
            running[host] += 1
            peak[host] = max(peak[host], running[host])
        time.sleep(0.05)
        with lock:
            running[host] -= 1
        return host

    items = [(i, "ab"[i % 2], "ab"[i % 2]) for i in range(24)]
    out = list(map_bounded(items, work, threads=8, max_per_host=3))
    assert len(out) == 24
    assert peak == {"a": 3, "b": 3}, "each host used exactly its cap, never more"


def test_map_bounded_per_host_cap_on_real_fetches(server):
    """Twelve slow URLs of one host, eight threads, three per host: the server sees three at once."""
    fetcher = Fetcher(policy(threads=8, max_per_host=3, timeout=5.0))
    server.reset_concurrency()
    items = [(i, "127.0.0.1", server.url("/sleep", s="0.25", k=key())) for i in range(12)]
    start = time.monotonic()
    out = dict(map_bounded(items, fetcher.fetch, threads=8, max_per_host=3))
    elapsed = time.monotonic() - start
    fetcher.close()
    assert sorted(out) == list(range(12))
    assert all(f.reason is None for f in out.values())
    assert server.max_concurrent_sleeps == 3
    assert elapsed >= 4 * 0.25 * 0.9, "12 items, 3 at a time, 0.25 s each"


def test_map_bounded_slow_host_does_not_hold_up_others():
    """8 slow items of host A first, then 8 fast of host B: with 2 per host and 4 threads,
    B's items run on the two threads A cannot use and all finish before any of A's."""
    slow, fast = 0.6, 0.01
    items = [(f"a{i}", "A", slow) for i in range(8)] + [(f"b{i}", "B", fast) for i in range(8)]
    start = time.monotonic()
    finished: dict[str, float] = {}
    order = []
    for k, _ in map_bounded(items, sleeper(lambda p: p), threads=4, max_per_host=2):
        finished[k] = time.monotonic() - start
        order.append(k)
    assert sorted(order) == sorted(k for k, _, _ in items)
    assert all(k.startswith("b") for k in order[:8]), f"order: {order}"
    assert max(finished[f"b{i}"] for i in range(8)) < slow * 0.75
    assert max(finished[f"a{i}"] for i in range(8)) >= 4 * slow * 0.9, "A ran at most 2 at a time"


def test_map_bounded_reads_items_lazily():
    consumed = 0

    def items():
        nonlocal consumed
        for i in range(20_000):
            consumed += 1
            yield i, f"h{i % 5}", i

    stream = map_bounded(items(), lambda p: p, threads=4, max_pending=64, max_per_host=2)
    next(stream)
    assert consumed <= 64 + 4 + 1, f"read {consumed} items ahead with max_pending=64"
    assert sum(1 for _ in stream) == 20_000 - 1


def test_map_bounded_reraises_an_exception_from_work():
    """work must not raise (Fetcher.fetch never does); if it does the task fails loudly, it does not lose rows."""

    def work(p):
        if p == 13:
            raise ValueError("boom")
        return p

    with pytest.raises(ValueError, match="boom"):
        list(map_bounded([(i, "h", i) for i in range(30)], work, threads=4, max_per_host=2))
