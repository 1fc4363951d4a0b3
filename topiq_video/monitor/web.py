"""The monitor's HTTP server: Prometheus metrics, the live page and its JSON API.

Routes (GET and HEAD):

- ``/metrics``: the Prometheus text format (OpenMetrics when the scraper asks for it).
- ``/``: the live page; its script polls ``/api/streams`` and needs nothing but this server.
- ``/api/streams``: ``{"now": unix time, "streams": [...]}``, one object per stream.
- ``/api/streams/<index>/thumbnail.jpg``: the stream's latest picture.
- ``/static/<name>``: the page's style sheet and script, and plotly.js from the installed
  ``plotly`` package (so the page works offline). Only the files listed in STATIC_FILES are
  served: no path from a request ever reaches the file system.

It binds to 127.0.0.1 unless told otherwise. While bound to a loopback address it answers
only requests addressed to a loopback name (``Host: 127.0.0.1:...``, ``localhost``), so a web
page elsewhere cannot read the streams through DNS rebinding. Snapshots are read on every
request; a request that fails is logged and answered 500, and the server keeps serving.
"""

from __future__ import annotations

import contextlib
import gzip
import ipaddress
import itertools
import json
import logging
import math
import re
import socket
import statistics
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from functools import cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined

from topiq_video import __version__
from topiq_video.errors import InvalidInputError
from topiq_video.files import display_text
from topiq_video.monitor.exporter import Exporter, stream_labels
from topiq_video.monitor.state import (
    DETECTORS,
    SPARKLINE_SECONDS,
    WINDOW_STATS,
    WINDOWS,
    StreamSnapshot,
)
from topiq_video.video.source import show_source

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9800
DEFAULT_TITLE = "topiq-video monitor"
REFRESH_SECONDS = 2.0
"""How often the live page asks for /api/streams."""
REQUEST_TIMEOUT = 30.0
"""Seconds a client may stay silent mid-request before its connection is closed."""
SPARKLINE_BIN_SECONDS = 1.0
"""The API sends the sparkline as the lowest score per bin, so a dip stays visible and the
page gets at most SPARKLINE_SECONDS / SPARKLINE_BIN_SECONDS points per stream."""
SPARKLINE_MIN_GAP_SECONDS = 5.0
"""A pause in the scores longer than this (and than 4 typical steps) breaks the line."""
EMPTY_STYLE_HASH = "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
"""The CSP hash of an empty inline style. plotly.js adds its rules through the CSSOM to a
``<style>`` element it creates empty; allowing exactly that empty text admits no style from
anywhere but this server's own script."""
CSP = (
    f"default-src 'none'; script-src 'self'; style-src 'self' {EMPTY_STYLE_HASH}; "
    "img-src 'self'; connect-src 'self'; font-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
"""The page may load and fetch from this server only, and run no inline script or style."""
STATIC_FILES: dict[str, tuple[str, str, str]] = {
    # name -> (package, resource, content type)
    "monitor.css": ("topiq_video.monitor", "static/monitor.css", "text/css; charset=utf-8"),
    "monitor.js": ("topiq_video.monitor", "static/monitor.js", "text/javascript; charset=utf-8"),
    "favicon.svg": ("topiq_video.monitor", "static/favicon.svg", "image/svg+xml"),
    "plotly.min.js": ("plotly", "package_data/plotly.min.js", "text/javascript; charset=utf-8"),
}
"""Everything /static/ can serve; any other name is 404."""
JSON_TYPE = "application/json; charset=utf-8"
_THUMBNAIL_PATH = re.compile(r"/api/streams/(\d{1,6})/thumbnail\.jpg")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{1,20}://[^\s'\"<>]+")
# plotly.js injects a map library's style sheet (as inline text, which the CSP refuses) unless
# an element with this id exists; the page draws no maps, so it declares the element.
_PLOTLY_STYLE_GUARD = re.compile(rb'getElementById\("([0-9a-f]{64})"\)')
_LOOPBACK_NAMES = ("localhost", "localhost.")

SnapshotProvider = Callable[[], Sequence[StreamSnapshot]]


class MonitorServer:
    """Serves /metrics, the live page and its API for the streams ``snapshots`` returns.

    ``port=0`` picks a free port (read it from :attr:`port` after :meth:`start`). Use
    :meth:`start` and :meth:`stop`, or the server as a context manager.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        snapshots: SnapshotProvider,
        title: str = DEFAULT_TITLE,
        exporter: Exporter | None = None,
    ) -> None:
        if not 0 <= int(port) <= 65535:
            raise InvalidInputError(
                f"port={port} is not a TCP port; give 0..65535 (0 = any free one)"
            )
        self.host = host
        self._port = int(port)
        self.title = title
        self.snapshots = snapshots
        self.exporter = exporter if exporter is not None else Exporter(snapshots)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._loopback_only = _is_loopback(host)

    @property
    def port(self) -> int:
        """The port listened on (the one picked when started with port=0)."""
        return self._port

    @property
    def address(self) -> tuple[str, int] | None:
        """The (host, port) the socket is bound to while serving, else None."""
        if self._httpd is None:
            return None
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}/"

    def start(self) -> None:
        """Bind and serve in a background thread."""
        if self._httpd is not None:
            return
        server_class = _Server6 if ":" in self.host else _Server
        try:
            httpd = server_class((self.host, self._port), _Handler)
        except OSError as exc:
            raise InvalidInputError(
                f"cannot listen on {self.host}:{self._port} ({exc.strerror or exc}); choose "
                "another port (port=0 picks a free one) or another host"
            ) from exc
        httpd.monitor = self
        self._port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"topiq-video-web:{self._port}",
            daemon=True,
        )
        self._thread.start()
        logger.info("monitor page on %s, metrics on %smetrics", self.url, self.url)

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> MonitorServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the routes return

    def api_streams(self) -> dict[str, Any]:
        """The /api/streams document."""
        now = time.time()
        snapshots = list(self.snapshots())
        names = stream_labels(snapshots)
        return {
            "now": now,
            "streams": [
                stream_json(s, i, n) for i, (s, n) in enumerate(zip(snapshots, names, strict=True))
            ],
        }

    def thumbnail(self, index: int) -> bytes | None:
        snapshots = self.snapshots()
        if index >= len(snapshots):
            return None
        return snapshots[index].thumbnail

    def page(self) -> str:
        return (
            _environment()
            .get_template("live.html")
            .render(
                title=display_text(self.title),
                version=__version__,
                static_version=_static_version(),
                plotly_style_guards=_plotly_style_guards(),
                refresh_ms=int(REFRESH_SECONDS * 1000),
                sparkline_seconds=SPARKLINE_SECONDS,
                windows=WINDOWS,
                window_stats=WINDOW_STATS,
            )
        )

    def host_allowed(self, host_header: str | None) -> bool:
        if not self._loopback_only:
            return True
        if not host_header:
            return False
        name = urlsplit(f"//{host_header}").hostname or ""
        return name in _LOOPBACK_NAMES or _is_loopback(name)


# ---------------------------------------------------------------------------- the API document


def stream_json(snap: StreamSnapshot, index: int, name: str) -> dict[str, Any]:
    """One stream as the live page reads it; every text is masked and valid UTF-8."""
    thumb = None
    if snap.thumbnail:
        thumb = f"/api/streams/{index}/thumbnail.jpg?v={zlib.crc32(snap.thumbnail):08x}"
    info = None
    if snap.info is not None:
        info = {
            "codec": display_text(snap.info.codec),
            "width": snap.info.width,
            "height": snap.info.height,
            "fps": _num(snap.info.fps),
            "has_audio": snap.info.has_audio,
        }
    counters = snap.counters
    return {
        "index": index,
        "name": name,
        "url": show_source(snap.url),
        "model": display_text(snap.model),
        "up": bool(snap.up),
        "connected_since": _num(snap.connected_since),
        "last_frame_time": _num(snap.last_frame_time),
        "score": _num(snap.score),
        "scores": {
            w: {s: _num((snap.scores.get(w) or {}).get(s)) for s in WINDOW_STATS} for w in WINDOWS
        },
        "detectors": {kind: bool(snap.detectors.get(kind)) for kind in DETECTORS},
        "alerts": [
            {
                "rule": display_text(a.rule),
                "since": _num(a.since),
                "value": _num(a.value),
                "threshold": _num(a.threshold),
                "evidence": None if a.evidence is None else display_text(a.evidence),
            }
            for a in snap.alerts
        ],
        "counters": {
            "frames_decoded": counters.frames_decoded,
            "frames_scored": counters.frames_scored,
            "frames_skipped": counters.frames_skipped,
            "decode_errors": counters.decode_errors,
            "lost_frames": counters.lost_frames,
            "reconnects": counters.reconnects,
            "outage_seconds": _num(counters.outage_seconds),
            "received_bytes": counters.received_bytes,
            "freeze_seconds": _num(counters.freeze_seconds),
            "black_seconds": _num(counters.black_seconds),
            "silence_seconds": _num(counters.silence_seconds),
        },
        "info": info,
        "measured_fps": _num(snap.measured_fps),
        "sparkline": sparkline_json(snap.sparkline),
        "thumbnail": thumb,
        "last_error": None if snap.last_error is None else mask_urls(snap.last_error),
    }


def sparkline_json(points: Sequence[tuple[float, float]]) -> dict[str, list[float | None]]:
    """``{"t": [...], "score": [...]}``: the lowest score per SPARKLINE_BIN_SECONDS, with a
    None where the scores pause, so the line breaks instead of bridging an outage."""
    bins: dict[int, tuple[float, float]] = {}
    for t, s in points:
        if not (math.isfinite(t) and math.isfinite(s)):
            continue
        key = math.floor(t / SPARKLINE_BIN_SECONDS)
        kept = bins.get(key)
        if kept is None or s < kept[1]:
            bins[key] = (t, s)
    rows = [bins[k] for k in sorted(bins)]
    steps = [b[0] - a[0] for a, b in itertools.pairwise(rows)]
    gap = SPARKLINE_MIN_GAP_SECONDS
    if steps:
        gap = max(gap, 4 * statistics.median(steps))
    times: list[float | None] = []
    scores: list[float | None] = []
    for i, (t, s) in enumerate(rows):
        if i and t - rows[i - 1][0] > gap:
            times.append(round((t + rows[i - 1][0]) / 2, 3))
            scores.append(None)
        times.append(round(t, 3))
        scores.append(round(s, 5))
    return {"t": times, "score": scores}


def mask_urls(text: str) -> str:
    """``text`` with every URL in it stripped of user:password and query string."""
    return display_text(_URL_IN_TEXT.sub(lambda m: show_source(m.group(0)), text))


def _num(value: float | None) -> float | None:
    """A JSON-safe number: None for None, NaN and infinities."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------------- files


@cache
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("topiq_video.monitor", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@cache
def _static(name: str) -> tuple[bytes, bytes, str]:
    """(body, gzipped body, content type) of one STATIC_FILES entry, read once."""
    package, resource, content_type = STATIC_FILES[name]
    body = resources.files(package).joinpath(resource).read_bytes()
    return body, gzip.compress(body, compresslevel=6, mtime=0), content_type


@cache
def _plotly_style_guards() -> tuple[str, ...]:
    body = _static("plotly.min.js")[0]
    return tuple(dict.fromkeys(m.decode("ascii") for m in _PLOTLY_STYLE_GUARD.findall(body)))


@cache
def _static_version() -> str:
    import plotly

    return f"{__version__}-{plotly.__version__}"


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------- the server


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client never holds the process open
    monitor: MonitorServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """End the kept-alive connections too: once stopped, nothing is answered."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr; route it through logging instead.
        logger.debug("connection from %s failed", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT
    server_version = f"topiq-video/{__version__}"

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, open_=True)

    def finish(self) -> None:
        self.server.track(self.connection, open_=False)
        super().finish()

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    # -- routing

    def _dispatch(self, *, head: bool) -> None:
        try:
            self._route(head)
        except (BrokenPipeError, ConnectionResetError):
            logger.debug("client went away during %s", self.path)
        except Exception:
            logger.exception("the monitor page failed to answer %s", self.path)
            with contextlib.suppress(OSError):
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error\n", head=head)
            self.close_connection = True

    def _route(self, head: bool) -> None:
        monitor = self.server.monitor
        if not monitor.host_allowed(self.headers.get("Host")):
            self._send(HTTPStatus.FORBIDDEN, b"unexpected Host header\n", head=head)
            return
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            body = monitor.page().encode("utf-8")
            self._send(HTTPStatus.OK, body, "text/html; charset=utf-8", head=head, no_store=True)
        elif path == "/metrics":
            body, content_type = monitor.exporter.exposition(self.headers.get("Accept"))
            self._send(HTTPStatus.OK, body, content_type, head=head, no_store=True)
        elif path == "/api/streams":
            doc = monitor.api_streams()
            body = json.dumps(doc, allow_nan=False, separators=(",", ":")).encode("utf-8")
            self._send(HTTPStatus.OK, body, JSON_TYPE, head=head, no_store=True)
        elif match := _THUMBNAIL_PATH.fullmatch(path):
            picture = monitor.thumbnail(int(match.group(1)))
            if picture is None:
                self._not_found(head)
            else:
                self._send(HTTPStatus.OK, picture, "image/jpeg", head=head, no_store=True)
        elif path.startswith("/static/") and path[len("/static/") :] in STATIC_FILES:
            self._static(path[len("/static/") :], head)
        elif path == "/favicon.ico":
            self.send_response(HTTPStatus.MOVED_PERMANENTLY)
            self.send_header("Location", "/static/favicon.svg")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._not_found(head)

    def _static(self, name: str, head: bool) -> None:
        body, compressed, content_type = _static(name)
        accepts = self.headers.get("Accept-Encoding", "")
        use_gzip = "gzip" in accepts.lower()
        self._send(
            HTTPStatus.OK,
            compressed if use_gzip else body,
            content_type,
            head=head,
            # The page names static files with the package versions in the query string.
            extra={
                "Cache-Control": "public, max-age=86400",
                "Vary": "Accept-Encoding",
                **({"Content-Encoding": "gzip"} if use_gzip else {}),
            },
        )

    def _not_found(self, head: bool) -> None:
        self._send(HTTPStatus.NOT_FOUND, b"not found\n", head=head)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        *,
        head: bool,
        no_store: bool = False,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if no_store or status != HTTPStatus.OK:
            self.send_header("Cache-Control", "no-store")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)
