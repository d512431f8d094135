"""Headless Chromium for the report tests, driven over the DevTools protocol on a pipe.

``--remote-debugging-pipe`` makes Chromium read protocol commands from file
descriptor 3 and write replies and events to descriptor 4, each message JSON
ended by a NUL byte: no port, no websocket library, nothing else to install
than the browser (Debian's ``chromium``; ``.ci/run`` installs it).

``open_page`` loads one URL in a fresh profile and returns what a test asserts
on: console errors and exceptions, browser log errors (a Content-Security-
Policy violation is one), every network request the page made, each
``<img>``'s decoded size, and a full-page PNG screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """``$CHROMIUM`` or the first of ``CANDIDATES`` on PATH."""
    named = os.environ.get("CHROMIUM")
    if named:
        return shutil.which(named) or (named if os.access(named, os.X_OK) else None)
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class ProtocolError(RuntimeError):
    pass


class Chromium:
    """One headless browser process and its protocol pipe."""

    def __init__(self, executable: str, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="winnow-chromium-")
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()

        def descriptors() -> None:  # in the child: its fd 3 reads commands, its fd 4 writes replies
            high_r, high_w = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        args = [
            executable,
            "--headless=new",
            "--remote-debugging-pipe",
            "--no-sandbox",  # CI runs as root in a container
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--mute-audio",
            f"--user-data-dir={self.profile}",
            "about:blank",
        ]
        # Python's descriptors are not inherited (PEP 446); only the two dup2'ed ones are.
        self.process = subprocess.Popen(
            args,
            preexec_fn=descriptors,
            close_fds=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._out, self._in = to_browser_w, from_browser_r
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._out, self._in):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.process.stderr:
            self.process.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def _read_message(self, deadline: float) -> dict[str, Any] | None:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self._in], [], [], left)
            if not ready:
                return None
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise ProtocolError(f"chromium closed its pipe (exit code {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """Send one command and wait for its reply; events that arrive meanwhile are kept."""
        self._next_id += 1
        command: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        os.write(self._out, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._read_message(deadline)
            if message is None:
                raise ProtocolError(f"no reply to {method} within {self.timeout} s")
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise ProtocolError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, method: str, session: str, timeout: float) -> bool:
        """Read events until ``method`` arrives for ``session`` (True) or ``timeout`` passes."""
        if any(e["method"] == method and e.get("sessionId") == session for e in self.events):
            return True
        deadline = time.monotonic() + timeout
        while True:
            message = self._read_message(deadline)
            if message is None:
                return False
            if "method" in message:
                self.events.append(message)
                if message["method"] == method and message.get("sessionId") == session:
                    return True

    def settle(self, seconds: float) -> None:
        """Keep reading events for ``seconds`` (late console messages, image decodes)."""
        deadline = time.monotonic() + seconds
        while (message := self._read_message(deadline)) is not None:
            if "method" in message:
                self.events.append(message)


@dataclass
class PageCheck:
    """What a page did in the browser."""

    url: str
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    screenshot: bytes = b""
    size: tuple[int, int] = (0, 0)


def _describe_console(params: dict[str, Any]) -> str:
    return " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))


IMAGES_JS = (
    "JSON.stringify(Array.from(document.images).map(i => "
    "({complete: i.complete, naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight, "
    "src: i.getAttribute('src').slice(0, 40)})))"
)


def open_page(executable: str, url: str, width: int = 1200, settle: float = 1.0) -> PageCheck:
    """Load ``url`` in a fresh headless Chromium; see the module docstring for what is returned."""
    browser = Chromium(executable)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", session=session)
        metrics = {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}
        browser.send("Emulation.setDeviceMetricsOverride", metrics, session=session)
        browser.events.clear()  # about:blank's
        browser.send("Page.navigate", {"url": url}, session=session)
        if not browser.wait_for("Page.loadEventFired", session, timeout=60):
            raise ProtocolError(f"{url} did not finish loading within 60 s")
        browser.settle(settle)
        images = json.loads(
            browser.send("Runtime.evaluate", {"expression": IMAGES_JS, "returnByValue": True}, session)["result"][
                "value"
            ]
        )
        size = browser.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
        w, h = int(size["width"]), int(size["height"])
        clip = {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}
        shot = browser.send(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}, session
        )
        check = PageCheck(url, images=images, screenshot=base64.b64decode(shot["data"]), size=(w, h))
        for event in browser.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                check.console_errors.append(f"console.{params['type']}: {_describe_console(params)}")
            elif method == "Runtime.exceptionThrown":
                check.console_errors.append(f"exception: {params['exceptionDetails'].get('text')}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                check.console_errors.append(f"{entry['source']}: {entry['text']}")
            elif method == "Network.requestWillBeSent":
                check.requests.append(params["request"]["url"])
        return check
    finally:
        browser.close()
