"""What the monitor knows about each stream at one moment: the contract between the stream
workers that produce it and the exporter, the live page and the session report that read it.

Snapshots are frozen values built under the stream's lock and handed out whole, so readers
never see a half-updated stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WINDOWS = ("10s", "1m", "5m")
"""Rolling windows of the score, by their Prometheus label."""
WINDOW_SECONDS = {"10s": 10.0, "1m": 60.0, "5m": 300.0}
WINDOW_STATS = ("mean", "p5", "min")
DETECTORS = ("freeze", "black", "silence")
SPARKLINE_SECONDS = 300.0
"""The live page's sparkline covers this much of the past."""


@dataclass(frozen=True)
class ActiveAlert:
    """A rule whose condition holds now (raised, not yet cleared)."""

    rule: str
    since: float  # wall-clock seconds (Unix time)
    value: float | None
    threshold: float | None
    evidence: str | None = None  # the bundle's folder, relative to the monitor's --out


@dataclass(frozen=True)
class StreamCounters:
    """Totals since the monitor started (Prometheus ``_total`` counters)."""

    frames_decoded: int = 0
    frames_scored: int = 0
    frames_skipped: int = 0  # samples dropped because scoring fell behind
    decode_errors: int = 0
    lost_frames: int = 0
    reconnects: int = 0
    outage_seconds: float = 0.0
    received_bytes: int = 0
    freeze_seconds: float = 0.0
    black_seconds: float = 0.0
    silence_seconds: float = 0.0


@dataclass(frozen=True)
class StreamInfo:
    """The stream as last decoded (None before the first frame)."""

    codec: str
    width: int
    height: int
    fps: float | None
    has_audio: bool


@dataclass(frozen=True)
class StreamSnapshot:
    """One stream, now.

    ``name`` is the configured name (or the URL with secrets masked); ``url`` is always
    masked. ``scores`` maps window label -> stat -> value (None until the window has a
    score). ``sparkline`` is (unix time, score) over the last SPARKLINE_SECONDS.
    ``thumbnail`` is the latest sampled picture as JPEG (small), or None.
    """

    name: str
    url: str
    model: str
    up: bool
    connected_since: float | None
    last_frame_time: float | None  # wall-clock seconds of the last decoded frame
    score: float | None  # the latest TOPIQ-NR score
    scores: dict[str, dict[str, float | None]]
    detectors: dict[str, bool]  # freeze/black/silence: active now
    alerts: tuple[ActiveAlert, ...]
    counters: StreamCounters
    info: StreamInfo | None
    measured_fps: float | None
    sparkline: tuple[tuple[float, float], ...] = ()
    thumbnail: bytes | None = field(default=None, repr=False)
    last_error: str | None = None
