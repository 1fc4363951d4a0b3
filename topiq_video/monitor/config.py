"""What the monitor watches and how: streams, their thresholds and alert rules, each default
defined here once (no heavy imports, so `monitor --help` answers at once).

A config file is TOML::

    [monitor]                 # defaults for every stream (all optional)
    model = "topiq_nr"
    score_fps = 1.0
    freeze_seconds = 2.0

    [[stream]]
    name = "studio"
    url = "rtsp://127.0.0.1:8554/live"

    [[stream.rule]]           # extra alert rules of this stream
    name = "low-score"
    signal = "score.1m.mean"
    below = 0.4
    for = 30
    clear_above = 0.45
    clear_for = 10
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from topiq_video.errors import InvalidInputError
from topiq_video.files import describe_os_error

DEFAULT_LISTEN = "127.0.0.1:9800"
"""Where /metrics, the live page and /api/streams are served: loopback unless asked."""
DEFAULT_MONITOR_MODEL = "topiq_nr"
DEFAULT_SCORE_FPS = 1.0
"""TOPIQ samples per second and stream."""
DEFAULT_FREEZE_SECONDS = 2.0
DEFAULT_FREEZE_NOISE_DB = -60.0
"""freezedetect's noise floor. A keyframe inside a frozen stretch re-encodes the picture
with new quantisation noise; on low-quality streams raise it (e.g. -50) to still see it."""
DEFAULT_BLACK_SECONDS = 2.0
DEFAULT_SILENCE_SECONDS = 5.0
DEFAULT_STALL_SECONDS = 5.0
"""No frame for this long is an outage: the stream is reconnected."""
RECONNECT_MIN_S = 1.0
RECONNECT_MAX_S = 30.0
DEFAULT_OUT_DIR = "monitor-out"
DEFAULT_RTSP_TRANSPORT = "tcp"
RTSP_TRANSPORTS = ("tcp", "udp")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class StreamConfig:
    """One stream: where it is and how it is judged."""

    url: str
    name: str
    model: str = DEFAULT_MONITOR_MODEL
    score_fps: float = DEFAULT_SCORE_FPS
    freeze_seconds: float = DEFAULT_FREEZE_SECONDS
    freeze_noise_db: float = DEFAULT_FREEZE_NOISE_DB
    black_seconds: float = DEFAULT_BLACK_SECONDS
    silence_seconds: float = DEFAULT_SILENCE_SECONDS
    stall_seconds: float = DEFAULT_STALL_SECONDS
    rtsp_transport: str = DEFAULT_RTSP_TRANSPORT
    realtime: bool = False  # pace a file at its own frame rate, as if it were live
    loop: bool = False  # start a realtime file again at its end
    rules: tuple[Mapping[str, Any], ...] = ()  # extra alert rules, as written in the config

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InvalidInputError(
                f"Stream name {self.name!r}: use 1-64 letters, digits, '.', '_' or '-' (it "
                "names files and metric labels)."
            )
        for key in ("score_fps", "freeze_seconds", "black_seconds", "silence_seconds"):
            _positive(f"{key} of stream {self.name!r}", getattr(self, key))
        _positive(f"stall_seconds of stream {self.name!r}", self.stall_seconds)
        if not (
            isinstance(self.freeze_noise_db, (int, float)) and -120 <= self.freeze_noise_db < 0
        ):
            raise InvalidInputError(
                f"freeze_noise_db of stream {self.name!r} must be between -120 and 0 dB, got "
                f"{self.freeze_noise_db!r}."
            )
        if self.rtsp_transport not in RTSP_TRANSPORTS:
            raise InvalidInputError(
                f"rtsp_transport of stream {self.name!r} is {self.rtsp_transport!r}: use "
                f"{' or '.join(RTSP_TRANSPORTS)}."
            )


@dataclass(frozen=True)
class MonitorConfig:
    """Everything one monitor process does."""

    streams: tuple[StreamConfig, ...]
    out_dir: str = DEFAULT_OUT_DIR
    listen: str = DEFAULT_LISTEN
    weights: str | None = None
    device: str | None = None
    precision: str | None = None
    batch_size: int | None = None
    events_file: str | None = None  # None: standard output
    webhook: str | None = None
    max_pixels: int | None = None

    def __post_init__(self) -> None:
        if not self.streams:
            raise InvalidInputError("Give at least one stream to monitor (URLs or a config file).")
        names = [s.name for s in self.streams]
        doubles = sorted({n for n in names if names.count(n) > 1})
        if doubles:
            raise InvalidInputError(
                f"Stream names must be unique; {', '.join(doubles)} appear more than once. "
                "Name the streams in the config."
            )
        parse_listen(self.listen)


def _positive(what: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"{what} must be a number, got {value!r}.")
    if not (math.isfinite(value) and 0 < value <= 86400):
        raise InvalidInputError(f"{what} must be between 0 and 86400, got {value!r}.")


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as (host, port)."""
    match = re.fullmatch(r"\[?([^\[\]]+?)\]?:(\d{1,5})", listen.strip())
    if not match or not 0 <= int(match.group(2)) <= 65535:
        raise InvalidInputError(
            f"listen {listen!r} is not HOST:PORT (e.g. {DEFAULT_LISTEN}; port 0 picks a free one)."
        )
    return match.group(1), int(match.group(2))


def stream_name(url: str, taken: Sequence[str] = ()) -> str:
    """A name for a stream given only by URL: its host and last path part, masked and
    made safe for file names and labels, unique among ``taken``."""
    from urllib.parse import urlsplit

    from topiq_video.video.source import redact_source

    parts = urlsplit(redact_source(url))
    stem = Path(parts.path).stem if parts.path else ""
    raw = "-".join(p for p in ((parts.hostname or ""), stem) if p) or Path(url).stem or "stream"
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-._")[:48] or "stream"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


_STREAM_KEYS = {f.name for f in fields(StreamConfig)} - {"rules"}
_MONITOR_KEYS = {f.name for f in fields(MonitorConfig)} - {"streams"}


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> MonitorConfig:
    """Read a TOML config; ``overrides`` (from the command line) win over its [monitor] table."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInputError(
            f"Cannot read the config {str(file)!r}: {describe_os_error(exc)}."
        ) from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInputError(f"{str(file)!r} is not valid TOML: {exc}.") from exc
    top = data.get("monitor", {})
    streams = data.get("stream", [])
    if not isinstance(top, dict) or not isinstance(streams, list):
        raise InvalidInputError(
            f"{str(file)!r}: expected a [monitor] table and [[stream]] entries (see the README)."
        )
    unknown = set(data) - {"monitor", "stream"}
    if unknown:
        raise InvalidInputError(
            f"{str(file)!r}: unknown top-level key(s) {', '.join(sorted(unknown))}; use "
            "[monitor] and [[stream]]."
        )
    return build_config(streams, {**top, **dict(overrides or {})}, where=str(file))


def build_config(
    streams: Sequence[Mapping[str, Any] | str],
    settings: Mapping[str, Any],
    *,
    where: str = "the command line",
) -> MonitorConfig:
    """A MonitorConfig from stream entries (URLs or tables) and shared settings (a stream's
    own keys win over the shared ones)."""
    shared_stream = {k: v for k, v in settings.items() if k in _STREAM_KEYS and v is not None}
    monitor = {k: v for k, v in settings.items() if k in _MONITOR_KEYS and v is not None}
    unknown = set(settings) - _STREAM_KEYS - _MONITOR_KEYS
    if unknown:
        raise InvalidInputError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}.")
    built: list[StreamConfig] = []
    for entry in streams:
        table = {"url": entry} if isinstance(entry, str) else dict(entry)
        rules = table.pop("rule", ())
        bad = set(table) - _STREAM_KEYS
        if bad or "url" not in table:
            raise InvalidInputError(
                f"{where}: a stream needs a url and takes only "
                f"{', '.join(sorted(_STREAM_KEYS))}; got {', '.join(sorted(table))}."
            )
        merged = {**shared_stream, **table}
        merged.setdefault("name", stream_name(str(table["url"]), [s.name for s in built]))
        try:
            built.append(StreamConfig(**merged, rules=tuple(dict(r) for r in rules)))
        except TypeError as exc:
            raise InvalidInputError(f"{where}: {exc}.") from exc
    return MonitorConfig(streams=tuple(built), **monitor)


def with_streams(config: MonitorConfig, **changes: Any) -> MonitorConfig:
    """``config`` with every stream changed alike (e.g. realtime=True)."""
    return replace(config, streams=tuple(replace(s, **changes) for s in config.streams))
