"""The monitor's HTTP server and live page: the JSON API equals the snapshots, static files
cannot be escaped, errors never stop the server, and in headless Chromium the page shows every
stream, follows changes within a refresh, shows hostile names as text and requests nothing
outside the server."""

from __future__ import annotations

import gzip
import http.client
import inspect
import io
import json
import math
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pytest
from browser import Browser, browser_available
from media import render_rgb
from PIL import Image

from topiq_video.errors import InvalidInputError
from topiq_video.monitor.state import (
    DETECTORS,
    SPARKLINE_SECONDS,
    WINDOW_STATS,
    WINDOWS,
    ActiveAlert,
    StreamCounters,
    StreamInfo,
    StreamSnapshot,
)
from topiq_video.monitor.web import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    REFRESH_SECONDS,
    SPARKLINE_BIN_SECONDS,
    MonitorServer,
    sparkline_json,
)

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "docs" / "live-page.png"
"""Written only when TOPIQ_VIDEO_UPDATE_SCREENSHOTS=1 (the README's picture of the page)."""
HOSTILE_NAME = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
DIP_AGO = 100.0  # seconds before the provider starts: the sparkline's dip
DIP_SCORE = 0.21


def jpeg(width: int, height: int, scene: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(render_rgb(1.5, width, height, scene=scene)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def wave(t: float, base: float) -> float:
    """A stream's score at Unix time t: a slow wave, with one dip DIP_AGO s before start."""
    return base + 0.05 * math.sin(t / 23.0)


class LiveStreams:
    """A fake, changing monitor: the sparklines and last-frame times follow the clock, and
    the test changes streams (down, new picture, removed) as the workers would."""

    def __init__(self) -> None:
        self.start = time.time()
        self.lock = threading.Lock()
        self.streams: dict[str, dict] = {}

    def add(self, name: str, **fields: object) -> None:
        with self.lock:
            self.streams[name] = dict(fields)

    def change(self, name: str, **fields: object) -> None:
        with self.lock:
            self.streams[name].update(fields)

    def remove(self, name: str) -> None:
        with self.lock:
            del self.streams[name]

    def __call__(self) -> list[StreamSnapshot]:
        now = time.time()
        with self.lock:
            items = [(name, dict(f)) for name, f in self.streams.items()]
        return [self._snapshot(name, f, now) for name, f in items]

    def _snapshot(self, name: str, f: dict, now: float) -> StreamSnapshot:
        up = f.get("up", True)
        end = now if up else f.get("down_at", now)
        base = f.get("base", 0.6)
        dip = f.get("dip", False)
        times = [now - SPARKLINE_SECONDS + k for k in range(int(SPARKLINE_SECONDS) + 1)]
        spark = tuple(
            (t, DIP_SCORE if dip and abs(t - (self.start - DIP_AGO)) < 0.5 else wave(t, base))
            for t in times
            if t <= end
        )
        return StreamSnapshot(
            name=name,
            url=f.get("url", "rtsp://***@cam.example/live"),
            model="topiq_nr",
            up=up,
            connected_since=self.start - 3600 if up else None,
            last_frame_time=end - 0.2,
            score=f.get("score", 0.642),
            scores={
                w: {s: f.get("score", 0.642) - 0.01 * (i + j) for j, s in enumerate(WINDOW_STATS)}
                for i, w in enumerate(WINDOWS)
            },
            detectors={k: k in f.get("detectors", ()) for k in DETECTORS},
            alerts=tuple(f.get("alerts", ())),
            counters=f.get("counters", StreamCounters()),
            info=StreamInfo("h264", 1280, 720, 25.0, True),
            measured_fps=24.9,
            sparkline=spark,
            thumbnail=f.get("thumbnail"),
            last_error=f.get("last_error"),
        )


def one_snapshot(**changes: object) -> StreamSnapshot:
    snap = StreamSnapshot(
        name="Studio A",
        url="rtsp://***@cam.example/live",
        model="topiq_nr",
        up=True,
        connected_since=1_700_000_000.0,
        last_frame_time=1_700_000_100.5,
        score=0.6125,
        scores={
            "10s": {"mean": 0.61, "p5": 0.55, "min": 0.5},
            "1m": {"mean": 0.6, "p5": None, "min": 0.45},
            "5m": {"mean": None, "p5": None, "min": None},
        },
        detectors={"freeze": False, "black": True, "silence": False},
        alerts=(ActiveAlert("black", 1_700_000_090.0, 0.02, 0.05, "alerts/studio-a-1"),),
        counters=StreamCounters(
            frames_decoded=2500, frames_skipped=7, decode_errors=2, reconnects=1
        ),
        info=StreamInfo("hevc", 3840, 2160, 50.0, False),
        measured_fps=49.8,
        sparkline=((1_700_000_000.0, 0.6), (1_700_000_001.0, 0.62)),
        thumbnail=jpeg(160, 90, 1),
        last_error="read timeout",
    )
    return replace(snap, **changes)


@pytest.fixture
def served() -> Iterator[tuple[MonitorServer, list[StreamSnapshot]]]:
    snapshots = [one_snapshot(), one_snapshot(name="Lobby", thumbnail=None, alerts=())]
    with MonitorServer(port=0, snapshots=lambda: snapshots, title="Night <b>shift</b>") as srv:
        yield srv, snapshots


def get(
    server: MonitorServer, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One raw GET: the path is sent exactly as given (no normalisation of ../)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


# ---------------------------------------------------------------------------- the server


def test_default_bind_address_is_loopback() -> None:
    assert DEFAULT_HOST == "127.0.0.1" and DEFAULT_PORT == 9800
    params = inspect.signature(MonitorServer).parameters
    assert params["host"].default == "127.0.0.1"
    assert params["port"].default == 9800
    server = MonitorServer(port=0, snapshots=list)
    with server:
        assert server.address is not None
        assert server.address[0] == "127.0.0.1"
        assert server.port == server.address[1] > 0
    assert server.address is None


def test_stop_ends_kept_alive_connections() -> None:
    server = MonitorServer(port=0, snapshots=lambda: [one_snapshot()])
    server.start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", "/api/streams")
        assert conn.getresponse().read()  # HTTP/1.1: the connection stays open
        server.stop()
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            conn.request("GET", "/api/streams")
            conn.getresponse().read()
    finally:
        conn.close()
        server.stop()


def test_a_port_in_use_is_refused_clearly() -> None:
    with MonitorServer(port=0, snapshots=list) as first:
        second = MonitorServer(port=first.port, snapshots=list)
        with pytest.raises(InvalidInputError, match="port=0"):
            second.start()
    with pytest.raises(InvalidInputError):
        MonitorServer(port=70000, snapshots=list)


def test_api_streams_equals_the_snapshots(served) -> None:
    server, snapshots = served
    status, headers, body = get(server, "/api/streams")
    assert status == 200
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    doc = json.loads(body)
    assert abs(doc["now"] - time.time()) < 5
    first, second = doc["streams"]
    snap = snapshots[0]
    assert first["index"] == 0 and first["name"] == snap.name and first["url"] == snap.url
    assert first["up"] is True and first["score"] == snap.score and first["model"] == snap.model
    assert first["scores"] == snap.scores
    assert first["detectors"] == snap.detectors
    assert first["alerts"] == [
        {"rule": "black", "since": 1_700_000_090.0, "value": 0.02, "threshold": 0.05,
         "evidence": "alerts/studio-a-1"}
    ]  # fmt: skip
    counters = snap.counters
    for field in ("frames_decoded", "frames_skipped", "decode_errors", "reconnects"):
        assert first["counters"][field] == getattr(counters, field)
    assert first["info"] == {
        "codec": "hevc", "width": 3840, "height": 2160, "fps": 50.0, "has_audio": False
    }  # fmt: skip
    assert first["measured_fps"] == 49.8 and first["last_error"] == "read timeout"
    assert first["sparkline"] == {"t": [1_700_000_000.0, 1_700_000_001.0], "score": [0.6, 0.62]}
    assert second["name"] == "Lobby" and second["thumbnail"] is None

    # The thumbnail URL serves the snapshot's JPEG, byte for byte.
    status, headers, picture = get(server, first["thumbnail"])
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert headers["Cache-Control"] == "no-store"
    assert picture == snap.thumbnail
    assert get(server, "/api/streams/1/thumbnail.jpg")[0] == 404  # no picture yet
    assert get(server, "/api/streams/7/thumbnail.jpg")[0] == 404  # no such stream


def test_page_is_escaped_and_allows_only_its_own_server(served) -> None:
    server, _ = served
    status, headers, body = get(server, "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    html = body.decode()
    assert "Night &lt;b&gt;shift&lt;/b&gt;" in html and "<b>shift" not in html
    policy = {d.split()[0]: d.split()[1:] for d in headers["Content-Security-Policy"].split("; ")}
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'"] and policy["img-src"] == ["'self'"]
    # Styles: the server's own, plus only the empty inline sheet that plotly.js fills.
    assert policy["style-src"] == [
        "'self'",
        "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='",
    ]
    assert "unsafe" not in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    # No inline script: every <script> names a file on this server.
    assert html.count("<script") == html.count('<script src="/static/') == 2


def test_static_files_come_from_the_package_and_nothing_else(served) -> None:
    server, _ = served
    status, headers, css = get(server, "/static/monitor.css")
    assert status == 200 and headers["Content-Type"] == "text/css; charset=utf-8"
    assert css == resources.files("topiq_video.monitor").joinpath("static/monitor.css").read_bytes()
    plotly_js = resources.files("plotly").joinpath("package_data/plotly.min.js").read_bytes()
    status, headers, body = get(server, "/static/plotly.min.js?v=1")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert body == plotly_js
    status, headers, body = get(server, "/static/plotly.min.js", {"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip" and gzip.decompress(body) == plotly_js
    assert len(body) < len(plotly_js) / 2
    for path in (
        "/static/../web.py",
        "/static/%2e%2e/web.py",
        "/static/..%2fweb.py",
        "/static//etc/passwd",
        "/static/../../../../etc/passwd",
        "/static/templates/live.html",
        "/static/",
        "/static/monitor.css/..",
        "/../pyproject.toml",
        "/web.py",
    ):
        status, _, body = get(server, path)
        assert status == 404, path
        assert b"import" not in body and b"root:" not in body


def test_requests_for_other_host_names_are_refused(served) -> None:
    # DNS rebinding: a page elsewhere whose name resolves to 127.0.0.1 must read nothing.
    server, _ = served
    assert get(server, "/api/streams", {"Host": "evil.example:9800"})[0] == 403
    assert get(server, "/metrics", {"Host": "evil.example"})[0] == 403
    assert get(server, "/api/streams", {"Host": f"localhost:{server.port}"})[0] == 200
    assert get(server, "/api/streams", {"Host": f"127.0.0.1:{server.port}"})[0] == 200


def test_errors_never_stop_the_server() -> None:
    broken = {"now": True}

    def provider() -> list[StreamSnapshot]:
        if broken["now"]:
            raise RuntimeError("worker crashed")
        return [one_snapshot()]

    with MonitorServer(port=0, snapshots=provider) as server:
        assert get(server, "/api/streams")[0] == 500
        assert get(server, "/metrics")[0] == 500
        # A malformed request and a client that hangs up mid-way.
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"\x16\x03\x01garbage that is not HTTP\r\n\r\n")
            sock.recv(1024)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET /static/plotly.min.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        broken["now"] = False
        status, _, body = get(server, "/api/streams")
        assert status == 200 and json.loads(body)["streams"][0]["name"] == "Studio A"
        assert get(server, "/metrics")[0] == 200


def test_sparkline_keeps_every_dip_and_breaks_at_pauses() -> None:
    t0 = 1_700_000_000.0
    points = [(t0 + 0.25 * k, 0.6) for k in range(160)]  # 40 s at 4 samples per second
    points[81] = (points[81][0], 0.05)  # one bad sample
    points += [(t0 + 60 + 0.25 * k, 0.7) for k in range(40)]  # resumes after a 20 s pause
    points.append((t0 + 80, float("nan")))
    line = sparkline_json(points)
    t, s = line["t"], line["score"]
    assert len(t) == len(s) <= math.ceil(80 / SPARKLINE_BIN_SECONDS) + 2
    assert min(v for v in s if v is not None) == 0.05  # the dip survives binning
    assert s.count(None) == 1  # one break, inside the pause
    gap = s.index(None)
    assert t0 + 40 <= t[gap] <= t0 + 60
    assert t == sorted(t)


# ---------------------------------------------------------------------------- in a browser

needs_browser = pytest.mark.skipif(
    not browser_available(), reason="headless Chromium is not installed"
)


def open_url(browser: Browser, url: str) -> None:
    browser.send("Page.navigate", {"url": url}, session=True)
    browser.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")


def card(name: str) -> str:
    """JS expression: the card whose name reads exactly ``name``."""
    return (
        "[...document.querySelectorAll('.stream')]"
        f".find(c => c.querySelector('.name').textContent === {json.dumps(name)})"
    )


@pytest.mark.browser
@pytest.mark.slow  # about 9 s: it waits for real 2-second refreshes
@needs_browser
def test_live_page_in_headless_chromium(tmp_path: Path) -> None:
    live = LiveStreams()
    live.add(
        "Studio A",
        score=0.642,
        thumbnail=jpeg(320, 180, 0),
        counters=StreamCounters(frames_decoded=90_210, reconnects=2, frames_skipped=12,
                                decode_errors=3, outage_seconds=14.2,
                                received_bytes=2_180_000_000),
    )  # fmt: skip
    live.add(
        "Lobby camera",
        base=0.45,
        score=0.371,
        dip=True,
        thumbnail=jpeg(320, 180, 1),
        detectors=("freeze",),
        alerts=(ActiveAlert("low_score", live.start - 200, 0.31, 0.4, "alerts/lobby-1"),),
        counters=StreamCounters(decode_errors=41, received_bytes=1_040_000_000),
    )
    live.add("Rooftop", base=0.68, score=0.705, thumbnail=jpeg(320, 180, 2),
             url="srt://***@203.0.113.9:9000?***",
             counters=StreamCounters(received_bytes=3_600_000_000))  # fmt: skip
    live.add(HOSTILE_NAME, last_error="<img src=x onerror=alert(3)> failed")

    with MonitorServer(port=0, snapshots=live, title="Studio monitors") as server:
        origin = f"http://127.0.0.1:{server.port}/"
        with Browser(width=1400, height=700) as browser:
            open_url(browser, origin)
            browser.wait_for("+document.documentElement.getAttribute('data-updates') >= 1")

            # One card per stream, in order; the hostile name and error are plain text.
            names = browser.evaluate(
                "[...document.querySelectorAll('.stream .name')].map(e => e.textContent)"
            )
            assert names == ["Studio A", "Lobby camera", "Rooftop", HOSTILE_NAME]
            assert browser.evaluate("window.__pwned === undefined")
            assert browser.evaluate("document.querySelectorAll('script').length") == 2
            assert browser.evaluate("document.querySelectorAll('img[src=\"x\"]').length") == 0
            assert browser.evaluate(
                f"{card(HOSTILE_NAME)}.querySelector('.error').textContent"
            ) == ("<img src=x onerror=alert(3)> failed")
            assert browser.log.dialogs == []

            # What a card says is what the snapshot holds.
            lobby = card("Lobby camera")
            fields = browser.evaluate(
                f"(c => ({{state: c.querySelector('.state').textContent, "
                f"up: c.getAttribute('data-up'), now: c.querySelector('.score-now').textContent, "
                f"mean: c.querySelector('.score-1m').textContent, "
                f"reconnects: c.querySelector('.c-reconnects').textContent, "
                f"errors: c.querySelector('.c-decode-errors').textContent, "
                f"rules: [...c.querySelectorAll('.alerts li b')].map(b => b.textContent), "
                f"alertsShown: !c.querySelector('.alerts').hidden, "
                f"on: [...c.querySelectorAll('.detectors li.on')].map(l => l.dataset.kind), "
                f"format: c.querySelector('.format').textContent}}))({lobby})"
            )
            assert fields == {
                "state": "up",
                "up": "true",
                "now": "0.371",
                "mean": f"{0.371 - 0.01:.3f}",  # 1m is window 1, mean is stat 0
                "reconnects": "0",
                "errors": "41",
                "rules": ["low_score"],
                "alertsShown": True,
                "on": ["freeze"],
                "format": "h264 · 1280×720 · 25 fps · measured 24.9 fps · topiq_nr",
            }
            assert browser.evaluate(f"{card('Rooftop')}.querySelector('.url').textContent") == (
                "srt://***@203.0.113.9:9000?***"
            )
            # Thumbnails are loaded pictures; sparklines are drawn and keep the dip.
            widths = browser.wait_for(
                "(() => { const w = [...document.querySelectorAll('.stream .thumb img')]"
                ".slice(0, 3).map(i => i.complete ? i.naturalWidth : 0);"
                " return w.every(x => x > 0) && w; })()"
            )
            assert widths == [320, 320, 320]
            spark = browser.evaluate(
                f"(d => ({{n: d.data[0].y.length, min: Math.min(...d.data[0].y.filter(v => v !== null))}}))"
                f"({card('Lobby camera')}.querySelector('.spark'))"
            )
            assert spark["n"] >= SPARKLINE_SECONDS / SPARKLINE_BIN_SECONDS - 5
            assert spark["min"] == DIP_SCORE

            # Changes show within one refresh: a stream goes down, a picture changes,
            # a stream is removed.
            before = int(browser.evaluate("document.documentElement.getAttribute('data-updates')"))
            changed = time.monotonic()
            live.change("Studio A", up=False, down_at=time.time())
            live.change("Lobby camera", thumbnail=jpeg(256, 144, 3))
            live.remove(HOSTILE_NAME)
            down = card("Studio A")
            browser.wait_for(
                f"{down}.getAttribute('data-up') === 'false' && "
                f"{down}.querySelector('.state').textContent === 'down'",
                timeout=REFRESH_SECONDS + 1.5,
            )
            assert time.monotonic() - changed < REFRESH_SECONDS + 1.5
            assert (
                browser.evaluate(
                    f"getComputedStyle({down}.querySelector('.badge')).backgroundColor"
                )
                == "rgb(220, 38, 38)"
            )  # the page's red
            assert "down · last frame at" in browser.evaluate(
                f"{down}.querySelector('.seen').textContent"
            )
            browser.wait_for(
                f"{card('Lobby camera')}.querySelector('.thumb img').naturalWidth === 256",
                timeout=REFRESH_SECONDS + 1.5,
            )
            assert browser.evaluate("document.querySelectorAll('.stream').length") == 3
            assert browser.evaluate("document.getElementById('count-down').textContent") == "1"
            assert browser.evaluate("document.getElementById('count-alerts').textContent") == "1"
            assert (
                int(browser.evaluate("document.documentElement.getAttribute('data-updates')"))
                > before
            )

            time.sleep(0.5)  # let plotly finish its last redraw before the picture
            shot = browser.screenshot(tmp_path / "live-page.png")
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            if os.environ.get("TOPIQ_VIDEO_UPDATE_SCREENSHOTS") == "1":
                shutil.copyfile(shot, SCREENSHOT)

            assert browser.log.errors == []
            assert browser.log.dialogs == []
            assert browser.log.requests
            outside = [u for u in browser.log.requests if not u.startswith(origin)]
            assert outside == []

            # The monitor goes away: the page keeps the last state and says so.
            server.stop()
            browser.wait_for("document.documentElement.getAttribute('data-state') === 'stale'",
                             timeout=REFRESH_SECONDS * 4)  # fmt: skip
            banner = browser.evaluate("document.getElementById('banner').textContent")
            assert banner.startswith("Cannot reach the monitor")
            assert browser.evaluate("document.querySelectorAll('.stream').length") == 3
