"""Minimal headless-Chromium driver for tests: Chrome DevTools Protocol over a pipe.

No extra Python dependency and no browser download: it starts the system Chromium with
``--remote-debugging-pipe`` (commands on fd 3, replies on fd 4, NUL-terminated JSON), opens a
page, records console errors, exceptions, dialogs and every network request, evaluates
JavaScript and takes screenshots.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--mute-audio",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    """Path of a Chromium binary, or None."""
    env = os.environ.get("CHROMIUM")
    for candidate in (env, *CHROMIUM_CANDIDATES):
        if candidate and Path(candidate).exists():
            return candidate
    return shutil.which("chromium")


@dataclass
class PageLog:
    """What happened while the page was open."""

    console: list[tuple[str, str]] = field(default_factory=list)  # (level, text)
    exceptions: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    log_entries: list[tuple[str, str]] = field(default_factory=list)  # (level, text)

    @property
    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser-log errors (e.g. CSP violations)."""
        return (
            [t for level, t in self.console if level in ("error", "assert")]
            + self.exceptions
            + [t for level, t in self.log_entries if level == "error"]
        )


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, width: int = 1280, height: int = 900, timeout: float = 60.0) -> None:
        exe = find_chromium()
        if exe is None:
            raise RuntimeError("no Chromium found (set CHROMIUM or install Debian's chromium)")
        self.timeout = timeout
        self.log = PageLog()
        self._profile = tempfile.mkdtemp(prefix="topiq-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def child_fds() -> None:  # runs in the child: put the pipe ends on fds 3 and 4
            # Duplicate first so neither end is overwritten by the other's dup2.
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self._proc = subprocess.Popen(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=child_fds,
            close_fds=False,  # fds 3 and 4 are set up by child_fds; all others are CLOEXEC
            start_new_session=True,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._next_id = 0
        self._replies: dict[int, queue.Queue[dict]] = {}
        self._events: queue.Queue[dict] = queue.Queue()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=True)
        self.set_viewport(width, height)

    # -- protocol

    def _read_loop(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_chrome, 1 << 20)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._lock:
                        q = self._replies.get(msg["id"])
                    if q is not None:
                        q.put(msg)
                else:
                    self._handle_event(msg)

    def _handle_event(self, msg: dict) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.log.console.append((params.get("type", ""), text))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exc = details.get("exception", {})
            self.log.exceptions.append(exc.get("description") or details.get("text", ""))
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.log.log_entries.append((entry.get("level", ""), entry.get("text", "")))
        elif method == "Network.requestWillBeSent":
            self.log.requests.append(params.get("request", {}).get("url", ""))
        elif method == "Page.javascriptDialogOpening":
            self.log.dialogs.append(params.get("message", ""))
            # Dismiss from another thread: the reader must keep reading to receive the reply.
            threading.Thread(
                target=self.send,
                args=("Page.handleJavaScriptDialog", {"accept": False}),
                kwargs={"session": True},
                daemon=True,
            ).start()
        self._events.put(msg)

    def send(self, method: str, params: dict | None = None, *, session: bool = False) -> dict:
        """Send one CDP command and wait for its result."""
        with self._lock:
            self._next_id += 1
            msg_id = self._next_id
            q: queue.Queue[dict] = queue.Queue()
            self._replies[msg_id] = q
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self._session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        try:
            reply = q.get(timeout=self.timeout)
        except queue.Empty as exc:
            raise TimeoutError(f"no reply to {method} within {self.timeout} s") from exc
        finally:
            with self._lock:
                self._replies.pop(msg_id, None)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    # -- page helpers

    def set_viewport(self, width: int, height: int) -> None:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=True,
        )

    def open(self, path: str | Path) -> None:
        """Navigate to a local file and wait for its load event."""
        url = Path(path).resolve().as_uri()
        while not self._events.empty():
            self._events.get_nowait()
        self.send("Page.navigate", {"url": url}, session=True)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                msg = self._events.get(timeout=0.5)
            except queue.Empty:
                continue
            if msg.get("method") == "Page.loadEventFired":
                return
        raise TimeoutError(f"{url} did not finish loading within {self.timeout} s")

    def evaluate(self, expression: str) -> Any:
        """Evaluate a JavaScript expression in the page and return its JSON value."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"JS error: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float | None = None) -> Any:
        """Poll until the expression is truthy; return its value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"{expression!r} stayed falsy")

    def screenshot(self, path: str | Path, *, full_page: bool = True) -> Path:
        """Save a PNG of the page (the whole scroll height when full_page)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = self.send("Page.getLayoutMetrics", session=True)
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": size["width"],
                "height": size["height"],
                "scale": 1,
            }
            params["captureBeyondViewport"] = True
        data = self.send("Page.captureScreenshot", params, session=True)["data"]
        out = Path(path)
        out.write_bytes(base64.b64decode(data))
        return out

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close")
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def browser_available() -> bool:
    """True when a browser test can run. CI sets TOPIQ_VIDEO_REQUIRE_BROWSER=1 so that a
    missing Chromium fails those tests instead of skipping them."""
    return find_chromium() is not None or bool(os.environ.get("TOPIQ_VIDEO_REQUIRE_BROWSER"))
